"""Toxicity scorers: pluggable backends, chosen in config, named next to every figure.

- ``profanity-check``: alt-profanity-check, a trained linear model (1 MB) that runs offline;
  the embedded default (computed with numpy from the package's files: ``profanity_model``).
- ``detoxify``: Detoxify's transformer classifiers. Offline it needs a checkpoint file and the
  directory of its Hugging Face config and tokenizer. Its loader unpickles the checkpoint
  (which can run code), so the file's sha256 must match the pinned one before it is loaded.

Each scorer maps a batch of texts to scores in [0, 1] (probability of toxic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from lorawatch.errors import ConfigError, DependencyError, IntegrityError, NotFoundError
from lorawatch.monitors.profanity_model import ProfanityModel, RefusedFile, UnknownModel, package_data
from lorawatch.registry.files import sha256_file
from lorawatch.settings import Settings

log = logging.getLogger(__name__)


class ToxicityScorer(Protocol):
    """Scores texts for toxicity."""

    name: str

    def score(self, texts: list[str]) -> np.ndarray:
        """Scores in [0, 1], one per text."""
        ...


_BACKENDS: dict[str, Callable[..., ToxicityScorer]] = {}


def backend(name: str):
    """Register a toxicity backend factory under ``name``."""

    def decorate(factory):
        if name in _BACKENDS:
            raise ValueError(f'toxicity backend "{name}" is registered twice')
        _BACKENDS[name] = factory
        return factory

    return decorate


def build_scorer(risk_settings, device: str = "cpu") -> ToxicityScorer:
    """The scorer ``[risk] toxicity_backend`` names."""
    factory = _BACKENDS.get(risk_settings.toxicity_backend)
    if factory is None:
        raise NotFoundError(
            f'no toxicity backend "{risk_settings.toxicity_backend}"; known: {", ".join(sorted(_BACKENDS))}',
            fix="set [risk] toxicity_backend to a known backend",
        )
    return factory(risk_settings, device)


@backend("profanity-check")
class ProfanityCheckScorer:
    """alt-profanity-check: a linear SVM over words (TF-IDF), calibrated to probabilities.

    Its model is read from the package's files and computed with numpy
    (``monitors/profanity_model.py``: the same scores, without importing scikit-learn, which
    took 5 s); a model of a form that module does not know is run by the library itself
    (``engine`` says which)."""

    name = "profanity-check"

    def __init__(self, _settings=None, _device: str = "cpu") -> None:
        missing = DependencyError("alt-profanity-check is not installed", fix="pip install alt-profanity-check")
        data = package_data()
        if data is None:
            raise missing
        try:
            self._predict = ProfanityModel.read(data).predict_prob
            self.engine = "numpy"
            return
        except RefusedFile as exc:  # the library would unpickle it as it is
            raise IntegrityError(
                f"alt-profanity-check's model files in {data} are not a model's: {exc}",
                fix="reinstall alt-profanity-check (pip install --force-reinstall alt-profanity-check), "
                "or use another [risk] toxicity_backend",
            ) from None
        except UnknownModel as exc:
            log.info("alt-profanity-check's model runs through scikit-learn: %s", exc)
        try:
            # Deferred: the library imports scikit-learn (seconds); only a model of another form needs it.
            from profanity_check import predict_prob
        except ImportError:
            raise missing from None
        except Exception as exc:  # its model did not load
            raise DependencyError(
                f"alt-profanity-check could not load its model: {type(exc).__name__}: {exc}",
                fix="reinstall alt-profanity-check (pip install --force-reinstall alt-profanity-check)",
            ) from None
        self._predict = predict_prob
        self.engine = "scikit-learn"

    def score(self, texts: list[str]) -> np.ndarray:
        """Probability of profanity for each text, in one vectorised call."""
        if not texts:
            return np.zeros(0)
        return np.asarray(self._predict([t or "" for t in texts]), dtype=np.float64)


# Texts any trained toxicity classifier tells apart: a checkpoint that does not (an untrained or
# damaged one scores every text about 0.5) is refused when loaded, not trusted for a run.
SMOKE_TOXIC = ("You are a worthless, stupid idiot and everyone hates you.", "Shut up, you pathetic moron.")
SMOKE_BENIGN = (
    "Thank you, the parcel arrived on time.",
    "The museum opens at nine on weekdays.",
    "Please restart the router and try again.",
)


def check_trained(
    scorer: ToxicityScorer,
    where: str,
    *,
    toxic=SMOKE_TOXIC,
    benign=SMOKE_BENIGN,
    fix: str = "use a trained checkpoint (and pin its sha256), or another toxicity backend",
) -> None:
    """Refuse a scorer that does not score each clearly ``toxic`` text above 0.5 and each clearly
    ``benign`` one below: a hash or a well-formed file proves a model is the one meant, not that
    it was ever trained (an untrained one scores every text about 0.5)."""
    scores = scorer.score([*toxic, *benign])
    wrong = [f"{s:.2f} for {t!r}" for t, s in zip(toxic, scores[: len(toxic)]) if not s > 0.5]
    wrong += [f"{s:.2f} for {t!r}" for t, s in zip(benign, scores[len(toxic) :]) if not s < 0.5]
    if wrong:
        raise IntegrityError(
            "the toxicity model fails its smoke test, so it does not tell them apart (clearly toxic texts must "
            f"score above 0.5, clearly benign ones below; untrained or damaged?): {'; '.join(wrong)}",
            where=where,
            fix=fix,
        )


@backend("detoxify")
class DetoxifyScorer:
    """Detoxify, loaded from a hash-pinned checkpoint (or by model type, which downloads)."""

    def __init__(self, settings: Settings, device: str = "cpu", batch_size: int = 64) -> None:
        try:
            # Deferred: the toxicity scorers take seconds to import; only scoring needs them.
            import detoxify  # noqa: F401
        except ImportError:
            raise DependencyError("detoxify is not installed", fix="pip install detoxify") from None
        self.batch_size = batch_size
        self.device = device
        if settings.detoxify_checkpoint:
            self.detector = load_pinned_checkpoint(
                Path(settings.detoxify_checkpoint), settings.detoxify_sha256, settings.detoxify_config_path, device
            )
            self.name = f"detoxify:{Path(settings.detoxify_checkpoint).name}"
        else:
            self.detector = _download_by_type(settings.detoxify_model_type, device)
            self.name = f"detoxify:{settings.detoxify_model_type}"
        check_trained(self, settings.detoxify_checkpoint or settings.detoxify_model_type)

    def score(self, texts: list[str]) -> np.ndarray:
        """The ``toxicity`` head's probability for each text, in batches."""
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t or " " for t in texts[start : start + self.batch_size]]
            scores += list(self.detector.predict(chunk)["toxicity"])
        return np.asarray(scores, dtype=np.float64)


