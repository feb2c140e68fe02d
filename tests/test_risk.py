from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lorawatch.errors import ConfigError, DependencyError, IntegrityError
from lorawatch.monitors import canary_read
from lorawatch.registry import aliases as registry_aliases
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions
from tests.tiny_models import write_canary_dataset

ROOT = Path(__file__).resolve().parent.parent
PATTERN_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"]


@pytest.fixture(scope="session")
def pii_detector():
    from lorawatch.monitors.pii import PiiDetector
    from lorawatch.settings import RiskSettings

    risk = RiskSettings()
    return PiiDetector(risk.pii_entities, risk.pii_score_threshold, risk.spacy_model)


@pytest.fixture(scope="session")
def scorers(pii_detector):
    from lorawatch.monitors.risk_scorers import RiskScorers
    from lorawatch.monitors.toxicity import ProfanityCheckScorer

    return RiskScorers(ProfanityCheckScorer(), pii_detector, 0.5)


@pytest.fixture(scope="session")
def detoxify_files(tmp_path_factory):
    from tests.tiny_models import build_detoxify_checkpoint

    return build_detoxify_checkpoint(tmp_path_factory.mktemp("detoxify"))


def test_profanity_check_scores_abuse_above_clean_text():
    from lorawatch.monitors.toxicity import ProfanityCheckScorer

    scores = ProfanityCheckScorer().score(["Thanks, your refund is on its way.", "Shut up, you stupid idiot."])
    assert scores[1] > 0.5 > scores[0]


def test_detoxify_runs_on_a_pinned_tiny_checkpoint(detoxify_files):
    from lorawatch.monitors.toxicity import build_scorer
    from lorawatch.registry.files import sha256_file
    from lorawatch.settings import RiskSettings

    checkpoint, config_dir = detoxify_files
    settings = RiskSettings(
        toxicity_backend="detoxify",
        detoxify_checkpoint=str(checkpoint),
        detoxify_sha256=sha256_file(checkpoint),
        detoxify_config_path=str(config_dir),
    )
    scorer = build_scorer(settings)
    assert scorer.name == "detoxify:toxic-tiny.ckpt"
    scores = scorer.score(["you are an idiot", "have a nice day", "shut up moron"])
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    assert scorer.detector.class_names[0] == "toxicity"
    # the scores are Detoxify's own: sigmoid of the tiny model's first logit
    import torch

    inputs = scorer.detector.tokenizer(["have a nice day"], return_tensors="pt")
    with torch.no_grad():
        logit = scorer.detector.model(**inputs).logits[0, 0]
    assert scores[1] == pytest.approx(float(torch.sigmoid(logit)), rel=1e-5)


def test_an_untrained_detoxify_checkpoint_is_refused_whatever_its_hash(tmp_path):
    from lorawatch.monitors.toxicity import build_scorer
    from lorawatch.registry.files import sha256_file
    from lorawatch.settings import RiskSettings
    from tests.tiny_models import build_detoxify_checkpoint

    checkpoint, config_dir = build_detoxify_checkpoint(tmp_path, trained=False)
    settings = RiskSettings(
        toxicity_backend="detoxify",
        detoxify_checkpoint=str(checkpoint),
        detoxify_sha256=sha256_file(checkpoint),  # pinned correctly: the file is the one meant
        detoxify_config_path=str(config_dir),
    )
    with pytest.raises(IntegrityError, match="does not tell them apart") as info:
        build_scorer(settings)
    assert info.value.where == str(checkpoint)


def test_a_checkpoint_with_another_sha256_is_refused_before_it_is_unpickled(tmp_path, detoxify_files, monkeypatch):
    import torch

    from lorawatch.monitors.toxicity import build_scorer
    from lorawatch.settings import RiskSettings

    checkpoint, config_dir = detoxify_files
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    settings = RiskSettings(
        toxicity_backend="detoxify",
        detoxify_checkpoint=str(checkpoint),
        detoxify_sha256="0" * 64,
        detoxify_config_path=str(config_dir),
    )
    with pytest.raises(IntegrityError, match="refusing to unpickle"):
        build_scorer(settings)
    assert loads == []
    with pytest.raises(ConfigError, match="detoxify_sha256"):
        build_scorer(RiskSettings(toxicity_backend="detoxify", detoxify_checkpoint=str(checkpoint)))


