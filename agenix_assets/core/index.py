"""Versioned, immutable vector indexes on Chroma. No Dagster import.

Every index version is its own Chroma collection, ``<namespace>.<use case>.v<NNNN>`` (e.g.
``agenix.support-assistant.v0007``); a version is never modified after it is marked ready. Collection metadata
records: agenix_namespace, use_case, version, parent_version (absent for the first), status, created_at, ready_at,
heartbeat_at, embedder_id, dimension, added/kept/removed/total, fingerprint, text_storage, build_id. HNSW space is
cosine. Each record has the chunk's metadata plus ``content_hash``; its text is in the record metadata under
``TEXT_KEY`` (default) or, for ``text_storage="document"`` and versions built before that option, the Chroma document.

Lifecycle
---------
``build_version`` creates the next version with status ``"building"``, copies the parent's vectors for unchanged
chunks (same chunk_id and content_hash) batch by batch, embeds the new or changed chunks through the caller's
``embed`` callable, and only when every record is in flips the status to ``"ready"`` (one metadata update). Readers
resolve the live version as *the newest ready version*, so they see either the old or the new version, never a
half-built one. A build that raises marks its collection ``"failed"``; a killed build leaves it ``"building"``. Both
are debris: the previous version stays live, and the next ``build_version`` (and ``gc``) deletes the debris.

Layered versions
----------------
Copying every vector into a new HNSW graph makes each version cost O(index size), however small the change: at
~200k chunks that is minutes (HNSW insertion, ~1,100 vectors/s here). So a version is either

- ``full``: its collection holds every record (the first version, a change of embedder, and every compaction), or
- ``delta``: its collection holds only the records that are new or re-embedded, plus carried vectors whose text or
  metadata changed. The unchanged records stay in the collections of its ``layers`` (version numbers, base first,
  itself last, in the collection metadata), and every record of an earlier layer that the version replaces or
  drops is *masked*: the companion collection ``<collection>.mask`` (``mask_collection_name``) holds one record
  per mask, id ``<layer>:<chunk_id>``, with a 1-d placeholder vector; metadata ``masked`` counts them.

Both are immutable once ready; a delta build writes its masks before the status flip, so a killed one is debris
like any other. ``query`` searches each layer for enough results to make up for that layer's masks (growing the
request while masked hits crowd out the top k), drops masked ones and merges by score; ``get_all`` and ``ids``
read layer by layer. A build becomes a full copy (compaction) when the chain would exceed ``max_layers``, or when
the records outside the base layer plus the masks would exceed ``max_overlay_fraction`` of the version; so the
layers a reader merges stay few and mostly unmasked. ``gc`` never deletes a version that a retained version reads
as a layer; it goes once no retained version needs it. Direct Chroma readers of a delta collection see only its
own records: read versions through this store.

If the input is identical to the live version (same fingerprint over chunk ids, content hashes, texts, metadata and
the same embedder id), ``build_version`` creates nothing and returns the live version unchanged.

Version numbers: the next number is one past the highest existing collection, debris included; the live version
is always the highest ready number. A number whose failed build was already deleted by ``gc`` can be used again.

Chroma notes (chromadb 1.5): ``collection.modify(metadata=...)`` *replaces* the whole metadata dict (a ``None`` value
wipes it), so status flips always write the full dict. ``get(ids=...)`` returns records in storage order and silently
omits unknown ids; it is re-ordered here. In cosine space Chroma re-normalises vectors on ``add``, so a carried
vector can differ from its parent's copy by a few float32 ulp (max |diff| ~1.5e-8 per copy, converging after a few
copies); scores are unaffected. ``add`` of an existing id is silently ignored (no update). Record metadata
must be a non-empty dict of str/int/float/bool (or lists of them); ``None`` is rejected. Where-filters with more than
one key need ``$and``; ``query`` adds it. Batches are capped at ``client.get_max_batch_size()`` (5461 in 1.5.9).

Carry-forward speed (chromadb 1.5.9, 2 shared cores; ``agenix bench index-copy`` compares the settings side by side)
-----------------------------------------------------------------------------------------------------------------
Copying a record into a new collection is one call into Chroma's Rust ``add``: a write-ahead-log round trip through
SQLite, up to three SQLite statements (record, metadata rows, full-text document) and one HNSW insertion. Chroma's ``add``
holds the GIL throughout, so in embedded mode nothing overlaps with it. What this module controls, and why:

- HNSW construction parameters, fixed per collection at creation (``HNSW_DEFAULTS``, overridable per store). Insert
  cost is mostly distance computations (SSE, no AVX in the wheel), roughly proportional to ``ef_construction``; at
  100k vectors 64 instead of Chroma's 100 costs 0.73x the CPU. Lower values or a smaller ``max_neighbors`` (M)
  leave clusters of similar chunks unreachable: on the clustered benchmark at 100k, recall@10 vs exact search with
  ef_search 200 was 0.998 for ef_construction 64, 0.974 for 48, 0.93 for 32 with M 24 (0.85 for 32 at ef_search
  100). ``ef_search`` 200 (Chroma: 100) removes the queries that miss their cluster entirely, for ~1 ms per query. ``ef_search`` is read
  when a process loads the index (``modify()`` does not change an index already loaded), so it too is set at
  creation and the version stays immutable. ``num_threads`` and ``batch_size`` are Python-era settings that the
  Rust HNSW drops (insertion uses a rayon pool of all cores); they are rejected here so nobody tunes a no-op.
  Nothing is inherited from the parent: each version gets the store's parameters (``collection.configuration_json``).
- Copy batch size: the HNSW segment persists (writes the graph, pickles the whole id map, fsyncs) after every ``add``
  that brings ``sync_threshold`` (default 1000) or more records, so batches of 1000 persist 100 times for 100k
  vectors, with pickling that grows with the index. Copies use the largest batch Chroma accepts (1.34x faster wall
  at 100k, same parameters). Do not raise ``sync_threshold`` above the batch: the local compactor then re-reads
  every log record since the last persist on each ``add``, which is slower still.
- Text layout: a Chroma document is also indexed by SQLite FTS5 with the trigram tokenizer (about one index entry per
  character) and stored twice; for 200-token chunks that made copies 1.46x slower (CPU) than keeping the text in the
  record metadata, which ``text_storage="metadata"`` (the default) does. Nothing here uses ``where_document``;
  query-time retrieval reads its own BM25/numpy artifacts.
- The parent's next batch is read in a thread while the current one is added (about 5-10% in server mode; neutral
  in embedded mode). ``fork()`` (copy-on-write collections) is not available outside Chroma Cloud: local and server
  both refuse it.

Net at 100k 384-d vectors with 200-token texts, 1% changed: 1.86x less CPU than before (Chroma defaults, batches of
1000, documents), 3.1x less wall time on the shared machine. These settings are what a full copy (the first version,
a compaction) costs; a delta version (above) copies nothing it does not change: at 60k vectors with 1% changed,
2.4 s instead of 55 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402
from chromadb.errors import NotFoundError  # noqa: E402

log = logging.getLogger(__name__)

STATUS_BUILDING = "building"
STATUS_READY = "ready"
STATUS_FAILED = "failed"
CONTENT_HASH_KEY = "content_hash"  # stored in every record's metadata; the carry-forward diff reads it
TEXT_KEY = "agenix_text"  # the chunk text, in record metadata when text_storage="metadata" (never returned as such)
TextStorage = Literal["metadata", "document"]
LAYOUT_FULL = "full"  # the version's collection holds every record
LAYOUT_DELTA = "delta"  # it holds what changed; the rest is read from the collections of its layers
MASK_SUFFIX = ".mask"
_NAME_OK = re.compile(r"[^a-zA-Z0-9._-]+")
_SCHEMA = 1

# HNSW parameters of every new version's collection (see "Carry-forward speed" above). Chroma's own defaults are
# ef_construction=100, max_neighbors=16, ef_search=100. The space is always cosine: scores are 1 - cosine distance.
CHROMA_HNSW_DEFAULTS: dict[str, Any] = {
    "space": "cosine",
    "ef_construction": 100,
    "max_neighbors": 16,
    "ef_search": 100,
}
HNSW_DEFAULTS: dict[str, Any] = {"space": "cosine", "ef_construction": 64, "max_neighbors": 16, "ef_search": 200}
_HNSW_KEYS = {"space", "ef_construction", "max_neighbors", "ef_search", "sync_threshold", "resize_factor"}


# ---------------------------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------------------------


def chroma_settings() -> Settings:
    return Settings(anonymized_telemetry=False, allow_reset=False)


def chroma_client(
    mode: Literal["embedded", "server"],
    path: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> chromadb.ClientAPI:
    """``embedded``: PersistentClient on ``path`` (one process only); ``server``: HttpClient to ``chroma run``.

    Always open embedded clients through here: Chroma keeps one system per path per process and refuses a second
    client on the same path with different Settings.
    """
    if mode == "embedded":
        if path is None:
            raise ValueError("embedded mode needs a path")
        Path(path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings())
    if mode == "server":
        return chromadb.HttpClient(host=host, port=int(port), settings=chroma_settings())
    raise ValueError(f"mode must be 'embedded' or 'server', got {mode!r}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ChromaServer:
    """A ``chroma run`` subprocess (tests, local demos). Use as a context manager or call ``stop()``."""

    path: Path
    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @classmethod
    def start(cls, path: Path, port: int | None = None, host: str = "127.0.0.1", timeout: float = 30.0) -> ChromaServer:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        port = port or free_port(host)
        exe = Path(sys.executable).with_name("chroma")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "chromadb.cli.cli"]
        cmd += ["run", "--path", str(path), "--host", host, "--port", str(port)]
        log_path = path.parent / f"chroma-{port}.log"
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        with log_path.open("wb") as fh:
            process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        server = cls(path=path, port=port, host=host, process=process, log_path=log_path)
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
                raise RuntimeError(f"chroma server exited with {self.process.returncode}:\n{tail}")
            try:
                chroma_client("server", host=self.host, port=self.port).heartbeat()
                return
            except Exception as exc:  # connection refused while starting
                last = exc
                time.sleep(0.1)
        raise TimeoutError(f"chroma server on {self.host}:{self.port} not ready after {timeout}s: {last}")

    def client(self) -> chromadb.ClientAPI:
        return chroma_client("server", host=self.host, port=self.port)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def __enter__(self) -> ChromaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class IndexChunk:
    chunk_id: str
    content_hash: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexVersion:
    use_case: str
    version: int
    collection: str
    parent_version: int | None
    status: str
    created_at: str
    embedder_id: str
    added: int
    kept: int
    removed: int
    total: int
    dimension: int = 0
    fingerprint: str = ""
    ready_at: str | None = None
    heartbeat_at: str | None = None
    build_id: str = ""
    layout: str = LAYOUT_FULL
    layers: tuple[int, ...] = ()  # version numbers of the collections it reads, base first, itself last
    stored: int = 0  # records in its own collection
    masked: int = 0  # records of its earlier layers that are not part of it

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = (self.version,)

    @classmethod
    def from_metadata(cls, name: str, meta: Mapping[str, Any]) -> IndexVersion:
        parent = meta.get("parent_version")
        return cls(
            use_case=str(meta["use_case"]),
            version=int(meta["version"]),
            collection=name,
            parent_version=int(parent) if parent is not None and int(parent) >= 0 else None,
            status=str(meta.get("status", "")),
            created_at=str(meta.get("created_at", "")),
            embedder_id=str(meta.get("embedder_id", "")),
            added=int(meta.get("added", 0)),
            kept=int(meta.get("kept", 0)),
            removed=int(meta.get("removed", 0)),
            total=int(meta.get("total", 0)),
            dimension=int(meta.get("dimension", 0)),
            fingerprint=str(meta.get("fingerprint", "")),
            ready_at=meta.get("ready_at"),
            heartbeat_at=meta.get("heartbeat_at"),
            build_id=str(meta.get("build_id", "")),
            layout=str(meta.get("layout", LAYOUT_FULL)),
            layers=tuple(int(x) for x in str(meta.get("layers", "")).split(",") if x.strip()),
            stored=int(meta.get("stored", meta.get("total", 0))),
            masked=int(meta.get("masked", 0)),
        )


@dataclass
class Hit:
    chunk_id: str
    score: float  # cosine similarity, 1 - Chroma's cosine distance
    text: str
    metadata: dict[str, Any]


class IndexBuildError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _slug(text: str) -> str:
    slug = _NAME_OK.sub("-", text).strip("._-")
    return re.sub(r"[._-]{2,}", "-", slug)


def collection_name(namespace: str, use_case: str, version: int) -> str:
    """``<namespace>.<use_case>.vNNNN`` with characters outside [a-zA-Z0-9._-] replaced; a use case whose name had
    to be changed gets a short hash suffix so that two use cases never share a name."""
    ns, uc = _slug(namespace) or "agenix", _slug(use_case) or "index"
    if uc != use_case:
        uc = f"{uc}-{hashlib.sha1(use_case.encode()).hexdigest()[:6]}"
    name = f"{ns}.{uc}.v{version:04d}"
    if len(name) > 512:
        name = f"{ns[:100]}.{uc[:100]}-{hashlib.sha1(use_case.encode()).hexdigest()[:8]}.v{version:04d}"
    return name


def mask_collection_name(collection: str) -> str:
    """The companion collection holding a delta version's masks (ids ``<layer>:<chunk_id>``, 1-d placeholder vectors)."""
    name = f"{collection}{MASK_SUFFIX}"
    return (
        name
        if len(name) <= 512
        else f"{collection[:490]}-{hashlib.sha1(collection.encode()).hexdigest()[:8]}{MASK_SUFFIX}"
    )


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " > ".join(value)  # section paths
    raise TypeError(f"metadata[{key!r}] = {value!r}: Chroma metadata values must be str, int, float or bool")


