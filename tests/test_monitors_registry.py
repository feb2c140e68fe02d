from __future__ import annotations

from pathlib import Path

import pytest

from lorawatch.errors import ConfigError, NotFoundError
from lorawatch.monitors.registry import all_monitors, check_configured_ids, get_monitor, monitor, threshold_for

ROOT = Path(__file__).resolve().parent.parent


def test_an_unknown_monitor_lists_the_known_ones():
    with pytest.raises(NotFoundError) as info:
        get_monitor("psi2")
    assert 'no monitor "psi2"; known: embedding_cosine, embedding_mmd' in str(info.value)


def test_a_duplicate_id_fails_at_registration():
    with pytest.raises(ValueError, match="registered twice"):
        monitor("logit_kl", kind="canary", threshold=1, breached_when="above")(lambda rows: None)


def test_thresholds_come_from_settings_and_unknown_ids_fail(tmp_path):
    from lorawatch.settings import load_settings

    (tmp_path / "lorawatch.toml").write_text("[monitors.logit_kl]\nthreshold = 0.9\n")
    settings = load_settings()
    assert threshold_for("logit_kl", settings) == 0.9
    assert threshold_for("top1_agreement", settings) == get_monitor("top1_agreement").threshold
    (tmp_path / "lorawatch.toml").write_text("[monitors.logit_kll]\nthreshold = 0.9\n")
    with pytest.raises(ConfigError, match="logit_kll"):
        check_configured_ids(load_settings())


@pytest.mark.parametrize(
    "direction,value,threshold,breached",
    [
        ("above", 0.6, 0.5, True),
        ("above", 0.5, 0.5, False),
        ("below", 0.4, 0.5, True),
        ("below", 0.5, 0.5, False),
        ("p_value_below", 0.05, 0.05, True),
        ("p_value_below", 0.06, 0.05, False),
    ],
)
def test_breach_directions(direction, value, threshold, breached):
    spec = next(m for m in all_monitors() if m.breached_when == direction)
    assert spec.is_breached(value, threshold) is breached


def test_every_monitor_is_documented_and_tested():
    docs = "".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for spec in all_monitors():
        assert f"`{spec.id}`" in docs, f"{spec.id} is not in the README or docs/"
        assert f'"{spec.id}"' in tests, f"{spec.id} has no test"
