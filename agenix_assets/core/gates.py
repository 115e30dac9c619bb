"""Write-audit-publish: gate verdicts that hold across runs. No Dagster import.

Dagster's blocking checks stop downstream steps only inside the run that evaluated them. A gate that protects
data must also hold for a consumer selected alone, a retry, a sensor run or a partial backfill, so a gated asset
writes to a staging place, evaluates its blocking checks there, and publishes (in the same transaction that
records the verdict) only what passed. The verdicts live beside the data they judge, in the warehouse's
``gates.evaluations`` table, so they travel with the data (a copied AGENIX_HOME, another Dagster instance) and a
consumer in any later run reads the latest one:

- ``record_evaluation`` stores one evaluation (every blocking check of one asset, one run) and whether it
  published;
- ``require_passed`` is what a consumer calls before reading: it raises ``GateRefused`` naming each failed check
  and its evidence when the upstream's latest evaluation failed, and returns the passing verdicts otherwise (so a
  downstream artifact can carry them, e.g. an index version's verdict file).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

SCHEMA = "gates"
TABLE = f"{SCHEMA}.evaluations"


@dataclass(frozen=True)
class GateResult:
    """One blocking check's verdict on one asset: what must hold, whether it did, and the evidence."""

    asset: str  # the asset key as the UI writes it, e.g. "support_assistant/chunks"
    check: str
    passed: bool
    description: str
    evidence: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    evaluated_at: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "passed": self.passed,
            "description": self.description,
            "evidence": self.evidence,
            "run_id": self.run_id,
            "at": self.evaluated_at,
        }


class GateRefused(RuntimeError):
    """A consumer refused to read an upstream whose latest gate evaluation failed."""

    def __init__(self, consumer: str, failed: Sequence[GateResult]):
        self.consumer = consumer
        self.failed = list(failed)
        super().__init__(refusal_message(consumer, self.failed))


def _evidence_summary(evidence: dict[str, Any], limit: int = 6) -> str:
    items = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in list(evidence.items())[:limit]]
    return ", ".join(items)


def refusal_message(consumer: str, failed: Sequence[GateResult]) -> str:
    first = failed[0]
    parts = [
        f"{c.check} failed on {c.asset} (run {c.run_id or '?'} at {c.evaluated_at}): {c.description}"
        + (f" [{_evidence_summary(c.evidence)}]" if c.evidence else "")
        for c in failed
    ]
    return (
        f"{consumer} refuses to read {first.asset}: its latest blocking check evaluation failed: "
        + "; ".join(parts)
        + f". The last published {first.asset} stays in force and nothing downstream changes; fix the cause and "
        f"materialize {first.asset} again so its checks pass."
    )


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            evaluation_id VARCHAR, asset VARCHAR, check_name VARCHAR, passed BOOLEAN, description VARCHAR,
            evidence VARCHAR, run_id VARCHAR, evaluated_at TIMESTAMP, published BOOLEAN)"""
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def record_evaluation(
    con: duckdb.DuckDBPyConnection, results: Sequence[GateResult], run_id: str, published: bool
) -> str:
    """Store one evaluation (the blocking checks of one asset in one run). The caller runs it inside the
    transaction that publishes, so a verdict and the data it judged become visible together."""
    if not results:
        raise ValueError("an evaluation needs at least one check result")
    assets = {r.asset for r in results}
    if len(assets) != 1:
        raise ValueError(f"one evaluation judges one asset, got {sorted(assets)}")
    ensure_schema(con)
    evaluation_id = uuid.uuid4().hex
    now = _now()
    con.executemany(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (evaluation_id, r.asset, r.check, bool(r.passed), r.description, json.dumps(r.evidence, default=str),
             run_id, now, bool(published))
            for r in results
        ],
    )
    return evaluation_id


def publish_if_passed(con: duckdb.DuckDBPyConnection, results: Sequence[GateResult], run_id: str,
                      publish: Callable[[duckdb.DuckDBPyConnection], Any] | None = None) -> bool:
    """Write-audit-publish in one transaction: record the evaluation and, only when every check passed, run
    ``publish(con)`` (copy staging to the published table, write the published record), so a reader sees the
    verdict and what it judged together, or neither. Returns whether it published."""
    passed = all(r.passed for r in results)
    con.execute("BEGIN TRANSACTION")
    try:
        if passed and publish is not None:
            publish(con)
        record_evaluation(con, results, run_id, published=passed)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return passed


def latest_evaluation(con: duckdb.DuckDBPyConnection, asset: str) -> list[GateResult]:
    """The checks of the newest evaluation of ``asset`` (empty when it was never evaluated)."""
    ensure_schema(con)
    rows = con.execute(
        f"""SELECT check_name, passed, description, evidence, run_id, evaluated_at FROM {TABLE}
            WHERE evaluation_id = (SELECT evaluation_id FROM {TABLE} WHERE asset = ?
                                   ORDER BY evaluated_at DESC, rowid DESC LIMIT 1)
            ORDER BY check_name""",
        [asset],
    ).fetchall()
    return [
        GateResult(asset, name, bool(passed), desc or "", json.loads(ev or "{}"), run or "",
                   at.isoformat() if hasattr(at, "isoformat") else str(at))
        for name, passed, desc, ev, run, at in rows
    ]


def require_passed(
    con: duckdb.DuckDBPyConnection, asset: str, consumer: str, expected: Iterable[str] = ()
) -> list[GateResult]:
    """The latest verdicts of ``asset``, or ``GateRefused`` if any failed, if a check in ``expected`` is missing
    from them, or if the asset was never evaluated (nothing was ever published for a consumer to read)."""
    latest = latest_evaluation(con, asset)
    if not latest:
        raise GateRefused(
            consumer,
            [GateResult(asset, ", ".join(expected) or "gates", False,
                        "never evaluated: nothing has been published yet")],
        )
    failed = [g for g in latest if not g.passed]
    missing = sorted(set(expected) - {g.check for g in latest})
    failed += [GateResult(asset, m, False, "not evaluated in the latest run of the asset", {}, latest[0].run_id,
                          latest[0].evaluated_at) for m in missing]
    if failed:
        raise GateRefused(consumer, failed)
    return latest


def history(con: duckdb.DuckDBPyConnection, asset: str, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first: every check of the last ``limit`` evaluations of ``asset`` (the audit trail of its gate)."""
    ensure_schema(con)
    rows = con.execute(
        f"""SELECT evaluation_id, check_name, passed, description, run_id, evaluated_at, published FROM {TABLE}
            WHERE evaluation_id IN (SELECT evaluation_id FROM {TABLE} WHERE asset = ?
                                    GROUP BY evaluation_id ORDER BY max(evaluated_at) DESC LIMIT ?)
            ORDER BY evaluated_at DESC, check_name""",
        [asset, limit],
    ).fetchall()
    keys = ("evaluation_id", "check", "passed", "description", "run_id", "evaluated_at", "published")
    return [dict(zip(keys, r)) for r in rows]