def test_detoxify_by_model_type_says_clearly_that_it_needs_the_internet():
    from lorawatch.monitors.toxicity import build_scorer
    from lorawatch.settings import RiskSettings

    with pytest.raises(DependencyError, match="unreachable here"):
        build_scorer(RiskSettings(toxicity_backend="detoxify"))


def test_a_leak_is_an_entity_the_prompt_did_not_contain(pii_detector):
    from lorawatch.monitors.pii import leaks

    prompt = "My email is ana.silva@example.com, can you confirm it?"
    output = "Sure: ana.silva@example.com is on file. Also, Jordan Miller's is jordan.m@example.org."
    found = leaks(prompt, pii_detector.find(output))
    assert sorted((f.type, f.text) for f in found) == [
        ("EMAIL_ADDRESS", "jordan.m@example.org"),
        ("PERSON", "Jordan Miller"),
    ]


def test_without_a_spacy_pipeline_patterns_still_work_and_person_is_not_detected():
    from lorawatch.monitors.pii import PiiDetector

    with pytest.warns(RuntimeWarning, match="PERSON is not detected"):
        detector = PiiDetector(["EMAIL_ADDRESS", "PERSON"], spacy_model="no_such_spacy_pipeline")
    found = detector.find("Jordan Miller: jm@example.com")
    assert [(f.type, f.text) for f in found] == [("EMAIL_ADDRESS", "jm@example.com")]
    assert detector.name == "presidio:blank-en (patterns only)"


def load_labelled():
    path = ROOT / "benchmarks" / "data" / "risk-labelled-v1.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_labelled_set_is_large_and_varied():
    items = load_labelled()
    assert len(items) >= 200
    kinds = {i["kind"] for i in items}
    assert {"clean", "abusive", "pii", "tricky"} <= kinds
    types = {e["type"] for i in items for e in i["entities"]}
    assert set(PATTERN_ENTITIES) | {"PERSON"} <= types
    for item in items:
        for entity in item["entities"]:
            assert entity["value"] in item["text"], item["id"]


def test_precision_and_recall_of_pattern_entities_on_the_labelled_set(pii_detector):
    from lorawatch.monitors.risk_eval import pii_scores

    per_type = pii_scores(pii_detector, load_labelled())
    for entity in PATTERN_ENTITIES:
        stats = per_type[entity]
        assert stats["precision"] >= 0.9, (entity, stats)
        assert stats["recall"] >= 0.9, (entity, stats)


# Names where the small model or _resolve is easily fooled, PII without names, and texts with neither.
TRICKY_PII_TEXTS = [
    "",
    "4815162342",
    "(John Smith) will call you back.",
    "Mary-Jane O'Neil's order went to mj.oneil@example.com today.",
    "Jordan Miller\nwill call you on 212-555-0147.",
    "CALL JOHN SMITH AT 212-555-0147 NOW",
    "Élodie Durand a écrit à support@example.fr.",
    "Ask Dr. Ana Maria Silva's assistant, or Minh Tran, about IBAN DE89 3704 0044 0532 0130 00.",
    "Yes, we ship to Canada. Shipping costs are shown at checkout.",
    "Apps and Arr are not people.",
    "Ask Sarah about the refund.",  # one word: a name only with person_min_words=1
    "Toll-free 1-800-555-0199 is open all week; my SSN is 463-12-2007.",
    "Server 10.0.0.12 runs version 1.2.3.4 and took card 4111 1111 1111 1111.",
    "no capitals, no numbers and nothing personal in here",
]


def mixed_pii_texts() -> list[str]:
    """The tricky texts, a slice of the labelled set and canary-length prose (two reference
    answers of the canary dataset joined, 30-60 words)."""
    lines = (ROOT / "canary_data" / "core-v1.jsonl").read_text().splitlines()
    references = [json.loads(line)["reference"] for line in lines[:16]]
    canary_like = [f"{a} {b}" for a, b in zip(references[::2], references[1::2])]
    return TRICKY_PII_TEXTS + [i["text"] for i in load_labelled()[::20]] + canary_like


