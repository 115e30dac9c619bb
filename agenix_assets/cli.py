"""`agenix`: the one command-line entry point for what a user does outside the Dagster UI."""

from __future__ import annotations

import datetime as dt
import json
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
