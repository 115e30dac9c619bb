"""The RAG query path of a use case: retrieve from an index version, fill the versioned prompt, cite sources.

An index version's retrieval artifacts (exact dense index, BM25, chunk texts) are written by the Dagster
``vector_index`` asset under ``$AGENIX_HOME/index/<collection>``; the gateway loads them read-only (it never opens
Chroma's embedded store or DuckDB, so it runs beside Dagster and other readers). ``index_version: live`` is the
newest version whose artifacts are complete (folders are renamed into place whole). Loaded versions are cached;
a new version is loaded on first use and the older ones dropped.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agenix_assets.core.config import RagSettings, load_yaml_model
from agenix_assets.core.index import collection_name
from agenix_assets.core.rag import index_servable, load_chunk_texts, load_retriever, read_gates

from .config import UseCaseSettings
from .extractive import product_codes

DEFAULT_NAMESPACE = "agenix"


@dataclass
class Passage:
    chunk_id: str
    document_id: str
    title: str
    source: str
    section: str
    text: str
    score: float  # final ranking score
    relevance: float  # dense cosine similarity of query and chunk (calibrated enough for "nothing relevant")
    # Whether the passage is about the product the question names: True (its title or text names an asked product
    # code), False (it names only other codes), None (the question names none, or the passage names none).
    asked_product: bool | None = None

    @property
    def body(self) -> str:
        """The text without the heading-path line the chunker puts first (for quoting sentences)."""
        first, sep, rest = self.text.partition("\n")
        head = first.strip()
        if sep and head and (head == self.section or head in self.section or self.section.endswith(head)
                             or (self.title and head.startswith(self.title))):
            return rest.strip()
        return self.text

    def public(self, rank: int) -> dict[str, Any]:
        return {
            "rank": rank,
            "document_id": self.document_id,
            "title": self.title,
            "source": self.source,
            "section": self.section,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "relevance": round(self.relevance, 4),
        }


@dataclass
class LoadedIndex:
    collection: str
    version: int
    retriever: Any
    texts: dict[str, str]


class IndexUnavailable(Exception):
    pass


class UseCaseIndex:
    """Index versions of one use case, loaded on demand (thread-safe; retrieval runs in worker threads)."""

    def __init__(self, name: str, settings: UseCaseSettings, rag: RagSettings, index_root: Path, encoder: Any,
                 namespace: str = DEFAULT_NAMESPACE, keep_loaded: int = 2):
        self.name = name
        self.settings = settings
        self.rag = rag
        self.index_root = Path(index_root)
        self.encoder = encoder
        self.namespace = namespace
        self.keep_loaded = keep_loaded
        self._loaded: OrderedDict[str, LoadedIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._live_cache: tuple[float, int] | None = None
        prefix = collection_name(namespace, rag.use_case, 0)
        self._prefix = prefix[: -len("v0000")]
        self._pattern = re.compile(re.escape(self._prefix) + r"v(\d{4,})$")

    @classmethod
    def from_config(cls, name: str, settings: UseCaseSettings, config_dir: Path, index_root: Path,
                    encoder_for: Any) -> UseCaseIndex:
        """``encoder_for(quantize)`` gives the query encoder the use case's retrieval config asks for."""
        from agenix_assets.core.retrieval import RetrievalConfig

        rag = load_yaml_model(Path(config_dir) / settings.rag_config, RagSettings)
        quantize = RetrievalConfig.model_validate(dict(rag.retrieval)).query_quantization
        return cls(name, settings, rag, index_root, encoder_for(quantize))

    def available_versions(self) -> list[int]:
        if not self.index_root.is_dir():
            return []
        out = []
        for folder in self.index_root.iterdir():
            m = self._pattern.match(folder.name)
            if m and folder.is_dir() and (folder / "texts.jsonl").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def gates_passed(self, version: int) -> bool:
        """The version's verdict file lists every blocking check of the rag lane (chunks, embeddings, the version
        itself) and each one passed."""
        return index_servable(read_gates(self.index_root, collection_name(self.namespace, self.rag.use_case, version)))

    def live_versions(self) -> list[int]:
        return [v for v in self.available_versions() if self.gates_passed(v)]

    def resolve(self, index_version: int | str) -> int:
        if index_version == "live":
            # Scanning the folder and reading gate files costs ~0.1 ms: do it at most once a second.
            now = time.monotonic()
            if self._live_cache is not None and now - self._live_cache[0] < 1.0:
                return self._live_cache[1]
            versions = self.live_versions()
            if not versions:
                raise IndexUnavailable(f"use case {self.name!r} has no index version that passed its gates under "
                                       f"{self.index_root} yet (built: {self.available_versions()}; materialize its vector_index "
                                       "asset: its retrieval smoke test records the verdict)")
            self._live_cache = (now, versions[-1])
            return versions[-1]
        versions = self.available_versions()
        if int(index_version) not in versions:
            raise IndexUnavailable(f"use case {self.name!r}: index version {index_version} not found (available: {versions})")
        return int(index_version)

    def load(self, index_version: int | str) -> LoadedIndex:
        version = self.resolve(index_version)
        collection = collection_name(self.namespace, self.rag.use_case, version)
        with self._lock:
            got = self._loaded.get(collection)
            if got is not None:
                self._loaded.move_to_end(collection)
                return got
        retriever = load_retriever(self.index_root, collection, dict(self.rag.retrieval), self.encoder)
        loaded = LoadedIndex(collection, version, retriever, load_chunk_texts(self.index_root, collection))
        with self._lock:
            self._loaded[collection] = loaded
            while len(self._loaded) > self.keep_loaded:
                self._loaded.popitem(last=False)
        return loaded

    def retrieve(self, question: str, index_version: int | str, allowed_domains: tuple[str, ...] | None,
                 k: int | None = None) -> tuple[LoadedIndex, list[Passage]]:
        idx = self.load(index_version)
        k = k or self.settings.top_k
        # With authoritative sources, search a wider pool so a relevant manual or policy ranked below customers'
        # tickets still makes the top k (see ``authoritative_first``).
        pool = k * self.settings.authoritative_pool if self.settings.authoritative_sources else k
        hits = idx.retriever.search(question, k=pool, allowed_domains=allowed_domains)
        asked = product_codes(question)
        passages = []
        for h in hits:
            meta = dict(h.metadata or {})
            p = Passage(
                chunk_id=h.id,
                document_id=str(meta.get("document_id", "")),
                title=str(meta.get("title", "")),
                source=str(meta.get("source", "")),
                section=str(meta.get("section_path", "")),
                text=idx.texts.get(h.id, ""),
                score=float(h.score),
                relevance=float(h.features.get("dense", h.score)),
            )
            p.asked_product = about_asked_product(asked, p)
            passages.append(p)
        if pool > k:
            passages = authoritative_first(passages, self.settings.authoritative_sources, self.settings.min_relevance)
        return idx, passages[:k]

    def relevant(self, passages: list[Passage]) -> list[Passage]:
        """Passages worth putting in front of a model; empty means "I don't know".

        Of the passages above the relevance floor: when the question names a product and some passage is about it,
        passages about other products go (a small model states another product's number when it reads one); when
        a passage of an authoritative source (``authoritative_sources``: the manuals, not a customer's ticket) is
        relevant on its own, passages of other sources go. Retrieval order is kept."""
        if not passages or max(p.relevance for p in passages) < self.settings.min_relevance:
            return []
        floor = self.settings.min_relevance * 0.8
        return prefer_answering_passages([p for p in passages if p.relevance >= floor],
                                         self.settings.authoritative_sources, self.settings.min_relevance)

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._loaded)


