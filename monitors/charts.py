"""Chart specs (Altair, i.e. Vega-Lite), shared by the dashboard and the post-incident reports,
which render the same specs as static PNG images (``to_png``, offline through vl-convert).

Every chart takes tidy frames and optional event markers (promotions, rollbacks, incidents) and
draws labelled red threshold lines where a threshold is given. An empty frame gives a chart that
says so. ``window=(start, end)`` fixes the time axis, so a single canary run sits where it happened.

Layout rules, so a chart reads at 3 a.m. in Streamlit (which forces ``autosize: fit`` on a chart
that does not set one) and in a PDF: marker labels sit inside the plot, just under its top edge
(never over the title), legends sit below the plot (never over marker labels), and the chart sets
``autosize: fit-x`` itself so the width stretches while the plot keeps its height.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

WIDTH, HEIGHT = 640, 200
KPI_HEIGHT = 120

SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4", "ok": "#2ca02c"}
THRESHOLD_COLOUR = SEVERITY_COLOURS["critical"]
MARKER_COLOUR = "#444"
# Okabe-Ito (colour-blind safe), without its vermillion: red is kept for thresholds.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
LATENCY_COLOURS = {"P50": "#009E73", "P95": "#E69F00", "P99": "#7B3294"}
NAMES = {
    "logit_kl": "KL",
    "logit_js": "JS",
    "logit_kl_ks": "KL KS test",
    "embedding_mmd": "MMD",
    "toxicity_rate": "toxicity",
    "pii_leak_rate": "PII leak",
}
_ROWS = 4  # marker labels are staggered over this many lines so neighbours do not overprint
_GAP = 0.3  # share of the axis a label needs before the next one may use its line
_LINE = 13  # px per marker label line


def _utc_naive(values) -> pd.Series:
    """Times as naive UTC, so data, markers and window share one clock in the browser and in vl-convert."""
    ts = pd.to_datetime(pd.Series(values), utc=True)
    return ts.dt.tz_localize(None)


def _datetime(value):
    """A window bound as a Vega-Lite DateTime (naive UTC, like the data)."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    t = pd.Timestamp(value)
    return alt.DateTime(
        year=t.year,
        month=t.month,
        date=t.day,
        hours=t.hour,
        minutes=t.minute,
        seconds=t.second,
        milliseconds=t.microsecond // 1000,
    )


def _autosize():
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    return alt.AutoSizeParams(type="fit-x", contains="padding")


def _empty(title: str):
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    return (
        alt.Chart(pd.DataFrame({"text": ["no data in this window"]}))
        .mark_text(size=14, color="#666")
        .encode(text="text:N")
        .properties(title=title, width=WIDTH, height=60)
    )


def _threshold_label(name: str, value: float, unit: str | None) -> str:
    if name == "SLO":
        return f"SLO {value:g}{' ' + unit if unit else ''}"
    return f"{NAMES.get(name, name)} threshold {value:.3g}{' ' + unit if unit else ''}"


def _label_rows(stamps: pd.Series, lo, hi) -> list[int]:
    """A line per marker label such that labels on one line are at least ``_GAP`` of the axis
    apart (a promotion and a rollback minutes apart on a two-week axis must not overprint);
    when every line is taken near a label, the one whose last label is farthest away."""
    span = (hi - lo).total_seconds() if hi > lo else 1.0
    last: list[float] = [float("-inf")] * _ROWS
    rows = []
    for t in stamps:
        x = (t - lo).total_seconds() / span
        free = [r for r in range(_ROWS) if x - last[r] >= _GAP]
        row = free[0] if free else min(range(_ROWS), key=lambda r: last[r])
        last[row] = x
        rows.append(row)
    return rows


