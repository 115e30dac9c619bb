"""Calls to model servers that speak the OpenAI HTTP protocol (llama.cpp's server here, vLLM in production).

One pooled aiohttp session (keep-alive connections) serves every backend; each call has the backend's connect and
total timeouts. Failures become ``BackendError`` with ``retryable`` set for what a fallback may fix (connection
refused or reset, timeout, 5xx, 429), so routing can try the next backend and the circuit breaker can count it.

A ``BackendError`` has two descriptions: ``str(exc)`` with everything known (the backend's URL, its error body)
for the gateway's log and the request log, and ``public``, which names only what kind of failure it was
("HTTP 500", "connection failed") and is all a client ever sees: a backend's host, port and error text describe
the internal network and must not leave the gateway.

Streams of llama-cpp-python's server carry no ``usage`` (it ignores ``stream_options``); for a model with
``tokenize: llama-cpp-python`` the gateway counts with the backend's own tokenizer instead
(``POST /extras/tokenize/count``), see ``count_tokens``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from .config import ModelSpec


class BackendError(Exception):
    def __init__(self, model: str, message: str, *, public: str, status: int | None = None, retryable: bool = True):
        super().__init__(f"backend {model!r}: {message}")
        self.model = model
        self.public = public  # safe to show a client: the kind of failure, no address, no backend text
        self.status = status
        self.retryable = retryable


def _status_error(spec: ModelSpec, url: str, status: int, raw: bytes) -> BackendError:
    """An HTTP error answer; a fallback may fix a 5xx or 429, not a 4xx about the request itself."""
    return BackendError(spec.name, f"POST {url}: HTTP {status}: {raw[:300].decode(errors='replace')}",
                        public=f"HTTP {status}", status=status, retryable=status >= 500 or status == 429)


def _transport_error(spec: ModelSpec, url: str, exc: BaseException) -> BackendError:
    public = "timed out" if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError) else "connection failed"
    return BackendError(spec.name, f"POST {url}: {type(exc).__name__}: {exc}".rstrip(": "), public=public)


class BackendPool:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._bos: dict[str, int] = {}  # tokens the backend's tokenizer adds to any text (BOS), per model

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

    async def post_json(self, spec: ModelSpec, path: str, body: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        url = url or spec.url() + path
        try:
            async with self.session.post(url, data=orjson.dumps(body), headers=self._headers(spec),
                                         timeout=self._timeout(spec)) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise _status_error(spec, url, resp.status, raw)
                return orjson.loads(raw)
        except BackendError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _transport_error(spec, url, exc) from exc
        except orjson.JSONDecodeError as exc:
            raise BackendError(spec.name, f"POST {url}: answered with invalid JSON: {exc}", public="invalid response") from exc

    async def stream_json(self, spec: ModelSpec, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events of an OpenAI streaming call, each ``data:`` line decoded; ends at ``[DONE]``."""
        url = spec.url() + path
        try:
            async with self.session.post(url, data=orjson.dumps(body), headers=self._headers(spec),
                                         timeout=self._timeout(spec)) as resp:
                if resp.status >= 400:
                    raise _status_error(spec, url, resp.status, await resp.read())
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
            raise _transport_error(spec, url, exc) from exc
        except orjson.JSONDecodeError as exc:
            raise BackendError(spec.name, f"POST {url}: streamed invalid JSON: {exc}", public="invalid response") from exc

    async def count_tokens(self, spec: ModelSpec, prompt: str, completion: str) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) of a finished stream, counted by the backend's tokenizer.

        The prompt count equals what the backend reports for the same prompt (both add the BOS token). The
        completion is the text that was streamed: its count leaves out BOS (the tokenizer of an empty text gives
        just that) and the tokens of a stop sequence the backend matched and did not send."""
        if spec.tokenize != "llama-cpp-python":
            raise BackendError(spec.name, "no tokenizer endpoint configured", public="no tokenizer")
        root = spec.url().removesuffix("/v1")
        bos = self._bos.get(spec.name)
        texts = [prompt, completion] + ([""] if bos is None else [])
        counts = await asyncio.gather(*(self.post_json(spec, "", {"input": t, "model": spec.upstream_name},
                                                       url=root + "/extras/tokenize/count") for t in texts))
        if bos is None:
            bos = self._bos[spec.name] = int(counts[2]["count"])
        return int(counts[0]["count"]), max(0, int(counts[1]["count"]) - bos)
