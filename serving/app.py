"""The Agenix AI gateway: an OpenAI-compatible HTTP API in front of the approved releases of every use case.

Endpoints: ``POST /v1/chat/completions`` (plain and SSE streaming, usage included), ``POST /v1/embeddings``,
``GET /v1/models``, ``POST /v1/feedback``, ``GET /healthz``, ``GET /readyz`` (details with an admin key),
``GET /metrics`` (Prometheus) and the API docs where ``admin`` in gateway.yaml puts them.

A request's way through (``Gateway.chat``): API key (hash lookup) -> body size -> JSON checked against the
published schema (serving/schemas.py) -> target (a use case or a registry model) -> role and attribute checks ->
rate limits (key and team; requests and tokens) -> team budget -> input guardrails (PII redaction before any
model sees the text, prompt injection, topics, tools) -> for a use case: release from the live manifest (canary
sticky per key; shadow mirrored), then the use case's ``RagPipeline`` (serving/pipeline.py): follow-up
rewriting (the last message resolved against earlier turns into a standalone query), retrieval from its index
version filtered by the key's data domains, routing (small/large/extractive, cost-aware, circuit breaker), the
versioned prompt, backend with fallback, grounding check and output PII scan -> response with usage and, for use
cases, the query and sources in the ``agenix`` extension field -> one request-log record, metrics, limit
settlement, cost. Usage is the backend's count; where none exists the ``agenix`` field and the log say
``usage_estimated``.

This module is the HTTP side (keys, limits, logs, SSE, errors in OpenAI's shape, ``RagError`` codes mapped to
statuses); the steps of a use case live in the pipeline, which the primary request, the shadow release and an
evaluation (``RagPipeline.from_config``) all run, so none of them has a copy of the others' code.

Errors use OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}`` and status codes 400, 401,
403, 404, 413, 429 (with Retry-After), 502, 503. The app is single-process asyncio; CPU work (embedding,
retrieval, PII analysis of long texts) runs in a small thread pool so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from agenix_assets.core.config import ConfigError

from .auth import AccessDenied, ApiKey, AuthError, KeyStore, keys_file
from .backends import BackendError, BackendPool
from .config import GatewayConfig, ModelSpec, Release
from .guardrails import Guardrails, GuardrailViolation
from .limits import BudgetTracker, LimitSubject, RateLimiter
from .logs import ContentPolicy, JsonlLog, LogKeyMissing
from .manifest import ManifestWatcher, pick_release, shadow_sampled
from .metrics import GatewayMetrics
from .pipeline import (
    ChargesUsage,
    RagError,
    RagPipeline,
    RagResult,
    build_guardrails,
    estimate_tokens,
    last_user_text,
    message_text,
    query_encoders,
)
from .rag import IndexUnavailable, UseCaseIndex
from .routing import NoBackendAvailable, RouteDecision, Router
from .schemas import ChatCompletionRequest, EmbeddingRequest, FeedbackRequest, RequestInvalid, validate_request

log = logging.getLogger("agenix.gateway")

JSON = "application/json"
MAX_SHADOW_IN_FLIGHT = 8
RECENT_REQUESTS = 100_000


class ApiError(Exception):
    """An error returned to the client in OpenAI's shape."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
             502: "api_error", 503: "api_error"}

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 retry_after: int | None = None, type_: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.retry_after = retry_after
        self.type = type_ or self.TYPES.get(status, "api_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, request_id: str | None = None) -> Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if request_id:
            headers["x-request-id"] = request_id
        return Response(orjson.dumps(self.body()), status_code=self.status, media_type=JSON, headers=headers)


def _json(obj: Any, status: int = 200, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON,
                    headers=headers)


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc


def parse_body(raw: bytes, model: type) -> dict[str, Any]:
    """The JSON body, checked against the request model that /openapi.json publishes; 400 with OpenAI's
    ``param`` for the first field that breaks it."""
    body = parse_json(raw)
    try:
        validate_request(model, body)
    except RequestInvalid as exc:
        raise ApiError(400, exc.message, exc.code, exc.param) from None
    return body


def transcript_prompt(messages: list[dict[str, Any]]) -> str:
    """A chat request for a base (completion-style) model: a plain transcript ending where the answer goes."""
    lines = []
    for m in messages:
        role = {"system": "Instructions", "developer": "Instructions", "assistant": "Assistant"}.get(m["role"], "User")
        lines.append(f"{role}: {message_text(m.get('content'))}")
    lines.append("Assistant:")
    return "\n".join(lines)


@dataclass
class RequestRecord(ChargesUsage):
    """What the request log keeps of one request (see logs.py for the flush policy)."""

    request_id: str
    started: float
    ts: str
    endpoint: str
    key_id: str | None = None
    team: str | None = None
    use_case: str | None = None
    release: str | None = None
    canary: bool = False
    shadow: bool = False
    model: str | None = None
    requested_model: str | None = None
    route_reason: str | None = None
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    stream: bool = False
    status: int = 200
    error_code: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    # Where tokens_in/out come from: "backend" (its usage), "tokenizer" (its tokenizer counted the streamed text),
    # "estimate" (~4 characters a token, or words for the extractive tier: no real count was available).
    usage_source: str | None = None
    cost: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    backend_ms: float | None = None
    guardrail_events: list[dict[str, Any]] = field(default_factory=list)
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    index_version: int | None = None
    prompt_version: str | None = None
    question: str | None = None
    query: str | None = None  # what retrieval ran on: the question, or a follow-up resolved from earlier turns
    rewritten: bool = False
    answer: str | None = None

    @classmethod
    def start(cls, endpoint: str, request_id: str | None = None, **fields: Any) -> RequestRecord:
        return cls(request_id or "req_" + uuid.uuid4().hex[:24], time.perf_counter(),
                   _utcnow().isoformat(timespec="milliseconds"), endpoint, **fields)

    def failures(self) -> str:
        """The backends tried and why each failed, for the client's error message: the public reason only (the
        backend's own error text and address stay in ``error``, for the request log)."""
        return "; ".join(f"{f['model']}: {f.get('public', f['error'])}" for f in self.fallbacks)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.tokens_in, "completion_tokens": self.tokens_out,
                "total_tokens": self.tokens_in + self.tokens_out}

    def usage_note(self) -> dict[str, Any]:
        """For the ``agenix`` field: whether the counts are the backend's or a guess."""
        return {"usage_source": self.usage_source, "usage_estimated": self.usage_source == "estimate"}

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("started")
        return d


