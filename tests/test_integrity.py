"""Nothing lost, nothing half-written (#20): writers that race, long work outside the write
lock, runs that know they are alive. Real processes against both database backends."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

LORAWATCH = [sys.executable, "-m", "lorawatch"]


def _run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LORAWATCH, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def registry_env(cli, lw_env, tiny_base, tmp_path):
    assert cli("init").code == 0
    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    return {**os.environ, "LORAWATCH_DATABASE_URL": lw_env, "LORAWATCH_HOME": str(tmp_path / "home")}


def test_two_registrations_of_one_version_one_wins_and_its_files_stay_whole(
    registry_env, trained_adapter, second_adapter, tmp_path
):
    for version in ("r1", "r2", "r3"):
        procs = [
            subprocess.Popen(
                [*LORAWATCH, "registry", "add", "race", "--path", str(path), "--base", "tiny", "--version", version],
                env=registry_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in (trained_adapter, second_adapter)
        ]
        outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in outcomes)
        assert codes == [0, 2], outcomes
        [(_, loser)] = [(c, e) for c, e in outcomes if c == 2]
        error_lines = [line for line in loser.splitlines() if line.startswith("lorawatch:")]
        assert "Traceback" not in loser and len(error_lines) == 1 and "registered already" in error_lines[0], loser
        verified = _run("registry", "verify", "race", "--version", version, env=registry_env)
        assert verified.returncode == 0, verified.stderr
    listed = json.loads(_run("registry", "show", "race", "--json", env=registry_env).stdout)
    assert sorted(v["version"] for v in listed["versions"]) == ["r1", "r2", "r3"]
    store = Path(registry_env["LORAWATCH_HOME"]) / "store"
    assert not list((store / ".staging").iterdir()) if (store / ".staging").exists() else True


def test_a_name_inserted_by_another_writer_a_moment_ago_leaves_the_session_usable(db):
    """The race the registrations above run into on PostgreSQL, made deterministic: writer A holds
    an uncommitted row named "race"; writer B inserts the same name, waits on A's key, and after
    A commits gets False from ``insert_unique`` with its own transaction still usable: it reads
    A's row and commits work of its own."""
    import threading

    from sqlalchemy import select

    from lorawatch.db import insert_unique
    from lorawatch.db.models import AdapterRecord, BaseModelRecord

    with db.session() as session:
        base = BaseModelRecord(name="tiny", sha256="0" * 64, files={}, created_by="test")
        session.add(base)
        session.flush()
        base_id = base.id
    outcome: dict[str, object] = {}

    def writer_b() -> None:
        try:
            with db.session() as session:
                outcome["inserted"] = insert_unique(
                    session, AdapterRecord(name="race", base_model_id=base_id, created_by="b")
                )
                outcome["owner"] = session.scalar(select(AdapterRecord.created_by).where(AdapterRecord.name == "race"))
                session.add(AdapterRecord(name="b-own", base_model_id=base_id, created_by="b"))
        except Exception as exc:  # reported below: the assertion names it
            outcome["error"] = repr(exc)

    with db.session() as session_a:
        session_a.add(AdapterRecord(name="race", base_model_id=base_id, created_by="a"))
        session_a.flush()  # A's row is written, not committed: B's insert must wait for it
        b = threading.Thread(target=writer_b)
        b.start()
        b.join(timeout=1.0)  # B blocks on A's key (PostgreSQL) or on the write lock (SQLite)
    b.join(timeout=60)
    assert not b.is_alive()
    assert outcome == {"inserted": False, "owner": "a"}, outcome
    with db.session() as session:
        assert sorted(session.scalars(select(AdapterRecord.name))) == ["b-own", "race"]


def _big_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of ``size`` bytes of weights (sparse: quick to make, slow to hash)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + size)


