"""Post-incident reports: Markdown (with its chart images beside it), self-contained HTML
(images inlined) and PDF (the HTML printed by headless Chromium).

Sections, in order: Summary, Impact, Detection, Timeline (UTC, with links to the data),
Trigger and root cause, Resolution, What went well, What went badly, Where we got lucky,
Action items, Before and after (output samples of the version involved against the base),
Lineage and versions, Charts (drift, risk, latency and KPIs around the incident, with
promotion and rollback markers, rendered from the dashboard's chart specs).

A report is meant to be sent (the runbooks say not to paste PII into tickets): every PII entity is
replaced by its type (``<PHONE_NUMBER>``) wherever the report would show it (see ``_mask_pii``).
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from sqlalchemy import select

from lorawatch.db import Database
from lorawatch.db.models import AdapterRecord, AdapterVersion
from lorawatch.db.types import utcnow
from lorawatch.errors import DependencyError, InputError
from lorawatch.incidents import service
from lorawatch.monitors import charts
from lorawatch.monitors import series as queries
from lorawatch.monitors.canary_read import prompt_texts, results_with_base
from lorawatch.monitors.pii import PiiDetector
from lorawatch.monitors.risk import leak_types
from lorawatch.monitors.risk_scorers import detector_arguments
from lorawatch.settings import Settings

SECTIONS = [
    "Summary",
    "Impact",
    "Detection",
    "Timeline",
    "Trigger and root cause",
    "Resolution",
    "What went well",
    "What went badly",
    "Where we got lucky",
    "Action items",
    "Before and after",
    "Lineage and versions",
    "Charts",
]
CHARTS = [("drift", "Logit drift"), ("risk", "Content risk"), ("latency", "Latency"), ("kpis", "KPIs")]
NOT_WRITTEN = '_Not written yet: `lorawatch incident update {id} --{flag} "..."`._'


def gather(db: Database, settings: Settings, incident_id: int) -> dict[str, Any]:
    """Everything a report shows, read once."""

    with db.session() as session:
        incident = service.get(session, incident_id)
        data = service.describe(session, incident)
        start = (incident.impact_started_at or incident.opened_at) - settings.incidents.report_window
        end = max(incident.resolved_at or utcnow(), incident.opened_at) + timedelta(days=1)
        data["window"] = {"start": start, "end": end}
        pairs = {
            (a["labels"].get("adapter"), a["labels"].get("version"))
            for a in data["alerts"]
            if a["labels"].get("version")
        }
        for e in data["timeline"]:
            if e["kind"] == "rollback":
                pairs |= {(incident.adapter, e["details"]["from"]), (incident.adapter, e["details"]["to"])}
        data["versions"] = [
            _version(session, adapter, version) for adapter, version in sorted(pairs, key=str) if adapter
        ]
        data["samples"] = []
        seen: set[tuple] = set()
        prompts: dict[int, dict[str, str] | str] = {}  # per run: prompt id -> text, or why there is none
        data["unshown"] = []  # the outputs of those runs that are not shown, read by _mask_pii
        for alert in data["alerts"]:
            key = (alert["run"], alert["labels"].get("adapter"), alert["labels"].get("version"))
            if key[0] and key not in seen:
                seen.add(key)
                data["samples"] += _samples(session, *key, prompts=prompts, unshown=data["unshown"])
        adapter = incident.adapter
        data["frames"] = {}
        if adapter:
            # Deferred: pandas takes ~0.3 s to import; only this export needs it.
            import pandas as pd

            opened = pd.DataFrame([{"ts": incident.opened_at, "label": f"incident {incident.id} opened"}])
            promotions = queries.alias_events_frame(session, adapter, start, end)
            events = pd.concat([promotions, opened], ignore_index=True) if not promotions.empty else opened
            data["frames"] = {
                "drift": (
                    queries.monitor_frame(session, adapter, ["logit_kl", "logit_js"], start, end),
                    queries.thresholds(session, adapter, ["logit_kl"]),
                    events,
                ),
                "risk": (
                    queries.monitor_frame(session, adapter, ["toxicity_rate", "pii_leak_rate"], start, end),
                    queries.thresholds(session, adapter, ["toxicity_rate", "pii_leak_rate"]),
                    events,
                ),
                "latency": (
                    queries.latency_frame(session, adapter, start, end),
                    {"SLO": settings.slo.adapters.get(adapter, settings.slo.latency_ms)},
                    events,
                ),
                "kpis": (queries.kpi_frame(session, adapter, start, end), None, events),
            }
    data = _mask_pii(data, settings)  # before anything else: no PII leaves in a report
    data = _defanged(data)  # everything above is user- or adapter-written text
    data["links"] = {
        "incident": f"{settings.alerts.dashboard_url.rstrip('/')}/incidents?incident={incident_id}",
        "dashboard": settings.alerts.dashboard_url.rstrip("/"),
    }
    return data


SAFE_SCHEMES = ("http://", "https://", "mailto:")
_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)")
_MD_REFERENCE = re.compile(r"^(\s*\[[^\]]+\]):(\s*)(\S+)", re.M)


def _safe_target(url: str) -> bool:
    return url.lower().startswith(SAFE_SCHEMES) or url.startswith("#")


def defang(text: str) -> str:
    """User- or adapter-written text made inert for Markdown and HTML: ``& < >`` become
    entities (no raw HTML, no autolinks) and a link or image whose target is not http, https,
    mailto or a fragment loses its link syntax (it shows as text)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_LINK.sub(lambda m: m.group(0) if _safe_target(m.group(1)) else "]\\(" + m.group(1), text)
    return _MD_REFERENCE.sub(
        lambda m: m.group(0) if _safe_target(m.group(3)) else f"{m.group(1)}\\:{m.group(2)}{m.group(3)}", text
    )


