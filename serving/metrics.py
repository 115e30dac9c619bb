"""Prometheus metrics of the gateway (``GET /metrics``). Labels are kept to low-cardinality values (model, use case,
status, team), never key ids or request ids."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("agenix_gateway_requests", "Requests by endpoint, target and status",
                                ["endpoint", "target", "status"], registry=r)
        self.latency = Histogram("agenix_gateway_request_seconds", "Total request latency",
                                 ["endpoint", "target"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("agenix_gateway_time_to_first_token_seconds", "Time to first token of streams",
                              ["target"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("agenix_gateway_tokens", "Tokens by direction and model", ["direction", "model"], registry=r)
        self.cost = Counter("agenix_gateway_cost", "Cost in the registry currency by team and model", ["team", "model"], registry=r)
        self.limited = Counter("agenix_gateway_limited", "Requests refused by a limit or budget", ["limit"], registry=r)
        self.guardrail_blocks = Counter("agenix_gateway_guardrail_blocks", "Requests blocked by a guardrail", ["rule"], registry=r)
        self.backend_errors = Counter("agenix_gateway_backend_errors", "Failed backend calls", ["model"], registry=r)
        self.feedback = Counter("agenix_gateway_feedback", "Feedback received by rating", ["rating"], registry=r)
        self.manifest_reloads = Counter("agenix_gateway_manifest_reloads", "Deployment manifests taken into force", registry=r)
        self.shadow_dropped = Gauge("agenix_gateway_shadow_dropped", "Shadow copies dropped (too many in flight)", registry=r)
        self.log_records = Gauge("agenix_gateway_request_log_records", "Request-log records written", registry=r)

    def observe(self, rec: Any) -> None:
        target = rec.use_case or rec.model or rec.requested_model or "none"
        if len(target) > 64:
            target = "other"
        self.requests.labels(rec.endpoint, target, str(rec.status)).inc()
        self.latency.labels(rec.endpoint, target).observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            self.ttft.labels(target).observe(rec.ttft_ms / 1000)
        if rec.model:
            if rec.tokens_in:
                self.tokens.labels("input", rec.model).inc(rec.tokens_in)
            if rec.tokens_out:
                self.tokens.labels("output", rec.model).inc(rec.tokens_out)
            if rec.cost:
                self.cost.labels(rec.team or "none", rec.model).inc(rec.cost)

    def render(self, gateway: Any) -> tuple[bytes, str]:
        self.shadow_dropped.set(gateway.shadow_dropped)
        self.log_records.set(gateway.request_log.records_written)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
