"""The embedded default, end to end: the demo model, demo adapters, seeded history, a canary
round, alerts and the dashboard. ``lorawatch demo`` runs it."""
