"""The Agenix code location: assets, checks, jobs, schedules, sensors and resources in one Definitions."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from .assets.governance import build_governance_assets, privacy_review_key
from .assets.sources import build_source_assets, raw_key
from .assets.transform import build_transform_assets, dbt_resource
from .core.config import load_project_config
from .core.paths import AgenixPaths
from .resources.platform import AgenixResource
from .resources.warehouse import WarehouseResource
from .sensors.landing import build_landing_sensor, ingest_job_name

INGESTION_GROUPS = ("governance", "sources", "transform")
INGESTION_JOB = "ingestion_job"
MATERIALIZE_ALL_JOB = "materialize_all"
NIGHTLY_SCHEDULE = "nightly_ingestion"


def build_definitions(config_dir: Path | None = None, home: Path | None = None, as_of: str | None = None) -> dg.Definitions:
    config = load_project_config(config_dir)
    paths = AgenixPaths(Path(home).resolve()) if home else AgenixPaths.from_env()
    sources = config.sources

    assets = [*build_governance_assets(sources), *build_source_assets(sources), *build_transform_assets()]

    # One job per source: the gate, the raw load and the dbt models downstream of it, nothing else.
    ingest_jobs = [
        dg.define_asset_job(
            ingest_job_name(s.name),
            selection=dg.AssetSelection.assets(privacy_review_key(s.name))
            | (dg.AssetSelection.assets(raw_key(s.name)).downstream() & dg.AssetSelection.groups("sources", "transform")),
            description=f"Ingest source {s.name} and rebuild the dbt models that read it.",
            tags={"agenix/source": s.name},
        )
        for s in sources
    ]
    ingestion_job = dg.define_asset_job(
        INGESTION_JOB,
        selection=dg.AssetSelection.groups(*INGESTION_GROUPS),
        description="Governance snapshots, every source and the dbt models.",
    )
    materialize_all = dg.define_asset_job(MATERIALIZE_ALL_JOB, selection=dg.AssetSelection.all(), description="Every asset and check.")
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
        jobs=[ingestion_job, materialize_all, *ingest_jobs],
        schedules=[nightly],
        sensors=[build_landing_sensor(ingest_jobs, [s.name for s in sources])],
        resources={
            "agenix": AgenixResource(
                home=str(paths.home), config_dir=str(config.config_dir), as_of=as_of or os.environ.get("AGENIX_AS_OF")
            ),
            "warehouse": WarehouseResource(path=str(paths.warehouse)),
            "dbt": dbt_resource(),
        },
    )


defs = build_definitions()
