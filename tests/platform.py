"""A platform in a temp folder (landing zone, warehouse, Chroma, config) and helpers to read run results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from agenix_assets.definitions import build_definitions
from tests.conftest import AS_OF


@dataclass
class Platform:
    home: Path
    config_dir: Path
    instance: dg.DagsterInstance

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    def defs(self) -> dg.Definitions:
        return build_definitions(config_dir=self.config_dir, home=self.home, as_of=AS_OF)

    def run_job(self, name: str) -> dg.ExecuteInProcessResult:
        return self.defs().resolve_job_def(name).execute_in_process(instance=self.instance, raise_on_error=False)

    def run(self, selection: list[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
        """Materialize ``selection`` (default: what `materialize_all` selects but the evaluation, which
        tests/assets/test_evaluation.py runs with a model server; neither selects the approval gate and the deployment
        steps, which move an approved release: tests/assets/test_rollout.py)."""
        from agenix_assets.definitions import MATERIALIZE_ALL_JOB

        defs = self.defs()
        if selection is None:
            everything = defs.resolve_job_def(MATERIALIZE_ALL_JOB).asset_layer.selected_asset_keys
            selection = [k for a in defs.assets for k in a.keys
                         if k in everything and a.group_names_by_key.get(k) != "evaluation"]
        return dg.materialize(
            list(defs.assets),
            resources=defs.resources,
            instance=self.instance,
            selection=selection,
            raise_on_error=False,
        )

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()


def asset_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    [mat] = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.event_specific_data.materialization.asset_key == key
    ]
    return {k: v.value for k, v in mat.metadata.items()}


def raw_metadata(result: dg.ExecuteInProcessResult, source: str) -> dict:
    return asset_metadata(result, dg.AssetKey(["raw", source]))


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in (
            ev.event_specific_data
            for ev in result.all_events
            if ev.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    }


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


