"""The DuckDB warehouse: one file, one writer at a time.

DuckDB lets one process open the file for writing (and none may read it then). Three things keep writers
apart:
- every asset that writes it runs in the `duckdb` concurrency pool (limit 1 in our dagster.yaml), so runs on
  an instance set up by `agenix init` queue instead of colliding;
- the code location's executor runs a run's steps one after another in the run's process (definitions.py),
  so a run never collides with itself, whatever instance runs it;
- opening the file waits for another process's lock, with backoff, up to a bounded timeout, and then fails
  naming the file, the timeout and the process that holds it (DuckDB's error carries its PID). The dbt step
  waits the same way before dbt-duckdb opens the file (`wait_until_free`).
A connection is opened per use and closed right after, so the dbt subprocess and other steps get their turn.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from ..core.paths import AgenixPaths
from ..sandbox import assert_writable
from ..runs import record_host

DUCKDB_POOL = "duckdb"
LOCK_TIMEOUT_ENV = "AGENIX_WAREHOUSE_LOCK_TIMEOUT_S"
# Long enough for another run's step (an embedding batch, a dbt build) to finish on the sample company; a
# writer that holds the file longer than this is more likely stuck than busy, and a clear error beats a hang.
DEFAULT_LOCK_TIMEOUT_S = 600.0

# DuckDB: 'IO Error: Could not set lock on file "/x/warehouse.duckdb": Conflicting lock is held in
# /usr/bin/python3.11 (PID 1234) by user root. See also ...'
_LOCK_CONFLICT = re.compile(r"Could not set lock on file|Conflicting lock is held")
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)(?: by user (?P<user>\S+?))?[.\s]")


@dataclass(frozen=True)
class LockHolder:
    """The process DuckDB names as holding the file lock."""

    pid: int | None
    program: str | None
    user: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "a process DuckDB did not name"
        who = f"PID {self.pid}" + (f" ({self.program})" if self.program else "") + (f", user {self.user}" if self.user else "")
        cmdline = _cmdline(self.pid)
        return who + (f", command: {cmdline}" if cmdline else "")


class WarehouseLockTimeout(RuntimeError):
    """The warehouse file stayed locked by another process for longer than the configured timeout."""

    def __init__(self, path: str, timeout_s: float, holder: LockHolder, detail: str):
        self.path, self.timeout_s, self.holder, self.detail = path, timeout_s, holder, detail
        super().__init__(
            f"DuckDB warehouse {path} is still locked by another process after waiting {timeout_s:g} s: "
            f"held by {holder.describe()}. Another run or tool is writing the warehouse; wait for it to finish, "
            f"or raise the wait with {LOCK_TIMEOUT_ENV} or the warehouse resource's lock_timeout_s. ({detail})"
        )


def lock_conflict(error: BaseException | str) -> LockHolder | None:
    """The lock holder if ``error`` is DuckDB's "file is locked by another process" error, else None."""
    text = str(error)
    if not _LOCK_CONFLICT.search(text):
        return None
    m = _LOCK_HOLDER.search(text + " ")
    if m is None:
        return LockHolder(None, None, None)
    return LockHolder(int(m["pid"]), m["program"] or None, m["user"])


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # not Linux, not visible from here, or gone
    # One line, bounded: a `python -c` script would otherwise spill its source into the error.
    text = " ".join(" ".join(part.decode(errors="replace").split()) for part in raw.split(b"\0") if part)
    return (text[:200] + ("..." if len(text) > 200 else "")) or None


def connect_waiting(
    path: str,
    read_only: bool = False,
    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    on_wait: Callable[[LockHolder, float], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` that waits while another process holds the file lock.

    Retries with exponential backoff (0.1 s doubling to 5 s) until ``timeout_s`` has passed, then raises
    WarehouseLockTimeout. Any other error is raised at once. ``on_wait`` is told the holder on the first
    conflict and then about every 30 s, so a caller can log who it is waiting for.
    """
    started = time.monotonic()
    delay, told_at = 0.1, None
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.Error as exc:
            holder = lock_conflict(exc)
            if holder is None:
                raise
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise WarehouseLockTimeout(path, timeout_s, holder, str(exc).splitlines()[0]) from exc
            if on_wait is not None and (told_at is None or waited - told_at >= 30):
                on_wait(holder, waited)
                told_at = waited
            time.sleep(min(delay, max(timeout_s - waited, 0.01)))
            delay = min(delay * 2, 5.0)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file.

    Unset fields are read from the environment when the resource is used, not when the code location is
    imported: ``path`` defaults to $AGENIX_HOME/warehouse.duckdb, ``lock_timeout_s`` to
    $AGENIX_WAREHOUSE_LOCK_TIMEOUT_S or 600 s.
    """

    path: str | None = None
    lock_timeout_s: float | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Record which host the run executes on, so a run killed while it holds the `duckdb` pool can be told
        # apart from a live one and swept (agenix_assets/runs.py). Every step in the pool uses this resource.
        run = context.dagster_run
        if context.instance is not None and run is not None:
            record_host(context.instance, run.run_id)

    @property
    def file(self) -> str:
        return self.path or str(AgenixPaths.from_env().warehouse)

    @property
    def lock_timeout(self) -> float:
        if self.lock_timeout_s is not None:
            return self.lock_timeout_s
        raw = os.environ.get(LOCK_TIMEOUT_ENV)
        if not raw:
            return DEFAULT_LOCK_TIMEOUT_S
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None

    def _log_wait(self, holder: LockHolder, waited: float) -> None:
        dg.get_dagster_logger().info(
            f"waiting for the DuckDB lock on {self.file} ({waited:.0f} s of {self.lock_timeout:g} s): held by {holder.describe()}"
        )

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if not read_only:
            assert_writable(self.file)  # from a sandbox, never production's warehouse
        Path(self.file).parent.mkdir(parents=True, exist_ok=True)
        con = connect_waiting(self.file, read_only=read_only, timeout_s=self.lock_timeout, on_wait=self._log_wait)
        try:
            yield con
        finally:
            con.close()

    def wait_until_free(self, timeout_s: float | None = None) -> None:
        """Wait (bounded like ``connect``, or by ``timeout_s``) until no other process holds the file, for a
        subprocess that opens it itself (dbt-duckdb). Another process can still take the lock in between; the
        caller tells that apart with ``lock_conflict`` on the subprocess's error."""
        assert_writable(self.file)
        Path(self.file).parent.mkdir(parents=True, exist_ok=True)
        timeout = self.lock_timeout if timeout_s is None else timeout_s
        try:
            connect_waiting(self.file, timeout_s=timeout, on_wait=self._log_wait).close()
        except WarehouseLockTimeout as exc:
            # A caller passes what is left of its own deadline; the user set (and should see) the whole wait.
            raise WarehouseLockTimeout(self.file, self.lock_timeout, exc.holder, exc.detail) from exc
