"""What the PII detector finds and refuses, case class by case class, and the leak rule.

The labelled sets are ``benchmarks/data/risk-labelled-v1.jsonl`` (whose per-type precision and
recall must not fall below what the detector had before these rules) and
``benchmarks/data/pii-labelled-v2.jsonl`` (names, addresses, SSNs and phones, look-alikes, answers
shaped like a model's, and prompt/output leak cases); ``benchmarks/pii_quality.py`` prints both
before and after.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
DEFAULT_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "PERSON"]
ENTITIES = [*DEFAULT_ENTITIES, "STREET_ADDRESS"]

# Precision and recall per type on v1 of the detector before the look-alike, name, address and SSN
# rules (benchmarks/pii_quality.py, "before"): tp / (tp + fp) and tp / (tp + fn) as measured.
V1_BEFORE = {
    "EMAIL_ADDRESS": (31 / 31, 31 / 31),
    "IP_ADDRESS": (24 / 24, 24 / 24),
    "IBAN_CODE": (19 / 19, 19 / 20),
    "CREDIT_CARD": (20 / 20, 20 / 22),
    "US_SSN": (20 / 21, 20 / 20),
    "PHONE_NUMBER": (30 / 33, 30 / 30),
    "PERSON": (34 / 34, 34 / 43),
}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def detector():
    from lorawatch.monitors.pii import PiiDetector

    return PiiDetector(ENTITIES)


def found(detector, text: str) -> set[tuple[str, str]]:
    return {(f.type, f.text) for f in detector.find(text)}


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("Send it to 221 Baker Street today.", "221 Baker Street"),
        (
            "The White House is at 1600 Pennsylvania Ave NW, Washington, DC 20500.",
            "1600 Pennsylvania Ave NW, Washington, DC 20500",
        ),
        (
            "She lives at 350 Fifth Avenue, Apt 12B, New York, NY 10118.",
            "350 Fifth Avenue, Apt 12B, New York, NY 10118",
        ),
        (
            "Ship it to 42 W 15th St., Suite 300, New York, NY 10011-1234.",
            "42 W 15th St., Suite 300, New York, NY 10011-1234",
        ),
        ("Mail the form to PO Box 4432, Springfield, IL 62704.", "PO Box 4432, Springfield, IL 62704"),
        ("Checks go to P.O. Box 908 as before.", "P.O. Box 908"),
        ("We moved to 1234 Martin Luther King Jr Blvd last year.", "1234 Martin Luther King Jr Blvd"),
        ("The refund letter went to 821 Maple Grove Drive.", "821 Maple Grove Drive"),
        ("Our Paris office is at 12 Rue de Rivoli, 75004 Paris.", "12 Rue de Rivoli, 75004 Paris"),
        ("Die Adresse ist Hauptstraße 5, 10115 Berlin.", "Hauptstraße 5, 10115 Berlin"),
        ("Please ship my order to 10 Downing Street, London SW1A 2AA.", "10 Downing Street, London SW1A 2AA"),
    ],
)
def test_street_addresses_are_found_with_their_unit_city_and_zip(detector, text, address):
    assert found(detector, text) == {("STREET_ADDRESS", address)}


@pytest.mark.parametrize(
    "text",
    [
        "Follow these 3 steps to reset your password.",
        "Version 2 Street Fighter is still a classic.",
        "The top 10 Park Avenue restaurants are in the guide.",
        "Chapter 12 Main Street Stories is my favourite.",
        "We walked 5 blocks to the station and took 2 trains.",
        "Street food and 3 Avenue cafes are the main draws.",
        "Spring 2024 was the busiest season.",
    ],
)
def test_numbers_and_street_words_in_prose_are_not_addresses(detector, text):
    assert not {kind for kind, _ in found(detector, text)} & {"STREET_ADDRESS"}


def test_addresses_count_only_when_requested():
    from lorawatch.monitors.pii import PiiDetector

    plain = PiiDetector(DEFAULT_ENTITIES)
    assert plain.find("Send it to 221 Baker Street today.") == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Customer Aigerim Sadykova says the refund never arrived.", "Aigerim Sadykova"),
        ("Dr. Oluwaseun Adebayo will review the results.", "Oluwaseun Adebayo"),
        ("Mr Bartholomew Ashcroft has not paid.", "Bartholomew Ashcroft"),
        ("My name is Xochitl Ramírez and I cannot log in.", "Xochitl Ramírez"),
        ("Signed, Dagny Thorsdottir", "Dagny Thorsdottir"),
        ("Account holder Bongani Dlamini requested a new card.", "Bongani Dlamini"),
        ("Please ask Minh Tran to review the dashboard.", "Minh Tran"),
        ("Reach Diego Fernandez on the escalation line.", "Diego Fernandez"),
        ("Please forward to Maria de la Cruz by Friday.", "Maria de la Cruz"),
        ("Ask Jörg Brandstätter about the wire.", "Jörg Brandstätter"),
        ("Hi, this is Chidinma Okafor, I need help.", "Chidinma Okafor"),
        ("Michael O'Brien's laptop was reported stolen.", "Michael O'Brien"),
        ("The payee is Fernando Alves da Costa.", "Fernando Alves da Costa"),
    ],
)
def test_names_are_found_after_cue_words_or_with_a_common_first_name(detector, text, name):
    assert ("PERSON", name) in found(detector, text)


@pytest.mark.parametrize(
    "text",
    [
        "Der Preis ist leider gestiegen.",
        "Die Rechnung wurde gestern verschickt, sagte Frau Müller.",
        "Your Frozen Debit Card was replaced and reactivated.",
        "Le Prix Goncourt est annoncé en novembre.",
        "Service Client vous répondra sous 48 heures.",
        "Our Customer Support Team will reply within a day.",
        "The Premium Travel Card has no foreign fees.",
        "San Francisco and Santa Clara offices are closed on Friday.",
        "Mr. Clean and Dr Pepper are both trademarks.",
        "Monday Morning Briefing starts at 9.",
        "Contact Customer Support for a new card.",
        "Use the Adam Optimizer with a learning rate of 0.001.",
        "Take the Elizabeth Line to Paddington.",
        "The Julia Language has multiple dispatch.",
        "Click Save Changes and then Log Out.",
    ],
)
def test_capitalised_phrases_that_are_not_names_are_refused(detector, text):
    assert not any(kind == "PERSON" for kind, _ in found(detector, text)), found(detector, text)


@pytest.mark.parametrize(
    "text",
    [
        "ISBN 0-306-40615-2 is the edition you asked for.",
        "Try the second edition, 1-4028-9462-7, which has the errata fixed.",
        "Mail it to ZIP 94107-1234 before Friday.",
        "Invoice No. 2125550147 is now overdue.",
        "Your order number is 4155550132 and it shipped today.",
        "Order #6465550184 has been refunded.",
        "The shipment manifest ID 4929 1185 3360 2071 must be quoted.",
        "Case number 2065550128 was closed by support.",
        "The appointment is on 08-31-2024 at noon.",
        "Running kernel 5.15.0.91 on the build host.",
        "The latest kernel, 6.8.0.45, includes the fix.",
        "We pinned the package to v1.20.3.4 in the lockfile.",
        "The release is tagged 4.19.0.25-generic.",
        "Upgraded from version 2.4.1.0 to 2.4.1.3 last night.",
        "Part number 412-33-9087 refers to the replacement fan assembly.",
    ],
)
def test_look_alike_numbers_are_not_phones_ssns_or_ips(detector, text):
    assert found(detector, text) == set()


@pytest.mark.parametrize(
    "text",
    [
        "Block 10.0.0.1 to 10.0.0.5 at the firewall.",
        "The build server at 203.0.113.17 runs firmware 2.4.10.1.",
        "Call me at (212) 555-0147 about order 5521.",
    ],
)
def test_real_ips_and_phones_next_to_look_alikes_are_still_found(detector, text):
    kinds = [kind for kind, _ in found(detector, text)]
    assert kinds and set(kinds) <= {"IP_ADDRESS", "PHONE_NUMBER"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Her social security number is 072338641 according to the form.", {("US_SSN", "072338641")}),
        ("SSN: 039451623", {("US_SSN", "039451623")}),
        ("My SSN is 041-38-9775, please update it.", {("US_SSN", "041-38-9775")}),
        (
            "Call me on 212-555-0186 once the SSN 327-44-1905 is verified.",
            {("PHONE_NUMBER", "212-555-0186"), ("US_SSN", "327-44-1905")},
        ),
        ("My SSN is 912-34-5678.", set()),  # area 9xx is never issued
        ("Use 123-45-6789 as the SSN in the example.", set()),  # the published example number
        ("Reach the claims office at +1 415 555 0190.", {("PHONE_NUMBER", "+1 415 555 0190")}),
    ],
)
def test_ssns_are_told_from_phones_by_context_and_format(detector, text, expected):
    assert found(detector, text) == expected


def test_every_leak_case_of_v2_is_judged_right_on_its_labelled_findings():
    from lorawatch.monitors.pii import Finding, leaks

    cases = [c for c in load("pii-labelled-v2.jsonl") if c["kind"] == "leak"]
    for case in cases:
        output = case["output"]
        findings = [
            Finding(e["type"], e["value"], output.find(e["value"]), output.find(e["value"]) + len(e["value"]), 1.0)
            for e in case["entities"]
        ]
        got = {(f.type, f.text) for f in leaks(case["prompt"], findings)}
        assert got == {(e["type"], e["value"]) for e in case["leaks"]}, case["id"]


@pytest.mark.parametrize(
    ("prompt", "kind", "value", "leaked"),
    [
        # substrings of something else in the prompt: leaks
        ("Ship it to zip 10001, please.", "IP_ADDRESS", "10.0.0.1", True),
        ("My order number is 2125550147001.", "PHONE_NUMBER", "212-555-0147", True),
        ("Tracking 7463122007115 says delivered.", "US_SSN", "463-12-2007", True),
        ("My router's IP is 192.168.1.10.", "IP_ADDRESS", "192.168.1.1", True),
        ("Write to anna.jo@example.com for access.", "EMAIL_ADDRESS", "jo@example.com", True),
        ("Forward the report to Jordan Rayner.", "PERSON", "Dan Ray", True),
        ("Order 41111111111111111119 has shipped.", "CREDIT_CARD", "4111 1111 1111 1111", True),
        # the same value written another way: echoes
        ("Reach me at (212) 555-0147 tomorrow.", "PHONE_NUMBER", "212.555.0147", False),
        ("my number is +1 212 555 0147", "PHONE_NUMBER", "(212) 555-0147", False),
        ("Her London number is +44 20 7946 0213.", "PHONE_NUMBER", "020 7946 0213", False),
        ("My phone is 212 555 0147 and my zip is 10001.", "PHONE_NUMBER", "212-555-0147", False),
        ("my SSN is 463122007", "US_SSN", "463-12-2007", False),
        ("Please send it to Ana.Silva@Example.com", "EMAIL_ADDRESS", "ana.silva@example.com", False),
        ("Host 10.0.0.1:8080 is not answering.", "IP_ADDRESS", "10.0.0.1", False),
        ("The prefix 2001:db8::1 is ours.", "IP_ADDRESS", "2001:0db8:0:0:0:0:0:1", False),
        ("hi, i'm jordan\nmiller", "PERSON", "Jordan Miller", False),
        ("Ship to 221B Baker Street, London.", "STREET_ADDRESS", "221B Baker St.", False),
        ("Pay to IBAN DE02370400440532013111 please.", "IBAN_CODE", "DE02 3704 0044 0532 0131 11", False),
    ],
)
def test_the_leak_rule_compares_whole_values_never_substrings(prompt, kind, value, leaked):
    from lorawatch.monitors.pii import Finding, leaks

    finding = Finding(kind, value, 0, len(value), 0.9)
    assert leaks(prompt, [finding]) == ([finding] if leaked else [])


def test_precision_and_recall_on_v1_do_not_fall_below_the_detector_before(detector):
    from lorawatch.monitors.risk_eval import pii_scores

    per_type = pii_scores(detector, load("risk-labelled-v1.jsonl"))
    for entity, (precision, recall) in V1_BEFORE.items():
        assert per_type[entity]["precision"] >= precision, (entity, per_type[entity])
        assert per_type[entity]["recall"] >= recall, (entity, per_type[entity])
    assert "STREET_ADDRESS" not in per_type  # v1 has none, and none is found


def test_precision_and_recall_on_v2(detector):
    from lorawatch.monitors.risk_eval import pii_scores

    per_type = pii_scores(detector, [i for i in load("pii-labelled-v2.jsonl") if i["kind"] != "leak"])
    assert set(per_type) == set(ENTITIES)
    for entity, stats in per_type.items():
        assert stats["precision"] >= 0.95, (entity, stats)
        assert stats["recall"] >= 0.9, (entity, stats)


def test_the_v2_set_is_large_varied_and_consistent():
    items = load("pii-labelled-v2.jsonl")
    texts = [i for i in items if i["kind"] != "leak"]
    cases = [i for i in items if i["kind"] == "leak"]
    assert len(texts) >= 200 and len(cases) >= 20
    assert {i["kind"] for i in texts} == {"pii", "tricky", "answer"}
    assert len({i["id"] for i in items}) == len(items)
    for item in texts:
        assert set(item) == {"id", "text", "toxic", "entities", "kind"} and item["toxic"] == 0
        for entity in item["entities"]:
            assert entity["type"] in ENTITIES and entity["value"] in item["text"], item["id"]
        assert item["entities"] == [] or item["kind"] != "tricky", item["id"]
    for case in cases:
        for entity in case["entities"] + case["leaks"]:
            assert entity["value"] in case["output"], case["id"]
        assert all(leak in case["entities"] for leak in case["leaks"]), case["id"]
    assert sum(bool(c["leaks"]) for c in cases) >= 10 and sum(not c["leaks"] for c in cases) >= 10


@pytest.fixture(scope="session")
def detectors(detector):
    from lorawatch.monitors.pii import PiiDetector

    return {
        "with addresses": detector,
        "addresses only": PiiDetector(["STREET_ADDRESS"]),
        "PERSON and SSN": PiiDetector(["PERSON", "US_SSN"]),
        "person_min_words=3": PiiDetector(ENTITIES, person_min_words=3),
    }


@pytest.mark.parametrize("config", ["with addresses", "addresses only", "PERSON and SSN", "person_min_words=3"])
def test_find_many_finds_what_presidio_batch_analysis_does_with_the_new_recognizers(detectors, config):
    from tests.test_risk import TRICKY_PII_TEXTS, presidio_batch

    detector = detectors[config]
    texts = TRICKY_PII_TEXTS + [i["text"] for i in load("pii-labelled-v2.jsonl") if i["kind"] != "leak"]
    texts += [c["output"] for c in load("pii-labelled-v2.jsonl") if c["kind"] == "leak"]
    assert detector._selective
    assert detector.find_many(texts) == presidio_batch(detector, texts)


def test_a_name_found_by_our_recognizer_alone_needs_no_lemmas(detectors, monkeypatch):
    from spacy.language import Language

    ran: list[list[str]] = []
    pipe = Language.pipe

    def spy(self, texts, *args, **kwargs):
        ran.append([name for name in self.pipe_names if name not in kwargs.get("disable", ())])
        return pipe(self, texts, *args, **kwargs)

    monkeypatch.setattr(Language, "pipe", spy)
    detector = detectors["with addresses"]
    assert [f.text for f in detector.find("Customer Aigerim Sadykova called.")] == ["Aigerim Sadykova"]
    assert "ner" in ran[0] and "lemmatizer" not in ran[0]


def test_the_name_pre_check_covers_names_with_particles():
    from lorawatch.monitors.pii import _is_full_name, _may_hold_full_name

    for text in ["Maria de la Cruz", "Ludwig van der Meer", "x de Yz W", "Ana de", "de Silva", "Ana de la"]:
        spans = [text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)]
        for min_words in (1, 2, 3):
            assert _may_hold_full_name(text, min_words) == any(_is_full_name(s, min_words) for s in spans), text
    assert (
        _is_full_name("Maria de la Cruz", 2) and not _is_full_name("Maria de", 2) and not _is_full_name("de Silva", 1)
    )


def test_without_a_spacy_pipeline_names_after_cue_words_are_still_found():
    from lorawatch.monitors.pii import PiiDetector

    with pytest.warns(RuntimeWarning, match="PERSON is not detected"):
        blank = PiiDetector(["PERSON", "STREET_ADDRESS"], spacy_model="no_such_spacy_pipeline")
    assert found(blank, "Dr. Priya Natarajan lives at 19 Elmwood Ave.") == {
        ("PERSON", "Priya Natarajan"),
        ("STREET_ADDRESS", "19 Elmwood Ave."),
    }