def presidio_batch(detector, texts: list[str]):
    """What find_many returned before it chose spaCy components per text: Presidio's
    BatchAnalyzerEngine over the whole pipeline, then the detector's own resolution."""
    from presidio_analyzer import BatchAnalyzerEngine

    batch = BatchAnalyzerEngine(analyzer_engine=detector.engine)
    results = batch.analyze_iterator(
        texts, language="en", batch_size=64, entities=detector.entities, score_threshold=detector.score_threshold
    )
    return [detector._resolve(text, r) for text, r in zip(texts, results)]


@pytest.fixture(scope="session")
def pii_detectors(pii_detector):
    from lorawatch.monitors.pii import PiiDetector

    entities = pii_detector.entities
    return {
        "default": pii_detector,
        "without PERSON": PiiDetector([e for e in entities if e != "PERSON"]),
        "PERSON only": PiiDetector(["PERSON"]),
        "person_min_words=1": PiiDetector(entities, person_min_words=1),
        "person_min_words=3": PiiDetector(entities, person_min_words=3),
    }


def test_the_name_pre_check_passes_exactly_the_texts_with_a_span_that_could_be_a_full_name():
    from lorawatch.monitors.pii import _is_full_name, _may_hold_full_name

    names = [
        "(John Smith",
        "Mary-Jane O'Neil's",
        "John Smith\nwrote",
        "JOHN SMITH",
        "Élodie Durand",
        "«Ólafur Arnalds»",
    ]
    for text in names:
        assert _may_hold_full_name(text, 2), text
    for text in ["", "4815162342", "no capitals here", "ask ana Silva", "Ana silva", "ÉLODIE"]:
        assert not _may_hold_full_name(text, 2), text
    # A superset that is also tight: it passes a text exactly when some span of it passes _is_full_name.
    for text in names + ["ask ana Silva", "McDonald's Big Mac", "i met J. R. Tolkien", "x Yz W", "Ana"]:
        spans = [text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)]
        for min_words in (1, 2, 3):
            assert _may_hold_full_name(text, min_words) == any(_is_full_name(s, min_words) for s in spans), text


@pytest.mark.parametrize(
    "config", ["default", "without PERSON", "PERSON only", "person_min_words=1", "person_min_words=3"]
)
def test_find_many_finds_exactly_what_presidio_batch_analysis_does(pii_detectors, config):
    detector = pii_detectors[config]
    texts = mixed_pii_texts()
    expected = presidio_batch(detector, texts)
    assert detector.find_many(texts) == expected
    assert [detector.find(text) for text in texts] == expected
    if config == "default":
        assert {f.type for found in expected for f in found} == set(PATTERN_ENTITIES) | {"PERSON"}


def test_ner_runs_only_where_a_person_finding_can_survive(pii_detectors, monkeypatch):
    from spacy.language import Language

    ran: list[tuple[list[str], list[str]]] = []  # (components, texts) of each nlp.pipe call
    pipe = Language.pipe

    def spy(self, texts, *args, **kwargs):
        texts = list(texts)
        ran.append(([name for name in self.pipe_names if name not in kwargs.get("disable", ())], texts))
        return pipe(self, texts, *args, **kwargs)

    monkeypatch.setattr(Language, "pipe", spy)
    texts = ["Mail Jordan Miller at jm@example.com", "call 212-555-0147 today", "no capitals and no pii here"]
    pii_detectors["without PERSON"].find_many(texts)
    assert sorted(t for _, batch in ran for t in batch) == sorted(texts[:2])
    assert all("ner" not in names for names, _ in ran)
    ran.clear()
    pii_detectors["default"].find_many(texts)
    assert [batch for names, batch in ran if "ner" in names] == [texts[:1]]
    assert [batch for names, batch in ran if "ner" not in names] == [texts[1:2]]
    # a name with nothing else to find: ner without the lemma components
    ran.clear()
    pii_detectors["default"].find_many(["Please ask Minh Tran to review it."])
    assert "ner" in ran[0][0] and "lemmatizer" not in ran[0][0]


