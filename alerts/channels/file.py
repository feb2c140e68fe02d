"""A file: each notification appended as one JSON line (the Alertmanager v4 payload), fsynced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lorawatch.settings import Settings


def path_of(receiver, settings: Settings) -> Path:
    path = Path(receiver.path).expanduser()
    return path if path.is_absolute() else settings.home_dir / path


def deliver(payload: dict[str, Any], receiver, settings: Settings) -> None:
    path = path_of(receiver, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({k: v for k, v in payload.items() if k != "lorawatch"}, sort_keys=True) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # owner-only when new
    with open(descriptor, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
