"""Chart specs (Altair, i.e. Vega-Lite), shared by the dashboard and the post-incident reports,
which render the same specs as static PNG images (``to_png``, offline through vl-convert).

Every chart takes tidy frames and optional event markers (promotions, rollbacks, incidents) and
draws threshold lines where a threshold is given. An empty frame gives a chart that says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

WIDTH, HEIGHT = 640, 200


def _empty(title: str):
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    return (
        alt.Chart(pd.DataFrame({"text": ["no data in this window"]}))
        .mark_text(size=14, color="#666")
        .encode(text="text:N")
        .properties(title=title, width=WIDTH, height=60)
    )


def _markers(events: pd.DataFrame | None):
    """Vertical rules with labels at promotions, rollbacks and incident times."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    if events is None or events.empty:
        return None
    base = alt.Chart(events)
    rules = base.mark_rule(strokeDash=[4, 3], color="#444").encode(
        x="ts:T", tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"), "label:N"]
    )
    text = base.mark_text(align="left", dx=3, dy=-HEIGHT / 2 + 8, fontSize=10, color="#444").encode(
        x="ts:T", text="label:N"
    )
    return rules + text


def series_chart(
    frame: pd.DataFrame,
    *,
    title: str,
    y_title: str,
    thresholds: dict[str, float] | None = None,
    events: pd.DataFrame | None = None,
):
    """Lines of ``value`` over ``ts`` per ``series``, with dashed red threshold rules."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    if frame is None or frame.empty:
        return _empty(title)
    lines = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("ts:T", title=None, axis=alt.Axis(format="%b %d %H:%M", labelAngle=0)),
            y=alt.Y("value:Q", title=y_title),
            color=alt.Color("series:N", title=None),
            tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"), "series:N", alt.Tooltip("value:Q", format=".4g")],
        )
    )
    layers = [lines]
    if thresholds:
        th = pd.DataFrame({"threshold": list(thresholds.values()), "name": [f"{k} threshold" for k in thresholds]})
        layers.append(
            alt.Chart(th)
            .mark_rule(color="#d62728", strokeDash=[6, 4])
            .encode(y="threshold:Q", tooltip=["name:N", "threshold:Q"])
        )
    marks = _markers(events)
    if marks is not None:
        layers.append(marks)
    return alt.layer(*layers).properties(title=title, width=WIDTH, height=HEIGHT)


def drift_chart(frame: pd.DataFrame, thresholds: dict[str, float] | None = None, events: pd.DataFrame | None = None):
    """Logit KL (and other drift monitors) per canary run."""
    return series_chart(
        frame, title="Logit drift per canary run", y_title="mean KL (nats)", thresholds=thresholds, events=events
    )


def risk_chart(frame: pd.DataFrame, thresholds: dict[str, float] | None = None, events: pd.DataFrame | None = None):
    """Toxicity and PII rates per canary run."""
    return series_chart(
        frame, title="Content risk per canary run", y_title="share of outputs", thresholds=thresholds, events=events
    )


def latency_chart(frame: pd.DataFrame, objective_ms: float | None = None, events: pd.DataFrame | None = None):
    """P50, P95 and P99 latency per hour."""
    return series_chart(
        frame,
        title="Latency per hour",
        y_title="ms",
        thresholds={"SLO": objective_ms} if objective_ms else None,
        events=events,
    )


def kpi_chart(frame: pd.DataFrame, events: pd.DataFrame | None = None):
    """Daily mean of each KPI."""
    return series_chart(frame, title="KPIs per day", y_title="daily mean", events=events)


def to_png(chart, scale: float = 1.5) -> bytes:
    """The chart as a PNG (rendered offline by vl-convert)."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


def spec(chart) -> dict[str, Any]:
    """The Vega-Lite spec as a dict."""
    return chart.to_dict()
