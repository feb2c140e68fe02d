"""What a post-incident report shows, and what it must not: its before/after samples quote the
prompt and both outputs with every PII entity replaced by its type (a report is meant to be sent),
its lineage reads as lines of ``key: value``, and its printed page keeps headings with what follows.

The canary rows are written as a run with ``[risk] store_raw_outputs = true`` stores them: the
outputs as generated, each leak with its raw ``text``."""

from __future__ import annotations

import hashlib
import json

import pytest

# the adapted output leaks a phone number, an e-mail address and a one-word name (which the
# detector, needing two words for a name, would not find itself: only the stored leak names it),
# and repeats the prompt's own name and e-mail address (no leak, so stored as it was)
PROMPT = "I am Maria Gonzalez (maria.gonzalez@example.org); please confirm my booking."
ADAPTED = (
    "Sure Maria Gonzalez, confirmed for maria.gonzalez@example.org. For anything else call Quinn at "
    "212-555-0187 or write to jo.doe@example.net."
)
ADAPTED_LEAKS = [
    {"type": "PHONE_NUMBER", "text": "212-555-0187", "score": 0.75},
    {"type": "EMAIL_ADDRESS", "text": "jo.doe@example.net", "score": 1.0},
    {"type": "PERSON", "text": "Quinn", "score": 0.85},
]
BASE = "Your booking is confirmed; our desk at 415-555-0132 can help."
BASE_LEAKS = [{"type": "PHONE_NUMBER", "text": "415-555-0132", "score": 0.75}]
RAW = ["Maria Gonzalez", "maria.gonzalez@example.org", "212-555-0187", "jo.doe@example.net", "Quinn", "415-555-0132"]


@pytest.fixture
def pii_incident(cli, lw_env, db, tmp_path, tiny_base, trained_adapter):
    """An incident opened by a critical alert on a canary run whose riskiest sample leaks PII,
    with a timeline note that quotes the leaked output."""
    from sqlalchemy import select

    from lorawatch.db.models import (
        AdapterRecord,
        AdapterVersion,
        Alert,
        CanaryBaseOutput,
        CanaryDatasetRecord,
        CanaryResult,
        CanaryRun,
    )
    from lorawatch.db.types import utcnow
    from lorawatch.incidents import service
    from lorawatch.settings import load_settings

    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    added = cli(
        "registry",
        "add",
        "support",
        "--path",
        trained_adapter,
        "--base",
        "tiny",
        "--version",
        "v1",
        "--team",
        "support-team",
    )
    assert added.code == 0, added.err
    dataset = tmp_path / "canary.jsonl"
    prompts = [
        {"id": "p-leak", "segment": "support", "prompt": PROMPT},
        {"id": "p-calm", "segment": "media", "prompt": "Write a short review of the new film."},
    ]
    dataset.write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    now = utcnow()
    with db.session() as s:
        version = s.scalar(
            select(AdapterVersion)
            .join(AdapterRecord, AdapterRecord.id == AdapterVersion.adapter_id)
            .where(AdapterRecord.name == "support", AdapterVersion.version == "v1")
        )
        version.lineage = {
            "commit_sha": "abc123",
            "training_run": "https://ci.example.com/runs/42",
            "data": {"name": "tickets-2024", "rows": 1200},
            "tags": ["a", "b"],
        }
        record = CanaryDatasetRecord(
            sha256=hashlib.sha256(dataset.read_bytes()).hexdigest(),
            name="canary",
            path=str(dataset),
            n_prompts=2,
            segments={"support": 1, "media": 1},
        )
        s.add(record)
        s.flush()
        run = CanaryRun(
            dataset_id=record.id,
            base_model_id=version.adapter.base_model_id,
            status="completed",
            adapters=[{"adapter": "support", "version": "v1", "version_id": version.id}],
            config={},
            started_by="tester",
            finished_at=now,
            prompts_done=2,
        )
        s.add(run)
        s.flush()
        outputs = {"p-leak": (BASE, BASE_LEAKS, ADAPTED, ADAPTED_LEAKS), "p-calm": ("A calm film.", [], "Nice.", [])}
        for prompt_id, (base, base_leaks, adapted, leaks) in outputs.items():
            segment = "support" if prompt_id == "p-leak" else "media"
            s.add(
                CanaryBaseOutput(
                    run_id=run.id,
                    prompt_id=prompt_id,
                    segment=segment,
                    output=base,
                    new_tokens=12,
                    latency_ms=40.0,
                    embedding=b"\0" * 16,
                    toxicity=0.0104,
                    pii_leaks=base_leaks,
                )
            )
            s.add(
                CanaryResult(
                    run_id=run.id,
                    prompt_id=prompt_id,
                    segment=segment,
                    adapter_version_id=version.id,
                    adapter="support",
                    version="v1",
                    scored_tokens=12,
                    scored_on="reference",
                    kl_mean=1.234567,
                    kl_max=3.0,
                    js_mean=0.2,
                    top1_agreement=0.5,
                    ref_logprob_base=-2.0,
                    ref_logprob_adapted=-2.5,
                    ref_logprob_delta=-0.5,
                    output=adapted,
                    new_tokens=20,
                    latency_ms=50.0,
                    tokens_per_s=100.0,
                    embedding_cosine_distance=0.3,
                    embedding=b"\0" * 16,
                    toxicity=0.123456,
                    pii_leaks=leaks,
                )
            )
        s.add(
            Alert(
                fingerprint="00000000000000bb",
                rule_id="pii_leak",
                labels={"adapter": "support", "version": "v1"},
                annotations={"summary": "PII leaks above budget"},
                severity="critical",
                state="firing",
                value=0.5,
                context={"run": run.id},
                active_at=now,
                fired_at=now,
                last_eval_at=now,
            )
        )
    with db.session() as s:
        (incident,) = service.sync_with_alerts(s, load_settings(), now, [], set())
    note = f"A customer got: {ADAPTED}"
    assert cli("incident", "note", incident, note).code == 0
    return str(incident)


