"""PII redaction benchmarks: in-distribution (the sample company) and out-of-distribution (Faker, 12 locales).

*In-distribution*: the sample company generator plants PII in tickets and documents and the redactor is handed
the CRM contact list as its deny list. Its figures show that generator and detector agree (the generator's
first names are in the detector's gazetteer), nothing more.

*Out-of-distribution* (``--ood``): support tickets written here around values that Faker makes in twelve
locales (person names, e-mail addresses, national and international phone numbers, IBANs, street addresses,
card numbers), with exact span annotations, plus PII-free business sentences full of capitalised product,
place and company names. The redactor gets no deny list. Two splits that share nothing but the generator code:

* ``dev``: seed 1101, the ``_DEV_*`` templates, eight locales. The detector was tuned looking at this split.
* ``held_out``: seed 90210, the ``_HELD_OUT_*`` templates (written separately, different wording), the same
  eight locales plus four that the dev split never had (pt_PT, sv_SE, da_DK, cs_CZ). Reported, not tuned on.

Scoring: a planted value counts as caught only when none of its parts survives redaction (a masked first name
with the surname left in the text is a miss; so is a phone number whose last digit groups stay). Parts: the
capitalised words of a name, the letter/digit runs of an e-mail's local part, the digit groups of a phone
number after its country code, the groups of an IBAN or card number, the capitalised words and numbers of a
street line and its postcode. Precision: detected spans that overlap a planted value, over all detected spans,
on the mixed and the PII-free texts together.

Faker is a benchmark-only dependency (``pip install -e .[bench]``); nothing in ``agenix_assets`` or ``serving``
imports this module.
"""

from __future__ import annotations

