from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lorawatch.db import Database
from lorawatch.db.models import Base
from lorawatch.registry import aliases as registry_aliases
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions


@pytest.fixture
def reg(cli, lw_env, tiny_base):
    """A database with the tiny base registered as "tiny"."""
    assert cli("init").code == 0
    result = cli("registry", "add-base", "tiny", "--path", tiny_base, "--json")
    assert result.code == 0, result.err
    return lw_env


def row_counts(url: str) -> dict[str, int]:
    database = Database(url)
    with database.session() as session:
        counts = {t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
    database.dispose()
    return counts


def store_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "home" / "store"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_a_trained_adapter_registers_with_its_hashes_and_config(cli, reg, trained_adapter, tmp_path):
    result = cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["version"] == "v1" and data["storage"] == "copy"
    shown = cli("registry", "show", "support", "--version", "v1", "--json").json()
    config = json.loads((trained_adapter / "adapter_config.json").read_text())
    assert shown["rank"] == config["r"] == 4
    assert shown["alpha"] == config["lora_alpha"]
    assert shown["target_modules"] == sorted(config["target_modules"])
    import hashlib

    for name in ("adapter_config.json", "adapter_model.safetensors"):
        expected = hashlib.sha256((trained_adapter / name).read_bytes()).hexdigest()
        assert shown["files"][name]["sha256"] == expected
        stored = Path(shown["path"]) / name
        assert stored.read_bytes() == (trained_adapter / name).read_bytes()
    assert cli("registry", "verify", "support", "--version", "v1").code == 0


def test_a_changed_file_is_refused_when_loading(cli, reg, trained_adapter):
    cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny")
    shown = cli("registry", "show", "support", "--version", "v1", "--json").json()
    weights = Path(shown["path"]) / "adapter_model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = cli("registry", "verify", "support", "--version", "v1")
    assert result.code == 2
    assert "adapter_model.safetensors was changed after registration" in result.err
    assert "fix:" in result.err and len(result.err.strip().splitlines()) == 1


def test_reference_storage_detects_a_changed_source(cli, reg, trained_adapter, tmp_path):
    (tmp_path / "lorawatch.toml").write_text('[registry]\nstore = "reference"\n')
    source = tmp_path / "ref-adapter"
    shutil.copytree(trained_adapter, source)
    assert cli("registry", "add", "support", "--path", source, "--base", "tiny").code == 0
    assert cli("registry", "verify", "support", "--version", "v1").code == 0
    (source / "adapter_config.json").write_text(
        (source / "adapter_config.json").read_text().replace('"r": 4', '"r": 8')
    )
    result = cli("registry", "verify", "support", "--version", "v1")
    assert result.code == 2 and "adapter_config.json was changed" in result.err


def test_promote_promote_rollback_and_the_history_answers_at_a_time(cli, reg, trained_adapter, second_adapter):
    cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--version", "v1")
    cli("registry", "add", "support", "--path", second_adapter, "--base", "tiny", "--version", "v2")
    assert cli("registry", "promote", "support", "--version", "v1", "--reason", "first release").code == 0
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    assert cli("registry", "promote", "support", "--version", "v2", "--reason", "better eval").code == 0
    result = cli("registry", "rollback", "support", "--reason", "toxicity spike", "--json")
    assert result.code == 0, result.err
    assert result.json()["from_version"] == "v2" and result.json()["to_version"] == "v1"

    now = cli("registry", "show", "support", "--alias", "production", "--json").json()
    assert now["version"] == "v1"
    history = cli("registry", "history", "support", "--json").json()
    assert [(h["action"], h["from_version"], h["to_version"], h["actor"], h["reason"]) for h in history] == [
        ("promote", None, "v1", "tester", "first release"),
        ("promote", "v1", "v2", "tester", "better eval"),
        ("rollback", "v2", "v1", "tester", "toxicity spike"),
    ]
    at_between = cli("registry", "show", "support", "--alias", "production", "--at", between.isoformat(), "--json")
    assert at_between.json()["version"] == "v1"
    after_v2 = datetime.fromisoformat(history[1]["ts"]) + timedelta(microseconds=1)
    assert (
        cli("registry", "show", "support", "--alias", "production", "--at", after_v2.isoformat(), "--json").json()[
            "version"
        ]
        == "v2"
    )
    before_all = datetime.fromisoformat(history[0]["ts"]) - timedelta(seconds=1)
    assert (
        cli("registry", "show", "support", "--alias", "production", "--at", before_all.isoformat(), "--json").json()[
            "version"
        ]
        is None
    )
    # a second rollback has nothing earlier than v1 to go back to
    again = cli("registry", "rollback", "support", "--reason", "again")
    assert again.code == 2 and "no earlier version" in again.err
    audit_rows = cli("audit", "list", "--object", "adapter:support", "--json").json()
    assert [r["action"] for r in audit_rows] == ["alias.rollback", "alias.promote", "alias.promote"]


def test_tenant_aliases_override_the_route_default(cli, reg, trained_adapter, second_adapter):
    cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny")
    cli("registry", "add", "support", "--path", second_adapter, "--base", "tiny")
    cli("registry", "promote", "support", "--version", "v1", "--reason", "default")
    cli("registry", "promote", "support", "--version", "v2", "--tenant", "acme", "--reason", "acme pilot")
    assert (
        cli("registry", "show", "support", "--alias", "production", "--tenant", "acme", "--json").json()["version"]
        == "v2"
    )
    assert (
        cli("registry", "show", "support", "--alias", "production", "--tenant", "globex", "--json").json()["version"]
        == "v1"
    )
    assert cli("registry", "show", "support", "--alias", "production", "--json").json()["version"] == "v1"


def _bad_inputs(tmp_path: Path, trained_adapter: Path, tiny_base: Path, other_base: Path):
    no_config = tmp_path / "no-config"
    shutil.copytree(trained_adapter, no_config)
    (no_config / "adapter_config.json").unlink()
    mismatch = tmp_path / "mismatch"
    shutil.copytree(trained_adapter, mismatch)
    config = json.loads((mismatch / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(other_base)
    (mismatch / "adapter_config.json").write_text(json.dumps(config))
    pickled = tmp_path / "pickled"
    shutil.copytree(trained_adapter, pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    truncated = tmp_path / "truncated"
    shutil.copytree(trained_adapter, truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    bad_json = tmp_path / "bad-json"
    shutil.copytree(trained_adapter, bad_json)
    (bad_json / "adapter_config.json").write_text('{\n  "r": 4,\n  oops\n}')
    return [
        # (args, words in the one line)
        (
            ["registry", "add", "support", "--path", tmp_path / "missing", "--base", "tiny"],
            ["missing", "does not exist", "fix:"],
        ),
        (
            ["registry", "add", "support", "--path", no_config, "--base", "tiny"],
            ["no adapter_config.json", str(no_config), "fix:"],
        ),
        (
            ["registry", "add", "support", "--path", mismatch, "--base", "tiny"],
            ["not on base", "adapter_config.json", "fix:"],
        ),
        (
            ["registry", "add", "support", "--path", pickled, "--base", "tiny"],
            ["adapter_model.bin", "pickle", "--allow-pickle"],
        ),
        (
            ["registry", "add", "support", "--path", truncated, "--base", "tiny"],
            ["truncated", "adapter_model.safetensors", "fix:"],
        ),
        (
            ["registry", "add", "support", "--path", bad_json, "--base", "tiny"],
            ["adapter_config.json:3", "invalid JSON"],
        ),
        (
            ["registry", "add", "support", "--path", trained_adapter, "--base", "nobase"],
            ['no base model "nobase"', "fix:"],
        ),
        (
            ["registry", "add", "../escape", "--path", trained_adapter, "--base", "tiny"],
            ["'../escape'", "not a valid name", "fix:"],
        ),
        (
            ["registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--version", "../../x"],
            ["not a valid name"],
        ),
        (
            ["registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--version", "v1"],
            ["registered already", "immutable"],
        ),
        (["registry", "show", "nosuch"], ['no adapter "nosuch"', "fix:"]),
        (["registry", "promote", "support", "--version", "v9", "--reason", "x"], ['no version "v9"', "known: v1"]),
        (["registry", "rollback", "support", "--alias", "shadow", "--reason", "x"], ['no alias "shadow"', "fix:"]),
        (
            ["registry", "promote", "support", "--version", "v1", "--alias", "../prod", "--reason", "x"],
            ["not a valid name"],
        ),
    ]


def test_each_bad_input_exits_2_with_one_line_and_writes_nothing(cli, reg, trained_adapter, tiny_base, tmp_path):
    from tests.tiny_models import build_base

    other = build_base(tmp_path / "other-base", seed=7)
    assert cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--version", "v1").code == 0
    before_rows = row_counts(reg)
    before_files = store_files(tmp_path)
    for args, words in _bad_inputs(tmp_path, trained_adapter, tiny_base, other):
        result = cli(*args)
        label = " ".join(map(str, args))
        assert result.code == 2, f"{label}: {result.err}"
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, f"{label}: {result.err}"
        assert "Traceback" not in result.err
        for word in words:
            assert word in lines[0], f"{label}: {word!r} not in {lines[0]!r}"
        assert row_counts(reg) == before_rows, label
        assert store_files(tmp_path) == before_files, label


def test_pickled_weights_register_with_the_flag(cli, reg, trained_adapter, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(trained_adapter, pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    assert cli("registry", "add", "legacy", "--path", pickled, "--base", "tiny", "--allow-pickle").code == 0


def test_from_json_registers_with_metadata_and_promotes_in_one_call(cli, reg, trained_adapter, tmp_path):
    spec = {
        "adapter": "billing",
        "path": str(trained_adapter),
        "base": "tiny",
        "version": "2026.11.1",
        "lineage": {"dataset_hash": "sha256:abc", "commit_sha": "deadbeef", "training_run": "https://runs/42"},
        "performance": {"offline_metrics": {"rougeL": 0.41}, "human_eval": "4.2/5 on 200 prompts"},
        "risk": {"bias_assessment": "low", "data_expires_on": "2020-01-01"},
        "ownership": {
            "team": "payments-ml",
            "contacts": ["alice@example.com", "oncall-payments"],
            "review_cadence_days": 30,
        },
        "promote": {"alias": "canary", "reason": "CI pipeline 981"},
    }
    (tmp_path / "release.json").write_text(json.dumps(spec))
    result = cli("registry", "add", "--from-json", tmp_path / "release.json", "--json")
    assert result.code == 0, result.err
    assert result.json()["promoted"] == {"alias": "canary", "tenant": None}
    shown = cli("registry", "show", "billing", "--version", "2026.11.1", "--json").json()
    assert shown["lineage"]["commit_sha"] == "deadbeef"
    assert shown["performance"]["offline_metrics"] == {"rougeL": 0.41}
    assert shown["ownership"]["contacts"] == ["alice@example.com", "oncall-payments"]
    assert shown["aliases"] == [{"alias": "canary", "tenant": None}]
    assert shown["expired"] is True
    assert [r["adapter"] for r in cli("registry", "list", "--team", "payments-ml", "--json").json()] == ["billing"]
    assert cli("registry", "list", "--team", "nobody", "--json").json() == []
    assert [r["version"] for r in cli("registry", "list", "--expired", "--json").json()] == ["2026.11.1"]
    assert [r["version"] for r in cli("registry", "list", "--alias", "canary", "--json").json()] == ["2026.11.1"]
    # the command line adds to the file: the domain where drift is intended
    spec["version"] = "2026.11.2"
    (tmp_path / "release.json").write_text(json.dumps(spec))
    args = ("--from-json", tmp_path / "release.json", "--domain", "finance", "--domain", "payments")
    assert cli("registry", "add", *args).code == 0
    shown = cli("registry", "show", "billing", "--version", "2026.11.2", "--json").json()
    assert shown["risk"]["domain_segments"] == ["finance", "payments"] and shown["risk"]["bias_assessment"] == "low"


def test_a_bad_from_json_names_the_file(cli, reg, tmp_path, trained_adapter):
    (tmp_path / "r.json").write_text(
        json.dumps(
            {"adapter": "b", "path": str(trained_adapter), "base": "tiny", "ownership": {"review_cadence_days": -3}}
        )
    )
    result = cli("registry", "add", "--from-json", tmp_path / "r.json")
    assert result.code == 2 and "r.json" in result.err and "review_cadence_days" in result.err
    (tmp_path / "r.json").write_text(json.dumps({"adapter": "b", "colour": "red"}))
    result = cli("registry", "add", "--from-json", tmp_path / "r.json")
    assert result.code == 2 and "colour" in result.err


def test_review_status_is_overdue_after_the_cadence(db, tmp_path, tiny_base, trained_adapter):
    from lorawatch.registry import catalog, lifecycle
    from lorawatch.registry.metadata import VersionMetadata

    store = registry_store.Store(tmp_path / "store")
    meta = VersionMetadata.model_validate({"ownership": {"review_cadence_days": 10}})
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
        registry_versions.register_version(
            s, store, adapter="a", path=trained_adapter, base="tiny", metadata=meta, actor="t"
        )
    with db.session() as s:  # registered 20 days ago, never reviewed
        registry_versions.get_version(s, "a", "v1").created_at = datetime.now(UTC) - timedelta(days=20)
    with db.session() as s:
        (view,) = catalog.list_versions(s, review_days=90)
        assert view["review_overdue"] is True
        lifecycle.mark_reviewed(s, adapter="a", version="v1", actor="t")
    with db.session() as s:
        assert catalog.list_versions(s, review_days=90, review_overdue=True) == []
        in_eleven_days = datetime.now(UTC) + timedelta(days=11)
        assert len(catalog.list_versions(s, review_days=90, review_overdue=True, now=in_eleven_days)) == 1


def test_archive_skips_alias_targets_and_restore_is_byte_identical(
    db, tmp_path, tiny_base, trained_adapter, second_adapter
):
    from lorawatch.registry import lifecycle

    store = registry_store.Store(tmp_path / "store")
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
        v1 = registry_versions.register_version(s, store, adapter="a", path=trained_adapter, base="tiny", actor="t")
        registry_versions.register_version(s, store, adapter="a", path=second_adapter, base="tiny", actor="t")
        registry_aliases.promote(s, adapter="a", version="v2", actor="t", reason="r")
        v1_dir = Path(v1.path)
    original = {p.name: p.read_bytes() for p in v1_dir.iterdir()}
    future = datetime.now(UTC) + timedelta(days=91)
    with db.session() as s:
        report = lifecycle.archive(s, store, older_than_days=90, actor="t", now=future)
    assert [(r["version"], r["archived"], r["skipped"]) for r in report] == [
        ("a@v1", True, None),
        ("a@v2", False, "an alias points at it"),
    ]
    assert not v1_dir.exists()
    assert store.archive_file("a", "v1").stat().st_size > 0
    with db.session() as s:
        assert registry_versions.get_version(s, "a", "v1").state == "archived"
        with pytest.raises(Exception, match="archived"):
            registry_versions.open_version(s, store, "a", "v1")
    with db.session() as s:
        lifecycle.restore(s, store, adapter="a", version="v1", actor="t")
    assert {p.name: p.read_bytes() for p in v1_dir.iterdir()} == original
    with db.session() as s:
        assert registry_versions.open_version(s, store, "a", "v1") == v1_dir
    assert not store.archive_file("a", "v1").exists()


def test_archive_cli_dry_run_lists_without_archiving(cli, reg, trained_adapter):
    cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny")
    result = cli("registry", "archive", "--older-than", "1", "--dry-run", "--json")
    assert result.code == 0 and result.json() == []


def test_base_model_from_a_gguf_file_is_hashed(db, tmp_path):

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    with db.session() as s:
        record = registry_bases.add_base(s, name="g", path=gguf, actor="t")
    assert record.architecture == "gguf" and list(record.files) == ["model.gguf"]


def test_a_rolled_back_registration_leaves_no_files(db, tmp_path, tiny_base, trained_adapter):

    store = registry_store.Store(tmp_path / "store")
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
    with pytest.raises(RuntimeError), db.session() as s:
        registry_versions.register_version(s, store, adapter="a", path=trained_adapter, base="tiny", actor="t")
        assert store.version_dir("a", "v1").is_dir()
        raise RuntimeError("crash after copying")
    assert not store.version_dir("a", "v1").exists()
