"""Micro-benchmark: carrying vectors forward between index versions, and query latency (embedded Chroma).

    .venv/bin/python benchmarks/index_copy.py                 # 20k and 100k
    .venv/bin/python benchmarks/index_copy.py --sizes 5000    # quick

For each N: build v1 from N synthetic (clustered) L2-normalised 384-d vectors with short texts (initial insert),
then v2 with one chunk changed (N-1 vectors carried forward from v1, 1 embedded), then v3 with 10% changed.
Also reports the raw read paths (get by ids vs paged scan), query latency p50/p95 (k=10, plain and with a
where-filter) on the largest N, and the process's peak RSS. No model is loaded; vectors are synthetic.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agenix_assets.core.index import IndexChunk, VectorIndexStore, chroma_client  # noqa: E402

DIM = 384
DOMAINS = ["support", "billing", "hr", "engineering"]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, clusters: int = 500, spread: float = 0.08) -> np.ndarray:
    """Unit vectors around random topic centres: closer to real embeddings than uniform noise (on which every
    point is nearly equidistant and HNSW recall is meaningless)."""
    centres = unit(rng, clusters)
    v = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, batch_size: int, queries: int, root: Path) -> dict[str, float]:
    rng = np.random.default_rng(n)
    vectors = clustered(rng, n)
    chunks = [
        IndexChunk(
            chunk_id=f"c{i:07d}",
            content_hash=f"h{i}",
            text=f"chunk {i} about topic {i % 97} in the {DOMAINS[i % 4]} handbook, section {i % 13}",
            metadata={"data_domain": DOMAINS[i % 4], "document_id": f"d{i // 20}", "token_count": 17},
        )
        for i in range(n)
    ]
    by_hash = {c.content_hash: vectors[i] for i, c in enumerate(chunks)}
    embedded = [0]

    def embed(batch: list[IndexChunk]) -> np.ndarray:
        embedded[0] += len(batch)
        return np.stack([by_hash[c.content_hash] if c.content_hash in by_hash else unit(rng, 1)[0] for c in batch])

    store = VectorIndexStore(chroma_client("embedded", root / f"chroma-{n}"))
    out: dict[str, float] = {"n": n}

    t = time.perf_counter()
    v1 = store.build_version("bench", chunks, embed, "random", batch_size=batch_size)
    out["v1_insert_s"] = time.perf_counter() - t
    assert v1.total == n

    chunks[0] = IndexChunk(chunks[0].chunk_id, "changed-0", "changed text", chunks[0].metadata)
    embedded[0] = 0
    t = time.perf_counter()
    v2 = store.build_version("bench", chunks, embed, "random", batch_size=batch_size)
    out["v2_carry_s"] = time.perf_counter() - t
    assert (v2.kept, v2.added, embedded[0]) == (n - 1, 1, 1), (v2, embedded)

    for i in range(0, n, 10):
        chunks[i] = IndexChunk(chunks[i].chunk_id, f"changed3-{i}", f"changed text {i}", chunks[i].metadata)
    t = time.perf_counter()
    v3 = store.build_version("bench", chunks, embed, "random", batch_size=batch_size)
    out["v3_10pct_changed_s"] = time.perf_counter() - t
    assert v3.added == len(range(0, n, 10))

    # Raw read paths on v3 (what the carry-forward does internally: get by ids, in batches).
    col = store.client.get_collection(v3.collection, embedding_function=None)
    ids = [c.chunk_id for c in chunks]
    t = time.perf_counter()
    for s in range(0, n, batch_size):
        col.get(ids=ids[s : s + batch_size], include=["embeddings"])
    out["read_by_ids_s"] = time.perf_counter() - t
    t = time.perf_counter()
    page = store.max_batch_size
    for s in range(0, n, page):
        col.get(include=["embeddings"], limit=page, offset=s)
    out["read_scan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store.get_all("bench")
    out["get_all_s"] = time.perf_counter() - t

    if queries:
        qs = vectors[rng.integers(0, n, queries)] + 0.05 * rng.standard_normal((queries, DIM)).astype(np.float32)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        store.query("bench", qs[0], 10)  # warm: loads the HNSW segment
        lat = []
        for q in qs:
            t = time.perf_counter()
            store.query("bench", q, 10)
            lat.append((time.perf_counter() - t) * 1000)
        out["query_p50_ms"] = statistics.median(lat)
        out["query_p95_ms"] = float(np.percentile(lat, 95))
        lat = []
        for q in qs[: max(1, queries // 2)]:
            t = time.perf_counter()
            store.query("bench", q, 10, where={"data_domain": "hr"})
            lat.append((time.perf_counter() - t) * 1000)
        out["query_where_p50_ms"] = statistics.median(lat)
        # recall@10 of HNSW vs exact search, a sanity check that the copy is a working index
        ids_all, emb_all, _, _ = store.get_all("bench")
        hits = 0
        for q in qs[:50]:
            exact = {ids_all[i] for i in np.argsort(-(emb_all @ q))[:10]}
            hits += len(exact & {h.chunk_id for h in store.query("bench", q, 10)})
        out["recall@10"] = hits / (10 * min(50, queries))
    store.gc("bench", keep=1)
    out["peak_rss_mb"] = rss_mb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the Chroma data (default: temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.sizes:
            q = args.queries if n == max(args.sizes) else 0
            res = run(n, args.batch_size, q, Path(tmp))
            print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
            if n >= 1000:
                print(f"    carry-forward throughput: {(n - 1) / res['v2_carry_s']:.0f} vectors/s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    main()