import json
import random
import re
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Locales of the dev split; the held-out split has these and :data:`HELD_OUT_ONLY_LOCALES`.
DEV_LOCALES: tuple[str, ...] = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL")
HELD_OUT_ONLY_LOCALES: tuple[str, ...] = ("pt_PT", "sv_SE", "da_DK", "cs_CZ")
OOD_TYPES: tuple[str, ...] = (
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS", "CREDIT_CARD")
#: Recall targets per reported row (phone numbers are reported per format) and the precision target.
OOD_TARGETS: dict[str, float] = {
    "EMAIL_ADDRESS": 0.98, "IBAN_CODE": 0.98, "CREDIT_CARD": 0.95, "PHONE_NUMBER/national": 0.95,
    "PHONE_NUMBER/international": 0.95, "STREET_ADDRESS": 0.8, "PERSON": 0.85, "precision": 0.9,
}

# ================================================================ templates
# Slots: PERSON, EMAIL_ADDRESS, PHONE_NATIONAL, PHONE_INTERNATIONAL, IBAN_CODE, CREDIT_CARD, STREET_ADDRESS are
# planted PII; PRODUCT, COMPANY, CITY, COUNTRY, MONTH, DATE, ORDER_NO, SERIAL, AMOUNT are not.

_DEV_PII = (
    "Please send the replacement to {STREET_ADDRESS}.",
    "You can reach me on {PHONE_NATIONAL} during office hours.",
    "My mobile from abroad is {PHONE_INTERNATIONAL}, in case the line drops.",
    "The refund should go to IBAN {IBAN_CODE}.",
    "I paid with the card {CREDIT_CARD} and was charged twice.",
    "Could you copy {EMAIL_ADDRESS} on the reply?",
    "{PERSON} from our purchasing team will sign the delivery note.",
    "I spoke to {PERSON} yesterday but nobody called back.",
    "Our new site contact is {PERSON}, phone {PHONE_NATIONAL}.",
    "Invoices go to {EMAIL_ADDRESS}; the account holder is {PERSON}.",
    "The technician should ask for {PERSON} at the gate.",
    "Ship the spare seals to {PERSON}, {STREET_ADDRESS}.",
    "Please charge {CREDIT_CARD} instead of the old card.",
    "Bank details changed: {IBAN_CODE} (account holder {PERSON}).",
    "If I am not at my desk, try {PHONE_INTERNATIONAL} or write to {EMAIL_ADDRESS}.",
    "We moved, the new delivery address is {STREET_ADDRESS}.",
)
_DEV_OPENERS = ("Hello,", "Hi support team,", "Dear Sir or Madam,", "")
_DEV_CLOSERS = ("Best regards,\n{PERSON}", "Thanks, {PERSON}", "-- {PERSON}", "Thank you.")
_DEV_CLEAN = (
    "The {PRODUCT} we ordered from {COMPANY} arrived in {CITY} on {DATE}.",
    "Order {ORDER_NO} for 12 units of {PRODUCT} is still pending in {CITY}.",
    "{COMPANY} confirmed the shipment to {COUNTRY} for {MONTH}.",
    "Our {CITY} plant runs the {PRODUCT} at 4.5 bar, firmware 2.10.3.",
    "Quote {ORDER_NO}: {PRODUCT} at EUR {AMOUNT}, delivery from {CITY}.",
    "The {PRODUCT} manual names {COMPANY} as the service partner in {COUNTRY}.",
    "Serial number {SERIAL} belongs to the {PRODUCT} in the {CITY} workshop.",
    "Since {MONTH} the {PRODUCT} Controller shows Error E{AMOUNT} at start-up.",
)

_HELD_OUT_PII = (
    "Kindly arrange the pickup at {STREET_ADDRESS} before Friday.",
    "Ring {PHONE_NATIONAL} and ask for the warehouse.",
    "Our foreign office answers at {PHONE_INTERNATIONAL}.",
    "Wire the credit note to account {IBAN_CODE}, please.",
    "The order was prepaid with {CREDIT_CARD}; please check the duplicate booking.",
    "Send the signed quote to {EMAIL_ADDRESS} by Thursday.",
    "According to {PERSON}, the pump was installed last spring.",
    "{PERSON} reported that the display stays blank after a restart.",
    "Escalation contact: {PERSON} ({EMAIL_ADDRESS}).",
    "Please let {PERSON} know when the courier arrives, the number is {PHONE_INTERNATIONAL}.",
    "The goods come back from {STREET_ADDRESS}, attention {PERSON}.",
    "For the direct debit use {IBAN_CODE} instead of the old account.",
    "Yesterday {PERSON} replaced the filter but the noise is still there.",
    "Billing questions: {EMAIL_ADDRESS} or {PHONE_NATIONAL}.",
    "Our card {CREDIT_CARD} expired, the new one follows by post.",
    "We are at {STREET_ADDRESS}, the entrance is behind the car park.",
)
_HELD_OUT_OPENERS = ("Good morning,", "To whom it may concern,", "Hi,", "")
_HELD_OUT_CLOSERS = ("Kind regards\n{PERSON}", "Cheers,\n{PERSON}", "{PERSON}\nService desk", "Regards.")
_HELD_OUT_CLEAN = (
    "Since the update on {DATE} the {PRODUCT} in our {CITY} warehouse reports error E{AMOUNT}.",
    "{COMPANY} and {COMPANY} both quoted for the {PRODUCT} retrofit.",
    "Serial {SERIAL} of the {PRODUCT} was repaired in {CITY}, {COUNTRY}.",
    "Invoice {ORDER_NO} from {COMPANY} lists 3 x {PRODUCT} and freight to {CITY}.",
    "The trade fair in {CITY} in {MONTH} will show the new {PRODUCT}.",
    "Purchase order {ORDER_NO} covers the {PRODUCT} Service Kit and two Spare Filters.",
    "Head Office in {CITY} approved the {PRODUCT} budget of {AMOUNT} EUR.",
    "The {COMPANY} Customer Portal lists the {PRODUCT} as discontinued in {COUNTRY}.",
)

# Product names are made here (not by Faker): brand-like capitalised words the detector has never seen.
_PRODUCT_HEADS = ("Aqua", "Therm", "Flex", "Nord", "Vario", "Hydro", "Servo", "Multi", "Eco", "Terra", "Polar",
                  "Vector", "Summit", "Atlas", "Orion", "Nova")
_PRODUCT_TAILS = ("Flow", "Max", "Line", "Tec", "Drive", "Guard", "Star", "Core", "Pro", "Sense")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True)
class Split:
    name: str
    seed: int
    locales: tuple[str, ...]
    pii_templates: tuple[str, ...]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    clean_templates: tuple[str, ...]