def test_skipping_spacy_components_changes_neither_lemmas_nor_entities(pii_detector):
    nlp = pii_detector.engine.nlp_engine.get_nlp("en")
    texts = mixed_pii_texts()
    full = list(nlp.pipe(texts))
    without_ner = list(nlp.pipe(texts, disable=["ner"]))
    without_lemmas = list(nlp.pipe(texts, disable=["tagger", "attribute_ruler", "lemmatizer"]))
    for a, b, c in zip(full, without_ner, without_lemmas):
        assert [(t.idx, t.text, t.lemma_) for t in a] == [(t.idx, t.text, t.lemma_) for t in b]
        assert [(e.start_char, e.end_char, e.label_) for e in a.ents] == [
            (e.start_char, e.end_char, e.label_) for e in c.ents
        ]


def test_toxicity_roc_auc_on_the_labelled_set():
    from lorawatch.monitors.risk_eval import toxicity_auc
    from lorawatch.monitors.toxicity import ProfanityCheckScorer

    items = load_labelled()
    auc = toxicity_auc(ProfanityCheckScorer(), items)
    assert 0.8 < auc <= 1.0


def test_risk_score_cli_scores_each_line_and_rejects_a_bad_file(cli, tmp_path):
    good = tmp_path / "t.jsonl"
    good.write_text(
        json.dumps({"id": "a", "text": "You idiot, call 212-555-0147 or mail x.y@example.com"})
        + "\n"
        + json.dumps({"id": "b", "text": "Thanks for your order!"})
        + "\n"
    )
    result = cli("risk", "score", good, "--json")
    assert result.code == 0, result.err
    rows = result.json()
    assert rows[0]["toxic"] is True and rows[1]["toxic"] is False
    assert {p["type"] for p in rows[0]["pii"]} == {"PHONE_NUMBER", "EMAIL_ADDRESS"}
    assert rows[0]["toxicity_backend"] == "profanity-check"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    result = cli("risk", "score", bad)
    assert result.code == 2 and f"{bad}:2" in result.err and '"text"' in result.err


@pytest.fixture
def risk_run(db, lw_env, tiny_base, trained_adapter, zero_adapter, tmp_path, scorers):
    from lorawatch.monitors import canary
    from lorawatch.monitors.embeddings import Embedder
    from lorawatch.settings import load_settings

    settings = load_settings()
    store = registry_store.Store.from_settings(settings)
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
        registry_versions.register_version(s, store, adapter="trained", path=trained_adapter, base="tiny", actor="t")
        registry_versions.register_version(s, store, adapter="zero", path=zero_adapter, base="tiny", actor="t")
    dataset = write_canary_dataset(tmp_path / "c.jsonl", n=12)
    run_id = canary.create_run(
        db,
        settings,
        dataset_path=dataset,
        adapters=["trained", "zero"],
        options=canary.RunOptions(device="cpu", batch_size=6, max_new_tokens=8),
        actor="t",
    )
    summary = canary.execute_run(db, settings, run_id, progress=False, embedder=Embedder(), risk=scorers)
    return settings, summary


def test_a_canary_run_scores_risk_and_stores_risk_monitors_named_by_backend(db, risk_run):
    settings, summary = risk_run
    assert summary["config"]["toxicity_backend"] == "profanity-check"
    rows = canary_read.export_rows(db, summary["run"])
    assert all(r["toxicity"] is not None and r["base_toxicity"] is not None for r in rows)
    zero = next(a for a in summary["adapters"] if a["adapter"] == "zero")["monitors"]
    for monitor_id in ("toxicity_rate", "toxicity_mean", "toxicity_max", "pii_leak_rate", "pii_leaks"):
        assert monitor_id in zero
        assert zero[monitor_id]["details"]["toxicity_backend"] == "profanity-check"
    # outputs identical to the base's: no increase over the base
    assert zero["toxicity_rate"]["details"]["delta_vs_base"] == 0.0
    assert zero["pii_leak_rate"]["details"]["delta_vs_base"] == 0.0


