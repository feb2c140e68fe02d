"""alt-profanity-check's model, read and run without scikit-learn.

The package is a TF-IDF vectorizer over words and a linear SVM calibrated to probabilities
(scikit-learn's ``CalibratedClassifierCV``: five SVMs, each with a sigmoid). Importing it imports
scikit-learn, and with it scipy and more: 5.4 s of a canary run's start-up on 2 CPU cores,
and again in each PII worker process on a GPU host, where they score toxicity. Its scores are
a few lines of arithmetic, so this module reads the package's two joblib files itself and
computes them with numpy, for a batch of texts:

    x     = the word counts of the text (lowercased, the vectorizer's token pattern, its vocabulary)
            times the words' idf, scaled to unit length
    p     = mean over the SVMs k of 1 / (1 + exp(a_k * (w_k . x + c_k) + b_k))

which is scikit-learn's ``predict_proba(...)[:, 1]``; ``tests/test_profanity_model.py`` holds it
to the library's own ``predict_prob`` on the labelled sets and on texts made to probe the edges.

The files are read by joblib's unpickler (joblib comes with alt-profanity-check: its files are
in joblib's format) with a ``find_class`` that builds no scikit-learn object: it accepts the
six classes the files hold, as plain records of their pickled state, numpy's number types and
dtypes (a dtype's state gives its byte order only) and joblib's wrapper of number arrays. Any
other name, an array of Python objects, a dtype of another kind raise ``RefusedFile``: the
files are then read by nobody, and the scorer fails saying so, since the library would
unpickle them as they are. A model of any other form (other n-grams, an analyzer or
preprocessor of its own, another calibration, another class) or a file that cannot be read
raises ``UnknownModel``; the scorer then uses the library itself (``monitors/toxicity.py``).
"""

from __future__ import annotations

import importlib.util
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The scikit-learn classes alt-profanity-check's files hold; read as records of their state.
_RECORDS = {
    ("sklearn.calibration", "CalibratedClassifierCV"),
    ("sklearn.calibration", "_CalibratedClassifier"),
    ("sklearn.calibration", "_SigmoidCalibration"),
    ("sklearn.feature_extraction.text", "TfidfTransformer"),
    ("sklearn.feature_extraction.text", "TfidfVectorizer"),
    ("sklearn.svm._classes", "LinearSVC"),
}
# What else the files may name: numpy's arrays and scalar types, joblib's array wrapper.
_NUMPY = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("numpy", "ndarray"),
    ("numpy", "float64"),
    ("numpy", "float32"),
    ("numpy", "int64"),
    ("numpy", "int32"),
    ("numpy", "bool_"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}
_NUMBER_KINDS = "biuf"  # the dtypes a file may make: booleans, integers, floats


class RefusedFile(Exception):
    """The files name or hold what no profanity-check model does (a function to call, an array
    of Python objects, a dtype that is not a number's): they are read by neither this module
    nor the library."""


class UnknownModel(Exception):
    """The files hold a model of a form this module does not compute, or could not be read
    (the message says what); the library itself may still run it."""


def _number_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype`` as a file calls it (``dtype("f8", False, True)``), for numbers only."""
    try:
        dtype = np.dtype(spec) if isinstance(spec, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in _NUMBER_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise RefusedFile(f"a dtype {spec!r}, not a number's")
    return dtype


class _Record:
    """A scikit-learn object's pickled state, without scikit-learn (``kind``: its class)."""

    kind = ""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnknownModel(f"{self.kind} pickled its state as {type(state).__name__}, not as a dict")
        self.__dict__.update(state)


_RECORD_CLASSES: dict[tuple[str, str], type[_Record]] = {
    key: type(key[1], (_Record,), {"kind": key[1]}) for key in sorted(_RECORDS)
}


