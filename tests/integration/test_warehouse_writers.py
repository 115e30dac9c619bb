"""Writers of the DuckDB warehouse stay safe on any Dagster instance, and a killed run does not block the next.

Real processes throughout: Dagster's own CLI on a bare instance (a DAGSTER_HOME without any dagster.yaml), and
`agenix materialize` runs killed with SIGKILL while they hold the `duckdb` pool slot.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from agenix_assets.core.paths import sample_golden_set_path
from agenix_assets.core.sample_data import generate_sample_company
from agenix_assets.resources.warehouse import DUCKDB_POOL
from agenix_assets.sensors.runs import dead_run_sweeper
from tests.conftest import AS_OF, CONFIG_DIR, REPO

BIN = Path(sys.executable).parent
# Schemas whose tables a run writes: raw loads, dbt models, the RAG lane of the support assistant.
COMPARED_SCHEMAS = ("raw", "staging", "cleaned", "rag_support_assistant")
# One row per load, so it has a row per run by design (the killed run's load included), not per record.
RUN_LOG_TABLES = {"raw._agenix_loads"}
EDITED_MTIME_NS = 1_793_000_000_000_000_000


def platform_env(home: Path, dagster_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AGENIX_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "AGENIX_AS_OF": AS_OF,
        "AGENIX_CONFIG_DIR": str(CONFIG_DIR),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }


def agenix(*args: str) -> list[str]:
    return [sys.executable, "-m", "agenix_assets.cli", *args]


def instance_at(dagster_home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(dagster_home))


@pytest.fixture(scope="module")
def bare_instance_run(tmp_path_factory):
    """The small sample company materialized by `dagster asset materialize` on a bare instance; seed 5,
    not the default 7, so the same run shows that a company of another seed passes its own gates."""
    root = tmp_path_factory.mktemp("bare")
    home, dagster_home = root / "home", root / "dagster"
    dagster_home.mkdir()
    generate_sample_company(home / "landing", scale="small", seed=5, as_of=dt.date.fromisoformat(AS_OF))
    proc = subprocess.run(
        # Every asset but the release evaluation (its gate judges answer quality, tests/assets/test_evaluation.py,
        # and asks a model server) and the approval and deployment steps (they move an approved release, and with no
        # evaluation or approvals their gates refuse, as tests/assets/test_rollout.py shows): what this run shows is
        # how the warehouse writers behave.
        [str(BIN / "dagster"), "asset", "materialize", "-m", "agenix_assets.definitions", "--select",
         'not group:evaluation and not group:deployment and not key:"support_assistant/approved_release"'],
        cwd=REPO, env=platform_env(home, dagster_home), capture_output=True, text=True, timeout=1800,
    )
    return home, dagster_home, proc


def test_dagster_asset_materialize_on_a_bare_instance_builds_every_asset_for_seed_5(bare_instance_run):
    home, dagster_home, proc = bare_instance_run
    output = proc.stdout + proc.stderr
    assert not (dagster_home / "dagster.yaml").exists()  # nothing of ours serialized the writers
    assert proc.returncode == 0, output[-5000:]
    assert "Conflicting lock" not in output
    with instance_at(dagster_home) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
        for table in ("cleaned.cleaned_crm_accounts", "cleaned.cleaned_support_tickets", "cleaned.cleaned_kb_documents",
                      "rag_support_assistant.chunks"):
            assert table in tables, sorted(tables)
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
    # Every blocking check of the rag lane passed on the seed-5 company, with its own generated golden set.
    [verdict_file] = (home / "index").glob("agenix.support-assistant.v*/gates.json")
    verdict = json.loads(verdict_file.read_text())
    assert verdict["servable"] is True
    smoke = verdict["checks"]["retrieval_smoke_test"]["evidence"]
    assert smoke["hit_rate"] == 1.0 and smoke["golden_set"] == str(sample_golden_set_path(home / "landing", "support-assistant"))


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a materialized platform folder (landing zone, warehouse, Chroma, index artifacts)."""
    shutil.copytree(source, target)
    return target


def edit_kb_document(home: Path) -> None:
    """The same change in every copy, so an ingestion run has new text to redact, chunk, embed and index."""
    doc = sorted((home / "landing" / "documents").rglob("*.md"))[0]
    doc.write_text(doc.read_text() + "\n\n## Service note\n\nInspect the seals of this unit every 400 operating hours.\n")
    os.utime(doc, ns=(EDITED_MTIME_NS, EDITED_MTIME_NS))  # file state and document dates then match across copies


