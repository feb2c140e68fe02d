"""What every page shares: the settings and the database (one per server process), error
display, and small formatting helpers."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlencode

import streamlit as st

from lorawatch.db import open_database
from lorawatch.errors import LoraWatchError
from lorawatch.settings import load_settings


@st.cache_resource(show_spinner=False)
def _load():
    settings = load_settings()
    database = open_database(settings)
    database.ensure_schema()
    return settings, database


def context():
    """(settings, database) of this dashboard process."""
    return _load()


@contextmanager
def shown_errors():
    """Show a LoraWatch error as one red line instead of a traceback."""

    try:
        yield
    except LoraWatchError as exc:
        st.error(exc.one_line())


def ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def query_param(name: str) -> str | None:
    value = st.query_params.get(name)
    return str(value) if value not in (None, "") else None


WINDOWS = [1, 7, 14, 30, 90, 365]


def window_days(default: int = 30) -> int:
    """The time range in days, one for every page: chosen on one page, kept on the others
    (Streamlit forgets a widget's state when its page is left, so the choice is kept apart)."""
    kept = st.session_state.get("lw_window_days", default)
    days = st.select_slider(
        "Time range",
        options=WINDOWS,
        value=kept if kept in WINDOWS else default,
        format_func=lambda d: f"{d} day" + ("s" if d != 1 else ""),
    )
    st.session_state["lw_window_days"] = days
    return days


def page_link(page: str, **params: object) -> str:
    """A link to a dashboard page with its query (``adapter?adapter=support``), relative to the
    dashboard's root so it works behind any prefix."""
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return f"./{page}" + (f"?{query}" if query else "")


def flash(message: str) -> None:
    """Say ``message`` after the page runs again: an action changes what the tables above it
    show, so the page reruns at once and the message comes first (``show_flash``)."""
    st.session_state["lw_flash"] = message
    st.rerun()


def show_flash() -> None:
    message = st.session_state.pop("lw_flash", None)
    if message:
        st.success(message)


# severity colours (the charts' own), as cell backgrounds light enough to read text on
STATUS_BACKGROUNDS = {
    "critical": "#f8d0d0",
    "warning": "#fde2c4",
    "not verified": "#d6e6f5",
    "info": "#d6e6f5",
    "ok": "#d4efd4",
}
STATUS_BADGES = {"critical": "red", "warning": "orange", "not verified": "blue", "info": "blue", "ok": "green"}


def status_badge(status: str) -> str:
    """A coloured Markdown badge for a status or severity (``:red-badge[critical]``)."""
    return f":{STATUS_BADGES.get(status, 'gray')}-badge[{status}]"


def coloured(frame, columns: list[str]):
    """A pandas Styler that colours the status or severity cells of ``columns``."""
    return frame.style.map(
        lambda value: f"background-color: {STATUS_BACKGROUNDS[value]}" if value in STATUS_BACKGROUNDS else "",
        subset=[c for c in columns if c in frame.columns],
    )