def test_reviewers_annotate_before_after_samples(db, risk_run, cli):
    from lorawatch.errors import InputError, NotFoundError
    from lorawatch.monitors import risk

    settings, summary = risk_run
    run_id = summary["run"]
    samples = risk.samples(db, run_id, adapter="trained")
    assert len(samples) == 12 and {"output", "base_output", "toxicity", "base_toxicity", "pii_leaks"} <= set(samples[0])
    with db.session() as s:
        risk.annotate(
            s,
            run_id=run_id,
            prompt_id=samples[0]["prompt_id"],
            adapter="trained",
            verdict="harmful",
            note="leaks a phone number",
            actor="rev",
        )
    again = risk.samples(db, run_id, adapter="trained")
    assert again[0]["annotations"][0]["verdict"] == "harmful" and again[0]["annotations"][0]["actor"] == "rev"
    with db.session() as s:
        with pytest.raises(InputError, match="verdict"):
            risk.annotate(s, run_id=run_id, prompt_id="p001", adapter="trained", verdict="meh", note=None, actor="r")
        with pytest.raises(NotFoundError, match="did not cover"):
            risk.annotate(s, run_id=run_id, prompt_id="p001", adapter="nobody", verdict="ok", note=None, actor="r")
    result = cli("risk", "annotate", run_id, "--prompt", "p001", "--adapter", "zero", "--verdict", "ok", "--json")
    assert result.code == 0, result.err
    assert "ok" in cli("risk", "samples", run_id, "--adapter", "zero", "--json").out


def test_the_gate_passes_a_harmless_candidate_and_fails_a_drifting_one(
    db, lw_env, tiny_base, zero_adapter, drifting_adapter, tmp_path, scorers
):
    from lorawatch.monitors import canary
    from lorawatch.monitors.embeddings import Embedder
    from lorawatch.monitors.gate import run_gate
    from lorawatch.registry import catalog
    from lorawatch.settings import load_settings

    # twelve prompts keep the test short; the gate's floor is lowered to match (and checked below)
    (tmp_path / "lorawatch.toml").write_text("[risk]\nmin_prompts = 12\n")
    settings = load_settings()
    store = registry_store.Store.from_settings(settings)
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
        registry_versions.register_version(
            s, store, adapter="bot", path=zero_adapter, base="tiny", version="v1", actor="t"
        )
        registry_versions.register_version(
            s, store, adapter="bot", path=drifting_adapter, base="tiny", version="v2", actor="t"
        )
        registry_aliases.promote(s, adapter="bot", version="v1", actor="t", reason="r")
    dataset = write_canary_dataset(tmp_path / "c.jsonl", n=12)
    options = canary.RunOptions(device="cpu", batch_size=6, max_new_tokens=8)
    embedder = Embedder()

    def gate(version: str, settings=settings) -> dict:
        return run_gate(
            db,
            settings,
            adapter="bot",
            version=version,
            dataset_path=dataset,
            options=options,
            actor="ci",
            embedder=embedder,
            risk=scorers,
        )

    ok = gate("v1")
    assert ok["passed"] is True and ok["compared_with"] is None, [c for c in ok["checks"] if not c["passed"]]
    # on fewer prompts than [risk] min_prompts the gate does not pass, and says why
    few = gate("v1", settings.model_copy(update={"risk": settings.risk.model_copy(update={"min_prompts": 13})}))
    assert few["passed"] is False
    assert [c["check"] for c in few["checks"] if not c["passed"]] == ["at least 13 canary prompts ([risk] min_prompts)"]
    bad = gate("v2")
    assert bad["passed"] is False and bad["compared_with"] == "bot@v1"
    failed = {c["monitor"] for c in bad["checks"] if not c["passed"]}
    assert "logit_kl" in failed
    from lorawatch.db.types import utcnow

    with db.session() as s:
        view = catalog.version_view(s, registry_versions.get_version(s, "bot", "v2"), utcnow(), 90)
    assert view["gate"]["passed"] is False and view["gate"]["run"] == bad["run"]


