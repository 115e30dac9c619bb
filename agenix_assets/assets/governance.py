"""Governance lane: use-case charters, the processing register (RoPA), the risk register, and the
per-source privacy-review gates that every raw source waits on (seed steps 1 and 9.2).

Each asset snapshots its YAML into the warehouse's `governance` schema, so the audit trail (which
charter and register were in force for a run) is queryable next to the data it governs.
"""

from __future__ import annotations

import json

import dagster as dg
import polars as pl

from ..core import governance as rules
from ..core.config import ProjectConfig, SourceConfig
from ..core.tables import markdown_table, replace_table
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource

GROUP = "governance"
OWNER = "team:compliance"

USE_CASE_CHARTERS = dg.AssetKey("use_case_charters")
PROCESSING_REGISTER = dg.AssetKey("processing_register")
RISK_REGISTER = dg.AssetKey("risk_register")

CHARTER_COMPLETE = "charter_complete"
HIGH_RISK_HAS_DPIA = "high_risk_has_dpia"
USE_CASE_SOURCES_REGISTERED = "use_case_sources_registered"
REGISTER_COVERS_SOURCES = "register_covers_all_sources"
PRIVACY_REVIEW_RECORDED = "privacy_review_recorded"
SOURCE_IN_REGISTER = "source_in_processing_register"


def privacy_review_key(source_name: str) -> dg.AssetKey:
    return dg.AssetKey(["privacy_review", source_name])


