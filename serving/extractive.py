"""The cheapest CPU answer tier: quote the retrieved sentence(s) that best match the question.

No generation, so no hallucination: the answer is one or two sentences copied from the passages, each followed by
``[n]``, the 1-based position of its passage in the retrieval result. Sentences and question are embedded with the
platform's sentence encoder (all-MiniLM-L6-v2) in one batched call; when no sentence reaches the similarity
threshold the answerer returns ``None`` and the caller says "I don't know".

Similarity alone picks the wrong sentence in two ways customers hit (measured with customer-phrased questions,
``agenix bench answers``): a sentence about *another* product ("We are commissioning a new SC-5500 ...", when the
question names the PT-5500) and a sentence on the asked product that states a different attribute ("Keep the area
around the CP-1190 tidy", asked for its flow). So each sentence's similarity is adjusted (``SelectionRules``):

* product codes: a sentence (or, when it names none, its passage title) naming only *other* product codes than
  the question's is never quoted; naming the asked code adds a little;
* the asked attribute: content words of the question found in the sentence add up to ``lexical_weight``; a
  question asking for a quantity prefers sentences with a number, a "why" question sentences stating a cause,
  a "how do I fix" question sentences stating a remedy;
* a question is never an answer: sentences ending in "?" and ones holding redaction placeholders
  (``<PERSON_1>``: a customer's own words) are not quoted;
* a sentence that only names the product ("The TR-6530 has a net weight of 15.6 kg." for "what does a tr-6530
  cost?") is not quoted: it must hold a content word of the question or the kind of statement asked for;
* the asked attribute is a list of concepts: each content word of the question (Snowball-stemmed, cut to 5
  letters; words of the passage title name the product and do not count) and each group of KB words the use
  case's glossary adds for a customer phrase ("FAD" -> free air delivery), counted once however many of its
  words a sentence holds; a word the question negates ("without express") counts against a sentence.

No Dagster import.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

import numpy as np

__all__ = [
    "ExtractiveAnswer",
    "ExtractiveAnswerer",
    "Passage",
    "SelectionRules",
    "content_words",
    "estimate_usage",
    "product_codes",
    "split_sentences",
    "with_expansions",
    "word_count",
]


class SentenceEncoder(Protocol):
    """``agenix_assets.core.embedding.Embedder`` or ``agenix_assets.core.retrieval.SentenceTransformerEncoder``."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class Passage(NamedTuple):
    doc_id: str
    title: str
    text: str
    score: float = 0.0


@dataclass(frozen=True)
class ExtractiveAnswer:
    text: str
    # One per quoted sentence: {ref, doc_id, title, sentence_index, score}. ref is the [n] of the text (1-based
    # position of the passage in the input); sentence_index counts split_sentences(passage text) from 0.
    citations: list[dict[str, Any]]
    confidence: float
    usage: dict[str, int] = field(default_factory=dict)


# -- sentences -------------------------------------------------------------------------------------------------

