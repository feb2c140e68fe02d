"""The monitor registry: every monitor is registered under a stable id with its default
threshold and the direction in which it is breached.

The id is the same in config (``[monitors.<id>]``), the database (``monitor_results.monitor``),
alert rules and runbooks. A duplicate id fails at import; an unknown id fails with the list of
known ones. Built-in monitors register exactly as third-party ones would.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lorawatch.errors import ConfigError, NotFoundError, did_you_mean
from lorawatch.settings import Settings


@dataclass(frozen=True)
class Measurement:
    """What a monitor computes: a value and supporting details (never an exception for drift)."""

    value: float | None
    details: dict[str, Any]
    # Set by a monitor that judges itself (content risk against the base, with a test): the
    # verdict and the line the value was held to, in place of the configured threshold's.
    breached: bool | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class MonitorSpec:
    """A registered monitor."""

    id: str
    kind: Literal["canary", "drift", "risk", "traffic"]
    description: str
    threshold: float
    breached_when: Literal["above", "below", "p_value_below"]
    unit: str
    compute: Callable[..., Measurement]

    def is_breached(self, value: float | None, threshold: float) -> bool:
        """Whether ``value`` crosses ``threshold`` in this monitor's direction."""
        if value is None:
            return False
        if self.breached_when == "above":
            return value > threshold
        return value < threshold if self.breached_when == "below" else value <= threshold


_MONITORS: dict[str, MonitorSpec] = {}


def monitor(id: str, *, kind: str, threshold: float, breached_when: str, unit: str = "", description: str = ""):
    """Register the decorated function as monitor ``id``."""

    def decorate(func: Callable[..., Measurement]) -> Callable[..., Measurement]:
        if id in _MONITORS:
            raise ValueError(f'monitor id "{id}" is registered twice')
        doc = description or (func.__doc__ or "").strip().splitlines()[0]
        _MONITORS[id] = MonitorSpec(id, kind, doc, threshold, breached_when, unit, func)
        return func

    return decorate


# The modules whose monitors are built in. They register with this registry exactly as a
# third-party module would (``@monitor``), and are loaded by name on first use, as datasette
# loads its DEFAULT_PLUGINS: they import this module, so it must not import them.
DEFAULT_MONITORS = ("lorawatch.monitors.builtin", "lorawatch.monitors.traffic_eval")


def _load_builtins() -> None:
    for name in DEFAULT_MONITORS:
        importlib.import_module(name)


def get_monitor(id: str) -> MonitorSpec:
    """A monitor by id; an unknown id lists the known ones."""
    _load_builtins()
    if id not in _MONITORS:
        raise NotFoundError(f'no monitor "{id}"; known: {", ".join(sorted(_MONITORS))}', fix="use one of the known ids")
    return _MONITORS[id]


def all_monitors(kind: str | None = None) -> list[MonitorSpec]:
    """Every registered monitor, optionally of one kind, by id."""
    _load_builtins()
    return [m for _, m in sorted(_MONITORS.items()) if kind is None or m.kind == kind]


def threshold_for(id: str, settings: Settings) -> float:
    """The threshold in force: ``[monitors.<id>] threshold`` from settings, else the default."""
    spec = get_monitor(id)
    override = settings.monitors.get(id) if settings is not None else None
    return override.threshold if override is not None and override.threshold is not None else spec.threshold


def check_configured_ids(settings: Settings) -> None:
    """Fail on ``[monitors.<id>]`` sections that name no registered monitor."""
    _load_builtins()
    for id in settings.monitors:
        if id not in _MONITORS:
            raise ConfigError(
                f"[monitors.{id}] names no monitor" + did_you_mean(id, list(_MONITORS)),
                where=str(settings.source or "settings"),
                fix=f"use one of: {', '.join(sorted(_MONITORS))}",
            )
