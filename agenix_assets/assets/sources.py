"""Sources lane: one raw asset per entry of config/sources.yaml (seed step 2.1).

The factory is the only place a source becomes an asset, so adding a source is adding a YAML entry.
Loading itself (change capture, quarantine, the one-transaction merge) lives in core/sources.py.
"""

import json

import dagster as dg

from ..core import governance as rules
from ..core.config import SourceConfig
from ..core.sources import LoadResult, ingest_source
from ..core.tables import markdown_table
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource
from .governance import PRIVACY_REVIEW_RECORDED, SOURCE_IN_REGISTER, privacy_review_key

GROUP = "sources"
SCHEMA_CONTRACT = "schema_contract"

_DAGSTER_TYPES = {
    "VARCHAR": "string",
    "BIGINT": "int",
    "INTEGER": "int",
    "DOUBLE": "float",
    "BOOLEAN": "bool",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
}


def raw_key(source_name: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source_name])


def rejected_files(source: SourceConfig, result: LoadResult) -> list[str]:
    """Data files the contract rejected whole (a required column missing from the header, unreadable).

    A bad document is one record of a documents source, skipped with its reason, so it only warns.
    """
    if source.kind == "documents":
        return []
    return sorted({q.file for q in result.quarantine if q.whole_file})


def contract_check(source: SourceConfig, result: LoadResult) -> dg.AssetCheckResult:
    """Whole files rejected break the contract (ERROR, blocks dbt); single bad records only warn."""
    rejected = rejected_files(source, result)
    samples = [
        f"{q.file}:{q.line}" + (f" [{q.field}]" if q.field else "") + f": {q.reason}" for q in result.quarantine[:20]
    ]
    metadata = {
        "quarantined_records": result.quarantined,
        "rejected_files": len(rejected),
        "quarantine_sample": dg.MetadataValue.md("\n".join(f"- {s}" for s in samples) or "_none_"),
    }
    if rejected:
        return dg.AssetCheckResult(
            check_name=SCHEMA_CONTRACT,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(rejected)} file(s) rejected by the schema contract: {', '.join(rejected)}; "
            f"first reason: {samples[0]}",
            metadata=metadata,
        )
    if result.quarantined:
        return dg.AssetCheckResult(
            check_name=SCHEMA_CONTRACT,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{result.quarantined} record(s) quarantined in raw._agenix_quarantine; first: {samples[0]}",
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        check_name=SCHEMA_CONTRACT, passed=True, description="every record matched the contract", metadata=metadata
    )


def load_metadata(source: SourceConfig, result: LoadResult) -> dict:
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name, _DAGSTER_TYPES.get(dtype.split("(")[0], dtype.lower()))
            for name, dtype in result.schema
        ]
    )
    return {
        "load_id": result.load_id,
        "inserted": result.inserted,
        "updated": result.updated,
        "deleted": result.deleted,
        "unchanged": result.unchanged,
        "quarantined": result.quarantined,
        "files_read": result.files_read,
        "files_unchanged": result.files_unchanged,
        "files_removed": result.files_removed,
        "dagster/row_count": result.row_count,
        "dagster/column_schema": schema,
        "dagster/table_name": f"raw.{source.name}",
        "cursor": result.cursor or "",
        "preview": dg.MetadataValue.md(markdown_table(result.preview)),
    }


def build_raw_asset(source: SourceConfig) -> dg.AssetsDefinition:
    key = raw_key(source.name)

    @dg.asset(
        key=key,
        deps=[privacy_review_key(source.name)],
        group_name=GROUP,
        owners=[source.owner],
        kinds={"duckdb", source.kind},
        pool=DUCKDB_POOL,
        tags={"agenix/source": source.name, "agenix/data_domain": source.data_domain},
        description=(source.description or f"Raw {source.kind} source {source.name}.")
        + f" Loaded incrementally ({source.change_detection.mode}) from landing/{source.location} into raw.{source.name}.",
        metadata={
            "location": source.location,
            "primary_key": source.primary_key,
            "change_detection": json.dumps(source.change_detection.model_dump()),
            "data_categories": ", ".join(source.data_categories),
            "privacy_review": source.privacy_review or "(none)",
        },
        check_specs=[
            dg.AssetCheckSpec(
                SCHEMA_CONTRACT,
                asset=key,
                blocking=True,
                description="Every file has the required columns (else ERROR, blocking downstream); every record "
                "parses to its declared types (else WARN, the record is quarantined).",
            )
        ],
    )
    def _raw(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        config = agenix.load_config()
        current = config.source(source.name)
        # The gate asset's blocking checks stop this asset inside a run; re-checking both of them here, against
        # the config as it is now, also stops a run that selected the raw asset alone, a retry or a sensor run,
        # so no path ingests an unreviewed or unregistered source. Nothing is written when either fails.
        findings = {
            PRIVACY_REVIEW_RECORDED: rules.privacy_review_recorded(current, config),
            SOURCE_IN_REGISTER: rules.source_registered(current, config),
        }
        failed = {name: f for name, f in findings.items() if not f.passed}
        if failed:
            raise dg.Failure(
                description=f"ingestion of raw/{source.name} refused: "
                + "; ".join(f"{name} failed: {f.reason}" for name, f in failed.items())
                + f". raw.{source.name} keeps its last load.",
                metadata={
                    "failed_checks": ", ".join(failed),
                    "evidence": dg.MetadataValue.json(
                        {name: {"reason": f.reason, **{k: str(v) for k, v in f.evidence.items()}} for name, f in failed.items()}
                    ),
                },
            )
        with warehouse.connect() as con:
            result = ingest_source(con, current, agenix.paths.landing)
        context.log.info(
            f"{source.name}: +{result.inserted} ~{result.updated} -{result.deleted} ={result.unchanged} "
            f"quarantined {result.quarantined}"
        )
        yield dg.MaterializeResult(metadata=load_metadata(current, result))
        yield contract_check(current, result)

    return _raw


def build_source_assets(sources: list[SourceConfig]) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(s) for s in sources]