def wait_for_slot(instance: dg.DagsterInstance, proc: subprocess.Popen, step_part: str, timeout_s: float = 600):
    """The (run_id, step_key) holding the `duckdb` slot once a step whose key contains ``step_part`` holds it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it held the slot"
        for slot in instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots:
            if slot.run_id and step_part in (slot.step_key or ""):
                return slot.run_id, slot.step_key
        time.sleep(0.05)
    raise AssertionError(f"no step like {step_part!r} held the {DUCKDB_POOL} slot within {timeout_s} s")


def _comparable(value):
    # Vectors embedded in another batch may differ in the last float bits; six decimals is far below retrieval's
    # resolution.
    if isinstance(value, (list, tuple)):
        return tuple(round(v, 6) if isinstance(v, float) else v for v in value)
    return value


def table_contents(warehouse: Path) -> dict[str, list[tuple]]:
    """Every row of every table a run writes, minus columns that record when (or in which load) it was written."""
    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            f"AND table_schema IN ({', '.join('?' for _ in COMPARED_SCHEMAS)}) ORDER BY 1, 2", list(COMPARED_SCHEMAS)
        ).fetchall()
        for schema, table in tables:
            columns = [
                name
                for name, typ in con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
                    "AND table_name = ? ORDER BY ordinal_position", [schema, table]
                ).fetchall()
                if not typ.startswith("TIMESTAMP") and name.lstrip("_") != "load_id"
            ]
            if f"{schema}.{table}" in RUN_LOG_TABLES:
                continue
            select = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f'SELECT {select} FROM "{schema}"."{table}" ORDER BY ALL').fetchall()
            out[f"{schema}.{table}"] = [tuple(_comparable(v) for v in row) for row in rows]
    return out


def test_a_run_killed_holding_the_pool_is_failed_and_freed_and_the_rerun_matches_a_clean_run(
    bare_instance_run, tmp_path: Path
):
    source, _, bare = bare_instance_run
    assert bare.returncode == 0
    job = "ingest_kb_documents"

    clean = copy_home(source, tmp_path / "clean")
    edit_kb_document(clean)
    done = subprocess.run(agenix("materialize", "--job", job), env=platform_env(clean, clean / "dagster"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    killed = copy_home(source, tmp_path / "killed")
    edit_kb_document(killed)
    env = platform_env(killed, killed / "dagster")
    first = subprocess.Popen(agenix("materialize", "--job", job), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        while not (killed / "dagster" / "dagster.yaml").exists():
            assert first.poll() is None
            time.sleep(0.05)
        with instance_at(killed / "dagster") as instance:
            # Mid-lane: the raw load and dbt are done, the RAG lane is writing when the process dies.
            dead_run, step = wait_for_slot(instance, first, "embeddings")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(30)
            holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots}
            assert dead_run in holders, f"the killed run no longer held the slot of {step}"
            assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED

            # The daemon's sweeper (runs launched from the UI or a schedule have no agenix command around them).
            skip = dead_run_sweeper(dg.build_sensor_context(instance=instance))
            assert dead_run in skip.skip_message
            assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE
            assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots == []

        rerun = subprocess.run(agenix("materialize", "--job", job), env=env, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]

        with instance_at(killed / "dagster") as instance:
            dead = instance.get_run_by_id(dead_run)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots == []
            statuses = sorted(r.status.value for r in instance.get_runs())
            assert statuses == ["FAILURE", "SUCCESS"]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    clean_tables, rerun_tables = table_contents(clean / "warehouse.duckdb"), table_contents(killed / "warehouse.duckdb")
    assert set(rerun_tables) == set(clean_tables)
    assert {t: len(rows) for t, rows in rerun_tables.items()} == {t: len(rows) for t, rows in clean_tables.items()}
    for table in clean_tables:
        assert rerun_tables[table] == clean_tables[table], table


def test_a_waiting_materialize_names_the_holder_and_proceeds_once_the_holder_is_killed(
    bare_instance_run, tmp_path: Path
):
    source, _, bare = bare_instance_run
    assert bare.returncode == 0
    home = copy_home(source, tmp_path / "home")
    env = platform_env(home, home / "dagster")
    job = "ingest_erp_orders"
    # Another process holds the warehouse, so the first run's first warehouse step waits inside its pool slot.
    lock = duckdb.connect(str(home / "warehouse.duckdb"))
    holder = subprocess.Popen(agenix("materialize", "--job", job), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    waiter = None
    try:
        while not (home / "dagster" / "dagster.yaml").exists():
            assert holder.poll() is None
            time.sleep(0.05)
        with instance_at(home / "dagster") as instance:
            held_by, _ = wait_for_slot(instance, holder, "")
        log = tmp_path / "waiter.log"
        waiter = subprocess.Popen(agenix("materialize", "--job", job), env=env, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while f"waiting for run {held_by}" not in log.read_text():
            assert waiter.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        said = log.read_text()
        assert f"pool duckdb is held by run {held_by}" in said
        assert f"pid {holder.pid} on " in said and "alive" in said

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        lock.close()
        assert waiter.wait(600) == 0, log.read_text()[-5000:]
        said = log.read_text()
        assert f"freed the slot of run {held_by}" in said
        with instance_at(home / "dagster") as instance:
            assert instance.get_run_by_id(held_by).status == dg.DagsterRunStatus.FAILURE
    finally:
        lock.close()
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
