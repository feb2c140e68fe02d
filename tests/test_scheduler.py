"""The scheduler: occurrences, exactly-once across processes, stale runs after SIGKILL,
coalescing, the canary-job alert, and the long-running APScheduler service with SIGTERM.

The clock is driven (``scheduler --once --at``); nothing waits for a schedule."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from lorawatch.db.models import JobRun
from lorawatch.settings import JobSettings, load_settings

MONDAY = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # a Monday


def test_occurrences_of_cron_and_interval_schedules():
    from lorawatch.jobs import next_fire, occurrence

    weekly = JobSettings(kind="alerts", cron="0 2 * * 1")
    assert occurrence(weekly, MONDAY) == MONDAY
    assert occurrence(weekly, MONDAY - timedelta(seconds=1)) == MONDAY - timedelta(days=7)
    assert occurrence(weekly, MONDAY + timedelta(days=6, hours=23)) == MONDAY
    assert next_fire(weekly, MONDAY) == MONDAY + timedelta(days=7)
    five = JobSettings(kind="alerts", every="5m")
    assert occurrence(five, MONDAY + timedelta(minutes=7, seconds=3)) == MONDAY + timedelta(minutes=5)
    assert next_fire(five, MONDAY + timedelta(minutes=7)) == MONDAY + timedelta(minutes=10)
    sunday = JobSettings(kind="alerts", cron="30 4 * * 0")  # crontab numbering: 0 and 7 are Sunday
    assert occurrence(sunday, MONDAY) == MONDAY - timedelta(days=1) + timedelta(hours=2, minutes=30)
    assert occurrence(JobSettings(kind="alerts", cron="30 4 * * 7"), MONDAY) == occurrence(sunday, MONDAY)
    weekdays = JobSettings(kind="alerts", cron="0 9 * * 1-5")
    assert occurrence(weekdays, MONDAY + timedelta(days=5, hours=12)) == MONDAY + timedelta(days=4, hours=7)
    minutely = JobSettings(kind="alerts", cron="* * * * *")
    assert occurrence(minutely, MONDAY + timedelta(seconds=59)) == MONDAY


@pytest.mark.parametrize(
    "bad, message, line",
    [
        ({"kind": "alerts"}, "exactly one of cron or every", 1),
        ({"kind": "alerts", "cron": "0 2 * *"}, "wrong number of fields", 1),
        ({"kind": "canary", "every": "1d"}, "needs dataset", 1),
        ({"kind": "alerts", "every": "soon"}, "not a duration", 3),  # a bad value names its own line
    ],
)
def test_a_bad_job_is_a_config_error_with_its_line(cli, tmp_path, bad, message, line):
    lines = ["[scheduler.jobs.weekly]"] + [f'{k} = "{v}"' for k, v in bad.items()]
    (tmp_path / "lorawatch.toml").write_text("\n".join(lines) + "\n")
    result = cli("jobs", "list")
    assert result.code == 2 and f"lorawatch.toml:{line}:" in result.err and message in result.err, result.err


def _config(tmp_path, jobs: str, extra: str = "") -> Path:
    path = tmp_path / "lorawatch.toml"
    path.write_text(
        '[scheduler]\nheartbeat_s = 0.2\nstale_after = "5m"\n'
        '[scheduler.jobs.alerts]\nkind = "alerts"\nevery = "1m"\nenabled = false\n'
        '[scheduler.jobs.notify]\nkind = "notify"\nevery = "30s"\nenabled = false\n'
        '[scheduler.jobs.lifecycle]\nkind = "lifecycle"\ncron = "0 3 * * *"\nenabled = false\n'
        + ("" if "[scheduler.jobs.weekly-canary]" in jobs else "[scheduler.jobs.weekly-canary]\nenabled = false\n")
        + jobs
        + extra
    )
    return path


def _append_job(name: str, out: Path, schedule: str = 'every = "1h"', sleep_unless: Path | None = None) -> str:
    code = f"open({str(out)!r}, 'a').write('ran\\n')"
    if sleep_unless is not None:
        code = (
            f"import os, time\nif not os.path.exists({str(sleep_unless)!r}):\n"
            f"    open({str(sleep_unless)!r}, 'w').write('x'); time.sleep(120)\n{code}"
        )
    return (
        f'[scheduler.jobs.{name}]\nkind = "command"\n{schedule}\n'
        f'command = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}]\n'
    )


def _scheduler(env, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lorawatch", "scheduler", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _env(lw_env, config: Path) -> dict[str, str]:
    return {**os.environ, "LORAWATCH_DATABASE_URL": lw_env, "LORAWATCH_CONFIG": str(config)}


def test_two_schedulers_on_one_database_run_each_due_job_exactly_once(lw_env, db, tmp_path):
    from lorawatch.jobs import history

    outs = [tmp_path / f"out{i}.txt" for i in range(3)]
    config = _config(tmp_path, "".join(_append_job(f"job{i}", out) for i, out in enumerate(outs)))
    env = _env(lw_env, config)
    at = "2026-11-30T12:30:00Z"
    procs = [_scheduler(env, "--once", "--at", at, "--json") for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    ran = [r["job"] for out, _ in results for r in json.loads(out)]
    assert sorted(ran) == ["job0", "job1", "job2"], results  # split between the two processes, none twice
    assert [o.read_text() for o in outs] == ["ran\n"] * 3
    runs = history(db)
    assert len(runs) == 3 and {r["scheduled_for"] for r in runs} == {datetime(2026, 11, 30, 12, tzinfo=UTC)}
    # the same occurrence again: nothing; the next hour: each once more
    again = _scheduler(env, "--once", "--at", "2026-11-30T12:59:59Z", "--json").communicate(timeout=120)[0]
    assert json.loads(again) == []
    procs = [_scheduler(env, "--once", "--at", "2026-11-30T13:00:01Z", "--json") for _ in range(2)]
    ran = [r["job"] for p in procs for r in json.loads(p.communicate(timeout=120)[0])]
    assert sorted(ran) == ["job0", "job1", "job2"] and [o.read_text() for o in outs] == ["ran\nran\n"] * 3


def test_sigkill_during_a_job_the_next_start_marks_it_failed_and_runs_it_again(lw_env, db, tmp_path):
    from lorawatch.jobs import history

    out, marker = tmp_path / "out.txt", tmp_path / "started"
    config = _config(tmp_path, _append_job("ingest", out, 'cron = "0 2 * * 1"', sleep_unless=marker))
    env = _env(lw_env, config)
    proc = _scheduler(env, "--once", "--at", "2026-11-30T02:00:30Z")
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    os.killpg(proc.pid, signal.SIGKILL)  # the scheduler and the job's process die together
    proc.wait()
    [run] = history(db)
    assert run["status"] == "running" and not out.exists()
    # a scheduler started before the lease expires leaves it alone (it might still be running)
    early = _scheduler(env, "--once", "--at", "2026-11-30T02:03:00Z", "--json").communicate(timeout=120)[0]
    assert json.loads(early) == []
    later = _scheduler(env, "--once", "--at", "2026-11-30T02:10:00Z", "--json").communicate(timeout=120)[0]
    [rerun] = json.loads(later)
    assert rerun["attempt"] == 2 and rerun["status"] == "success" and out.read_text() == "ran\n"
    first, second = sorted(history(db), key=lambda r: r["attempt"])
    assert first["status"] == "failed" and first["error"].startswith("stale: no heartbeat since")
    assert second["scheduled_for"] == first["scheduled_for"] == MONDAY


def test_missed_occurrences_coalesce_into_one_run(db, tmp_path):
    from lorawatch.jobs import history
    from lorawatch.scheduler import run_due

    out = tmp_path / "out.txt"
    settings = load_settings(_config(tmp_path, _append_job("weekly", out, 'cron = "0 2 * * 1"')))
    run_due(db, settings, clock=lambda: MONDAY + timedelta(minutes=1))
    run_due(db, settings, clock=lambda: MONDAY + timedelta(days=22))  # three Mondays missed while down
    assert out.read_text() == "ran\nran\n"
    assert [r["scheduled_for"] for r in history(db)] == [MONDAY + timedelta(days=21), MONDAY]


def test_a_failed_canary_job_raises_the_canary_job_alert(db, tmp_path):
    from lorawatch.alerts.engine import evaluate, list_alerts
    from lorawatch.jobs import history
    from lorawatch.scheduler import run_due

    settings = load_settings(
        _config(
            tmp_path,
            '[scheduler.jobs.weekly-canary]\nkind = "canary"\ncron = "0 2 * * 1"\ndataset = "missing/core-v1.jsonl"\n',
        )
    )
    [run] = run_due(db, settings, clock=lambda: MONDAY + timedelta(minutes=1))
    assert run["status"] == "failed" and "core-v1.jsonl" in run["error"]
    evaluate(db, settings, now=MONDAY + timedelta(minutes=2))
    [alert] = [
        a for a in list_alerts(db, settings, now=MONDAY + timedelta(minutes=2)) if a["rule"] == "canary_job_failed"
    ]
    assert alert["labels"]["job"] == "weekly-canary" and alert["labels"]["dataset"] == "core-v1"
    assert alert["state"] == "firing" and "weekly-canary" in alert["annotations"]["summary"]
    assert history(db)[0]["error"] == run["error"]


def test_the_weekly_canary_job_runs_a_real_canary(cli, lw_env, db, tmp_path, tiny_base, trained_adapter):
    from lorawatch.scheduler import run_due
    from tests.tiny_models import write_canary_dataset

    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    assert (
        cli("registry", "add", "support", "--path", trained_adapter, "--base", "tiny", "--promote", "production").code
        == 0
    )
    dataset = write_canary_dataset(tmp_path / "canary.jsonl", n=4)
    settings = load_settings(
        _config(
            tmp_path,
            '[scheduler.jobs.weekly-canary]\nkind = "canary"\ncron = "0 2 * * 1"\n'
            f'dataset = "{dataset}"\ndevice = "cpu"\n',
            "[risk]\nenabled = false\n[canary]\nmax_new_tokens = 4\n",
        )
    )
    [run] = run_due(db, settings, clock=lambda: MONDAY + timedelta(minutes=1))
    assert run["status"] == "success", run["error"]
    [canary_run] = run["result"]["runs"]
    assert canary_run["base"] == "tiny" and canary_run["status"] == "complete"
    shown = cli("canary", "show", canary_run["run"], "--json").json()
    assert shown["status"] == "complete" and shown["adapters"][0]["adapter"] == "support"


def test_init_schedules_the_weekly_canary_on_the_shipped_core_set_and_the_config_turns_it_off(cli, lw_env, tmp_path):
    from lorawatch.monitors.dataset import resolve_dataset

    assert cli("init", "--json").code == 0
    jobs = {j["job"]: j for j in cli("jobs", "list", "--json").json()}
    weekly = jobs["weekly-canary"]
    assert weekly["kind"] == "canary" and weekly["schedule"] == "cron 0 2 * * 1"
    assert weekly["dataset"] == "core-v1" and weekly["adapters"] == "production" and weekly["device"] == "auto"
    next_run = datetime.fromisoformat(weekly["next_run"])
    assert (
        next_run.weekday() == 0 and (next_run.hour, next_run.minute) == (2, 0) and next_run.utcoffset() == timedelta(0)
    )
    assert resolve_dataset("core-v1").is_file() and resolve_dataset("core-v1").name == "core-v1.jsonl"
    with (tmp_path / "lorawatch.toml").open("a") as config:
        config.write('\n[scheduler.jobs.weekly-canary]\ncron = "30 4 * * 0"\n')
    assert {j["job"]: j for j in cli("jobs", "list", "--json").json()}["weekly-canary"]["schedule"] == "cron 30 4 * * 0"
    with (tmp_path / "lorawatch.toml").open("a") as config:
        config.write("enabled = false\n")
    assert "weekly-canary" not in {j["job"] for j in cli("jobs", "list", "--json").json()}


def test_the_weekly_canary_with_nothing_in_production_succeeds_with_nothing_to_do(db, tmp_path):
    from lorawatch.scheduler import run_due

    settings = load_settings(_config(tmp_path, "[scheduler.jobs.weekly-canary]\nenabled = true\n"))
    [run] = run_due(db, settings, clock=lambda: MONDAY + timedelta(minutes=1))
    assert run["status"] == "success", run["error"]
    assert run["result"] == {"runs": [], "note": "no adapter has a production version yet"}


def test_jobs_list_run_and_history_from_the_cli(cli, lw_env, db, tmp_path):
    out = tmp_path / "out.txt"
    _config(tmp_path, _append_job("export", out, 'cron = "0 2 * * 1"'))
    listed = cli("jobs", "list", "--json").json()
    assert [j["job"] for j in listed] == ["export"] and listed[0]["schedule"] == "cron 0 2 * * 1"
    result = cli("jobs", "run", "export", "--json")
    assert result.code == 0 and result.json()["trigger"] == "manual" and out.read_text() == "ran\n"
    assert cli("jobs", "run", "nope").code == 2
    assert cli("jobs", "history", "--json").json()[0]["status"] == "success"
    assert cli("jobs", "list", "--json").json()[0]["last_status"] == "success"


def test_the_service_runs_jobs_on_schedule_and_stops_gracefully_on_sigterm(lw_env, db, tmp_path):
    from lorawatch.jobs import history

    out = tmp_path / "out.txt"
    config = _config(tmp_path, _append_job("tick", out, 'every = "1s"'))
    proc = _scheduler(_env(lw_env, config))
    deadline = time.monotonic() + 60
    while (not out.exists() or out.read_text().count("ran") < 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM, finishing running jobs" in err and "stopped" in err
    runs = history(db, job="tick")
    assert len(runs) >= 3 and all(r["status"] == "success" for r in runs)
    assert len({r["scheduled_for"] for r in runs}) == len(runs)  # one run per occurrence


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"  # a zombie is dead too
    except FileNotFoundError:
        return False


def test_a_sigkilled_scheduler_leaves_no_command_running_after_restart(lw_env, db, tmp_path):
    """The command's own child dies with the scheduler; what that child started (a grandchild
    in the same process group) is stopped by the next scheduler before the occurrence reruns."""
    pidfile = tmp_path / "grandchild.pid"
    job = (
        '[scheduler.jobs.sleeper]\nkind = "command"\ncron = "0 2 * * 1"\n'
        f'command = ["sh", "-c", "sleep 300 & echo $! > {pidfile}; wait"]\n'
    )
    env = _env(lw_env, _config(tmp_path, job))
    proc = _scheduler(env, "--once", "--at", "2026-11-30T02:00:30Z")
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    with db.session() as session:
        run = session.scalars(select(JobRun)).one()
        sh_pid = run.child_pgid
    assert sh_pid and _alive(sh_pid) and _alive(grandchild)
    os.kill(proc.pid, signal.SIGKILL)  # the scheduler alone
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(sh_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(sh_pid), "the command did not die with its scheduler"
    assert _alive(grandchild)  # still there: only the next scheduler can know it is orphaned
    later = _scheduler(env, "--once", "--at", "2026-11-30T02:10:00Z", "--json")
    deadline = time.monotonic() + 30
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the restarted scheduler left the stale run's group running"
    later.kill()  # the rerun sleeps 300 s; stop it (and its group) here
    later.wait()
    with db.session() as session:
        for run in session.scalars(select(JobRun)):
            if run.child_pgid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(run.child_pgid, signal.SIGKILL)


def test_a_command_whose_group_cannot_be_recorded_never_starts(db, tmp_path):
    """The group is recorded before the command runs: when the database refuses the record, the
    command is stopped at the gate, not left running where no restarted scheduler could find it."""
    from sqlalchemy import text

    from lorawatch.scheduler import run_job

    out = tmp_path / "out.txt"
    settings = load_settings(_config(tmp_path, _append_job("guarded", out, 'cron = "0 2 * * 1"')))
    with db.engine.begin() as conn:  # the database itself refuses to store a group id
        if db.engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_group BEFORE UPDATE OF child_pgid ON job_runs "
                    "BEGIN SELECT RAISE(ABORT, 'no group ids today'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_group() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'no group ids today'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_group BEFORE UPDATE OF child_pgid ON job_runs "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_group()"
                )
            )
    result = run_job(db, settings, "guarded", clock=lambda: MONDAY + timedelta(minutes=1))
    assert result["status"] == "failed" and "no group ids today" in result["error"], result
    time.sleep(0.5)  # long enough for the command to have written, had it started
    assert not out.exists()


def test_a_command_reads_no_input_and_a_missing_program_is_named(db, tmp_path):
    from lorawatch.scheduler import run_job

    code = "import sys; print(repr(sys.stdin.read()))"
    job = (
        '[scheduler.jobs.reader]\nkind = "command"\ncron = "0 2 * * 1"\n'
        f'command = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}]\n'
        '[scheduler.jobs.missing]\nkind = "command"\ncron = "0 2 * * 1"\n'
        'command = ["no-such-program-lorawatch", "x"]\n'
    )
    settings = load_settings(_config(tmp_path, job))
    clock = lambda: MONDAY + timedelta(minutes=1)  # noqa: E731
    reader = run_job(db, settings, "reader", clock=clock)
    assert reader["status"] == "success" and reader["result"]["stdout_tail"] == "''", reader
    missing = run_job(db, settings, "missing", clock=clock)
    assert missing["status"] == "failed" and "'no-such-program-lorawatch' not found" in missing["error"], missing
