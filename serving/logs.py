"""Append-only JSONL logs of the gateway: one record per request, feedback, shadow answers.

Flush policy (documented in the README): records are appended to an in-memory buffer by the request handler
(no I/O on the request path) and a background thread writes the buffer to the current file, flushes and fsyncs it
every ``flush_interval_s`` (default 1 s) and at shutdown. A crash therefore loses at most the last interval. Files
rotate by size or age: ``<dir>/<stream>/<stream>-<UTC start>-<pid>.jsonl``; a file is never rewritten, so readers
(the monitoring assets) may read every file but the newest one without coordination, and the newest up to its last
complete line. The gateway never opens the DuckDB warehouse: the monitoring assets load these files.

The logs hold who asked what: folders are created 0700 and files 0600, and folders and files left by an earlier
run with looser modes are tightened when a log opens. The ``hashed`` content policy writes an HMAC-SHA256 keyed
with ``AGENIX_LOG_HMAC_KEY`` (not a bare SHA-256, which a short question can be guessed back from by hashing
candidates); the gateway refuses to start with that policy and no key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("agenix.gateway.logs")


LOG_HMAC_ENV = "AGENIX_LOG_HMAC_KEY"
MIN_HMAC_KEY_CHARS = 32
DIR_MODE, FILE_MODE = 0o700, 0o600


class LogKeyMissing(ValueError):
    """The ``hashed`` content policy without a usable key in the environment."""


def log_hmac_key(environ: dict[str, str] | None = None) -> bytes:
    """The secret of the ``hashed`` policy from ``AGENIX_LOG_HMAC_KEY``. It comes from the environment (a secret
    store in production), not from a file beside the logs it protects, and every gateway process of a deployment
    shares it, so the same text gets the same digest everywhere."""
    value = (os.environ if environ is None else environ).get(LOG_HMAC_ENV, "")
    if len(value) < MIN_HMAC_KEY_CHARS:
        state = "is not set" if not value else f"has {len(value)} characters"
        raise LogKeyMissing(
            f"request_log.content is 'hashed' but {LOG_HMAC_ENV} {state}; set it to a random secret of at least "
            f"{MIN_HMAC_KEY_CHARS} characters (e.g. `openssl rand -hex 32`), or choose content 'redacted' or 'none'")
    return value.encode()


class ContentPolicy:
    """What of a (redacted) text goes into the log: the text, its keyed hash, or nothing."""

    def __init__(self, policy: str, key: bytes | None = None):
        if policy == "hashed" and not key:
            raise LogKeyMissing("the 'hashed' log policy needs a key")
        self.policy, self._key = policy, key

    @classmethod
    def from_environment(cls, policy: str, environ: dict[str, str] | None = None) -> ContentPolicy:
        return cls(policy, log_hmac_key(environ) if policy == "hashed" else None)

    def __call__(self, text: str | None) -> str | None:
        if text is None or self.policy == "none":
            return None
        if self.policy == "hashed":
            return "hmac-sha256:" + hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()  # type: ignore[arg-type]
        return text


def private_dir(path: Path) -> Path:
    """``path`` and its missing parents created 0700; an existing ``path`` is tightened to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


class JsonlLog:
    def __init__(
        self,
        directory: Path,
        stream: str,
        flush_interval_s: float = 1.0,
        rotate_bytes: int = 64 * 2**20,
        rotate_seconds: float = 3600.0,
    ):
        private_dir(Path(directory))
        self.directory = private_dir(Path(directory) / stream)
        for old in self.directory.iterdir():  # files of earlier runs, perhaps written before modes were tightened
            if old.is_file() and old.stat().st_mode & 0o077:
                os.chmod(old, FILE_MODE)
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
        # os.open with the mode: the file is never readable by others, not even between creation and a chmod.
        self._fh = os.fdopen(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "ab")
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
