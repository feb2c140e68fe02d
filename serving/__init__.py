"""What users put into their own serving code: Prometheus instrumentation with adapter labels
(``lorawatch.serving.metrics``) and a multi-tenant adapter pool (``lorawatch.serving.pool``)."""
