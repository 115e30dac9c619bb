"""The cheapest CPU answer tier: quote the retrieved sentence(s) that best match the question.

No generation, so no hallucination: the answer is one or two sentences copied from the passages, each followed by
``[n]``, the 1-based position of its passage in the retrieval result. Sentences and question are embedded with the
platform's sentence encoder (all-MiniLM-L6-v2) in one batched call; when no sentence reaches the similarity
threshold the answerer returns ``None`` and the caller says "I don't know".

No Dagster import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

__all__ = [
    "ExtractiveAnswer",
    "ExtractiveAnswerer",
    "Passage",
    "estimate_usage",
    "split_sentences",
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

    def answer(self, question: str, passages: Sequence[Any]) -> ExtractiveAnswer | None:
        """The best 1-2 sentences with ``[n]`` citations, or ``None`` when nothing reaches ``threshold``."""
        passages = [_as_passage(p) for p in passages]
        cands = self.candidates(passages)
        if not question.strip() or not cands:
            return None
        texts = [
            f"{passages[pi].title}: {sentence}" if self.use_titles and passages[pi].title else sentence
            for pi, _, sentence in cands
        ]
        sims, vecs = self.score(question, texts)
        order = np.argsort(-sims, kind="stable")
        best = int(order[0])
        if sims[best] < self.threshold:
            return None
        chosen = [best]
        floor = max(self.threshold, float(sims[best]) - self.second_margin)
        for j in order[1:]:
            if len(chosen) >= self.max_sentences or sims[j] < floor:
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
