"""Append-only, hash-chained JSONL ledgers: the tamper-evident store of approvals and deployment events.

Each line is one record with three fields the ledger adds: ``seq`` (1, 2, ...), ``prev`` (the previous record's
hash, 64 zeros for the first) and ``hash`` (sha256 of the record's canonical JSON without ``hash``). Editing a
record breaks its hash; deleting or reordering one breaks the next record's ``prev`` and the ``seq`` run. Deleting
the newest records leaves a valid shorter chain, so ``verify`` also takes heads recorded elsewhere (a gate's
evidence in the warehouse, a Dagster materialization) and reports a head the ledger no longer contains.

Appends take an exclusive ``flock`` on ``<ledger>.lock`` (processes on one host: the CLI, a Dagster run, a
sensor), write one line and fsync, so two writers never interleave or fork the chain. No Dagster import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
CHAIN_FIELDS = ("seq", "prev", "hash")


class LedgerError(RuntimeError):
    """A ledger line that does not parse (names the file and line)."""


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Chain ``record`` after the newest one and write it durably; returns the record as stored."""
        clash = set(CHAIN_FIELDS) & set(record)
        if clash:
            raise ValueError(f"{self.path}: a record may not set {sorted(clash)} (the ledger does)")
        with self._locked():
            last = self._last()
            stored = {**record, "seq": (last["seq"] + 1) if last else 1, "prev": last["hash"] if last else GENESIS}
            stored["hash"] = record_hash(stored)
            line = json.dumps(stored, sort_keys=True, ensure_ascii=False, default=str) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return stored

    def _last(self) -> dict[str, Any] | None:
        records = self.records()
        return records[-1] if records else None

    def records(self) -> list[dict[str, Any]]:
        """Every record in order, each with ``_line`` (its line in the file, for error messages)."""
        if not self.path.is_file():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LedgerError(f"{self.path}:{n}: not a JSON record ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise LedgerError(f"{self.path}:{n}: not a JSON object")
            rec["_line"] = n
            out.append(rec)
        return out

    def head(self) -> str:
        last = self._last()
        return last["hash"] if last else GENESIS

    def verify(self, expected_heads: Sequence[str] = ()) -> list[str]:
        """Every problem of the chain, each naming the file and line: a record whose content no longer matches
        its hash (altered), a broken link or sequence (deleted, inserted or reordered), a line that does not
        parse, and each of ``expected_heads`` (hashes recorded elsewhere) the ledger does not contain (its newest
        records deleted)."""
        problems: list[str] = []
        try:
            records = self.records()
        except LedgerError as exc:
            return [str(exc)]
        prev, seq, seen = GENESIS, 0, set()
        for rec in records:
            line = rec.pop("_line")
            where = f"{self.path}:{line}"
            if rec.get("hash") != record_hash(rec):
                problems.append(f"{where}: record {rec.get('seq')} was altered (its content does not match its hash)")
            if rec.get("prev") != prev:
                problems.append(f"{where}: record {rec.get('seq')} does not follow the record before it "
                                "(a record was deleted, inserted or reordered)")
            if rec.get("seq") != seq + 1:
                problems.append(f"{where}: sequence jumps from {seq} to {rec.get('seq')} (a record is missing)")
            prev = rec.get("hash", "")
            seq = rec.get("seq") if isinstance(rec.get("seq"), int) else seq + 1
            seen.add(prev)
        for head in expected_heads:
            if head and head not in seen:
                problems.append(f"{self.path}: record {head[:16]}... that other evidence refers to is missing "
                                "(the newest records were deleted or the ledger was replaced)")
        return problems


def strip_line(record: dict[str, Any]) -> dict[str, Any]:
    """A record as stored (without the reader's ``_line``)."""
    return {k: v for k, v in record.items() if k != "_line"}
