"""Dead-run sweeper: frees what a run killed with kill -9 (a crash, an out-of-memory kill) still holds.

A run whose process dies stays STARTED and keeps its `duckdb` pool slot, so the next run of the graph would
wait forever. `agenix materialize|ui|up` sweep when they start; this sensor covers runs launched any other
way while the daemon runs (`dagster dev`, the UI's launchpad, schedules). It marks FAILURE only runs whose
process is provably dead on this host (agenix_assets/runs.py) and frees their slots; it starts no run.
"""

from __future__ import annotations

import dagster as dg

from ..runs import sweep_dead_runs

DEAD_RUN_SWEEPER = "dead_run_sweeper"


@dg.sensor(
    name=DEAD_RUN_SWEEPER,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose process died (kill -9, OOM) as failed and frees their concurrency slots, so "
    "the next run never waits on a dead holder of the duckdb pool. Starts no run.",
)
def dead_run_sweeper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    swept = sweep_dead_runs(context.instance)
    for found in swept:
        context.log.warning(f"swept run {found.run_id}: {found.reason}")
    return dg.SkipReason(
        f"swept {len(swept)} dead run(s): {', '.join(f.run_id for f in swept)}" if swept else "no dead run holds a slot"
    )
