"""The audit evidence pack of each release of a use case, as an asset (and `agenix audit RELEASE --out DIR`).

For every release that was approved or deployed, and the newest evaluated candidate, core/evidence.py collects the
charter and risk class, the sources and their privacy reviews, the full history of every gate (failures and
reruns included, from ``gates.evaluations``) plus Dagster's own asset-check history of the use case's assets, the
signed approvals, the evaluation report and the deployment timeline, and writes it as JSON and HTML under
``AGENIX_HOME/audit/packs/``.
"""


import datetime as dt
import json
from typing import Any

import dagster as dg

from ..core import deployment as dep
from ..core.tables import markdown_table
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource
from .rag import rag_key
from .release import config_dir_of

GROUP = "audit"


def dagster_check_history(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey],
                          limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` completed evaluations of each asset check, as Dagster recorded them."""
    from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

    out = []
    for key in check_keys:
        for rec in instance.event_log_storage.get_asset_check_execution_history(
                key, limit=limit, status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)):
            evaluation = rec.event.dagster_event.event_specific_data if rec.event and rec.event.dagster_event else None
            metadata = {k: getattr(v, "value", v) for k, v in (getattr(evaluation, "metadata", None) or {}).items()}
            out.append({
                "asset": key.asset_key.to_user_string(), "check": key.name, "passed": rec.status.value == "SUCCEEDED",
                "run_id": rec.run_id, "severity": getattr(getattr(evaluation, "severity", None), "value", None),
                "evaluated_at": dt.datetime.fromtimestamp(rec.create_timestamp, dt.UTC).isoformat(timespec="seconds"),
                "metadata": {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                             for k, v in metadata.items()},
            })
    return sorted(out, key=lambda r: r["evaluated_at"])


def dagster_checks_from_instance(use_case: str) -> list[dict[str, Any]]:
    """For `agenix audit RELEASE`: the check history the instance at $DAGSTER_HOME recorded for the use case's lane
    and governance (the same checks the audit_evidence_pack asset includes)."""
    from ..definitions import _audit_check_keys, build_definitions

    defs = build_definitions()
    with dg.DagsterInstance.get() as instance:
        return dagster_check_history(instance, _audit_check_keys(list(defs.assets), use_case))


def build_audit_assets(use_case: str, upstream: dg.AssetKey, check_keys: list[dg.AssetCheckKey]) -> list:
    key = rag_key(use_case, "audit_evidence_pack")

    @dg.asset(
        key=key, deps=[upstream], group_name=GROUP, owners=["team:compliance"], kinds={"html", "json"},
        pool=DUCKDB_POOL, tags={"agenix/use_case": use_case},
        description=f"The audit evidence pack of every approved or deployed release of '{use_case}' (and the newest "
        "evaluated candidate): charter and risk class, sources and privacy reviews, every gate's full history, "
        "signed approvals, the eval report, the deployment timeline and which release was live when; JSON + HTML "
        "under AGENIX_HOME/audit/packs/. `agenix audit RELEASE --out DIR` writes the same.",
    )
    def audit_evidence_pack(context: dg.AssetExecutionContext, agenix: AgenixResource,
                            warehouse: WarehouseResource):
        from ..core.evidence import export_pack
        from .deployment import _newest_evaluated

        home, config_dir = agenix.paths.home, config_dir_of(agenix)
        releases = {b["release"] for b in dep.approved_releases(home, use_case)}
        releases |= {e["release"] for e in dep.events(home, use_case)}
        releases |= {r for r in [_newest_evaluated(home, use_case)] if r}
        checks = dagster_check_history(context.instance, check_keys)
        rows, packs = [], {}
        with warehouse.connect(read_only=True) as con:
            for release in sorted(releases):
                try:
                    written = export_pack(home=home, config_dir=config_dir, release=release, con=con,
                                          dagster_checks=checks)
                except LookupError as exc:
                    context.log.warning(f"{release}: {exc}")
                    continue
                pack = json.loads(written["json"].read_text(encoding="utf-8"))
                s = pack["summary"]
                packs[release] = written
                rows.append({"release": release, "evaluation": s.get("evaluation_passed"),
                             "approvals complete": s.get("approvals_complete"),
                             "missing roles": ", ".join(s.get("missing_roles") or []),
                             "first live in production": s.get("first_live_in_production"),
                             "gates failed": s.get("gates_failed"), "pack": str(written["html"])})
        from ..core.evidence import audit_trail_problems

        problems = audit_trail_problems(home)
        metadata: dict[str, Any] = {
            "packs": len(packs),
            "audit_trail_intact": not problems,
            "audit_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_"),
            "dagster_check_evaluations": len(checks),
            "releases": dg.MetadataValue.md(markdown_table(rows) if rows else "_no release yet_"),
        }
        for release, written in packs.items():
            metadata[f"pack_{release}"] = dg.MetadataValue.path(str(written["html"]))
        return dg.MaterializeResult(metadata=metadata)

    return [audit_evidence_pack]
