"""The BEIR retrieval benchmark end to end on a tiny SciFact-derived folder (real model, real bm25s).

SciFact is read from ``shared/benchmarks/scifact`` beside the repository (CI puts a copy of shared/ there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agenix_bench import retrieval as bench
from agenix_assets.core.retrieval import LearnedReranker

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "scifact"
CONFIGS = ("dense", "bm25", "hybrid", "production")
KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_query_ms")



@pytest.fixture(scope="module", autouse=True)
def scifact_is_present():
    # Missing data is a broken checkout, not a reason to skip: CI would otherwise pass without running these.
    assert (SCIFACT / "qrels" / "train.tsv").is_file(), f"SciFact expected at {SCIFACT} (copy shared/ beside the repo)"


def _tiny_beir(root: Path, n_queries: int = 20, n_docs: int = 60, with_train: bool = True) -> Path:
    """20 train queries with their relevant abstracts plus distractors; 12 become 'train', 8 become 'dev'."""
    qrels = bench.load_qrels(SCIFACT / "qrels" / "train.tsv")
    qids = sorted(qrels, key=int)[:n_queries]
    wanted = {d for q in qids for d in qrels[q]}
    corpus_lines, queries_lines = [], []
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            if doc["_id"] in wanted or len(corpus_lines) < n_docs - len(wanted):
                corpus_lines.append(line)
                wanted.discard(doc["_id"])
            if len(corpus_lines) >= n_docs and not wanted:
                break
    with (SCIFACT / "queries.jsonl").open() as fh:
        for line in fh:
            if json.loads(line)["_id"] in qids:
                queries_lines.append(line)
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(corpus_lines))
    (root / "queries.jsonl").write_text("".join(queries_lines))
    splits = {"train": qids[:12], "dev": qids[12:]} if with_train else {"dev": qids[12:]}
    for name, ids in splits.items():
        rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q in ids for d, s in qrels[q].items()]
        (root / "qrels" / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _check(result: dict, split: str, n_queries: int) -> None:
    for name in CONFIGS:
        row = result[name]
        assert set(KEYS) <= set(row)
        for key in KEYS[:-1]:
            assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
        assert row["p50_query_ms"] > 0
    meta = result["meta"]
    assert meta["split"] == split and meta["n_queries"] == n_queries and meta["corpus_size"] == 60
    assert meta["model_id"].endswith("all-MiniLM-L6-v2")
    assert "encode_seconds" in meta["corpus_encoding"] and meta["fold_scheme"]
    # the relevant abstracts are in a 60-doc corpus: every sane retriever finds most of them
    assert result["bm25"]["recall@100"] > 0.8 and result["dense"]["recall@100"] > 0.8


@pytest.fixture(scope="module")
def encoder():
    from agenix_assets.core.retrieval import SentenceTransformerEncoder

    return SentenceTransformerEncoder(num_threads=1)


def test_benchmark_train_dev_and_fallback(tmp_path, encoder):
    beir = _tiny_beir(tmp_path / "beir")
    cache = tmp_path / "cache"
    out = tmp_path / "train.json"
    saved = tmp_path / "rr.json"
    result = bench.run_retrieval_benchmark(
        beir,
        "train",
        out,
        cache_dir=cache,
        folds=3,
        save_reranker=saved,
        encoder=encoder,
        print_table=False,
        log=lambda m: None,
    )
    assert json.loads(out.read_text()) == result
    _check(result, "train", 12)
    assert result["meta"]["fold_scheme"].startswith("3-fold")
    assert result["meta"]["corpus_encoding"]["cached"] is False
    assert LearnedReranker.load(saved).training["n_queries"] <= 12

    dev = bench.run_retrieval_benchmark(
        beir, "dev", tmp_path / "dev.json", cache_dir=cache, encoder=encoder, print_table=False, log=lambda m: None
    )
    _check(dev, "dev", 8)
    assert dev["meta"]["corpus_encoding"]["cached"] is True  # same model + corpus hash
    assert "train queries" in dev["meta"]["production"]["training"]

    # No train labels in the folder: the production reranker is a persisted model (never trained on dev), here the
    # one `train_reranker` builds into the cache from another folder's train labels, as the CLI does.
    built = bench.train_reranker(beir, cache, encoder=encoder, log=lambda m: None)
    assert built.parent == cache / "rerankers"
    # the same training code path as --save-reranker: the same model
    assert json.loads(built.read_text())["model"] == json.loads(saved.read_text())["model"]
    assert LearnedReranker.load(built).training["license_note"].startswith("trained on SciFact labels")
    mtime = built.stat().st_mtime_ns
    assert bench.train_reranker(beir, cache, encoder=encoder, log=lambda m: None) == built
    assert built.stat().st_mtime_ns == mtime  # reused from the cache, not rebuilt

    beir2 = _tiny_beir(tmp_path / "beir2", with_train=False)
    fallback = bench.run_retrieval_benchmark(
        beir2,
        "dev",
        None,
        cache_dir=cache,
        fallback_reranker=built,
        encoder=encoder,
        print_table=False,
        log=lambda m: None,
    )
    _check(fallback, "dev", 8)
    assert "persisted model" in fallback["meta"]["production"]["training"]
    assert "ndcg@10" in bench.format_table(fallback)


def test_missing_split_is_an_error(tmp_path):
    beir = _tiny_beir(tmp_path / "beir")
    with pytest.raises(FileNotFoundError):
        bench.run_retrieval_benchmark(beir, "test", None, cache_dir=None, print_table=False, log=lambda m: None)


def test_latency_benchmark_builds_its_reranker_into_the_cache(tmp_path, encoder):
    beir = _tiny_beir(tmp_path / "beir")
    cache = tmp_path / "cache"
    result = bench.run_latency_benchmark(
        beir, n_docs=300, n_queries=5, cache_dir=cache, encoder=encoder, print_table=False, log=lambda m: None
    )
    (built,) = (cache / "rerankers").glob("*.json")
    assert result["meta"]["reranker"] == str(built) and result["meta"]["n_docs"] == 300
    for path in ("dense", "bm25", "hybrid", "production (int8 query)", "production + domain filter"):
        assert result[path]["p50_ms"] > 0, path
