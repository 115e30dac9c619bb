"""A use case's domain glossary: the words customers use, mapped to the words its knowledge base uses.

Customers ask "what's the FAD of the PC-5010?" or "how long is the guarantee?"; the manual says "free air
delivery" and "warranty". Neither the sentence encoder (all-MiniLM-L6-v2) nor BM25 knows that "FAD" is free air
delivery, and the extractive tier only quotes a sentence that holds a word of the question. The glossary closes
that gap the way search teams do it (Elasticsearch/OpenSearch synonym files): a version-controlled YAML file,
owned by the team that knows the domain, that the pipeline reads at its ``rewrite`` step.

    terms:
      - kb: [free air delivery]
        customer: [fad, air delivery, air output]

A question holding a customer phrase (its content words in any order, by 5-letter prefix; a phrase of one
content word or mostly function words, like "break in" or "how much does it pump", word for word) gets the
entry's KB words added to what is retrieved on and to the words the extractive tier looks for in a sentence;
the question itself (what an LLM reads, what is logged) is unchanged. Its content hash is part of the retrieval
configuration's, so a glossary edit is a new release candidate with its own evaluation.

No Dagster import.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field, field_validator

from agenix_assets.core.config import Strict, load_yaml_model

from .extractive import content_words

__all__ = ["Glossary", "GlossaryFile", "GlossaryTerm", "load_glossary", "use_case_glossary"]


class GlossaryTerm(Strict):
    kb: list[str] = Field(min_length=1)  # the knowledge base's word(s) for the concept
    customer: list[str] = Field(min_length=1)  # how customers say it

    @field_validator("kb", "customer")
    @classmethod
    def _phrases(cls, v: list[str]) -> list[str]:
        out = []
        for phrase in v:
            phrase = " ".join(str(phrase).lower().split())
            if not phrase:
                raise ValueError("an empty phrase")
            out.append(phrase)
        return out


class GlossaryFile(Strict):
    terms: list[GlossaryTerm] = Field(default_factory=list)


def _pattern(phrase: str) -> str:
    # Whole words; the last one may carry a plural ending; inner spaces match any run of spaces or hyphens.
    words = [re.escape(w) for w in phrase.split()]
    return r"(?<![\w-])" + r"[\s-]+".join(words) + r"(?:e?s)?(?![\w-])"


class _Entry(NamedTuple):
    loose: list[frozenset[str]]  # phrases matched by their content words, in any order
    literal: re.Pattern[str] | None  # phrases matched word for word
    kb: list[tuple[str, frozenset[str]]]  # the KB phrases and their content words


def _entry(term: GlossaryTerm) -> _Entry:
    # A phrase is matched by its content words (serving.extractive.content_words: stemmed, 5-letter prefixes, no
    # stopwords), in any order: "sounds like gravel" matches "it sounds like it's pumping gravel".
    # A phrase of one content word, or made mostly of function words ("how much does it pump": only "pump" is
    # left), is matched literally instead (whole words, a plural ending allowed): "break in" must not match
    # "if something breaks", nor "how much does it pump" every question naming a pump.
    loose, literal = [], []
    for phrase in term.customer + term.kb:
        words = frozenset(content_words(phrase))
        if len(words) >= 2 and 2 * len(words) >= len(phrase.split()):
            loose.append(words)
        else:
            literal.append(_pattern(phrase))
    return _Entry(loose, re.compile("|".join(literal), re.IGNORECASE) if literal else None,
                  [(kb, frozenset(content_words(kb))) for kb in term.kb])


class Glossary:
    def __init__(self, terms: Sequence[GlossaryTerm] = ()) -> None:
        self.terms = tuple(terms)
        self._entries = [_entry(t) for t in self.terms]

    @property
    def content_hash(self) -> str:
        data = json.dumps([t.model_dump() for t in self.terms], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def expansions(self, text: str) -> list[list[str]]:
        """One group per entry a phrase of which ``text`` holds (all its content words, a customer phrase or
        already a KB one): the entry's KB phrases that ``text`` does not already hold. In glossary order; empty
        groups are left out. A group is one concept: the extractive tier counts a sentence holding any of its
        words once."""
        have = content_words(text)
        lowered = text.lower()
        out: list[list[str]] = []
        for entry in self._entries:
            if any(p <= have for p in entry.loose) or (entry.literal is not None and entry.literal.search(lowered)):
                group = [kb for kb, words in entry.kb if not (words and words <= have)]
                if group:
                    out.append(group)
        return out


def load_glossary(path: Path | str | None) -> Glossary:
    """The glossary in ``path`` (None: an empty one). ConfigError naming the file, line and field when invalid."""
    if path is None:
        return Glossary()
    return Glossary(load_yaml_model(Path(path), GlossaryFile).terms)


def use_case_glossary(config_dir: Path | str, settings: Any) -> Glossary:
    """The glossary a use case's settings (``serving.config.UseCaseSettings``) name; an empty one when none."""
    return load_glossary(Path(config_dir) / settings.glossary if settings.glossary else None)