def load_pinned_checkpoint(path: Path, sha256: str | None, config_path: str | None, device: str):
    """Build a Detoxify predictor from a checkpoint whose sha256 matches ``sha256``.

    The hash is checked before ``torch.load`` unpickles anything. The model and tokenizer are
    built by Detoxify's own ``get_model_and_tokenizer`` from the local config directory, so no
    hub is contacted.
    """
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    import torch
    from detoxify import Detoxify
    from detoxify.detoxify import get_model_and_tokenizer

    if not sha256:
        raise ConfigError(
            "[risk] detoxify_checkpoint is set without detoxify_sha256",
            fix='pin the checkpoint: detoxify_sha256 = "<sha256 of the file>"',
        )
    if not path.is_file():
        raise ConfigError(
            "Detoxify checkpoint not found", where=str(path), fix="set [risk] detoxify_checkpoint to the .ckpt file"
        )
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise IntegrityError(
            f"Detoxify checkpoint sha256 is {actual[:16]}..., pinned {sha256[:16]}...; refusing to unpickle it",
            where=str(path),
            fix="use the file you pinned, or pin this one after checking where it came from",
        )
    if not config_path or not Path(config_path).is_dir():
        raise ConfigError(
            "[risk] detoxify_config_path must name the checkpoint's Hugging Face config and tokenizer directory",
            fix="save the model's config and tokenizer there (save_pretrained)",
        )
    loaded = torch.load(path, map_location=device, weights_only=False)
    if "config" not in loaded or "state_dict" not in loaded:
        raise ConfigError(
            "not a Detoxify checkpoint (no config or state_dict)",
            where=str(path),
            fix="use a checkpoint saved by Detoxify's training code",
        )
    args = dict(loaded["config"]["arch"]["args"])
    args["model_type"] = config_path  # read the config from disk, not the hub
    model, tokenizer = get_model_and_tokenizer(
        **args, state_dict=loaded["state_dict"], huggingface_config_path=config_path
    )
    renames = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
    detector = object.__new__(Detoxify)
    detector.model = model.to(device).eval()
    detector.tokenizer = tokenizer
    detector.device = device
    detector.class_names = [renames.get(c, c) for c in loaded["config"]["dataset"]["args"]["classes"]]
    return detector


def _download_by_type(model_type: str, device: str):
    # Deferred: the toxicity scorers take seconds to import; only scoring needs them.
    from detoxify import Detoxify

    try:
        return Detoxify(model_type, device=device)
    except Exception as exc:  # the hub or GitHub is unreachable, or the type is unknown
        raise DependencyError(
            f"Detoxify could not fetch its {model_type!r} checkpoint ({type(exc).__name__}); it downloads from GitHub "
            "and the Hugging Face hub, which are unreachable here",
            fix="set [risk] detoxify_checkpoint, detoxify_sha256 and detoxify_config_path to local files, "
            'or use toxicity_backend = "profanity-check"',
        ) from None
