"""Release-candidate sensor: re-materialize a use case's candidate (and what evaluates it) when any part changed.

Every tick reads the registries' YAML and the index versions' verdict files (no warehouse, no model), resolves
the use case's candidate spec the way the release_candidate asset does, and compares the candidate's hash with
the data version of the asset's latest materialization on this instance. A different hash (a new prompt
version, an edited model entry or retrieval config, a new servable index version) requests one run of the
registries, the candidate and everything downstream of it; the run key is the candidate hash, so one change
never starts two runs. A governance-only edit (owner, purpose, risk rating) changes no candidate and starts no
run; the registries show it on their next materialization.
"""

from __future__ import annotations

import dagster as dg

from ..assets.release import config_dir_of, registry_keys, release_candidate_key
from ..core import registry as core
from ..core.config import ConfigError
from ..resources.platform import AgenixResource

RELEASE_CANDIDATE_SENSOR = "release_candidate_sensor"
RELEASE_CANDIDATE_JOB = "release_candidate_job"
DATA_VERSION_TAG = "dagster/data_version"


def candidate_selection(use_case: str) -> dg.AssetSelection:
    """The registries of the use case, its candidate and its evaluation. Approval and deployment are not in it:
    rollout_sensor requests the approved_release gate for a passed evaluation, and moves an approved release."""
    candidate = dg.AssetSelection.assets(release_candidate_key(use_case))
    return dg.AssetSelection.assets(*registry_keys(use_case)) | candidate | (
        candidate.downstream() & dg.AssetSelection.groups("evaluation"))


def last_data_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG)


def build_release_candidate_sensor(job: dg.UnresolvedAssetJobDefinition, use_cases: list[str]) -> dg.SensorDefinition:
    @dg.sensor(
        name=RELEASE_CANDIDATE_SENSOR,
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a run of the registries, the release candidate and its evaluation when a part of a "
        "use case's candidate changed (prompt, model, retrieval config, servable index version).",
    )
    def release_candidate_sensor(context: dg.SensorEvaluationContext, agenix: AgenixResource):
        config_dir, index_root = config_dir_of(agenix), agenix.paths.home / "index"
        requests, notes = [], []
        for use_case in use_cases:
            try:
                resolution = core.current_candidate(config_dir, index_root, use_case)
            except ConfigError as exc:
                notes.append(f"{use_case}: registries invalid, not requesting a run: {exc}")
                continue
            if not resolution.servable_versions:
                notes.append(f"{use_case}: waiting for a servable index version")
                continue
            c = resolution.candidate
            key = release_candidate_key(use_case)
            last = last_data_version(context.instance, key)
            if last == c.candidate_hash:
                notes.append(f"{use_case}: candidate {c.candidate_id} unchanged")
                continue
            selection = None
            if context.repository_def is not None:
                selection = list(candidate_selection(use_case).resolve(context.repository_def.asset_graph))
            requests.append(
                dg.RunRequest(
                    run_key=c.candidate_hash,
                    asset_selection=selection,
                    tags={"agenix/use_case": use_case, "agenix/candidate": c.candidate_id,
                          "agenix/trigger": "release_candidate"},
                )
            )
            context.log.info(f"{use_case}: candidate {c.candidate_id} (last materialized: {last or 'never'})")
        if requests:
            return requests
        return dg.SkipReason("; ".join(notes) or "no use case with a release candidate")

    return release_candidate_sensor