# Words that end with a period without ending the sentence.
# fmt: off
_ABBREVIATIONS = frozenset(
    {
        "e.g", "i.e", "etc", "vs", "approx", "incl", "excl", "dr", "mr", "mrs", "ms", "prof", "inc", "ltd", "co", "corp",
        "no", "nr", "fig", "st", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
        "min", "max", "ca", "cf", "resp",
    }
)
# fmt: on
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_BLOCK_BREAK = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)|\n(?=\s*#)")
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
_LEADING_MARK = re.compile(r"^(?:#+|[-*•]|\d+[.)])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage: paragraphs, list items and headings are separate units; inside a unit a ``.``, ``!``
    or ``?`` followed by space and a capital/digit ends a sentence unless the word before is an abbreviation or an
    initial. Hard line wraps inside a paragraph are joined."""
    out: list[str] = []
    for block in _BLOCK_BREAK.split(text):
        block = _LEADING_MARK.sub("", _WS.sub(" ", block).strip())
        if not block:
            continue
        start = 0
        for m in _BOUNDARY.finditer(block):
            before = block[start : m.start()].rsplit(" ", 1)[-1].lower().rstrip(".")
            if m.group(0).startswith(".") and (before in _ABBREVIATIONS or len(before) == 1 and before.isalpha()):
                continue
            out.append(block[start : m.end()].strip())
            start = m.end()
        tail = block[start:].strip()
        if tail:
            out.append(tail)
    return out


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def estimate_usage(question: str, passages: Sequence[Any], answer: str | None) -> dict[str, int]:
    """OpenAI-style ``usage`` for a tier that runs no LLM: words stand in for tokens.

    prompt_tokens ~= words of the question and of every passage (what an LLM would have read), completion_tokens ~=
    words of the answer (0 when there is none).
    """
    prompt = word_count(question) + sum(word_count(_as_passage(p).text) for p in passages)
    completion = word_count(answer) if answer else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _as_passage(p: Any) -> Passage:
    if isinstance(p, Passage):
        return p
    if isinstance(p, Mapping):
        return Passage(str(p["doc_id"]), str(p.get("title") or ""), str(p["text"]), float(p.get("score") or 0.0))
    if isinstance(p, tuple | list):
        return Passage(str(p[0]), str(p[1] or ""), str(p[2]), float(p[3]) if len(p) > 3 and p[3] is not None else 0.0)
    return Passage(str(p.doc_id), str(getattr(p, "title", "") or ""), str(p.text), float(getattr(p, "score", 0.0)))


# -- selection rules -------------------------------------------------------------------------------------------

# A product code as customers type it: "GV-4150", "gv-4150", "gv4150" (2-4 letters, then 3-6 digits; not "of 100").
_CODE = re.compile(r"\b([A-Za-z]{2,4})-?(\d{3,6})\b")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*_\d+>")
# fmt: off
_STOPWORDS = frozenset(
    """a an the of on in at to for from by with and or but if is are was were be been being it its this that these
    those my our your their we i you he she they me us them what which who whom whose when where why how do does
    did doing done can could should would will shall may might must have has had having get got not no any some
    there here than then so too very just about into out up down over under again once more most other such only
    own same all both each few nor s t don now need needs please tell know want much many long often hi hello
    thanks thank new one time put putting just""".split()
)
# fmt: on
# (question cue, sentence cue): the kind of statement a kind of question asks for.
_INTENTS = (
    (re.compile(r"\b(why|cause[sd]?|causing|reason|behind|going on|wrong|culprit|most likely|to blame)\b"),
     re.compile(r"\b(cause[sd]?|because|due to|reason)\b")),
    (re.compile(r"\b(fix|fixing|repair|solve|remedy|cure|resolve|do about|what to do|get rid|"
                r"(should|do|can|must) (i|we) do|how (do|can|should) (i|we) (get|stop|make|sort))\b"),
     re.compile(r"\b(fix|fixes|remedy|solution|solve|to resolve)\b")),
    (re.compile(r"\b(how often|interval|frequency|how frequently)\b"),
     re.compile(r"\b(every|interval|per (day|week|month|year)|annually|daily|weekly|monthly)\b")),
)
_QUANTITY = re.compile(
    r"\b(how (many|much|long|often|heavy|big|far|fast|hot|cold|high|large|precise|accurate|strong|quick)|"
    r"what (torque|size|weight|pressure|temperature|speed|power|range|rating|interval|diameter|load|flow|capacity)|"
    r"max(imum)?|min(imum)?|rating|rated|range|limit|limits|torque|kw|bar|rpm|mm|kg|hours|days|months|"
    r"temperatures?|weigh|warranty|clearance|interval|accuracy|dn|ip|kv|distance|space|room|gap|diameter|width|"
    r"length|height|depth|size|capacity|load|speed|flow|power|ratio|voltage|percentage|percent|fee|period|"
    r"duration|when|soon|quickly|deadline|biggest|largest|highest|lowest|smallest|heaviest|fastest)\b"
)
# "without express", "non-standard", "not installed": the word after is what the customer does *not* ask about.
_NEGATED = re.compile(r"\b(?:without|non|not|no|except|excluding|other than)[\s-]+(\w+)", re.IGNORECASE)


def negated_words(text: str) -> set[str]:
    """Content words the question negates ("if I order without express" -> {"expre"})."""
    return {w for m in _NEGATED.finditer(text) for w in content_words(m.group(1))}


def without_negated(text: str) -> str:
    """``text`` without its negated words: what a glossary may expand."""
    return _NEGATED.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)], text)


# A stated quantity: a number standing on its own ("100 l/min", "2,750", "-40 °C"), not the digits of a part
# number ("CP-1190-SK9") or a code.
_QUANTITY_NUMBER = re.compile(r"(?<![\w-])[-+±]?\d+(?:[.,]\d+)*(?![\w-]*\d)(?!-)")


def product_codes(text: str) -> set[str]:
    """Product codes named in a text, canonical ("gv 4150" -> "GV4150")."""
    return {(a + b).upper() for a, b in _CODE.findall(text)}


_TRAILING_DIGITS = re.compile(r"(?<=[a-z])\d+$")


_STEMMERS = threading.local()


@lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    stemmer = getattr(_STEMMERS, "stemmer", None)
    if stemmer is None:  # PyStemmer objects are not thread-safe: one per thread
        import Stemmer

        stemmer = _STEMMERS.stemmer = Stemmer.Stemmer("english")
    return stemmer.stemWord(word)[:5]


def content_words(text: str) -> set[str]:
    """The words of ``text`` that say what it is about: lowercase, Snowball-stemmed and cut to 5 letters
    ("walking", "walks" -> "walk"; "temperatures" -> "tempe"), without stopwords, numbers and product codes."""
    # "IP67" is the word "ip" with a value: a question asking for the "IP class" holds "ip".
    words = {_TRAILING_DIGITS.sub("", w.lower()) for w in _WORD.findall(_CODE.sub(" ", text))}
    return {_stem(w) for w in words if w not in _STOPWORDS and not w.isdigit() and len(w) > 1}


@dataclass(frozen=True)
class SelectionRules:
    """How a sentence's similarity to the question is adjusted before the best one is chosen (see the module
    docstring). ``enabled=False`` is plain similarity, as before these rules."""

    enabled: bool = True
    other_product_penalty: float = 1.0  # effectively: never quote a sentence about another product
    same_product_bonus: float = 0.03
    lexical_weight: float = 0.15  # times the share of the question's content words the sentence holds
    intent_bonus: float = 0.1
    number_bonus: float = 0.06
    # A sentence is quoted only if it supports the question beyond naming the product: it holds one of the
    # question's content words, or the kind of statement asked for (a cause, a remedy, an interval, a quantity).
    # "what does a CP-1190 cost?" then gets no quote of "The CP-1190 has a net weight of 273 kg".
    require_support: bool = True
    # The words of a passage's title name the product ("pump" in "CP-9180 Centrifugal Process Pump Manual"), not
    # the asked attribute: sharing them is no support ("how much does a CP-9180 pump cost?" is not answered by
    # "The CP-9180 Centrifugal Process Pump has a flow rate of ...").
    title_words_support: bool = False
    # A stated quantity supports a "how much/how long/how big" question even when none of the question's words
    # is in the sentence: customers name attributes in words the manuals do not use ("how big is it across?" for
    # an outer diameter). False: only when the question names no attribute at all. Questions no figure answers
    # ("how much does it cost?") are the use case's ``out_of_scope`` rules' to refuse.
    quantity_alone_supports: bool = True

    def adjust(self, question: str, sentences: Sequence[str], titles: Sequence[str],
               expansions: Sequence[Sequence[str]] = ()) -> np.ndarray:
        """Per sentence: the amount added to its similarity (negative: less likely quoted); ``-inf``: never.

        The question's attribute is a list of concepts: each content word of the question, and each group of
        ``expansions`` (the knowledge base's words for a customer phrase, one glossary entry). A sentence shares
        a concept when it holds any of its words; a group counts once, however many of its words it holds."""
        out = np.zeros(len(sentences), dtype=np.float32)
        if not self.enabled:
            return out
        asked = product_codes(question)
        negated = negated_words(question)
        q_words = content_words(question) - negated
        concepts = [frozenset({w}) for w in sorted(q_words)]
        for group in expansions:
            words = frozenset(content_words(" ".join(group)))
            if words and words not in concepts:
                concepts.append(words)
        q_lower = question.lower()
        intents = [s_cue for q_cue, s_cue in _INTENTS if q_cue.search(q_lower)]
        wants_number = bool(_QUANTITY.search(q_lower))
        attr_by_title: dict[str, list[frozenset[str]]] = {}  # a passage's sentences share its title
        for i, (sentence, title) in enumerate(zip(sentences, titles, strict=True)):
            if sentence.rstrip().endswith("?") or _PLACEHOLDER.search(sentence):
                out[i] = -np.inf
                continue
            lowered = sentence.lower()
            attr = attr_by_title.get(title)
            if attr is None:
                named_words = frozenset() if self.title_words_support else content_words(title)
                attr = attr_by_title[title] = [c - named_words for c in concepts if c - named_words]
            s_words = content_words(sentence)
            shared = sum(1 for c in attr if c & s_words)
            cue = any(c.search(lowered) for c in intents)
            quantity = wants_number and bool(_QUANTITY_NUMBER.search(_CODE.sub(" ", sentence)))
            supported = shared or cue or (quantity and (self.quantity_alone_supports or not attr))
            if self.require_support and concepts and not supported:
                out[i] = -np.inf
                continue
            named = product_codes(sentence) or product_codes(title)
            if asked and named:
                if named & asked:
                    out[i] += self.same_product_bonus
                else:
                    out[i] -= self.other_product_penalty
            if attr:
                out[i] += self.lexical_weight * shared / len(attr)
            if negated & s_words:
                out[i] -= self.lexical_weight  # states what the customer said they do not ask about
            if cue:
                out[i] += self.intent_bonus
            if quantity:
                out[i] += self.number_bonus
        return out


def with_expansions(text: str, groups: Sequence[Sequence[str]]) -> str:
    """"FAD of the PC-5010? (free air delivery)": a question followed by the KB words of its customer words."""
    flat = list(dict.fromkeys(kb for group in groups for kb in group))
    return f"{text} ({'; '.join(flat)})" if flat else text


# -- the answerer ----------------------------------------------------------------------------------------------


class ExtractiveAnswerer:
    """Pick the 1-2 passage sentences most similar to the question.

    :param encoder: anything with ``encode(list[str]) -> (n, d) array`` (normalised or not: we normalise).
    :param threshold: minimum cosine similarity question-sentence for an answer. Calibrated on all-MiniLM-L6-v2
        (with titles): the sentence holding the answer scored 0.63-0.86 on our probes, sentences on the same topic
        that do not answer 0.35-0.73 (hence at most ``max_sentences`` and the margin), off-topic questions 0.14 at
        most.
    :param second_margin: a second sentence is added only if it scores within this margin of the best one.
    :param max_sentences: 1 or 2 (or more) quoted sentences.
    :param min_words: shorter fragments (headings, "See below.") are never quoted.
    :param max_candidates: at most this many sentences are embedded (in passage order), bounding latency.
    :param use_titles: embed ``"<title>: <sentence>"`` so sentences that say "it" still match a question naming
        the product (measured: "It has a warranty of 24 months." in "HX-200 pump manual" went from 0.49 to 0.83
        for "How long is the warranty on the HX-200 pump?"); the quoted text never includes the title.
    :param rules: the product / attribute / customer-voice adjustments (``SelectionRules()``); ``threshold``
        applies to the adjusted score of the chosen sentence.
    :param min_similarity: ... and its plain similarity must reach this (sentences on the question's topic score
        0.35 and up, off-topic ones 0.14 at most): "Tighten the foot mounting bolts of the CP-1190 to 35 Nm"
        scored 0.40 for "we are putting in a cp-1190, what torque do the bolts need?", and the rules lift it
        (asked product, "bolts", a stated quantity) above the threshold.
    :param embed_expansions: embed the question with its glossary expansions ("FAD of the PC-5010? (free air
        delivery)") rather than alone.
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        *,
        threshold: float = 0.45,
        second_margin: float = 0.08,
        max_sentences: int = 2,
        min_words: int = 4,
        duplicate_similarity: float = 0.9,
        max_candidates: int = 256,
        use_titles: bool = True,
        rules: SelectionRules | None = None,
        min_similarity: float = 0.35,
        embed_expansions: bool = True,
    ) -> None:
        if max_sentences < 1:
            raise ValueError("max_sentences must be at least 1")
        self.encoder = encoder
        self.threshold = threshold
        self.second_margin = second_margin
        self.max_sentences = max_sentences
        self.min_words = min_words
        self.duplicate_similarity = duplicate_similarity
        self.max_candidates = max_candidates
        self.use_titles = use_titles
        self.rules = rules if rules is not None else SelectionRules()
        self.min_similarity = min(min_similarity, threshold)
        self.embed_expansions = embed_expansions

    def candidates(self, passages: Sequence[Any]) -> list[tuple[int, int, str]]:
        """(passage position, sentence index within the passage, sentence) for every quotable sentence."""
        out: list[tuple[int, int, str]] = []
        for pi, p in enumerate(passages):
            for si, sentence in enumerate(split_sentences(_as_passage(p).text)):
                if word_count(sentence) >= self.min_words:
                    out.append((pi, si, sentence))
                    if len(out) >= self.max_candidates:
                        return out
        return out

    def score(self, question: str, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of each sentence to the question, and the normalised sentence vectors."""
        vecs = np.asarray(self.encoder.encode([question, *sentences]), dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs[1:] @ vecs[0], vecs[1:]

    def answer(self, question: str, passages: Sequence[Any],
               expansions: Sequence[Sequence[str]] = ()) -> ExtractiveAnswer | None:
        """The best 1-2 sentences with ``[n]`` citations, or ``None`` when nothing reaches ``threshold``.
        ``expansions``: the knowledge base's words for the customer's (the glossary's), embedded with the question
        and looked for in sentences."""
        passages = [_as_passage(p) for p in passages]
        cands = self.candidates(passages)
        if not question.strip() or not cands:
            return None
        texts = [
            f"{passages[pi].title}: {sentence}" if self.use_titles and passages[pi].title else sentence
            for pi, _, sentence in cands
        ]
        asked = with_expansions(question, expansions) if self.embed_expansions else question
        sims, vecs = self.score(asked, texts)
        ranked = sims + self.rules.adjust(question, [s for _, _, s in cands], [passages[pi].title for pi, _, _ in cands],
                                          expansions)
        order = np.argsort(-ranked, kind="stable")
        best = int(order[0])
        if not np.isfinite(ranked[best]) or ranked[best] < self.threshold or sims[best] < self.min_similarity:
            return None
        chosen = [best]
        floor = float(ranked[best]) - self.second_margin
        for j in order[1:]:
            if len(chosen) >= self.max_sentences or ranked[j] < floor or sims[j] < self.min_similarity:
                break
            if max(float(vecs[j] @ vecs[c]) for c in chosen) >= self.duplicate_similarity:
                continue  # the same fact twice (overlapping chunks, duplicated docs)
            chosen.append(int(j))
        if len({cands[c][0] for c in chosen}) == 1:
            chosen.sort(key=lambda c: cands[c][1])  # one passage: keep its reading order

        parts: list[str] = []
        citations: list[dict[str, Any]] = []
        for k, c in enumerate(chosen):
            pi, si, sentence = cands[c]
            p = passages[pi]
            # Cite once after a run of sentences from the same passage: "A. B. [2]", not "A. [2] B. [2]".
            same_as_next = k + 1 < len(chosen) and cands[chosen[k + 1]][0] == pi
            parts.append(sentence if same_as_next else f"{sentence} [{pi + 1}]")
            citations.append(
                {
                    "ref": pi + 1,
                    "doc_id": p.doc_id,
                    "title": p.title,
                    "sentence_index": si,
                    "score": round(float(sims[c]), 4),
                }
            )
        text = " ".join(parts)
        confidence = round(min(1.0, max(0.0, float(sims[best]))), 4)
        return ExtractiveAnswer(text, citations, confidence, estimate_usage(question, passages, text))
