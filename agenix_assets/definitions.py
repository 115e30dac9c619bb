"""The Agenix code location: assets, checks, jobs, schedules, sensors and resources in one Definitions."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from .assets.governance import build_governance_assets, privacy_review_key
from .assets.rag import build_rag_assets
from .assets.sources import build_source_assets, raw_key
from .assets.transform import build_transform_assets, dbt_resource
from .core.config import load_project_config
from .core.paths import AgenixPaths
from .resources.embedder import EmbedderResource
from .resources.platform import AgenixResource
from .resources.vector_store import VectorStoreResource
from .resources.warehouse import WarehouseResource
from .sensors.landing import build_landing_sensor, ingest_job_name

INGESTION_GROUPS = ("governance", "sources", "transform", "rag")
DOWNSTREAM_OF_SOURCE = ("sources", "transform", "rag")
INGESTION_JOB = "ingestion_job"
MATERIALIZE_ALL_JOB = "materialize_all"
NIGHTLY_SCHEDULE = "nightly_ingestion"


def vector_store_resource(paths: AgenixPaths) -> VectorStoreResource:
    """A Chroma server when AGENIX_CHROMA_URL is set (make demo, production), else embedded in AGENIX_HOME/chroma."""
    url = os.environ.get("AGENIX_CHROMA_URL")
    if url:
        return VectorStoreResource(mode="server", url=url)
    return VectorStoreResource(mode="embedded", path=str(paths.chroma))


def build_definitions(config_dir: Path | None = None, home: Path | None = None, as_of: str | None = None) -> dg.Definitions:
    config = load_project_config(config_dir)
    paths = AgenixPaths(Path(home).resolve()) if home else AgenixPaths.from_env()
    sources = config.sources

    assets = [
        *build_governance_assets(sources),
        *build_source_assets(sources),
        *build_transform_assets(),
        *[a for settings in config.rag for a in build_rag_assets(settings)],
    ]

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
            "vector_store": vector_store_resource(paths),
            "embedder": EmbedderResource(),
        },
    )


defs = build_definitions()
