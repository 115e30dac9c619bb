"""`agenix`: the one command-line entry point for what a user does outside the Dagster UI."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from agenix_bench.cli import bench_app
from serving.keys_cli import keys_app  # the gateway's key management lives with the gateway

from .approvals_cli import approve_command, approvers_app, audit_command
from .core.config import ConfigError, load_project_config, load_yaml_model
from .core.paths import AgenixPaths
from .eval_cli import eval_command

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
# The daemon (under `dagster dev`) fails runs that never start and frees slots that finished runs still hold;
# runs whose process died are swept by the agenix commands (agenix_assets/runs.py).
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 30
"""

# The benchmarks are their own package; its CLI module imports no benchmark until a command runs.
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.command("eval")(eval_command)
app.command("approve")(approve_command)
app.add_typer(approvers_app, name="approvers")
app.command("audit")(audit_command)

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Platform folder (default: $AGENIX_HOME or .agenix)", show_default=False)
]


def _paths(home: Path | None) -> AgenixPaths:
    from .sandbox import is_sandbox

    if home is not None:
        os.environ["AGENIX_HOME"] = str(home.resolve())
    paths = AgenixPaths.from_env()
    os.environ["AGENIX_HOME"] = str(paths.home)
    if is_sandbox(paths.home) and not os.environ.get("AGENIX_CONFIG_DIR"):
        # A sandbox's commands read its own config (prompts, models, manifest), never production's by default.
        os.environ["AGENIX_CONFIG_DIR"] = str(paths.home / "config")
    return paths


def init_home(paths: AgenixPaths) -> None:
    """Create AGENIX_HOME with a DAGSTER_HOME whose dagster.yaml sets the DuckDB pool."""
    for folder in (paths.home, paths.landing, paths.dagster_home, paths.reports):
        folder.mkdir(parents=True, exist_ok=True)
    dagster_yaml = paths.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)


def prepare_code_location() -> None:
    """What loading the code location needs and must not do itself: dbt's manifest (parsed when missing or
    older than the dbt project)."""
    from .assets.transform import prepare_manifest

    if prepare_manifest():
        typer.echo("[agenix] parsed the dbt project into dbt_project/target/manifest.json")


def sweep(instance) -> None:
    """Fail the runs whose process died on this host and free their concurrency slots, before starting more."""
    from .runs import sweep_dead_runs

    for found in sweep_dead_runs(instance):
        typer.echo(f"[agenix] freed the concurrency slots of {found.describe()}", err=True)


@app.command()
def init(home: HomeOption = None) -> None:
    """Create the platform folder (landing zone, DAGSTER_HOME with dagster.yaml) and prepare the dbt manifest."""
    paths = _paths(home)
    init_home(paths)
    prepare_code_location()
    typer.echo(f"AGENIX_HOME={paths.home}\nDAGSTER_HOME={paths.dagster_home}")


@app.command()
def prepare(force: Annotated[bool, typer.Option("--force", help="parse even if the manifest is current")] = False) -> None:
    """Parse the dbt project into dbt_project/target/manifest.json, which loading the code location reads.

    Run after changing anything under dbt_project/; `make install` and the agenix commands that start Dagster
    run it when the manifest is missing or stale."""
    from .assets.transform import prepare_manifest

    parsed = prepare_manifest(force=force)
    typer.echo("dbt manifest prepared" if parsed else "dbt manifest is current")


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
    from serving.config import DeploymentManifest, GatewayConfig
    from serving.prompts import load_prompt_book

    try:
        config = load_project_config(config_dir)
        gateway = GatewayConfig.load(config.config_dir)
        books = {uc: load_prompt_book(gateway.resolve(s.prompts)) for uc, s in gateway.settings.use_cases.items()}
        manifest = load_yaml_model(gateway.manifest_path, DeploymentManifest)
        for uc, dep in manifest.use_cases.items():
            if uc not in books:
                raise ConfigError(f"{gateway.manifest_path}: use_cases.{uc}: not a use case in gateway/gateway.yaml")
            for rel in filter(None, [dep.release, dep.canary and dep.canary.release, dep.shadow and dep.shadow.release]):
                if rel.model != "auto" and gateway.registry.get(rel.model) is None:
                    raise ConfigError(f"{gateway.manifest_path}: use_cases.{uc}: release {rel.name}: unknown model {rel.model!r}")
                try:
                    books[uc].get(rel.prompt_version)
                except KeyError as exc:
                    raise ConfigError(f"{gateway.manifest_path}: use_cases.{uc}: release {rel.name}: {exc.args[0]}") from None
        # The registries (governance metadata on every model, prompt version and retrieval config) and each use
        # case's release candidate spec.
        from .core.registry import load_registries, load_release_spec

        for rag in config.rag:
            load_registries(config.config_dir, rag.use_case)
            load_release_spec(config.config_dir, rag.use_case)
        # How candidates are evaluated: golden suite and no-regression tolerances per use case.
        from .core.eval_report import load_evaluation_settings

        evaluation = config.config_dir / "evaluation.yaml"
        if evaluation.is_file():
            load_evaluation_settings(config.config_dir)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {len(config.sources)} sources, {len(config.use_cases)} use cases, {len(gateway.registry.models)} "
               f"models, {len(manifest.use_cases)} deployed use case(s) in {config.config_dir}")


