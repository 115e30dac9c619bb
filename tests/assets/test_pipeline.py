"""The whole graph, materialized on the small sample company with real DuckDB, dbt and a Dagster instance."""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal

import dagster as dg
import polars as pl

from agenix_assets.core.config import load_project_config
from agenix_assets.definitions import build_definitions
from tests.conftest import AS_OF
from tests.platform import Platform, check_evaluations, materialized_keys, raw_metadata

SOURCES = ("crm_accounts", "crm_contacts", "support_tickets", "erp_orders", "kb_documents")


def test_whole_graph_materializes_with_every_check_passing(first_run):
    platform, result, summary = first_run
    assert result.success
    evaluations = check_evaluations(result)
    failed = {k: e.description for k, e in evaluations.items() if not e.passed}
    assert failed == {}
    graph = build_definitions(config_dir=platform.config_dir, home=platform.home).resolve_asset_graph()
    # Everything but the evaluation, which needs a model server (tests/assets/test_evaluation.py materializes it),
    # and the approval gate and deployment steps, which move an approved release (tests/assets/test_rollout.py).
    evaluation = {k for k in graph.materializable_asset_keys if graph.get(k).group_name == "evaluation"}
    release_steps = {k for k in graph.materializable_asset_keys
                     if graph.get(k).group_name == "deployment" and k.path[-1] != "release_history"}
    release_steps.add(dg.AssetKey(["support_assistant", "approved_release"]))
    assert evaluation and len(release_steps) == 5
    left_out = evaluation | release_steps
    assert materialized_keys(result) == {k.to_user_string() for k in graph.materializable_asset_keys - left_out}
    assert set(evaluations) == {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys
                                if k.asset_key not in left_out}


def test_first_load_brings_every_record_with_counts_in_metadata(first_run):
    platform, result, summary = first_run
    counts = summary["counts"]
    expected = {
        "crm_accounts": counts["accounts"],
        "crm_contacts": counts["contacts"],
        "support_tickets": counts["tickets"],
        "erp_orders": counts["orders"],
        "kb_documents": counts["documents"],
    }
    for source, n in expected.items():
        meta = raw_metadata(result, source)
        assert meta["inserted"] == n, source
        assert meta["updated"] == meta["deleted"] == meta["quarantined"] == 0, source
        assert meta["dagster/row_count"] == n, source
        assert platform.query(f'SELECT count(*) FROM raw."{source}" WHERE NOT _deleted') == [(n,)]
        assert "|" in meta["preview"]
        assert {c.name for c in meta["dagster/column_schema"].columns} >= {load_project_config(platform.config_dir).source(source).primary_key}


def test_cleaned_models_keep_only_allowed_fields_and_window(first_run):
    platform, _, _ = first_run
    register = load_project_config(platform.config_dir).processing_register.sources
    for source in SOURCES:
        columns = [
            r[0]
            for r in platform.query(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='cleaned' AND table_name=? ORDER BY ordinal_position",
                [f"cleaned_{source}"],
            )
        ]
        assert set(columns) == set(register[source].allowed_fields), source
    # The ticket history window (730 days before as-of) drops older tickets from the cleaned model only.
    cutoff = dt.date.fromisoformat(AS_OF) - dt.timedelta(days=730)
    [(older,)] = platform.query("SELECT count(*) FROM staging.stg_support_tickets WHERE created_at < ?", [cutoff])
    [(total_stg,)] = platform.query("SELECT count(*) FROM staging.stg_support_tickets")
    [(total_clean,)] = platform.query("SELECT count(*) FROM cleaned.cleaned_support_tickets")
    assert older > 0
    assert total_clean == total_stg - older


def test_governance_snapshots_land_in_the_warehouse(first_run):
    platform, result, _ = first_run
    assert platform.query("SELECT use_case, risk_class, dpia_reference FROM governance.use_case_charters") == [
        ("support-assistant", "medium", "DPIA-2026-003")
    ]
    assert platform.query("SELECT count(*) FROM governance.processing_register") == [(5,)]
    review = check_evaluations(result)["privacy_review/erp_orders:privacy_review_recorded"]
    assert review.passed and review.metadata["reviewer"].value == "Marek Novak"


def test_rerun_without_change_inserts_nothing(platform: Platform, first_run):
    result = platform.run()
    assert result.success
    for source in SOURCES:
        meta = raw_metadata(result, source)
        assert (meta["inserted"], meta["updated"], meta["deleted"]) == (0, 0, 0), source
        assert meta["files_read"] == 0, source
    [(loads,)] = platform.query("SELECT count(*) FROM raw._agenix_loads WHERE source = 'erp_orders'")
    assert loads == 2


def test_changing_one_source_file_updates_only_that_source(platform: Platform):
    orders = platform.landing / "erp" / "orders.csv"
    with orders.open(newline="") as f:
        rows = list(csv.reader(f))
    header, first = rows[0], rows[1]
    first[header.index("quantity")] = str(int(first[header.index("quantity")]) + 5)
    with orders.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    result = platform.run()
    assert result.success
    assert raw_metadata(result, "erp_orders")["updated"] == 1
    assert raw_metadata(result, "erp_orders")["inserted"] == 0
    for source in SOURCES:
        if source != "erp_orders":
            meta = raw_metadata(result, source)
            assert (meta["inserted"], meta["updated"], meta["deleted"]) == (0, 0, 0), source
    [(quantity,)] = platform.query("SELECT quantity FROM cleaned.cleaned_erp_orders WHERE order_id = ?", [first[0]])
    assert quantity == int(first[header.index("quantity")])


