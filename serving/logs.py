"""Append-only JSONL logs of the gateway: one record per request, feedback, shadow answers.

Flush policy (documented in the README): records are appended to an in-memory buffer by the request handler
(no I/O on the request path) and a background thread writes the buffer to the current file, flushes and fsyncs it
every ``flush_interval_s`` (default 1 s) and at shutdown. A crash therefore loses at most the last interval. Files
rotate by size or age: ``<dir>/<stream>/<stream>-<UTC start>-<pid>.jsonl``; a file is never rewritten, so readers
(the monitoring assets) may read every file but the newest one without coordination, and the newest up to its last
complete line. The gateway never opens the DuckDB warehouse: the monitoring assets load these files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("agenix.gateway.logs")


def content_for_log(text: str | None, policy: str) -> str | None:
    """What of a (redacted) text goes into the log: the text, its sha256, or nothing."""
    if text is None or policy == "none":
        return None
    if policy == "hashed":
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


class JsonlLog:
    def __init__(
        self,
        directory: Path,
        stream: str,
        flush_interval_s: float = 1.0,
        rotate_bytes: int = 64 * 2**20,
        rotate_seconds: float = 3600.0,
    ):
        self.directory = Path(directory) / stream
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self.flush_interval_s = flush_interval_s
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self._buffer: list[bytes] = []
        self._lock = threading.Lock()
        self._fh = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self.records_written = 0
        self.write_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"agenix-log-{stream}", daemon=True)
        self._thread.start()

    @property
    def current_path(self) -> Path | None:
        return self._path

    def append(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            self._buffer.append(line)

    def _open(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._path = self.directory / f"{self.stream}-{stamp}-{os.getpid()}.jsonl"
        self._fh = open(self._path, "ab")
        self._opened_at = time.monotonic()
        self._size = 0

    def flush(self) -> int:
        with self._lock:
            lines, self._buffer = self._buffer, []
        if not lines:
            return 0
        try:
            if self._fh is None or self._size >= self.rotate_bytes or time.monotonic() - self._opened_at >= self.rotate_seconds:
                if self._fh is not None:
                    self._fh.close()
                self._open()
            data = b"".join(lines)
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._size += len(data)
            self.records_written += len(lines)
        except OSError as exc:
            self.write_errors += 1
            log.error("request log %s: write failed, %d records kept for the next attempt: %s", self.directory, len(lines), exc)
            with self._lock:
                self._buffer[:0] = lines
            return 0
        return len(lines)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_records(directory: Path, stream: str) -> list[dict[str, Any]]:
    """Every complete record of a stream, oldest file first (for tests and the monitoring assets)."""
    out = []
    for path in sorted((Path(directory) / stream).glob(f"{stream}-*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    break  # a partial last line of a file being written
    return out