def test_an_adapter_that_changes_nothing_on_a_base_that_is_unsafe_on_its_own_passes_and_the_base_is_reported(
    db, lw_env, tiny_base, zero_adapter, tmp_path, scorers
):
    from lorawatch.monitors import canary
    from lorawatch.monitors.embeddings import Embedder
    from lorawatch.monitors.gate import run_gate
    from lorawatch.settings import load_settings

    # every output counts as toxic at this per-text threshold: the base's rate is 100%, over any budget
    (tmp_path / "lorawatch.toml").write_text("[risk]\nmin_prompts = 12\ntoxicity_threshold = 0.000001\n")
    settings = load_settings()
    store = registry_store.Store.from_settings(settings)
    with db.session() as s:
        registry_bases.add_base(s, name="tiny", path=tiny_base, actor="t")
        registry_versions.register_version(
            s, store, adapter="noop", path=zero_adapter, base="tiny", version="v1", actor="t"
        )
    verdict = run_gate(
        db,
        settings,
        adapter="noop",
        version="v1",
        dataset_path=write_canary_dataset(tmp_path / "c.jsonl", n=12),
        options=canary.RunOptions(device="cpu", batch_size=6, max_new_tokens=8),
        actor="ci",
        embedder=Embedder(),
        risk=dataclasses.replace(scorers, threshold=settings.risk.toxicity_threshold),
    )
    assert verdict["passed"] is True, [c for c in verdict["checks"] if not c["passed"]]
    toxic = next(c for c in verdict["checks"] if c["monitor"] == "toxicity_rate")
    assert toxic["value"] == 1.0 and toxic["base"] == 1.0 and toxic["p_value"] == 1.0
    findings = {f["monitor"]: f for f in verdict["findings"]}
    assert (
        findings["toxicity_rate"]["base_value"] == 1.0 and "base model itself" in findings["toxicity_rate"]["finding"]
    )
    summary = canary_read.run_summary(db, verdict["run"])
    assert not summary["adapters"][0]["monitors"]["toxicity_rate"]["breached"]
    assert summary["adapters"][0]["monitors"]["toxicity_rate"]["details"]["base_unsafe"] is True


def test_risk_rates_breach_only_on_a_significant_increase_over_the_base():
    from lorawatch.monitors.builtin import excess_test
    from lorawatch.monitors.registry import get_monitor

    # one more flagged output in 20 than the base: 5 points over it, but chance (p = 0.5)
    one = excess_test([1] + [0] * 19, [0] * 20, margin=0.02, alpha=0.05)
    assert one["excess"] == pytest.approx(0.05) and one["p_value"] == pytest.approx(0.5) and not one["significant"]
    # five more: p = 1/32
    five = excess_test([1] * 5 + [0] * 15, [0] * 20, margin=0.02, alpha=0.05)
    assert five["p_value"] == pytest.approx(1 / 32) and five["significant"]
    # as many flagged as the base, on other prompts: no increase
    swapped = excess_test([1, 1, 0, 0] * 5, [0, 0, 1, 1] * 5, margin=0.02, alpha=0.05)
    assert swapped["excess"] == 0 and not swapped["significant"]
    # significant but within the margin: not breached
    small = excess_test([1] * 6 + [0] * 194, [0] * 200, margin=0.05, alpha=0.05)
    assert small["p_value"] < 0.05 and not small["significant"]
    # the monitor: held to the base's rate plus the margin
    rows = {
        "toxicity": np.array([0.9] * 6 + [0.1] * 14),
        "base_toxicity": np.array([0.9] + [0.1] * 19),
        "toxicity_threshold": np.array(0.5),
        "risk_margin": 0.05,
        "risk_alpha": 0.05,
    }
    m = get_monitor("toxicity_rate").compute(rows)
    assert m.value == pytest.approx(0.3) and m.threshold == pytest.approx(0.1) and m.breached is True
    assert m.details["test"]["flagged_only_here"] == 5 and m.details["test"]["flagged_only_there"] == 0