def clean_metadata(metadata: Mapping[str, Any], content_hash: str) -> dict[str, Any]:
    """Chroma-safe record metadata: ``None`` dropped, dates to ISO, string lists joined with " > ", content_hash
    added (the carry-forward diff needs it). ``TEXT_KEY`` is reserved."""
    if TEXT_KEY in metadata:
        raise ValueError(f"metadata key {TEXT_KEY!r} is reserved for the chunk text")
    out = {str(k): _scalar(str(k), v) for k, v in metadata.items() if v is not None}
    out[CONTENT_HASH_KEY] = content_hash
    return out


def fingerprint(chunks: Sequence[IndexChunk], embedder_id: str) -> str:
    """sha256 over the embedder id and every (chunk_id, content_hash, text, metadata), order-independent."""
    return _fingerprint(chunks, {c.chunk_id: clean_metadata(c.metadata, c.content_hash) for c in chunks}, embedder_id)


def _fingerprint(chunks: Sequence[IndexChunk], records: Mapping[str, Mapping[str, Any]], embedder_id: str) -> str:
    digest = hashlib.sha256(f"agenix-index:{_SCHEMA}:{embedder_id}\n".encode())
    for chunk in sorted(chunks, key=lambda c: c.chunk_id):
        meta = json.dumps(records[chunk.chunk_id], sort_keys=True, default=str)
        text_hash = hashlib.sha256(chunk.text.encode()).hexdigest()
        digest.update(f"{chunk.chunk_id}\0{chunk.content_hash}\0{text_hash}\0{meta}\n".encode())
    return digest.hexdigest()


