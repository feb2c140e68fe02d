"""Post-incident reports: Markdown (with its chart images beside it), self-contained HTML
(images inlined) and PDF (the HTML printed by headless Chromium).

Sections, in order: Summary, Impact, Detection, Timeline (UTC, with links to the data),
Trigger and root cause, Resolution, What went well, What went badly, Where we got lucky,
Action items, Before and after (output samples of the version involved against the base),
Lineage and versions, Charts (drift, risk, latency and KPIs around the incident, with
promotion and rollback markers, rendered from the dashboard's chart specs).
"""

from __future__ import annotations

import base64
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
from lorawatch.monitors.canary_read import results_with_base
from lorawatch.monitors.risk import leak_types
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
        for alert in data["alerts"]:
            key = (alert["run"], alert["labels"].get("adapter"), alert["labels"].get("version"))
            if key[0] and key not in seen:
                seen.add(key)
                data["samples"] += _samples(session, *key)
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


def _samples(session, run_id: int, adapter: str, version: str, limit: int = 5) -> list[dict[str, Any]]:
    """The run's riskiest outputs of the version, next to the base model's output for the same prompt."""
    rows = results_with_base(session, run_id, adapter=adapter, version=version)
    ranked = sorted(rows, key=lambda r: (len(r[0].pii_leaks or []), r[0].toxicity or 0, r[0].kl_mean), reverse=True)
    return [
        {
            "run": run_id,
            "adapter": adapter,
            "version": version,
            "prompt_id": r.prompt_id,
            "segment": r.segment,
            "adapted": r.output,
            "base": b.output if b else None,
            "toxicity": r.toxicity,
            "pii": leak_types(r.pii_leaks),
            "kl": r.kl_mean,
        }
        for r, b in ranked[:limit]
    ]


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
        samples += [
            f"**{s['adapter']} {s['version']}, run {s['run']}, prompt `{s['prompt_id']}` ({s['segment']})**: "
            f"toxicity {_num(s['toxicity'])}, PII {', '.join(s['pii']) or 'none'}, KL {_num(s['kl'])}",
            "",
            f"> base: {_cell(s['base'])}",
            ">",
            f"> adapted: {_cell(s['adapted'])}",
            "",
        ]
    section("Before and after", samples or ["No canary samples are linked to this incident's alerts."])
    versions = []
    for v in i["versions"]:
        if v.get("missing"):
            versions.append(f"- `{v['adapter']}` {v['version']}: not in the registry")
            continue
        lineage = (
            ", ".join(f"{k}: {val}" for k, val in v["lineage"].items() if val not in (None, ""))
            or "no lineage recorded"
        )
        owners = v["ownership"].get("team") or "-"
        versions.append(
            f"- `{v['adapter']}` **{v['version']}** on {v['base']} (rank {v['rank']}, sha256 {v['sha256'][:12]}), "
            f"registered {_fmt(v['created_at'])} by {v['created_by']}; owner team {owners}; {lineage}"
        )
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
    return "-" if value is None else f"{value:.4g}"


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
        "margin:.3em 0;padding:0 .8em;color:#444}img{max-width:100%;page-break-inside:avoid}h2{border-bottom:1px solid #ddd;"
        "padding-bottom:.2em;margin-top:1.6em}code{background:#f5f5f5;padding:0 3px}"
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
