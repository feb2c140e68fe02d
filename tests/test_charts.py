"""Chart specs read at 3 a.m.: titles that render (also under Streamlit's autosize), labelled red
thresholds, one scale per KPI, distinct latency colours, a fixed time window, PNGs for reports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from lorawatch.monitors import charts

T0 = datetime(2024, 5, 1)


def _frame(series: dict[str, float], n: int = 12, step: timedelta = timedelta(hours=6)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"ts": T0 + i * step, "series": s, "value": v * (1 + 0.02 * (i % 3))}
            for s, v in series.items()
            for i in range(n)
        ]
    )


EVENTS = pd.DataFrame(
    {"ts": [T0 + timedelta(days=1), T0 + timedelta(days=2)], "label": ["promote prod -> v3", "rollback prod -> v2"]}
)
DRIFT = _frame({"logit_kl": 0.4, "logit_js": 0.1})
RISK = _frame({"toxicity_rate": 0.01, "pii_leak_rate": 0.005})
LATENCY = _frame({"P50": 300, "P95": 800, "P99": 1100}, step=timedelta(hours=1))
KPIS = _frame({"conversion": 0.08, "csat": 4.3}, n=8, step=timedelta(days=1))


def _charts(**kw):
    """Every public chart function, with events and thresholds where it takes them."""
    return {
        "drift": charts.drift_chart(DRIFT, {"logit_kl": 0.55}, EVENTS, **kw),
        "risk": charts.risk_chart(RISK, {"toxicity_rate": 0.05, "pii_leak_rate": 0.02}, EVENTS, **kw),
        "latency": charts.latency_chart(LATENCY, 1000, EVENTS, **kw),
        "kpis": charts.kpi_chart(KPIS, EVENTS, **kw),
        "series": charts.series_chart(
            DRIFT, title="Drift tests (p-value)", y_title="p-value", thresholds={"p": 0.05}, events=EVENTS, **kw
        ),
    }


def _walk(node):
    """Every dict in a spec."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _marks(spec: dict, kind: str) -> list[dict]:
    out = []
    for node in _walk(spec):
        mark = node.get("mark")
        if mark == kind or (isinstance(mark, dict) and mark.get("type") == kind):
            out.append(node)
    return out


def _mark(node: dict) -> dict:
    return node["mark"] if isinstance(node["mark"], dict) else {"type": node["mark"]}


def _values(spec: dict, column: str) -> list:
    return [row.get(column) for rows in spec.get("datasets", {}).values() for row in rows]


def _title_text(spec: dict) -> str:
    title = spec.get("title")
    return title if isinstance(title, str) else (title or {}).get("text", "")


@pytest.mark.parametrize(
    "name, unit",
    [
        ("drift", "nats"),
        ("risk", "share of outputs"),
        ("latency", "(ms)"),
        ("kpis", "daily mean"),
        ("series", "p-value"),
    ],
)
def test_every_chart_has_a_top_level_title_with_its_unit(name, unit):
    spec = charts.spec(_charts()[name])
    assert unit in _title_text(spec)


@pytest.mark.parametrize(
    "name, y_title", [("drift", "mean KL (nats)"), ("risk", "share of outputs"), ("latency", "ms")]
)
def test_y_axis_titles_carry_units(name, y_title):
    titles = [n["y"].get("title") for n in _walk(charts.spec(_charts()[name])) if isinstance(n.get("y"), dict)]
    assert any(t and y_title in t for t in titles)


def _title_tops(svg: str) -> list[float]:
    """Absolute top (px) of every title text in an SVG rendered by vl-convert."""

    def walk(el, y, in_title):
        m = re.match(r"translate\(([-\d.e]+),\s*([-\d.e]+)\)", el.get("transform") or "")
        y += float(m.group(2)) if m else 0.0
        in_title = in_title or "role-title" in (el.get("class") or "")
        if in_title and el.tag.endswith("text"):
            yield y - float(el.get("font-size", "13").rstrip("px"))
        for child in el:
            yield from walk(child, y, in_title)

    return list(walk(ET.fromstring(svg), 0.0, False))