def evidence_metadata(evidence: dict) -> dict:
    """A gate's evidence as check metadata: numbers stay numbers (the UI plots them), the rest is JSON."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in evidence.items()}


def _check_result(finding: rules.Finding, asset_key: dg.AssetKey | None = None, check_name: str | None = None):
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name,
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=finding.reason,
        metadata=evidence_metadata(finding.evidence),
    )


@dg.asset(
    key=PROCESSING_REGISTER,
    group_name=GROUP,
    owners=[OWNER],
    kinds={"yaml", "duckdb"},
    pool=DUCKDB_POOL,
    description="Record of processing activities (RoPA): purposes, lawful basis, data categories, allowed "
    "fields, retention and history windows per source. Source: config/governance/processing_register.yaml.",
)
def processing_register(agenix: AgenixResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    config = agenix.load_config()
    register = config.processing_register
    activities = pl.DataFrame(
        [
            {
                "activity_id": a.id,
                "name": a.name,
                "purposes": a.purposes,
                "lawful_basis": a.lawful_basis,
                "data_subjects": a.data_subjects,
                "controller": a.controller,
            }
            for a in register.activities
        ]
    )
    sources = pl.DataFrame(
        [
            {
                "source": name,
                "activities": s.activities,
                "data_categories": s.data_categories,
                "allowed_fields": s.allowed_fields,
                "retention_days": s.retention_days,
                "history_window_days": s.history_window_days,
                "history_column": s.history_column,
            }
            for name, s in sorted(register.sources.items())
        ],
        schema_overrides={"history_window_days": pl.Int64, "history_column": pl.Utf8},
    )
    with warehouse.connect() as con:
        replace_table(con, "governance", "processing_activities", activities)
        replace_table(con, "governance", "processing_register", sources)
    return dg.MaterializeResult(
        metadata={
            "activities": len(register.activities),
            "registered_sources": len(register.sources),
            "register": dg.MetadataValue.md(
                markdown_table(
                    [
                        {
                            "source": r["source"],
                            "categories": ", ".join(r["data_categories"]),
                            "allowed fields": len(r["allowed_fields"]),
                            "retention (days)": r["retention_days"],
                            "history window (days)": r["history_window_days"],
                        }
                        for r in sources.to_dicts()
                    ]
                )
            ),
            "file": str(config.files["processing_register"]),
        }
    )


@dg.asset_check(asset=PROCESSING_REGISTER, name=REGISTER_COVERS_SOURCES, description="Every configured source has an entry in the processing register (a missing one blocks that source at its privacy-review gate).")
def register_covers_all_sources(agenix: AgenixResource) -> dg.AssetCheckResult:
    config = agenix.load_config()
    missing = sorted({s.name for s in config.sources} - set(config.processing_register.sources))
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"sources missing from the register: {missing}" if missing else "every source is registered",
        metadata={"configured_sources": len(config.sources), "missing": json.dumps(missing)},
    )


@dg.asset(
    key=RISK_REGISTER,
    group_name=GROUP,
    owners=[OWNER],
    kinds={"yaml", "duckdb"},
    pool=DUCKDB_POOL,
    description="AI risk register: risks per use case with likelihood, impact, mitigation and owner. "
    "Source: config/governance/risk_register.yaml.",
)
def risk_register(agenix: AgenixResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    config = agenix.load_config()
    rows = [r.model_dump() for r in config.risk_register.risks]
    frame = pl.DataFrame(
        rows,
        schema={k: pl.Utf8 for k in ("id", "use_case", "description", "likelihood", "impact", "mitigation", "owner", "status")},
    )
    with warehouse.connect() as con:
        replace_table(con, "governance", "risk_register", frame)
    return dg.MaterializeResult(
        metadata={
            "risks": len(rows),
            "open_risks": sum(1 for r in rows if r["status"] == "open"),
            "high_impact_risks": sum(1 for r in rows if r["impact"] == "high"),
            "register": dg.MetadataValue.md(markdown_table(rows, ["id", "use_case", "likelihood", "impact", "status", "owner"])),
        }
    )


@dg.asset(
    key=USE_CASE_CHARTERS,
    deps=[PROCESSING_REGISTER, RISK_REGISTER],
    group_name=GROUP,
    owners=["team:llm"],
    kinds={"yaml", "duckdb"},
    pool=DUCKDB_POOL,
    description="Use-case charters: business problem, users, KPIs with targets, latency and uptime targets, "
    "data domains, sources and risk class. Source: config/use_cases/*.yaml.",
    check_specs=[
        dg.AssetCheckSpec(CHARTER_COMPLETE, asset=USE_CASE_CHARTERS, blocking=True, description="Every charter states its problem, users, KPIs with targets, latency and uptime targets, data domains and sources."),
        dg.AssetCheckSpec(HIGH_RISK_HAS_DPIA, asset=USE_CASE_CHARTERS, blocking=True, description="A high-risk use case has a DPIA reference."),
        dg.AssetCheckSpec(USE_CASE_SOURCES_REGISTERED, asset=USE_CASE_CHARTERS, blocking=True, description="Every source a use case reads is configured and registered in the RoPA with its data categories."),
    ],
)
def use_case_charters(agenix: AgenixResource, warehouse: WarehouseResource):
    config = agenix.load_config()
    rows = [
        {
            "use_case": c.id,
            "name": c.name,
            "owner": c.owner,
            "risk_class": c.risk_class,
            "dpia_reference": c.dpia_reference,
            "latency_target_ms_p95": c.latency_target_ms_p95,
            "uptime_target_percent": c.uptime_target_percent,
            "data_domains": c.data_domains,
            "sources": c.sources,
            "kpis": json.dumps([k.model_dump() for k in c.kpis]),
            "charter": c.model_dump_json(),
        }
        for c in config.use_cases
    ]
    frame = pl.DataFrame(
        rows,
        schema_overrides={"dpia_reference": pl.Utf8, "latency_target_ms_p95": pl.Int64, "uptime_target_percent": pl.Float64},
    )
    with warehouse.connect() as con:
        replace_table(con, "governance", "use_case_charters", frame)
    yield dg.MaterializeResult(
        metadata={
            "use_cases": len(rows),
            "high_risk_use_cases": sum(1 for r in rows if r["risk_class"] == "high"),
            "charters": dg.MetadataValue.md(
                markdown_table(rows, ["use_case", "name", "owner", "risk_class", "dpia_reference", "latency_target_ms_p95"])
            ),
        }
    )
    yield _check_result(rules.charters_complete(config.use_cases), check_name=CHARTER_COMPLETE)
    yield _check_result(rules.high_risk_has_dpia(config.use_cases), check_name=HIGH_RISK_HAS_DPIA)
    yield _check_result(rules.use_case_sources_registered(config), check_name=USE_CASE_SOURCES_REGISTERED)


def build_privacy_review_gate(source: SourceConfig) -> dg.AssetsDefinition:
    """The gate in front of one source: its raw asset runs only if both blocking checks pass."""
    key = privacy_review_key(source.name)

    @dg.asset(
        key=key,
        deps=[PROCESSING_REGISTER],
        group_name=GROUP,
        owners=[OWNER],
        kinds={"yaml"},
        description=f"Privacy review of source '{source.name}'. Its blocking checks gate the ingestion of "
        f"raw/{source.name}: no recorded, approved review (or no RoPA entry) means no ingestion.",
        check_specs=[
            dg.AssetCheckSpec(PRIVACY_REVIEW_RECORDED, asset=key, blocking=True, description="An approved privacy review for this source is recorded in config/governance/privacy_reviews.yaml."),
            dg.AssetCheckSpec(SOURCE_IN_REGISTER, asset=key, blocking=True, description="The source is in the processing register with every data category it carries."),
        ],
    )
    def _gate(agenix: AgenixResource):
        config: ProjectConfig = agenix.load_config()
        current = config.source(source.name)
        review = rules.privacy_review_recorded(current, config)
        registered = rules.source_registered(current, config)
        yield dg.MaterializeResult(
            metadata={
                "privacy_review": current.privacy_review or "(none)",
                "review_status": review.evidence.get("outcome", "missing"),
                "reviewer": review.evidence.get("reviewer", "(none)"),
                "data_categories": ", ".join(current.data_categories),
            }
        )
        yield _check_result(review, check_name=PRIVACY_REVIEW_RECORDED)
        yield _check_result(registered, check_name=SOURCE_IN_REGISTER)

    return _gate


def build_governance_assets(sources: list[SourceConfig]) -> list:
    return [
        processing_register,
        register_covers_all_sources,
        risk_register,
        use_case_charters,
        *[build_privacy_review_gate(s) for s in sources],
    ]
