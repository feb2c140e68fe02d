"""Adapter and base-model files: safe names, hashing, safetensors checks, the store.

Registering reads files the user points at; nothing here trusts them. Names that could escape
the store are refused, pickled weights are refused unless explicitly allowed (unpickling runs
code), and safetensors files are checked for a valid header and a size that matches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import threading
import time
import uuid
from pathlib import Path

from tqdm import tqdm

from lorawatch import inputs
from lorawatch.errors import InputError, IntegrityError
from lorawatch.privacy import private_dir

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")
_CHUNK = 4 * 1024 * 1024
MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit on its header


def check_name(value: str, what: str) -> str:
    """Refuse names that could escape the store or break paths (``../``, ``/``, spaces)."""
    if not NAME_PATTERN.match(value or "") or ".." in value:
        raise InputError(
            f"{what} {value!r} is not a valid name",
            fix="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'",
        )
    return value


def sha256_file(path: Path, memory: DigestMemory | None = None) -> str:
    """The sha256 of a file's bytes, read in chunks: at most once per process while the file
    is unchanged (a command that checks a file twice reads it once) and, with ``memory``, not
    at all when an earlier command of this home read the file with the same identity."""
    key = inputs.file_identity(path)
    with _lock:
        known = _hashed.get(key)
    if known is not None:
        if memory is not None:
            memory.put(key, known, time.time_ns())
        return known
    if memory is not None and (known := memory.get(key)) is not None:
        return known
    began = time.time_ns()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _hashed[key] = value
    if memory is not None and inputs.file_identity(path) == key:  # not rewritten while it was read
        memory.put(key, value, began)
    return value


# The hashes this process computed, by file identity (path, device, inode, size, modification
# and change times): a file rewritten since has another identity and is read again.
_hashed: dict[tuple, str] = {}
_lock = threading.Lock()


class DigestMemory:
    """Digests verified by earlier commands, kept in a JSON file of the home
    (``$LORAWATCH_HOME/cache/verified-files.json``) by file identity: the path, device, inode,
    size, modification time and change time. Writing a file, renaming another over it,
    ``touch``, ``chmod`` all change the change time, which nothing but the clock sets, so a
    file with the same identity holds the same bytes, short of the disk itself decaying (``[canary]
    rehash = "always"`` reads every file every run).

    A file changed within two seconds of being read is not remembered: timestamps are coarser
    than that on some file systems, so a write right after the read could keep the identity (git
    calls this a racy entry). The file is replaced whole (write, then rename): two commands
    saving at once lose at most each other's new entries, which are read again next time; an
    unreadable or malformed file counts as empty."""

    LIMIT = 4096  # entries kept; those verified longest ago go first

    def __init__(self, path: Path, racy_s: float = 2.0) -> None:
        self.path = Path(path)
        self.racy_ns = int(racy_s * 1e9)
        self._entries = self._read()
        self._added: dict[str, list] = {}

    def _read(self) -> dict[str, list]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if isinstance(k, str) and _valid_entry(v)}

    def get(self, key: tuple) -> str | None:
        entry = self._added.get(key[0]) or self._entries.get(key[0])
        if entry is None or tuple(entry[:5]) != key[1:]:
            return None
        return entry[5]

    def put(self, key: tuple, digest: str, read_at_ns: int) -> None:
        if max(key[4], key[5]) > read_at_ns - self.racy_ns:
            return
        self._added[key[0]] = [*key[1:], digest]

    def save(self) -> None:
        """Write the entries added, with those another command saved meanwhile; silently nothing
        where the home's cache cannot be written (the next run reads the files again)."""
        if not self._added:
            return
        entries = {k: v for k, v in self._read().items() if k not in self._added}
        entries.update(self._added)  # the files verified now go last: the limit drops the least recent
        entries = dict(list(entries.items())[-self.LIMIT :])
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entries, handle)
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
            return
        self._entries, self._added = entries, {}


def _valid_entry(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 6
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[:5])
        and isinstance(value[5], str)
        and re.fullmatch(r"[0-9a-f]{64}", value[5]) is not None
    )