def about_asked_product(asked: set[str], passage: Passage) -> bool | None:
    """True if the passage (its title, else its text) names one of the asked product codes, False if it names only
    others, None if either names none."""
    if not asked:
        return None
    named = product_codes(passage.title) or product_codes(passage.text)
    if not named:
        return None
    return bool(named & asked)


def authoritative_first(passages: list[Passage], authoritative: list[str] | tuple[str, ...],
                        min_relevance: float) -> list[Passage]:
    """Passages of an authoritative source that are relevant on their own, the asked product's first, ahead of the
    rest; retrieval order otherwise. A question worded like a customer's ticket ("how many days do I have to
    send something back?") retrieves tickets first, while the answer is in the returns policy."""
    def key(item: tuple[int, Passage]) -> tuple[int, int, int]:
        rank, p = item
        return (0 if p.source in authoritative and p.relevance >= min_relevance else 1,
                0 if p.asked_product else 1 if p.asked_product is None else 2, rank)

    return [p for _, p in sorted(enumerate(passages), key=key)]


def prefer_answering_passages(passages: list[Passage], authoritative: list[str] | tuple[str, ...],
                              min_relevance: float) -> list[Passage]:
    """The passages an answer should be made from (see ``UseCaseIndex.relevant``); never empty if ``passages``
    is not."""
    kept = passages
    if any(p.asked_product for p in kept):
        kept = [p for p in kept if p.asked_product is not False]
    if authoritative:
        docs = [p for p in kept if p.source in authoritative]
        if any(p.relevance >= min_relevance for p in docs):
            kept = docs
    return kept


_CITATION = re.compile(r"\[\d+\]")
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_WORDS = re.compile(r"\w+")


def _numbers(text: str) -> set[str]:
    """Every number in a text, as written without separators ("1,200" -> "1200") and as its digit runs."""
    out: set[str] = set()
    for m in _NUMBER.finditer(_CITATION.sub(" ", text)):
        parts = re.split(r"[.,:/]", m.group(0))
        out.add("".join(parts))
        out.update(parts)
    return out


def grounding_problem(answer: str, question: str, passages: list[Passage]) -> str | None:
    """Why a generated answer cannot be trusted, or None. Cheap checks a small model fails in practice: an empty
    answer, the question repeated back, or a number that is neither in the retrieved context nor in the question
    (a made-up quantity is the most harmful hallucination in support answers)."""
    text = _CITATION.sub(" ", answer).strip()
    if not _WORDS.search(text):
        return "empty answer"
    words = _WORDS.findall(text.lower())
    asked = set(_WORDS.findall(question.lower()))
    if len(words) >= 4 and sum(w in asked for w in words) / len(words) >= 0.8:
        return "repeats the question"
    if text.rstrip().endswith("?"):
        return "answers with a question"
    allowed = _numbers(question)
    for p in passages:
        allowed |= _numbers(p.text)
    invented = sorted({"".join(re.split(r"[.,:/]", m.group(0))) for m in _NUMBER.finditer(text)} - allowed)
    if invented:
        return f"number(s) not in the context: {', '.join(invented[:5])}"
    return None
