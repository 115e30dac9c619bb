"""Transform lane: dbt models that type, clean, deduplicate and minimize the raw tables (seed step 2.2).

dbt runs with `dbt build`, so each model's tests run right after it and a failing test skips what is
downstream; dagster-dbt reports every dbt test as an asset check.

Loading the code location reads a manifest prepared beforehand (`agenix prepare`, run by `make install` and by
the `agenix` commands that start Dagster) and never runs dbt: `dbt parse` takes seconds and `dagster dev`
reloads the location often. A missing manifest, or one older than the dbt project's files (a content hash
recorded when it was prepared), stops the load with the command to run.
"""

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from ..core import governance as rules
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseLockTimeout, WarehouseResource, lock_conflict

GROUP = "transform"
OWNER = "team:data"
FIELDS_ALLOWED_BY_REGISTER = "fields_allowed_by_register"
CLEANED_PREFIX = "cleaned_"
DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
PREPARE_COMMAND = "agenix prepare"
# Written beside the manifest when it is prepared: the hash of the dbt project files it was parsed from.
PREPARED_STAMP = "agenix_prepared.json"
# What dbt writes or installs inside the project; not part of what the manifest is parsed from.
_NOT_SOURCES = {"target", "logs", "dbt_packages", ".user.yml"}

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class DbtManifestError(RuntimeError):
    """The prepared dbt manifest is missing or older than the dbt project."""


def dbt_executable() -> str:
    """dbt from this interpreter's environment, so it is found without an activated virtualenv."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def dbt_resource(project: DbtProject = dbt_project) -> DbtCliResource:
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


def dbt_project_hash(project_dir: Path = DBT_PROJECT_DIR) -> str:
    """sha256 over the relative path and bytes of every file dbt parses (models, macros, project, profile)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in project_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(project_dir)
        if rel.parts[0] in _NOT_SOURCES:
            continue
        digest.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _stamp_path(project: DbtProject) -> Path:
    return project.manifest_path.parent / PREPARED_STAMP


def manifest_problem(project: DbtProject = dbt_project) -> str | None:
    """Why the prepared manifest cannot be used (missing, or parsed from other dbt files), or None."""
    manifest, stamp = project.manifest_path, _stamp_path(project)
    if not manifest.exists():
        return f"the dbt manifest {manifest} does not exist"
    if not stamp.exists():
        return f"the dbt manifest {manifest} was not prepared by `{PREPARE_COMMAND}` (no {stamp.name} beside it)"
    try:
        recorded = json.loads(stamp.read_text())["dbt_project_hash"]
    except (ValueError, KeyError, TypeError):
        return f"{stamp} is unreadable"
    if recorded != dbt_project_hash(project.project_dir):
        return f"the dbt manifest {manifest} is stale: files under {project.project_dir} changed after it was prepared"
    return None


def require_prepared_manifest(project: DbtProject = dbt_project) -> Path:
    problem = manifest_problem(project)
    if problem:
        raise DbtManifestError(f"{problem}. Run `{PREPARE_COMMAND}` (or `make install`) to parse the dbt project.")
    return project.manifest_path


def prepare_manifest(project: DbtProject = dbt_project, force: bool = False) -> bool:
    """Run `dbt parse` when the manifest is missing or stale (or ``force``); returns whether it parsed."""
    if not force and manifest_problem(project) is None:
        return False
    project_hash = dbt_project_hash(project.project_dir)
    # dbt parse resolves the profile's env var but never opens the warehouse; any path will do.
    env_before = os.environ.get("AGENIX_WAREHOUSE")
    os.environ.setdefault("AGENIX_WAREHOUSE", str(project.manifest_path.parent / "parse-only.duckdb"))
    try:
        dbt_resource(project).cli(["parse", "--quiet"], target_path=project.target_path).wait()
    finally:
        if env_before is None:
            os.environ.pop("AGENIX_WAREHOUSE", None)
    _stamp_path(project).write_text(json.dumps({"dbt_project_hash": project_hash}) + "\n")
    return True


class AgenixDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest, unique_id, project):
        spec = super().get_asset_spec(manifest, unique_id, project)
        if self.get_resource_props(manifest, unique_id)["resource_type"] == "model":
            spec = spec.replace_attributes(group_name=GROUP, owners=[OWNER])
        return spec


def dbt_vars(agenix: AgenixResource) -> dict:
    as_of = agenix.reference_date
    return {"as_of": as_of} if as_of else {}


def run_dbt_waiting_for_lock(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, args: list[str]
):
    """`dbt <args>` once the warehouse is free; dbt-duckdb opens the file itself, so it cannot use our wait.

    If another process takes the lock between our wait and dbt's open, dbt fails on its first connection,
    before any node ran and before any event was streamed: that attempt is retried within the same bounded
    wait, and a lock error after the deadline (or after dbt started reporting nodes) names the holder.
    """
    deadline = time.monotonic() + warehouse.lock_timeout
    while True:
        warehouse.wait_until_free(timeout_s=max(deadline - time.monotonic(), 0.0))
        invocation = dbt.cli(args, context=context)
        streamed = False
        try:
            for event in invocation.stream():
                streamed = True
                yield event
            return
        except DagsterDbtCliRuntimeError as exc:
            holder = lock_conflict(exc)
            if holder is None:
                raise
            if streamed or time.monotonic() >= deadline:
                raise WarehouseLockTimeout(
                    warehouse.file, warehouse.lock_timeout, holder, "dbt-duckdb could not open the warehouse"
                ) from exc
            context.log.info(f"dbt could not lock {warehouse.file} (held by {holder.describe()}); waiting and retrying")
            time.sleep(1)


def build_transform_assets() -> list:
    manifest = require_prepared_manifest()

    @dbt_assets(
        manifest=manifest,
        project=dbt_project,
        dagster_dbt_translator=AgenixDbtTranslator(),
        pool=DUCKDB_POOL,
        name="dbt_models",
    )
    def dbt_models(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, agenix: AgenixResource
    ):
        # profiles.yml reads the warehouse path from the environment; the dbt subprocess inherits it.
        os.environ["AGENIX_WAREHOUSE"] = warehouse.file
        yield from run_dbt_waiting_for_lock(context, dbt, warehouse, ["build", "--vars", json.dumps(dbt_vars(agenix))])

    cleaned_keys = sorted(
        (k for k in dbt_models.keys if k.path[-1].startswith(CLEANED_PREFIX)), key=lambda k: k.to_user_string()
    )

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                FIELDS_ALLOWED_BY_REGISTER,
                asset=key,
                blocking=True,
                description="Data minimization: the model keeps only the fields the processing register allows.",
            )
            for key in cleaned_keys
        ],
        can_subset=True,
        pool=DUCKDB_POOL,
    )
    def fields_allowed_by_register(context: dg.AssetCheckExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        config = agenix.load_config()
        selected = {spec.asset_key for spec in context.check_specs}
        with warehouse.connect(read_only=True) as con:
            for key in cleaned_keys:
                if key not in selected:
                    continue
                model = key.path[-1]
                source = model.removeprefix(CLEANED_PREFIX)
                columns = [
                    r[0]
                    for r in con.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'cleaned' "
                        "AND table_name = ? ORDER BY ordinal_position",
                        [model],
                    ).fetchall()
                ]
                finding = (
                    rules.fields_within_register({source: columns}, config)
                    if columns
                    else rules.Finding(False, f"table cleaned.{model} does not exist", {})
                )
                allowed = config.processing_register.sources.get(source)
                yield dg.AssetCheckResult(
                    asset_key=key,
                    check_name=FIELDS_ALLOWED_BY_REGISTER,
                    passed=finding.passed,
                    description=finding.reason,
                    metadata={
                        "columns": json.dumps(columns),
                        "allowed_fields": json.dumps(allowed.allowed_fields if allowed else []),
                    },
                )

    return [dbt_models, fields_allowed_by_register]