def content_digest(files: dict[str, dict]) -> str:
    """One sha256 over a file manifest (relative path and sha256 of every file)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return digest.hexdigest()


def list_files(root: Path) -> list[str]:
    """Relative paths of the regular files under ``root``, refusing links that leave it."""
    root_resolved = root.resolve()
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in {".git", "__pycache__"})
        for filename in sorted(filenames):
            full = Path(dirpath) / filename
            resolved = full.resolve()
            if root_resolved not in resolved.parents:
                raise InputError(
                    f"{full} points outside the adapter directory",
                    where=str(root),
                    fix="copy the real file into the directory instead of linking to it",
                )
            if not resolved.is_file():
                continue
            names.append(full.relative_to(root).as_posix())
    return names


def manifest(root: Path, names: list[str] | None = None, progress: bool = False) -> dict[str, dict]:
    """``{relative path: {sha256, size}}`` for the files under ``root``."""
    names = names if names is not None else list_files(root)
    result: dict[str, dict] = {}
    iterator = names
    if progress and names:
        iterator = tqdm(names, desc="hashing", unit="file", leave=False, disable=None)  # None: on a terminal only
    for name in iterator:
        path = root / name
        result[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return result


def check_safetensors(path: Path) -> dict:
    """Validate a safetensors file's header and size; return its tensor index.

    A truncated or corrupt file fails here, before anything loads it.
    """
    size = path.stat().st_size
    fix = "re-export the adapter (model.save_pretrained) and register it again"
    if size < 8:
        raise InputError("truncated safetensors file (shorter than its header)", where=str(path), fix=fix)
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len <= 0 or 8 + header_len > size:
            raise InputError(
                f"truncated or corrupt safetensors file (header of {header_len} bytes, file of {size})",
                where=str(path),
                fix=fix,
            )
        if header_len > MAX_HEADER:
            raise InputError(
                f"corrupt safetensors file (a header of {header_len:,} bytes; real ones are far smaller)",
                where=str(path),
                fix=fix,
            )
        raw = handle.read(header_len)
    try:
        header = inputs.parse_json(raw.decode("utf-8"), where=str(path), fix=fix)
    except UnicodeDecodeError:
        raise InputError("corrupt safetensors header (not JSON)", where=str(path), fix=fix) from None
    except InputError as exc:
        if exc.what == inputs.NESTED_TOO_DEEPLY:
            raise
        raise InputError("corrupt safetensors header (not JSON)", where=str(path), fix=fix) from None
    if not isinstance(header, dict):
        raise InputError("corrupt safetensors header (not a JSON object)", where=str(path), fix=fix)
    end = 0
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in tensors.items():
        if not isinstance(info, dict):
            raise InputError(f"corrupt safetensors entry {name!r}", where=str(path), fix=fix)
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise InputError(
                f"corrupt safetensors entry {name!r}: data_offsets {offsets!r} are not two increasing byte offsets"[
                    :300
                ],
                where=str(path),
                fix=fix,
            )
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise InputError(
                f"corrupt safetensors entry {name!r}: shape {shape!r} is not a list of sizes"[:300],
                where=str(path),
                fix=fix,
            )
        end = max(end, offsets[1])
    data_size = size - 8 - header_len
    if end != data_size:
        raise InputError(
            f"truncated or corrupt safetensors file (tensors need {end} bytes of data, the file has {data_size})",
            where=str(path),
            fix=fix,
        )
    return tensors


def verify_files(root: Path, expected: dict[str, dict], what: str, memory: DigestMemory | None = None) -> None:
    """Re-hash every recorded file under ``root``; refuse a missing or changed one. With
    ``memory``, a file an earlier command verified and nothing changed since is not read again,
    and the digests read here are remembered."""
    try:
        _verify(root, expected, what, memory)
    finally:
        if memory is not None:
            memory.save()  # what was read before a failure need not be read again


def _verify(root: Path, expected: dict[str, dict], what: str, memory: DigestMemory | None) -> None:
    for name, info in sorted(expected.items()):
        path = root / name
        if not path.is_file():
            raise IntegrityError(
                f"{what}: file {name} is missing",
                where=str(root),
                fix="restore the file from its source or register a new version",
            )
        actual = sha256_file(path, memory)
        if actual != info["sha256"]:
            raise IntegrityError(
                f"{what}: file {name} was changed after registration "
                f"(sha256 {actual[:12]}..., recorded {info['sha256'][:12]}...)",
                where=str(path),
                fix="restore the original file, or register the new content as a new version",
            )


def stage_copy(
    source: Path, names: list[str], store_root: Path, progress: bool = False
) -> tuple[Path, dict[str, dict]]:
    """Copy files into a private staging directory of the store, hashing each byte once on the
    way; returns the directory (files read-only) and the manifest of what was written. Only its
    creator moves it into place or removes it."""
    private_dir(store_root)
    staging = private_dir(store_root / ".staging") / uuid.uuid4().hex
    staging.mkdir(mode=0o700)
    result: dict[str, dict] = {}
    iterator = tqdm(names, desc="copying", unit="file", leave=False, disable=None) if progress and names else names
    try:
        for name in iterator:
            destination = staging / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            with open(source / name, "rb") as reader, open(destination, "wb") as writer:
                while chunk := reader.read(_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            os.chmod(destination, 0o400)  # owner-only, and immutable by accident
            result[name] = {"sha256": digest.hexdigest(), "size": size}
            with _lock:
                _hashed[inputs.file_identity(destination)] = digest.hexdigest()
    except BaseException:
        remove_tree(staging)
        raise
    return staging, result


def remove_tree(path: Path) -> None:
    """Remove a store directory whose files were made read-only."""
    if not path.exists():
        return
    for dirpath, _dirs, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            os.chmod(Path(dirpath) / filename, 0o644)
    shutil.rmtree(path)