def _normalise_where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not where:
        return None
    if len(where) == 1 or any(k.startswith("$") for k in where):
        return dict(where)
    return {"$and": [{k: v} for k, v in where.items()]}


def hnsw_configuration(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``HNSW_DEFAULTS`` updated with ``overrides``, validated: only parameters the Rust HNSW honours, positive
    integers (``resize_factor`` > 1), and space cosine."""
    cfg = dict(HNSW_DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in _HNSW_KEYS:
            hint = " (ignored by Chroma 1.x's Rust HNSW)" if key in ("num_threads", "batch_size") else ""
            raise ValueError(f"unsupported HNSW parameter {key!r}{hint}; expected one of {sorted(_HNSW_KEYS)}")
        if key == "space":
            if value != "cosine":
                raise ValueError(f"HNSW space must be 'cosine' (scores are 1 - cosine distance), got {value!r}")
        elif key == "resize_factor":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 1:
                raise ValueError(f"resize_factor must be a number > 1, got {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"HNSW {key} must be a positive int, got {value!r}")
        cfg[key] = value
    return cfg


def _split_text(document: str | None, metadata: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(text, metadata without ``TEXT_KEY``) of a stored record, whichever layout its version uses."""
    meta = dict(metadata or {})
    text = meta.pop(TEXT_KEY, None)
    if document is not None:
        text = document
    return (text if isinstance(text, str) else ""), meta


def _stored_vectors(source: Any, ids: list[str]) -> np.ndarray:
    """float32 (len(ids), dim) vectors of ``ids`` in ``source``, in the order of ``ids``."""
    got = source.get(ids=ids, include=["embeddings"])
    pos = {cid: i for i, cid in enumerate(got["ids"])}
    if len(pos) != len(ids):
        missing = [cid for cid in ids if cid not in pos][:5]
        raise IndexBuildError(f"parent {source.name} lost records {missing}")
    stored = np.asarray(got["embeddings"], dtype=np.float32)  # Chroma returns float64
    return stored[[pos[cid] for cid in ids]]


def _layer_policy(max_layers: int, max_overlay_fraction: float) -> tuple[int, float]:
    max_layers, fraction = int(max_layers), float(max_overlay_fraction)
    if max_layers < 1 or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"max_layers must be >= 1 and max_overlay_fraction in [0, 1], got {max_layers}, {fraction}")
    return max_layers, fraction