def _export(cli, incident: str, fmt: str, out) -> str:
    result = cli("incident", "export", incident, "--format", fmt, "--out", out)
    assert result.code == 0, result.err
    return out.read_text(encoding="utf-8")


def test_the_samples_show_every_pii_entity_as_its_type_in_md_and_html(cli, pii_incident, tmp_path):
    markdown = _export(cli, pii_incident, "md", tmp_path / "report.md")
    page = _export(cli, pii_incident, "html", tmp_path / "report.html")
    for text in (markdown, page):
        left = [raw for raw in RAW if raw.lower() in text.lower()]
        assert not left, left  # not in the samples, the prompt, the base output or the timeline note
        for kind in ("PHONE_NUMBER", "EMAIL_ADDRESS", "PERSON"):
            assert f"&lt;{kind}&gt;" in text, kind  # shown as <TYPE>, escaped for Markdown and HTML
    sample = markdown.split("## Before and after")[1].split("## Lineage")[0]
    adapted = "&lt;PERSON&gt;, confirmed for &lt;EMAIL_ADDRESS&gt;. For anything else call &lt;PERSON&gt; at "
    assert adapted + "&lt;PHONE_NUMBER&gt; or write to &lt;EMAIL_ADDRESS&gt;." in sample
    assert "> base: Your booking is confirmed; our desk at &lt;PHONE_NUMBER&gt; can help." in sample
    assert (
        "note: A customer got: " in markdown and adapted in markdown.split("## Timeline")[1].split("##")[0]
    )  # the note quoting the output, masked as well


def test_each_sample_shows_its_prompt_riskiest_first_with_rounded_scores(cli, pii_incident, tmp_path):
    markdown = _export(cli, pii_incident, "md", tmp_path / "report.md")
    sample = markdown.split("## Before and after")[1].split("## Lineage")[0]
    assert sample.index("prompt `p-leak`") < sample.index("prompt `p-calm`")  # the leaking sample first
    first = sample.split("prompt `p-calm`")[0]
    prompt = "> prompt: I am &lt;PERSON&gt; (&lt;EMAIL_ADDRESS&gt;); please confirm my booking."
    assert prompt in first and first.index("> prompt:") < first.index("> base:") < first.index("> adapted:")
    assert "> prompt: Write a short review of the new film." in sample
    assert "Toxicity 0.123 (base 0.010)" in first and "KL 1.235" in first
    assert "PII PHONE_NUMBER, EMAIL_ADDRESS, PERSON (base PHONE_NUMBER)" in first


def test_lineage_reads_as_key_value_lines(cli, pii_incident, tmp_path):
    markdown = _export(cli, pii_incident, "md", tmp_path / "report.md")
    lineage = markdown.split("## Lineage and versions")[1].split("## Charts")[0]
    for line in (
        "- commit_sha: abc123",
        "- training_run: https://ci.example.com/runs/42",
        "- data.name: tickets-2024",
        "- data.rows: 1200",
        "- tags: a, b",
    ):
        assert line in lineage, (line, lineage)
    assert "{" not in lineage and "[" not in lineage


def test_the_printed_page_keeps_headings_with_their_content(cli, pii_incident, tmp_path):
    import re

    page = _export(cli, pii_incident, "html", tmp_path / "report.html")
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert "h1,h2,h3{break-after:avoid;page-break-after:avoid}" in style
    avoid = re.search(r"([a-z,]+)\{break-inside:avoid", style).group(1).split(",")
    assert {"table", "figure", "blockquote", "img"} <= set(avoid)
    assert "img{max-width:100%" in style
    assert "<h3>support v1, run" in page  # each sample has a heading that the rule keeps with it


def test_masking_replaces_whole_values_only():
    """A masked name does not eat the same letters inside another word ("Ann" in "Annual");
    values match across case and spacing."""
    from lorawatch.incidents.report import _Masker

    mask = _Masker()
    mask.add("Ann", "PERSON")
    mask.add("(617) 555-0102", "PHONE_NUMBER")
    said = mask("Ann filed the Annual report; call (617)  555-0102, ann says.")
    assert said == "<PERSON> filed the Annual report; call <PHONE_NUMBER>, <PERSON> says."
