"""LiteLLM request logging for the gateway benchmark: a ``CustomLogger`` that appends LiteLLM's standard logging
payload of every request (success and failure: model, key hash, tokens, cost, latency, messages and response) as
one JSON line to ``$AGENIX_BENCH_LITELLM_LOG``. Lines are buffered and flushed at least once a second, as the
Agenix gateway's request log does (``request_log.flush_interval_s: 1.0``).

Loaded by LiteLLM from ``config.yaml`` (``litellm_settings.callbacks: request_log.logger``); this file is copied
beside the config by ``agenix bench gateway``. Runs inside LiteLLM's venv, never imported by Agenix.
"""

from __future__ import annotations

import json
import os
import time

from litellm.integrations.custom_logger import CustomLogger


class JsonlRequestLogger(CustomLogger):
    def __init__(self, path: str | None = None, flush_interval_s: float = 1.0) -> None:
        super().__init__()
        self.path = path or os.environ.get("AGENIX_BENCH_LITELLM_LOG", "litellm-requests.jsonl")
        self.flush_interval_s = flush_interval_s
        self._fh = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 - lives with the process
        self._last_flush = time.monotonic()
        self.count = 0

    def _write(self, status: str, kwargs: dict, start_time, end_time) -> None:
        payload = kwargs.get("standard_logging_object") or {}
        record = {"status": status, "logged_at": time.time(), **payload}
        self._fh.write(json.dumps(record, default=str) + "\n")
        self.count += 1
        now = time.monotonic()
        if now - self._last_flush >= self.flush_interval_s:
            self._fh.flush()
            self._last_flush = now

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._write("success", kwargs, start_time, end_time)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._write("failure", kwargs, start_time, end_time)


logger = JsonlRequestLogger()
