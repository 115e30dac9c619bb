"""Micro-benchmark: carrying vectors forward between index versions, before/after settings side by side (embedded
Chroma, synthetic vectors, no model).

    agenix bench index-copy                                        # 20k and 100k, profiles before + after
    agenix bench index-copy --sizes 5000                           # quick
    agenix bench index-copy --profiles before,params,after --sizes 20000

Profiles (each N runs every profile on the same data in one process, the builds interleaved in ABBA order, so the
ratios stay comparable on a busy machine):

- ``before``: Chroma's HNSW defaults (ef_construction 100, M 16, ef_search 100), copies in batches of 1000, text as a
  Chroma document -- the settings before this benchmark's tuning.
- ``params``: the chosen HNSW parameters and copy batch, text still as a Chroma document (isolates the text layout).
- ``after``: ``VectorIndexStore`` defaults (``HNSW_DEFAULTS``, largest batch, text in record metadata).

For each N and profile: v1 = full insert of N clustered L2-normalised 384-d vectors with ~900-character texts (a
200-token chunk) and 8 metadata keys; v2 = rebuild after 1% of the chunks changed (99% carried forward from v1, 1%
"embedded" instantly). Reported: v1 insert seconds, v2 seconds and records/s, process CPU seconds of v2 (steadier
than wall time when other jobs share the cores), the projected rebuild cost as a share of a full build when
embedding runs at ``--embed-rate`` chunks/s (full = N/rate + v1 insert; rebuild = 1% of N/rate + v2; the target is
<= 5%), query latency p50/p95 (k=10, plain and with a where-filter), recall@10 of the HNSW index against exact
numpy search, and get_all seconds. Peak RSS of the process is printed at the end.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agenix_assets.core.index import CHROMA_HNSW_DEFAULTS, IndexChunk, VectorIndexStore, chroma_client

DIM = 384
DOMAINS = ["support", "billing", "hr", "engineering"]
PROFILES: dict[str, dict[str, Any]] = {
    "before": {"hnsw": CHROMA_HNSW_DEFAULTS, "copy_batch_size": 1000, "text_storage": "document"},
    "params": {"text_storage": "document"},
    "after": {},
}
_VOCABULARY = """
the a to of and in for on with is are be can you your our we it this that when by from at as or not all invoice refund
plan annual monthly customer support ticket password reset security account export archive vacation leave expense
report remote deploy staging service metric database migration policy employee manager approval payment card renewal
subscription notification settings project release review incident alert page
"""
WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class CopySettings:
    """What every profile's builds share (the options of ``agenix bench index-copy``)."""

    batch_size: int = 1000  # embed batch size passed to build_version
    changed: float = 0.01  # fraction of chunks changed for v2
    embed_rate: float = 50.0  # chunks/s of the real embedder, for the projected rebuild share
    text_chars: int = 900  # characters per chunk text
    queries: int = 200


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, clusters: int = 500, spread: float = 0.08) -> np.ndarray:
    """Unit vectors around random topic centres: closer to real embeddings than uniform noise (on which every
    point is nearly equidistant and HNSW recall is meaningless). Within a cluster the noise is isotropic in 384-d,
    which makes this a hard case for HNSW (real sentence embeddings have far lower intrinsic dimension)."""
    centres = unit(rng, clusters)
    v = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def texts(rng: np.random.Generator, n: int, chars: int) -> list[str]:
    """``n`` distinct texts of about ``chars`` characters: 9 sentences from a pool of 4000 plus a unique prefix."""
    sentences = [" ".join(rng.choice(WORDS, 16)) + "." for _ in range(4000)]
    per = max(1, round(chars / (sum(map(len, sentences[:200])) / 200 + 1)))
    picks = rng.integers(0, len(sentences), (n, per))
    return [f"chunk {i}: " + " ".join(sentences[j] for j in row) for i, row in enumerate(picks)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset(n: int, args: CopySettings) -> tuple[np.ndarray, list[IndexChunk]]:
    rng = np.random.default_rng(n)
    vectors = clustered(rng, n)
    bodies = texts(rng, n, args.text_chars)
    chunks = [
        IndexChunk(
            chunk_id=f"c{i:07d}",
            content_hash=f"h{i}",
            text=bodies[i],
            metadata={
                "source": "kb",
                "document_id": f"d{i // 20}",
                "title": f"Handbook page {i // 20}",
                "section_path": ["Handbook", f"Topic {i % 97}", f"Section {i % 13}"],
                "data_domain": DOMAINS[i % 4],
                "updated_at": "2026-10-01T00:00:00",
                "token_count": 200,
                "chunk_index": i % 20,
            },
        )
        for i in range(n)
    ]
    return vectors, chunks


class Trial:
    """One profile's store and results for one N."""

    def __init__(self, n: int, profile: str, vectors: np.ndarray, chunks: list[IndexChunk], root: Path):
        self.n, self.profile, self.vectors, self.chunks = n, profile, vectors, list(chunks)
        self.by_hash = {c.content_hash: vectors[i] for i, c in enumerate(chunks)}
        self.embedded = 0
        self.store = VectorIndexStore(chroma_client("embedded", root / f"chroma-{profile}-{n}"), **PROFILES[profile])
        hnsw = self.store.hnsw
        self.out: dict[str, Any] = {
            "n": n,
            "profile": profile,
            "hnsw": f"{hnsw['ef_construction']}/{hnsw['max_neighbors']}/{hnsw['ef_search']}",
            "copy_batch": self.store.copy_batch_size,
            "text": self.store.text_storage,
        }

    def embed(self, batch: list[IndexChunk]) -> np.ndarray:
        """Instant "embedding": the dataset vector, or for a changed chunk a random unit vector seeded by its hash
        (the same for every profile)."""
        self.embedded += len(batch)
        rows = []
        for c in batch:
            if c.content_hash in self.by_hash:
                rows.append(self.by_hash[c.content_hash])
            else:
                rows.append(unit(np.random.default_rng(zlib.crc32(c.content_hash.encode())), 1)[0])
        return np.stack(rows)

    def build_v1(self, args: CopySettings) -> None:
        t, c = time.perf_counter(), cpu_seconds()
        v1 = self.store.build_version("bench", self.chunks, self.embed, "random", batch_size=args.batch_size)
        self.out["v1_insert_s"] = time.perf_counter() - t
        self.out["v1_cpu_s"] = cpu_seconds() - c
        assert v1.total == self.n

    def build_v2(self, args: CopySettings) -> None:
        step = max(1, round(1 / args.changed))
        for i in range(0, self.n, step):
            old = self.chunks[i]
            self.chunks[i] = IndexChunk(old.chunk_id, f"changed-{i}", old.text + " (edited)", old.metadata)
        changed = len(range(0, self.n, step))
        self.embedded = 0
        t, c = time.perf_counter(), cpu_seconds()
        v2 = self.store.build_version("bench", self.chunks, self.embed, "random", batch_size=args.batch_size)
        self.out["v2_s"] = time.perf_counter() - t
        self.out["v2_cpu_s"] = cpu_seconds() - c
        assert (v2.kept, v2.added, self.embedded) == (self.n - changed, changed, changed), (v2, self.embedded)
        self.out["v2_rec_per_s"] = self.n / self.out["v2_s"]
        full = self.n / args.embed_rate + self.out["v1_insert_s"]
        self.out["rebuild_pct_of_full"] = 100.0 * (changed / args.embed_rate + self.out["v2_s"]) / full

    def measure_reads(self, args: CopySettings) -> None:
        store, out = self.store, self.out
        t = time.perf_counter()
        ids_all, emb_all, _, _ = store.get_all("bench")
        out["get_all_s"] = time.perf_counter() - t
        if args.queries:
            qrng = np.random.default_rng(7)
            qs = self.vectors[qrng.integers(0, self.n, args.queries)]
            qs = qs + 0.05 * qrng.standard_normal((args.queries, DIM)).astype(np.float32)
            qs /= np.linalg.norm(qs, axis=1, keepdims=True)
            store.query("bench", qs[0], 10)  # warm: loads the HNSW segment
            lat, hits = [], 0
            exact = np.argsort(-(qs @ emb_all.T), axis=1)[:, :10]
            for q, ex in zip(qs, exact):
                t = time.perf_counter()
                got = store.query("bench", q, 10)
                lat.append((time.perf_counter() - t) * 1000)
                hits += len({ids_all[i] for i in ex} & {h.chunk_id for h in got})
            out["query_p50_ms"] = statistics.median(lat)
            out["query_p95_ms"] = float(np.percentile(lat, 95))
            out["recall@10"] = hits / (10 * len(qs))
            lat = []
            for q in qs[: max(1, args.queries // 2)]:
                t = time.perf_counter()
                store.query("bench", q, 10, where={"data_domain": "hr"})
                lat.append((time.perf_counter() - t) * 1000)
            out["where_p50_ms"] = statistics.median(lat)
        store.gc("bench", keep=1)


def run(n: int, profiles: list[str], args: CopySettings, root: Path) -> list[dict[str, Any]]:
    """Every profile on the same data, phases interleaved in ABBA order (v1: A B, v2: B A) so that a change in the
    machine's load during the run does not favour one profile."""
    vectors, chunks = dataset(n, args)
    trials = [Trial(n, p, vectors, chunks, root) for p in profiles]
    del chunks
    for trial in trials:
        trial.build_v1(args)
    for trial in reversed(trials):
        trial.build_v2(args)
    for trial in trials:
        trial.measure_reads(args)
    return [trial.out for trial in trials]


COLUMNS = [
    ("n", "N", "{}"),
    ("profile", "profile", "{}"),
    ("hnsw", "efC/M/efS", "{}"),
    ("copy_batch", "batch", "{}"),
    ("text", "text", "{}"),
    ("v1_insert_s", "v1 full s", "{:.1f}"),
    ("v1_cpu_s", "v1 cpu s", "{:.1f}"),
    ("v2_s", "v2 1% s", "{:.1f}"),
    ("v2_rec_per_s", "v2 rec/s", "{:.0f}"),
    ("v2_cpu_s", "v2 cpu s", "{:.1f}"),
    ("rebuild_pct_of_full", "rebuild %", "{:.2f}"),
    ("query_p50_ms", "q p50 ms", "{:.1f}"),
    ("query_p95_ms", "q p95 ms", "{:.1f}"),
    ("where_p50_ms", "where p50", "{:.1f}"),
    ("recall@10", "recall@10", "{:.4f}"),
    ("get_all_s", "get_all s", "{:.1f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    # speed-up of each profile's 1% rebuild versus the first profile of the same N
    for n in dict.fromkeys(r["n"] for r in rows):
        group = [r for r in rows if r["n"] == n]
        base = group[0]
        for r in group[1:]:
            lines.append(
                f"N={n}: {r['profile']} vs {base['profile']}: 1% rebuild {base['v2_s'] / r['v2_s']:.2f}x faster "
                f"(wall), {base['v2_cpu_s'] / r['v2_cpu_s']:.2f}x (cpu); full insert "
                f"{base['v1_insert_s'] / r['v1_insert_s']:.2f}x"
            )
    return "\n".join(lines)


def run_index_copy_benchmark(
    sizes: Sequence[int] = (20_000, 100_000),
    profiles: Sequence[str] = ("before", "after"),
    settings: CopySettings = CopySettings(),
    json_path: Path | None = None,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every profile at every size (see the module docstring); prints the table and returns its rows."""
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ValueError(f"unknown profile(s) {unknown}; expected some of {list(PROFILES)}")
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for n in sizes:
            for res in run(n, list(profiles), settings, Path(tmp)):
                rows.append(res)
                log("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    log("")
    log(table(rows))
    log(f"peak RSS {rss_mb():.0f} MB; load average {os.getloadavg()[0]:.1f}")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2))
    return rows