@app.command()
def materialize(
    job: Annotated[str, typer.Option(help="Job to run in this process")] = "materialize_all",
    home: HomeOption = None,
) -> None:
    """Run a job in this process, recorded in DAGSTER_HOME so the UI shows the result.

    Runs whose process died on this host are failed and their concurrency slots freed first; while a step
    waits for the `duckdb` pool, the run holding it is printed with its pid and whether it is alive."""
    import uuid

    from .sandbox import is_sandbox

    paths = _paths(home)
    if is_sandbox(paths.home) and job == "materialize_all":
        typer.echo(f"{paths.home} is a sandbox: it holds no landing zone or raw tables, so materializing every asset "
                   "would rebuild its minimized tables from nothing. Materialize the evaluation assets only (--job).",
                   err=True)
        raise typer.Exit(1)
    init_home(paths)
    prepare_code_location()
    import dagster as dg

    from .definitions import build_definitions
    from .resources.warehouse import DUCKDB_POOL
    from .runs import PoolWatch, host_tags, pool_holders

    defs = build_definitions(home=paths.home)
    run_id = str(uuid.uuid4())
    with dg.DagsterInstance.get() as instance:
        sweep(instance)
        if instance.event_log_storage.supports_global_concurrency_limits:
            for holder in pool_holders(instance, DUCKDB_POOL):
                typer.echo(f"[agenix] pool {DUCKDB_POOL} is held by {holder.describe()}", err=True)

        def say(line: str) -> None:
            typer.echo(f"[agenix] {line}", err=True)

        with PoolWatch(instance, run_id, DUCKDB_POOL, say):
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, raise_on_error=False, run_id=run_id, tags=host_tags()
            )
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
def rollback(
    use_case: Annotated[str, typer.Argument(help="the use case, e.g. support-assistant")],
    by: Annotated[str, typer.Option("--by", help="who rolls back (recorded in the deployment ledger)")] = "",
    reason: Annotated[str, typer.Option("--reason", help="why (recorded)")] = "manual rollback",
    home: HomeOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Put production's previous release back in force (canary and shadow cleared): one manifest write, which the
    gateway picks up within a second. Recorded in AGENIX_HOME/deployments/events.jsonl."""
    import getpass

    from .core.deployment import DeploymentError
    from .core.deployment import rollback as do_rollback

    paths = _paths(home)
    try:
        event = do_rollback(paths.home, _config_dir(config_dir), use_case,
                            actor=f"user:{by or getpass.getuser()} (agenix rollback)", reason=reason)
    except (DeploymentError, ConfigError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{use_case}: production serves {event['release']} again (was {event['previous_release']}); "
               f"ledger record {event['seq']}")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Web UI port")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    home: HomeOption = None,
) -> None:
    """Start `dagster dev` (web UI and daemon: sensors and schedules) on this platform folder."""
    import dagster as dg

    paths = _paths(home)
    init_home(paths)
    prepare_code_location()
    with dg.DagsterInstance.get() as instance:
        sweep(instance)
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    os.execv(dagster, [dagster, "dev", "-w", str(workspace), "-h", host, "-p", str(port)])


def _stop_group(proc) -> None:
    """SIGINT the process group (dagster dev shuts its children down), then SIGTERM, then SIGKILL."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
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


ConfigDirOption = Annotated[
    Path | None, typer.Option("--config-dir", help="config folder (default: $AGENIX_CONFIG_DIR or the repository's config/)",
                              show_default=False)
]


def _config_dir(config_dir: Path | None) -> Path:
    from .core.config import default_config_dir

    return Path(config_dir or default_config_dir()).resolve()


@app.command()
def gateway(
    port: Annotated[int | None, typer.Option(help="port (default: gateway.yaml, 8080)")] = None,
    host: Annotated[str | None, typer.Option(help="interface (default: gateway.yaml, 127.0.0.1)")] = None,
    environment: Annotated[str | None, typer.Option("--env", help="deployment manifest environment")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    home: HomeOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Run the OpenAI-compatible AI gateway (config/gateway/*.yaml, keys and logs under AGENIX_HOME)."""
    from serving.app import serve

    paths = _paths(home)
    try:
        serve(_config_dir(config_dir), paths.home, host=host, port=port, environment=environment, log_level=log_level)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Dagster web UI port")] = 3000,
    gateway_port: Annotated[int, typer.Option(help="AI gateway port")] = 8080,
    llm_port: Annotated[int, typer.Option(help="llama.cpp server port")] = 8090,
    chroma_port: Annotated[int, typer.Option(help="Chroma server port")] = 8000,
    scale: Annotated[str, typer.Option(help="Sample company scale when the landing zone is empty")] = "small",
    no_ui: Annotated[bool, typer.Option("--no-ui", help="do not start dagster dev")] = False,
    skip_materialize: Annotated[bool, typer.Option("--skip-materialize", help="serve what is already built")] = False,
    home: HomeOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """The whole local stack with one command: Chroma server, llama.cpp server (Gemma 3 270M), every asset
    materialized, the AI gateway and `dagster dev`. Waits until each is ready; Ctrl-C or SIGTERM stops them all."""
    import signal
    import subprocess

    from serving.model_server import LlamaCppServer, gemma_model_path

    from .core.index import ChromaServer, chroma_client
    from .processes import wait_http

    import dagster as dg

    paths = _paths(home)
    init_home(paths)
    prepare_code_location()
    with dg.DagsterInstance.get() as instance:
        sweep(instance)
    cfg = _config_dir(config_dir)
    chroma_url = f"http://127.0.0.1:{chroma_port}"
    llm_url = f"http://127.0.0.1:{llm_port}/v1"
    env = {**os.environ, "AGENIX_CHROMA_URL": chroma_url, "AGENIX_LLM_URL": llm_url, "AGENIX_CONFIG_DIR": str(cfg)}
    os.environ.update({k: env[k] for k in ("AGENIX_CHROMA_URL", "AGENIX_LLM_URL", "AGENIX_CONFIG_DIR")})
    agenix = [sys.executable, "-m", "agenix_assets.cli"]
    chroma = llm = None
    procs: list = []

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job of a script)
    try:
        try:
            chroma_client("server", port=chroma_port).heartbeat()
            typer.echo(f"[up] using the Chroma server already on {chroma_url}")
        except Exception:
            chroma = ChromaServer.start(paths.chroma, port=chroma_port, timeout=60)
            typer.echo(f"[up] Chroma server on {chroma_url} (data {paths.chroma}, log {chroma.log_path})")
        llm = LlamaCppServer(gemma_model_path(), port=llm_port, log_path=paths.home / "logs" / "llama-server.log")
        llm.start(wait=False)
        if not skip_materialize:
            subprocess.run([*agenix, "sample-data", "--scale", scale, "--if-missing"], env=env, check=True)
            # The eval report at the end of the run asks the model server: it must be up by then.
            llm.wait_ready(timeout=120)
            if subprocess.run([*agenix, "materialize"], env=env).returncode != 0:
                typer.echo("[up] materialization failed: the UI shows which step and why", err=True)
        llm.wait_ready(timeout=120)
        typer.echo(f"[up] llama.cpp server (Gemma 3 270M) on {llm_url}")
        gw = subprocess.Popen([*agenix, "gateway", "--port", str(gateway_port), "--config-dir", str(cfg)], env=env,
                              start_new_session=True)
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{gateway_port}/readyz", gw, 180, None, "the gateway")
        typer.echo(f"[up] AI gateway on http://127.0.0.1:{gateway_port}/v1  (create a key: agenix keys create "
                   "--team support --use-case support-assistant --json)")
        if no_ui:
            typer.echo("[up] ready; Ctrl-C stops everything")
            while all(p.poll() is None for p in procs):
                time.sleep(1)
            typer.echo("[up] a process exited; stopping the stack", err=True)
        else:
            ui_proc = subprocess.Popen([*agenix, "ui", "--port", str(port)], env=env, start_new_session=True)
            procs.append(ui_proc)
            typer.echo(f"[up] Dagster UI on http://127.0.0.1:{port}; Ctrl-C stops everything")
            ui_proc.wait()
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        typer.echo(f"[up] {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        import signal as _signal

        for p in procs:  # every group starts shutting down at once; then each is waited for (and forced)
            try:
                os.killpg(p.pid, _signal.SIGINT)
            except ProcessLookupError:
                pass
        # The model and vector servers stop in seconds; dagster dev's group (webserver, daemon, code servers) can
        # take longest, so it is waited for last.
        if llm is not None:
            llm.stop()
        if chroma is not None:
            chroma.stop()
        for p in reversed(procs):
            _stop_group(p)
        typer.echo("[up] stopped")


sandbox_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="Sandboxes: isolated homes on minimized data for trying prompts, models and retrieval settings.")
app.add_typer(sandbox_app, name="sandbox")
SandboxDirOption = Annotated[
    Path | None, typer.Option("--dir", help="folder of sandboxes (default: $AGENIX_SANDBOXES or agenix-sandboxes "
                              "beside AGENIX_HOME)", show_default=False)
]


@sandbox_app.command("create")
def sandbox_create(
    name: Annotated[str, typer.Argument(help="3-40 characters: a-z, 0-9, '-'")],
    from_home: Annotated[Path | None, typer.Option("--from-home", help="production's home (default: $AGENIX_HOME)",
                                                   show_default=False)] = None,
    directory: SandboxDirOption = None,
    config_dir: ConfigDirOption = None,
    environment: Annotated[str | None, typer.Option("--env", help="deployment manifest environment")] = None,
) -> None:
    """Copy the minimized data (cleaned and redacted tables, the live index version) and the config into a new
    sandbox; print the environment that points every agenix command at it."""
    from .resources.warehouse import WarehouseLockTimeout
    from .sandbox import SandboxError, create_sandbox

    home = (from_home or Path(os.environ.get("AGENIX_HOME", ".agenix"))).resolve()
    try:
        sandbox = create_sandbox(name, home, _config_dir(config_dir), directory, environment)
    except (SandboxError, ConfigError, WarehouseLockTimeout) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    init_home(AgenixPaths(sandbox.root))
    rec = sandbox.record
    typer.echo(f"sandbox {name} created at {sandbox.root} from {rec['source_home']}")
    for t in rec["tables"]:
        typer.echo(f"  {t['table']:<45} {t['rows']:>8} rows")
    for uc, info in rec["index"].items():
        typer.echo(f"  index {uc}: {', '.join(info['collections'])} (live v{info['live_version']})")
    typer.echo("  not copied: landing zone sources, raw and staging tables, Chroma store, Dagster history, gateway "
               "keys and request logs")
    typer.echo("use it with:")
    typer.echo("export " + " ".join(f"{k}={v}" for k, v in sandbox.env().items()))


@sandbox_app.command("list")
def sandbox_list(
    directory: SandboxDirOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="print sandbox.json records")] = False,
) -> None:
    """The sandboxes in the sandboxes folder."""
    from .sandbox import list_sandboxes

    found = list_sandboxes(directory)
    if json_out:
        typer.echo(json.dumps([{**s.record, "path": str(s.root)} for s in found], indent=2))
        return
    if not found:
        typer.echo("no sandboxes")
    for s in found:
        versions = "; ".join(f"{uc} v{i['live_version']}" for uc, i in s.record.get("index", {}).items())
        typer.echo(f"{s.name:<30} {s.record.get('created_at', '?'):<26} {versions:<30} {s.root}")


@sandbox_app.command("env")
def sandbox_env(name: str, directory: SandboxDirOption = None) -> None:
    """Print the export line that points the agenix commands at a sandbox (`eval "$(agenix sandbox env NAME)"`)."""
    from .sandbox import SandboxError, open_sandbox

    try:
        sandbox = open_sandbox(name, directory)
    except SandboxError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo("export " + " ".join(f"{k}={v}" for k, v in sandbox.env().items()))


@sandbox_app.command("delete")
def sandbox_delete(name: str, directory: SandboxDirOption = None) -> None:
    """Remove a sandbox (only a folder that holds a sandbox.json)."""
    from .sandbox import SandboxError, delete_sandbox

    try:
        root = delete_sandbox(name, directory)
    except SandboxError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"deleted sandbox {name} ({root})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