def _retained(ready: Sequence[IndexVersion], keep: int, protect: Iterable[int] = ()) -> list[IndexVersion]:
    """The newest ``keep`` (at least one) of the ready versions ``ready`` (oldest first), plus the versions numbered
    in ``protect`` (e.g. the newest one that passed its gates, which must outlive newer versions that failed)."""
    newest = {v.version for v in ready[-max(1, int(keep)) :]} | set(protect)
    return [v for v in ready if v.version in newest]


def _batches(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------------------------


class VectorIndexStore:
    """Versioned vector indexes of one namespace on one Chroma client (embedded or server).

    One builder at a time (Dagster serialises the build asset); any number of readers, in any process that reaches
    the same Chroma (use server mode when readers live in other processes: an embedded PersistentClient must not be
    opened by two processes at once).

    ``hnsw``: overrides of ``HNSW_DEFAULTS`` for the collections of new versions (existing versions keep theirs).
    ``copy_batch_size``: records per ``add`` when carrying vectors forward; default (None) the largest batch Chroma
    accepts, which is the fastest (see the module notes).
    ``text_storage``: where new versions keep the chunk text: ``"metadata"`` (default; under ``TEXT_KEY``, stripped
    from what ``query``/``get_all`` return) or ``"document"`` (a Chroma document: adds Chroma's trigram full-text
    index, about 1.25x slower copies at 200-token chunks, and enables Chroma ``where_document`` filters, which
    nothing here uses). Readers handle both layouts, so versions of either kind can coexist.
    """

    def __init__(
        self,
        client: chromadb.ClientAPI,
        namespace: str = "agenix",
        stale_build_seconds: float = 900.0,
        hnsw: Mapping[str, Any] | None = None,
        copy_batch_size: int | None = None,
        text_storage: TextStorage = "metadata",
        max_layers: int = 8,
        max_overlay_fraction: float = 0.2,
    ):
        self.client = client
        self.max_layers, self.max_overlay_fraction = _layer_policy(max_layers, max_overlay_fraction)
        self._mask_cache: dict[str, dict[int, frozenset[str]]] = {}
        self.namespace = namespace
        self.stale_build_seconds = stale_build_seconds
        self.hnsw = hnsw_configuration(hnsw)
        if text_storage not in ("metadata", "document"):
            raise ValueError(f"text_storage must be 'metadata' or 'document', got {text_storage!r}")
        self.text_storage: TextStorage = text_storage
        self._collections: dict[str, Any] = {}
        self._active_builds: set[str] = set()
        try:
            self.max_batch_size = int(client.get_max_batch_size())
        except Exception:  # very old servers
            self.max_batch_size = 5000
        if copy_batch_size is not None and int(copy_batch_size) < 1:
            raise ValueError(f"copy_batch_size must be >= 1, got {copy_batch_size!r}")
        self.copy_batch_size = min(int(copy_batch_size or self.max_batch_size), self.max_batch_size)

    # -- listing ------------------------------------------------------------------------------------------------
    def versions(self, use_case: str) -> list[IndexVersion]:
        """Every version of ``use_case`` (ready, building and failed), oldest first."""
        out = []
        for col in self.client.list_collections():
            meta = col.metadata or {}
            if meta.get("agenix_namespace") != self.namespace or meta.get("use_case") != use_case:
                continue
            try:
                out.append(IndexVersion.from_metadata(col.name, meta))
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring collection %s with unreadable metadata %r", col.name, meta)
        return sorted(out, key=lambda v: v.version)

    def live(self, use_case: str) -> IndexVersion | None:
        """The newest ready version, or None."""
        ready = [v for v in self.versions(use_case) if v.status == STATUS_READY]
        return ready[-1] if ready else None

    def get_version(self, use_case: str, version: int | None = None) -> IndexVersion:
        """A given version (must be ready) or the live one; LookupError if there is none."""
        if version is None:
            live = self.live(use_case)
            if live is None:
                raise LookupError(f"no ready index version for use case {use_case!r}")
            return live
        for v in self.versions(use_case):
            if v.version == version:
                if v.status != STATUS_READY:
                    raise LookupError(f"{use_case!r} v{version} is {v.status}, not ready")
                return v
        raise LookupError(f"no index version {version} for use case {use_case!r}")

    def _collection(self, name: str, refresh: bool = False) -> Any:
        col = None if refresh else self._collections.get(name)
        if col is None:
            col = self.client.get_collection(name, embedding_function=None)
            self._collections[name] = col
        return col

    def _delete(self, name: str) -> None:
        self._collections.pop(name, None)
        self._mask_cache.pop(name, None)
        try:
            self.client.delete_collection(name)
        except (NotFoundError, ValueError):
            pass

    def _delete_version(self, name: str) -> None:
        self._delete(mask_collection_name(name))
        self._delete(name)

    # -- build --------------------------------------------------------------------------------------------------
    def build_version(
        self,
        use_case: str,
        chunks: Sequence[IndexChunk],
        embed: Callable[[list[IndexChunk]], np.ndarray],
        embedder_id: str,
        batch_size: int = 1000,
        max_layers: int | None = None,
        max_overlay_fraction: float | None = None,
    ) -> IndexVersion:
        """Build the next version from ``chunks`` = the complete desired content of the index.

        Chunks whose chunk_id is in the live (parent) version with the same content_hash keep the parent's stored
        vector (no ``embed`` call). The others are passed to ``embed`` in batches of at most ``batch_size``; it must
        return a float32 (n, dim) matrix of L2-normalised vectors in the order given. Parent chunk ids absent from
        ``chunks`` are dropped. Nothing is carried over when the parent was built with another embedder_id.

        Layout (see "Layered versions" in the module notes): a *delta* version's collection holds only what changed
        (new and re-embedded chunks, and carried vectors whose text or metadata changed); its unchanged records stay
        in the collections of its ``layers`` and the records it replaces or drops are masked. A delta is built when
        the parent uses the same embedder, the layer chain stays within ``max_layers`` and the records outside the
        base layer plus the masked ones stay within ``max_overlay_fraction`` of the total; otherwise the version
        is a *full* copy (compaction). Defaults: the store's. ``max_layers=1`` makes every version a full copy.

        Returns the new ready version; or, when nothing changed versus the parent, the parent itself (no new
        collection). Raises if the build fails; the half-built collection is marked failed and the parent stays live.
        """
        if not embedder_id:
            raise ValueError("embedder_id is required")
        max_layers, overlay_cap = _layer_policy(
            self.max_layers if max_layers is None else max_layers,
            self.max_overlay_fraction if max_overlay_fraction is None else max_overlay_fraction,
        )
        batch_size = max(1, min(int(batch_size), self.max_batch_size))
        chunks = list(chunks)
        seen: set[str] = set()
        for c in chunks:
            if c.chunk_id in seen:
                raise ValueError(f"duplicate chunk_id {c.chunk_id!r}")
            seen.add(c.chunk_id)
        records = {c.chunk_id: clean_metadata(c.metadata, c.content_hash) for c in chunks}
        fp = _fingerprint(chunks, records, embedder_id)

        existing = self.versions(use_case)
        ready = [v for v in existing if v.status == STATUS_READY]
        parent = ready[-1] if ready else None
        # One builder at a time: anything not ready is debris of a killed or failed build.
        for v in existing:
            if v.status != STATUS_READY:
                log.info("deleting %s debris %s", v.status, v.collection)
                self._delete_version(v.collection)
        if parent is not None and parent.fingerprint == fp and parent.embedder_id == embedder_id:
            return parent

        # Diff against the parent: where each of its live records is, and what it holds.
        same_model = parent is not None and parent.embedder_id == embedder_id
        parent_live = self._live_ids(parent) if parent is not None else {}
        stored = self._stored_records(parent, [c.chunk_id for c in chunks], parent_live) if same_model else {}
        kept = [
            c for c in chunks if c.chunk_id in stored and stored[c.chunk_id][1].get(CONTENT_HASH_KEY) == c.content_hash
        ]
        kept_set = {c.chunk_id for c in kept}
        to_embed = [c for c in chunks if c.chunk_id not in kept_set]  # vectors of another model are never carried
        removed = sum(1 for cid in parent_live if cid not in seen)

        version = max((v.version for v in existing), default=0) + 1
        name = collection_name(self.namespace, use_case, version)
        layout, layers, masks = LAYOUT_FULL, (version,), {}
        copy = kept  # records whose stored vector is added to the new collection
        if same_model and kept and max_layers > 1:
            # Unchanged records (same text and metadata) stay where they are; everything else of the parent is
            # masked in its layer.
            in_place = {
                c.chunk_id
                for c in kept
                if stored[c.chunk_id][2] == c.text and stored[c.chunk_id][1] == records[c.chunk_id]
            }
            masks = {layer: set(ids) for layer, ids in self._masks(parent).items()}
            for cid, layer in parent_live.items():
                if cid not in in_place:
                    masks.setdefault(layer, set()).add(cid)
            base = parent.layers[0]
            outside_base = len(chunks) - sum(1 for cid in in_place if parent_live[cid] == base)
            n_masked = sum(len(ids) for ids in masks.values())
            if len(parent.layers) + 1 <= max_layers and outside_base + n_masked <= overlay_cap * max(len(chunks), 1):
                layout, layers = LAYOUT_DELTA, (*parent.layers, version)
                copy = [c for c in kept if c.chunk_id not in in_place]
            else:
                masks = {}
        own = len(copy) + len(to_embed)
        now = _now()
        meta: dict[str, Any] = {
            "agenix_namespace": self.namespace,
            "agenix_schema": _SCHEMA,
            "use_case": use_case,
            "version": version,
            "status": STATUS_BUILDING,
            "created_at": now,
            "heartbeat_at": now,
            "embedder_id": embedder_id,
            "dimension": 0,
            "added": len(to_embed),
            "kept": len(kept),
            "removed": removed,
            "total": len(chunks),
            "fingerprint": fp,
            "text_storage": self.text_storage,
            "build_id": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}",
            "layout": layout,
            "layers": ",".join(str(n) for n in layers),
            "stored": own,
            "masked": sum(len(ids) for ids in masks.values()),
        }
        if parent is not None:
            meta["parent_version"] = parent.version
        taken = {c.name for c in self.client.list_collections()}
        for squatter in (name, mask_collection_name(name)):
            if squatter in taken:
                self._delete(squatter)  # a foreign collection squatting on the name would have no agenix metadata
        col = self.client.create_collection(
            name, metadata=meta, configuration={"hnsw": dict(self.hnsw)}, embedding_function=None
        )
        self._collections[name] = col
        self._active_builds.add(name)
        dimension = parent.dimension if (parent is not None and kept) else 0
        last_beat = time.monotonic()
        try:
            # 0) the masks of a delta version, in its companion collection
            if masks:
                self._write_masks(name, use_case, masks)
            # 1) carry forward stored vectors, read from the parent's layers
            if copy:
                by_layer: dict[int, list[IndexChunk]] = {}
                for c in copy:
                    by_layer.setdefault(parent_live[c.chunk_id], []).append(c)
                # The next batch is read while this one is added: a gain in server mode (the HTTP client releases
                # the GIL), neutral in embedded mode (Chroma's add holds the GIL, so the calls just alternate).
                work = [
                    (self._layer_collection(parent, layer, refresh=True), list(batch))
                    for layer, items in by_layer.items()
                    for batch in _batches(items, self.copy_batch_size)
                ]
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="agenix-index-read") as reader:
                    pending = reader.submit(_stored_vectors, work[0][0], [c.chunk_id for c in work[0][1]])
                    for k, (_, batch) in enumerate(work):
                        vectors = pending.result()
                        if k + 1 < len(work):
                            source, nxt = work[k + 1]
                            pending = reader.submit(_stored_vectors, source, [c.chunk_id for c in nxt])
                        self._add(col, batch, vectors, records)
                        last_beat = self._beat(col, meta, last_beat)
            # 2) embed new and changed chunks
            for batch in _batches(to_embed, batch_size):
                batch = list(batch)
                vectors = np.asarray(embed(batch), dtype=np.float32)
                if vectors.ndim != 2 or vectors.shape[0] != len(batch):
                    raise IndexBuildError(f"embed returned shape {vectors.shape} for {len(batch)} chunks")
                if dimension and vectors.shape[1] != dimension:
                    raise IndexBuildError(f"embed returned {vectors.shape[1]}-d vectors, index has {dimension}")
                dimension = vectors.shape[1]
                self._add(col, batch, vectors, records)
                last_beat = self._beat(col, meta, last_beat)
            count = col.count()
            if count != own:
                raise IndexBuildError(f"{name} holds {count} records, expected {own}")
            meta.update(status=STATUS_READY, dimension=int(dimension), ready_at=_now(), heartbeat_at=_now())
            col.modify(metadata=meta)  # the atomic switch: readers pick the newest ready version
        except BaseException as exc:
            try:
                meta.update(status=STATUS_FAILED, heartbeat_at=_now(), error=f"{type(exc).__name__}: {exc}"[:500])
                col.modify(metadata=meta)
            except Exception:  # the build is failing anyway; the next build deletes the collection
                log.warning("could not mark %s failed", name, exc_info=True)
            raise
        finally:
            self._active_builds.discard(name)
        return IndexVersion.from_metadata(name, meta)

    def _add(self, col: Any, batch: Sequence[IndexChunk], vectors: np.ndarray, records: Mapping[str, dict]) -> None:
        if self.text_storage == "metadata":
            col.add(
                ids=[c.chunk_id for c in batch],
                embeddings=vectors,
                metadatas=[{**records[c.chunk_id], TEXT_KEY: c.text} for c in batch],
            )
        else:
            col.add(
                ids=[c.chunk_id for c in batch],
                embeddings=vectors,
                documents=[c.text for c in batch],
                metadatas=[records[c.chunk_id] for c in batch],
            )

    def _beat(self, col: Any, meta: dict[str, Any], last: float, every: float = 10.0) -> float:
        if time.monotonic() - last < every:
            return last
        meta["heartbeat_at"] = _now()
        col.modify(metadata=meta)
        return time.monotonic()

    # -- layers -------------------------------------------------------------------------------------------------
    def _layer_collection(self, version: IndexVersion, layer: int, refresh: bool = False) -> Any:
        if layer == version.version:
            return self._collection(version.collection, refresh=refresh)
        return self._collection(collection_name(self.namespace, version.use_case, layer), refresh=refresh)

    def _masks(self, version: IndexVersion) -> dict[int, frozenset[str]]:
        """layer -> chunk ids masked in that layer for ``version`` (empty for a full version). Cached: immutable."""
        if version.layout != LAYOUT_DELTA or not version.masked:
            return {}
        name = mask_collection_name(version.collection)
        cached = self._mask_cache.get(name)
        if cached is None:
            got = self._collection(name).get(include=[])
            out: dict[int, set[str]] = {}
            for key in got["ids"]:
                layer, _, cid = key.partition(":")
                out.setdefault(int(layer), set()).add(cid)
            if sum(len(ids) for ids in out.values()) != version.masked:
                raise IndexBuildError(
                    f"{name} holds {len(got['ids'])} masks, {version.collection} expects {version.masked}"
                )
            cached = {layer: frozenset(ids) for layer, ids in out.items()}
            self._mask_cache[name] = cached
        return cached

    def _write_masks(self, name: str, use_case: str, masks: Mapping[int, set[str]]) -> None:
        keys = [f"{layer}:{cid}" for layer, ids in sorted(masks.items()) for cid in sorted(ids)]
        col = self.client.create_collection(
            mask_collection_name(name),
            metadata={"agenix_namespace": self.namespace, "agenix_mask_of": name, "agenix_mask_use_case": use_case},
            embedding_function=None,
        )
        for batch in _batches(keys, self.max_batch_size):
            col.add(ids=list(batch), embeddings=np.ones((len(batch), 1), dtype=np.float32))
        if col.count() != len(keys):
            raise IndexBuildError(f"{col.name} holds {col.count()} masks, expected {len(keys)}")

    def _live_ids(self, version: IndexVersion) -> dict[str, int]:
        """chunk_id -> layer (version number of the collection holding it) for every record of ``version``."""
        masks = self._masks(version)
        out: dict[str, int] = {}
        for layer in version.layers:
            masked = masks.get(layer, frozenset())
            for cid in self._layer_collection(version, layer, refresh=True).get(include=[])["ids"]:
                if cid not in masked:
                    out[cid] = layer
        return out

    def _stored_records(
        self, version: IndexVersion, ids: Sequence[str], live: Mapping[str, int]
    ) -> dict[str, tuple[int, dict[str, Any], str]]:
        """chunk_id -> (layer, stored metadata without the text, text) for those of ``ids`` in ``version``. Read by
        ids (index lookups), not by offset pages, which Chroma serves more slowly the deeper they go."""
        by_layer: dict[int, list[str]] = {}
        for cid in ids:
            if cid in live:
                by_layer.setdefault(live[cid], []).append(cid)
        out: dict[str, tuple[int, dict[str, Any], str]] = {}
        for layer, wanted in by_layer.items():
            col = self._layer_collection(version, layer, refresh=True)
            for batch in _batches(wanted, self.max_batch_size):
                got = col.get(ids=list(batch), include=["metadatas", "documents"])
                docs = got.get("documents") or [None] * len(got["ids"])
                for cid, doc, m in zip(got["ids"], docs, got["metadatas"] or [None] * len(got["ids"])):
                    text, meta = _split_text(doc, m)
                    out[cid] = (layer, meta, text)
        return out

    # -- gc -----------------------------------------------------------------------------------------------------
    def retained(self, use_case: str, keep: int, protect: Iterable[int] = ()) -> list[IndexVersion]:
        """The ready versions that retention ``keep`` keeps (the newest ``keep``, at least the live one, plus the
        versions in ``protect``), oldest first. ``gc`` keeps these and the layers they read; their retrieval
        artifacts are the ones to keep."""
        return _retained([v for v in self.versions(use_case) if v.status == STATUS_READY], keep, protect)

    def gc(self, use_case: str, keep: int, protect: Iterable[int] = ()) -> list[str]:
        """Delete ready versions beyond the newest ``keep`` (the live one is always kept) unless a kept version
        reads from their collection as a layer, failed builds, building collections that are not a build in
        progress (a build in progress: started by this store and not finished, or heartbeat younger than
        ``stale_build_seconds`` and newer than the live version), and masks whose version is gone. Returns the
        deleted version collection names."""
        versions = self.versions(use_case)
        ready = [v for v in versions if v.status == STATUS_READY]
        live = ready[-1] if ready else None
        kept = _retained(ready, keep, protect)
        kept_numbers = {v.version for v in kept}
        held = {layer for v in kept for layer in v.layers}
        doomed = [v for v in ready if v.version not in kept_numbers and v.version not in held]
        now = datetime.now(timezone.utc)
        for v in versions:
            if v.status == STATUS_READY:
                continue
            if v.collection in self._active_builds:
                continue
            if v.status == STATUS_BUILDING and (live is None or v.version > live.version):
                try:
                    age = (now - datetime.fromisoformat(v.heartbeat_at or v.created_at)).total_seconds()
                except ValueError:
                    age = float("inf")
                if age < self.stale_build_seconds:
                    continue
            doomed.append(v)
        deleted = []
        for v in doomed:
            if live is not None and v.collection == live.collection:
                continue
            self._delete_version(v.collection)
            deleted.append(v.collection)
        # Masks of versions deleted elsewhere (another process, an interrupted gc).
        names = {c.name: c.metadata or {} for c in self.client.list_collections()}
        for name, meta in names.items():
            if (
                meta.get("agenix_namespace") == self.namespace
                and meta.get("agenix_mask_use_case") == use_case
                and meta.get("agenix_mask_of") not in names
                and meta.get("agenix_mask_of") not in self._active_builds
            ):
                self._delete(name)
        return deleted

    # -- read ---------------------------------------------------------------------------------------------------
    def query(
        self,
        use_case: str,
        embedding: np.ndarray,
        k: int,
        where: dict | None = None,
        version: int | None = None,
    ) -> list[Hit]:
        """Top-k chunks by cosine similarity (best first) in the live version (or ``version``).

        ``where`` is a Chroma metadata filter; a plain multi-key dict such as ``{"data_domain": "support",
        "source": "kb"}`` is wrapped in ``$and``. A delta version is searched layer by layer, each asked for enough
        results to make up for its masked records, and the results merged. If the live version is deleted between
        lookup and query (gc in another process), the lookup is retried once.
        """
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.ndim == 1:
            vector = vector[None, :]
        if vector.ndim != 2 or vector.shape[0] != 1:
            raise ValueError(f"query takes one embedding, got shape {vector.shape}")
        if k <= 0:
            return []
        for attempt in (0, 1):
            target = self.get_version(use_case, version)
            if target.dimension and vector.shape[1] != target.dimension:
                raise ValueError(f"query has {vector.shape[1]} dims, {target.collection} has {target.dimension}")
            if target.total == 0:
                return []
            try:
                hits = self._query_layers(target, vector, int(k), _normalise_where(where), refresh=attempt > 0)
                break
            except NotFoundError:
                self._collections.pop(target.collection, None)
                if attempt or version is not None:
                    raise
        hits.sort(key=lambda h: -h.score)
        return hits[:k]

    def _query_layers(
        self, target: IndexVersion, vector: np.ndarray, k: int, where: dict | None, refresh: bool
    ) -> list[Hit]:
        masks = self._masks(target)
        hits: list[Hit] = []
        for layer in target.layers:
            col = self._layer_collection(target, layer, refresh=refresh)
            masked = masks.get(layer, frozenset())
            n = k + min(len(masked), 4 * k)
            while True:
                res = col.query(
                    query_embeddings=vector, n_results=n, where=where, include=["documents", "metadatas", "distances"]
                )
                ids = res["ids"][0]
                live = [i for i, cid in enumerate(ids) if cid not in masked]
                # Enough unmasked results, or the layer has no more (for this filter): done with this layer.
                if len(live) >= k or len(ids) < n:
                    break
                n *= 4
            docs = (res.get("documents") or [[None] * len(ids)])[0]
            metas = (res.get("metadatas") or [[None] * len(ids)])[0]
            dists = res["distances"][0]
            for i in live[:k]:
                text, meta = _split_text(docs[i], metas[i])
                hits.append(Hit(chunk_id=ids[i], score=float(1.0 - dists[i]), text=text, metadata=meta))
        return hits

    def ids(self, use_case: str, version: int | None = None) -> list[str]:
        """The chunk ids of the live version (or ``version``), without reading vectors or texts."""
        return list(self._live_ids(self.get_version(use_case, version)))

    def get_all(
        self, use_case: str, version: int | None = None
    ) -> tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]:
        """Every record of the live version (or ``version``): ids, float32 (n, dim) embeddings, texts, metadatas
        (metadata includes ``content_hash``). Order: layer by layer, Chroma's storage order within a layer; stable
        for an immutable version."""
        target = self.get_version(use_case, version)
        masks = self._masks(target)
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        page = self.max_batch_size
        for layer in target.layers:
            col = self._layer_collection(target, layer)
            masked = masks.get(layer, frozenset())
            offset = 0
            while True:
                got = col.get(include=["embeddings", "documents", "metadatas"], limit=page, offset=offset)
                n = len(got["ids"])
                if n:
                    keep = [i for i, cid in enumerate(got["ids"]) if cid not in masked]
                    ids += [got["ids"][i] for i in keep]
                    blocks.append(np.asarray(got["embeddings"], dtype=np.float32)[keep])
                    docs = got["documents"] or [None] * n
                    mds = got["metadatas"] or [None] * n
                    for i in keep:
                        text, meta = _split_text(docs[i], mds[i])
                        texts.append(text)
                        metas.append(meta)
                if n < page:
                    break
                offset += page
        dim = target.dimension or (blocks[0].shape[1] if blocks else 0)
        embeddings = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
        return ids, embeddings, texts, metas
