"""Monitors: the canary runner and what it measures (logit drift, embedding drift, and later
content risk, latency, KPIs and cost). Each monitor is registered under a stable id in
``lorawatch.monitors.registry``; the same id is used in config, the database, alerts and runbooks."""