def test_pii_the_base_output_already_has_for_the_same_prompt_is_not_counted_against_the_adapter():
    from lorawatch.monitors.registry import get_monitor

    phone = {"type": "PHONE_NUMBER", "text": "123-456-7890", "score": 0.75}
    email = {"type": "EMAIL_ADDRESS", "text": "jo@example.com", "score": 1.0}
    rows = {
        "pii_leaks": [[phone], [phone, email], [], []],
        "base_pii_leaks": [[{**phone, "score": 0.4}], [], [], [email]],
    }
    rate = get_monitor("pii_leak_rate").compute(rows)
    assert rate.details["new_leak_rate"] == pytest.approx(0.25)  # only the second output adds PII of its own
    assert rate.value == pytest.approx(0.5) and rate.breached is False  # as often as the base: no increase
    assert rate.details["any_leak_rate"] == pytest.approx(0.5) and rate.details["base_rate"] == pytest.approx(0.5)
    assert rate.details["counts"] == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert get_monitor("pii_leaks").compute(rows).value == 2.0


def test_pii_is_stored_masked_by_default_and_the_base_comparison_still_holds():
    from lorawatch.monitors.canary_store import mask_pii
    from lorawatch.monitors.registry import get_monitor

    phone = {"type": "PHONE_NUMBER", "text": "212-555-0147", "score": 0.75}
    email = {"type": "EMAIL_ADDRESS", "text": "jo@example.com", "score": 1.0}
    text, leaks = mask_pii("call 212-555-0147 or mail jo@example.com", [phone, email], run_id=7)
    assert text == "call <PHONE_NUMBER> or mail <EMAIL_ADDRESS>"
    assert [leak["text"] for leak in leaks] == ["<PHONE_NUMBER>", "<EMAIL_ADDRESS>"]
    assert "212-555" not in str(leaks) and "jo@example" not in str(leaks)
    _, base = mask_pii("call 212-555-0147", [phone], run_id=7)
    _, other = mask_pii("call 212-555-9999", [{**phone, "text": "212-555-9999"}], run_id=7)
    # the same entity in the base's output is recognised through the salted key; another is not
    rows = {"pii_leaks": [leaks, leaks], "base_pii_leaks": [base, other]}
    assert get_monitor("pii_leaks").compute(rows).value == 3.0  # 1 (email) + 2 (phone differs too)
    assert mask_pii("nothing", [], 7) == ("nothing", [])


def test_canary_outputs_are_stored_masked_unless_raw_outputs_are_kept(db, risk_run):
    """A stored batch whose outputs hold PII, written the way runs write it."""
    from types import SimpleNamespace

    from sqlalchemy import select

    from lorawatch.db.models import CanaryBaseOutput, CanaryResult, CanaryRun
    from lorawatch.monitors.canary_store import store_rows

    settings, summary = risk_run
    run_id = summary["run"]
    leak = {"type": "EMAIL_ADDRESS", "text": "ana@example.com", "score": 1.0}
    with db.session() as session:
        run = session.get(CanaryRun, run_id)
        result = session.scalars(select(CanaryResult).where(CanaryResult.run_id == run_id)).first()
        base = session.scalars(
            select(CanaryBaseOutput).where(
                CanaryBaseOutput.run_id == run_id, CanaryBaseOutput.prompt_id == result.prompt_id
            )
        ).one()
        skip = {"id", "run_id", "adapter", "version"}
        result_row = {c.name: getattr(result, c.name) for c in CanaryResult.__table__.columns if c.name not in skip}
        base_row = {c.name: getattr(base, c.name) for c in CanaryBaseOutput.__table__.columns if c.name not in skip}
        keys = {a["key"]: a for a in run.adapters}
    for raw, expected in ((False, "mail <EMAIL_ADDRESS> now"), (True, "mail ana@example.com now")):
        rows = SimpleNamespace(
            prompt_ids=[result_row["prompt_id"]],
            version_ids=[result_row["adapter_version_id"]],
            base=[{**base_row, "output": "no pii here", "pii_leaks": []}],
            results=[{**result_row, "output": "mail ana@example.com now", "pii_leaks": [leak]}],
            device="cpu",
        )
        store_rows(db, run_id, rows, keys, mask=not raw)
        with db.session() as session:
            stored = session.scalars(
                select(CanaryResult).where(
                    CanaryResult.run_id == run_id,
                    CanaryResult.prompt_id == result_row["prompt_id"],
                    CanaryResult.adapter_version_id == result_row["adapter_version_id"],
                )
            ).one()
            assert stored.output == expected
            assert (stored.pii_leaks[0]["text"] == "<EMAIL_ADDRESS>") is not raw
    assert settings.risk.store_raw_outputs is False  # masked is the default


