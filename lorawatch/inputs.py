"""The door every user file comes through: bounded reads and JSON that cannot crash the reader.

Files are read with a size limit; JSON is parsed with ``NaN`` and ``Infinity`` refused, and a
document nested so deeply that the parser would exhaust the stack is refused too. Every
refusal is an ``InputError`` naming the file (and line), what is wrong and the fix.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lorawatch.errors import InputError

MAX_CONFIG_BYTES = 10 * 1024 * 1024  # configs, specs, headers: far more than any real one
NESTED_TOO_DEEPLY = "nested too deeply (a JSON, YAML or TOML document this deep is not data LoraWatch reads)"


def read_text(path: Path, *, limit: int = MAX_CONFIG_BYTES, what: str = "file") -> str:
    """A UTF-8 text file of at most ``limit`` bytes."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(
                f"{what} is too large ({size:,} bytes; at most {limit:,})",
                where=str(path),
                fix=f"pass the real {what}, not another file",
            )
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", where=str(path), fix="pass an existing file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", where=str(path), fix="save the file as UTF-8") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory", where=str(path), fix="pass a file") from None


def refuse_constant(name: str) -> float:
    """A ``parse_constant`` for ``json.loads`` that refuses ``NaN`` and ``Infinity``."""
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str | bytes, *, where: str, fix: str = "correct the JSON", line: int | None = None) -> Any:
    """Parse JSON; bad syntax, ``NaN``/``Infinity`` and runaway nesting raise InputError."""
    at = f"{where}:{line}" if line else where
    try:
        return json.loads(text, parse_constant=refuse_constant)
    except RecursionError:
        raise InputError(NESTED_TOO_DEEPLY, where=at, fix=fix) from None
    except json.JSONDecodeError as exc:
        position = f"{where}:{(line or 1) + exc.lineno - 1}" if line or exc.lineno else at
        raise InputError(f"invalid JSON: {exc.msg}", where=position, fix=fix) from None
    except ValueError as exc:  # NaN, Infinity
        raise InputError(f"invalid JSON: {exc}", where=at, fix=fix) from None


def finite_number(value: Any) -> bool:
    """A real, finite number (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def file_identity(path: Path) -> tuple:
    """What tells a file's contents apart without reading them: its real path, device, inode,
    size, modification and change times. Any write moves the change time (so does renaming
    another file over it), which only the clock sets: the same identity, the same bytes."""
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
