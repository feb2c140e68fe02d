"""What every page shares: the settings and the database (one per server process), error
display, and small formatting helpers."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

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
