"""Per-use-case guardrails of the AI gateway: run on every chat request, before and after the model.

Input (:meth:`Guardrails.check_input`), in this order, on the messages the client sent (call it before the
use case's own system prompt and retrieved context are added: those are trusted and are not scanned):

1. Tool restrictions: every tool in ``tools`` / ``tool_choice`` must be in the policy's ``allowed_tools``
   (default: none) -> rule ``tool_not_allowed``.
2. Prompt injection: named heuristic patterns with weights; the weights of the distinct patterns matched in
   one request add up, and a score at or above ``injection_threshold`` blocks (rule ``prompt_injection``) or,
   in ``flag`` mode, only records an event. Base64 payloads that come with a decode instruction are decoded
   and scanned as well.
3. Topics: ``blocked_topics`` (rule ``topic:<name>``); if ``allowed_topics`` is set, the last user message
   must match one of them (rule ``topic:off_topic``). Keywords match whole words, case-insensitively.
4. PII redaction with the platform's :class:`~agenix_assets.core.pii.PiiRedactor`, so no model ever sees it.
   All text of one request is redacted as one document, so a value gets the same placeholder in every
   message (``<PERSON_1>`` in the system message and in the third user turn).

Output (:meth:`Guardrails.check_output`): PII in the answer is masked (``redact``), refused (``block``, rule
``output_pii``) or left alone (``off``).

Events (:class:`GuardrailEvent`) carry rule names, pattern names and counts per entity type, never the
matched values, so they can go into the request log as they are.

Speed: Presidio costs ~0.1 ms on a short question and ~1 ms on a ticket-sized text. :class:`PiiPrescreen`
decides with a few compiled regexes and a token scan that mirror the candidate rules of every recognizer the
redactor runs whether a text can contain anything the redactor would report; only then is Presidio called.
All input guardrails on a short clean question take ~20 us after warm-up (the pre-screen ~5 us of it).

No Dagster import here; Presidio is imported when the redactor is first needed (:meth:`Guardrails.warm_up`).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

if TYPE_CHECKING:  # the redactor module is imported when the redactor is built
    from agenix_assets.core.pii import PiiRedactor

__all__ = [
    "INJECTION_PATTERNS",
    "GuardrailEvent",
    "GuardrailPolicy",
    "GuardrailViolation",
    "Guardrails",
    "InjectionMatch",
    "InputResult",
    "OutputResult",
    "PiiPrescreen",
    "TextsResult",
    "TopicRule",
    "scan_injection",
]

Role = Literal["system", "user", "assistant", "tool", "developer", "function"]


# ================================================================ configuration


def _keyword_regex(keywords: Iterable[str]) -> str | None:
    """One alternation of whole-word keywords; inner whitespace matches any run of whitespace."""
    alts = []
    for kw in sorted({" ".join(k.split()) for k in keywords if k and k.strip()}, key=len, reverse=True):
        alts.append(r"\s+".join(re.escape(w) for w in kw.split(" ")))
    if not alts:
        return None
    # (?<!\w)/(?!\w) rather than \b: a keyword may start or end with a non-word character ("c++", ".net")
    return r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)"


class TopicRule(BaseModel):
    """A topic: whole-word keywords and/or regular expressions (both case-insensitive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    keywords: list[str] = []
    patterns: list[str] = []

    _keyword_re: re.Pattern[str] | None = PrivateAttr(default=None)
    _pattern_res: tuple[re.Pattern[str], ...] = PrivateAttr(default=())

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", v or ""):
            raise ValueError(f"topic name {v!r} must be letters, digits, '_', '-' or '.' (it becomes the rule name)")
        return v

    @model_validator(mode="after")
    def _compile(self) -> TopicRule:
        if not any(k.strip() for k in self.keywords) and not self.patterns:
            raise ValueError(f"topic {self.name!r} has neither keywords nor patterns")
        kw = _keyword_regex(self.keywords)
        self._keyword_re = re.compile(kw, re.IGNORECASE) if kw else None
        compiled = []
        for p in self.patterns:
            try:
                compiled.append(re.compile(p, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"topic {self.name!r}: invalid pattern {p!r}: {exc}") from None
        self._pattern_res = tuple(compiled)
        return self

    def match(self, text: str) -> str | None:
        """What matched ("keyword" or "pattern <n>"), or None. Never returns the matched text."""
        if self._keyword_re is not None and self._keyword_re.search(text):
            return "keyword"
        for i, rx in enumerate(self._pattern_res):
            if rx.search(text):
                return f"pattern {i}"
        return None


class GuardrailPolicy(BaseModel):
    """The guardrails of one use case (``guardrails:`` in config/gateway/gateway.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_pii: Literal["redact", "off"] = "redact"
    prompt_injection: Literal["block", "flag", "off"] = "block"
    injection_threshold: float = Field(default=1.0, gt=0)
    blocked_topics: list[TopicRule] = []
    allowed_topics: list[TopicRule] = []
    allowed_tools: list[str] = []  # exact names or shell-style globs ("crm_*")
    output_pii: Literal["redact", "block", "off"] = "redact"
    # Messages scanned for injection and blocked topics. Assistant turns are the model's own earlier answers.
    inspect_roles: list[Role] = ["system", "user", "tool", "developer", "function"]

    @field_validator("blocked_topics", "allowed_topics")
    @classmethod
    def _unique_names(cls, v: list[TopicRule]) -> list[TopicRule]:
        names = [t.name for t in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate topic names {dupes}")
        return v

    @property
    def uses_pii(self) -> bool:
        return self.input_pii != "off" or self.output_pii != "off"

    def tool_allowed(self, name: str) -> bool:
        for pattern in self.allowed_tools:
            if pattern == name or (any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern)):
                return True
        return False


# ================================================================ results and errors


@dataclass
class GuardrailEvent:
    stage: Literal["input", "output"]
    rule: str  # "pii", "prompt_injection", "topic:<name>", "tool_not_allowed", "output_pii"
    action: Literal["redacted", "blocked", "flagged"]
    detail: dict[str, Any] = field(default_factory=dict)  # names and counts, never matched values

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "rule": self.rule, "action": self.action, "detail": self.detail}


class GuardrailViolation(Exception):
    """A request or answer a policy refuses. The gateway answers HTTP 400 with :meth:`error_body`."""

    status_code = 400

    def __init__(self, rule: str, message: str, events: list[GuardrailEvent]):
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.events = events

    def error_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "invalid_request_error", "code": "guardrail_blocked",
                          "param": self.rule}}


@dataclass
class InputResult:
    messages: list[dict[str, Any]]  # redacted copies; the caller's list and dicts are untouched
    events: list[GuardrailEvent]
    redacted_counts: dict[str, int]
    # Placeholders present in the redacted messages; pass to check_output so new values in the answer get
    # fresh numbers instead of colliding with these.
    placeholders: list[str] = field(default_factory=list)


@dataclass
class OutputResult:
    text: str
    events: list[GuardrailEvent]
    redacted_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class TextsResult:
    texts: list[str]
    events: list[GuardrailEvent]
    redacted_counts: dict[str, int]


# ================================================================ prompt injection


@dataclass(frozen=True)
class _InjectionRule:
    name: str
    weight: float
    triggers: tuple[str, ...]  # one of these is in the lower-cased form of every text the pattern matches
    regex: re.Pattern[str]
    as_written: bool = False  # for a pattern with a case-sensitive part: runs on the original text


def _rule(name: str, weight: float, triggers: str, pattern: str, as_written: bool = False) -> _InjectionRule:
    # The others run on lower-cased text without IGNORECASE, which costs Python's re 2-3x.
    flags = re.IGNORECASE if as_written else 0
    return _InjectionRule(name, weight, tuple(triggers.lower().split()), re.compile(pattern, flags), as_written)


# Strong signals weigh 1.0 (the default threshold), weak ones 0.5: two different weak signals in one request
# block. Every pattern needs an imperative aimed at the model or a chat-template artefact, so support
# questions that share words ("ignore a warning light", "enable developer mode on the HMI", "what are your
# instructions for cleaning the filter") pass. Patterns are written in lower case: they run on lowered text.
_INJECTION_RULES: tuple[_InjectionRule, ...] = (
    _rule("ignore_previous_instructions", 1.0, "ignor disregard forget skip overr bypass vergiss vergessen negeer",
          r"\b(?:ignore|disregard|forget|skip|override|overrule|bypass)\s+(?:(?:all|any|every|each|of|the|these|those)\s+)*"
          r"(?:previous|prior|preceding|above|earlier|foregoing|former|initial|original|old|existing|system|developer)"
          r"\s+(?:instructions?|prompts?|rules|directions|directives|guidelines|commands|constraints|programming)\b"
          r"|\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+(?:of\s+)?)?your\s+(?:\w+\s+)?"
          r"(?:instructions|rules|guidelines|programming|prompt|training|restrictions|filters|constraints|policies)\b"
          r"|\b(?:ignore|disregard|forget)\s+(?:all\s+(?:of\s+)?)?(?:the\s+)?(?:above|everything\s+(?:above|before))"
          r"\s*(?:[.,;:!]|and\b|$)"
          r"|\b(?:ignorier(?:e|en|t)?|vergiss|vergessen\s+sie)\s+(?:bitte\s+)?(?:alle\s+)?"
          r"(?:vorherigen|bisherigen|obigen|vorigen|früheren|deine|ihre)\s+(?:anweisungen|instruktionen|regeln|vorgaben)"
          r"|\bnegeer\s+(?:alle\s+)?(?:vorige|eerdere|bovenstaande|voorgaande)\s+(?:instructies|regels)"),
    _rule("ignore_all_instructions", 0.5, "ignore disregard forget",
          r"\b(?:ignore|disregard|forget)\s+(?:all|any)\s+(?:of\s+)?(?:the\s+)?"
          r"(?:instructions|rules|guidelines|restrictions)\b"),
    _rule("disregard_system_prompt", 1.0, "ignore disregard forget bypass discard",
          r"\b(?:ignore|disregard|forget|bypass|discard)\b[^.\n]{0,30}?\b(?:system|hidden|initial|developer)\s+"
          r"(?:prompt|message|instructions?)\b"),
    _rule("reveal_system_prompt", 1.0, "prompt instruction message repeat print output recite",
          r"\b(?:reveal|print|show|display|repeat|output|leak|dump|expose|recite|spell\s+out|write\s+out|tell\s+me|"
          r"give\s+me|share|paste|translate)\b[^.\n?]{0,40}?\b(?:your|the|its)\s+"
          r"(?:(?:full|entire|complete|exact|original|initial|hidden|secret|internal|first)\s+)*"
          r"(?:system\s+(?:prompt|message|instructions)|(?:initial|hidden|secret|original|internal|pre)[\s-]?"
          r"(?:prompt|instructions)|instructions\s+(?:above|you\s+were\s+given)|prompt\s+above)"
          r"|\bwhat\s+(?:is|are|was|were)\s+your\s+(?:system\s+prompt|(?:initial|original|hidden|secret)\s+"
          r"(?:prompt|instructions))"
          r"|\b(?:repeat|print|output|recite)\s+(?:all\s+|everything\s+|the\s+(?:text|words|content)\s+)"
          r"(?:above|before\s+this|so\s+far|verbatim)"),
    _rule("dan_jailbreak", 1.0, "DAN anything",  # "DAN" in capitals only: "Dan from maintenance" is a person
          r"\b(?:you\s+are|you're|act\s+as|become|pretend\s+to\s+be)\s+(?:now\s+)?(?-i:DAN)\b"
          r"|\bdo\s+anything\s+now\b|(?-i:\bDAN\b)\s+mode\b", as_written=True),
    _rule("developer_mode", 1.0, "mode",
          r"\b(?:god|jailbreak|unrestricted|unfiltered|uncensored|evil)\s+mode\b"
          r"|\bdeveloper\s+mode\s+(?:enabled|activated|output|response)\b"
          r"|\byou\s+are\s+(?:now\s+)?in\s+developer\s+mode\b"
          r"|\b(?:act|respond|answer|reply|behave)\s+(?:as|in|with|like)\s+(?:\w+\s+){0,3}?developer\s+mode\b"),
    _rule("roleplay_jailbreak", 1.0,
          "unrestrict unfilter uncensor jailbr amoral restriction rules filter guideline censor moral ethic limitation",
          r"\b(?:pretend|act|behave|roleplay|role-play|play\s+the\s+role)\b[^.\n]{0,60}?"
          r"\b(?:unrestricted|unfiltered|uncensored|jailbroken|amoral|(?:no|without\s+(?:any\s+)?)\s*"
          r"(?:restrictions|rules|filters|guidelines|censorship|morals|ethics|limitations))\b"),
    _rule("jailbreak_marker", 0.5, "jailbr character ethical moral",
          r"\bjailbr(?:eak|oken|eaking)\b|\bstay\s+in\s+character\b"
          r"|\b(?:no|without)\s+(?:ethical|moral)\s+(?:guidelines|constraints|restrictions|limits|boundaries)\b"),
    _rule("persona_switch", 0.5, "now longer",
          r"\byou\s+are\s+(?:now|no\s+longer)\b|\bfrom\s+now\s+on,?\s+(?:you|your|ignore|respond|answer|act)\b"
          r"|\byou\s+will\s+now\s+(?:act|behave|respond|pretend|answer)\b"),
    _rule("new_instructions", 0.5, "instructions prompt rules",
          r"\b(?:new|updated|revised|real|actual|secret|hidden)\s+(?:instructions|system\s+prompt|rules)\s*:"),
    _rule("chat_template_token", 1.0, "<| </s> inst] <<sys>> <</sys>> _of_turn>",
          r"<\|[a-z_]{2,30}\|>|</s>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>"),
    _rule("fake_role_header", 0.5, "system assistant developer",
          r"(?m:^[ \t]*(?:#{1,4}[ \t]*)?(?:system|assistant|developer)[ \t]*:)"),
)

# An encoded payload counts only together with an instruction to decode it, and only if it decodes to text
# (logs, hashes and serial numbers are common in support questions).
_B64_BLOB_RE = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_HEX_BLOB_RE = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){20,}|(?:\\x[0-9A-Fa-f]{2}){10,}")
_DECODE_TRIGGERS = ("decod", "base", "b64", "hex", "rot13", "decipher", "decrypt", "unscramble")
_DECODE_RE = re.compile(r"\b(?:decode[ds]?|decoding|base\s?64|b64|hex(?:adecimal)?|rot13|decipher|decrypt|unscramble)\b")
_INJECTION_WEIGHTS = {r.name: r.weight for r in _INJECTION_RULES} | {"encoded_payload": 1.0}
INJECTION_PATTERNS: tuple[str, ...] = tuple(_INJECTION_WEIGHTS)  # every pattern name an event can report

_ZERO_WIDTH_RE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def _normalise(text: str) -> str:
    """Undo cheap obfuscation: full-width letters, ligatures, zero-width and bidi characters."""
    if text.isascii():
        return text
    return _ZERO_WIDTH_RE.sub("", unicodedata.normalize("NFKC", text))


@dataclass
class InjectionMatch:
    patterns: list[str]  # pattern names, in INJECTION_PATTERNS order
    score: float


def _looks_base64(blob: str) -> bool:
    """Mixed case and digits: base64 of text always is, paths and long words are not."""
    return any(c.isupper() for c in blob) and any(c.islower() for c in blob) and any(c.isdigit() for c in blob)


def _printable(decoded: str) -> bool:
    """Readable text: a hash or binary data decodes to mostly control and replacement characters."""
    good = sum((ch.isprintable() and ch != "\ufffd") or ch in "\n\r\t" for ch in decoded)
    return len(decoded) >= 8 and good >= 0.95 * len(decoded)


def _decoded_payloads(text: str) -> list[str]:
    out = []
    for m in _B64_BLOB_RE.finditer(text):
        blob = m.group()
        if not _looks_base64(blob):
            continue
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue
        if _printable(decoded):
            out.append(decoded)
    for m in _HEX_BLOB_RE.finditer(text):
        digits = re.sub(r"[^0-9A-Fa-f]", "", m.group().replace("\\x", ""))
        decoded = bytes.fromhex(digits[: len(digits) // 2 * 2]).decode("utf-8", "replace")
        if _printable(decoded):
            out.append(decoded)
    return out


# Every trigger of every rule in one pass: a clean text costs this one scan and no rule runs.
_TRIGGER_RE = re.compile("|".join(sorted({re.escape(t) for r in _INJECTION_RULES for t in r.triggers}
                                         | {re.escape(t) for t in _DECODE_TRIGGERS}, key=len, reverse=True)))


def scan_injection(text: str, _depth: int = 0) -> set[str]:
    """Names of the injection patterns found in one text (empty set: nothing suspicious)."""
    text = _normalise(text)
    low = text.lower()
    if not _TRIGGER_RE.search(low):
        return set()
    found = set()
    for rule in _INJECTION_RULES:
        if any(t in low for t in rule.triggers) and rule.regex.search(text if rule.as_written else low):
            found.add(rule.name)
    if any(t in low for t in _DECODE_TRIGGERS) and _DECODE_RE.search(low):
        payloads = _decoded_payloads(text)  # only blobs that decode to text: hashes and binary data do not
        if payloads:
            found.add("encoded_payload")
            if _depth == 0:  # what the payload says counts too ("aWdub3Jl..." = "ignore all previous ...")
                for decoded in payloads:
                    found |= scan_injection(decoded, _depth + 1)
    return found


def _score(names: Iterable[str]) -> InjectionMatch:
    wanted = set(names)
    ordered = [n for n in INJECTION_PATTERNS if n in wanted]
    return InjectionMatch(ordered, round(sum(_INJECTION_WEIGHTS[n] for n in ordered), 4))


# ================================================================ PII pre-screen

# Recognizers whose candidate rules the pre-screen mirrors. A redactor with any other recognizer (a spaCy NER
# model, a recognizer added to core/pii.py later) disables the pre-screen: every text then goes to Presidio.
_SCREENED_RECOGNIZERS = frozenset({
    "OfflineEmailRecognizer", "PhoneRecognizer", "IbanRecognizer", "CreditCardRecognizer", "IpRecognizer",
    "UrlRecognizer", "StreetAddressRecognizer", "KnownPeopleRecognizer", "PersonHeuristicRecognizer",
    "NerPersonRecognizer", "CardNumberRecognizer",
})
_UPPER = "A-ZÀ-ÖØ-Þ\u0100-\u017f"  # covers the address recognizer's capital letters (with some lower case)
# Necessary conditions of the structured recognizers (core/pii.py and Presidio's patterns): each check is implied
# by every match of the recognizer(s) it stands for, so "no match" means "they find nothing". Over-matching
# only costs a Presidio call. Split by a character every match needs, so a plain question skips most of them.
_DIGIT_RE = re.compile(r"\d")
_DIGIT_LED_RE = re.compile(
    r"\d(?:(?:[ \t.\-/()]{0,4}\d){6}"         # 7+ digits: phone (national >= 7, +CC >= 8), credit card
    rf"|[A-Za-z]?,?[ ]+[{_UPPER}]"              # UK address: house number + capitalised street
    r"|\.\d{1,3}\.\d{1,3}\.\d)"                 # IPv4
    r"|(?<=[A-Z]{2})[0-9]{2}[ \-]?[A-Z0-9]{4}"   # IBAN (Presidio's pattern is upper case only)
)
_STREET_RE = re.compile(rf"[{_UPPER}](?:[^\W\d_]|-)*\.?,?[ ]+\d")  # street (maybe 'Str.', 'Via Roma,') + number
_DOT_RE = re.compile(r"(?i:[a-z0-9])\.(?i:[a-z]){2}|(?i:www)\d{0,3}\.")  # URL: label.tld, www.
_IPV6_RE = re.compile(r"(?:[0-9A-Fa-f]{1,4}:){6}")  # the forms without '::' have six hex groups


def _structured_candidate(text: str, street_lead: re.Pattern[str]) -> bool:
    if "@" in text or "://" in text or "::" in text:  # e-mail (Presidio's and the deny list's), URL, IPv6
        return True
    if _DIGIT_RE.search(text) and (_DIGIT_LED_RE.search(text) or _STREET_RE.search(text)
                                   or street_lead.search(text)):
        return True
    if "." in text and _DOT_RE.search(text):
        return True
    return ":" in text and _IPV6_RE.search(text) is not None


class PiiPrescreen:
    """Cheap test whether a text can contain anything the redactor reports.

    ``maybe(text)`` is False only when no recognizer of the redactor can produce a candidate: the structured
    types by :func:`_structured_candidate`, people by the rules of core/pii.py's person recognizers (a capitalised
    token followed by a capitalised token or a name particle, a title before a capitalised token, any token
    of a known contact's name or surname in any case, an '@' for the e-mail based guesses). Conservative by
    construction; tests check it against the platform's PII evaluation sample.
    """

    def __init__(self, redactor: PiiRedactor):
        # The person rules use the redactor's own word lists, so the two stay in step.
        from agenix_assets.core.pii import (
            _NAME_STOPWORDS,
            _PARTICLES,
            _TITLE_SET,
            _WORD_RE,
            STREET_TYPE_LEAD_RE,
            _folds,
        )

        self._stop, self._particles, self._titles = _NAME_STOPWORDS, _PARTICLES, _TITLE_SET
        self._street_lead = STREET_TYPE_LEAD_RE
        self._word_re, self._folds = _WORD_RE, _folds
        names = {getattr(r, "name", type(r).__name__) for r in redactor.analyzer.registry.recognizers}
        self.unscreened = sorted(names - _SCREENED_RECOGNIZERS)
        self.enabled = not self.unscreened
        heads: set[str] = set()
        known = getattr(redactor, "known_people", None)
        for matcher in (getattr(known, "names", None), getattr(known, "surnames", None)):
            index = getattr(matcher, "_index", None)
            if index is None and matcher is not None:
                self.enabled = False  # the deny list changed shape: do not guess
            for key in index or ():
                heads.add(key[0])
        self._known_heads = frozenset(heads)

    def maybe(self, text: str) -> bool:
        if not self.enabled:
            return True
        if not text or text.isspace():
            return False  # PiiRedactor.analyze returns nothing for blank text
        if _structured_candidate(text, self._street_lead):
            return True
        known, stop, titles, particles = self._known_heads, self._stop, self._titles, self._particles
        prev_end = -1
        prev_start_ok = prev_title = False
        for m in self._word_re.finditer(text):
            word = m.group()
            low = word.casefold()
            if known and (low in known or (not word.isascii() and any(f in known for f in self._folds(word)))):
                return True  # a known contact's name matches in any case and spelling
            cap = word[0].isupper() and not (len(word) > 1 and word.isupper())
            if prev_start_ok:
                gap = text[prev_end:m.start()]
                gap_ok = (gap.isspace() and "\n" not in gap) or (prev_title and gap.strip(" \t") in ("", "."))
                if gap_ok and ((cap and low not in stop) or low in particles):
                    return True
            prev_title = cap and low in titles
            prev_start_ok = cap and (low not in stop or prev_title)
            prev_end = m.end()
        return False


# ================================================================ the guardrails


def _default_redactor_factory() -> PiiRedactor:
    from agenix_assets.core.pii import PiiRedactor

    return PiiRedactor()


_PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*?_\d+>")
# Joins the texts of one request into one document for the redactor. Whitespace to every recognizer (no span
# crosses it) and never in real text; a blank line on both sides keeps names and addresses apart.
_SEP = "\n\n\x1e\n\n"
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


@dataclass
class _Segment:
    message: int
    part: int | None  # index into a content-parts list, None for string content
    role: str
    text: str


def _segments(messages: list[dict[str, Any]]) -> list[_Segment]:
    out: list[_Segment] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        role = str(msg.get("role") or "")
        content = msg.get("content")
        if isinstance(content, str):
            out.append(_Segment(i, None, role, content))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("text"), str) and \
                        part.get("type", "text") in _TEXT_PART_TYPES:
                    out.append(_Segment(i, j, role, part["text"]))
    return out


def _tool_names(tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[str]:
    names: list[str] = []
    for tool in tools or ():
        if not isinstance(tool, dict):
            names.append("<invalid>")
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else None
        name = (fn or {}).get("name") or tool.get("name")  # {"name": ...}: the legacy `functions` shape
        if not name:  # built-in tools ("web_search", "code_interpreter") have only a type
            name = tool.get("type") if tool.get("type") not in (None, "function") else "<unnamed>"
        names.append(str(name))
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function") if isinstance(tool_choice.get("function"), dict) else {}
        name = fn.get("name") or tool_choice.get("name")
        if name:
            names.append(str(name))
    return list(dict.fromkeys(names))


class Guardrails:
    """The guardrails of every use case. Thread-safe; one instance per gateway process."""

    def __init__(
        self,
        policies: Mapping[str, GuardrailPolicy],
        default: GuardrailPolicy | None = None,
        redactor_factory: Callable[[], PiiRedactor] = _default_redactor_factory,
    ):
        """
        :param policies: use case -> policy.
        :param default: for requests without a use case (a model named directly) and unknown use cases;
            without it, :class:`GuardrailPolicy`'s defaults (redact PII, block injection).
        :param redactor_factory: builds the :class:`PiiRedactor` (e.g. with the CRM contacts as deny list).
            Called once, on first use or in :meth:`warm_up` (importing Presidio takes seconds).
        """
        self.policies = dict(policies)
        self.default = default or GuardrailPolicy()
        self._factory = redactor_factory
        self._redactor: PiiRedactor | None = None
        self._prescreen: PiiPrescreen | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ setup

    def policy(self, use_case: str | None) -> GuardrailPolicy:
        if use_case is None:
            return self.default
        return self.policies.get(use_case, self.default)

    @property
    def redactor(self) -> PiiRedactor:
        if self._redactor is None:
            with self._lock:
                if self._redactor is None:
                    redactor = self._factory()
                    self._prescreen = PiiPrescreen(redactor)
                    self._redactor = redactor
        return self._redactor

    @property
    def prescreen(self) -> PiiPrescreen:
        self.redactor  # noqa: B018 - builds both
        assert self._prescreen is not None
        return self._prescreen

    def warm_up(self) -> None:
        """Build the redactor now and run it once (loads tldextract's suffix list, compiles patterns)."""
        if any(p.uses_pii for p in [self.default, *self.policies.values()]):
            self.redactor.redact("Warm-up: Anna Keller, anna.keller@example.com, +49 30 1234567, www.example.com.")

    # ------------------------------------------------------------ input

    def check_input(
        self,
        use_case: str | None,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> InputResult:
        """Run the input guardrails; returns redacted copies of ``messages`` or raises GuardrailViolation."""
        policy = self.policy(use_case)
        events: list[GuardrailEvent] = []

        # 1. tools
        names = _tool_names(tools, tool_choice)
        denied = [n for n in names if not policy.tool_allowed(n)]
        if denied:
            events.append(GuardrailEvent("input", "tool_not_allowed", "blocked",
                                         {"tools": denied, "allowed": list(policy.allowed_tools)}))
            scope = f"use case {use_case!r}" if use_case else "this request"
            raise GuardrailViolation("tool_not_allowed", f"Tool(s) not allowed for {scope}: {', '.join(denied)}.",
                                     events)

        segments = _segments(messages)
        inspected = [s for s in segments if s.role in policy.inspect_roles]

        # 2. prompt injection: distinct patterns over the whole request add up
        if policy.prompt_injection != "off":
            found: set[str] = set()
            hit_messages: list[int] = []
            for seg in inspected:
                hit = scan_injection(seg.text)
                if hit:
                    found |= hit
                    hit_messages.append(seg.message)
            if found:
                match = _score(found)
                if match.score >= policy.injection_threshold:
                    detail = {"patterns": match.patterns, "score": match.score,
                              "threshold": policy.injection_threshold, "messages": sorted(set(hit_messages))}
                    if policy.prompt_injection == "block":
                        events.append(GuardrailEvent("input", "prompt_injection", "blocked", detail))
                        raise GuardrailViolation(
                            "prompt_injection",
                            f"The request was blocked as a possible prompt injection ({', '.join(match.patterns)}).",
                            events)
                    events.append(GuardrailEvent("input", "prompt_injection", "flagged", detail))

        # 3. topics, on the original text
        if policy.blocked_topics:
            for seg in inspected:
                text = _normalise(seg.text)
                for topic in policy.blocked_topics:
                    how = topic.match(text)
                    if how:
                        events.append(GuardrailEvent("input", f"topic:{topic.name}", "blocked",
                                                     {"matched": how, "message": seg.message}))
                        raise GuardrailViolation(f"topic:{topic.name}",
                                                 f"The request touches a blocked topic ({topic.name}).", events)
        if policy.allowed_topics:
            last = max((s.message for s in segments if s.role == "user"), default=None)
            question = _normalise(" ".join(s.text for s in segments if s.message == last)) if last is not None else ""
            if not any(t.match(question) for t in policy.allowed_topics):
                events.append(GuardrailEvent("input", "topic:off_topic", "blocked",
                                             {"allowed": [t.name for t in policy.allowed_topics], "message": last}))
                raise GuardrailViolation("topic:off_topic",
                                         "The request is outside the topics this use case answers.", events)

        # 4. PII
        out = [_copy_message(m) for m in messages]
        counts: dict[str, int] = {}
        placeholders: list[str] = []
        if policy.input_pii == "redact" and segments:
            texts, counts, placeholders = self._redact_together([s.text for s in segments])
            changed = []
            for seg, new in zip(segments, texts):
                if new != seg.text:
                    if seg.part is None:
                        out[seg.message]["content"] = new
                    else:
                        out[seg.message]["content"][seg.part]["text"] = new
                    changed.append(seg.message)
            if counts:
                events.append(GuardrailEvent("input", "pii", "redacted",
                                             {"counts": counts, "messages": sorted(set(changed))}))
        return InputResult(out, events, counts, placeholders)

    def redact_texts(self, use_case: str | None, texts: list[str]) -> TextsResult:
        """PII redaction only, each text its own document (e.g. embedding inputs: a placeholder's number
        should not depend on the other inputs of the batch)."""
        policy = self.policy(use_case)
        if policy.input_pii == "off":
            return TextsResult(list(texts), [], {})
        out, counts = [], {}
        for text in texts:
            red, c, _ph = self._redact_together([text])
            out.append(red[0])
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
        events = [GuardrailEvent("input", "pii", "redacted", {"counts": counts})] if counts else []
        return TextsResult(out, events, counts)

    # ------------------------------------------------------------ output

    def check_output(self, use_case: str | None, text: str, placeholders: Iterable[str] = ()) -> OutputResult:
        """Scan the model's answer. ``placeholders``: those of the request (InputResult.placeholders), so a
        new value in the answer gets a fresh number. Raises GuardrailViolation when the policy is ``block``."""
        policy = self.policy(use_case)
        if policy.output_pii == "off" or not text:
            return OutputResult(text, [])
        if not self.prescreen.maybe(text):
            return OutputResult(text, [])
        if policy.output_pii == "block":
            spans = self.redactor.contains_pii(text)
            if not spans:
                return OutputResult(text, [])
            counts: dict[str, int] = {}
            for s in spans:
                counts[s.type] = counts.get(s.type, 0) + 1
            events = [GuardrailEvent("output", "output_pii", "blocked", {"counts": counts})]
            raise GuardrailViolation("output_pii", "The answer was withheld because it contains personal data.",
                                     events)
        red, counts, _ph = self._redact_together([text], seed=placeholders)
        events = [GuardrailEvent("output", "output_pii", "redacted", {"counts": counts})] if counts else []
        return OutputResult(red[0], events, counts)

    # ------------------------------------------------------------ redaction

    def _redact_together(self, texts: list[str], seed: Iterable[str] = ()) -> tuple[list[str], dict[str, int], list[str]]:
        """Redact texts as one document (same value -> same placeholder in all of them). Texts the pre-screen
        clears are left out; placeholders they hold still reserve their numbers (the redactor never reuses a
        placeholder already in the document). Returns (texts, counts per type, placeholders in the texts)."""
        prescreen = self.prescreen
        todo = [i for i, t in enumerate(texts) if prescreen.maybe(t)]
        existing = set(seed)
        for t in texts:
            if "<" in t:
                existing.update(_PLACEHOLDER_RE.findall(t))
        if not todo:
            return list(texts), {}, sorted(existing)
        parts = [texts[i] for i in todo]
        reserved = " ".join(sorted(existing))
        out = list(texts)
        counts: dict[str, int] = {}
        if any(_SEP in p for p in parts) or _SEP in reserved:
            redactions = [self.redactor.redact(p) for p in parts]  # cannot join safely: numbers per text
            new_texts = [r.text for r in redactions]
            for r in redactions:
                for k, v in r.counts.items():
                    counts[k] = counts.get(k, 0) + v
        else:
            doc = _SEP.join(([reserved] if reserved else []) + parts)
            red = self.redactor.redact(doc)
            pieces = red.text.split(_SEP)
            if reserved:
                pieces = pieces[1:]
            if len(pieces) != len(parts):  # pragma: no cover - a span never crosses the separator
                raise RuntimeError("PII redaction changed the message separator")
            new_texts = pieces
            counts = dict(red.counts)
            existing.update(red.placeholders)
        for i, new in zip(todo, new_texts):
            out[i] = new
            if "<" in new:
                existing.update(_PLACEHOLDER_RE.findall(new))
        return out, counts, sorted(existing)


def _copy_message(msg: Any) -> Any:
    """A copy the redaction may write into: the dict and a content-parts list (and its dicts) are new."""
    if not isinstance(msg, dict):
        return msg
    new = dict(msg)
    content = new.get("content")
    if isinstance(content, list):
        new["content"] = [dict(p) if isinstance(p, dict) else p for p in content]
    return new
