"""A constant-time OpenAI-compatible backend for the gateway benchmark: the fastest server this machine can run, so
that what a gateway adds in front of it is what gets measured.

A raw asyncio ``Protocol`` (on uvloop when it is installed) parses HTTP/1.1 requests from a keep-alive (and
pipelined) byte stream itself and answers from byte strings built once at start:

* ``POST /v1/chat/completions`` (and ``/chat/completions``): a fixed ``chat.completion`` with ``usage``; with
  ``"stream": true`` in the body, the same answer as Server-Sent Events (``chat.completion.chunk`` objects, chunked
  transfer encoding, ``data: [DONE]``), plus a usage chunk when ``stream_options.include_usage`` is asked for;
* ``POST /v1/completions`` (and ``/completions``): a fixed ``text_completion`` (streamed likewise);
* ``GET /v1/models`` (and ``/models``): the one model ``stub``; ``GET /health``, ``/healthz``, ``/readyz``: ``ok``.

The body is never JSON-decoded: only ``"stream": true`` and ``include_usage`` are looked for in its bytes. Every
answer costs the same whatever the request says (the model name is echoed as ``stub``). One process, one thread.

``python -m agenix_bench.stub_backend --port 8099`` serves in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import Sequence

MODEL = "stub"
ANSWER = "The stub backend answers every request with this same sentence."
ANSWER_TOKENS = ["The", " stub", " backend", " answers", " every", " request", " with", " this", " same", " sentence."]
USAGE = {"prompt_tokens": 20, "completion_tokens": len(ANSWER_TOKENS), "total_tokens": 20 + len(ANSWER_TOKENS)}
MAX_HEADER_BYTES = 65_536
MAX_BODY_BYTES = 16 * 1_048_576

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_CRLF2 = b"\r\n\r\n"


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nServer: agenix-stub\r\n\r\n"
        + body
    )


def _chunked(events: list[bytes]) -> bytes:
    """An SSE answer in chunked transfer encoding: one chunk per event, then the terminating zero chunk."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nServer: agenix-stub\r\n\r\n"
    )
    out = [head]
    for event in events:
        out.append(f"{len(event):x}\r\n".encode() + event + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def _sse(obj: object) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else _json(obj)) + b"\n\n"


