"""Waiting for the local servers the CLI and the benchmarks start (gateway, stub, LiteLLM)."""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return "(output not captured)"
    try:
        text = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log_path: Path | None, what: str) -> float:
    """Poll GET ``url`` until 200; returns the seconds waited. Raises with the log tail if the process exits or
    the timeout passes."""
    parts = urlsplit(url)
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {proc.returncode} while starting; log {log_path}:\n{_tail(log_path)}"
            )
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            conn.request("GET", parts.path or "/")
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200:
                return time.perf_counter() - t0
            last = f"HTTP {resp.status} {body[:300]!r}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s ({last}); log {log_path}:\n{_tail(log_path)}")
        time.sleep(0.1)
