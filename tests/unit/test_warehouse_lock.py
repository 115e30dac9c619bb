"""Opening the warehouse waits, bounded, while another process holds DuckDB's file lock, and then says who.

The lock holder is a real second process with the file open for writing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from agenix_assets.resources.warehouse import WarehouseLockTimeout, WarehouseResource, connect_waiting, lock_conflict

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("released", flush=True)
time.sleep(30)  # stays alive after releasing: the waiter must not depend on the holder exiting
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def holders():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_connect_waits_for_another_process_and_succeeds_once_it_releases(tmp_path: Path, holders):
    path = tmp_path / "warehouse.duckdb"
    holder = hold_lock(path, seconds=2.5)
    holders.append(holder)
    told = []
    started = time.monotonic()
    con = connect_waiting(str(path), timeout_s=60, on_wait=lambda h, waited: told.append(h))
    waited = time.monotonic() - started
    try:
        con.execute("INSERT INTO held VALUES (1)")
        assert con.execute("SELECT count(*) FROM held").fetchone() == (1,)
    finally:
        con.close()
    assert 1.5 < waited < 30
    assert told and told[0].pid == holder.pid
    assert holder.poll() is None  # released the lock, still running


def test_connect_fails_after_the_timeout_naming_file_timeout_and_holder(tmp_path: Path, holders):
    path = tmp_path / "warehouse.duckdb"
    holder = hold_lock(path, seconds=120)
    holders.append(holder)
    started = time.monotonic()
    with pytest.raises(WarehouseLockTimeout) as caught:
        connect_waiting(str(path), timeout_s=1.5)
    assert 1.4 < time.monotonic() - started < 10
    message = str(caught.value)
    assert str(path) in message
    assert "after waiting 1.5 s" in message
    assert f"PID {holder.pid}" in message
    assert "AGENIX_WAREHOUSE_LOCK_TIMEOUT_S" in message
    assert caught.value.holder.pid == holder.pid


def test_resource_reads_its_lock_timeout_from_the_environment_when_used(tmp_path: Path, holders, monkeypatch):
    path = tmp_path / "warehouse.duckdb"
    holders.append(hold_lock(path, seconds=120))
    warehouse = WarehouseResource(path=str(path))
    monkeypatch.setenv("AGENIX_WAREHOUSE_LOCK_TIMEOUT_S", "0.5")
    with pytest.raises(WarehouseLockTimeout, match=r"after waiting 0\.5 s"):
        with warehouse.connect():
            pass


def test_other_errors_are_raised_at_once(tmp_path: Path):
    not_a_database = tmp_path / "warehouse.duckdb"
    not_a_database.write_text("this is not a DuckDB file")
    started = time.monotonic()
    with pytest.raises(duckdb.Error) as caught:
        connect_waiting(str(not_a_database), timeout_s=60)
    assert not isinstance(caught.value, WarehouseLockTimeout)
    assert time.monotonic() - started < 5


def test_dbt_failing_on_the_lock_is_recognised_with_its_holder(tmp_path: Path, holders, monkeypatch):
    """dbt-duckdb opens the file itself; the dbt step retries or fails clearly only if it can tell a lock
    conflict from other dbt errors, so run the real dbt against a locked file."""
    from dagster_dbt.errors import DagsterDbtCliRuntimeError

    from agenix_assets.assets.transform import dbt_resource

    path = tmp_path / "warehouse.duckdb"
    holder = hold_lock(path, seconds=120)
    holders.append(holder)
    monkeypatch.setenv("AGENIX_WAREHOUSE", str(path))
    invocation = dbt_resource().cli(["run", "--select", "stg_erp_orders"], target_path=tmp_path / "target")
    with pytest.raises(DagsterDbtCliRuntimeError) as caught:
        invocation.wait()
    found = lock_conflict(caught.value)
    assert found is not None and found.pid == holder.pid


def test_the_dbt_step_fails_naming_the_holder_when_another_process_keeps_the_warehouse(tmp_path: Path, holders):
    import dagster as dg

    from agenix_assets.definitions import build_definitions
    from tests.conftest import AS_OF

    home = tmp_path / "home"
    home.mkdir()
    path = home / "warehouse.duckdb"
    holder = hold_lock(path, seconds=120)
    holders.append(holder)
    defs = build_definitions(home=home, as_of=AS_OF)
    [dbt_models] = [a for a in defs.assets if a.node_def.name == "dbt_models"]
    result = dg.materialize(
        [dbt_models],
        resources={**defs.resources, "warehouse": WarehouseResource(path=str(path), lock_timeout_s=2)},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error
    text = error.to_string() + (error.cause.to_string() if error.cause else "")
    assert f"DuckDB warehouse {path} is still locked by another process after waiting 2 s" in text
    assert f"PID {holder.pid}" in text