def package_data() -> Path | None:
    """alt-profanity-check's data folder, found without importing the package (its
    ``__init__`` loads the model through scikit-learn); None where it is not installed."""
    spec = importlib.util.find_spec("profanity_check")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _unpickle(path: Path) -> Any:
    # Deferred: joblib is needed only to read the files, once per scorer.
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class Reader(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            record = _RECORD_CLASSES.get((module, name))
            if record is not None:
                return record
            if (module, name) == ("numpy", "dtype"):
                return _number_dtype
            if (module, name) in _NUMPY:
                return super().find_class(module, name)
            raise RefusedFile(f"{path.name} names {module}.{name}")

        def load_build(self) -> None:
            inst, state = self.stack[-2], self.stack[-1]
            if isinstance(inst, np.dtype):
                # a dtype's state sets its byte order and flags, and flags from a file could make
                # a number's dtype hold pointers: only the byte order is taken, on a fresh dtype
                if not (
                    isinstance(state, tuple)
                    and len(state) == 8
                    and isinstance(state[1], str)
                    and state[1] in ("<", ">", "|", "=")
                    and all(part is None for part in state[2:5])
                    and type(state[7]) is int
                    and state[7] == 0
                ):
                    raise RefusedFile(f"{path.name} gives a dtype the state {state!r}")
                safe = {"<": inst.newbyteorder("<"), ">": inst.newbyteorder(">")}.get(state[1], inst)
                self.stack.pop()
                self.stack[-1] = safe
                for key, value in list(self.memo.items()):
                    if value is inst:
                        self.memo[key] = safe
                return
            if isinstance(inst, NumpyArrayWrapper):
                # the array's data follows; an array of Python objects would be a pickle of its
                # own, which older joblib reads without this find_class
                dtype = state.get("dtype") if isinstance(state, dict) else None
                if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMBER_KINDS:
                    raise RefusedFile(f"{path.name} holds an array of Python objects or of another kind")
            NumpyUnpickler.load_build(self)

        dispatch = {**NumpyUnpickler.dispatch, pickle.BUILD[0]: load_build}

    with path.open("rb") as handle:
        if handle.read(1) != b"\x80":  # a compressed or pre-0.10 joblib file
            raise UnknownModel(f"{path.name} is not a plain pickle (compressed, or an old joblib format)")
        handle.seek(0)
        return Reader(str(path), handle, True).load()


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise UnknownModel(what)


def _kind(obj: Any, kind: str, where: str) -> Any:
    _expect(isinstance(obj, _Record) and obj.kind == kind, f"{where} is not a {kind}")
    return obj


def _array(obj: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    _expect(isinstance(obj, np.ndarray) and obj.shape == shape, f"{where} is not an array of shape {shape}")
    _expect(np.issubdtype(obj.dtype, np.floating) and bool(np.all(np.isfinite(obj))), f"{where} is not finite")
    return obj.astype(np.float64)


@dataclass(frozen=True)
class ProfanityModel:
    """The vectorizer and the calibrated SVMs, as arrays (one row per SVM)."""

    vocabulary: dict[str, int]
    idf: np.ndarray
    pattern: re.Pattern[str]
    lowercase: bool
    weights: np.ndarray
    intercepts: np.ndarray
    slopes: np.ndarray
    offsets: np.ndarray

    @classmethod
    def read(cls, data: Path) -> ProfanityModel:
        """From the package's ``vectorizer.joblib`` and ``model.joblib``; ``UnknownModel``
        (saying what differs) where they hold anything but this form, ``RefusedFile`` where
        they name or hold what no such model does."""
        try:
            return cls._read(data)
        except (RefusedFile, UnknownModel):
            raise
        except Exception as exc:  # a damaged or truncated file, a state of another shape
            raise UnknownModel(f"the model in {data} could not be read: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _read(cls, data: Path) -> ProfanityModel:
        vectorizer = _kind(_unpickle(data / "vectorizer.joblib"), "TfidfVectorizer", "vectorizer.joblib")
        state = vectorizer.__dict__
        for key, expected in (
            ("input", "content"),
            ("analyzer", "word"),
            ("preprocessor", None),
            ("tokenizer", None),
            ("strip_accents", None),
            ("binary", False),
            ("norm", "l2"),
            ("use_idf", True),
            ("sublinear_tf", False),
        ):
            _expect(state.get(key, "(missing)") == expected, f"the vectorizer's {key} is not {expected!r}")
        _expect(tuple(state.get("ngram_range", ())) == (1, 1), "the vectorizer counts n-grams, not single words")
        # stop words are dropped before the vocabulary is looked up: harmless where the
        # vocabulary was learned without them, which a fixed vocabulary need not have been
        _expect(
            state.get("stop_words") is None or state.get("fixed_vocabulary_") is False,
            "the vectorizer drops stop words from a vocabulary it was given",
        )
        _expect(state.get("dtype") is np.float64, "the vectorizer does not count in float64")
        _expect(isinstance(state.get("lowercase"), bool), "the vectorizer's lowercase is not a bool")
        _expect(isinstance(state.get("token_pattern"), str), "the vectorizer has no token pattern")
        pattern = re.compile(state["token_pattern"])
        _expect(pattern.groups <= 1, "the token pattern has more than one group")
        vocabulary = state.get("vocabulary_")
        _expect(isinstance(vocabulary, dict) and len(vocabulary) > 0, "the vectorizer has no vocabulary")
        size = len(vocabulary)
        _expect(
            all(isinstance(k, str) for k in vocabulary) and sorted(vocabulary.values()) == list(range(size)),
            "the vocabulary does not number its words 0..n-1",
        )
        transformer = _kind(state.get("_tfidf"), "TfidfTransformer", "the vectorizer's idf")
        idf = _array(transformer.__dict__.get("idf_"), (size,), "the idf")
        _expect(bool(np.all(idf > 0)), "an idf is not positive")

        model = _kind(_unpickle(data / "model.joblib"), "CalibratedClassifierCV", "model.joblib")
        classes = model.__dict__.get("classes_")
        _expect(isinstance(classes, np.ndarray) and classes.shape == (2,), "the model does not have two classes")
        members = model.__dict__.get("calibrated_classifiers_")
        _expect(isinstance(members, list) and len(members) > 0, "the model has no calibrated classifiers")
        weights, intercepts, slopes, offsets = [], [], [], []
        for i, member in enumerate(members):
            where = f"calibrated classifier {i}"
            part = _kind(member, "_CalibratedClassifier", where).__dict__
            _expect(part.get("method") == "sigmoid", f"{where} is not calibrated by a sigmoid")
            _expect(np.array_equal(part.get("classes"), classes), f"{where} has other classes")
            svm = _kind(part.get("estimator"), "LinearSVC", f"{where}'s estimator").__dict__
            _expect(np.array_equal(svm.get("classes_"), classes), f"{where}'s SVM has other classes")
            weights.append(_array(svm.get("coef_"), (1, size), f"{where}'s weights")[0])
            intercepts.append(float(_array(svm.get("intercept_"), (1,), f"{where}'s intercept")[0]))
            calibrators = part.get("calibrators")
            _expect(isinstance(calibrators, list) and len(calibrators) == 1, f"{where} has not one calibrator")
            sigmoid = _kind(calibrators[0], "_SigmoidCalibration", f"{where}'s calibrator").__dict__
            a, b = sigmoid.get("a_"), sigmoid.get("b_")
            _expect(
                all(isinstance(v, (float, np.floating)) and np.isfinite(v) for v in (a, b)),
                f"{where}'s sigmoid has no finite a_ and b_",
            )
            slopes.append(float(a))
            offsets.append(float(b))
        return cls(
            vocabulary=vocabulary,
            idf=idf,
            pattern=pattern,
            lowercase=state["lowercase"],
            weights=np.stack(weights),
            intercepts=np.array(intercepts),
            slopes=np.array(slopes),
            offsets=np.array(offsets),
        )

    def predict_prob(self, texts: list[str]) -> np.ndarray:
        """The probability that each text is profane (the library's ``predict_prob``)."""
        n = len(texts)
        lengths: list[int] = []
        columns: list[int] = []
        counts: list[int] = []
        for text in texts:
            found: dict[int, int] = {}
            for word in self.pattern.findall(text.lower() if self.lowercase else text):
                column = self.vocabulary.get(word)
                if column is not None:
                    found[column] = found.get(column, 0) + 1
            ordered = sorted(found)
            lengths.append(len(ordered))
            columns.extend(ordered)
            counts.extend(found[c] for c in ordered)
        rows = np.repeat(np.arange(n), lengths)
        cols = np.asarray(columns, dtype=np.int64)
        values = np.asarray(counts, dtype=np.float64) * self.idf[cols]
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n))
        values /= norms[rows]  # a row with a word has a positive norm (idf > 0)
        decisions = (
            np.stack([np.bincount(rows, weights=values * w[cols], minlength=n) for w in self.weights])
            + self.intercepts[:, None]
        )
        with np.errstate(over="ignore"):  # exp to inf: a probability of 0, as scipy's expit gives
            probabilities = 1.0 / (1.0 + np.exp(self.slopes[:, None] * decisions + self.offsets[:, None]))
        total = np.zeros(n)
        for row in probabilities:  # summed in the library's order, then divided
            total += row
        return total / len(probabilities)
