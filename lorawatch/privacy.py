"""Private by default: what LoraWatch keeps (the database, the adapter store, notifications)
holds canary outputs, traffic and alert history, so it is readable by its owner only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed; a directory we own is made owner-only."""
    path.mkdir(parents=True, exist_ok=True)
    _restrict(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Make an existing file we own owner-only (a no-op for files of other users)."""
    _restrict(path, FILE_MODE)


def _restrict(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        stat = path.stat()
        if stat.st_uid == os.getuid() and stat.st_mode & 0o777 != mode:
            os.chmod(path, mode)
