"""BEIR retrieval benchmark (SciFact by default) for the `agenix.core.retrieval` library.

`run_retrieval_benchmark(beir_dir, split, json_path)` evaluates, on the queries of `qrels/<split>.tsv`:

- ``dense``: all-MiniLM-L6-v2 on ``"title text"``, exact cosine;
- ``bm25``: Lucene BM25 (bm25s, k1=0.9, b=0.4) over stemmed, stop-worded ``title + text``;
- ``hybrid``: reciprocal rank fusion (k=60) of the dense and BM25 top-100 lists, no learning;
- ``hybrid_weighted``: min-max-normalised score fusion (0.5/0.5) over the same pool, no learning;
- ``production``: the RRF hybrid pool (dense top-100 + BM25 top-100) reranked by the learned reranker
  (`LearnedReranker`, kind ``ensemble``: logistic regression + gradient-boosted trees over retrieval features).
  Honest by construction: on ``train`` it is k-fold cross-fitted over train queries, folds grouped so that queries
  sharing a relevant document stay in one fold (each query is scored by a model that never saw it nor any query
  citing the same document); on any other split it is trained on ``qrels/train.tsv`` minus any query of the
  evaluated split; with no train labels in the folder it uses a persisted model (``fallback_reranker``, e.g. one
  built by `train_reranker` from SciFact's train labels).

Each configuration reports nDCG@10, Recall@10, Recall@100, MRR@10 and p50/p95 query latency (the full
`Retriever.search` call, query embedding included, one query at a time). Corpus embeddings are cached under
``~/.cache/agenix/bench`` keyed by (model fingerprint, corpus sha256).

`train_reranker` builds the production reranker from a folder's train labels into the same cache on first use.
SciFact's labels are CC BY-NC: a model trained on them is a benchmark artefact, so none is shipped in the package
(provenance and figures: docs/benchmarks.md).

`run_latency_benchmark` measures the same paths on a synthetic 100,000-passage index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agenix_assets.core.retrieval import (
    DEFAULT_MODEL_ID,
    BM25Index,
    Candidate,
    Document,
    LabelledPool,
    LearnedReranker,
    MetadataFilter,
    NumpyDenseIndex,
    QueryEncoder,
    RetrievalConfig,
    Retriever,
    SentenceTransformerEncoder,
    evaluate_run,
)
from agenix_assets.core.sources import sha256_file

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "agenix" / "bench"
METRIC_KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
TEXT_FORMAT = "title_text"  # BEIR: f"{title} {text}"

# The configurations the benchmark reports; "production" is the platform default (see PRODUCTION_CONFIG).
BASE_CONFIGS: dict[str, RetrievalConfig] = {
    "dense": RetrievalConfig(mode="dense", k=100),
    "bm25": RetrievalConfig(mode="bm25", k=100),
    "hybrid": RetrievalConfig(mode="hybrid", k=100, fusion="rrf", rrf_k=60),
    "hybrid_weighted": RetrievalConfig(mode="hybrid", k=100, fusion="weighted", dense_weight=0.5, bm25_weight=0.5),
}
# Production: the RRF hybrid pool (dense top-100 + BM25 top-100) reranked by the learned reranker, with the int8
# query encoder (the corpus stays fp32-encoded).
PRODUCTION_CONFIG = RetrievalConfig.production(k=100)
PRODUCTION_RERANKER: dict[str, Any] = {"kind": "ensemble", "params": {}}
BM25_PARAMS = {"k1": 0.9, "b": 0.4}
# Part of a cached reranker's key: bump when features or training change so stale cached models are rebuilt.
RERANKER_RECIPE = 1


# --------------------------------------------------------------------------------------------------------------
# BEIR loading
# --------------------------------------------------------------------------------------------------------------


@dataclass
class BeirData:
    directory: Path
    docs: list[Document]
    queries: dict[str, str]
    corpus_sha256: str
    queries_sha256: str

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        return load_qrels(self.directory / "qrels" / f"{split}.tsv")

    def has_split(self, split: str) -> bool:
        return (self.directory / "qrels" / f"{split}.tsv").exists()


def load_beir(directory: str | Path) -> BeirData:
    """Corpus and query texts only: SciFact's queries.jsonl carries gold evidence in ``metadata``; never read it."""
    directory = Path(directory)
    docs = []
    with (directory / "corpus.jsonl").open() as fh:
        for line in fh:
            if line.strip():
                d = json.loads(line)
                docs.append(Document(id=str(d["_id"]), text=d.get("text") or "", title=d.get("title") or ""))
    queries = {}
    with (directory / "queries.jsonl").open() as fh:
        for line in fh:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = q["text"]
    return BeirData(directory, docs, queries, sha256_file(directory / "corpus.jsonl"), sha256_file(directory / "queries.jsonl"))


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open() as fh:
        for i, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (i == 0 and not parts[2].lstrip("-").isdigit()):
                continue  # header or blank
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