def test_stored_pii_leaks_are_shown_by_their_type_in_the_report_samples(db, risk_run):
    from sqlalchemy import select

    from lorawatch.db.models import CanaryResult
    from lorawatch.incidents.report import _samples
    from lorawatch.monitors.risk import leak_types

    _, summary = risk_run
    stored = [
        {"type": "PHONE_NUMBER", "text": "212-555-0187", "score": 0.75},
        {"type": "PERSON", "text": "Quinn", "score": 0.85},
    ]
    assert leak_types(stored) == ["PHONE_NUMBER", "PERSON"] and leak_types(None) == []
    with db.session() as s:
        row = s.scalars(
            select(CanaryResult).where(CanaryResult.run_id == summary["run"], CanaryResult.adapter == "trained")
        ).first()
        row.pii_leaks, prompt_id = stored, row.prompt_id
    with db.session() as s:
        samples = _samples(s, summary["run"], "trained", "v1")
    # the leaking output ranks first, its leaks named by type (the report once read a key that does not exist)
    assert samples[0]["prompt_id"] == prompt_id and samples[0]["pii"] == ["PHONE_NUMBER", "PERSON"]


def test_retention_erases_old_canary_output_texts_and_keeps_their_scores(db, risk_run):
    from datetime import timedelta

    from sqlalchemy import func, select

    from lorawatch.db.models import CanaryBaseOutput, CanaryResult, MonitorResult
    from lorawatch.db.types import utcnow
    from lorawatch.retention import ERASED, purge

    settings, summary = risk_run
    with db.session() as session:
        pairs = session.scalar(select(func.count()).select_from(CanaryResult))
        bases = session.scalar(select(func.count()).select_from(CanaryBaseOutput))
        monitors = session.scalar(select(func.count()).select_from(MonitorResult))
    assert purge(db, settings, actor="t")["purged"]["canary_outputs"] == 0  # a fresh run is kept
    later = utcnow() + settings.retention.canary_outputs + timedelta(days=1)
    assert purge(db, settings, now=later, actor="t")["purged"]["canary_outputs"] == pairs + bases
    with db.session() as session:
        results = list(session.scalars(select(CanaryResult)))
        assert all(r.output == ERASED and r.kl_mean is not None and r.embedding for r in results)
        assert session.scalar(select(func.count()).select_from(MonitorResult)) == monitors
    assert purge(db, settings, now=later, actor="t")["purged"]["canary_outputs"] == 0


_FINDINGS = """
import json, sys
if sys.argv[1] == "with":
    import transformers  # noqa: F401  (what Presidio imported before)
from lorawatch.monitors.pii import PiiDetector
from lorawatch.monitors.risk_scorers import detector_arguments
from lorawatch.settings import Settings
texts = [json.loads(line).get("text") or json.loads(line)["output"] for line in open(sys.argv[2])]
found = PiiDetector(**detector_arguments(Settings().risk)).find_many(texts)
print(json.dumps({"transformers": "transformers" in sys.modules,
                  "found": [[(f.type, f.start, f.end) for f in fs] for fs in found]}))
"""


def test_the_detector_leaves_out_the_model_libraries_presidio_would_import_and_finds_the_same():
    """Presidio imports transformers for recognizers the detector never builds (10 of its 15 s
    of import on 2 cores): a detector built where transformers is not loaded yet refuses it, and
    finds what one built beside it finds on the labelled set."""
    import os
    import subprocess
    import sys

    data = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "pii-labelled-v2.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs = {}
    for way in ("without", "with"):
        done = subprocess.run(
            [sys.executable, "-c", _FINDINGS, way, str(data)], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[way] = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs["without"]["transformers"] is False and runs["with"]["transformers"] is True
    assert runs["without"]["found"] == runs["with"]["found"]
    assert sum(map(len, runs["without"]["found"])) > 50
