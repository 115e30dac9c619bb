"""`agenix`: the one command-line entry point for what a user does outside the Dagster UI."""

from __future__ import annotations

import datetime as dt
import json
import time
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from .core.config import ConfigError, load_project_config
from .core.paths import AgenixPaths

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Agenix: a private LLM + RAG platform on Dagster.")

DAGSTER_YAML = """\
# Written by `agenix init`. The DuckDB warehouse has one writer at a time: every asset that writes it is in
# the `duckdb` pool, and pools default to one op at a time across all runs.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
    granularity: op
run_monitoring:
  enabled: true
"""

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints a table and writes JSON with --json PATH.")
app.add_typer(bench_app, name="bench")

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Platform folder (default: $AGENIX_HOME or .agenix)", show_default=False)
]


def _paths(home: Path | None) -> AgenixPaths:
    if home is not None:
        os.environ["AGENIX_HOME"] = str(home.resolve())
    paths = AgenixPaths.from_env()
    os.environ["AGENIX_HOME"] = str(paths.home)
    return paths


def init_home(paths: AgenixPaths) -> None:
    """Create AGENIX_HOME with a DAGSTER_HOME whose dagster.yaml sets the DuckDB pool."""
    for folder in (paths.home, paths.landing, paths.dagster_home, paths.reports):
        folder.mkdir(parents=True, exist_ok=True)
    dagster_yaml = paths.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)


@app.command()
def init(home: HomeOption = None) -> None:
    """Create the platform folder (landing zone, DAGSTER_HOME with dagster.yaml)."""
    paths = _paths(home)
    init_home(paths)
    typer.echo(f"AGENIX_HOME={paths.home}\nDAGSTER_HOME={paths.dagster_home}")


@app.command("sample-data")
def sample_data(
    scale: Annotated[str, typer.Option(help="small (tests), medium, or large (benchmarks)")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed and as-of date give the same bytes")] = 7,
    as_of: Annotated[str | None, typer.Option(help="Reference date YYYY-MM-DD (default: today)")] = None,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing if the landing zone already has sample data")] = False,
    home: HomeOption = None,
) -> None:
    """Generate the fictional industrial supplier into $AGENIX_HOME/landing."""
    from .core.sample_data import generate_sample_company

    if scale not in ("small", "medium", "large"):
        raise typer.BadParameter(f"scale must be small, medium or large, not {scale!r}", param_hint="--scale")
    paths = _paths(home)
    init_home(paths)
    marker = paths.manifest_dir / "sample.json"
    if if_missing and marker.exists():
        typer.echo(f"sample data already in {paths.landing} ({marker}); leaving it")
        return
    date = dt.date.fromisoformat(as_of) if as_of else None
    summary = generate_sample_company(paths.landing, scale=scale, seed=seed, as_of=date)
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command("check-config")
def check_config(config_dir: Annotated[Path | None, typer.Option(help="config folder")] = None) -> None:
    """Validate every YAML under config/ and print what is wrong, with file, line and key."""
    try:
        config = load_project_config(config_dir)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {len(config.sources)} sources, {len(config.use_cases)} use cases in {config.config_dir}")


@app.command()
def materialize(
    job: Annotated[str, typer.Option(help="Job to run in this process")] = "materialize_all",
    home: HomeOption = None,
) -> None:
    """Run a job in this process, recorded in DAGSTER_HOME so the UI shows the result."""
    paths = _paths(home)
    init_home(paths)
    import dagster as dg

    from .definitions import build_definitions

    defs = build_definitions(home=paths.home)
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
    failed = [e for e in result.all_events if e.is_step_failure]
    check_failures = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
    ]
    for ev in check_failures:
        typer.echo(f"check failed: {ev.asset_key.to_user_string()} {ev.check_name}: {ev.description}", err=True)
    for ev in failed:
        typer.echo(f"step failed: {ev.step_key}: {ev.event_specific_data.error.message.strip()}", err=True)
    typer.echo(f"run {result.run_id}: {'success' if result.success else 'FAILED'}")
    if not result.success:
        raise typer.Exit(1)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Web UI port")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    home: HomeOption = None,
) -> None:
    """Start `dagster dev` (web UI and daemon: sensors and schedules) on this platform folder."""
    paths = _paths(home)
    init_home(paths)
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    os.execv(dagster, [dagster, "dev", "-w", str(workspace), "-h", host, "-p", str(port)])