def _data(
    frame: pd.DataFrame,
    thresholds: dict[str, float] | None,
    events: pd.DataFrame | None,
    window: tuple[datetime, datetime] | None,
    unit: str | None,
    per_series: bool = False,
) -> pd.DataFrame:
    """One tidy frame for all layers (``kind``: value, threshold or event), as a facet needs one data set."""
    values = frame[["ts", "series", "value"]].assign(kind="value")
    values["ts"] = _utc_naive(frame["ts"]).to_numpy()
    parts = [values]
    for name, limit in (thresholds or {}).items():
        if limit is None:
            continue
        label = _threshold_label(name, float(limit), unit)
        parts.append(pd.DataFrame({"kind": ["threshold"], "value": [float(limit)], "label": [label]}))
    if events is not None and not events.empty:
        ev = events[["ts", "label"]].copy()
        ev["ts"] = _utc_naive(ev["ts"]).to_numpy()
        ev = ev.sort_values("ts").reset_index(drop=True)
        if window is not None:
            lo, hi = _utc_naive(list(window))
        else:
            lo, hi = min(values["ts"].min(), ev["ts"].min()), max(values["ts"].max(), ev["ts"].max())
        # staggered lines; labels in the right half of the axis run leftwards so they stay inside
        ev["row"] = _label_rows(ev["ts"], lo, hi)
        ev["side"] = ["right" if hi > lo and t > lo + (hi - lo) / 2 else "left" for t in ev["ts"]]
        ev["kind"] = "event"
        if per_series:
            ev = pd.concat([ev.assign(series=s) for s in values["series"].unique()], ignore_index=True)
        parts.append(ev)
    return pd.concat(parts, ignore_index=True)


def _layers(
    data: pd.DataFrame,
    *,
    y_title: str,
    window: tuple[datetime, datetime] | None,
    colours: dict[str, str] | None,
    legend: bool,
    x_format: str | None = "%b %d %H:%M",
):
    """Lines, threshold rules with labels, and event markers, all over the one frame ``data``."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    clip = window is not None
    x_scale = alt.Scale(domain=[_datetime(window[0]), _datetime(window[1])]) if window else alt.Undefined
    axis = alt.Axis(format=x_format or alt.Undefined, labelAngle=0, labelOverlap="greedy", labelSeparation=10)
    x = alt.X("ts:T", title=None, scale=x_scale, axis=axis)
    if colours:
        colour_scale = alt.Scale(domain=list(colours), range=list(colours.values()))
    else:
        colour_scale = alt.Scale(range=PALETTE)
    colour = alt.Color(
        "series:N",
        title=None,
        scale=colour_scale,
        sort=list(colours) if colours else alt.Undefined,
        legend=alt.Legend(orient="bottom", direction="horizontal", symbolStrokeWidth=3) if legend else None,
    )
    base = alt.Chart()
    lines = (
        base.transform_filter(alt.datum.kind == "value")
        .mark_line(point=alt.OverlayMarkDef(filled=True, size=70), strokeWidth=2, clip=clip)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=y_title),
            color=colour,
            tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"), "series:N", alt.Tooltip("value:Q", format=".4g")],
        )
    )
    layers = [lines]
    if (data["kind"] == "threshold").any():
        th = base.transform_filter(alt.datum.kind == "threshold")
        layers.append(
            th.mark_rule(color=THRESHOLD_COLOUR, strokeDash=[6, 4], strokeWidth=1.5).encode(
                y="value:Q", tooltip=[alt.Tooltip("label:N", title="threshold")]
            )
        )
        layers.append(
            th.mark_text(
                x="width", align="right", baseline="top", dx=-2, dy=3, fontSize=11, color=THRESHOLD_COLOUR
            ).encode(y="value:Q", text="label:N")
        )
    events = data[data["kind"] == "event"]
    if not events.empty:
        ev = base.transform_filter(alt.datum.kind == "event")
        layers.append(
            ev.mark_rule(strokeDash=[4, 3], color=MARKER_COLOUR, clip=clip).encode(
                x="ts:T", tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"), "label:N"]
            )
        )
        for row in sorted(events["row"].unique()):
            for side in sorted(events.loc[events["row"] == row, "side"].unique()):
                layers.append(
                    ev.transform_filter((alt.datum.row == int(row)) & (alt.datum.side == side))
                    .mark_text(
                        align=side,
                        baseline="top",
                        dx=4 if side == "left" else -4,
                        dy=4 + _LINE * int(row),
                        fontSize=10,
                        color=MARKER_COLOUR,
                        clip=clip,
                    )
                    .encode(x="ts:T", y=alt.value(0), text="label:N")
                )
    return layers


def series_chart(
    frame: pd.DataFrame,
    *,
    title: str,
    y_title: str,
    thresholds: dict[str, float] | None = None,
    events: pd.DataFrame | None = None,
    window: tuple[datetime, datetime] | None = None,
    colours: dict[str, str] | None = None,
    unit: str | None = None,
):
    """Lines of ``value`` over ``ts`` per ``series``, with labelled dashed red threshold rules.

    ``window`` fixes the time axis; ``colours`` fixes series colours (and legend order); ``unit``
    ends the threshold labels."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    if frame is None or frame.empty:
        return _empty(title)
    data = _data(frame, thresholds, events, window, unit)
    layers = _layers(data, y_title=y_title, window=window, colours=colours, legend=True)
    return alt.layer(*layers, data=data).properties(title=title, width=WIDTH, height=HEIGHT, autosize=_autosize())