SPLITS: dict[str, Split] = {
    "dev": Split("dev", 1101, DEV_LOCALES, _DEV_PII, _DEV_OPENERS, _DEV_CLOSERS, _DEV_CLEAN),
    "held_out": Split("held_out", 90210, DEV_LOCALES + HELD_OUT_ONLY_LOCALES, _HELD_OUT_PII, _HELD_OUT_OPENERS,
                      _HELD_OUT_CLOSERS, _HELD_OUT_CLEAN),
}


# ================================================================ records


@dataclass
class Planted:
    type: str
    start: int
    end: int
    text: str
    locale: str
    form: str = ""  # PHONE_NUMBER: "national" or "international"
    parts: list[tuple[int, int]] = field(default_factory=list)  # absolute offsets that must not survive

    @property
    def row(self) -> str:
        return f"{self.type}/{self.form}" if self.form else self.type


@dataclass
class Record:
    id: str
    split: str
    locale: str
    kind: str  # "mixed" (PII planted) or "clean" (none)
    text: str
    planted: list[Planted]


_SLOT_RE = re.compile(r"\{([A-Z_]+)\}")
_PII_SLOTS = {"PERSON": ("PERSON", ""), "EMAIL_ADDRESS": ("EMAIL_ADDRESS", ""),
              "PHONE_NATIONAL": ("PHONE_NUMBER", "national"), "PHONE_INTERNATIONAL": ("PHONE_NUMBER", "international"),
              "IBAN_CODE": ("IBAN_CODE", ""), "CREDIT_CARD": ("CREDIT_CARD", ""),
              "STREET_ADDRESS": ("STREET_ADDRESS", "")}


def value_parts(typ: str, value: str, street_end: int | None = None) -> list[tuple[int, int]]:
    """Offsets (within ``value``) of the parts of a planted value that must all be masked for it to count."""
    if typ == "PERSON":
        return [m.span() for m in re.finditer(r"[^\W\d_][^\W\d_'’\-]*(?:['’\-][^\W\d_]+)*", value)
                if m.group()[0].isupper() and len(m.group()) > 1]
    if typ == "EMAIL_ADDRESS":
        local = value.split("@", 1)[0]
        return [m.span() for m in re.finditer(r"[^\W_]{2,}", local)] or [(0, len(value))]
    if typ == "PHONE_NUMBER":
        # the country code alone identifies nobody; an unformatted "+4930123456" is one part
        cc = re.match(r"\s*(?:\+|00[ ]?)\d{1,3}", value)
        offset = cc.end() if cc and not re.match(r"\s*(?:\+|00)\d{6,}", value) else 0
        body = value[offset:]
        return [(offset + m.start(), offset + m.end()) for m in re.finditer(r"\d{2,}", body)]
    if typ in ("IBAN_CODE", "CREDIT_CARD"):
        return [m.span() for m in re.finditer(r"[A-Za-z0-9]{2,}", value)]
    if typ == "STREET_ADDRESS":
        # the street line (up to street_end) in full; after it only the postcode, not the city
        line_end = len(value) if street_end is None else street_end
        parts = [m.span() for m in re.finditer(r"\d+|[^\W\d_]{2,}", value[:line_end])
                 if m.group()[0].isdigit() or m.group()[0].isupper()]
        if street_end is not None:
            for m in re.finditer(r"\b(?=[A-Z0-9]*\d)[A-Z0-9]{2,}(?:[ -]\d[A-Z0-9]{1,3})?\b", value[line_end:]):
                parts.append((line_end + m.start(), line_end + m.end()))
        return parts
    return [(0, len(value))]


# ================================================================ generation


