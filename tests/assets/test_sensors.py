"""The landing-zone sensor starts ingestion for exactly the sources whose files changed, once."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import pytest

from agenix_assets.core.sample_data import generate_sample_company
from agenix_assets.definitions import NIGHTLY_SCHEDULE, build_definitions
from agenix_assets.sensors.landing import LANDING_SENSOR
from tests.conftest import AS_OF


@pytest.fixture
def sensor_env(tmp_path: Path, config_dir: Path):
    home = tmp_path / "home"
    generate_sample_company(home / "landing", scale="small", seed=7, as_of=dt.date.fromisoformat(AS_OF))
    defs = build_definitions(config_dir=config_dir, home=home)
    sensor = defs.resolve_sensor_def(LANDING_SENSOR)
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor: str | None):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources, definitions=defs)
        return sensor.evaluate_tick(context)

    return home / "landing", tick


def _bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_first_tick_records_a_baseline_without_runs(sensor_env):
    _, tick = sensor_env
    first = tick(None)
    assert first.run_requests == []
    assert "baseline recorded" in first.skip_message
    assert first.cursor is not None


def test_unchanged_landing_zone_starts_no_run(sensor_env):
    _, tick = sensor_env
    cursor = tick(None).cursor
    again = tick(cursor)
    assert again.run_requests == []
    assert again.skip_message == "no source changed"


def test_changed_file_starts_one_run_for_that_source_only(sensor_env):
    landing, tick = sensor_env
    cursor = tick(None).cursor
    orders = landing / "erp" / "orders.csv"
    orders.write_text(orders.read_text().replace("\n", "\n", 1) + "ORD-9999999,ACC-00001,2026-10-30,HX-200,Pump,3,10.00,EUR,open,2026-10-30T10:00:00\n")
    result = tick(cursor)
    assert [r.job_name for r in result.run_requests] == ["ingest_erp_orders"]
    assert result.run_requests[0].tags["agenix/source"] == "erp_orders"
    # The next tick sees the new cursor: the same change never starts a second run.
    assert tick(result.cursor).run_requests == []


def test_new_ticket_file_triggers_tickets_and_crm_change_triggers_both_crm_sources(sensor_env):
    landing, tick = sensor_env
    cursor = tick(None).cursor
    (landing / "tickets" / "tickets_2099_01.jsonl").write_text("{}\n")
    _bump_mtime(landing / "crm" / "crm.sqlite")
    result = tick(cursor)
    assert sorted(r.job_name for r in result.run_requests) == ["ingest_crm_accounts", "ingest_crm_contacts", "ingest_support_tickets"]
    assert len({r.run_key for r in result.run_requests}) == 3


def test_ingest_job_selects_the_gate_the_source_and_what_reads_it():
    defs = build_definitions()
    tickets = {k.to_user_string() for k in defs.resolve_job_def("ingest_support_tickets").asset_layer.selected_asset_keys}
    rag = {f"support_assistant/{n}" for n in ("redacted_documents", "chunks", "embeddings", "vector_index")}
    assert tickets == {"privacy_review/support_tickets", "raw/support_tickets", "staging/stg_support_tickets", "cleaned/cleaned_support_tickets"} | rag
    orders = {k.to_user_string() for k in defs.resolve_job_def("ingest_erp_orders").asset_layer.selected_asset_keys}
    assert orders == {"privacy_review/erp_orders", "raw/erp_orders", "staging/stg_erp_orders", "cleaned/cleaned_erp_orders"}


def test_nightly_schedule_runs_the_ingestion_job_at_two():
    schedule = build_definitions().resolve_schedule_def(NIGHTLY_SCHEDULE)
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "ingestion_job"
