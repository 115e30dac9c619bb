"""The Agenix code location: assets, checks, jobs, schedules, sensors and resources in one Definitions.

Loading it builds definitions and nothing else: the graph comes from config/ and the prepared dbt manifest
(`agenix prepare`), and every setting a run needs (AGENIX_HOME, AGENIX_AS_OF, AGENIX_CHROMA_URL, ...) is read
by the resources when a run uses them, so one loaded location serves whatever environment runs it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from .assets.governance import build_governance_assets, privacy_review_key
from .assets.rag import build_rag_assets
from .assets.audit import build_audit_assets
from .assets.deployment import build_deployment_assets
from .assets.evaluation import build_evaluation_assets
from .assets.rag import rag_key
from .assets.release import MODEL_REGISTRY, build_model_registry_asset, build_release_assets
from .assets.sources import build_source_assets, raw_key
from .assets.transform import build_transform_assets, dbt_resource
from .core.config import load_project_config
from .core.paths import AgenixPaths
from .resources.deployer import LocalDeployer
from .resources.embedder import EmbedderResource
from .resources.llm import ModelServerResource
from .resources.platform import AgenixResource
from .resources.vector_store import VectorStoreResource
from .resources.warehouse import WarehouseResource
from .sensors.landing import build_landing_sensor, ingest_job_name
from .sensors.release import RELEASE_CANDIDATE_JOB, build_release_candidate_sensor, candidate_selection
from .sensors.rollout import ROLLOUT_JOB, build_rollout_sensors
from .sensors.rollout import rollback_job
from .sensors.runs import dead_run_sweeper

INGESTION_GROUPS = ("governance", "sources", "transform", "rag")
DOWNSTREAM_OF_SOURCE = ("sources", "transform", "rag")
INGESTION_JOB = "ingestion_job"
MATERIALIZE_ALL_JOB = "materialize_all"
NIGHTLY_SCHEDULE = "nightly_ingestion"
APPROVE_RELEASE_JOB = "approve_release_job"
RELEASE_STEPS = ("approved_release", "staging_deployment", "shadow_deployment", "canary_deployment",
                 "production_deployment")


def build_definitions(config_dir: Path | None = None, home: Path | None = None, as_of: str | None = None) -> dg.Definitions:
    """``config_dir``, ``home`` and ``as_of`` pin what would otherwise come from the environment when a run
    uses the resources (tests pin all three)."""
    config = load_project_config(config_dir)
    paths = AgenixPaths(Path(home).resolve()) if home else None
    sources = config.sources

    assets = [
        *build_governance_assets(sources),
        *build_source_assets(sources),
        *build_transform_assets(),
        *[a for settings in config.rag for a in build_rag_assets(settings)],
        build_model_registry_asset(),
        *[a for settings in config.rag for a in build_release_assets(settings.use_case)],
        *[a for settings in config.rag for a in build_evaluation_assets(settings.use_case)],
        *[a for settings in config.rag for a in build_deployment_assets(settings.use_case)],
    ]
    use_cases = [settings.use_case for settings in config.rag]
    # Each use case's evidence pack carries Dagster's own check history of its lane and of governance.
    assets += [a for uc in use_cases
               for a in build_audit_assets(uc, rag_key(uc, "release_history"), _audit_check_keys(assets, uc))]

    # One job per source: the gate, the raw load, and what reads it downstream (dbt models, the RAG lane),
    # so a changed knowledge-base file flows to a new index version in the run the sensor starts.
    ingest_jobs = [
        dg.define_asset_job(
            ingest_job_name(s.name),
            selection=dg.AssetSelection.assets(privacy_review_key(s.name))
            | (dg.AssetSelection.assets(raw_key(s.name)).downstream() & dg.AssetSelection.groups(*DOWNSTREAM_OF_SOURCE)),
            description=f"Ingest source {s.name} and rebuild what reads it: dbt models and RAG indexes.",
            tags={"agenix/source": s.name},
        )
        for s in sources
    ]
    ingestion_job = dg.define_asset_job(
        INGESTION_JOB,
        selection=dg.AssetSelection.groups(*INGESTION_GROUPS),
        description="Governance snapshots, every source, the dbt models and the RAG indexes.",
    )
    # The registries, each use case's release candidate and what evaluates it; the sensor selects one use case.
    release_candidate_job = dg.define_asset_job(
        RELEASE_CANDIDATE_JOB,
        selection=_union([dg.AssetSelection.assets(MODEL_REGISTRY), *[candidate_selection(uc) for uc in use_cases]]),
        description="The model, prompt and retrieval registries, the release candidate and its evaluation.",
    )
    # An approval from the Launchpad: each use case's release_approvals (config: release, role, by, note, token)
    # and the approved_release gate it feeds.
    approve_release_job = dg.define_asset_job(
        APPROVE_RELEASE_JOB,
        selection=_union([dg.AssetSelection.assets(rag_key(uc, "release_approvals"), rag_key(uc, "approved_release"))
                          for uc in use_cases]),
        description="Record a signed approval (Launchpad config: release, role, by, note and the token from "
        "`agenix approve ... --token`) and re-judge the approved_release gate.",
    )
    # The rollout sensors request single steps of it; launched whole it runs each step once, in order.
    rollout_job = dg.define_asset_job(
        ROLLOUT_JOB, selection=dg.AssetSelection.groups("deployment", "audit")
        | dg.AssetSelection.assets(*[rag_key(uc, "approved_release") for uc in use_cases]),
        description="The approved_release gate, staging, shadow, canary and production deployments, the release "
        "history and the evidence packs.",
    )
    # Approval and deployment steps move a release only when asked (the rollout sensors, the Launchpad): without
    # approvals approved_release fails its gate, and a deployment is never a side effect of "materialize everything".
    gated_steps = [rag_key(uc, name) for uc in use_cases for name in RELEASE_STEPS]
    materialize_all = dg.define_asset_job(
        MATERIALIZE_ALL_JOB, selection=dg.AssetSelection.all() - dg.AssetSelection.assets(*gated_steps),
        description="Every asset and check except the approval gate and the deployment steps (approve_release_job, "
        "release_rollout_job).")
    nightly = dg.ScheduleDefinition(
        name=NIGHTLY_SCHEDULE,
        job=ingestion_job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Full incremental ingestion every night at 02:00 UTC.",
    )

    return dg.Definitions(
        assets=assets,
        jobs=[ingestion_job, materialize_all, release_candidate_job, approve_release_job, rollout_job, rollback_job,
              *ingest_jobs],
        schedules=[nightly],
        sensors=[
            build_landing_sensor(ingest_jobs, [s.name for s in sources]),
            build_release_candidate_sensor(release_candidate_job, use_cases),
            *build_rollout_sensors(rollout_job, use_cases),
            dead_run_sweeper,
        ],
        resources={
            "agenix": AgenixResource(
                home=str(paths.home) if paths else None,
                config_dir=str(config.config_dir) if config_dir else None,
                as_of=as_of,
            ),
            "warehouse": WarehouseResource(path=str(paths.warehouse) if paths else None),
            "dbt": dbt_resource(),
            "vector_store": VectorStoreResource(path=str(paths.chroma) if paths else None),
            "embedder": EmbedderResource(),
            "model_servers": ModelServerResource(),
            "deployer": LocalDeployer(),
        },
        # One step at a time in the run's own process: nearly every step writes the DuckDB file, which one
        # process may hold at a time, so parallel step processes would only contend for its lock (and, on an
        # instance without our dagster.yaml pool limit, fail on it). Runs still queue on the `duckdb` pool.
        executor=dg.in_process_executor,
    )


def _audit_check_keys(assets: list, use_case: str) -> list[dg.AssetCheckKey]:
    lane = use_case.replace("-", "_")
    keys = []
    for a in assets:
        if not isinstance(a, dg.AssetsDefinition):
            continue
        for ck in a.check_keys:
            if ck.asset_key.path[0] == lane or a.group_names_by_key.get(ck.asset_key) == "governance":
                keys.append(ck)
    return keys


def _union(selections: list[dg.AssetSelection]) -> dg.AssetSelection:
    combined = selections[0]
    for s in selections[1:]:
        combined = combined | s
    return combined


defs = build_definitions()