class _LocaleValues:
    """Faker values of one locale, in the formats a customer would type them."""

    def __init__(self, locale: str, seed: int, rng: random.Random):
        from faker import Faker

        self.locale = locale
        self.fake = Faker(locale)
        self.fake.seed_instance(seed)
        self.rng = rng
        self.region = locale.split("_")[1]

    def person(self) -> str:
        return f"{self.fake.first_name()} {self.fake.last_name()}"

    def email(self) -> str:
        return self.fake.email()

    def _phone(self) -> Any:
        import phonenumbers as pn

        for _ in range(200):
            raw = self.fake.phone_number()
            try:
                number = pn.parse(raw, self.region)
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(number) and pn.region_code_for_number(number) == self.region:
                return raw, number
        raise RuntimeError(f"Faker made no valid {self.region} phone number in 200 tries")

    def phone(self, form: str) -> str:
        import phonenumbers as pn

        raw, number = self._phone()
        typed_intl = raw.lstrip().startswith(("+", "00"))
        if form == "national":
            if not typed_intl and "x" not in raw.casefold() and self.rng.random() < 0.5:
                return raw.strip()
            return pn.format_number(number, pn.PhoneNumberFormat.NATIONAL)
        choice = self.rng.random()
        if typed_intl and "x" not in raw.casefold() and choice < 0.4:
            return raw.strip()
        intl = pn.format_number(number, pn.PhoneNumberFormat.INTERNATIONAL)
        if choice < 0.7:
            return intl
        if choice < 0.85:
            return "00" + intl[1:]
        return pn.format_number(number, pn.PhoneNumberFormat.E164)

    def iban(self) -> str:
        value = self.fake.iban()
        if self.rng.random() < 0.5:
            value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
        return value

    def card(self) -> str:
        value = self.fake.credit_card_number()
        if len(value) == 16 and self.rng.random() < 0.6:
            sep = self.rng.choice((" ", "-"))
            value = sep.join(value[i:i + 4] for i in range(0, 16, 4))
        return value

    def address(self) -> tuple[str, int | None]:
        """A street line, often followed by postcode and city the way the locale writes them."""
        street = " ".join(self.fake.street_address().replace("\n", ", ").split())
        if self.rng.random() < 0.4:
            return street, None
        city = self.city()
        if self.locale == "en_US":
            tail = f", {city}, {self.fake.state_abbr()} {self.fake.postcode()}"
        elif self.locale == "en_GB":
            tail = f", {city} {self.fake.postcode()}"
        else:
            tail = f", {self.fake.postcode()} {city}"
        return street + tail, len(street)

    # not PII
    def company(self) -> str:
        return self.fake.company()

    def city(self) -> str:
        # Faker's it_IT cities are built from a set, whose order follows PYTHONHASHSEED: draw from them sorted,
        # or the split would differ from one process to the next.
        for provider in self.fake.get_providers():
            cities = getattr(provider, "cities", None)
            if isinstance(cities, (set, frozenset, tuple, list)) and cities:
                return self.fake.random_element(sorted(cities))
        return self.fake.city()

    def country(self) -> str:
        return self.fake.country()

    def product(self) -> str:
        rng = self.rng
        name = rng.choice(_PRODUCT_HEADS) + rng.choice(_PRODUCT_TAILS)
        return rng.choice((f"{name} {rng.randint(2, 99) * 100}", f"{name} {rng.choice('XSKM')}{rng.randint(1, 90)}",
                           f"{name} Compact", f"{name}"))


def _fill(template: str, values: _LocaleValues, text: str, planted: list[Planted]) -> str:
    """Append a filled template to ``text``; planted values get their spans and parts."""
    rng = values.rng
    pos = 0
    out = text
    for m in _SLOT_RE.finditer(template):
        out += template[pos:m.start()]
        slot = m.group(1)
        start = len(out)
        if slot in _PII_SLOTS:
            typ, form = _PII_SLOTS[slot]
            street_end = None
            if typ == "PERSON":
                value = values.person()
            elif typ == "EMAIL_ADDRESS":
                value = values.email()
            elif typ == "PHONE_NUMBER":
                value = values.phone(form)
            elif typ == "IBAN_CODE":
                value = values.iban()
            elif typ == "CREDIT_CARD":
                value = values.card()
            else:
                value, street_end = values.address()
            out += value
            parts = [(start + a, start + b) for a, b in value_parts(typ, value, street_end)]
            planted.append(Planted(typ, start, start + len(value), value, values.locale, form, parts))
        else:
            out += {
                "PRODUCT": values.product, "COMPANY": values.company, "CITY": values.city,
                "COUNTRY": values.country, "MONTH": lambda: rng.choice(_MONTHS),
                "DATE": lambda: f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2026",
                "ORDER_NO": lambda: rng.choice((f"45{rng.randint(0, 99_999_999):08d}",
                                                f"SO-2026-{rng.randint(10_000, 99_999)}")),
                "SERIAL": lambda: f"{rng.randint(1000, 9999)} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                "AMOUNT": lambda: f"{rng.randint(1, 9)},{rng.randint(0, 999):03d}",
            }[slot]()
        pos = m.end()
    return out + template[pos:]