def _defanged(value: Any) -> Any:
    if isinstance(value, str):
        return defang(value)
    if isinstance(value, dict):
        return {k: _defanged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defanged(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_defanged(v) for v in value)
    return value  # numbers, times, data frames (charts are drawn, not interpreted)


def _version(session, adapter: str, version: str) -> dict[str, Any]:
    row = session.scalar(
        select(AdapterVersion)
        .join(AdapterRecord, AdapterRecord.id == AdapterVersion.adapter_id)
        .where(AdapterRecord.name == adapter, AdapterVersion.version == version)
    )
    if row is None:
        return {"adapter": adapter, "version": version, "missing": True}
    return {
        "adapter": adapter,
        "version": version,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "sha256": row.content_sha256,
        "rank": row.rank,
        "base": row.adapter.base_model.name,
        "lineage": row.lineage or {},
        "ownership": row.ownership or {},
        "risk": row.risk or {},
        "state": row.state,
    }


def _samples(
    session,
    run_id: int,
    adapter: str,
    version: str,
    limit: int = 5,
    *,
    prompts: dict | None = None,
    unshown: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The run's riskiest outputs of the version, next to the base model's output for the same
    prompt and the prompt itself. Riskiest first: most PII leaks, then toxicity, then drift (the
    order only chooses what is shown; every sample is masked the same way, ``_mask_pii``).

    The texts are as stored (masked at storage unless ``[risk] store_raw_outputs``); ``leaks``
    keeps the stored leaks of both outputs for ``_mask_pii`` and is not shown. The rows not
    shown are added to ``unshown`` (their texts and leaks), for ``_mask_pii`` to learn from."""
    rows = results_with_base(session, run_id, adapter=adapter, version=version, embeddings=False)
    ranked = sorted(
        rows, key=lambda p: (-len(p[0].pii_leaks or []), -(p[0].toxicity or 0), -(p[0].kl_mean or 0), p[0].prompt_id)
    )
    texts = prompt_texts(session, run_id, {} if prompts is None else prompts)
    if unshown is not None:
        unshown += [
            {"texts": [r.output, *([b.output] if b else [])], "leaks": _leaks_of(r, b)} for r, b in ranked[limit:]
        ]
    return [
        {
            "run": run_id,
            "adapter": adapter,
            "version": version,
            "prompt_id": r.prompt_id,
            "segment": r.segment,
            "prompt": texts.get(r.prompt_id) if isinstance(texts, dict) else None,
            "prompt_missing": _why_no_prompt(texts, r.prompt_id),
            "adapted": r.output,
            "base": b.output if b else None,
            "toxicity": r.toxicity,
            "base_toxicity": b.toxicity if b else None,
            "pii": leak_types(r.pii_leaks),
            "base_pii": leak_types(b.pii_leaks) if b else [],
            "kl": r.kl_mean,
            "leaks": _leaks_of(r, b),
        }
        for r, b in ranked[:limit]
    ]


def _leaks_of(result, base) -> list[tuple[Any, str]]:
    """Each stored leak of the adapted and the base output, beside the output it was found in."""
    pairs = [(leak, result.output or "") for leak in result.pii_leaks or []]
    return pairs + ([(leak, base.output or "") for leak in base.pii_leaks or []] if base is not None else [])


def _why_no_prompt(texts: dict[str, str] | str, prompt_id: str) -> str | None:
    if isinstance(texts, str):
        return texts
    return None if prompt_id in texts else "not in the dataset"


# -- PII -------------------------------------------------------------------------------------
# What a report quotes can hold PII: model outputs, the prompts (canary prompts carry PII on
# purpose, to see whether it is repeated), and notes or alert summaries that quote them. The
# stored leaks do not cover it all: a leak is only an entity *not in the prompt* (an echoed
# e-mail address is no leak and stays in the stored output even when outputs are stored masked),
# the prompt has no stored findings at all, and with ``[risk] store_raw_outputs`` the outputs are
# stored as generated. So the report masks (1) every value of a stored leak of a shown sample (its
# ``text``/``value``, or its ``start``/``end`` span), and (2) everything the run's own detector
# (``[risk]``'s Presidio set-up, the one that scored the outputs) finds in those quoted texts;
# then every occurrence of each found value is replaced by ``<TYPE>`` in every text of the report.
# The run's outputs that are not shown are read too (their stored leaks, and up to UNSHOWN_READ of
# them by the detector): spaCy finds a name in one sentence and misses it in the next, and a value
# found anywhere in the run is masked everywhere in the report. Without a detector (it could not
# be built) the quoted sample texts are withheld, not shown raw.

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
UNSHOWN_READ = 400
WITHHELD = "[withheld: the PII detector could not run ({why}), so this text is not shown]"


@functools.cache
def _cached_detector(arguments: tuple[tuple[str, Any], ...]) -> PiiDetector:
    args = dict(arguments)
    return PiiDetector(**{**args, "entities": list(args["entities"])})


def pii_detector(settings: Settings) -> PiiDetector:
    """The ``[risk]`` PII detector, built once per process and settings (loading spaCy takes seconds)."""
    arguments = detector_arguments(settings.risk)
    return _cached_detector(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arguments.items())))


def _stored_values(leak: Any, text: str) -> list[str]:
    """The raw values a stored leak names: its ``text`` or ``value``, and its span of the output
    it was found in when it has ``start``/``end`` (a masked leak's text is its placeholder)."""
    if not isinstance(leak, dict):
        return []
    values = [str(leak.get(k) or "") for k in ("text", "value")]
    start, end = leak.get("start"), leak.get("end")
    if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text):
        values.append(text[start:end])
    return [v for v in values if v.strip() and not _PLACEHOLDER.fullmatch(v.strip())]


class _Masker:
    """Replaces every occurrence of known PII values (case- and spacing-insensitive) by ``<TYPE>``."""

    def __init__(self) -> None:
        self.types: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    @staticmethod
    def _key(value: str) -> str:
        return " ".join(value.split()).casefold()

    def add(self, value: str, kind: str) -> None:
        if value.strip() and not _PLACEHOLDER.fullmatch(value.strip()):
            self.types.setdefault(self._key(value), re.sub(r"[^A-Z0-9_]", "_", kind.upper()) or "PII")
            self._pattern = None

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            if not self.types:
                return value
            if self._pattern is None:
                alternatives = [
                    r"\s+".join(re.escape(word) for word in key.split())
                    for key in sorted(self.types, key=len, reverse=True)
                ]
                # whole values only: the name "Ann" must not eat the "Ann" of "Annual"
                self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)
            return self._pattern.sub(lambda m: f"<{self.types[self._key(m.group(0))]}>", value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        return value


def _mask_pii(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``data`` with every PII value replaced by its type, everywhere (see the notes above)."""
    masker = _Masker()
    unshown = data.pop("unshown", [])
    for row in [*data["samples"], *unshown]:
        for leak, text in row.pop("leaks"):
            for value in _stored_values(leak, text):
                masker.add(value, str(leak.get("type") or "PII"))
    quoted: list[str] = [t for s in data["samples"] for t in (s["prompt"], s["base"], s["adapted"]) if t]
    prose = [data["title"], *(data[f] for f in service.TEXT_FIELDS)]
    prose += [e["message"] for e in data["timeline"]] + [a["summary"] for a in data["alerts"]]
    prose += [a["description"] for a in data["action_items"]]
    why = None
    try:
        context = [t for row in unshown[:UNSHOWN_READ] for t in row["texts"] if t]
        found = pii_detector(settings).find_many(quoted + [t for t in prose if isinstance(t, str)] + context)
    except Exception as exc:  # fail closed: no detector, no quoted texts
        why, found = f"{type(exc).__name__}: {exc}"[:200], []
    for findings in found:
        for f in findings:
            masker.add(f.text, f.type)
    frames = data.pop("frames")  # charts draw numbers and event labels, never quoted text
    masked = masker(data)
    masked["frames"] = frames
    if why is not None:
        for s in masked["samples"]:
            for key in ("prompt", "base", "adapted"):
                if s[key]:
                    s[key] = WITHHELD.format(why=masker(why))
    return masked


def render_charts(data: dict[str, Any]) -> dict[str, bytes]:
    """The report's charts as PNG images (the dashboard's specs)."""

    makers = {
        "drift": charts.drift_chart,
        "risk": charts.risk_chart,
        "kpis": lambda f, t, e: charts.kpi_chart(f, e),
        "latency": lambda f, t, e: charts.latency_chart(f, (t or {}).get("SLO"), e),
    }
    images = {}
    for key, _ in CHARTS:
        frame, thresholds, events = data["frames"].get(key, (None, None, None))
        images[key] = charts.to_png(makers[key](frame, thresholds, events))
    return images


def _fmt(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def _text(value: str | None, incident_id: int, flag: str) -> str:
    return value.strip() if value and value.strip() else NOT_WRITTEN.format(id=incident_id, flag=flag)


def to_markdown(data: dict[str, Any], image_paths: dict[str, str]) -> str:
    """The report as Markdown; charts are referenced at ``image_paths``."""
    i = data
    lines = [
        f"# Incident {i['id']}: {i['title']}",
        "",
        f"Severity **{i['severity']}**, state **{i['state']}**, commander {i['commander'] or '-'}, adapter "
        f"`{i['adapter'] or '-'}`. [Open in the dashboard]({data['links']['incident']}).",
        "",
    ]

    def section(name: str, body: list[str]) -> None:
        lines.extend([f"## {name}", "", *body, ""])

    section("Summary", [_text(i["summary"], i["id"], "summary")])
    impact_rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| impact started | {_fmt(i['impact_started_at'])} |",
        f"| opened | {_fmt(i['opened_at'])} |",
        f"| acknowledged | {_fmt(i['acked_at'])} |",
        f"| mitigated | {_fmt(i['mitigated_at'])} |",
        f"| resolved | {_fmt(i['resolved_at'])} |",
        f"| time to detect | {_minutes(i['time_to_detect_min'])} |",
        f"| time to acknowledge | {_minutes(i['time_to_acknowledge_min'])} |",
        f"| time to recover | {_minutes(i['time_to_recover_min'])} |",
        f"| alerts | {len(i['alerts'])} ({', '.join(sorted({a['rule'] for a in i['alerts']})) or 'none'}) |",
    ]
    section("Impact", [_text(i["impact"], i["id"], "impact"), "", *impact_rows])
    detection = [
        f"- {a['rule']} ({a['severity']}) on `{a['labels'].get('adapter', '-')}` {a['labels'].get('version', '')}: "
        f"value {_num(a['value'])}, fired {_fmt(a['fired_at'])}, resolved {_fmt(a['resolved_at'])}. {a['summary'] or ''}"
        for a in i["alerts"]
    ] or [f"Opened by hand by {i['opened_by']}."]
    section("Detection", detection)
    timeline = ["| time (UTC) | who | what |", "| --- | --- | --- |"]
    for e in i["timeline"]:
        link = _link(e, data)
        timeline.append(f"| {_fmt(e['ts'])} | {e['actor']} | {e['kind']}: {_cell(e['message'])}{link} |")
    section("Timeline", timeline)
    section(
        "Trigger and root cause",
        [
            f"**Trigger.** {_text(i['trigger'], i['id'], 'trigger')}",
            "",
            f"**Root cause.** {_text(i['root_cause'], i['id'], 'root-cause')}",
        ],
    )
    section("Resolution", [_text(i["resolution"], i["id"], "resolution")])
    section("What went well", [_text(i["went_well"], i["id"], "went-well")])
    section("What went badly", [_text(i["went_badly"], i["id"], "went-badly")])
    section("Where we got lucky", [_text(i["got_lucky"], i["id"], "got-lucky")])
    items = ["| # | action | owner | due | status |", "| --- | --- | --- | --- | --- |"] + [
        f"| {a['id']} | {_cell(a['description'])} | {a['owner']} | {a['due_on'] or '-'} | {a['status']} |"
        for a in i["action_items"]
    ]
    section("Action items", items if i["action_items"] else ["None recorded."])
    samples = []
    for s in i["samples"]:
        prompt = _cell(s["prompt"]) if s["prompt"] is not None else f"_(not shown: {s['prompt_missing']})_"
        base = _cell(s["base"]) if s["base"] is not None else "_(no base output stored)_"
        samples += [
            f"### {s['adapter']} {s['version']}, run {s['run']}, prompt `{s['prompt_id']}` ({s['segment']})",
            "",
            f"Toxicity {_toxicity(s['toxicity'])} (base {_toxicity(s['base_toxicity'])}); "
            f"PII {', '.join(s['pii']) or 'none'} (base {', '.join(s['base_pii']) or 'none'}); KL {_num(s['kl'])}.",
            "",
            f"> prompt: {prompt}",
            ">",
            f"> base: {base}",
            ">",
            f"> adapted: {_cell(s['adapted'])}",
            "",
        ]
    section(
        "Before and after",
        (
            ["Riskiest first. Every PII entity is shown as its type (&lt;PHONE_NUMBER&gt;).", "", *samples]
            if samples
            else ["No canary samples are linked to this incident's alerts."]
        ),
    )
    versions = []
    for v in i["versions"]:
        if v.get("missing"):
            versions.append(f"- `{v['adapter']}` {v['version']}: not in the registry")
            continue
        owners = v["ownership"].get("team") or "-"
        versions.append(
            f"- `{v['adapter']}` **{v['version']}** on {v['base']} (rank {v['rank']}, sha256 {v['sha256'][:12]}), "
            f"registered {_fmt(v['created_at'])} by {v['created_by']}; owner team {owners}; "
            + ("lineage:" if _flat(v["lineage"]) else "no lineage recorded.")
        )
        versions += [f"    - {key}: {_cell(value)}" for key, value in _flat(v["lineage"])]
    section("Lineage and versions", versions or ["No adapter versions involved."])
    charts = [f"![{title}]({image_paths[key]})" for key, title in CHARTS if key in image_paths]
    section(
        "Charts",
        [
            f"From {_fmt(data['window']['start'])} to {_fmt(data['window']['end'])}; dashed lines mark "
            "promotions, rollbacks and the incident's opening, red ones thresholds.",
            "",
            *charts,
        ],
    )
    return "\n".join(lines).rstrip() + "\n"


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} min"


def _num(value) -> str:
    """Four significant digits (KL, alert values)."""
    return "-" if value is None else f"{value:.4g}"


def _toxicity(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested lineage as ``(dotted.key, text)`` pairs, empty values left out: readable lines,
    never a dict's or list's repr."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _flat(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            text = ", ".join(str(v) for v in value if v not in (None, ""))
            return [(prefix or "value", text)] if text else []
        return [pair for n, v in enumerate(value, start=1) for pair in _flat(v, f"{prefix}[{n}]")]
    if value is None or value == "":
        return []
    return [(prefix or "value", str(value))]


def _cell(text: str | None) -> str:
    return " ".join((text or "").replace("|", "\\|").split())


def _link(e: dict[str, Any], data: dict[str, Any]) -> str:
    details = e.get("details") or {}
    base = data["links"]["dashboard"]
    if "alert" in details:
        return f" ([alert {details['alert']}]({base}/alerts?alert={details['alert']}))"
    if e["kind"] == "rollback":
        return f" ([registry]({base}/registry?adapter={data['adapter']}))"
    return ""


def to_html(markdown_text: str, images: dict[str, bytes]) -> str:
    """A self-contained HTML page: the Markdown rendered, images inlined as data URIs."""
    body = _markdown_to_html(
        markdown_text,
        {f"{key}.png": "data:image/png;base64," + base64.b64encode(png).decode() for key, png in images.items()},
    )
    style = (
        "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:960px;margin:2em auto;"
        "color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:90%;vertical-align:top}th{background:#f3f3f3}blockquote{border-left:3px solid #ccc;"
        "margin:.3em 0;padding:0 .8em;color:#444}h2{border-bottom:1px solid #ddd;"
        "padding-bottom:.2em;margin-top:1.6em}h3{font-size:105%;margin:1.2em 0 .3em}code{background:#f5f5f5;padding:0 3px}"
        # printed (PDF): a heading stays with what follows it, a table, quote or chart is not cut
        "h1,h2,h3{break-after:avoid;page-break-after:avoid}"
        "table,figure,blockquote,img,tr{break-inside:avoid;page-break-inside:avoid}img{max-width:100%;height:auto}"
        "h3+p{break-after:avoid;page-break-after:avoid}"  # a sample's heading, scores and quotes stay together
        "@media print{body{margin:0 auto}}"
    )
    # the page may run nothing and fetch nothing: its images are inlined, its style is its own
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
        f'content="{policy}"><title>Post-incident report</title><style>{style}</style></head>\n<body>\n{body}\n'
        "</body></html>\n"
    )


def _markdown_to_html(text: str, image_map: dict[str, str]) -> str:
    """Markdown rendered by markdown-it (CommonMark and tables) with raw HTML off and links
    limited to http, https, mailto, fragments and the report's own inlined chart images."""
    for name, uri in image_map.items():
        text = text.replace(f"({name})", f"({uri})")
    inlined = set(image_map.values())
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    md.validateLink = lambda url: _safe_target(url) or url in inlined  # type: ignore[method-assign]
    return md.render(text)


def chromium_binary() -> str:
    """The headless Chromium that prints PDFs: $LORAWATCH_CHROMIUM, else chromium on PATH."""
    for candidate in (os.environ.get("LORAWATCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise DependencyError(
        "PDF export needs Chromium, which is not installed",
        fix="apt-get install chromium (or set LORAWATCH_CHROMIUM to a Chrome binary), or export md or html",
    )


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def html_to_pdf(html_text: str, out: Path) -> None:
    """Print an HTML page to PDF with headless Chromium."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="lorawatch-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html_text, encoding="utf-8")
        target = Path(tmp) / "report.pdf"
        cmd = [
            binary,
            "--headless",
            *(["--no-sandbox"] if _as_root() else []),  # Chromium refuses to sandbox as root
            "--disable-javascript",  # and the page's own policy forbids scripts (to_html)
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={target}",
            page.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if not target.is_file() or target.stat().st_size == 0:
            raise DependencyError(
                f"Chromium did not print the PDF (exit {proc.returncode}): {proc.stderr.strip()[-300:]}",
                fix="check the Chromium install, or export md or html",
            )
        shutil.move(str(target), out)


def export(db: Database, settings: Settings, incident_id: int, *, fmt: str, out: Path) -> dict[str, Any]:
    """Write the report as md (charts beside it in ``<name>_files/``), html or pdf; returns what was written."""
    if fmt not in ("md", "html", "pdf"):
        raise InputError(f"format {fmt!r} is not md, html or pdf", fix="pass --format md, html or pdf")
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(
            "the output's folder does not exist", where=str(out.parent), fix="create it or choose another --out"
        )
    data = gather(db, settings, incident_id)
    images = render_charts(data)
    written = [str(out)]
    if fmt == "md":
        folder = out.with_name(out.stem + "_files")
        folder.mkdir(exist_ok=True)
        for key, png in images.items():
            (folder / f"{key}.png").write_bytes(png)
            written.append(str(folder / f"{key}.png"))
        text = to_markdown(data, {key: f"{folder.name}/{key}.png" for key in images})
        _atomic_write(out, text.encode("utf-8"))
    else:
        page = to_html(to_markdown(data, {key: f"{key}.png" for key in images}), images)
        if fmt == "html":
            _atomic_write(out, page.encode("utf-8"))
        else:
            html_to_pdf(page, out)
    return {"incident": incident_id, "format": fmt, "files": written, "sections": SECTIONS, "charts": list(images)}


def _atomic_write(path: Path, data: bytes) -> None:
    staging = path.with_name(path.name + ".partial")
    staging.write_bytes(data)
    os.replace(staging, path)
