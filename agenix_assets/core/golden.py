"""Golden sets: the questions, answers and conversations a use case's releases are evaluated against.

A golden set is one YAML file per use case (config/golden/<use case>.yaml for your own documents; the sample
generator writes its own to landing/_manifest/golden/). It holds three lists, each optional, at least one given:

* ``queries``: retrieval questions with the documents they must find. The retrieval smoke test (blocking check of
  the vector index, core/rag.py ``smoke_test``) asks these. This is the original format of the file.
* ``items``: question/answer items (:class:`GoldenItem`) with the facts a right answer states, the documents those
  facts come from, whether the knowledge base can answer at all, the split (``dev``: what answer code may be tuned
  on; ``holdout``: what it is measured on) and the phrasing (the generator's own wording or a customer's paraphrase).
* ``conversations``: multi-turn dialogues (:class:`GoldenConversation`), each turn with what its answer must include,
  must not include, must refuse or must cite.

A file with only ``queries`` still loads: each query becomes an item (its ``answer`` the one expected fact), and a
file with only ``items`` gives the smoke test the answerable items that name documents.

:func:`import_beir` reads a retrieval benchmark in the BEIR format (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)
into retrieval-only items: expected documents, no expected facts.

Every loader error is a :class:`~agenix_assets.core.config.ConfigError` naming the file, the line and the field.
No Dagster import here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .config import ConfigError, Strict, load_yaml_model

__all__ = [
    "ConversationTurn",
    "GoldenConversation",
    "GoldenItem",
    "GoldenQuery",
    "GoldenSuite",
    "TurnExpectation",
    "import_beir",
    "load_golden",
]

Split = Literal["dev", "holdout"]
Phrasing = Literal["generator", "paraphrase"]


class GoldenQuery(Strict):
    """A retrieval question: one of ``expected_documents`` must be among the top results (the smoke test)."""

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    expected_documents: list[str] = Field(min_length=1)
    answer: str | None = None


class GoldenItem(Strict):
    """One question and what a right answer to it holds.

    ``expected_facts``: strings a right answer states (numbers and units as the document states them; see
    core/evaluation.py ``fact_present``); empty for an unanswerable item and for a retrieval-only one (BEIR).
    ``expected_documents``: the documents (``document_id`` as indexed) that state the facts.
    ``answerable``: False when the knowledge base does not hold the answer, so the right answer is a refusal.
    ``split``: ``dev`` items may be looked at while tuning answer code; ``holdout`` items only measure it.
    ``phrasing``: ``generator`` when asked in the words the document generator used, ``paraphrase`` when asked
    as a customer would. ``fact_key``: the fact manifest's key (``GV-4150.install.run_in``), when there is one.
    """

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    expected_facts: list[str] = Field(default_factory=list)
    expected_documents: list[str] = Field(default_factory=list)
    answerable: bool = True
    split: Split = "dev"
    phrasing: Phrasing = "generator"
    fact_key: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> GoldenItem:
        if any(not f.strip() for f in self.expected_facts):
            raise ValueError("expected_facts must not hold empty strings")
        if not self.answerable and self.expected_facts:
            raise ValueError("an unanswerable item (answerable: false) has no expected_facts")
        if self.answerable and not (self.expected_facts or self.expected_documents):
            raise ValueError("an answerable item needs expected_facts or expected_documents")
        return self


class TurnExpectation(Strict):
    """What the answer to one conversation turn must hold.

    ``must_include``: facts the answer states (compared like expected facts); ``must_not_include``: strings it must
    not contain (e.g. another product's figure); ``must_refuse``: the answer is the use case's no-answer text;
    ``must_cite``: document ids the answer must have been generated from.
    """

    must_include: list[str] = Field(default_factory=list)
    must_not_include: list[str] = Field(default_factory=list)
    must_refuse: bool = False
    must_cite: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TurnExpectation:
        if self.must_refuse and (self.must_include or self.must_cite):
            raise ValueError("a turn that must_refuse cannot also must_include or must_cite")
        return self


class ConversationTurn(Strict):
    user: str = Field(min_length=1)
    expect: TurnExpectation = TurnExpectation()


class GoldenConversation(Strict):
    """A multi-turn conversation: the turns are sent in order, each with the whole history before it."""

    id: str = Field(min_length=1)
    turns: list[ConversationTurn] = Field(min_length=1)
    split: Split = "dev"
    description: str = ""


class GoldenSuite(Strict):
    """A use case's golden set: retrieval ``queries``, QA ``items`` and ``conversations`` (see the module doc)."""

    use_case: str = Field(min_length=1)
    description: str = ""
    queries: list[GoldenQuery] = Field(default_factory=list)
    items: list[GoldenItem] = Field(default_factory=list)
    conversations: list[GoldenConversation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> GoldenSuite:
        if not (self.queries or self.items or self.conversations):
            raise ValueError("a golden set needs at least one of queries, items or conversations")
        for name, ids in (("queries", [q.id for q in self.queries]), ("items", [i.id for i in self.items]),
                          ("conversations", [c.id for c in self.conversations])):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {name} ids: {dupes}")
        # The original format: queries only. Each becomes an item, its answer the one expected fact.
        # (object.__setattr__: the model is frozen, and this completes it while it is being built.)
        if self.queries and not self.items:
            object.__setattr__(self, "items", [
                GoldenItem(id=q.id, question=q.question, expected_documents=list(q.expected_documents),
                           expected_facts=[q.answer] if q.answer else []) for q in self.queries])
        # Items only: the smoke test asks the answerable items that name their documents.
        elif self.items and not self.queries:
            object.__setattr__(self, "queries", [
                GoldenQuery(id=i.id, question=i.question, expected_documents=list(i.expected_documents),
                            answer=i.expected_facts[0] if len(i.expected_facts) == 1 else None)
                for i in self.items if i.answerable and i.expected_documents])
        return self

    def select(self, split: Split | None = None, phrasing: Phrasing | None = None) -> list[GoldenItem]:
        """The items of one split and/or phrasing (None: any)."""
        return [i for i in self.items if (split is None or i.split == split)
                and (phrasing is None or i.phrasing == phrasing)]


def load_golden(path: Path, use_case: str | None = None) -> GoldenSuite:
    """Read a golden-set YAML file; errors name the file, line and field. ``use_case``: the one it must be for."""
    suite = load_yaml_model(Path(path), GoldenSuite)
    if use_case is not None and suite.use_case != use_case:
        raise ConfigError(f"{path}: use_case: expected {use_case!r}, got {suite.use_case!r}")
    return suite


# ---------------------------------------------------------------- BEIR


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/)")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            for name in fields:
                value = row.get(name)
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError(f"{path}:{n}: {name}: a non-empty string is required (got {value!r})")
            rows.append((n, row))
    return rows


def import_beir(folder: Path, split: str = "test", limit: int | None = None, use_case: str = "beir") -> GoldenSuite:
    """A BEIR retrieval set as retrieval-only golden items (no expected facts).

    Reads ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
    ``qrels/<split>.tsv`` (header, then ``query-id``, ``corpus-id``, ``score``). Each query with at least one
    judged document of score > 0 becomes an item whose ``expected_documents`` are those corpus ids, in qrels order;
    queries without judgements in the split are skipped. ``limit``: the first n such queries, in qrels order.
    Every qrels row must name a query and a corpus document that exist; errors name file, line and field.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        present = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise ConfigError(f"{qrels_path}: file not found (splits in this folder: {present or 'none'})")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    corpus_ids = {row["_id"] for _n, row in _read_jsonl(folder / "corpus.jsonl", ("_id",))}
    queries: dict[str, str] = {}
    for n, row in _read_jsonl(folder / "queries.jsonl", ("_id", "text")):
        if row["_id"] in queries:
            raise ConfigError(f"{folder / 'queries.jsonl'}:{n}: _id: duplicate query id {row['_id']!r}")
        queries[row["_id"]] = row["text"]

    relevant: dict[str, list[str]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ConfigError(f"{qrels_path}:1: header: expected 'query-id<TAB>corpus-id<TAB>score', got {header!r}")
        for row in reader:
            n = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise ConfigError(f"{qrels_path}:{n}: expected 3 tab-separated fields, got {len(row)}: {row!r}")
            qid, did, score_text = (x.strip() for x in row)
            try:
                score = int(score_text)
            except ValueError:
                raise ConfigError(f"{qrels_path}:{n}: score: expected an integer, got {score_text!r}") from None
            if qid not in queries:
                raise ConfigError(f"{qrels_path}:{n}: query-id: {qid!r} is not in queries.jsonl")
            if did not in corpus_ids:
                raise ConfigError(f"{qrels_path}:{n}: corpus-id: {did!r} is not in corpus.jsonl")
            if score > 0:
                docs = relevant.setdefault(qid, [])
                if did not in docs:
                    docs.append(did)
    if not relevant:
        raise ConfigError(f"{qrels_path}: no query has a relevant document (score > 0)")
    selected = list(relevant.items())[:limit] if limit else list(relevant.items())
    items = [GoldenItem(id=qid, question=queries[qid], expected_documents=docs) for qid, docs in selected]
    return GoldenSuite(use_case=use_case, description=f"BEIR {folder.name}, split {split}", items=items)