def generate_ood(split: str | Split, tickets_per_locale: int = 40, clean_per_locale: int = 20,
                 seed: int | None = None) -> list[Record]:
    """Deterministic (per split and seed) support tickets with planted PII, and PII-free business texts."""
    sp = SPLITS[split] if isinstance(split, str) else split
    base_seed = sp.seed if seed is None else seed
    records: list[Record] = []
    for locale in sp.locales:
        locale_seed = zlib.crc32(f"{base_seed}:{locale}".encode())
        rng = random.Random(locale_seed)
        values = _LocaleValues(locale, locale_seed, rng)
        order = list(range(len(sp.pii_templates)))
        for i in range(tickets_per_locale):
            planted: list[Planted] = []
            text = ""
            opener = rng.choice(sp.openers)
            if opener:
                text = _fill(opener, values, text, planted) + "\n"
            if i % len(order) == 0:
                rng.shuffle(order)
            # every template in turn (so each type is planted often), plus one or two at random
            chosen = [order[i % len(order)]] + rng.sample(range(len(sp.pii_templates)), rng.randint(0, 2))
            sentences = [sp.pii_templates[k] for k in dict.fromkeys(chosen)]
            if rng.random() < 0.5:
                sentences.insert(rng.randint(0, len(sentences)), rng.choice(sp.clean_templates))
            for j, sentence in enumerate(sentences):
                text = _fill(sentence, values, text + (" " if j else ""), planted)
            closer = rng.choice(sp.closers)
            text = _fill(closer, values, text + "\n", planted)
            records.append(Record(f"{sp.name}-{locale}-t{i:04d}", sp.name, locale, "mixed", text, planted))
        for i in range(clean_per_locale):
            text = ""
            for j in range(rng.randint(1, 3)):
                text = _fill(rng.choice(sp.clean_templates), values, text + (" " if j else ""), [])
            records.append(Record(f"{sp.name}-{locale}-c{i:04d}", sp.name, locale, "clean", text, []))
    return records


# ================================================================ scoring


def _covered(parts: Iterable[tuple[int, int]], masked: Sequence[tuple[int, int]]) -> bool:
    """True when every character of every part lies inside a masked range."""
    for a, b in parts:
        pos = a
        for s, e in masked:
            if s <= pos < e:
                pos = e
                if pos >= b:
                    break
        if pos < b:
            return False
    return True