@pytest.mark.parametrize("name", ["drift", "risk", "latency", "kpis", "series"])
def test_title_stays_on_the_canvas_under_streamlit_autosize(name):
    """st.altair_chart gives a chart without ``autosize`` "fit" (pad for facets) and a top title 26 px
    off: with marker labels floating above the plot the title was drawn off the canvas, unseen."""
    import vl_convert as vlc

    spec = charts.spec(_charts()[name])
    spec.setdefault("autosize", {"type": "pad" if "facet" in spec else "fit", "contains": "padding"})
    svg = vlc.vegalite_to_svg(spec, config={"title": {"anchor": "start", "orient": "top", "offset": 26}})
    tops = _title_tops(svg)
    assert tops and min(tops) >= 0


@pytest.mark.parametrize("name", ["drift", "risk", "latency", "kpis", "series"])
def test_marker_labels_sit_inside_the_plot_and_legends_below_it(name):
    spec = charts.spec(_charts()[name])
    labels = [n for n in _marks(spec, "text") if n.get("encoding", {}).get("text", {}).get("field") == "label"]
    markers = [n for n in labels if _mark(n).get("color") != charts.THRESHOLD_COLOUR]
    assert markers
    for node in markers:
        assert node["encoding"]["y"] == {"value": 0}  # top edge of the plot, whatever its height
        assert _mark(node).get("dy", 0) >= 0  # and below it, never up into the title
    legends = [n["color"]["legend"] for n in _walk(spec) if isinstance(n.get("color"), dict) and "legend" in n["color"]]
    assert legends
    assert all(legend is None or legend.get("orient") == "bottom" for legend in legends)


def test_threshold_rules_are_red_and_labelled_at_their_right_end():
    specs = {k: charts.spec(c) for k, c in _charts().items()}
    assert "KL threshold 0.55" in _values(specs["drift"], "label")
    assert {"toxicity threshold 0.05", "PII leak threshold 0.02"} <= set(_values(specs["risk"], "label"))
    assert "SLO 1000 ms" in _values(specs["latency"], "label")
    for name in ("drift", "risk", "latency", "series"):
        rules = [n for n in _marks(specs[name], "rule") if n.get("encoding", {}).get("y")]
        assert rules and all(_mark(n)["color"] == charts.SEVERITY_COLOURS["critical"] for n in rules)
        texts = [n for n in _marks(specs[name], "text") if _mark(n).get("color") == charts.THRESHOLD_COLOUR]
        assert texts and all(_mark(n).get("x") == "width" and _mark(n).get("align") == "right" for n in texts)


def test_kpis_get_one_panel_and_an_independent_y_scale_each():
    import vl_convert as vlc

    chart = charts.kpi_chart(KPIS, EVENTS)
    spec = charts.spec(chart)
    assert spec["resolve"]["scale"]["y"] == "independent"
    assert spec["facet"]["row"]["field"] == "series"
    # the markers are drawn in every panel
    assert set(_values(spec, "series")) == {"conversion", "csat"}
    events = [r for rows in spec["datasets"].values() for r in rows if r.get("kind") == "event"]
    assert {(r["series"], r["label"]) for r in events} == {
        (s, label) for s in ("conversion", "csat") for label in EVENTS["label"]
    }
    svg = vlc.vegalite_to_svg(chart.to_json())
    labels = re.findall(r'aria-label="(Title text [^"]*|Y-axis [^"]*)"', svg)
    assert [t for t in labels if t in ("Title text 'conversion'", "Title text 'csat'")] == [
        "Title text 'conversion'",
        "Title text 'csat'",
    ]
    y_axes = [t for t in labels if t.startswith("Y-axis")]
    assert len(y_axes) == 2 and y_axes[0] != y_axes[1]  # one y axis, with its own range, per KPI


def test_latency_colours_are_fixed_distinct_and_ordered():
    spec = charts.spec(charts.latency_chart(LATENCY, 1000, EVENTS))
    colours = [
        n["color"] for n in _walk(spec) if isinstance(n.get("color"), dict) and n["color"].get("field") == "series"
    ]
    assert colours
    scale = colours[0]["scale"]
    assert scale["domain"] == ["P50", "P95", "P99"]
    assert len(set(scale["range"])) == 3
    assert charts.THRESHOLD_COLOUR not in scale["range"]  # the SLO line stays the only red
    assert colours[0]["sort"] == ["P50", "P95", "P99"]


def test_a_single_run_is_a_big_filled_point():
    spec = charts.spec(charts.drift_chart(DRIFT.iloc[:1], {"logit_kl": 0.55}))
    point = _mark(_marks(spec, "line")[0])["point"]
    assert isinstance(point, dict) and point.get("filled") and point.get("size", 0) >= 50