class Answers:
    """Every answer the stub gives, as the exact bytes written to the socket."""

    def __init__(self, created: int | None = None) -> None:
        created = int(time.time()) if created is None else created
        chat_id, cmpl_id = "chatcmpl-agenix-stub", "cmpl-agenix-stub"
        self.chat = _response(
            "200 OK",
            _json(
                {
                    "id": chat_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": ANSWER},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": USAGE,
                    "system_fingerprint": "agenix-stub",
                }
            ),
        )
        self.completion = _response(
            "200 OK",
            _json(
                {
                    "id": cmpl_id,
                    "object": "text_completion",
                    "created": created,
                    "model": MODEL,
                    "choices": [{"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}],
                    "usage": USAGE,
                }
            ),
        )

        def chat_chunk(delta: dict, finish: str | None) -> dict:
            return {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        def cmpl_chunk(text: str, finish: str | None) -> dict:
            return {
                "id": cmpl_id,
                "object": "text_completion",
                "created": created,
                "model": MODEL,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            }

        chat_events = [_sse(chat_chunk({"role": "assistant", "content": ""}, None))]
        chat_events += [_sse(chat_chunk({"content": tok}, None)) for tok in ANSWER_TOKENS]
        chat_events.append(_sse(chat_chunk({}, "stop")))
        chat_usage = _sse(
            {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "choices": [],
                "usage": USAGE,
            }
        )
        cmpl_events = [_sse(cmpl_chunk(tok, None)) for tok in ANSWER_TOKENS] + [_sse(cmpl_chunk("", "stop"))]
        cmpl_usage = _sse(
            {
                "id": cmpl_id,
                "object": "text_completion",
                "created": created,
                "model": MODEL,
                "choices": [],
                "usage": USAGE,
            }
        )
        done = _sse(b"[DONE]")
        self.chat_stream = _chunked([*chat_events, done])
        self.chat_stream_usage = _chunked([*chat_events, chat_usage, done])
        self.completion_stream = _chunked([*cmpl_events, done])
        self.completion_stream_usage = _chunked([*cmpl_events, cmpl_usage, done])
        self.models = _response(
            "200 OK",
            _json(
                {
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": created, "owned_by": "agenix"}],
                }
            ),
        )
        self.health = _response("200 OK", b'{"status":"ok"}')
        self.not_found = _response("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}')
        self.bad_method = _response(
            "405 Method Not Allowed", b'{"error":{"message":"method not allowed","type":"invalid_request_error"}}'
        )
        self.bad_request = _response(
            "400 Bad Request", b'{"error":{"message":"bad request","type":"invalid_request_error"}}'
        )
        self.too_large = _response(
            "413 Content Too Large", b'{"error":{"message":"request too large","type":"invalid_request_error"}}'
        )
        self.length_required = _response(
            "411 Length Required", b'{"error":{"message":"send Content-Length","type":"invalid_request_error"}}'
        )

    def post(self, path: bytes, body: bytes) -> bytes:
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if _STREAM_TRUE.search(body):
                return self.chat_stream_usage if b"include_usage" in body else self.chat_stream
            return self.chat
        if path in (b"/v1/completions", b"/completions"):
            if _STREAM_TRUE.search(body):
                return self.completion_stream_usage if b"include_usage" in body else self.completion_stream
            return self.completion
        return self.not_found

    def get(self, path: bytes) -> bytes:
        if path in (b"/v1/models", b"/models"):
            return self.models
        if path in (b"/health", b"/healthz", b"/readyz", b"/"):
            return self.health
        return self.not_found


class StubProtocol(asyncio.Protocol):
    """One connection: requests are parsed from ``buf`` as they arrive; answers are written in order."""

    __slots__ = ("answers", "buf", "counter", "transport")

    def __init__(self, answers: Answers, counter: list[int]) -> None:
        self.answers = answers
        self.counter = counter
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        transport = self.transport
        out: list[bytes] = []
        close = False
        while True:
            end = buf.find(_CRLF2)
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    out.append(self.answers.too_large)
                    close = True
                break
            head = bytes(buf[:end])
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if len(parts) != 3:
                out.append(self.answers.bad_request)
                close = True
                break
            method, target, version = parts
            length = 0
            headers = head[line_end + 2 :].lower() if line_end >= 0 else b""
            i = headers.find(b"content-length:")
            if i >= 0:
                j = headers.find(b"\r\n", i)
                try:
                    length = int(headers[i + 15 : j if j >= 0 else len(headers)].strip())
                except ValueError:
                    out.append(self.answers.bad_request)
                    close = True
                    break
            elif b"transfer-encoding:" in headers:
                out.append(self.answers.length_required)
                close = True
                break
            if length > MAX_BODY_BYTES:
                out.append(self.answers.too_large)
                close = True
                break
            total = end + 4 + length
            if len(buf) < total:
                break  # wait for the rest of the body
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            q = target.find(b"?")
            path = target if q < 0 else target[:q]
            if method == b"POST":
                out.append(self.answers.post(path, body))
            elif method == b"GET":
                out.append(self.answers.get(path))
            else:
                out.append(self.answers.bad_method)
            self.counter[0] += 1
            if version == b"HTTP/1.0" or b"connection: close" in headers:
                close = True
                break
        if transport is None:
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            transport.close()


def install_uvloop() -> str:
    """Use uvloop's event loop policy when uvloop is installed; returns the loop's name."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def start_server(host: str = "127.0.0.1", port: int = 0) -> asyncio.base_events.Server:
    """Bind and start serving on the running loop; ``server.sockets[0].getsockname()[1]`` is the port."""
    loop = asyncio.get_running_loop()
    answers, counter = Answers(), [0]
    return await loop.create_server(
        lambda: StubProtocol(answers, counter), host, port, backlog=4096, reuse_address=True
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Constant-time OpenAI-compatible stub backend (benchmarks only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    loop_name = install_uvloop()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await start_server(args.host, args.port)
        port = server.sockets[0].getsockname()[1]
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        print(f"stub backend listening on http://{args.host}:{port}/v1 ({loop_name})", flush=True)
        async with server:
            await stop

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
