"""Calls to model servers that speak the OpenAI HTTP protocol (llama.cpp's server here, vLLM in production).

One pooled aiohttp session (keep-alive connections) serves every backend; each call has the backend's connect and
total timeouts. Failures become ``BackendError`` with ``retryable`` set for what a fallback may fix (connection
refused or reset, timeout, 5xx, 429), so routing can try the next backend and the circuit breaker can count it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from .config import ModelSpec


class BackendError(Exception):
    def __init__(self, model: str, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(f"backend {model!r}: {message}")
        self.model = model
        self.status = status
        self.retryable = retryable


def _status_error(spec: ModelSpec, status: int, raw: bytes) -> BackendError:
    """An HTTP error answer; a fallback may fix a 5xx or 429, not a 4xx about the request itself."""
    return BackendError(spec.name, f"HTTP {status}: {raw[:300].decode(errors='replace')}", status=status,
                        retryable=status >= 500 or status == 429)


class BackendPool:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=300)
            # auto_decompress off and no cookie jar: the gateway only relays JSON.
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _headers(spec: ModelSpec) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if spec.api_key_env and os.environ.get(spec.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[spec.api_key_env]}"
        return headers

    @staticmethod
    def _timeout(spec: ModelSpec) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=spec.timeout_s, sock_connect=spec.connect_timeout_s)

    async def post_json(self, spec: ModelSpec, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = spec.url() + path
        try:
            async with self.session.post(url, data=orjson.dumps(body), headers=self._headers(spec),
                                         timeout=self._timeout(spec)) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise _status_error(spec, resp.status, raw)
                return orjson.loads(raw)
        except BackendError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendError(spec.name, f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        except orjson.JSONDecodeError as exc:
            raise BackendError(spec.name, f"answered with invalid JSON: {exc}") from exc

    async def stream_json(self, spec: ModelSpec, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events of an OpenAI streaming call, each ``data:`` line decoded; ends at ``[DONE]``."""
        url = spec.url() + path
        try:
            async with self.session.post(url, data=orjson.dumps(body), headers=self._headers(spec),
                                         timeout=self._timeout(spec)) as resp:
                if resp.status >= 400:
                    raise _status_error(spec, resp.status, await resp.read())
                async for line in resp.content:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    yield orjson.loads(data)
        except BackendError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendError(spec.name, f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        except orjson.JSONDecodeError as exc:
            raise BackendError(spec.name, f"streamed invalid JSON: {exc}") from exc
