"""Alerts: rules over monitor results, alert states, silences, inhibition, notification routing
and grouping, and reliable delivery through an outbox to Slack, Teams, webhooks, PagerDuty,
Alertmanager, the console and files. The semantics are Prometheus' and Alertmanager's."""
