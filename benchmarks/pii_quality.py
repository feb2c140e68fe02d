"""PII quality before and after: precision/recall/F1 per entity type, the leak rule, texts/s per core.

    python benchmarks/pii_quality.py [--rounds 3] [--before REV] [--output benchmarks/results/pii_cpu.txt]
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/pii_quality.py   # the figures of one pinned core

Compares two detectors on the same texts:

- **before**: ``lorawatch/monitors/pii.py`` at ``--before`` (default: the last commit before the
  look-alike, name, address and leak rules; ``git show REV:monitors/pii.py``, the file
  ``lorawatch/monitors`` links to), written to a temporary directory and imported from there;
- **after**: the working tree's ``lorawatch.monitors.pii``;

both built as ``lorawatch canary run`` builds its detector (``[risk]`` entities, threshold and
spaCy pipeline), with ``STREET_ADDRESS`` added to the entities when the settings lack it (the
detector before has no recognizer for it, so its recall there is 0). A third line, **after, no
name list**, is the new detector with its list of common first names emptied: names are then
found only by spaCy and after cue words. The list was written by the same hand as both labelled
sets and holds many of their first names, so that line is the fairer estimate of PERSON recall
on names it has not seen.

Sets: ``data/risk-labelled-v1.jsonl`` (260 texts) and ``data/pii-labelled-v2.jsonl`` (230 texts:
names of many origins with and without titles, street addresses and PO boxes, SSNs next to
phones, look-alikes that must not be found, answers shaped like a model's, kinds ``pii``,
``tricky`` and ``answer``; plus 30 leak cases, kind ``leak``: a prompt, an output, the PII in the
output, and the leaks expected). v2's values are invented: phones in the 555-01xx range or valid
``phonenumbers`` numbers of other countries, SSNs that follow the issuance rules, cards with a
valid Luhn digit, IBANs with valid check digits, example.com e-mail addresses, IPs of the
documentation and private ranges.

Matching rule (``risk_eval.pii_scores``, as the tests use it): a finding is a true positive when a
labelled entity of the same type overlaps its span (the label's span is the first occurrence of
its value in the text), else a false positive; a labelled entity no finding of its type overlaps
is a false negative. Precision is 1.0 for a type with no findings, recall 1.0 for a type with no
labels.

Leak cases are scored two ways: **rule only** applies each version's ``leaks`` to the labelled
PII of the output (the same findings for both, so only the rule differs); **end to end** runs each
detector on the output and then its own rule. A case is right when the set of (type, value) it
reports as leaks equals the labelled set exactly.

Texts/s per core: ``find_many`` over the labelled texts of both sets, and over canary-length
prose (the reference answers of ``canary_data/``, as ``benchmarks/risk.py`` builds them: mostly
text without PII); CPU seconds of this process (``time.process_time``), the best of ``--rounds``
rounds that alternate between the detectors. The number of findings on the canary-length prose
is printed too: an estimate of false positives on text nobody here wrote for this purpose.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT / "benchmarks" / "data"

from risk import per_core  # noqa: E402  (benchmarks/risk.py: the same texts-per-core measure)

# The last commit whose pii.py had neither our recognizers nor the whole-value leak rule.
BEFORE = "3c3cfc479eb8e24da70cc838399e286bfdc7a4d4"


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def module_before(directory: Path, revision: str) -> ModuleType:
    """``pii.py`` at ``revision``, imported from ``directory`` under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:monitors/pii.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = directory / "pii_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pii_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_before"] = module
    spec.loader.exec_module(module)
    return module