class Gateway:
    def __init__(self, config: GatewayConfig, home: Path, encoder: Any = None):
        self.config = config
        self.settings = config.settings
        # First, before anything is loaded or opened: with the 'hashed' policy and no key the gateway does not start.
        try:
            self.log_content = ContentPolicy.from_environment(self.settings.request_log.content)
        except LogKeyMissing as exc:
            raise ConfigError(f"{config.settings_path}: request_log.content: {exc}") from None
        self.home = Path(home)
        self.registry = config.registry
        self.keys = KeyStore(keys_file(self.home))
        self.limiter = RateLimiter()
        self.budgets = BudgetTracker(self.home / "gateway" / "spend.json")
        self.router = Router(self.registry, self.settings.routing)
        self.backends = BackendPool()
        self.deny_list_path = self.home / "gateway" / "known_people.json"
        self._deny_stamp = _stamp(self.deny_list_path)
        self.known_people = 0
        self.guardrails = self.make_guardrails()
        self._encoder = encoder
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agenix-cpu")
        self.indexes: dict[str, UseCaseIndex] = {}
        self.prompts: dict[str, Any] = {}
        self._prompt_stamps: dict[str, tuple[int, int] | None] = {}
        self.prompt_error: str | None = None  # a prompt file change refused (see refresh_prompts)
        self.pipelines: dict[str, RagPipeline] = {}
        from agenix_assets.core.deployment import deployed_manifest_path

        self.manifest = ManifestWatcher(deployed_manifest_path(self.home, self.settings.environment),
                                        validate=self.validate_manifest, fallback=config.manifest_path)
        rl = self.settings.request_log
        log_dir = self.home / rl.dir
        kw = dict(flush_interval_s=rl.flush_interval_s, rotate_bytes=int(rl.rotate_mb * 2**20),
                  rotate_seconds=rl.rotate_minutes * 60)
        self.request_log = JsonlLog(log_dir, "requests", **kw)
        self.feedback_log = JsonlLog(log_dir, "feedback", **kw)
        self.metrics = GatewayMetrics()
        self.recent: OrderedDict[str, tuple[str, str]] = OrderedDict()  # request id -> (key id, team)
        self._shadow_tasks: set[asyncio.Task] = set()
        self.shadow_dropped = 0
        self._bg: asyncio.Task | None = None
        self._extractive = None
        self.started_at = time.time()
        self.ready_error: str | None = "starting"

    # ------------------------------------------------------------------ lifecycle

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from agenix_assets.core.retrieval import configure_query_threads, default_encoder

            configure_query_threads()
            # Full precision: /v1/embeddings must return the vectors the index was built with, whatever the batch.
            self._encoder = default_encoder()
        return self._encoder

    def query_encoder(self, quantize: str) -> Any:
        """The encoder a use case's retrieval config asks for (int8 query quantisation trades ~0.3% recall for
        about half the query-embedding time); the full-precision one is shared."""
        return query_encoders(lambda: self.encoder, lambda: self._encoder)(quantize)

    @property
    def extractive(self) -> Any:
        if self._extractive is None:
            from .extractive import ExtractiveAnswerer

            self._extractive = ExtractiveAnswerer(self.encoder)
        return self._extractive

    def load_use_cases(self) -> None:
        from .glossary import use_case_glossary
        from .prompts import load_prompt_book

        index_root = self.home / "index"
        for name, uc in self.settings.use_cases.items():
            self.indexes[name] = UseCaseIndex.from_config(name, uc, self.config.config_dir, index_root, self.query_encoder)
            self._prompt_stamps[name] = _stamp(self.config.resolve(uc.prompts))
            self.prompts[name] = load_prompt_book(self.config.resolve(uc.prompts))
            # Serving, shadow traffic and evaluation run a use case through this one object's steps.
            self.pipelines[name] = RagPipeline(
                name, uc, self.indexes[name], self.prompts[name], self.router, self.backends,
                lambda: self.extractive, self.registry, self.guardrails, pool=self.pool,
                encoder_for=self.query_encoder,
                glossary=use_case_glossary(self.config.config_dir, uc))

    def refresh_prompts(self) -> bool:
        """Reload a use case's prompt book when its file changed while the gateway runs (a new prompt version,
        which a release about to be deployed names), so a deployment never needs a restart. A change that alters
        the prompt of a pinned release in force (a version edited in place after approval) is refused: the book in
        force stays, and the error is logged and on /readyz. Returns whether a book was swapped in."""
        from agenix_assets.core.registry import pin_problems

        from .prompts import load_prompt_book

        swapped = False
        for name, uc in self.settings.use_cases.items():
            path = self.config.resolve(uc.prompts)
            stamp = _stamp(path)
            if name not in self.prompts or stamp == self._prompt_stamps.get(name):
                continue
            self._prompt_stamps[name] = stamp
            try:
                book = load_prompt_book(path)
                dep = self.manifest.current.use_cases.get(name) if self.manifest.current else None
                pinned = [r for r in (dep.release, dep.canary.release if dep.canary else None,
                                      dep.shadow.release if dep.shadow else None) if r and r.pins] if dep else []
                problems = [p for r in pinned for p in pin_problems(self.config.config_dir, self.home / "index", name, r)]
                if problems:
                    raise ValueError("it changes a pinned release in force: " + "; ".join(problems))
            except (ConfigError, ValueError, OSError) as exc:
                self.prompt_error = f"{path}: not reloaded: {exc}"
                log.error("%s (the prompt versions in force stay)", self.prompt_error)
                continue
            self.prompts[name] = book
            self.pipelines[name].prompts = book
            self.prompt_error, swapped = None, True
            log.info("prompt book %s reloaded (versions %s)", path, ", ".join(book.versions))
        if swapped and self.manifest.last_error:
            self.manifest.retry()  # a manifest rejected for naming a version that did not exist yet
        return swapped

    def validate_manifest(self, manifest: Any) -> None:
        for uc, dep in manifest.use_cases.items():
            if uc not in self.settings.use_cases:
                raise ValueError(f"use_cases.{uc}: not a use case of the gateway (known: {sorted(self.settings.use_cases)})")
            releases = [("release", dep.release)]
            if dep.canary:
                releases.append(("canary.release", dep.canary.release))
            if dep.shadow:
                releases.append(("shadow.release", dep.shadow.release))
            for where, rel in releases:
                if rel.model != "auto" and self.registry.get(rel.model) is None:
                    raise ValueError(f"use_cases.{uc}.{where}.model: unknown or disabled model {rel.model!r}")
                book = self.prompts.get(uc)
                if book is not None:
                    try:
                        book.get(rel.prompt_version)
                    except KeyError as exc:
                        raise ValueError(f"use_cases.{uc}.{where}.prompt_version: {exc.args[0] if exc.args else exc}") from exc
                if rel.index_version != "live" and uc in self.indexes:
                    self.indexes[uc].resolve(rel.index_version)
                if rel.pins:
                    from agenix_assets.core.registry import pin_problems

                    problems = pin_problems(self.config.config_dir, self.home / "index", uc, rel)
                    if problems:
                        raise ValueError(f"use_cases.{uc}.{where}: release {rel.name} is pinned to what was approved, "
                                         f"and config/ no longer holds it: {'; '.join(problems)}")

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self.load_use_cases)
        self.manifest.poll()
        await loop.run_in_executor(self.pool, self.warm_up)
        # The heap now holds torch, the encoder, Presidio and the indexes: a full collection of it takes 0.3-0.7 s
        # with the server frozen (measured: 35% of a saturated run). Freeze it out of the collector's sight.
        gc.collect()
        gc.freeze()
        self._bg = asyncio.create_task(self._background())

    def make_guardrails(self) -> Guardrails:
        """Guardrails whose PII redactor knows the CRM's contacts, when the RAG assets exported them
        (``gateway/known_people.json``); pattern and heuristic recognizers only until then."""
        guardrails, self.known_people = build_guardrails(self.settings, self.deny_list_path)
        return guardrails

    def refresh_deny_list(self) -> bool:
        """Swap in guardrails built from a changed deny list (built and warmed in a worker thread first)."""
        stamp = _stamp(self.deny_list_path)
        if stamp == self._deny_stamp:
            return False
        fresh = self.make_guardrails()
        fresh.warm_up()
        self.guardrails, self._deny_stamp = fresh, stamp
        for pipeline in self.pipelines.values():
            pipeline.guardrails = fresh
        log.info("PII deny list reloaded: %d known people", self.known_people)
        return True

    def warm_up(self) -> None:
        """Load what the first request would otherwise wait for: PII engine, encoder, live indexes."""
        self.guardrails.warm_up()
        self.encoder.encode_query("warm up")
        problems = []
        manifest = self.manifest.current
        if manifest is None:
            problems.append(f"no valid deployment manifest ({self.manifest.last_error})")
        else:
            for uc, dep in manifest.use_cases.items():
                try:
                    self.indexes[uc].load(dep.release.index_version)
                except IndexUnavailable as exc:
                    problems.append(str(exc))
        self.ready_error = "; ".join(problems) or None

    async def _background(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.manifest_poll_s)
            try:
                self.keys.reload_if_changed()
                await asyncio.get_running_loop().run_in_executor(self.pool, self.refresh_prompts)
                if _stamp(self.deny_list_path) != self._deny_stamp:
                    await asyncio.get_running_loop().run_in_executor(self.pool, self.refresh_deny_list)
                if self.manifest.poll():
                    self.metrics.manifest_reloads.inc()
                    await asyncio.get_running_loop().run_in_executor(self.pool, self.warm_up)
                elif self.ready_error and self.manifest.current is not None:
                    # An index may have appeared since (first materialization while the gateway runs).
                    await asyncio.get_running_loop().run_in_executor(self.pool, self.warm_up)
                if time.monotonic() - last_flush > 10:
                    self.budgets.flush()
                    last_flush = time.monotonic()
            except Exception:  # keep the loop alive whatever happens; the error is logged
                log.exception("gateway background task")

    async def shutdown(self) -> None:
        if self._bg is not None:
            self._bg.cancel()
        if self._shadow_tasks:
            await asyncio.wait(self._shadow_tasks, timeout=5)
        await self.backends.close()
        self.request_log.close()
        self.feedback_log.close()
        self.budgets.flush()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ request plumbing

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes", "request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes", "request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def authenticate(self, request: Request) -> ApiKey:
        header = request.headers.get("authorization")
        presented = None
        if header:
            scheme, _, token = header.partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        try:
            return self.keys.authenticate(presented)
        except AuthError as exc:
            raise ApiError(401, str(exc), exc.code) from exc

    def authorize(self, key: ApiKey, action: str, **kw: Any) -> None:
        try:
            self.keys.authorize(key, action, **kw)
        except AccessDenied as exc:
            raise ApiError(403, str(exc), exc.code) from exc

    def limit_subjects(self, key: ApiKey) -> list[LimitSubject]:
        lim = self.settings.limits
        team = self.settings.team(key.team)
        return [
            LimitSubject("key", key.key_id, key.rpm or lim.key_rpm, key.tpm or lim.key_tpm),
            LimitSubject("team", key.team, team.rpm, team.tpm),
        ]

    def admit(self, key: ApiKey, est_tokens: int) -> list[LimitSubject]:
        subjects = self.limit_subjects(key)
        now = time.monotonic()
        decision = self.limiter.check(subjects, est_tokens, now)
        if not decision.allowed:
            self.metrics.limited.labels(decision.limit_name or "limit").inc()
            raise ApiError(429, decision.message, "rate_limit_exceeded", retry_after=decision.retry_after_s)
        team = self.settings.team(key.team)
        if team.monthly_budget is not None:
            b = self.budgets.check(key.team, team.monthly_budget, _utcnow())
            if not b.allowed:
                self.limiter.settle(subjects, est_tokens, 0, now)
                self.metrics.limited.labels("budget").inc()
                raise ApiError(429, f"team {key.team!r} has spent {b.spent:.4f} of its monthly budget of "
                               f"{b.budget:.2f} {self.registry.currency}", "insufficient_quota",
                               retry_after=b.retry_after_s, type_="insufficient_quota")
        return subjects

    def settle(self, key: ApiKey, subjects: list[LimitSubject], est: int, rec: RequestRecord) -> None:
        self.limiter.settle(subjects, est, rec.tokens_in + rec.tokens_out, time.monotonic())
        if rec.cost:
            self.budgets.add(key.team, rec.cost, _utcnow())

    def remember(self, rec: RequestRecord) -> None:
        if rec.key_id is None:
            return
        self.recent[rec.request_id] = (rec.key_id, rec.team or "")
        if len(self.recent) > RECENT_REQUESTS:
            self.recent.popitem(last=False)

    def finish(self, rec: RequestRecord) -> None:
        rec.latency_ms = round((time.perf_counter() - rec.started) * 1000, 3)
        self.request_log.append(rec.to_dict())
        self.metrics.observe(rec)
        if not rec.shadow:
            self.remember(rec)

    # ------------------------------------------------------------------ generation

    def _backend_failed(self, spec: ModelSpec, exc: BackendError, rec: RequestRecord) -> None:
        """Count the failure for the circuit breaker and the metrics; the gateway log and the request log keep the
        full error, the client gets ``exc.public`` only."""
        self.router.breaker.failure(spec.name, time.monotonic())
        self.metrics.backend_errors.labels(spec.name).inc()
        log.warning("request %s: %s", rec.request_id, exc)
        rec.fallbacks.append({"model": spec.name, "error": str(exc)[:300], "public": exc.public})

    # ------------------------------------------------------------------ /v1/chat/completions

    async def chat(self, request: Request) -> Response:
        rec = RequestRecord.start("chat")
        rid = rec.request_id
        try:
            # The key first: a client without one must not make the gateway wait for or buffer a body.
            key = self.authenticate(request)
            rec.key_id, rec.team = key.key_id, key.team
            body = parse_body(await self.read_body(request), ChatCompletionRequest)
            rec.requested_model = body["model"]
            rec.stream = bool(body.get("stream"))
            if body["model"] in self.settings.use_cases:
                return await self.chat_use_case(key, body, rec)
            return await self.chat_direct(key, body, rec)
        except ApiError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            self.finish(rec)
            return exc.response(rid)
        except Exception as exc:  # a bug must still answer in OpenAI's shape and leave a log record
            log.exception("request %s failed", rid)
            rec.status, rec.error_code = 500, type(exc).__name__
            self.finish(rec)
            return ApiError(500, f"internal error ({type(exc).__name__}); request id {rid}", "internal_error",
                            type_="api_error").response(rid)

    async def chat_direct(self, key: ApiKey, body: dict[str, Any], rec: RequestRecord) -> Response:
        model = body["model"]
        spec = self.registry.get(model)
        if spec is None or spec.kind == "embedding":
            raise ApiError(404, f"The model {model!r} does not exist or is not enabled on this gateway", "model_not_found", "model")
        if spec.kind == "extractive":
            raise ApiError(400, f"model {model!r} answers only inside a use case (it needs retrieved context)", "model_not_supported", "model")
        self.authorize(key, "chat", model=model)
        messages = body["messages"]
        prompt_text = "".join(message_text(m.get("content")) for m in messages)
        est = estimate_tokens(prompt_text) + int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        subjects = self.admit(key, est)
        try:
            gr = self.guardrails.check_input(None, messages, body.get("tools"), body.get("tool_choice"))
        except GuardrailViolation as exc:
            rec.guardrail_events = [e.to_dict() for e in exc.events]
            self.limiter.settle(subjects, est, 0, time.monotonic())
            raise ApiError(400, exc.message, "guardrail_blocked", exc.rule) from exc
        rec.guardrail_events = [e.to_dict() for e in gr.events]
        if spec.fallbacks or self.router.breaker.state(model, time.monotonic()) != "closed":
            try:
                decision = self.router.route(model, text=last_user_text(messages), prompt_tokens=est, now=time.monotonic())
            except NoBackendAvailable as exc:
                self.limiter.settle(subjects, est, 0, time.monotonic())
                raise ApiError(503, str(exc), "backend_unavailable", retry_after=exc.retry_after_s) from exc
        else:  # the common case, without building a chain
            decision = RouteDecision([spec], f"requested model {model}")
        rec.route_reason = decision.reason
        upstream = {k: v for k, v in body.items() if k not in ("model", "messages", "stream", "stream_options", "user")}
        if rec.stream:
            return await self.stream_direct(key, subjects, est, decision, gr.messages, upstream, rec, gr.placeholders)
        last: Exception | None = None
        for spec in decision.chain:
            if not self.router.breaker.allow(spec.name, time.monotonic()):
                rec.fallbacks.append({"model": spec.name, "error": "circuit open"})
                continue
            t0 = time.perf_counter()
            try:
                path, request = direct_request(spec, gr.messages, upstream)
                data = await self.backends.post_json(spec, path, request)
                if spec.prompt_style == "completion":
                    choice = (data.get("choices") or [{}])[0]
                    data["choices"] = [{"index": 0, "message": {"role": "assistant", "content": (choice.get("text") or "").strip()},
                                        "finish_reason": choice.get("finish_reason") or "stop"}]
                    data["object"] = "chat.completion"
            except BackendError as exc:
                self._backend_failed(spec, exc, rec)
                last = exc
                if not exc.retryable:
                    break
                continue
            self.router.breaker.success(spec.name)
            rec.backend_ms = round((time.perf_counter() - t0) * 1000, 3)
            rec.model = spec.name
            usage = data.get("usage") or {}
            rec.usage_source = "backend" if "prompt_tokens" in usage and "completion_tokens" in usage else "estimate"
            rec.tokens_in = int(usage.get("prompt_tokens") or estimate_tokens(prompt_text))
            rec.tokens_out = int(usage.get("completion_tokens") or 0)
            rec.cost = spec.cost(rec.tokens_in, rec.tokens_out)
            choices = data.get("choices") or []
            for ch in choices:
                msg = ch.get("message") or {}
                if msg.get("content"):
                    try:
                        out = self.guardrails.check_output(None, msg["content"], placeholders=gr.placeholders)
                    except GuardrailViolation as exc:
                        rec.guardrail_events += [e.to_dict() for e in exc.events]
                        self.settle(key, subjects, est, rec)
                        raise ApiError(400, exc.message, "guardrail_blocked", exc.rule) from exc
                    msg["content"] = out.text
                    rec.guardrail_events += [e.to_dict() for e in out.events]
            data["model"] = model
            data["usage"] = rec.usage()
            data["agenix"] = {"request_id": rec.request_id, "model": spec.name, "route": decision.reason,
                              **rec.usage_note()}
            self.settle(key, subjects, est, rec)
            rec.question = self.log_content(last_user_text(gr.messages))
            rec.answer = self.log_content((choices[0].get("message") or {}).get("content") if choices else None)
            self.finish(rec)
            return _json(data, request_id=rec.request_id)
        self.limiter.settle(subjects, est, 0, time.monotonic())
        if last is None:
            raise ApiError(503, f"model {model!r}: every backend has an open circuit; retry later", "backend_unavailable",
                           retry_after=int(self.settings.routing.circuit_breaker.cooldown_s))
        raise ApiError(502, f"model {model!r}: {rec.failures()}",
                       "backend_error")

    async def stream_direct(self, key: ApiKey, subjects: list[LimitSubject], est: int, decision: RouteDecision,
                            messages: list[dict], upstream: dict[str, Any], rec: RequestRecord,
                            placeholders: Any = ()) -> Response:
        requested = rec.requested_model or ""
        last: Exception | None = None
        for spec in decision.chain:
            if not self.router.breaker.allow(spec.name, time.monotonic()):
                rec.fallbacks.append({"model": spec.name, "error": "circuit open"})
                continue
            path, body = direct_request(spec, messages, upstream)
            body["stream"] = True
            # vLLM and llama.cpp's llama-server then end the stream with the real usage; llama-cpp-python ignores
            # it, and _relay counts with the backend's tokenizer instead.
            body["stream_options"] = {"include_usage": True}
            it = self.backends.stream_json(spec, path, body)
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                first = None
            except BackendError as exc:
                self._backend_failed(spec, exc, rec)
                last = exc
                continue
            self.router.breaker.success(spec.name)
            rec.model, rec.route_reason = spec.name, decision.reason
            prompt = body.get("prompt") if spec.prompt_style == "completion" else None
            return StreamingResponse(self._relay(key, subjects, est, spec, requested, first, it, rec, placeholders, prompt),
                                     media_type="text/event-stream", headers={"x-request-id": rec.request_id})
        self.limiter.settle(subjects, est, 0, time.monotonic())
        raise ApiError(502 if last else 503, f"model {requested!r}: no backend could start the stream: "
                       f"{rec.failures()}", "backend_error" if last else "backend_unavailable")

    async def _relay(self, key: ApiKey, subjects: list[LimitSubject], est: int, spec: ModelSpec, requested: str,
                     first: dict | None, it: AsyncIterator[dict], rec: RequestRecord,
                     placeholders: Any = (), prompt: str | None = None) -> AsyncIterator[bytes]:
        """Backend stream -> OpenAI chat chunks. With an output PII policy, text is held back to the end of each
        sentence and scanned before it leaves (a sentence costs a little time to first token; no unscanned text
        is ever sent)."""
        cid, created = "chatcmpl-" + rec.request_id[4:], int(time.time())
        scan = self.guardrails.policy(None).output_pii != "off"
        sent: list[str] = []
        pending = ""
        usage: dict[str, Any] | None = None
        finish: str | None = None
        generated = ""  # the backend's text as it came, before any output redaction: what its tokens made

        def chunk(text: str, fin: str | None = None) -> bytes:
            delta: dict[str, Any] = {"content": text}
            out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": requested,
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}
            if not sent:
                delta["role"] = "assistant"
                out["agenix"] = {"request_id": rec.request_id, "model": spec.name, "route": rec.route_reason}
            if rec.ttft_ms is None and text:
                rec.ttft_ms = round((time.perf_counter() - rec.started) * 1000, 3)
            sent.append(text)
            return b"data: " + orjson.dumps(out) + b"\n\n"

        def release(text: str) -> str:
            if not scan or not text:
                return text
            out = self.guardrails.check_output(None, text, placeholders=placeholders)
            rec.guardrail_events += [e.to_dict() for e in out.events]
            return out.text

        try:
            item = first
            while item is not None:
                if item.get("usage"):
                    usage = item["usage"]
                for ch in item.get("choices") or []:
                    text = ch.get("text") if "text" in ch else (ch.get("delta") or {}).get("content")
                    finish = ch.get("finish_reason") or finish
                    if not text:
                        continue
                    generated += text
                    if not scan:
                        yield chunk(text)
                        continue
                    pending += text
                    cut = max(pending.rfind(". "), pending.rfind("? "), pending.rfind("! "), pending.rfind("\n"))
                    if cut >= 0:
                        yield chunk(release(pending[: cut + 1]))
                        pending = pending[cut + 1:]
                try:
                    item = await it.__anext__()
                except StopAsyncIteration:
                    item = None
            if pending:
                yield chunk(release(pending))
            yield chunk("", finish or "stop")
        except GuardrailViolation as exc:
            rec.guardrail_events += [e.to_dict() for e in exc.events]
            rec.status, rec.error_code = 400, "guardrail_blocked"
            yield b"data: " + orjson.dumps(ApiError(400, exc.message, "guardrail_blocked", exc.rule).body()) + b"\n\n"
        except BackendError as exc:
            self.router.breaker.failure(spec.name, time.monotonic())
            log.warning("request %s: stream broke: %s", rec.request_id, exc)
            rec.fallbacks.append({"model": spec.name, "error": str(exc)[:300], "public": exc.public})
            rec.status, rec.error_code = 502, "backend_error"
            yield b"data: " + orjson.dumps(ApiError(502, f"model {requested!r}: the backend failed mid-stream "
                                                    f"({exc.public})", "backend_error").body()) + b"\n\n"
        await self._count_stream(spec, rec, usage, prompt, generated, est)
        rec.cost = spec.cost(rec.tokens_in, rec.tokens_out)
        final = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": requested, "choices": [],
                 "usage": rec.usage(), "agenix": {"request_id": rec.request_id, **rec.usage_note()}}
        yield b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n"
        text = "".join(sent)
        self.settle(key, subjects, est, rec)
        rec.answer = self.log_content(text)
        self.finish(rec)

    async def _count_stream(self, spec: ModelSpec, rec: RequestRecord, usage: dict[str, Any] | None,
                            prompt: str | None, generated: str, est: int) -> None:
        """The token counts of a finished stream: the backend's usage chunk; else, for a completion-style model
        whose exact prompt is known, its tokenizer's counts; else an estimate, marked as one."""
        if usage and "prompt_tokens" in usage and "completion_tokens" in usage:
            rec.tokens_in, rec.tokens_out = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
            rec.usage_source = "backend"
            return
        if prompt is not None and spec.tokenize:
            try:
                rec.tokens_in, rec.tokens_out = await self.backends.count_tokens(spec, prompt, generated)
                rec.usage_source = "tokenizer"
                return
            except BackendError as exc:  # the answer was delivered; only its count falls back to a guess
                log.warning("request %s: counting tokens failed, estimating: %s", rec.request_id, exc)
        rec.tokens_in = estimate_tokens(prompt) if prompt is not None else est
        rec.tokens_out = estimate_tokens(generated) if generated else 0
        rec.usage_source = "estimate"

    # ------------------------------------------------------------------ use cases (RAG)

    async def chat_use_case(self, key: ApiKey, body: dict[str, Any], rec: RequestRecord) -> Response:
        """A use case's answer: the HTTP side (release, limits, the request log, the response or its stream)
        around the use case's RagPipeline, whose steps do the rest."""
        use_case = body["model"]
        uc = self.settings.use_cases[use_case]
        pipeline = self.pipelines[use_case]
        rec.use_case = use_case
        self.authorize(key, "chat", use_case=use_case)
        manifest = self.manifest.current
        if manifest is None or use_case not in manifest.use_cases:
            # The manifest's error names files on the server: it is on /readyz for admin keys, not in a client's 503.
            raise ApiError(503, f"use case {use_case!r} has no release in the {self.settings.environment} deployment "
                           "manifest", "no_release")
        dep = manifest.use_cases[use_case]
        choice = pick_release(use_case, dep, key.key_id)
        rec.release, rec.canary, rec.prompt_version = choice.release.name, choice.canary, choice.release.prompt_version
        messages = body["messages"]
        question_raw = last_user_text(messages)
        est = estimate_tokens(question_raw) + uc.context_chars // 4 + int(body.get("max_tokens") or 256)
        subjects = self.admit(key, est)
        try:
            gr = pipeline.guard(messages, body.get("tools"), body.get("tool_choice"))
        except GuardrailViolation as exc:
            rec.guardrail_events = [e.to_dict() for e in exc.events]
            self.limiter.settle(subjects, est, 0, time.monotonic())
            self.metrics.guardrail_blocks.labels(exc.rule).inc()
            raise ApiError(400, exc.message, "guardrail_blocked", exc.rule) from exc
        rec.guardrail_events = [e.to_dict() for e in gr.events]
        params = {k: body[k] for k in ("temperature", "top_p", "seed", "max_tokens") if k in body}
        try:
            result = await pipeline.run(choice.release, gr.messages, key.allowed_domains(), params, guarded=gr,
                                        request_id=rec.request_id)
        except RagError as exc:
            self.record_result(rec, exc.result)
            if exc.code == "guardrail_blocked":  # the answer was generated (and is paid for), then withheld
                self.settle(key, subjects, est, rec)
            else:
                self.limiter.settle(subjects, est, 0, time.monotonic())
            raise rag_api_error(exc) from exc
        self.record_result(rec, result)
        if dep.shadow is not None and shadow_sampled(rec.request_id, dep.shadow.sample_rate):
            self.mirror(use_case, dep.shadow.release, key, gr, params, rec)
        ext = {"request_id": rec.request_id, "use_case": use_case, "release": choice.release.name,
               "canary": choice.canary, "model": rec.model, "route": rec.route_reason,
               "index_version": result.index_version, "prompt_version": choice.release.prompt_version,
               "sources": [p.public(i + 1) for i, p in enumerate(result.sources)], "answered": result.answered,
               "query": result.query, "rewritten": result.rewritten,
               **({"expanded": result.expansions} if result.expansions else {}), "guardrails": rec.guardrail_events}
        text = result.answer_text
        self.settle(key, subjects, est, rec)
        usage = rec.usage()
        ext.update(rec.usage_note())
        cid, created = "chatcmpl-" + rec.request_id[4:], int(time.time())
        if rec.stream:
            return StreamingResponse(self._stream_answer(cid, created, use_case, text, result.finish_reason, usage,
                                                         ext, rec),
                                     media_type="text/event-stream", headers={"x-request-id": rec.request_id})
        self.finish(rec)
        return _json({"id": cid, "object": "chat.completion", "created": created, "model": use_case,
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": result.finish_reason}],
                      "usage": usage, "agenix": ext}, request_id=rec.request_id)

    def record_result(self, rec: RequestRecord, result: RagResult) -> None:
        """What a pipeline run did, into the request's log record and the metrics."""
        rec.model, rec.route_reason = result.model, result.route_reason or None
        rec.index_version = result.index_version or None
        rec.tokens_in, rec.tokens_out, rec.cost = result.tokens_in, result.tokens_out, result.cost
        rec.usage_source = result.usage_source
        rec.backend_ms = result.backend_ms
        rec.fallbacks = result.fallbacks
        rec.guardrail_events = result.guardrail_events
        rec.retrieved = [{"chunk_id": p.chunk_id, "document_id": p.document_id, "score": round(p.score, 6),
                          "relevance": round(p.relevance, 4)} for p in result.sources]
        rec.question = self.log_content(result.question)
        rec.query = self.log_content(result.query)
        rec.rewritten = result.rewritten
        rec.answer = self.log_content(result.answer_text) if result.answer_text else None
        for f in result.fallbacks:
            if "public" in f:  # a backend call failed (the pipeline told the circuit breaker)
                self.metrics.backend_errors.labels(f["model"]).inc()
        for e in result.guardrail_events:
            if e["rule"] == "grounding":
                self.metrics.guardrail_blocks.labels("grounding").inc()

    def mirror(self, use_case: str, release: Release, key: ApiKey, guarded: Any, params: dict[str, Any],
               primary: RequestRecord) -> None:
        """Run the shadow release through the same pipeline on the (already redacted) request; its answer is
        logged, never returned."""
        if len(self._shadow_tasks) >= MAX_SHADOW_IN_FLIGHT:
            self.shadow_dropped += 1
            return

        async def run() -> None:
            rec = RequestRecord.start("chat", primary.request_id + "_shadow", key_id=key.key_id, team=key.team,
                                      use_case=use_case, release=release.name, shadow=True,
                                      requested_model=use_case, prompt_version=release.prompt_version)
            try:
                result = await self.pipelines[use_case].run(release, guarded.messages, key.allowed_domains(), params,
                                                            guarded=guarded, request_id=rec.request_id)
                self.record_result(rec, result)
            except RagError as exc:
                self.record_result(rec, exc.result)
                err = rag_api_error(exc)
                rec.status, rec.error_code = err.status, err.code
            except Exception as exc:  # a shadow never affects the primary; record what went wrong
                rec.status, rec.error_code = 500, type(exc).__name__
            self.finish(rec)

        task = asyncio.create_task(run())
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _stream_answer(self, cid: str, created: int, model: str, text: str, finish: str, usage: dict,
                             ext: dict, rec: RequestRecord) -> AsyncIterator[bytes]:
        """The use-case answer as SSE. The answer is complete (and output-scanned) before the first byte, so no
        unscanned text ever leaves; words are sent as separate deltas, as clients expect of a stream."""
        def chunk(delta: dict, fin: str | None = None, **extra: Any) -> bytes:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": fin}], **extra}
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        rec.ttft_ms = round((time.perf_counter() - rec.started) * 1000, 3)
        words = text.split(" ")
        yield chunk({"role": "assistant", "content": words[0]}, None, agenix=ext)
        for w in words[1:]:
            yield chunk({"content": " " + w})
        yield chunk({}, finish)
        yield b"data: " + orjson.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                        "model": model, "choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n"
        self.finish(rec)

    # ------------------------------------------------------------------ other endpoints

    async def embeddings(self, request: Request) -> Response:
        rec = RequestRecord.start("embeddings")
        rid = rec.request_id
        try:
            key = self.authenticate(request)
            rec.key_id, rec.team = key.key_id, key.team
            body = parse_body(await self.read_body(request), EmbeddingRequest)
            model = body.get("model")
            spec = self.registry.get(model) if isinstance(model, str) else None
            if spec is None or spec.kind != "embedding":
                names = [m.name for m in self.registry.models if m.kind == "embedding" and m.enabled]
                raise ApiError(404, f"The model {model!r} is not an embedding model of this gateway (available: {names})",
                               "model_not_found", "model")
            rec.model = rec.requested_model = spec.name
            self.authorize(key, "embeddings", model=spec.name)
            inputs = body["input"]
            if isinstance(inputs, str):
                inputs = [inputs]
            fmt = body.get("encoding_format", "float")
            dim = getattr(self.encoder, "dim", None)
            if body.get("dimensions") is not None and body["dimensions"] != dim:
                raise ApiError(400, f"model {spec.name!r} returns {dim} dimensions and cannot shorten them; "
                               f"omit 'dimensions' or pass {dim}", "invalid_value", "dimensions")
            est = sum(estimate_tokens(t) for t in inputs)
            subjects = self.admit(key, est)
            t0 = time.perf_counter()
            vectors, counted = await asyncio.get_running_loop().run_in_executor(self.pool, self._embed, inputs)
            rec.backend_ms = round((time.perf_counter() - t0) * 1000, 3)
            rec.add_usage(spec, est if counted is None else counted, 0, "estimate" if counted is None else "backend")
            self.settle(key, subjects, est, rec)
            data = []
            for i, v in enumerate(vectors):
                emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()
                data.append({"object": "embedding", "index": i, "embedding": emb})
            self.finish(rec)
            return _json({"object": "list", "data": data, "model": spec.name,
                          "usage": {"prompt_tokens": rec.tokens_in, "total_tokens": rec.tokens_in},
                          "agenix": {"request_id": rid, **rec.usage_note()}}, request_id=rid)
        except ApiError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            self.finish(rec)
            return exc.response(rid)

    def _embed(self, texts: list[str]) -> tuple[np.ndarray, int | None]:
        """The vectors and the tokens the embedder read (its tokenizer, truncated to its maximum sequence length
        as the model truncates), or None when the encoder exposes no tokenizer."""
        enc = self.encoder
        if hasattr(enc, "encode"):
            vectors = np.asarray(enc.encode(texts), dtype=np.float32)
        else:
            vectors = np.stack([enc.encode_query(t) for t in texts]).astype(np.float32)
        model = getattr(enc, "model", None)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            return vectors, None
        limit = getattr(model, "max_seq_length", None)
        ids = tokenizer(texts, add_special_tokens=True, truncation=limit is not None, max_length=limit)["input_ids"]
        return vectors, sum(len(i) for i in ids)

    def _visible_models(self, key: ApiKey) -> list[dict[str, Any]]:
        created = int(self.started_at)
        data = [{"id": uc, "object": "model", "created": created, "owned_by": "agenix:use-case"}
                for uc in self.settings.use_cases if key.allows_use_case(uc)]
        data += [{"id": m.name, "object": "model", "created": created, "owned_by": f"agenix:{m.kind}"}
                 for m in self.registry.models if m.enabled and m.kind in ("openai", "embedding") and key.allows_model(m.name)]
        return data

    async def models(self, request: Request) -> Response:
        try:
            key = self.authenticate(request)
            self.authorize(key, "models")
        except ApiError as exc:
            return exc.response()
        return _json({"object": "list", "data": self._visible_models(key)})

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}`` (``client.models.retrieve``): 404 for a model this key may not call, so a key
        learns nothing about models outside its grant."""
        try:
            key = self.authenticate(request)
            self.authorize(key, "models")
            model_id = request.path_params["model_id"]
            for m in self._visible_models(key):
                if m["id"] == model_id:
                    return _json(m)
            raise ApiError(404, f"The model {model_id!r} does not exist or this key may not call it", "model_not_found", "model")
        except ApiError as exc:
            return exc.response()

    async def feedback(self, request: Request) -> Response:
        try:
            key = self.authenticate(request)
            self.authorize(key, "feedback")
            fb = parse_body(await self.read_body(request), FeedbackRequest)
            owner = self.recent.get(fb["request_id"])
            if owner is None or owner[1] != key.team:
                raise ApiError(404, f"unknown request_id {fb['request_id']!r} (not a recent request of team {key.team!r})",
                               "request_not_found", "request_id")
            record = {"feedback_id": "fb_" + uuid.uuid4().hex[:20], "ts": _utcnow().isoformat(timespec="milliseconds"),
                      "key_id": key.key_id, "team": key.team, **fb}
            if "comment" in record:
                record["comment"] = self.log_content(record["comment"])
            self.feedback_log.append(record)
            self.metrics.feedback.labels(str(fb.get("rating", "none"))).inc()
            return _json({"id": record["feedback_id"], "object": "feedback", "request_id": fb["request_id"]})
        except ApiError as exc:
            return exc.response()

    def is_admin(self, request: Request) -> bool:
        """A valid admin key came with the request (a missing or bad key is simply not one: no 401 here)."""
        if "authorization" not in request.headers:
            return False
        try:
            return self.authenticate(request).is_admin
        except ApiError:
            return False

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        manifest = self.manifest.current
        now = time.monotonic()
        body = {
            "ready": self.ready_error is None,
            "problem": self.ready_error,
            "environment": self.settings.environment,
            "manifest": {"path": str(self.manifest.path), "sha": self.manifest.sha, "reloads": self.manifest.reloads,
                         "rejected": self.manifest.rejections, "last_error": self.manifest.last_error},
            "prompts_error": self.prompt_error,
            "use_cases": {},
            "circuits": self.router.breaker.snapshot(now),
            "pii_deny_list": {"path": str(self.deny_list_path), "known_people": self.known_people},
        }
        if manifest is not None:
            for uc, dep in manifest.use_cases.items():
                idx = self.indexes.get(uc)
                body["use_cases"][uc] = {"release": dep.release.name, "model": dep.release.model,
                                         "index_versions": idx.available_versions() if idx else [],
                                         "live_versions": idx.live_versions() if idx else [],
                                         "loaded": idx.resident() if idx else []}
        return self.ready_error is None, body


RAG_ERROR_STATUS = {"index_unavailable": 503, "backend_unavailable": 503, "backend_error": 502,
                    "guardrail_blocked": 400}


def rag_api_error(exc: RagError) -> ApiError:
    """A pipeline failure in OpenAI's shape."""
    return ApiError(RAG_ERROR_STATUS[exc.code], exc.message, exc.code, exc.rule, retry_after=exc.retry_after)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


