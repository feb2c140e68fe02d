"""What every command shares: the settings and the database, loaded on first use."""

from __future__ import annotations

from pathlib import Path

import click

from lorawatch.db import Database, open_database
from lorawatch.settings import Settings, load_settings


class AppContext:
    """Lazily loaded settings and database for one CLI invocation."""

    def __init__(self, config_path: Path | None = None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._database: Database | None = None

    @property
    def settings(self) -> Settings:
        """The validated settings."""
        if self._settings is None:
            settings = load_settings(self.config_path)
            if settings.monitors:  # [monitors.<id>] sections must name real monitors
                # Deferred: the monitor registry loads the built-in monitors (pandas and numpy).
                from lorawatch.monitors.registry import check_configured_ids

                check_configured_ids(settings)
            self._settings = settings
        return self._settings

    @property
    def database(self) -> Database:
        """The database, its schema checked (an empty SQLite file is created)."""
        if self._database is None:
            database = open_database(self.settings)
            database.ensure_schema()
            self._database = database
        return self._database

    @property
    def actor(self) -> str:
        """Who is acting, for the audit log."""
        return self.settings.current_actor


pass_app = click.make_pass_decorator(AppContext)
