"""Extension points of alert evaluation, so that higher layers react to it without ``alerts``
importing them (incidents open from firing alerts this way).

A hook is registered under a unique name, the way datasette's default plugins register; the
entry points (CLI, scheduler, server, demo) load the built-in ones with
``lorawatch.plugins.load_default_plugins``. Each after-evaluation hook runs inside the
evaluation's transaction and returns a dict merged into the evaluation's result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from lorawatch.settings import Settings

AfterEvaluation = Callable[[Session, Any, datetime, list[dict[str, Any]], set[str]], dict[str, Any]]

_AFTER_EVALUATION: dict[str, AfterEvaluation] = {}


def after_evaluation(name: str) -> Callable[[AfterEvaluation], AfterEvaluation]:
    """Register ``fn(session, settings, now, transitions, muted) -> dict`` to run after each evaluation."""

    def register(fn: AfterEvaluation) -> AfterEvaluation:
        if name in _AFTER_EVALUATION and _AFTER_EVALUATION[name] is not fn:
            raise ValueError(f"an after-evaluation hook named {name!r} is registered already")
        _AFTER_EVALUATION[name] = fn
        return fn

    return register


def registered() -> list[str]:
    """The names of the registered after-evaluation hooks, in registration order."""
    return list(_AFTER_EVALUATION)


def run_after_evaluation(
    session: Session, settings: Settings, now: datetime, transitions: list[dict[str, Any]], muted: set[str]
) -> dict[str, Any]:
    """Run every registered hook; their results merged."""
    merged: dict[str, Any] = {}
    for fn in _AFTER_EVALUATION.values():
        merged.update(fn(session, settings, now, transitions, muted))
    return merged