def direct_request(spec: ModelSpec, messages: list[dict], upstream: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Path and body of a direct call: a chat model gets the messages; a base (completion-style) model gets them
    as a transcript, stopping where the next turn would start."""
    if spec.prompt_style == "completion":
        return "/completions", {"model": spec.upstream_name, "prompt": transcript_prompt(messages),
                                "stop": ["\nUser:", "\nInstructions:"], **_completion_params(upstream)}
    return "/chat/completions", {"model": spec.upstream_name, "messages": messages, **upstream}


def _completion_params(upstream: dict[str, Any]) -> dict[str, Any]:
    out = {k: upstream[k] for k in ("temperature", "top_p", "seed", "stop") if k in upstream}
    out["max_tokens"] = int(upstream.get("max_tokens") or upstream.get("max_completion_tokens") or 128)
    return out


def _utcnow():
    import datetime as dt

    return dt.datetime.now(dt.UTC)


ADMIN_LISTENER_ALWAYS = frozenset({"/healthz", "/readyz"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class ListenerGuard:
    """Which socket serves what, when an admin listener is configured (``admin.port``): the endpoints set to
    ``admin`` answer only there, and the admin listener answers nothing else but ``/healthz`` and ``/readyz``.
    Both listeners are sockets of the same server, so a request's local port (``scope["server"]``) tells them
    apart; every other request passes with one comparison."""

    def __init__(self, app: Any, admin_port: int, admin_only: frozenset[str]):
        self.app, self.admin_port, self.admin_only = app, admin_port, admin_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_admin = server is not None and server[1] == self.admin_port
            path = scope["path"]
            allowed = (path in self.admin_only or path in ADMIN_LISTENER_ALWAYS) if on_admin else path not in self.admin_only
            if not allowed:
                await ApiError(404, f"no route {scope['method']} {path}", "not_found").response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def admin_only_paths(admin: Any) -> frozenset[str]:
    """The operational paths served only on the admin listener under these settings."""
    return frozenset((["/metrics"] if admin.metrics == "admin" else []) + (list(DOCS_PATHS) if admin.docs == "admin" else []))


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for its own routes plus the API routes (plain Starlette routes, invisible to FastAPI),
    whose request bodies are the pydantic models that validate them (serving/schemas.py)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from .schemas import openapi_schemas

    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="OpenAI-compatible API of the Agenix AI gateway. `model` is a use case (retrieval, "
                                  "its versioned prompt, routing) or a registry model the key may call directly.")
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(openapi_schemas())
    components["schemas"]["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description": "agx_... API key"}}
    error = {"description": "OpenAI-shaped error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def operation(op_id: str, summary: str, body: str | None, codes: tuple[int, ...], **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": [{"bearer": []}],
                               "responses": {"200": {"description": "OK"}, **{str(c): error for c in codes}}, **extra}
        if body:
            out["requestBody"] = {"required": True,
                                  "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
        return out

    paths = doc.setdefault("paths", {})
    paths["/v1/chat/completions"] = {"post": operation(
        "createChatCompletion", "Chat completion (plain or SSE stream)", "ChatCompletionRequest",
        (400, 401, 403, 404, 413, 429, 502, 503))}
    paths["/v1/embeddings"] = {"post": operation(
        "createEmbedding", "Embeddings of the platform's embedder", "EmbeddingRequest", (400, 401, 403, 404, 413, 429))}
    paths["/v1/models"] = {"get": operation("listModels", "Use cases and models this key may call", None, (401, 403))}
    paths["/v1/models/{model_id}"] = {"get": operation(
        "retrieveModel", "One model this key may call", None, (401, 403, 404),
        parameters=[{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}])}
    paths["/v1/feedback"] = {"post": operation(
        "createFeedback", "Feedback on a recent answer", "FeedbackRequest", (400, 401, 403, 404, 413))}
    app.openapi_schema = doc
    return doc


def create_app(config_dir: Path, home: Path, environment: str | None = None, encoder: Any = None) -> FastAPI:
    config = GatewayConfig.load(Path(config_dir), environment)
    gateway = Gateway(config, Path(home), encoder=encoder)
    admin = gateway.settings.admin

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    docs = admin.docs != "off"
    app = FastAPI(title="Agenix AI gateway", version="1", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.state.gateway = gateway
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]

    # The API routes are plain Starlette routes: FastAPI's per-request dependency machinery cost ~29% of a
    # saturated gateway's CPU, and these handlers read the body themselves anyway.
    app.add_route("/v1/chat/completions", gateway.chat, methods=["POST"])
    app.add_route("/v1/embeddings", gateway.embeddings, methods=["POST"])
    app.add_route("/v1/models", gateway.models, methods=["GET"])
    app.add_route("/v1/models/{model_id:path}", gateway.model, methods=["GET"])
    app.add_route("/v1/feedback", gateway.feedback, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok", "uptime_s": round(time.time() - gateway.started_at, 1)})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        """Ready or not (200/503, ``{"ready": bool}``) for anyone, as probes need; with an admin key also why, the
        manifest, index versions, circuits and the deny list, which describe the deployment's insides."""
        ok, body = gateway.readiness()
        return _json(body if gateway.is_admin(request) else {"ready": ok}, status=200 if ok else 503)

    if admin.metrics != "off":
        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            data, ctype = gateway.metrics.render(gateway)
            return Response(data, media_type=ctype)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return ApiError(404, f"no route {request.method} {request.url.path}", "not_found").response()

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        return ApiError(400, f"method {request.method} is not allowed on {request.url.path}", "method_not_allowed").response()

    if admin.port is not None:
        app.add_middleware(ListenerGuard, admin_port=admin.port, admin_only=admin_only_paths(admin))
    return app


def _listening_socket(host: str, port: int) -> Any:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"admin listener {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(config_dir: Path, home: Path, host: str | None = None, port: int | None = None,
          environment: str | None = None, log_level: str = "warning") -> None:
    """Run the gateway in this process (uvloop + httptools when installed). ``agenix gateway`` calls this.

    With ``admin.port`` set, one server listens on two sockets, the API port and the admin listener; the
    ListenerGuard decides per request which endpoints each socket serves."""
    import uvicorn

    app = create_app(config_dir, home, environment)
    settings = app.state.gateway.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(app, host=host or settings.host, port=port or settings.port, log_level=log_level,
                            access_log=False, loop="auto", http="auto", timeout_graceful_shutdown=5)
    sockets = None
    if settings.admin.port is not None:
        if config.port == settings.admin.port:
            raise ConfigError(f"port {config.port} is also admin.port in gateway.yaml; choose another")
        sockets = [config.bind_socket(), _listening_socket(settings.admin.host, settings.admin.port)]
    uvicorn.Server(config).run(sockets=sockets)


__all__ = ["ApiError", "Gateway", "create_app", "estimate_tokens", "serve"]