def score(records: Sequence[Record], masked_by_record: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Recall per type (no part may survive) and precision over the masked spans of ``records``.

    ``masked_by_record[i]`` are the spans (objects with ``type``, ``start``, ``end``, ``text``) that were
    masked in ``records[i].text``.
    """
    rows: dict[str, dict[str, int]] = {}
    by_locale: dict[str, dict[str, list[int]]] = {}
    detected = correct = same_type = 0
    misses: list[dict[str, Any]] = []
    false_positives: list[dict[str, Any]] = []
    for record, spans in zip(records, masked_by_record, strict=True):
        ranges = sorted((s.start, s.end) for s in spans)
        for p in record.planted:
            caught = _covered(p.parts, ranges)
            for key in (p.row, p.type) if p.form else (p.type,):
                stats = rows.setdefault(key, {"planted": 0, "caught": 0})
                stats["planted"] += 1
                stats["caught"] += int(caught)
            loc = by_locale.setdefault(record.locale, {}).setdefault(p.type, [0, 0])
            loc[0] += 1
            loc[1] += int(caught)
            if not caught:
                survived = [record.text[a:b] for a, b in p.parts if not _covered([(a, b)], ranges)]
                misses.append({"id": record.id, "type": p.row, "value": p.text, "survived": survived,
                               "masked": [s.text for s in spans if s.start < p.end and p.start < s.end]})
        for s in spans:
            detected += 1
            hits = [p for p in record.planted if p.start < s.end and s.start < p.end]
            correct += int(bool(hits))
            same_type += int(any(p.type == s.type for p in hits))
            if not hits:
                false_positives.append({"id": record.id, "kind": record.kind, "type": s.type, "text": s.text,
                                        "context": record.text[max(0, s.start - 40):s.end + 40]})

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    per_type = {k: {**v, "recall": ratio(v["caught"], v["planted"])} for k, v in sorted(rows.items())}
    report: dict[str, Any] = {
        "texts": len(records),
        "texts_mixed": sum(r.kind == "mixed" for r in records),
        "texts_clean": sum(r.kind == "clean" for r in records),
        "planted": sum(len(r.planted) for r in records),
        "detected": detected,
        "precision": ratio(correct, detected),
        "precision_same_type": ratio(same_type, detected),
        "false_positives_in_clean_texts": sum(fp["kind"] == "clean" for fp in false_positives),
        "per_type": per_type,
        "recall_per_locale": {loc: {t: ratio(c, n) for t, (n, c) in sorted(v.items())}
                              for loc, v in sorted(by_locale.items())},
        "misses": misses,
        "false_positives": false_positives,
    }
    checks = {k: (per_type.get(k, {}).get("recall") if k != "precision" else report["precision"])
              for k in OOD_TARGETS}
    report["targets"] = dict(OOD_TARGETS)
    report["meets_targets"] = all(v is not None and v >= OOD_TARGETS[k] for k, v in checks.items())
    return report


# ================================================================ runners


def evaluate_redactor(redactor: Any, records: Sequence[Record]) -> tuple[dict[str, Any], float]:
    """Redact every record with the product's ``PiiRedactor.redact``; returns the score and texts/s."""
    started = time.perf_counter()
    redactions = [redactor.redact(r.text) for r in records]
    seconds = time.perf_counter() - started
    report = score(records, [red.spans for red in redactions])
    return report, round(len(records) / seconds, 1)


def run_ood(splits: Sequence[str] = ("dev", "held_out"), tickets_per_locale: int = 40, clean_per_locale: int = 20,
            configurations: Sequence[str] = ("blank", "ner"), keep_examples: int = 40,
            echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Score each configuration of the product's redactor on each split; the same texts for every configuration.

    ``blank``: ``PiiRedactor(ner=False)`` (patterns and heuristics only); ``ner``: ``PiiRedactor()``, the
    product default, with the packaged spaCy NER for person names. Texts/s is measured per configuration on
    the same texts in the same process, so the two are comparable even on a busy machine.
    """
    from agenix_assets.core.pii import PiiRedactor

    redactors = {name: PiiRedactor(ner=(name == "ner")) for name in configurations}
    out: dict[str, Any] = {
        "command": "agenix bench pii --ood",
        "tickets_per_locale": tickets_per_locale,
        "clean_per_locale": clean_per_locale,
        "splits": {},
    }
    for split_name in splits:
        sp = SPLITS[split_name]
        records = generate_ood(sp, tickets_per_locale, clean_per_locale)
        split_out: dict[str, Any] = {"seed": sp.seed, "locales": list(sp.locales), "configurations": {}}
        for name, redactor in redactors.items():
            redactor.redact(records[0].text)  # warm-up: lazy imports and the first spaCy call
            report, rate = evaluate_redactor(redactor, records)
            report["texts_per_second"] = rate
            report["misses"] = report["misses"][:keep_examples]
            report["false_positives"] = report["false_positives"][:keep_examples]
            split_out["configurations"][name] = report
        out["splits"][split_name] = split_out
    # The verdict: the product's configuration (the last one listed, "ner" by default) on the last split.
    last = out["splits"][splits[-1]]["configurations"][configurations[-1]]
    out["meets_targets"] = last["meets_targets"]
    _echo_ood(out, echo)
    return out


def _echo_ood(out: dict[str, Any], echo: Callable[[str], None]) -> None:
    rows = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER/national", "PHONE_NUMBER/international", "IBAN_CODE",
            "CREDIT_CARD", "STREET_ADDRESS"]
    for split_name, split_out in out["splits"].items():
        configs = split_out["configurations"]
        echo(f"\n{split_name} split (seed {split_out['seed']}, {len(split_out['locales'])} locales)")
        echo(f"{'':<34}" + "".join(f"{name:>12}" for name in configs) + f"{'target':>10}")
        for row in rows:
            vals = "".join(f"{str(c['per_type'].get(row, {}).get('recall')):>12}" for c in configs.values())
            echo(f"{'recall ' + row:<34}{vals}{OOD_TARGETS[row]:>10}")
        echo(f"{'precision':<34}" + "".join(f"{str(c['precision']):>12}" for c in configs.values())
             + f"{OOD_TARGETS['precision']:>10}")
        echo(f"{'texts/s':<34}" + "".join(f"{c['texts_per_second']:>12}" for c in configs.values()))


def run_in_distribution(scale: str = "small", seed: int = 7, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The sample company's planted PII, redactor with the CRM contacts as deny list (in-distribution)."""
    import datetime as dt
    import tempfile

    from agenix_assets.core.pii import PiiRedactor, evaluate, load_evaluation_sample
    from agenix_assets.core.sample_data import generate_sample_company

    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        generate_sample_company(landing, scale=scale, seed=seed, as_of=dt.date(2026, 11, 1))
        sample = load_evaluation_sample(landing)
        redactor = PiiRedactor.from_contacts(sample["known_people"])
        started = time.perf_counter()
        report = evaluate(redactor, sample["texts"], sample["manifest"])
        seconds = time.perf_counter() - started
    report["texts_per_second"] = round(report["texts"] / seconds, 1)
    report["command"] = f"agenix bench pii --scale {scale} --seed {seed}"
    report["distribution"] = "in-distribution (sample company generator, CRM deny list)"
    rows = [("texts", report["texts"]), ("planted spans", report["planted"]),
            ("detected spans", report["detected"]),
            ("recall, structured PII (target 0.99)", report["recall_structured"]),
            ("recall, known-contact names (target 0.95)", report["recall_known_contact_names"]),
            ("recall, unknown persons", report["recall_unknown_persons"]),
            ("precision (target 0.9)", report["precision"]), ("texts/s", report["texts_per_second"])]
    rows += [(f"  {t}: recall / precision", f"{v['recall']} / {v['precision']}")
             for t, v in sorted(report["per_type"].items())]
    echo("in-distribution: the sample company's planted PII, CRM contacts as deny list")
    for name, value in rows:
        echo(f"{name:<45} {value}")
    return report


def write_json(report: dict[str, Any], path: Path, drop: Iterable[str] = ()) -> None:
    dropped = set(drop)
    path.write_text(json.dumps({k: v for k, v in report.items() if k not in dropped}, indent=2,
                               ensure_ascii=False) + "\n")



def run_before(commit: str, tickets_per_locale: int = 40, clean_per_locale: int = 20) -> dict[str, Any]:
    """The detector as it was at ``commit`` (its ``agenix_assets/core/pii.py``, default constructor), scored on
    the same splits: the figures before a change, by the same generator and scorer."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    source = subprocess.run(["git", "show", f"{commit}:agenix_assets/core/pii.py"], capture_output=True,
                            text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pii_before.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("pii_before", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["pii_before"] = module
        spec.loader.exec_module(module)
        redactor = module.PiiRedactor()
    out: dict[str, Any] = {"command": f"agenix bench pii --ood --before {commit}", "commit": commit}
    for split in ("dev", "held_out"):
        report, rate = evaluate_redactor(redactor, generate_ood(split, tickets_per_locale, clean_per_locale))
        out[split] = {"precision": report["precision"], "texts_per_second": rate,
                      "recall": {k: v["recall"] for k, v in report["per_type"].items()}}
    return out