def drift_chart(
    frame: pd.DataFrame,
    thresholds: dict[str, float] | None = None,
    events: pd.DataFrame | None = None,
    *,
    window: tuple[datetime, datetime] | None = None,
):
    """Logit KL (and other drift monitors) per canary run."""
    return series_chart(
        frame,
        title="Logit drift per canary run (mean KL, nats)",
        y_title="mean KL (nats)",
        thresholds=thresholds,
        events=events,
        window=window,
    )


def risk_chart(
    frame: pd.DataFrame,
    thresholds: dict[str, float] | None = None,
    events: pd.DataFrame | None = None,
    *,
    window: tuple[datetime, datetime] | None = None,
):
    """Toxicity and PII rates per canary run."""
    return series_chart(
        frame,
        title="Content risk per canary run (share of outputs)",
        y_title="share of outputs",
        thresholds=thresholds,
        events=events,
        window=window,
    )


def latency_chart(
    frame: pd.DataFrame,
    objective_ms: float | None = None,
    events: pd.DataFrame | None = None,
    *,
    window: tuple[datetime, datetime] | None = None,
):
    """P50, P95 and P99 latency per hour."""
    return series_chart(
        frame,
        title="Latency per hour: P50, P95, P99 (ms)",
        y_title="latency (ms)",
        thresholds={"SLO": objective_ms} if objective_ms else None,
        events=events,
        window=window,
        colours=LATENCY_COLOURS,
        unit="ms",
    )


def kpi_chart(
    frame: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    window: tuple[datetime, datetime] | None = None,
):
    """Daily mean of each KPI, one panel (and y scale) per KPI: KPIs have different units."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import altair as alt

    title = "KPIs per day (daily mean, each KPI on its own scale)"
    if frame is None or frame.empty:
        return _empty(title)
    data = _data(frame, None, events, window, None, per_series=True)
    layers = _layers(data, y_title="daily mean", window=window, colours=None, legend=False, x_format=None)
    return (
        alt.layer(*layers)
        .properties(width=WIDTH, height=KPI_HEIGHT)
        .facet(
            data=data,
            row=alt.Row(
                "series:N",
                title=None,
                header=alt.Header(labelOrient="top", labelAnchor="start", labelFontWeight="bold", labelFontSize=12),
            ),
        )
        .resolve_scale(y="independent")
        .properties(title=title)
    )


def to_png(chart, scale: float = 1.5) -> bytes:
    """The chart as a PNG (rendered offline by vl-convert)."""
    # Deferred: altair and vl-convert are slow to import; only charts need them.
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


def spec(chart) -> dict[str, Any]:
    """The Vega-Lite spec as a dict."""
    return chart.to_dict()
