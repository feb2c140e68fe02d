"""``lorawatch canary run``'s model process, started before the command line imports the rest
of itself.

The command line imports click, then the command's module, which brings SQLAlchemy, the
settings and the run's services: on the H200's host 1 to 2 s before ``canary run`` starts, all
of it before the model process (``lorawatch.monitors.canary_child``) could begin to import
torch. ``start`` reads the arguments as the command line will (only ``[--config FILE] canary
run ...`` counts), and where the run will want a model process of its own, starts it at once;
the run takes it (``take``) when it gets there, or starts its own where this guessed wrong
(the run decides, from the same settings). ``close`` stops one that was never taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorawatch.monitors.canary_child import ModelProcess, wanted

_started: ModelProcess | None = None


def start(args: list[str]) -> None:
    """Start the model process of ``lorawatch ARGS`` now, where ARGS run a canary run that will
    want one (``[canary] model_process``, a local backend); anything unclear starts nothing."""
    global _started
    found = _canary_run(args)
    if found is None or _started is not None:
        return
    config, rest = found
    if any(a in {"-h", "--help"} for a in rest):
        return
    try:
        # Deferred: needed only on this path; the command imports it anyway.
        from lorawatch.settings import load_settings

        settings = load_settings(config)
    except Exception:  # the command itself reports a bad settings file, as it does
        return
    backend = _option(rest, "--backend") or settings.canary.backend
    where = _option(rest, "--device") or settings.canary.device
    if backend != "local" or not wanted(settings.canary.model_process, where):
        return
    _started = ModelProcess(settings.risk if settings.risk.enabled else None, where)


def take(risk: Any, device: str) -> ModelProcess | None:
    """The process ``start`` started, if it was made for ``risk`` and ``device`` (now the
    caller's to close); one made for anything else is stopped."""
    global _started
    process, _started = _started, None
    if process is not None and process.made_for != (risk, device):
        process.close()
        return None
    return process


def close() -> None:
    """Stop the process ``start`` started if no run took it (the command failed before)."""
    global _started
    process, _started = _started, None
    if process is not None:
        process.close()


def _canary_run(args: list[str]) -> tuple[Path | None, list[str]] | None:
    """(the ``--config`` file, the arguments after ``canary run``) of ``[--config FILE] canary
    run ...``; None for anything else."""
    config: Path | None = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--config" and i + 1 < len(args):
            config, i = Path(args[i + 1]), i + 2
        elif args[i].startswith("--config="):
            config, i = Path(args[i].split("=", 1)[1]), i + 1
        else:
            return None
    if args[i : i + 2] != ["canary", "run"]:
        return None
    return config, args[i + 2 :]


def _option(args: list[str], name: str) -> str | None:
    """The value of ``name VALUE`` or ``name=VALUE`` in ``args`` (the last one, as click takes)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value