def _stop_group(proc) -> None:
    """SIGINT the process group (dagster dev shuts its children down), then SIGTERM, then SIGKILL."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            # The leader is gone; give the rest of the group the same signal's grace period.
            time.sleep(1)
            os.killpg(proc.pid, 0)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Web UI port")] = 3000,
    chroma_port: Annotated[int, typer.Option(help="Chroma server port")] = 8000,
    scale: Annotated[str, typer.Option(help="Sample company scale when the landing zone is empty")] = "small",
    home: HomeOption = None,
) -> None:
    """The local stack: a Chroma server on AGENIX_HOME/chroma, every asset materialized, then the UI.

    The Chroma server lets the UI's runs, the CLI and (later) the gateway read the same index from several
    processes. Ctrl-C stops the UI and the Chroma server.
    """
    import signal
    import subprocess

    from .core.index import ChromaServer, chroma_client

    paths = _paths(home)
    init_home(paths)
    url = f"http://127.0.0.1:{chroma_port}"
    server = None
    try:
        chroma_client("server", port=chroma_port).heartbeat()
        typer.echo(f"using the Chroma server already on {url}")
    except Exception:
        server = ChromaServer.start(paths.chroma, port=chroma_port, timeout=60)
        typer.echo(f"Chroma server on {url} (data {paths.chroma}, log {server.log_path})")
    env = {**os.environ, "AGENIX_CHROMA_URL": url}
    agenix = [sys.executable, "-m", "agenix_assets.cli"]
    ui_proc = None

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        subprocess.run([*agenix, "sample-data", "--scale", scale, "--if-missing"], env=env, check=True)
        result = subprocess.run([*agenix, "materialize"], env=env)
        if result.returncode != 0:
            typer.echo("materialization failed: the UI shows which step and why", err=True)
        # Its own process group, so stopping the UI reaches dagster dev's webserver, daemon and code servers.
        ui_proc = subprocess.Popen([*agenix, "ui", "--port", str(port)], env=env, start_new_session=True)
        ui_proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if ui_proc is not None:
            _stop_group(ui_proc)
        if server is not None:
            server.stop()


@bench_app.command("pii")
def bench_pii(
    scale: Annotated[str, typer.Option(help="sample company scale to generate and evaluate")] = "small",
    seed: Annotated[int, typer.Option(help="sample seed")] = 7,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """Precision and recall of PII redaction against the sample generator's manifest of planted PII."""
    import tempfile
    import time

    from .core.pii import PiiRedactor, evaluate, load_evaluation_sample
    from .core.sample_data import generate_sample_company

    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        generate_sample_company(landing, scale=scale, seed=seed, as_of=dt.date(2026, 11, 1))
        sample = load_evaluation_sample(landing)
        redactor = PiiRedactor.from_contacts(sample["known_people"])
        started = time.perf_counter()
        report = evaluate(redactor, sample["texts"], sample["manifest"])
        seconds = time.perf_counter() - started
    report["texts_per_second"] = round(report["texts"] / seconds, 1)
    rows = [("texts", report["texts"]), ("planted spans", report["planted"]), ("detected spans", report["detected"]),
            ("recall, structured PII (target 0.99)", report["recall_structured"]),
            ("recall, known-contact names (target 0.95)", report["recall_known_contact_names"]),
            ("recall, unknown persons", report["recall_unknown_persons"]),
            ("precision (target 0.9)", report["precision"]), ("texts/s", report["texts_per_second"])]
    rows += [(f"  {t}: recall / precision", f"{v['recall']} / {v['precision']}") for t, v in sorted(report["per_type"].items())]
    for name, value in rows:
        typer.echo(f"{name:<45} {value}")
    if json_path:
        json_path.write_text(json.dumps({k: v for k, v in report.items() if k not in ("misses", "false_positives")}, indent=2))
    if not report["meets_targets"]:
        raise typer.Exit(1)


@bench_app.command("retrieval")
def bench_retrieval(
    beir: Annotated[Path, typer.Option("--beir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")],
    split: Annotated[str, typer.Option("--split", help="qrels split to evaluate (train is cross-fitted)")] = "train",
    json_path: Annotated[Path | None, typer.Option("--json", help="write results JSON here")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="corpus embedding cache")] = None,
) -> None:
    """nDCG@10, Recall@10/100, MRR@10 and query latency of dense, BM25, hybrid and production retrieval."""
    from .bench.retrieval import DEFAULT_CACHE_DIR, run_retrieval_benchmark

    run_retrieval_benchmark(beir, split, json_path, cache_dir=cache_dir or DEFAULT_CACHE_DIR)


@bench_app.command("retrieval-latency")
def bench_retrieval_latency(
    beir: Annotated[Path, typer.Option("--beir", help="BEIR folder used to synthesise passages")],
    docs: Annotated[int, typer.Option("--docs", help="index size")] = 100_000,
    queries: Annotated[int, typer.Option("--queries", help="timed queries")] = 200,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results JSON here")] = None,
) -> None:
    """Query latency p50/p95 (query embedding included) of every retrieval path on a synthetic index."""
    from .bench.retrieval import DEFAULT_CACHE_DIR, run_latency_benchmark

    run_latency_benchmark(beir, docs, queries, json_path, cache_dir=DEFAULT_CACHE_DIR)


@bench_app.command("indexing")
def bench_indexing(
    scale: Annotated[str, typer.Option(help="sample company scale")] = "large",
    json_path: Annotated[Path | None, typer.Option("--json", help="write results JSON here")] = None,
    workdir: Annotated[Path | None, typer.Option(help="keep the benchmark's platform folder here")] = None,
) -> None:
    """Full index build throughput vs raw model.encode, rebuild after 1% of documents change, peak memory."""
    from .bench.indexing import print_table, run_indexing_benchmark

    print_table(run_indexing_benchmark(scale=scale, workdir=workdir, json_path=json_path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
