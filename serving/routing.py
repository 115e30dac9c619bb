"""Routing: which backend answers a request, in which order to fall back, and a circuit breaker per backend.

A request names a model (then that model, then its declared fallbacks) or runs a use case whose release says
``model: auto``. For ``auto`` the router classifies the request (a pluggable classifier comes later):

* *complex*: long prompt (over ``large_prompt_tokens``) or a task marker ("compare", "step by step", ...) ->
  the cheapest enabled **large** model at or above the use case's quality tier, if there is one;
* *simple*: a short question that reads like a lookup ("what is", "how long", ...; with ``simple_markers_anywhere``
  also "my GV-4150 is installed - how long ...?") -> the cheapest model at or above the use case's
  ``simple_quality_tier`` (this is where the extractive answerer can win; the chain goes on to the LLM when it
  finds no sentence relevant enough);
* *standard*: everything else -> the cheapest model at or above the use case's quality tier.

"Cheapest" is the estimated cost of this request from the price table; ties go to the lower tier. The chain
continues with the chosen model's fallbacks, then the other candidates by cost. Backends whose circuit is open
are skipped (and named in the reason). Every decision carries a one-line reason that the request log keeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import CircuitBreakerSettings, ModelRegistry, ModelSpec, RoutingSettings


class CircuitBreaker:
    """Per backend: ``failures`` consecutive failures open the circuit for ``cooldown_s``; then one trial call is
    let through (half-open); its success closes the circuit, its failure re-opens it."""

    def __init__(self, settings: CircuitBreakerSettings):
        self.settings = settings
        self._failures: dict[str, int] = {}
        self._opened: dict[str, float] = {}
        self._trial: dict[str, bool] = {}

    def state(self, name: str, now: float) -> str:
        opened = self._opened.get(name)
        if opened is None:
            return "closed"
        return "open" if now - opened < self.settings.cooldown_s else "half_open"

    def allow(self, name: str, now: float) -> bool:
        state = self.state(name, now)
        if state == "closed":
            return True
        if state == "half_open" and not self._trial.get(name):
            self._trial[name] = True  # exactly one trial call while half-open
            return True
        return False

    def success(self, name: str) -> None:
        self._failures.pop(name, None)
        self._opened.pop(name, None)
        self._trial.pop(name, None)

    def failure(self, name: str, now: float) -> bool:
        """Record a failure; True if this opened (or re-opened) the circuit."""
        n = self._failures.get(name, 0) + 1
        self._failures[name] = n
        self._trial.pop(name, None)
        if n >= self.settings.failures or name in self._opened:
            self._opened[name] = now
            return True
        return False

    def snapshot(self, now: float) -> dict[str, str]:
        names = set(self._failures) | set(self._opened)
        return {n: self.state(n, now) for n in sorted(names)}


@dataclass
class RouteDecision:
    chain: list[ModelSpec]
    reason: str
    complexity: str = "explicit"
    skipped: list[str] = field(default_factory=list)

    @property
    def model(self) -> ModelSpec:
        return self.chain[0]


class NoBackendAvailable(Exception):
    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _marker_pattern(markers: list[str]) -> re.Pattern | None:
    if not markers:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(m.lower()) for m in markers) + r")\b")


class Router:
    def __init__(self, registry: ModelRegistry, settings: RoutingSettings):
        self.registry = registry
        self.settings = settings
        self.breaker = CircuitBreaker(settings.circuit_breaker)
        self._large = _marker_pattern(settings.large_markers)
        self._simple = _marker_pattern(settings.simple_markers)

    def classify(self, text: str, prompt_tokens: int) -> tuple[str, str]:
        s = self.settings
        lowered = text.lower()
        if prompt_tokens > s.large_prompt_tokens:
            return "complex", f"prompt of {prompt_tokens} tokens > {s.large_prompt_tokens}"
        m = self._large.search(lowered) if self._large else None
        if m:
            return "complex", f"task marker {m.group(0)!r}"
        q_tokens = len(text.split())
        if q_tokens <= s.simple_max_tokens and self.is_lookup(lowered):
            return "simple", f"short lookup question ({q_tokens} words)"
        return "standard", "no complexity marker"

    def is_lookup(self, lowered: str) -> bool:
        """A lookup marker opens the question, or (``simple_markers_anywhere``) appears anywhere in it or the text
        ends with a question mark."""
        text = lowered.strip()
        if not self.settings.simple_markers_anywhere:
            return bool(self._simple and self._simple.match(text))
        return text.endswith("?") or bool(self._simple and self._simple.search(text))

    def _chain(self, first: list[ModelSpec], rest: list[ModelSpec], now: float) -> tuple[list[ModelSpec], list[str]]:
        ordered: list[ModelSpec] = []
        for m in first:
            for name in [m.name, *m.fallbacks]:
                spec = self.registry.get(name)
                if spec is not None and spec not in ordered:
                    ordered.append(spec)
        for m in rest:
            if m not in ordered:
                ordered.append(m)
        allowed = [m for m in ordered if self.breaker.state(m.name, now) != "open"]
        skipped = [m.name for m in ordered if m not in allowed]
        return allowed, skipped

    def route(
        self,
        requested: str,
        *,
        text: str,
        prompt_tokens: int,
        expected_output_tokens: int = 128,
        quality_tier: int = 0,
        simple_quality_tier: int | None = None,
        needs_context: bool = False,
        now: float,
    ) -> RouteDecision:
        """The ordered backends to try. ``needs_context``: only a RAG request can use the extractive tier."""
        if requested != "auto":
            spec = self.registry.get(requested)
            if spec is None:
                raise LookupError(requested)
            chain, skipped = self._chain([spec], [], now)
            if not needs_context:
                chain = [m for m in chain if m.kind == "openai"]
            if not chain:
                raise NoBackendAvailable(f"model {requested!r} and its fallbacks are unavailable (circuit open: {skipped})",
                                         int(self.settings.circuit_breaker.cooldown_s))
            reason = f"requested model {requested}"
            if chain[0].name != requested:
                reason += f"; circuit open for {', '.join(skipped)} -> fallback {chain[0].name}"
            return RouteDecision(chain, reason, "explicit", skipped)

        complexity, why = self.classify(text, prompt_tokens)
        tier = quality_tier
        if complexity == "simple" and simple_quality_tier is not None:
            tier = simple_quality_tier
        pool = [m for m in self.registry.generators() if m.quality_tier >= tier and (needs_context or m.kind == "openai")]
        if not pool:
            raise NoBackendAvailable(f"no enabled model at quality tier >= {tier}")

        def cost(m: ModelSpec) -> tuple[float, int]:
            return (m.cost(prompt_tokens, expected_output_tokens), m.quality_tier)

        pool.sort(key=cost)
        first = pool
        note = ""
        if complexity == "complex":
            large = [m for m in pool if m.size == "large"]
            if large:
                first = large
            else:
                note = "; no large model enabled"
        chain, skipped = self._chain([first[0]], first[1:] + pool, now)
        if not chain:
            raise NoBackendAvailable(f"every candidate backend has an open circuit: {skipped}",
                                     int(self.settings.circuit_breaker.cooldown_s))
        reason = f"{complexity} ({why}) -> cheapest at tier >= {tier}: {chain[0].name}{note}"
        if skipped:
            reason += f"; circuit open: {', '.join(skipped)}"
        return RouteDecision(chain, reason, complexity, skipped)
