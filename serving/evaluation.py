"""Evaluate a release on a golden suite through the gateway's own RAG pipeline. No Dagster import.

Every question goes through ``RagPipeline.run``, the function the gateway calls for a use-case request (follow-up
rewriting, retrieval, routing, prompt, model with fallbacks, grounding and output checks), against the real
model servers of the model registry. One request at a time, so the latencies are what one user would see.

- ``evaluate_release`` runs a suite's QA items and golden conversations and returns an ``EvalRun``: one record per
  question or conversation turn, and the figures ``core.evaluation.summarise`` makes of them.
- ``evaluate_pair`` evaluates a candidate and the release in production side by side (same process, same suite,
  one after the other, after both are warm) and the deltas between them (``core.evaluation.compare``).

The Dagster ``eval_report`` asset and ``agenix eval`` both call ``evaluate_pair``: the same figures either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agenix_assets.core import evaluation as metrics
from agenix_assets.core.golden import GoldenSuite

from .config import Release

__all__ = ["EvalRun", "EvalTarget", "evaluate_pair", "evaluate_release", "suite_hash", "target_identity"]


@dataclass(frozen=True)
class EvalTarget:
    """What is evaluated: a release (model, prompt version, index version) and its retrieval settings."""

    label: str  # "candidate" | "production" | a release name
    release: Release
    retrieval: dict[str, Any] | None = None  # None: the use case's current retrieval config
    parts: dict[str, Any] = field(default_factory=dict)  # content hashes of the parts (registries), for the record


def target_identity(target: EvalTarget) -> dict[str, Any]:
    rel = target.release
    return {"model": rel.model, "prompt_version": rel.prompt_version, "index_version": rel.index_version,
            "retrieval": target.retrieval, "parts": target.parts}


def suite_hash(suite: GoldenSuite) -> str:
    data = json.dumps(suite.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass
class EvalRun:
    target: EvalTarget
    index_version: int | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"label": self.target.label, "release": self.target.release.model_dump(mode="json"),
                "identity": target_identity(self.target), "index_version": self.index_version,
                "summary": self.summary, "records": self.records, "seconds": round(self.seconds, 2)}


def _doc_ids(passages: list[Any]) -> list[str]:
    return [p.document_id for p in passages]


async def _ask(pipeline: Any, target: EvalTarget, messages: list[dict[str, str]]) -> tuple[Any, str | None]:
    """The pipeline's result for a conversation, or (a stand-in, the reason) when the gateway would have refused
    the request (a guardrail, no servable index, no backend): the item then counts as not answered."""
    from .guardrails import GuardrailViolation
    from .pipeline import RagError

    try:
        return await pipeline.run(target.release, messages, retrieval=target.retrieval), None
    except RagError as exc:
        return exc.result, f"{exc.code}: {exc}"
    except GuardrailViolation as exc:
        return None, f"guardrail {exc.rule}: {exc.message}"


def _fields(result: Any, error: str | None, no_answer: str) -> dict[str, Any]:
    if result is None:
        return {"answer_text": no_answer, "retrieved": [], "contexts": [], "tier": None, "model": None,
                "latency_ms": None, "tokens_in": 0, "tokens_out": 0, "cost": 0.0, "extra": {"error": error}}
    return {
        "answer_text": result.answer_text if not error else no_answer,
        "retrieved": _doc_ids(result.passages),
        "contexts": [p.text for p in result.used] if result.answered else [],
        "tier": result.model or "none",
        "model": result.model,
        "latency_ms": result.latency_ms,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "cost": result.cost,
        "extra": {"query": result.query, "rewritten": result.rewritten, "expansions": result.expansions,
                  "route": result.route_reason,
                  "index_version": result.index_version, **({"error": error} if error else {})},
    }


async def _run_items(pipeline: Any, target: EvalTarget, suite: GoldenSuite, detector: Any,
                     progress: Callable[[str], None] | None) -> tuple[list[dict[str, Any]], int | None]:
    no_answer = pipeline.no_answer(target.release)
    records: list[dict[str, Any]] = []
    version = None
    for item in suite.items:
        result, error = await _ask(pipeline, target, [{"role": "user", "content": item.question}])
        f = _fields(result, error, no_answer)
        version = f["extra"].get("index_version", version)
        rec = metrics.item_result(item, f["answer_text"], no_answer, retrieved=f["retrieved"], contexts=f["contexts"],
                                  detector=detector, tier=f["tier"], model=f["model"], latency_ms=f["latency_ms"],
                                  tokens_in=f["tokens_in"], tokens_out=f["tokens_out"], cost=f["cost"])
        records.append({**rec, **f["extra"]})
        if progress:
            progress(f"{target.label} {item.id} [{f['tier']}]: {'ok' if rec['correct'] else 'MISS'}  {f['answer_text'][:100]}")
    for conv in suite.conversations:
        messages: list[dict[str, str]] = []
        for n, turn in enumerate(conv.turns):
            messages.append({"role": "user", "content": turn.user})
            result, error = await _ask(pipeline, target, list(messages))
            f = _fields(result, error, no_answer)
            cited = _doc_ids(result.used) if result is not None and result.answered else []
            rec = metrics.turn_result(conv.id, n, turn.expect, turn.user, f["answer_text"], no_answer,
                                      cited_documents=cited, retrieved=f["retrieved"], contexts=f["contexts"],
                                      detector=detector, tier=f["tier"], model=f["model"], latency_ms=f["latency_ms"],
                                      tokens_in=f["tokens_in"], tokens_out=f["tokens_out"], cost=f["cost"])
            records.append({**rec, **f["extra"]})
            messages.append({"role": "assistant", "content": f["answer_text"]})
            if progress:
                progress(f"{target.label} {conv.id}#{n + 1}: {'ok' if rec['passed'] else '; '.join(rec['failures'])}")
    return records, version


async def evaluate_release(pipeline: Any, target: EvalTarget, suite: GoldenSuite, *, detector: Any = None,
                           k: int | None = None, progress: Callable[[str], None] | None = None) -> EvalRun:
    t0 = time.perf_counter()
    records, version = await _run_items(pipeline, target, suite, detector, progress)
    summary = metrics.summarise(records, k=k or pipeline.settings.top_k)
    return EvalRun(target, version, records, summary, time.perf_counter() - t0)


def _same(a: EvalTarget, b: EvalTarget) -> bool:
    ra, rb = a.release, b.release
    return (ra.model, ra.prompt_version, ra.index_version) == (rb.model, rb.prompt_version, rb.index_version) \
        and a.retrieval == b.retrieval and a.parts == b.parts


async def _evaluate_pair(pipeline: Any, candidate: EvalTarget, production: EvalTarget | None, suite: GoldenSuite,
                         detector: Any, progress: Callable[[str], None] | None) -> tuple[EvalRun, EvalRun | None]:
    # Warm up what a first request would otherwise wait for (PII engine, index, encoders, the model server's
    # first prompt) before anything is timed.
    await asyncio.get_running_loop().run_in_executor(None, pipeline.warm_up, candidate.release.index_version)
    warm = [{"role": "user", "content": suite.items[0].question if suite.items else "warm up"}]
    for t in filter(None, (candidate, production)):
        try:
            await pipeline.run(t.release, warm, retrieval=t.retrieval)
        except Exception:  # noqa: BLE001 - the evaluation itself records what fails
            pass
    try:
        cand = await evaluate_release(pipeline, candidate, suite, detector=detector, progress=progress)
        prod = None
        if production is not None:
            if _same(candidate, production):
                # The candidate is production's release: one run measures both.
                prod = EvalRun(production, cand.index_version, cand.records, cand.summary, cand.seconds)
            else:
                prod = await evaluate_release(pipeline, production, suite, detector=detector, progress=progress)
    finally:
        await pipeline.close()
    return cand, prod


def evaluate_pair(pipeline: Any, candidate: EvalTarget, production: EvalTarget | None, suite: GoldenSuite, *,
                  detector: Any = None, progress: Callable[[str], None] | None = None
                  ) -> tuple[EvalRun, EvalRun | None, dict[str, Any]]:
    """Candidate and production on the same suite in this process; the deltas (candidate - production)."""
    cand, prod = asyncio.run(_evaluate_pair(pipeline, candidate, production, suite, detector, progress))
    deltas = metrics.compare(cand.summary, prod.summary) if prod is not None else {}
    return cand, prod, deltas
