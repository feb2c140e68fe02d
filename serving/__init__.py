"""What users put into their own serving code: Prometheus instrumentation with adapter labels
(``serving.metrics``) and a multi-tenant adapter pool (``serving.pool``)."""