def test_a_long_registration_does_not_lock_out_readers_or_the_alerts(registry_env, tmp_path):
    big = tmp_path / "big-base"
    _big_safetensors(big / "model.safetensors", 2 * 1024**3)
    (big / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    writer = subprocess.Popen(
        [*LORAWATCH, "registry", "add-base", "big", "--path", str(big), "--json"],
        env=registry_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    readers, waits = 0, []
    started = time.monotonic()
    try:
        time.sleep(0.5)
        while writer.poll() is None:
            for args in (("registry", "list"), ("alerts", "evaluate", "--no-traffic"), ("alerts", "list")):
                began = time.monotonic()
                result = _run(*args, env=registry_env, timeout=120)
                waits.append(time.monotonic() - began)
                assert result.returncode == 0, (args, result.stderr)
                assert "locked" not in result.stderr
                readers += 1
    finally:
        out, err = writer.communicate(timeout=600)
    took = time.monotonic() - started
    assert writer.returncode == 0, err
    print(
        f"\n{readers} reader and alert commands ran while a 2 GiB base model was registered ({took:.1f} s); "
        f"none was locked out; the slowest took {max(waits):.1f} s"
    )
    assert readers >= 3
    assert json.loads(out)["files"]["model.safetensors"]["size"] > 2 * 1024**3


def test_what_lorawatch_keeps_is_private_to_its_owner(tmp_path, trained_adapter, tiny_base):
    home = tmp_path / "home"
    env = {**os.environ, "LORAWATCH_HOME": str(home)}
    env.pop("LORAWATCH_DATABASE_URL", None)
    env["LORAWATCH_CONFIG"] = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text(
        '[alerts.route]\nreceiver = "default"\ngroup_wait = "0s"\n'  # the built-in file receiver
    )
    assert _run("init", env=env).returncode == 0
    assert _run("registry", "add-base", "tiny", "--path", tiny_base, env=env).returncode == 0
    added = _run("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", env=env)
    assert added.returncode == 0, added.stderr

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    assert mode(home) == 0o700
    assert mode(home / "lorawatch.db") == 0o600
    store = home / "store"
    assert mode(store) == 0o700
    stored = [p for p in (store / "adapters").rglob("*") if p.is_file()]
    assert stored and all(mode(p) == 0o400 for p in stored), {str(p): oct(mode(p)) for p in stored}
    assert all(mode(p) == 0o700 for p in (store / "adapters" / "support").iterdir())


def test_retention_purges_what_is_past_its_age_and_keeps_the_rest(cli, lw_env, db, tmp_path):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select

    from lorawatch import audit
    from lorawatch.db.models import (
        Alert,
        AuditLog,
        Incident,
        IncidentAlert,
        JobRun,
        KpiValue,
        Notification,
        TrafficMinute,
    )
    from lorawatch.retention import purge
    from lorawatch.settings import Settings

    now = datetime(2026, 12, 1, tzinfo=UTC)
    old, recent = now - timedelta(days=500), now - timedelta(days=2)
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"ts": t.isoformat(), "adapter_id": "a", "latency_ms": 100.0}) + "\n"
            for t in (old, old + timedelta(minutes=1), recent)
        )
    )
    assert cli("ingest", "requests", str(requests)).code == 0
    kpis = tmp_path / "kpis.csv"
    kpis.write_text(f"ts,adapter_id,kpi,value\n{old.isoformat()},a,csat,1\n{recent.isoformat()},a,csat,2\n")
    assert cli("ingest", "kpis", str(kpis)).code == 0
    with db.session() as session:
        for created, status in ((old, "sent"), (old, "failed"), (old, "pending"), (recent, "sent")):
            session.add(
                Notification(receiver="x", status=status, payload={}, created_at=created, next_attempt_at=created)
            )
        alerts = [
            Alert(
                fingerprint=f"f{i}",
                rule_id="r",
                labels={},
                annotations={},
                severity="warning",
                state=state,
                last_eval_at=at,
                resolved_at=at if state == "resolved" else None,
            )
            for i, (state, at) in enumerate(
                (("resolved", old), ("resolved", old), ("firing", old), ("resolved", recent))
            )
        ]
        session.add_all(alerts)
        incident = Incident(title="t", severity="warning", source="manual", opened_at=old, opened_by="t")
        session.add(incident)
        session.flush()
        session.add(IncidentAlert(incident_id=incident.id, alert_id=alerts[1].id))
        for n, (started, status) in enumerate(((old, "success"), (old, "running"), (recent, "success"))):
            session.add(
                JobRun(
                    job=f"j{n}",
                    kind="alerts",
                    scheduled_for=started,
                    started_at=started,
                    heartbeat_at=started,
                    status=status,
                    host="h",
                    pid=1,
                )
            )
        audit.record(session, actor="t", action="x", object_type="t", object_id="1", ts=now - timedelta(days=3000))
        audit.record(session, actor="t", action="x", object_type="t", object_id="2", ts=recent)

    def counts() -> dict[str, int]:
        with db.session() as session:
            return {
                m.__tablename__: session.scalar(select(func.count()).select_from(m))
                for m in (TrafficMinute, KpiValue, Notification, Alert, JobRun, AuditLog)
            }

    settings = Settings.model_validate({"home": str(tmp_path / "home")})
    before = counts()
    dry = purge(db, settings, now=now, dry_run=True, actor="t")["would_purge"]
    assert counts() == before  # a dry run changes nothing
    result = purge(db, settings, now=now, actor="t")["purged"]
    assert result == dry
    after = counts()
    assert result["traffic_minutes"] == 2 and after["traffic_minutes"] == before["traffic_minutes"] - 2
    assert result["kpis"] == 1 and result["notifications"] == 2  # the old pending one stays
    assert result["resolved_alerts"] == 1  # not the firing one, not the one an incident links to
    assert result["job_runs"] == 1 and result["audit"] == 1
    with db.session() as session:
        assert (
            session.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "retention.purge")) == 1
        )
    assert purge(db, settings, now=now, actor="t")["purged"] == {k: 0 for k in result}  # idempotent
