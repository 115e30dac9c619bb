"""`agenix bench ...`: every benchmark's command, defined here once (agenix_assets/cli.py mounts this app).

Each command imports its benchmark when it runs, so loading this module (and `agenix --help`) stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON with --json PATH.")

JsonOption = Annotated[Path | None, typer.Option("--json", help="write results JSON here")]
CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="embedding and reranker cache (default: ~/.cache/agenix/bench)", show_default=False),
]


def _csv_ints(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, not {text!r}", param_hint=option) from None


@bench_app.command("pii")
def bench_pii(
    scale: Annotated[str, typer.Option(help="sample company scale to generate and evaluate")] = "small",
    seed: Annotated[int, typer.Option(help="sample seed")] = 7,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    ood: Annotated[bool, typer.Option("--ood", help="out-of-distribution set (Faker, 12 locales, no deny list)")] = False,
    tickets_per_locale: Annotated[int, typer.Option(help="--ood: support tickets per locale and split")] = 40,
    before: Annotated[
        str | None, typer.Option(help="--ood: score the detector of this git commit instead (prints JSON)")
    ] = None,
) -> None:
    """Precision and recall of PII redaction: in-distribution (the sample company) or, with --ood, Faker data."""
    from agenix_bench import pii as bench

    if before:
        if not ood:
            raise typer.BadParameter("--before scores the out-of-distribution set: add --ood")
        typer.echo(json.dumps(bench.run_before(before), indent=2))
        return
    if ood:
        report = bench.run_ood(tickets_per_locale=tickets_per_locale, clean_per_locale=tickets_per_locale // 2,
                               echo=typer.echo)
    else:
        report = bench.run_in_distribution(scale, seed, echo=typer.echo)
    if json_path:
        bench.write_json(report, json_path, drop=() if ood else ("misses", "false_positives"))
    if not report["meets_targets"]:
        raise typer.Exit(1)


@bench_app.command("retrieval")
def bench_retrieval(
    beir: Annotated[Path, typer.Option("--beir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")],
    split: Annotated[str, typer.Option("--split", help="qrels split to evaluate (train is cross-fitted)")] = "train",
    json_path: JsonOption = None,
    cache_dir: CacheDirOption = None,
    folds: Annotated[int, typer.Option(help="cross-fitting folds when split=train")] = 5,
    seed: Annotated[int, typer.Option(help="fold and model seed")] = 13,
    save_reranker: Annotated[
        Path | None, typer.Option(help="also save a reranker trained on all train queries of --beir")
    ] = None,
    reranker: Annotated[
        Path | None, typer.Option(help="reranker JSON for production when --beir has no qrels/train.tsv")
    ] = None,
    reranker_train_beir: Annotated[
        Path | None,
        typer.Option(help="when --beir has no train labels and no --reranker is given: train production's reranker on "
                     "this BEIR folder's qrels/train.tsv (built once into the cache)"),
    ] = None,
) -> None:
    """nDCG@10, Recall@10/100, MRR@10 and query latency of dense, BM25, hybrid and production retrieval."""
    from .retrieval import DEFAULT_CACHE_DIR, run_retrieval_benchmark, train_reranker

    cache = cache_dir or DEFAULT_CACHE_DIR
    fallback = reranker
    if fallback is None and reranker_train_beir is not None and not (beir / "qrels" / "train.tsv").exists():
        fallback = train_reranker(reranker_train_beir, cache, seed=seed)
    run_retrieval_benchmark(
        beir, split, json_path, cache_dir=cache, folds=folds, seed=seed, save_reranker=save_reranker,
        fallback_reranker=fallback,
    )


@bench_app.command("retrieval-latency")
def bench_retrieval_latency(
    beir: Annotated[Path, typer.Option("--beir", help="BEIR folder used to synthesise passages")],
    docs: Annotated[int, typer.Option("--docs", help="index size")] = 100_000,
    queries: Annotated[int, typer.Option("--queries", help="timed queries")] = 200,
    json_path: JsonOption = None,
    cache_dir: CacheDirOption = None,
    reranker: Annotated[
        Path | None,
        typer.Option(help="reranker JSON for the reranked paths (default: trained on --beir's train labels, cached)"),
    ] = None,
) -> None:
    """Query latency p50/p95 (query embedding included) of every retrieval path on a synthetic index."""
    from .retrieval import DEFAULT_CACHE_DIR, run_latency_benchmark

    run_latency_benchmark(beir, docs, queries, json_path, cache_dir=cache_dir or DEFAULT_CACHE_DIR, reranker_path=reranker)


@bench_app.command("indexing")
def bench_indexing(
    scale: Annotated[str, typer.Option(help="sample company scale")] = "large",
    json_path: JsonOption = None,
    workdir: Annotated[Path | None, typer.Option(help="keep the benchmark's platform folder here")] = None,
    raw_sample: Annotated[
        float, typer.Option(help="fraction of the chunks (seeded random sample) the raw encode baseline encodes")
    ] = 1.0,
    pii_check: Annotated[
        bool, typer.Option(help="also time the chunks' blocking PII scan (reported beside the build, not in it)")
    ] = True,
    compaction: Annotated[
        bool, typer.Option(help="also time a second 1% change built as a full copy of the index (a compaction)")
    ] = True,
) -> None:
    """Full index build throughput vs raw model.encode, rebuild after 1% of documents change, peak memory."""
    from .indexing import print_table, run_indexing_benchmark

    result = run_indexing_benchmark(
        scale=scale,
        workdir=workdir,
        json_path=json_path,
        raw_sample=raw_sample,
        pii_check=pii_check,
        compaction=compaction,
    )
    print_table(result)


@bench_app.command("index-copy")
def bench_index_copy(
    sizes: Annotated[str, typer.Option(help="comma-separated vector counts")] = "20000,100000",
    profiles: Annotated[str, typer.Option(help="comma-separated profiles: before, params, after")] = "before,after",
    batch_size: Annotated[int, typer.Option(help="embed batch size passed to build_version")] = 1000,
    changed: Annotated[float, typer.Option(help="fraction of chunks changed for the second version")] = 0.01,
    embed_rate: Annotated[float, typer.Option(help="chunks/s of the real embedder (projected rebuild share)")] = 50.0,
    text_chars: Annotated[int, typer.Option(help="characters per chunk text")] = 900,
    queries: Annotated[int, typer.Option(help="timed queries per profile (0: none)")] = 200,
    json_path: JsonOption = None,
    workdir: Annotated[Path | None, typer.Option("--dir", help="where to put the Chroma data (default: temp)")] = None,
) -> None:
    """Carrying vectors forward between index versions: Chroma's HNSW defaults vs the store's settings, side by side
    (embedded Chroma, synthetic vectors, no model)."""
    from .index_copy import PROFILES, CopySettings, run_index_copy_benchmark

    names = [p.strip() for p in profiles.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROFILES]
    if unknown or not names:
        raise typer.BadParameter(f"expected some of {', '.join(PROFILES)}, not {profiles!r}", param_hint="--profiles")
    settings = CopySettings(batch_size=batch_size, changed=changed, embed_rate=embed_rate, text_chars=text_chars,
                            queries=queries)
    run_index_copy_benchmark(_csv_ints(sizes, "--sizes"), names, settings, json_path, workdir, log=typer.echo)


@bench_app.command("gateway")
def bench_gateway(
    json_path: JsonOption = None,
    requests: Annotated[int, typer.Option(help="sequential requests per target for added latency")] = 2000,
    warmup: Annotated[int, typer.Option(help="warm-up requests per target")] = 200,
    duration: Annotated[float, typer.Option(help="seconds of wrk per target and concurrency level")] = 10.0,
    warmup_seconds: Annotated[float, typer.Option(help="wrk warm-up seconds")] = 2.0,
    connections: Annotated[str, typer.Option(help="comma-separated wrk concurrency levels")] = "8,32,64",
    agenix: Annotated[bool, typer.Option("--agenix/--no-agenix", help="measure the Agenix gateway")] = True,
    litellm: Annotated[bool, typer.Option("--litellm/--no-litellm", help="measure LiteLLM proxy beside us")] = True,
    gemma: Annotated[bool, typer.Option("--gemma/--no-gemma", help="TTFT and tokens/s to the real Gemma")] = True,
    pin: Annotated[bool, typer.Option("--pin/--no-pin", help="gateway on its own CPU, load generator on the other")] = True,
    setup: Annotated[bool, typer.Option("--setup/--no-setup", help="create the LiteLLM venv if missing")] = True,
    litellm_venv: Annotated[Path | None, typer.Option(help="LiteLLM venv (default .venv-litellm)")] = None,
    litellm_config: Annotated[Path | None, typer.Option(help="LiteLLM proxy config template")] = None,
    workdir: Annotated[Path | None, typer.Option(help="keep configs and logs here")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="keep the temporary workdir")] = False,
) -> None:
    """Added latency (p50/p99, one request in flight) and max throughput of this gateway and LiteLLM proxy in front
    of the same constant-time stub, in one run; time to first token and tokens/s to the real Gemma."""
    from .gateway import print_table, run_gateway_benchmark

    kwargs = dict(requests=requests, warmup=warmup, duration_s=duration, warmup_s=warmup_seconds,
                  connections=_csv_ints(connections, "--connections"), include_agenix=agenix,
                  include_litellm=litellm, include_gemma=gemma, pin=pin, setup_litellm=setup, workdir=workdir,
                  litellm_venv=litellm_venv, litellm_config=litellm_config, keep=keep)
    print_table(run_gateway_benchmark(json_path, **kwargs))


@bench_app.command("answers")
def bench_answers(
    home: Annotated[Path, typer.Option("--home", help="a materialized AGENIX_HOME (copied; never written)")] = Path(
        os.environ.get("AGENIX_HOME", "~/.agenix")),
    config_dir: Annotated[Path, typer.Option("--config", help="config folder the gateway loads")] = Path("config"),
    split: Annotated[str, typer.Option(help="dev (sha1(sku) 0-7, tuned on), heldout (8-f) or all")] = "dev",
    variants: Annotated[int, typer.Option(help="phrasings per fact")] = 1,
    llm_url: Annotated[
        str | None, typer.Option("--llm-url", help="OpenAI base URL of a running Gemma (default: start one)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="ask only the first N questions")] = None,
    label: Annotated[str, typer.Option(help="name of this run in the JSON (e.g. before, after)")] = "run",
    unanswerable: Annotated[bool, typer.Option(help="also ask one unanswerable question per product")] = True,
    json_path: JsonOption = None,
) -> None:
    """Answer accuracy (overall and per tier) and latency p50/p95 of customer-phrased questions, through the gateway."""
    from . import answers as bench

    if split not in ("dev", "heldout", "all"):
        raise typer.BadParameter("expected dev, heldout or all", param_hint="--split")
    report = bench.run(home.expanduser(), config_dir, split=split, variants=variants, llm_url=llm_url, limit=limit,
                       unanswerable=unanswerable, log=typer.echo)
    typer.echo(bench.format_table(label, report["summary"]))
    if json_path:
        bench.write_json(report, json_path, label)