@pytest.mark.parametrize("name", ["drift", "risk", "latency", "kpis", "series"])
def test_window_sets_the_x_domain(name):
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=7)
    spec = charts.spec(_charts(window=(start, end))[name])
    domains = [n["x"]["scale"]["domain"] for n in _walk(spec) if isinstance(n.get("x"), dict) and "scale" in n["x"]]
    assert domains
    for lo, hi in domains:
        assert (lo["year"], lo["month"], lo["date"], lo["hours"]) == (2024, 4, 30, 0)
        assert (hi["year"], hi["month"], hi["date"], hi["hours"]) == (2024, 5, 8, 0)
    # without a window the axis spans the data, as before
    plain = charts.spec(_charts()[name])
    assert not [n for n in _walk(plain) if isinstance(n.get("x"), dict) and "domain" in n["x"].get("scale", {})]


def test_aware_window_and_frames_share_one_clock_with_naive_events():
    aware = KPIS.assign(ts=pd.to_datetime(KPIS["ts"]).dt.tz_localize("UTC"))
    window = (datetime(2024, 5, 1, 2, tzinfo=timezone(timedelta(hours=2))), datetime(2024, 5, 9, tzinfo=UTC))
    spec = charts.spec(charts.kpi_chart(aware, EVENTS, window=window))
    stamps = [t for t in _values(spec, "ts") if t]
    assert stamps and not [t for t in stamps if "+" in t or t.endswith("Z")]
    lo = [n["x"]["scale"]["domain"][0] for n in _walk(spec) if isinstance(n.get("x"), dict) and "scale" in n["x"]][0]
    assert (lo["date"], lo["hours"]) == (1, 0)


def test_severity_colours_are_hex_in_the_usual_families():
    colours = charts.SEVERITY_COLOURS
    assert set(colours) == {"critical", "warning", "info", "ok"}
    rgb = {k: tuple(int(v[i : i + 2], 16) for i in (1, 3, 5)) for k, v in colours.items()}
    assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", v) for v in colours.values())
    r, g, b = rgb["critical"]
    assert r > 150 and r > 2 * g and r > 2 * b  # red
    r, g, b = rgb["warning"]
    assert r > 200 and 80 < g < 200 and b < 100  # orange
    r, g, b = rgb["info"]
    assert b > r and b > g  # blue
    r, g, b = rgb["ok"]
    assert g > r and g > b  # green


@pytest.mark.parametrize("name", ["drift", "risk", "latency", "kpis", "series"])
def test_to_png_renders_each_chart_with_events_and_thresholds(name):
    assert charts.to_png(_charts()[name]).startswith(b"\x89PNG")


def test_to_png_renders_empty_and_windowed_charts():
    window = (T0, T0 + timedelta(days=3))
    assert charts.to_png(charts.kpi_chart(KPIS.iloc[:0], EVENTS, window=window)).startswith(b"\x89PNG")
    assert charts.to_png(charts.latency_chart(None, 1000, None, window=window)).startswith(b"\x89PNG")
    one = charts.drift_chart(DRIFT.iloc[:1], {"logit_kl": 0.55}, EVENTS, window=window)
    assert charts.to_png(one).startswith(b"\x89PNG")


def test_marker_labels_minutes_apart_on_a_long_axis_never_share_a_line():
    """A promotion, a second promotion, the incident and its rollback within minutes, drawn on a
    two-week axis: each label gets its own line (they overprinted in the report's latency chart)."""
    start = datetime(2024, 5, 1)
    frame = _frame({"P50": 200.0, "P95": 600.0, "P99": 900.0}, n=14 * 24, step=timedelta(hours=1))
    close = pd.DataFrame(
        {
            "ts": [start + timedelta(days=13, minutes=m) for m in (0, 1, 5, 20)],
            "label": ["promote production -> v0", "promote production -> v1", "incident 1 opened", "rollback -> v0"],
        }
    )
    spec = charts.spec(charts.latency_chart(frame, 1000.0, close, window=(start, start + timedelta(days=14))))
    rows = [row["row"] for rows in spec["datasets"].values() for row in rows if row.get("kind") == "event"]
    assert sorted(rows) == [0, 1, 2, 3], rows
