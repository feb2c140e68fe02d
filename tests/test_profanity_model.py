"""alt-profanity-check's model computed with numpy (monitors/profanity_model.py) against the
library itself, and the reader's refusals: files of another form, files that would run code."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lorawatch.monitors.profanity_model import ProfanityModel, RefusedFile, UnknownModel, package_data

ROOT = Path(__file__).resolve().parent.parent

# texts made to probe the vectorizer: empty, stop words only, case, accents, digits, joined
# words, punctuation, non-Latin scripts, control characters, repetition, a long text
EDGES = [
    "",
    " ",
    "a",
    "the and of to",
    "FUCK",
    "Fuck fuck FUCK fuck",
    "fück",
    "f*ck you",
    "shit\x00head",
    "damn\tit\nall",
    "bullshit-free zone",
    "idiot_idiot idiot2 2idiot",
    "Ça va? très bien",
    "日本語のテキスト",
    "мудак",
    "x" * 5000,
    "you " * 300 + "stupid",
    "12345 67890",
    "I'm not sayin' it's crap",
]


def _texts() -> list[str]:
    texts = list(EDGES)
    for name in ("risk-labelled-v1.jsonl", "toxicity-labelled-v1.jsonl"):
        for line in (ROOT / "benchmarks" / "data" / name).read_text(encoding="utf-8").splitlines():
            texts.append(json.loads(line)["text"])
    for path in sorted((ROOT / "canary_data").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                texts += [item.get("prompt", ""), item.get("reference") or ""]
    return texts


@pytest.fixture(scope="module")
def model() -> ProfanityModel:
    data = package_data()
    assert data is not None
    return ProfanityModel.read(data)


def test_scores_equal_the_librarys_on_the_labelled_sets_the_canary_sets_and_the_edges(model):
    from profanity_check import predict_prob

    texts = _texts()
    assert len(texts) > 1000
    ours, theirs = model.predict_prob(texts), predict_prob(texts)
    assert ours.dtype == np.float64 and ours.shape == (len(texts),)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert (ours > 0.5).sum() == (theirs > 0.5).sum() > 20  # the flags agree, and some are flagged


def test_scores_do_not_depend_on_the_batch(model):
    texts = _texts()[:200]
    together = model.predict_prob(texts)
    alone = np.array([model.predict_prob([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-15)
    assert model.predict_prob([]).shape == (0,)


def test_the_scorer_imports_neither_scikit_learn_nor_scipy():
    code = textwrap.dedent(
        """
        import sys
        from lorawatch.monitors.toxicity import ProfanityCheckScorer
        scorer = ProfanityCheckScorer()
        scores = scorer.score(["Shut up, you stupid idiot.", "Thanks, the parcel came."])
        print(scorer.engine, scores[0] > 0.5 > scores[1], sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "scipy"}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["numpy", "True", "[]"], done.stderr


def _copy_of_the_files(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    source = package_data()
    assert source is not None
    for name in ("vectorizer.joblib", "model.joblib"):
        (data / name).write_bytes((source / name).read_bytes())
    return data


def test_a_model_of_another_form_is_refused_saying_what_differs(tmp_path):
    import joblib
    import profanity_check.profanity_check as library

    data = _copy_of_the_files(tmp_path)
    vectorizer = library.vectorizer
    bigrams = type(vectorizer)(**{**vectorizer.get_params(), "ngram_range": (1, 2)})
    bigrams.__dict__.update({k: v for k, v in vectorizer.__dict__.items() if k.endswith("_") or k == "_tfidf"})
    joblib.dump(bigrams, data / "vectorizer.joblib")
    with pytest.raises(UnknownModel, match="n-grams"):
        ProfanityModel.read(data)

    data = _copy_of_the_files(tmp_path / "isotonic")
    model = library.model
    isotonic = pickle.loads(pickle.dumps(model))
    for member in isotonic.calibrated_classifiers_:
        member.method = "isotonic"
    joblib.dump(isotonic, data / "model.joblib")
    with pytest.raises(UnknownModel, match="not calibrated by a sigmoid"):
        ProfanityModel.read(data)

    data = _copy_of_the_files(tmp_path / "pattern")
    broken = pickle.loads(pickle.dumps(vectorizer))
    broken.token_pattern = "(?u)\\b(\\w"  # does not compile
    joblib.dump(broken, data / "vectorizer.joblib")
    with pytest.raises(UnknownModel, match="could not be read: (error|PatternError)"):
        ProfanityModel.read(data)

    data = _copy_of_the_files(tmp_path / "compressed")
    joblib.dump(model, data / "model.joblib", compress=3)
    with pytest.raises(UnknownModel, match="not a plain pickle"):
        ProfanityModel.read(data)


class _Hostile:
    """Unpickled by a plain reader, it would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _Dtype:
    """Pickled as numpy pickles a dtype: ``dtype(spec, False, True)``, then its state."""

    def __init__(self, spec: str, state: tuple) -> None:
        self.spec, self.state = spec, state

    def __reduce__(self):
        return (np.dtype, (self.spec, False, True), self.state)


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    import joblib

    marker = tmp_path / "ran"
    data = _copy_of_the_files(tmp_path)
    joblib.dump({"vocabulary_": _Hostile(marker)}, data / "vectorizer.joblib")
    with pytest.raises(RefusedFile, match=r"names (posix|os)\.system"):
        ProfanityModel.read(data)
    joblib.dump({"vocabulary_": np.array([_Hostile(marker)], dtype=object)}, data / "vectorizer.joblib")
    with pytest.raises(RefusedFile, match="a dtype 'O8', not a number's"):  # the array's dtype
        ProfanityModel.read(data)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("spec", "state", "refusal"),
    [
        ("O8", (3, "|", None, None, None, 8, 8, 0), "not a number's"),  # pointers
        ("V8", (3, "|", None, None, None, 8, 8, 0), "not a number's"),
        ("f8", (3, "<", None, None, None, 8, 8, 63), "the state"),  # a number's dtype flagged as holding objects
        ("f8", (3, "<", None, ("x",), {"x": 1}, 8, 8, 0), "the state"),
        ("f8", (3, np.array([1, 2]), None, None, None, 8, 8, 0), "the state"),  # compared without an error
    ],
)
def test_dtypes_other_than_numbers_are_refused(tmp_path, spec, state, refusal):
    """A dtype's state sets its flags: from a file they could make numbers read as pointers."""
    import joblib

    data = _copy_of_the_files(tmp_path)
    joblib.dump({"dtype": _Dtype(spec, state)}, data / "vectorizer.joblib")
    with pytest.raises(RefusedFile, match=refusal):
        ProfanityModel.read(data)


def test_a_dtypes_byte_order_is_kept(tmp_path):
    import joblib

    data = _copy_of_the_files(tmp_path)
    joblib.dump({"dtype": _Dtype("f8", (3, ">", None, None, None, -1, -1, 0))}, data / "vectorizer.joblib")
    with pytest.raises(UnknownModel, match="not a TfidfVectorizer"):  # read, then found to be no model
        ProfanityModel.read(data)


def test_a_damaged_file_is_an_unknown_model_not_a_crash(tmp_path):
    data = _copy_of_the_files(tmp_path)
    whole = (data / "model.joblib").read_bytes()
    (data / "model.joblib").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UnknownModel, match="could not be read"):
        ProfanityModel.read(data)


