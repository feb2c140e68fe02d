"""Hostile input at every door (#20): each case exits 2 with one line on stderr (file, line or
key, what, and the fix), no traceback, and the database is exactly as it was before."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lorawatch.db import Database
from lorawatch.db.models import Base

DEEP = "[" * 100_000 + "]" * 100_000
UNREACHABLE = "postgresql+psycopg://lw:DBPASSWORD123@127.0.0.1:1/nowhere?connect_timeout=2"


def _counts(url: str) -> dict[str, int]:
    database = Database(url)
    with database.session() as session:
        counts = {t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
    database.dispose()
    return counts


# --- builders: each writes its hostile file(s) under ``d`` and returns the CLI arguments -----------


def _adapter(d: Path, good: Path, config: object | None = None, raw: bytes | None = None) -> Path:
    target = d / "adapter"
    shutil.copytree(good, target)
    if raw is not None:
        (target / "adapter_config.json").write_bytes(raw)
    elif config is not None:
        (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def _config_with(good: Path, **changes) -> dict:
    config = json.loads((good / "adapter_config.json").read_text())
    config.update(changes)
    return config


def _register(path: Path, *extra: str) -> list[str]:
    return ["registry", "add", "hostile", "--path", str(path), "--base", "tiny", *extra]


def _safetensors(
    d: Path, good: Path, header: bytes | None = None, tail: bytes = b"", length: int | None = None
) -> list:
    target = _adapter(d, good)
    weights = target / "adapter_model.safetensors"
    body = struct.pack("<Q", length if length is not None else len(header or b"")) + (header or b"") + tail
    weights.write_bytes(body)
    return _register(target)


def _st_header(entries: dict) -> bytes:
    return json.dumps(entries).encode()


def _from_json(d: Path, good: Path, spec: object, raw: str | None = None) -> list[str]:
    path = d / "spec.json"
    path.write_text(raw if raw is not None else json.dumps(spec))
    return ["registry", "add", "--from-json", str(path)]


def _spec(good: Path, **changes) -> dict:
    return {"adapter": "hostile", "path": str(good), "base": "tiny", "version": "h1", **changes}


def _dataset(d: Path, text: str | bytes, *extra: str) -> list[str]:
    path = d / "canary.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["canary", "run", "--dataset", str(path), "--adapter", "support", "--device", "cpu", *extra]


def _requests(d: Path, text: str | bytes, suffix: str = ".jsonl") -> list[str]:
    path = d / f"requests{suffix}"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["ingest", "requests", str(path)]


def _request_line(**changes) -> str:
    row = {"ts": "2026-11-30T10:00:00Z", "adapter_id": "support", "latency_ms": 120.0, **changes}
    return json.dumps(row) + "\n"


def _kpis(d: Path, text: str, suffix: str = ".csv") -> list[str]:
    path = d / f"kpis{suffix}"
    path.write_text(text)
    return ["ingest", "kpis", str(path)]


def _rules(d: Path, text: str) -> list[str]:
    path = d / "rules.yaml"
    path.write_text(text)
    return ["alerts", "rules", "--check", str(path)]


def _rule(**fields) -> str:
    spec = {"id": "hostile", "monitor": "logit_kl", **fields}
    return "groups:\n  - name: g\n    rules:\n      - " + json.dumps(spec) + "\n"


def _settings(d: Path, text: str, *command: str) -> list[str]:
    path = d / "lorawatch.toml"
    path.write_text(text)
    return ["--config", str(path), *(command or ("config", "show"))]


RULE_OK = {"condition": "breached"}
GOOD_ST = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}

Case = tuple[str, Callable[[Path, Path], list[str]], str]
CASES: list[Case] = [
    # adapter directories and adapter_config.json
    ("adapter dir missing", lambda d, g: _register(d / "nope"), "does not exist"),
    ("no adapter_config.json", lambda d, g: _register(_without_config(d, g)), "no adapter_config.json"),
    ("config not UTF-8", lambda d, g: _register(_adapter(d, g, raw=b"\xff\xfe{")), "not UTF-8"),
    ("config invalid JSON", lambda d, g: _register(_adapter(d, g, raw=b'{"r": 8,')), "invalid JSON"),
    ("config is a list", lambda d, g: _register(_adapter(d, g, config=[1, 2])), "not a JSON object"),
    ("config nested 100k deep", lambda d, g: _register(_adapter(d, g, raw=DEEP.encode())), "nested too deeply"),
    ("config 30 MB", lambda d, g: _register(_adapter(d, g, raw=b'{"pad": "' + b"x" * 30_000_000 + b'"}')), "too large"),
    (
        "peft_type PREFIX",
        lambda d, g: _register(_adapter(d, g, _config_with(g, peft_type="PREFIX_TUNING"))),
        "peft_type",
    ),
    ("peft_type a list", lambda d, g: _register(_adapter(d, g, _config_with(g, peft_type=["LORA"]))), "peft_type"),
    (
        "r missing",
        lambda d, g: _register(_adapter(d, g, {k: v for k, v in _config_with(g).items() if k != "r"})),
        '"r"',
    ),
    ("r a string", lambda d, g: _register(_adapter(d, g, _config_with(g, r="8"))), '"r"'),
    ("r negative", lambda d, g: _register(_adapter(d, g, _config_with(g, r=-4))), '"r"'),
    ("r a boolean", lambda d, g: _register(_adapter(d, g, _config_with(g, r=True))), '"r"'),
    ("r absurdly large", lambda d, g: _register(_adapter(d, g, _config_with(g, r=10**12))), '"r"'),
    ("lora_alpha abc", lambda d, g: _register(_adapter(d, g, _config_with(g, lora_alpha="abc"))), "lora_alpha"),
    (
        "lora_alpha NaN",
        lambda d, g: _register(
            _adapter(
                d,
                g,
                raw=json.dumps(_config_with(g))
                .replace('"lora_alpha": 8', '"lora_alpha": NaN')
                .replace('"lora_alpha": 16', '"lora_alpha": NaN')
                .encode(),
            )
        ),
        "NaN is not a number",
    ),
    (
        "lora_alpha Infinity",
        lambda d, g: _register(_adapter(d, g, raw=json.dumps(_config_with(g, lora_alpha=1e999)).encode())),
        "Infinity is not a number",
    ),
    (
        "lora_alpha an object",
        lambda d, g: _register(_adapter(d, g, _config_with(g, lora_alpha={"x": 1}))),
        "lora_alpha",
    ),
    (
        "target_modules a number",
        lambda d, g: _register(_adapter(d, g, _config_with(g, target_modules=5))),
        "target_modules",
    ),
    (
        "target_modules numbers",
        lambda d, g: _register(_adapter(d, g, _config_with(g, target_modules=[1, 2]))),
        "target_modules",
    ),
    (
        "target_modules empty",
        lambda d, g: _register(_adapter(d, g, _config_with(g, target_modules=[]))),
        "target_modules",
    ),
    (
        "base_model_name_or_path 42",
        lambda d, g: _register(_adapter(d, g, _config_with(g, base_model_name_or_path=42))),
        "base_model_name_or_path",
    ),
    (
        "base_model_name_or_path a list",
        lambda d, g: _register(_adapter(d, g, _config_with(g, base_model_name_or_path=["x"]))),
        "base_model_name_or_path",
    ),
    (
        "adapter name escapes",
        lambda d, g: ["registry", "add", "../x", "--path", str(g), "--base", "tiny"],
        "not a valid name",
    ),
    ("version with a space", lambda d, g: [*_register(g), "--version", "a b"], "not a valid name"),
    ("unknown base", lambda d, g: ["registry", "add", "hostile", "--path", str(g), "--base", "nope"], "nope"),
    ("pickled weights", lambda d, g: _register(_pickled(d, g)), "pickle"),
    ("no weight file", lambda d, g: _register(_no_weights(d, g)), "weight"),
    # safetensors headers
    ("safetensors shorter than 8 bytes", lambda d, g: _register(_tiny_weights(d, g, b"abc")), "truncated"),
    (
        "safetensors header longer than the file",
        lambda d, g: _safetensors(d, g, b"{}", length=10**9),
        "truncated or corrupt",
    ),
    ("safetensors header of 2**63", lambda d, g: _safetensors(d, g, b"{}", length=2**63), "truncated or corrupt"),
    ("safetensors header not JSON", lambda d, g: _safetensors(d, g, b"not json"), "not JSON"),
    ("safetensors header a list", lambda d, g: _safetensors(d, g, b"[1, 2]"), "not a JSON object"),
    (
        "safetensors offsets strings",
        lambda d, g: _safetensors(
            d, g, _st_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}), b"\0" * 8
        ),
        "data_offsets",
    ),
    (
        "safetensors offsets negative",
        lambda d, g: _safetensors(
            d, g, _st_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}), b"\0" * 8
        ),
        "data_offsets",
    ),
    (
        "safetensors offsets reversed",
        lambda d, g: _safetensors(
            d, g, _st_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}), b"\0" * 8
        ),
        "data_offsets",
    ),
    (
        "safetensors entry a string",
        lambda d, g: _safetensors(d, g, _st_header({"w": "x"}), b"\0" * 8),
        "corrupt safetensors entry",
    ),
    (
        "safetensors size mismatch",
        lambda d, g: _safetensors(d, g, _st_header(GOOD_ST), b"\0" * 4),
        "truncated or corrupt",
    ),
    (
        "safetensors shape a string",
        lambda d, g: _safetensors(
            d, g, _st_header({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}), b"\0" * 8
        ),
        "shape",
    ),
    (
        "safetensors header nested deep",
        lambda d, g: _safetensors(d, g, b'{"w": ' + DEEP.encode() + b"}"),
        "nested too deeply",
    ),
    # --from-json
    ("from-json missing", lambda d, g: ["registry", "add", "--from-json", str(d / "nope.json")], "does not exist"),
    ("from-json not JSON", lambda d, g: _from_json(d, g, None, raw="{oops"), "invalid JSON"),
    ("from-json a list", lambda d, g: _from_json(d, g, [1]), "JSON object"),
    ("from-json adapter a number", lambda d, g: _from_json(d, g, _spec(g, adapter=5)), "adapter"),
    ("from-json path a number", lambda d, g: _from_json(d, g, _spec(g, path=5)), "path"),
    ("from-json lineage a string", lambda d, g: _from_json(d, g, _spec(g, lineage="x")), "lineage"),
    (
        "from-json review cadence words",
        lambda d, g: _from_json(d, g, _spec(g, ownership={"review_cadence_days": "often"})),
        "review_cadence_days",
    ),
    (
        "from-json expiry not a date",
        lambda d, g: _from_json(d, g, _spec(g, risk={"data_expires_on": "soon"})),
        "data_expires_on",
    ),
    ("from-json contacts a number", lambda d, g: _from_json(d, g, _spec(g, ownership={"contacts": 5})), "contacts"),
    ("from-json unknown key", lambda d, g: _from_json(d, g, _spec(g, colour="red")), "colour"),
    ("from-json promote a number", lambda d, g: _from_json(d, g, _spec(g, promote=5)), "promote"),
    (
        "from-json nested deep",
        lambda d, g: _from_json(d, g, None, raw='{"lineage": ' + DEEP + "}"),
        "nested too deeply",
    ),
    # canary datasets
    (
        "dataset missing",
        lambda d, g: ["canary", "run", "--dataset", str(d / "nope.jsonl"), "--adapter", "support"],
        "not found",
    ),
    ("dataset empty", lambda d, g: _dataset(d, ""), "empty"),
    ("dataset not UTF-8", lambda d, g: _dataset(d, b'{"id": "a", "prompt": "\xff"}\n'), "UTF-8"),
    ("dataset invalid JSON line", lambda d, g: _dataset(d, '{"id": "a", "prompt": "x"}\n{"id": \n'), ":2"),
    ("dataset line a list", lambda d, g: _dataset(d, "[1, 2]\n"), "JSON object"),
    ("dataset id missing", lambda d, g: _dataset(d, '{"prompt": "x"}\n'), "id"),
    ("dataset id a number", lambda d, g: _dataset(d, '{"id": 5, "prompt": "x"}\n'), "id"),
    ("dataset duplicate id", lambda d, g: _dataset(d, '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n'), "a"),
    ("dataset prompt a number", lambda d, g: _dataset(d, '{"id": "a", "prompt": 5}\n'), "prompt"),
    ("dataset messages a string", lambda d, g: _dataset(d, '{"id": "a", "messages": "hi"}\n'), "messages"),
    (
        "dataset bad role",
        lambda d, g: _dataset(d, '{"id": "a", "messages": [{"role": "god", "content": "x"}]}\n'),
        "role",
    ),
    (
        "dataset nested 100k deep",
        lambda d, g: _dataset(d, '{"id": "a", "prompt": "x", "metadata": ' + DEEP + "}\n"),
        "nested too deeply",
    ),
    ("dataset unknown key", lambda d, g: _dataset(d, '{"id": "a", "prompt": "x", "colour": 1}\n'), "colour"),
    (
        "max-new-tokens past the model",
        lambda d, g: _dataset(d, '{"id": "a", "prompt": "x"}\n', "--max-new-tokens", "300"),
        "positions",
    ),
    # request logs
    (
        "requests missing column",
        lambda d, g: _requests(d, json.dumps({"ts": "2026-11-30T10:00:00Z", "adapter_id": "a"}) + "\n"),
        "latency_ms",
    ),
    ("requests latency words", lambda d, g: _requests(d, _request_line(latency_ms="fast")), "latency_ms"),
    ("requests latency negative", lambda d, g: _requests(d, _request_line(latency_ms=-5)), "latency_ms"),
    (
        "requests latency NaN",
        lambda d, g: _requests(d, '{"ts": "2026-11-30T10:00:00Z", "adapter_id": "a", "latency_ms": NaN}\n'),
        "latency_ms",
    ),
    ("requests latency infinite", lambda d, g: _requests(d, _request_line(latency_ms=1e999)), "latency_ms"),
    ("requests ts words", lambda d, g: _requests(d, _request_line(ts="yesterday")), "ts"),
    ("requests ts in 1900", lambda d, g: _requests(d, _request_line(ts="1900-01-01T00:00:00Z")), "ts"),
    ("requests ts in 3000", lambda d, g: _requests(d, _request_line(ts="3000-01-01T00:00:00Z")), "ts"),
    ("requests ts epoch in ns", lambda d, g: _requests(d, _request_line(ts=1_764_496_800_000_000_000_000)), "ts"),
    ("requests not UTF-8", lambda d, g: _requests(d, b'{"ts": "\xff"}\n'), "UTF-8"),
    ("requests invalid JSON line", lambda d, g: _requests(d, _request_line() + "{oops\n"), ":2"),
    ("requests nested deep", lambda d, g: _requests(d, '{"ts": ' + DEEP + "}\n"), "nested too deeply"),
    ("requests unknown column", lambda d, g: _requests(d, _request_line(colour="red")), "colour"),
    ("requests CSV without header", lambda d, g: _requests(d, "1,2,3\n", ".csv"), "ts"),
    ("requests empty", lambda d, g: _requests(d, ""), "empty"),
    ("requests unknown format", lambda d, g: _requests(d, "x", ".xlsx"), "xlsx"),
    # KPI tables
    ("kpis missing column", lambda d, g: _kpis(d, "ts,adapter_id,kpi\n2026-11-30T10:00:00Z,a,csat\n"), "value"),
    ("kpis value words", lambda d, g: _kpis(d, "ts,adapter_id,kpi,value\n2026-11-30T10:00:00Z,a,csat,good\n"), "value"),
    (
        "kpis value infinite",
        lambda d, g: _kpis(d, "ts,adapter_id,kpi,value\n2026-11-30T10:00:00Z,a,csat,inf\n"),
        "value",
    ),
    ("kpis ts words", lambda d, g: _kpis(d, "ts,adapter_id,kpi,value\nlater,a,csat,1\n"), "ts"),
    ("kpis kpi empty", lambda d, g: _kpis(d, "ts,adapter_id,kpi,value\n2026-11-30T10:00:00Z,a,,1\n"), "kpi"),
    # alert rules
    ("rule condition > .", lambda d, g: _rules(d, _rule(condition="> .")), "condition"),
    ("rule unknown monitor", lambda d, g: _rules(d, _rule(monitor="logit_kll")), "unknown monitor"),
    ("rule for words", lambda d, g: _rules(d, _rule(**{"for": "soon"})), "soon"),
    (
        "rule duplicate id",
        lambda d, g: _rules(d, _rule() + "      - " + json.dumps({"id": "hostile", "monitor": "logit_kl"}) + "\n"),
        "twice",
    ),
    ("rule template syntax", lambda d, g: _rules(d, _rule(annotations={"summary": "{{ oops"})), "template"),
    (
        "rule template divides by zero",
        lambda d, g: _rules(d, _rule(annotations={"summary": "{{ 1 / 0 }}"})),
        "cannot render",
    ),
    ("rules not YAML", lambda d, g: _rules(d, "groups: [\n"), "invalid YAML"),
    ("rules nested deep", lambda d, g: _rules(d, "groups: " + "[" * 50_000 + "]" * 50_000 + "\n"), "nested too deeply"),
    ("rules severity unknown", lambda d, g: _rules(d, _rule(severity="apocalyptic")), "severity"),
    # settings
    ("settings unknown key", lambda d, g: _settings(d, "[alerts]\ncolour = 1\n"), "colour"),
    ("database url not a URL", lambda d, g: ["ENV:LORAWATCH_DATABASE_URL=notaurl", "registry", "list"], "database URL"),
    (
        "database unreachable",
        lambda d, g: [f"ENV:LORAWATCH_DATABASE_URL={UNREACHABLE}", "registry", "list"],
        "cannot use the database",
    ),
    (
        "settings unknown monitor",
        lambda d, g: _settings(d, "[monitors.logit_kll]\nthreshold = 1.0\n", "registry", "list"),
        "did you mean",
    ),
    ("settings invalid TOML", lambda d, g: _settings(d, "[alerts\n"), "invalid TOML"),
    (
        "settings nested deep",
        lambda d, g: _settings(d, "x = " + "[" * 50_000 + "]" * 50_000 + "\n"),
        "nested too deeply",
    ),
    ("settings bad duration", lambda d, g: _settings(d, '[alerts]\nflush_deadline = "soon"\n'), "soon"),
    (
        "settings bad time zone",
        lambda d, g: _settings(d, '[[alerts.time_intervals.x]]\nlocation = "Mars/Olympus"\n'),
        "time zone",
    ),
    (
        "settings literal webhook URL",
        lambda d, g: _settings(
            d, '[alerts.receivers.x]\ntype = "slack"\nurl = "https://hooks.slack.com/services/T/B/SECRET"\n'
        ),
        "alerts.receivers.x",
    ),
]


def _without_config(d: Path, good: Path) -> Path:
    target = _adapter(d, good)
    (target / "adapter_config.json").unlink()
    return target


def _pickled(d: Path, good: Path) -> Path:
    target = _adapter(d, good)
    (target / "adapter_model.safetensors").rename(target / "adapter_model.bin")
    return target


def _no_weights(d: Path, good: Path) -> Path:
    target = _adapter(d, good)
    (target / "adapter_model.safetensors").unlink()
    return target


def _tiny_weights(d: Path, good: Path, data: bytes) -> Path:
    target = _adapter(d, good)
    (target / "adapter_model.safetensors").write_bytes(data)
    return target


def test_there_are_at_least_80_cases():
    assert len(CASES) >= 80, len(CASES)


@pytest.fixture
def seeded(cli, lw_env, tiny_base, trained_adapter, tmp_path):
    """A registry with the tiny base (256 positions) and a served adapter."""
    assert cli("init").code == 0
    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    assert (
        cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--promote", "production").code
        == 0
    )
    return lw_env


@pytest.mark.parametrize("name, build, words", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_line_and_stores_nothing(
    cli, seeded, trained_adapter, tmp_path, monkeypatch, name, build, words
):
    work = tmp_path / "hostile"
    work.mkdir()
    args = [str(a) for a in build(work, trained_adapter)]
    while args and args[0].startswith("ENV:"):
        key, _, value = args.pop(0)[4:].partition("=")
        monkeypatch.setenv(key, value)
    before = _counts(seeded)
    result = cli(*args)
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert result.code == 2, f"{name}: exit {result.code}\n{result.err[-3000:]}"
    assert "Traceback" not in result.err and len(lines) == 1, f"{name}:\n{result.err[-3000:]}"
    assert words.lower() in lines[0].lower(), f"{name}: {words!r} not in {lines[0]!r}"
    monkeypatch.undo()  # count with the test's own database
    assert _counts(seeded) == before, name
    assert "DBPASSWORD123" not in result.err + result.out
