"""Incidents: lifecycle, timeline, rollback with approval, stakeholder notices, and the
post-incident report (Markdown, self-contained HTML, PDF)."""
