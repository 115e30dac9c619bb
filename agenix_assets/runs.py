"""Runs whose process died keep their concurrency slots: find them, fail them, free their slots.

A run killed with kill -9 (or by the OOM killer, or a closed laptop) never reports its end: it stays STARTED
and keeps its `duckdb` pool slot, so every later run that writes the warehouse waits forever. Dagster's run
monitoring cannot help for runs started from the command line (no run launcher watches them), so every
`agenix` command that starts runs sweeps first (`sweep_dead_runs`), and `agenix materialize` keeps sweeping,
and says who holds the slot, while its own steps wait.

How a run's process is known: Dagster logs the pid of the process that executes a run as the `pid` metadata
of the run's first engine events ("Started process for run", "Executing steps in process"); the host it ran
on is recorded as run tags (`HOST_TAG`, `BOOT_TAG`) by `agenix materialize` when it creates the run and by the
warehouse resource when a step of any run sets it up. A run is swept only when that process is provably
dead on this host (core/liveness.py); a run on another host, or one that recorded neither, is left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from .core import liveness

HOST_TAG = "agenix/host"
BOOT_TAG = "agenix/boot_id"


def host_tags() -> dict[str, str]:
    """Tags that say which host (and which boot of it) a run's process runs on."""
    tags = {HOST_TAG: liveness.hostname()}
    boot = liveness.boot_id()
    if boot:
        tags[BOOT_TAG] = boot
    return tags


def record_host(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag the run with this host unless it already is (a run's steps run on its host for in-process and
    multiprocess executors)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and HOST_TAG not in run.tags:
        instance.add_run_tags(run_id, host_tags())


@dataclass(frozen=True)
class RunProcess:
    """A run and what is known about the process executing it."""

    run_id: str
    job_name: str | None
    status: str  # the run's status, or "DELETED" when a slot names a run the instance no longer has
    ended: bool  # the run has a final status (or was deleted)
    pid: int | None
    host: str | None
    state: str  # liveness.ALIVE / DEAD / UNKNOWN
    reason: str

    def describe(self) -> str:
        where = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        if self.host:
            where += f" on {self.host}"
        return f"run {self.run_id} ({self.job_name or 'unknown job'}, {self.status}, {where}): {self.state}, {self.reason}"

    @property
    def sweepable(self) -> bool:
        """Its slots can be freed: its process is provably dead, or the run ended and its process is not
        known to be alive (Dagster itself frees a deleted run's slots)."""
        return self.state == liveness.DEAD or (self.ended and self.state != liveness.ALIVE)


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int | None, float | None]:
    """The pid Dagster logged for the process executing the run, and when it logged it."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        value = (data.metadata or {}).get("pid") if data is not None else None
        if value is None:
            continue
        try:
            return int(str(getattr(value, "value", value))), record.timestamp
        except ValueError:
            continue
    return None, None


def run_process(instance: dg.DagsterInstance, run_id: str) -> RunProcess:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return RunProcess(run_id, None, "DELETED", True, None, None, liveness.UNKNOWN, "the run no longer exists")
    pid, logged_at = _worker_pid(instance, run_id)
    host = run.tags.get(HOST_TAG)
    found = liveness.process_state(pid, host, run.tags.get(BOOT_TAG), logged_at)
    return RunProcess(run_id, run.job_name, run.status.value, run.is_finished, pid, host, found.state, found.reason)


def pool_holders(instance: dg.DagsterInstance, pool: str) -> list[RunProcess]:
    """The runs holding a slot of ``pool``, each with its process."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    run_ids = sorted({slot.run_id for slot in info.claimed_slots if slot.run_id})
    return [run_process(instance, run_id) for run_id in run_ids]


def _slot_run_ids(instance: dg.DagsterInstance) -> set[str]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    run_ids: set[str] = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        run_ids |= {slot.run_id for slot in info.claimed_slots if slot.run_id}
        run_ids |= {step.run_id for step in info.pending_steps}
    return run_ids


def sweep_dead_runs(instance: dg.DagsterInstance, exclude: set[str] = frozenset()) -> list[RunProcess]:
    """Mark in-progress runs whose process is provably dead as FAILURE, and free the concurrency slots of
    those and of runs that ended (or were deleted) without freeing theirs. Returns what it swept."""
    in_progress = {r.run_id for r in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)))}
    holding = _slot_run_ids(instance)
    swept = []
    for run_id in sorted((in_progress | holding) - set(exclude)):
        found = run_process(instance, run_id)
        if not found.sweepable or (found.ended and run_id not in holding):
            continue
        if not found.ended:
            run = instance.get_run_by_id(run_id)
            if run is not None:
                instance.report_run_failed(
                    run, f"Marked failed by agenix: the process executing this run is gone ({found.reason})."
                )
        if run_id in holding:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        swept.append(found)
    return swept


class PoolWatch:
    """While run ``run_id`` executes in this process, look every ``interval_s`` whether one of its steps waits
    for ``pool``; if so, say which run holds the pool, its pid and whether that process is alive (printed, and
    logged as an engine event of the run so the UI shows it), and sweep the holder once it is provably dead.
    """

    def __init__(
        self, instance: dg.DagsterInstance, run_id: str, pool: str, say: Callable[[str], None], interval_s: float = 5.0
    ):
        self.instance, self.run_id, self.pool, self.say, self.interval_s = instance, run_id, pool, say, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"agenix-pool-watch-{pool}", daemon=True)
        self._last = ""

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _waiting(self) -> bool:
        info = self.instance.event_log_storage.get_concurrency_info(self.pool)
        holds = any(slot.run_id == self.run_id for slot in info.claimed_slots)
        return not holds and any(step.run_id == self.run_id for step in info.pending_steps)

    def check(self) -> None:
        if not self._waiting():
            self._last = ""
            return
        holders = [h for h in pool_holders(self.instance, self.pool) if h.run_id != self.run_id]
        if any(h.sweepable for h in holders):
            for freed in sweep_dead_runs(self.instance, exclude={self.run_id}):
                self.say(f"pool {self.pool}: freed the slot of {freed.describe()}")
            return
        line = "; ".join(f"pool {self.pool}: waiting for {h.describe()}" for h in holders)
        if line and line != self._last:
            self._last = line
            self.say(line)
            run = self.instance.get_run_by_id(self.run_id)
            if run is not None:
                self.instance.report_engine_event(line, run)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # a failed look must never break the run it watches
                self.say(f"pool {self.pool}: could not inspect the pool ({exc})")
