"""The LoraWatch dashboard: ``streamlit run app/dashboard.py`` (``lorawatch dashboard`` does it)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lorawatch.app.auth import current_user, sign_in_box
from lorawatch.app.common import context

st.set_page_config(page_title="LoraWatch", page_icon=":material/monitoring:", layout="wide")
settings, db = context()
PAGES = Path(__file__).parent / "app_pages"
pages = [
    st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", url_path="overview", default=True),
    st.Page(PAGES / "adapter.py", title="Adapter", icon=":material/tune:", url_path="adapter"),
    st.Page(PAGES / "alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page(PAGES / "incidents.py", title="Incidents", icon=":material/emergency:", url_path="incidents"),
    st.Page(PAGES / "canary_runs.py", title="Canary runs", icon=":material/science:", url_path="canary_runs"),
    st.Page(PAGES / "registry.py", title="Registry", icon=":material/inventory_2:", url_path="registry"),
    st.Page(PAGES / "costs.py", title="Costs", icon=":material/payments:", url_path="costs"),
    st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/schedule:", url_path="jobs"),
]
navigation = st.navigation(pages)
user = sign_in_box(settings, db)
if settings.dashboard.require_login_to_view and current_user() is None:
    st.title("LoraWatch")
    st.info("Sign in (sidebar) to view the dashboard.")
    st.stop()
navigation.run()
