"""Transform lane: dbt models that type, clean, deduplicate and minimize the raw tables (seed step 2.2).

dbt runs with `dbt build`, so each model's tests run right after it and a failing test skips what is
downstream; dagster-dbt reports every dbt test as an asset check.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from ..core import governance as rules
from ..core.paths import AgenixPaths
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource

GROUP = "transform"
OWNER = "team:data"
FIELDS_ALLOWED_BY_REGISTER = "fields_allowed_by_register"
CLEANED_PREFIX = "cleaned_"
DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_executable() -> str:
    """dbt from this interpreter's environment, so it is found without an activated virtualenv."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Parse the dbt project when its manifest is missing (fresh clone) or when running `dagster dev`."""
    # dbt parse needs the profile's env var to resolve, not a real warehouse.
    os.environ.setdefault("AGENIX_WAREHOUSE", str(AgenixPaths.from_env().warehouse))
    if not project.manifest_path.exists() or project.preparer.using_dagster_dev():
        dbt_resource().cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return project.manifest_path


class AgenixDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest, unique_id, project):
        spec = super().get_asset_spec(manifest, unique_id, project)
        if self.get_resource_props(manifest, unique_id)["resource_type"] == "model":
            spec = spec.replace_attributes(group_name=GROUP, owners=[OWNER])
        return spec


def dbt_vars(agenix: AgenixResource) -> dict:
    return {"as_of": agenix.as_of} if agenix.as_of else {}


def build_transform_assets() -> list:
    manifest = ensure_manifest()

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
        os.environ["AGENIX_WAREHOUSE"] = warehouse.path
        yield from dbt.cli(["build", "--vars", json.dumps(dbt_vars(agenix))], context=context).stream()

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