def test_removing_a_privacy_review_blocks_that_source_with_a_reason(platform: Platform):
    reviews = platform.config_dir / "governance" / "privacy_reviews.yaml"
    text = reviews.read_text()
    reviews.write_text(text[: text.index("  - id: PR-2026-004")] + text[text.index("  - id: PR-2026-005") :])
    before = platform.query("SELECT count(*) FROM raw.erp_orders")
    result = platform.run()
    assert not result.success
    gate = check_evaluations(result)["privacy_review/erp_orders:privacy_review_recorded"]
    assert not gate.passed
    assert "names privacy review 'PR-2026-004', which is not recorded in" in gate.description
    done = materialized_keys(result)
    assert "raw/erp_orders" not in done
    assert {"raw/crm_accounts", "raw/support_tickets", "raw/kb_documents"} <= done
    assert platform.query("SELECT count(*) FROM raw.erp_orders") == before


def test_bad_records_are_quarantined_and_good_ones_load(platform: Platform):
    orders = platform.landing / "erp" / "orders.csv"
    lines = orders.read_text().splitlines()
    n_before = len(lines) - 1
    lines.append("ORD-9999998,ACC-00001,2026-10-30,HX-200,Pump,twelve,10.00,EUR,open,2026-10-30T10:00:00")
    lines.append("ORD-9999999,ACC-00001,2026-10-30,HX-200,Pump,3,10.00,EUR,open,2026-10-30T10:00:00")
    lines.append("ORD-9999997,ACC-00001,2026-10-30")
    orders.write_text("\n".join(lines) + "\n")
    result = platform.run()
    assert result.success
    meta = raw_metadata(result, "erp_orders")
    assert (meta["inserted"], meta["quarantined"]) == (1, 2)
    contract = check_evaluations(result)["raw/erp_orders:schema_contract"]
    assert not contract.passed and contract.severity == dg.AssetCheckSeverity.WARN
    reasons = platform.query("SELECT file, line, field, reason FROM raw._agenix_quarantine WHERE source='erp_orders' ORDER BY line")
    assert reasons[0][:3] == ("erp/orders.csv", n_before + 2, "quantity")
    assert "twelve" in reasons[0][3]
    assert reasons[1][:2] == ("erp/orders.csv", n_before + 4)
    assert platform.query("SELECT count(*) FROM cleaned.cleaned_erp_orders WHERE order_id='ORD-9999999'") == [(1,)]


def test_missing_required_column_blocks_dbt_and_keeps_the_last_good_data(platform: Platform):
    orders = platform.landing / "erp" / "orders.csv"
    frame = pl.read_csv(orders, infer_schema=False).drop("unit_price")
    frame.write_csv(orders)
    before = platform.query("SELECT count(*), sum(unit_price) FROM cleaned.cleaned_erp_orders")
    result = platform.run()
    assert not result.success
    contract = check_evaluations(result)["raw/erp_orders:schema_contract"]
    assert not contract.passed and contract.severity == dg.AssetCheckSeverity.ERROR
    assert "erp/orders.csv" in contract.description and "unit_price" in contract.description
    assert platform.query("SELECT count(*), sum(unit_price) FROM cleaned.cleaned_erp_orders") == before


def test_a_new_source_is_ingested_from_its_yaml_entry_alone(platform: Platform):
    (platform.landing / "pricing").mkdir()
    pl.DataFrame({"sku": ["HX-200", "VX-10"], "list_price": ["1200.50", "89.90"]}).write_parquet(
        platform.landing / "pricing" / "prices.parquet"
    )
    with (platform.config_dir / "sources.yaml").open("a") as f:
        f.write(
            "\n  - name: price_list\n    kind: parquet\n    location: pricing/prices.parquet\n    primary_key: sku\n"
            "    change_detection: {mode: content_hash}\n    owner: team:data\n    data_domain: sales\n"
            "    data_categories: [commercial_transactions]\n    privacy_review: PR-2026-006\n    columns:\n"
            "      - {name: sku, type: string, required: true}\n      - {name: list_price, type: decimal, required: true}\n"
        )
    with (platform.config_dir / "governance" / "privacy_reviews.yaml").open("a") as f:
        f.write(
            "  - id: PR-2026-006\n    source: price_list\n    reviewer: Marek Novak\n    role: Information Security Officer\n"
            "    decided_at: 2026-03-01\n    outcome: approved\n"
        )
    with (platform.config_dir / "governance" / "processing_register.yaml").open("a") as f:
        f.write(
            "  price_list:\n    activities: [ROPA-002]\n    data_categories: [commercial_transactions]\n"
            "    allowed_fields: [sku, list_price]\n    retention_days: 365\n"
        )
    result = platform.run([dg.AssetKey(["privacy_review", "price_list"]), dg.AssetKey(["raw", "price_list"])])
    assert result.success
    assert raw_metadata(result, "price_list")["inserted"] == 2
    assert platform.query("SELECT sku, list_price FROM raw.price_list ORDER BY sku") == [
        ("HX-200", Decimal("1200.5")),
        ("VX-10", Decimal("89.9")),
    ]


def test_missing_source_location_fails_that_asset_with_the_path(platform: Platform):
    sources = platform.config_dir / "sources.yaml"
    sources.write_text(sources.read_text().replace("    location: erp\n", "    location: erp_export\n"))
    result = platform.run()
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "raw__erp_orders"
    message = failure.event_specific_data.error.cause.message if failure.event_specific_data.error.cause else failure.event_specific_data.error.message
    assert f"source 'erp_orders': location '{platform.landing / 'erp_export'}' does not exist" in message
    assert "raw/kb_documents" in materialized_keys(result)
    assert platform.query("SELECT count(*) FROM cleaned.cleaned_erp_orders") == [(300,)]
