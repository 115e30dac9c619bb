"""Snapshot of the graph: any change to assets, checks, jobs, schedules or sensors shows up in review.

Regenerate after an intended change with: AGENIX_UPDATE_SNAPSHOTS=1 pytest tests/assets/test_definitions.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from agenix_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "definitions.json"


def describe(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "owners": sorted(node.owners),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kind": "materializable" if node.is_materializable else "external",
        }
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    blocking = sorted(
        f"{spec.asset_key.to_user_string()}:{spec.name}"
        for ad in graph.assets_defs
        for spec in ad.check_specs
        if spec.blocking
    )
    return {
        "assets": assets,
        "checks": checks,
        "blocking_checks": blocking,
        "jobs": sorted(j.name for j in defs.jobs if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in defs.schedules),
        "sensors": sorted(s.name for s in defs.sensors),
    }


def test_definitions_match_snapshot():
    current = describe(build_definitions())
    if os.environ.get("AGENIX_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"{SNAPSHOT} missing: run with AGENIX_UPDATE_SNAPSHOTS=1 to create it"
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected


def test_every_materializable_asset_has_a_group_and_an_owner():
    graph = build_definitions().resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.group_name in {"governance", "sources", "transform", "rag", "registry", "release", "evaluation",
                                   "deployment", "audit"}, key
        assert node.owners and all(o.startswith("team:") for o in node.owners), key


def test_a_release_moves_through_its_gates_in_lineage_order():
    """eval_report and the approvals -> approved_release -> staging -> shadow -> canary -> production -> history ->
    evidence pack: each step's only upstream is the gate before it."""
    graph = build_definitions().resolve_asset_graph()
    uc = "support_assistant"
    chain = ["approved_release", "staging_deployment", "shadow_deployment", "canary_deployment",
             "production_deployment", "release_history", "audit_evidence_pack"]
    assert graph.get(dg.AssetKey([uc, "approved_release"])).parent_keys == {
        dg.AssetKey([uc, "eval_report"]), dg.AssetKey([uc, "release_approvals"])}
    for before, after in zip(chain, chain[1:]):
        assert graph.get(dg.AssetKey([uc, after])).parent_keys == {dg.AssetKey([uc, before])}, after
    blocking = {(ck.asset_key.path[-1], ck.name) for ck in graph.asset_check_keys
                if graph.get_check_spec(ck).blocking and ck.asset_key.path[0] == uc}
    assert {("approved_release", "evaluation_passed"), ("approved_release", "required_approvals"),
            ("approved_release", "dpia_recorded"), ("approved_release", "sources_privacy_reviewed"),
            ("staging_deployment", "staging_smoke_test"), ("shadow_deployment", "shadow_manifest_accepted"),
            ("canary_deployment", "canary_healthy"), ("production_deployment", "production_serves_release")} <= blocking


def test_lineage_reads_governance_then_sources_then_transform():
    graph = build_definitions().resolve_asset_graph()
    for name in ("crm_accounts", "crm_contacts", "support_tickets", "erp_orders", "kb_documents"):
        raw = graph.get(dg.AssetKey(["raw", name]))
        assert dg.AssetKey(["privacy_review", name]) in raw.parent_keys
        assert graph.get(dg.AssetKey(["privacy_review", name])).parent_keys == {dg.AssetKey("processing_register")}
        stg = graph.get(dg.AssetKey(["staging", f"stg_{name}"]))
        assert raw.key in stg.parent_keys
        assert stg.key in graph.get(dg.AssetKey(["cleaned", f"cleaned_{name}"])).parent_keys


def test_adding_a_source_is_one_yaml_entry(config_dir: Path):
    """A new entry in sources.yaml (plus its governance records) is all it takes to get assets and a job."""
    with (config_dir / "sources.yaml").open("a") as f:
        f.write(
            """
  - name: price_list
    kind: parquet
    location: pricing/prices.parquet
    primary_key: sku
    change_detection: {mode: content_hash}
    owner: team:data
    data_domain: sales
    data_categories: [commercial_transactions]
    privacy_review: PR-2026-006
    columns:
      - {name: sku, type: string, required: true}
      - {name: list_price, type: decimal, required: true}
"""
        )
    defs = build_definitions(config_dir=config_dir)
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["raw", "price_list"]) in keys
    assert dg.AssetKey(["privacy_review", "price_list"]) in keys
    assert defs.resolve_job_def("ingest_price_list") is not None