def _package(root: Path, vectorizer, model) -> Path:
    """A package named ``profanity_check`` under ``root``, holding these two objects in joblib
    files, and loading them at import as the library does."""
    import joblib

    package = root / "profanity_check"
    (package / "data").mkdir(parents=True)
    joblib.dump(vectorizer, package / "data" / "vectorizer.joblib")
    joblib.dump(model, package / "data" / "model.joblib")
    (package / "__init__.py").write_text(
        "from pathlib import Path\nimport joblib\n"
        "_data = Path(__file__).parent / 'data'\n"
        "_vectorizer = joblib.load(_data / 'vectorizer.joblib')\n"
        "_model = joblib.load(_data / 'model.joblib')\n"
        "def predict_prob(texts):\n"
        "    return _model.predict_proba(_vectorizer.transform(texts))[:, 1]\n"
    )
    return root


def test_a_file_that_would_run_code_fails_the_scorer_and_the_library_never_reads_it(tmp_path):
    import profanity_check.profanity_check as library

    marker = tmp_path / "ran"
    site = _package(tmp_path / "site", {"vocabulary_": _Hostile(marker)}, library.model)
    code = textwrap.dedent(
        """
        import sys
        from lorawatch.errors import IntegrityError
        from lorawatch.monitors.toxicity import ProfanityCheckScorer
        try:
            ProfanityCheckScorer()
        except IntegrityError as exc:
            print("refused:", exc, "sklearn" in sys.modules)
        """
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.startswith("refused:") and "system" in done.stdout, done.stdout + done.stderr
    assert done.stdout.split()[-1] == "False" and not marker.exists()


def test_a_model_of_another_form_is_run_by_the_library_itself(tmp_path):
    """Where the files hold another form, the scorer falls back to the library: a package of
    the same name whose model counts word pairs, found first on the path."""
    import profanity_check.profanity_check as library

    texts = ["you stupid idiot", "shut up", "thank you kindly", "go away you moron"]
    vectorizer = type(library.vectorizer)(ngram_range=(1, 2))
    features = vectorizer.fit_transform(texts)
    model = type(library.model)(estimator=type(library.model.estimator)(), cv=2)
    model.fit(features, [1, 0, 0, 1])
    package = _package(tmp_path / "site", vectorizer, model) / "profanity_check"
    code = textwrap.dedent(
        """
        import json, logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        import profanity_check
        from lorawatch.monitors.toxicity import ProfanityCheckScorer
        texts = json.loads(sys.argv[1])
        scorer = ProfanityCheckScorer()
        print(json.dumps([scorer.engine, scorer.score(texts).tolist(), profanity_check.predict_prob(texts).tolist()]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts)],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "PYTHONPATH": str(package.parent)},
    )
    engine, ours, theirs = json.loads(done.stdout)
    assert engine == "scikit-learn" and ours == theirs
    assert "counts n-grams" in done.stderr  # the log says why