# --------------------------------------------------------------------------------------------------------------
# cached embeddings
# --------------------------------------------------------------------------------------------------------------


def model_fingerprint(encoder: QueryEncoder) -> str:
    """Model id plus a hash of its weights file when the encoder exposes a model directory."""
    path = getattr(encoder, "model_path", None)
    digest = ""
    if path:
        weights = sorted(Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*.bin"))
        h = hashlib.sha256()
        for w in weights:
            h.update(sha256_file(w).encode())
        digest = h.hexdigest()[:12]
    fp = f"{encoder.model_id}@{digest}" if digest else encoder.model_id
    quant = getattr(encoder, "quantize", "none")
    return fp if quant == "none" else f"{fp}+{quant}"


def cached_embeddings(
    encode: Callable[[list[str]], np.ndarray],
    texts: list[str],
    key_parts: Sequence[str],
    cache_dir: Path | None,
    label: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode `texts` or load them from ``cache_dir/<label>-<sha>.npy`` (key: model fingerprint, content hash...)."""
    key = hashlib.sha256("\x1f".join(key_parts).encode()).hexdigest()[:20]
    info: dict[str, Any] = {"cache_key": key}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        npy, side = cache_dir / f"{label}-{key}.npy", cache_dir / f"{label}-{key}.json"
        if npy.exists() and side.exists():
            meta = json.loads(side.read_text())
            vecs = np.load(npy)
            if vecs.shape[0] == len(texts):
                return vecs, {**info, "cached": True, "encode_seconds": meta["encode_seconds"], "file": str(npy)}
    started = time.perf_counter()
    vecs = np.ascontiguousarray(encode(texts), dtype=np.float32)
    seconds = time.perf_counter() - started
    info.update({"cached": False, "encode_seconds": round(seconds, 2)})
    if cache_dir is not None:
        tmp = cache_dir / f".{label}-{key}.{os.getpid()}.npy"
        np.save(tmp, vecs)
        tmp.replace(npy)
        side.write_text(
            json.dumps({"key_parts": list(key_parts), "n": len(texts), "encode_seconds": round(seconds, 2)})
        )
        info["file"] = str(npy)
    return vecs, info


def _encoder_batch(encoder: QueryEncoder) -> Callable[[list[str]], np.ndarray]:
    if hasattr(encoder, "encode"):
        return lambda texts: encoder.encode(texts)  # type: ignore[attr-defined]
    return lambda texts: np.stack([encoder.encode_query(t) for t in texts])


# --------------------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Indexes:
    encoder: QueryEncoder
    dense: NumpyDenseIndex
    bm25: BM25Index
    meta: dict[str, Any]


def build_indexes(data: BeirData, encoder: QueryEncoder, cache_dir: Path | None) -> Indexes:
    fp = model_fingerprint(encoder)
    vecs, enc_info = cached_embeddings(
        _encoder_batch(encoder),
        [d.full_text for d in data.docs],
        [fp, data.corpus_sha256, TEXT_FORMAT],
        cache_dir,
        "corpus",
    )
    dense = NumpyDenseIndex([d.id for d in data.docs], vecs, [d.metadata for d in data.docs])
    started = time.perf_counter()
    bm25 = BM25Index.build(data.docs, **BM25_PARAMS)
    bm25_seconds = time.perf_counter() - started
    return Indexes(
        encoder,
        dense,
        bm25,
        {
            "model_fingerprint": fp,
            "corpus_encoding": {
                **enc_info,
                "docs_per_second": None
                if enc_info["cached"]
                else round(len(data.docs) / max(enc_info["encode_seconds"], 1e-9), 1),
            },
            "bm25_index_seconds": round(bm25_seconds, 2),
            "bm25_params": bm25.params,
        },
    )


def candidate_pools(
    retriever: Retriever, qids: Sequence[str], queries: dict[str, str], qvecs: dict[str, np.ndarray]
) -> dict[str, list[Candidate]]:
    return {q: retriever.candidate_pool(queries[q], qvecs[q]) for q in qids}


def relevance_groups(qrels: dict[str, dict[str, int]]) -> dict[str, str]:
    """Connected components of the query <-> relevant-document graph: queries sharing a relevant document group.

    SciFact claims often cite the same abstract (538 of 809 train queries share a relevant document with another
    train query). Query-level folds then let a reranker memorise document identity (length, title scores) from the
    other folds and inflate cross-fitted figures (HGB: 0.79 query-level vs 0.74 grouped nDCG@10), so folds are cut
    between groups.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q, rel in qrels.items():
        find("q:" + q)
        for doc, score in rel.items():
            if score > 0:
                parent[find("q:" + q)] = find("d:" + doc)
    return {q: find("q:" + q) for q in qrels}


def assign_folds(qids: Iterable[str], folds: int, seed: int, groups: dict[str, str] | None = None) -> dict[str, int]:
    """Deterministic k folds: groups (default: one per query) in seeded random order, each to the smallest fold."""
    qids = sorted(qids)
    members: dict[str, list[str]] = {}
    for q in qids:
        members.setdefault(groups.get(q, q) if groups else q, []).append(q)
    keys = sorted(members)
    sizes = [0] * folds
    fold_of: dict[str, int] = {}
    for i in np.random.default_rng(seed).permutation(len(keys)):
        f = int(np.argmin(sizes))
        for q in members[keys[i]]:
            fold_of[q] = f
        sizes[f] += len(members[keys[i]])
    return fold_of


def _timed_run(
    retriever: Retriever, qids: Sequence[str], queries: dict[str, str], k: int
) -> tuple[dict[str, list[str]], list[float]]:
    run, lat = {}, []
    for q in qids:
        t0 = time.perf_counter()
        hits = retriever.search(queries[q], k=k)
        lat.append((time.perf_counter() - t0) * 1000.0)
        run[q] = [h.id for h in hits]
    return run, lat


def _summary(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], lat: list[float]) -> dict[str, Any]:
    m = evaluate_run(run, qrels, ks=(10, 100))
    out: dict[str, Any] = {key: round(m[key], 4) for key in METRIC_KEYS}
    out["p50_query_ms"] = round(float(np.percentile(lat, 50)), 2) if lat else None
    out["p95_query_ms"] = round(float(np.percentile(lat, 95)), 2) if lat else None
    return out


def _single_threaded_blas(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with BLAS single-threaded (see `configure_query_threads`): latencies then measure one query on
    one core, as the gateway serves them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def production_encoder(encoder: QueryEncoder) -> QueryEncoder:
    """The query encoder of the production configuration (int8) over the same model as `encoder`."""
    wanted = PRODUCTION_CONFIG.query_quantization
    if getattr(encoder, "quantize", "none") != wanted and isinstance(encoder, SentenceTransformerEncoder):
        return SentenceTransformerEncoder(encoder.model_path, quantize=wanted)
    return encoder


def query_vectors(
    data: BeirData, encoder: QueryEncoder, qids: Sequence[str], cache_dir: Path | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Query embeddings of `qids` (cached like the corpus), by query id."""
    vecs, info = cached_embeddings(
        _encoder_batch(encoder),
        [data.queries[q] for q in qids],
        [model_fingerprint(encoder), data.queries_sha256, ",".join(qids)],
        cache_dir,
        "queries",
    )
    return dict(zip(qids, vecs, strict=True)), info


def fit_full_reranker(
    data: BeirData,
    idx: Indexes,
    pool_retriever: Retriever,
    qvecs: dict[str, np.ndarray],
    train_qrels: dict[str, dict[str, int]],
    *,
    seed: int,
    crossfit_ndcg: float | None = None,
    fold_scheme: str | None = None,
) -> LearnedReranker:
    """The production reranker trained on every query of `train_qrels`, with its provenance in ``training``."""
    qids = sorted(train_qrels)
    pools = candidate_pools(pool_retriever, qids, data.queries, qvecs)
    return LearnedReranker.fit(
        [LabelledPool(q, pools[q], train_qrels[q]) for q in qids],
        kind=PRODUCTION_RERANKER["kind"],
        seed=seed,
        params=PRODUCTION_RERANKER["params"],
        metadata={
            "split": "train",
            "dataset": f"BEIR {data.directory.name} (corpus sha256 {data.corpus_sha256[:16]})",
            "pool": PRODUCTION_CONFIG.model_dump(),
            "bm25_params": idx.meta["bm25_params"],
            "corpus_encoder": idx.meta["model_fingerprint"],
            "query_encoder": model_fingerprint(pool_retriever.encoder),
            "crossfit_ndcg@10_on_train": crossfit_ndcg,
            "fold_scheme_of_crossfit": fold_scheme,
            "license_note": "trained on SciFact labels (CC BY-NC 2.0): benchmark artefact, not for the product",
        },
    )


@_single_threaded_blas
def train_reranker(
    beir_dir: Path,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    encoder: QueryEncoder | None = None,
    seed: int = 13,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The production reranker trained on all of ``qrels/train.tsv`` of a BEIR folder, as a JSON file under
    ``cache_dir/rerankers/``: built on first use (corpus and query embeddings cached beside it), then reused while
    the folder's files, the encoder and `RERANKER_RECIPE` are unchanged.

    This is how the benchmarks get a SciFact-trained model without shipping one: its labels are CC BY-NC.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    beir_dir = Path(beir_dir)
    data = load_beir(beir_dir)
    if not data.has_split("train"):
        raise FileNotFoundError(f"no qrels/train.tsv under {beir_dir}: nothing to train a reranker on")
    train_qrels = {q: r for q, r in data.qrels("train").items() if q in data.queries}
    encoder = encoder or SentenceTransformerEncoder(num_threads=1)
    prod_encoder = production_encoder(encoder)
    key_parts = [
        f"recipe={RERANKER_RECIPE}",
        data.corpus_sha256,
        data.queries_sha256,
        sha256_file(beir_dir / "qrels" / "train.tsv"),
        model_fingerprint(encoder),
        model_fingerprint(prod_encoder),
        json.dumps([PRODUCTION_RERANKER, PRODUCTION_CONFIG.model_dump(), BM25_PARAMS, seed], sort_keys=True),
    ]
    key = hashlib.sha256("\x1f".join(key_parts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "rerankers" / f"{beir_dir.name}-train-{key}.json"
    if path.exists():
        return path
    say(f"[bench] training the production reranker on {len(train_qrels)} train queries of {beir_dir} into {path}")
    started = time.perf_counter()
    idx = build_indexes(data, encoder, cache_dir)
    pool_retriever = Retriever(PRODUCTION_CONFIG, encoder=prod_encoder, dense=idx.dense, bm25=idx.bm25)
    qvecs, _ = query_vectors(data, prod_encoder, sorted(train_qrels), cache_dir)
    model = fit_full_reranker(data, idx, pool_retriever, qvecs, train_qrels, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    model.save(tmp)
    tmp.replace(path)  # atomic: a concurrent run never loads a half-written model
    say(f"[bench] reranker built in {time.perf_counter() - started:.1f} s "
        f"(corpus encoding {idx.meta['corpus_encoding']})")
    return path


@_single_threaded_blas
def run_retrieval_benchmark(
    beir_dir: Path,
    split: str,
    json_path: Path | None = None,
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    folds: int = 5,
    seed: int = 13,
    k: int = 100,
    encoder: QueryEncoder | None = None,
    save_reranker: Path | None = None,
    fallback_reranker: Path | None = None,
    torch_threads: int | None = 1,
    print_table: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every configuration on `split` of the BEIR folder; write `json_path` if given; return the results.

    Keys: one object per configuration (``dense``, ``bm25``, ``hybrid``, ``hybrid_weighted``, ``production``) with
    ``ndcg@10``, ``recall@10``, ``recall@100``, ``mrr@10``, ``p50_query_ms``, ``p95_query_ms``; plus ``meta``.
    BLAS runs single-threaded for the duration (see `configure_query_threads`).
    """
    started = time.perf_counter()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    beir_dir = Path(beir_dir)
    data = load_beir(beir_dir)
    if not data.has_split(split):
        raise FileNotFoundError(f"no qrels for split {split!r} under {beir_dir / 'qrels'}")
    eval_qrels = {q: r for q, r in data.qrels(split).items() if q in data.queries}
    eval_qids = sorted(eval_qrels)
    if not eval_qids:
        raise ValueError(f"qrels/{split}.tsv has no query that is in queries.jsonl")
    if encoder is None:
        encoder = SentenceTransformerEncoder(num_threads=torch_threads)
    say(f"[bench] {len(data.docs)} docs, {len(eval_qids)} {split} queries; encoding corpus (cached if possible)")
    idx = build_indexes(data, encoder, cache_dir)
    say(f"[bench] corpus encoding: {idx.meta['corpus_encoding']}")

    results: dict[str, Any] = {}
    for name, cfg in BASE_CONFIGS.items():
        retriever = Retriever(cfg, encoder=encoder, dense=idx.dense, bm25=idx.bm25)
        retriever.search(data.queries[eval_qids[0]], k=k)  # warm-up
        run, lat = _timed_run(retriever, eval_qids, data.queries, k)
        results[name] = _summary(run, eval_qrels, lat)
        say(f"[bench] {name}: {results[name]}")

    # ----- production: hybrid pool + learned reranker, trained only on train labels, never on evaluated queries
    prod_meta: dict[str, Any] = {"config": PRODUCTION_CONFIG.model_dump(), "reranker": dict(PRODUCTION_RERANKER)}
    train_qrels: dict[str, dict[str, int]] = {}
    if data.has_split("train"):
        train_qrels = {q: r for q, r in data.qrels("train").items() if q in data.queries}
    prod_encoder = production_encoder(encoder)
    prod_meta["query_encoder"] = model_fingerprint(prod_encoder)
    pool_retriever = Retriever(PRODUCTION_CONFIG, encoder=prod_encoder, dense=idx.dense, bm25=idx.bm25)
    qvecs, q_info = query_vectors(data, prod_encoder, sorted(set(train_qrels) | set(eval_qids)), cache_dir)
    kind, params = PRODUCTION_RERANKER["kind"], PRODUCTION_RERANKER["params"]
    prod_run: dict[str, list[str]] = {}
    prod_lat: list[float] = []
    fit_seconds = 0.0
    if split == "train":
        n_folds = max(2, min(folds, len(eval_qids)))
        fold_of = assign_folds(eval_qids, n_folds, seed, relevance_groups(eval_qrels))
        pools = candidate_pools(pool_retriever, eval_qids, data.queries, qvecs)
        for f in range(n_folds):
            train_ids = [q for q in eval_qids if fold_of[q] != f]
            test_ids = [q for q in eval_qids if fold_of[q] == f]
            t0 = time.perf_counter()
            reranker = LearnedReranker.fit(
                [LabelledPool(q, pools[q], train_qrels[q]) for q in train_ids],
                kind=kind,
                seed=seed,
                params=params,
                metadata={"split": "train", "fold": f, "folds": n_folds},
            )
            fit_seconds += time.perf_counter() - t0
            retr = Retriever(PRODUCTION_CONFIG, encoder=prod_encoder, dense=idx.dense, bm25=idx.bm25, reranker=reranker)
            retr.search(data.queries[test_ids[0]], k=k)
            run, lat = _timed_run(retr, test_ids, data.queries, k)
            prod_run.update(run)
            prod_lat.extend(lat)
        # For transparency: the same cross-fitting with plain query-level folds (optimistic on SciFact, see
        # `relevance_groups`), scored from the same pools without latency timing.
        q_fold = assign_folds(eval_qids, n_folds, seed)
        q_run: dict[str, list[str]] = {}
        for f in range(n_folds):
            rr = LearnedReranker.fit(
                [LabelledPool(q, pools[q], train_qrels[q]) for q in eval_qids if q_fold[q] != f],
                kind=kind,
                seed=seed,
                params=params,
            )
            for q in eval_qids:
                if q_fold[q] == f:
                    q_run[q] = [c.id for c in rr.rerank(data.queries[q], pools[q])][:k]
        prod_meta["query_level_folds_metrics"] = {
            key: round(v, 4) for key, v in evaluate_run(q_run, eval_qrels).items() if key in METRIC_KEYS
        }
        prod_meta.update(
            {
                "training": "k-fold cross-fitting over train queries: each query is scored by a model trained on the other folds",
                "fold_scheme": f"{n_folds}-fold grouped by shared relevant documents (connected components), groups in "
                f"numpy default_rng(seed={seed}) order, each to the smallest fold",
                "fit_seconds_total": round(fit_seconds, 2),
            }
        )
        final_training_ids = eval_qids
    else:
        train_ids = sorted(q for q in train_qrels if q not in eval_qrels)
        if train_ids:
            pools = candidate_pools(pool_retriever, train_ids, data.queries, qvecs)
            t0 = time.perf_counter()
            reranker = LearnedReranker.fit(
                [LabelledPool(q, pools[q], train_qrels[q]) for q in train_ids],
                kind=kind,
                seed=seed,
                params=params,
                metadata={"split": "train", "excluded_eval_queries": len(set(train_qrels) & set(eval_qrels))},
            )
            fit_seconds = time.perf_counter() - t0
            prod_meta.update(
                {
                    "training": f"trained on all {len(train_ids)} train queries (any query of split {split!r} excluded)",
                    "fold_scheme": "none (train/eval disjoint)",
                    "fit_seconds_total": round(fit_seconds, 2),
                }
            )
        elif fallback_reranker is not None and Path(fallback_reranker).exists():
            reranker = LearnedReranker.load(fallback_reranker)
            prod_meta.update(
                {
                    "training": f"no train qrels here: persisted model {Path(fallback_reranker).name}",
                    "fold_scheme": "none (persisted model)",
                    "persisted_model_training": reranker.training,
                }
            )
        else:
            reranker = None
            prod_meta["training"] = "no train qrels and no persisted model: production = hybrid without reranking"
        retr = Retriever(PRODUCTION_CONFIG, encoder=prod_encoder, dense=idx.dense, bm25=idx.bm25, reranker=reranker)
        retr.search(data.queries[eval_qids[0]], k=k)
        prod_run, prod_lat = _timed_run(retr, eval_qids, data.queries, k)
        final_training_ids = train_ids
    results["production"] = _summary(prod_run, eval_qrels, prod_lat)
    say(f"[bench] production: {results['production']}")

    if save_reranker is not None and final_training_ids:
        full = fit_full_reranker(
            data,
            idx,
            pool_retriever,
            qvecs,
            {q: train_qrels[q] for q in final_training_ids},
            seed=seed,
            crossfit_ndcg=results["production"]["ndcg@10"] if split == "train" else None,
            fold_scheme=prod_meta.get("fold_scheme"),
        )
        full.save(save_reranker)
        prod_meta["saved_reranker"] = str(save_reranker)

    import torch

    results["meta"] = {
        "split": split,
        "n_queries": len(eval_qids),
        "corpus_size": len(data.docs),
        "corpus_sha256": data.corpus_sha256,
        "model_id": getattr(encoder, "model_id", DEFAULT_MODEL_ID),
        **idx.meta,
        "query_encoding_batch": q_info,
        "k": k,
        "fold_scheme": prod_meta.get("fold_scheme"),
        "production": prod_meta,
        "configs": {name: cfg.model_dump() for name, cfg in BASE_CONFIGS.items()},
        "latency": "per query, full Retriever.search incl. single-query embedding, one at a time, after one warm-up",
        "torch_threads": torch.get_num_threads(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2))
    if print_table:
        print(format_table(results))
    return results


def format_table(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    head = f"split={meta.get('split')} queries={meta.get('n_queries')} corpus={meta.get('corpus_size')}"
    cols = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_query_ms")
    lines = [head, f"{'config':<17}" + "".join(f"{c:>13}" for c in cols)]
    for name, row in results.items():
        if name == "meta":
            continue
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(
                f"{v:>13.4f}"
                if c != "p50_query_ms" and v is not None
                else f"{(v if v is not None else float('nan')):>13.2f}"
            )
        lines.append(f"{name:<17}" + "".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# 100k latency benchmark
# --------------------------------------------------------------------------------------------------------------

_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


def synthetic_passages(data: BeirData, vecs: np.ndarray, n: int, seed: int = 7) -> tuple[list[Document], np.ndarray]:
    """`n` passages: 3-sentence sliding windows of the abstracts, then word-dropout variants until `n`.

    Each passage's vector is its abstract's embedding plus Gaussian noise (cosine to the parent ~0.8), renormalised:
    realistic score distributions without encoding 100k texts. Each passage gets one of 5 ``domain`` values.
    """
    rng = np.random.default_rng(seed)
    base: list[tuple[int, str]] = []
    for row, d in enumerate(data.docs):
        sents = [s for s in _SENT_RE.split(d.text) if s.strip()] or [d.text]
        for i in range(max(1, len(sents) - 2)):
            base.append((row, " ".join(sents[i : i + 3])))
    out: list[tuple[int, str]] = list(base)
    while len(out) < n:
        row, text = base[int(rng.integers(len(base)))]
        words = text.split()
        keep = rng.random(len(words)) > 0.15
        out.append((row, " ".join(w for w, kp in zip(words, keep, strict=True) if kp) or text))
    out = out[:n]
    domains = ["sales", "support", "finance", "hr", "engineering"]
    docs = [
        Document(id=f"p{i}", text=t, title=data.docs[r].title, metadata={"domain": domains[i % 5]})
        for i, (r, t) in enumerate(out)
    ]
    parents = np.array([r for r, _ in out])
    dim = vecs.shape[1]
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (0.75 / np.sqrt(dim))
    pv = vecs[parents] + noise
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    return docs, pv.astype(np.float32)


def _pcts(lat: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "mean_ms": round(float(statistics.fmean(lat)), 2),
    }


def run_latency_benchmark(
    beir_dir: Path,
    n_docs: int = 100_000,
    n_queries: int = 200,
    json_path: Path | None = None,
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    reranker_path: Path | None = None,
    encoder: QueryEncoder | None = None,
    torch_threads: int | None = 1,
    seed: int = 7,
    print_table: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """p50/p95 per path on an `n_docs` synthetic index (SciFact passages + perturbed parent embeddings).

    The reranked paths use `reranker_path`, or else a reranker trained on the folder's train labels
    (`train_reranker`, cached); with neither they are left out.
    """
    from threadpoolctl import threadpool_limits

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    data = load_beir(beir_dir)
    encoder = encoder or SentenceTransformerEncoder(num_threads=torch_threads)
    encoder_int8 = production_encoder(encoder)
    idx = build_indexes(data, encoder, cache_dir)
    if reranker_path is None and data.has_split("train"):
        reranker_path = train_reranker(beir_dir, cache_dir or DEFAULT_CACHE_DIR, encoder=encoder, log=say)
    docs, pvecs = synthetic_passages(data, idx.dense.matrix, n_docs, seed)
    t0 = time.perf_counter()
    dense = NumpyDenseIndex([d.id for d in docs], pvecs, [d.metadata for d in docs], normalize=False)
    bm25 = BM25Index.build(docs, **BM25_PARAMS)
    build_s = time.perf_counter() - t0
    say(f"[latency] built {n_docs} passages (dense {dense.dtype} + BM25) in {build_s:.1f}s")
    reranker = LearnedReranker.load(reranker_path) if reranker_path and Path(reranker_path).exists() else None
    rng = np.random.default_rng(seed)
    qids = sorted(data.queries)
    sample = [data.queries[qids[i]] for i in rng.choice(len(qids), size=min(n_queries, len(qids)), replace=False)]
    allowed = MetadataFilter.for_domains({"support", "engineering"})
    hybrid = RetrievalConfig(mode="hybrid", k=10)
    prod = PRODUCTION_CONFIG.model_copy(update={"k": 10})
    paths: dict[str, tuple[RetrievalConfig, QueryEncoder, Any, MetadataFilter | None]] = {
        "dense": (RetrievalConfig(mode="dense", k=10), encoder, None, None),
        "bm25": (RetrievalConfig(mode="bm25", k=10), encoder, None, None),
        "hybrid": (hybrid, encoder, None, None),
        "hybrid+rerank (fp32 query)": (hybrid, encoder, reranker, None),
        "production (int8 query)": (prod, encoder_int8, reranker, None),
        "production + domain filter": (prod, encoder_int8, reranker, allowed),
    }
    results: dict[str, Any] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for name, enc in (("query_embedding_fp32", encoder), ("query_embedding_int8", encoder_int8)):
            for q in sample[:10]:
                enc.encode_query(q)
            lat = []
            for q in sample:
                t = time.perf_counter()
                enc.encode_query(q)
                lat.append((time.perf_counter() - t) * 1000)
            results[name] = _pcts(lat)
            say(f"[latency] {name}: {results[name]}")
        for name, (cfg, enc, rr, where) in paths.items():
            if ("rerank" in name or "production" in name) and rr is None:
                continue
            retr = Retriever(cfg, encoder=enc, dense=dense, bm25=bm25, reranker=rr)
            for q in sample[:10]:
                retr.search(q, where=where)
            lat = []
            for q in sample:
                t = time.perf_counter()
                hits = retr.search(q, where=where)
                lat.append((time.perf_counter() - t) * 1000)
                if where is not None:
                    assert len(hits) == 10
                    assert all(where.matches(dense.metadata.get(dense.row_of[h.id])) for h in hits)
            results[name] = _pcts(lat)
            say(f"[latency] {name}: {results[name]}")
    import torch

    results["meta"] = {
        "n_docs": n_docs,
        "n_queries": len(sample),
        "dense_dtype": dense.dtype,
        "build_seconds": round(build_s, 1),
        "torch_threads": torch.get_num_threads(),
        "reranker": str(reranker_path) if reranker is not None else None,
        "corpus": "SciFact abstracts as 3-sentence windows + 15% word-dropout variants; vectors = parent embedding + noise",
        "cpus": os.cpu_count(),
        "loadavg_1m_at_end": os.getloadavg()[0],
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(results, indent=2))
    if print_table:
        print(f"{'path':<32}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
        for name, row in results.items():
            if name != "meta":
                print(f"{name:<32}{row['p50_ms']:>10.2f}{row['p95_ms']:>10.2f}{row['mean_ms']:>10.2f}")
    return results
