"""The demo's traffic runs up to the minute the demo runs, so the latency rules' short windows
(5 minutes to 6 hours) hold requests and the Overview and the alerts tell the same story; a
second run adds only what is new."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture
def settings(lw_env):
    from lorawatch.settings import load_settings

    return load_settings()


def test_demo_traffic_reaches_now_fires_the_latency_burn_for_the_slow_adapter_and_counts_nothing_twice(
    db, settings, tmp_path
):
    from sqlalchemy import func, select

    from lorawatch.db.models import TrafficHour
    from lorawatch.demo.traffic import seed
    from lorawatch.monitors.traffic_eval import evaluate_traffic

    folder = tmp_path / "traffic"
    before = datetime.now(UTC)
    first = seed(db, folder, actor="t")
    assert first["requests"]["files"] == 1 and first["requests"]["rows"] > 10_000
    with db.session() as session:
        newest = session.scalar(select(func.max(TrafficHour.minute)))
        total = session.scalar(select(func.sum(TrafficHour.requests)))
    newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
    # rolled up by the hour: the newest bucket is the hour of the last whole minute before the seeding
    # (comparing with the clock after it failed when the seeding ran in the last minute of an hour)
    assert newest >= (before - timedelta(minutes=2)).replace(minute=0, second=0, microsecond=0)

    stored = evaluate_traffic(db, settings)
    burn = {(r["monitor"], r["adapter"]): r for r in stored if r["monitor"].startswith("latency_slo_burn")}
    assert burn[("latency_slo_burn_slow", "support-risky")]["breached"]
    assert (
        burn[("latency_slo_burn_slow", "support-risky")]["details"]["total_short"] > 0
    )  # the 6 h window holds traffic
    assert not any(r["breached"] for (m, a), r in burn.items() if a == "support-healthy")

    again = seed(db, folder, actor="t")  # the same minute or the next: at most one small chunk more
    assert again["requests"]["rows"] < 1_000
    with db.session() as session:
        assert session.scalar(select(func.sum(TrafficHour.requests))) == total + again["requests"]["rows"]


def test_a_chunk_written_but_never_ingested_is_ingested_by_the_next_run(db, settings, tmp_path):
    """A run killed between writing a chunk and ingesting it loses nothing: the next run ingests it."""
    from sqlalchemy import func, select

    from lorawatch.db import Database
    from lorawatch.db.models import TrafficHour
    from lorawatch.demo.traffic import seed

    folder = tmp_path / "traffic"
    other = Database(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    other.upgrade()
    written = seed(other, folder, actor="t")  # stands in for the killed run: its chunk is on disk
    other.dispose()
    seed(db, folder, actor="t")
    with db.session() as session:
        assert session.scalar(select(func.sum(TrafficHour.requests))) >= written["requests"]["rows"]
