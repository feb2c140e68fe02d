"""Canary datasets: JSONL files of prompts, validated with file and line in every error.

One object per line: ``id`` (unique), ``prompt`` (a string) or chat ``messages`` (a list of
``{role, content}`` ending with a user turn), and optionally ``reference`` (the answer that is
scored teacher-forced), ``segment`` and ``tags``. Blank lines are ignored. A dataset is
identified by the sha256 of its bytes: editing a file makes a new dataset.

The sets shipped in ``canary_data/`` can be named without a path: ``core-v1``, ``smoke-v1``
(a file of that name in the working directory wins).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorawatch.errors import DatasetError
from lorawatch.inputs import NESTED_TOO_DEEPLY, refuse_constant

SHIPPED_DIR = Path(__file__).parent.parent / "canary_data"  # lorawatch/canary_data: the canary_data/ folder
KNOWN_KEYS = {"id", "prompt", "messages", "reference", "segment", "tags", "metadata"}
ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class CanaryPrompt:
    """One canary prompt."""

    id: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    reference: str | None = None
    segment: str = "default"
    tags: tuple[str, ...] = ()
    line: int = 0

    def chat(self) -> list[dict[str, str]]:
        """The prompt as chat messages."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def text(self) -> str:
        """The user's last words, for display."""
        if self.prompt is not None or self.messages is None:
            return self.prompt or ""
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class CanaryDataset:
    """A validated canary dataset and its content hash."""

    path: Path
    sha256: str
    prompts: list[CanaryPrompt] = field(repr=False)

    @property
    def name(self) -> str:
        """The file name without its suffix."""
        return self.path.stem

    @property
    def segments(self) -> dict[str, int]:
        """Prompt count per segment."""
        counts: dict[str, int] = {}
        for p in self.prompts:
            counts[p.segment] = counts.get(p.segment, 0) + 1
        return counts


def shipped_datasets() -> list[str]:
    """The names of the canary sets shipped in ``canary_data/``."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.jsonl"))


def resolve_dataset(path: Path | str) -> Path:
    """The file a dataset argument names: a path, or the name of a shipped set (``core-v1``)."""
    path = Path(path).expanduser()
    if path.exists() or path.parent != Path("."):
        return path
    shipped = SHIPPED_DIR / (path.name if path.suffix == ".jsonl" else f"{path.name}.jsonl")
    return shipped if shipped.is_file() else path


def load_dataset(path: Path | str) -> CanaryDataset:
    """Read and validate a canary JSONL file (or a shipped set by name); any problem raises
    DatasetError with file:line."""
    path = resolve_dataset(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        shipped = ", ".join(shipped_datasets())
        raise DatasetError(
            "canary dataset not found",
            where=str(path),
            fix=f"pass an existing .jsonl file or a shipped set ({shipped})",
        ) from None
    except OSError as exc:
        raise DatasetError(
            f"cannot read it ({exc.strerror})", where=str(path), fix="check the path and permissions"
        ) from None
    if not raw.strip():
        raise DatasetError("the dataset is empty", where=str(path), fix="add one JSON object per line")
    prompts: list[CanaryPrompt] = []
    seen: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"invalid UTF-8 at column {exc.start + 1}", where=where, fix="save the file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=refuse_constant)
        except RecursionError:
            raise DatasetError(NESTED_TOO_DEEPLY, where=where, fix="write one flat JSON object per line") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"invalid JSON ({exc.msg} at column {exc.colno})",
                where=where,
                fix="write one complete JSON object per line",
            ) from None
        except ValueError as exc:
            raise DatasetError(f"invalid JSON ({exc})", where=where, fix="write numbers JSON allows") from None
        prompt = _parse(obj, where)
        if prompt.id in seen:
            raise DatasetError(
                f'duplicate id "{prompt.id}" (first on line {seen[prompt.id]})',
                where=where,
                fix="give every prompt a unique id",
            )
        seen[prompt.id] = number
        prompts.append(CanaryPrompt(**{**prompt.__dict__, "line": number}))
    if not prompts:
        raise DatasetError("the dataset has no prompts", where=str(path), fix="add one JSON object per line")
    return CanaryDataset(path=path, sha256=hashlib.sha256(raw).hexdigest(), prompts=prompts)


def _parse(obj: Any, where: str) -> CanaryPrompt:
    if not isinstance(obj, dict):
        raise DatasetError("a line must be a JSON object", where=where, fix='write {"id": ..., "prompt": ...}')
    unknown = set(obj) - KNOWN_KEYS
    if unknown:
        raise DatasetError(
            f"unknown key(s) {', '.join(sorted(unknown))}",
            where=where,
            fix=f"use only: {', '.join(sorted(KNOWN_KEYS))}",
        )
    pid = obj.get("id")
    if not isinstance(pid, str) or not pid.strip():
        raise DatasetError('missing "id"', where=where, fix='give the line a unique string "id"')
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        what = 'both "prompt" and "messages"' if has_prompt else 'missing "prompt" (or "messages")'
        raise DatasetError(f'prompt "{pid}": {what}', where=where, fix='give exactly one of "prompt" or "messages"')
    messages = None
    if has_prompt:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise DatasetError(
                f'prompt "{pid}": "prompt" must be a non-empty string', where=where, fix="write the prompt text"
            )
    else:
        messages = _messages(obj["messages"], pid, where)
    reference = obj.get("reference")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        raise DatasetError(
            f'prompt "{pid}": "reference" must be a non-empty string',
            where=where,
            fix="write the reference answer or leave the key out",
        )
    segment = obj.get("segment", "default")
    if not isinstance(segment, str) or not segment.strip():
        raise DatasetError(f'prompt "{pid}": "segment" must be a non-empty string', where=where, fix="name the segment")
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DatasetError(
            f'prompt "{pid}": "tags" must be a list of strings', where=where, fix='write "tags": ["a", "b"]'
        )
    return CanaryPrompt(
        id=pid, prompt=obj.get("prompt"), messages=messages, reference=reference, segment=segment, tags=tuple(tags)
    )


def _messages(value: Any, pid: str, where: str) -> tuple[dict[str, str], ...]:
    fix = 'write "messages": [{"role": "user", "content": "..."}]'
    if not isinstance(value, list) or not value:
        raise DatasetError(f'prompt "{pid}": "messages" must be a non-empty list', where=where, fix=fix)
    result = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DatasetError(
                f'prompt "{pid}": message {i + 1} needs a role ({", ".join(sorted(ROLES))}) and a content string',
                where=where,
                fix=fix,
            )
        result.append({"role": m["role"], "content": m["content"]})
    if result[-1]["role"] != "user":
        raise DatasetError(
            f'prompt "{pid}": the last message must be from the user', where=where, fix="end with a user turn"
        )
    return tuple(result)