def scores_table(title: str, results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One markdown table: a row per entity type, precision/recall/F1 (tp/fp/fn) per detector."""
    names = list(results)
    types = sorted({t for r in results.values() for t in r})
    lines = [
        f"#### {title}",
        "",
        "| entity | " + " | ".join(f"{n}: P / R / F1 (tp/fp/fn)" for n in names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for entity in types:
        cells = []
        for name in names:
            s = results[name].get(entity)
            if s is None:
                cells.append("-")
                continue
            p, r = s["precision"], s["recall"]
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            cells.append(f"{p:.2f} / {r:.2f} / {f1:.2f} ({s['tp']}/{s['fp']}/{s['fn']})")
        lines.append(f"| {entity} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gold_findings(module: ModuleType, case: dict[str, Any]) -> list:
    """The labelled PII of a leak case's output as the module's own Finding objects."""
    output = case["output"]
    findings = []
    for entity in case["entities"]:
        start = output.find(entity["value"])
        findings.append(module.Finding(entity["type"], entity["value"], start, start + len(entity["value"]), 1.0))
    return findings


def leak_accuracy(module: ModuleType, cases: list[dict[str, Any]], detector=None) -> tuple[int, list[str]]:
    """How many leak cases the module's rule gets exactly right (on the labelled findings, or on
    ``detector``'s), and the ids of the others."""
    found = detector.find_many([c["output"] for c in cases]) if detector is not None else None
    right, wrong = 0, []
    for i, case in enumerate(cases):
        findings = found[i] if found is not None else gold_findings(module, case)
        got = {(f.type, f.text) for f in module.leaks(case["prompt"], findings)}
        if got == {(e["type"], e["value"]) for e in case["leaks"]}:
            right += 1
        else:
            wrong.append(case["id"])
    return right, wrong


def without_name_list(module: ModuleType, detector):
    """``detector.find_many`` with the module's list of first names emptied while it runs."""

    def find_many(texts: list[str]) -> list:
        names = module._FIRST_NAMES
        module._FIRST_NAMES = frozenset()
        try:
            return detector.find_many(texts)
        finally:
            module._FIRST_NAMES = names

    return find_many


def report(rounds: int, revision: str) -> str:
    from benchmarks.risk import canary_length_texts, naive_batched
    from lorawatch.monitors import pii as after_module
    from lorawatch.monitors.risk_eval import pii_scores
    from lorawatch.settings import RiskSettings

    risk = RiskSettings()
    entities = list(risk.pii_entities) + (["STREET_ADDRESS"] if "STREET_ADDRESS" not in risk.pii_entities else [])
    v1 = load_jsonl(DATA / "risk-labelled-v1.jsonl")
    v2_all = load_jsonl(DATA / "pii-labelled-v2.jsonl")
    v2 = [i for i in v2_all if i["kind"] != "leak"]
    cases = [i for i in v2_all if i["kind"] == "leak"]
    canary = canary_length_texts()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        before_module = module_before(Path(tmp), revision)
        before = before_module.PiiDetector(entities, risk.pii_score_threshold, risk.spacy_model)
        after = after_module.PiiDetector(entities, risk.pii_score_threshold, risk.spacy_model)
        plain = type("NoNameList", (), {"find_many": staticmethod(without_name_list(after_module, after))})()
        detectors = {"before": before, "after": after, "after, no name list": plain}

        labelled = [i["text"] for i in v1 + v2]
        differ = [t for t, a, b in zip(labelled, after.find_many(labelled), naive_batched(after, labelled)) if a != b]
        if differ:
            sys.exit(f"after: find_many differs from Presidio's batch engine on {len(differ)} labelled texts")

        out.append(f"### PII quality, before ({revision[:10]}) and after ({after.name})")
        out.append("")
        out.append(
            f"Entities: {', '.join(entities)}; score threshold {risk.pii_score_threshold}; "
            f"{os.cpu_count()} CPU cores; python {sys.version.split()[0]}, presidio-analyzer "
            f"{importlib.metadata.version('presidio-analyzer')}, spacy {importlib.metadata.version('spacy')}."
        )
        out.append("")
        out.append(
            f"find_many of the detector after finds what Presidio's plain batch engine does on all "
            f"{len(labelled)} labelled texts."
        )
        for title, items in (
            (f"v1: risk-labelled-v1.jsonl ({len(v1)} texts)", v1),
            (f"v2: pii-labelled-v2.jsonl ({len(v2)} texts)", v2),
        ):
            out.append("")
            out.append(scores_table(title, {name: pii_scores(d, items) for name, d in detectors.items()}))
        tricky = [i for i in v2 if i["kind"] == "tricky"]
        out.append("")
        out.append(f"#### v2, kind tricky ({len(tricky)} texts, no PII labelled): false positives per type")
        out.append("")
        out.append("| detector | false positives |")
        out.append("| --- | --- |")
        for name, d in detectors.items():
            fps = {t: s["fp"] for t, s in pii_scores(d, tricky).items() if s["fp"]}
            out.append(f"| {name} | {', '.join(f'{t} {n}' for t, n in fps.items()) or 'none'} |")
        for kind in ("pii", "answer"):
            subset = [i for i in v2 if i["kind"] == kind]
            out.append("")
            out.append(
                scores_table(
                    f"v2, kind {kind} ({len(subset)} texts)",
                    {name: pii_scores(d, subset) for name, d in detectors.items() if name != "after, no name list"},
                )
            )

        out.append("")
        out.append(f"#### Leak rule ({len(cases)} prompt/output cases of v2)")
        out.append("")
        out.append("| scoring | before: right | after: right | before: wrong cases | after: wrong cases |")
        out.append("| --- | --- | --- | --- | --- |")
        for label, end_to_end in (
            ("rule only (labelled findings)", False),
            ("end to end (own detector, own rule)", True),
        ):
            b = leak_accuracy(before_module, cases, before if end_to_end else None)
            a = leak_accuracy(after_module, cases, after if end_to_end else None)
            out.append(
                f"| {label} | {b[0]}/{len(cases)} ({b[0] / len(cases):.0%}) | {a[0]}/{len(cases)} "
                f"({a[0] / len(cases):.0%}) | {', '.join(b[1]) or '-'} | {', '.join(a[1]) or '-'} |"
            )

        out.append("")
        found = {
            name: sum(len(f) for f in d.find_many(canary))
            for name, d in detectors.items()
            if name != "after, no name list"
        }
        out.append(
            f"Findings on {len(canary)} canary-length texts (reference answers of canary_data/, no PII labelled): "
            + ", ".join(f"{name} {n}" for name, n in found.items())
        )
        out.append("")
        out.append(f"#### Texts/s per core (CPU seconds of this process, best of {rounds} rounds)")
        out.append("")
        out.append("| texts | before | after | after / before |")
        out.append("| --- | --- | --- | --- |")
        for label, texts in (
            (f"labelled v1 + v2 ({len(labelled)})", labelled),
            (f"canary-length ({len(canary)})", canary),
        ):
            rates = per_core({"before": before.find_many, "after": after.find_many}, texts, rounds)
            out.append(
                f"| {label} | {rates['before']:.1f} | {rates['after']:.1f} | {rates['after'] / rates['before']:.2f}x |"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of the timing; the best counts.")
    parser.add_argument("--before", default=BEFORE, help="The git revision whose pii.py is 'before'.")
    parser.add_argument("--output", type=Path, help="Also write the report to this file.")
    args = parser.parse_args()
    with redirect_stdout(io.StringIO()):  # Presidio and spaCy print nothing we want in the report
        text = report(args.rounds, args.before)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
