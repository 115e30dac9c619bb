"""Routing decisions, fallback chains and the circuit breaker, on the shipped model registry."""

from __future__ import annotations

import pytest

from agenix_assets.core.config import load_yaml_model
from serving.config import CircuitBreakerSettings, ModelRegistry, RoutingSettings
from serving.routing import CircuitBreaker, NoBackendAvailable, Router
from tests.conftest import CONFIG_DIR


@pytest.fixture
def registry() -> ModelRegistry:
    reg = load_yaml_model(CONFIG_DIR / "gateway" / "models.yaml", ModelRegistry)
    # Enable the production large model so the small/large decision can be seen.
    models = [m.model_copy(update={"enabled": True}) for m in reg.models]
    return reg.model_copy(update={"models": models})


def test_simple_lookup_goes_to_the_cheapest_tier_the_use_case_allows(registry):
    router = Router(registry, RoutingSettings())
    d = router.route("auto", text="How long is the warranty on the HX-200 pump?", prompt_tokens=300,
                     quality_tier=1, simple_quality_tier=0, needs_context=True, now=0.0)
    assert d.complexity == "simple"
    assert d.model.name == "extractive"
    assert "short lookup question" in d.reason


def test_standard_question_goes_to_the_cheapest_model_at_the_quality_tier(registry):
    router = Router(registry, RoutingSettings())
    d = router.route("auto", text="My pump makes a rattling noise after the last service, could it be the bearing?",
                     prompt_tokens=300, quality_tier=1, simple_quality_tier=0, needs_context=True, now=0.0)
    assert d.complexity == "standard"
    assert d.model.name == "gemma-3-270m"  # cheaper than the large model, tier 1 meets the use case
    assert [m.name for m in d.chain][:2] == ["gemma-3-270m", "extractive"]  # its declared fallback next


def test_task_marker_or_long_prompt_goes_to_the_large_model(registry):
    router = Router(registry, RoutingSettings())
    d = router.route("auto", text="Compare the HX-200 and HX-300 pumps step by step", prompt_tokens=300,
                     quality_tier=1, needs_context=True, now=0.0)
    assert (d.complexity, d.model.name) == ("complex", "llama-3.1-8b-instruct")
    assert "compare" in d.reason
    d = router.route("auto", text="Please help with this", prompt_tokens=5000, quality_tier=1, needs_context=True, now=0.0)
    assert d.model.size == "large" and "5000 tokens" in d.reason


def test_complex_request_without_a_large_model_stays_small_and_says_so():
    reg = load_yaml_model(CONFIG_DIR / "gateway" / "models.yaml", ModelRegistry)  # large model disabled as shipped
    d = Router(reg, RoutingSettings()).route("auto", text="Summarize the return policy", prompt_tokens=100,
                                             quality_tier=1, needs_context=True, now=0.0)
    assert d.model.name == "gemma-3-270m"
    assert "no large model enabled" in d.reason


def test_direct_request_never_uses_the_extractive_tier(registry):
    router = Router(registry, RoutingSettings())
    d = router.route("gemma-3-270m", text="hi", prompt_tokens=2, now=0.0)
    assert [m.name for m in d.chain] == ["gemma-3-270m"]
    with pytest.raises(LookupError):
        router.route("no-such-model", text="hi", prompt_tokens=2, now=0.0)


def test_open_circuit_skips_the_backend_and_names_it(registry):
    router = Router(registry, RoutingSettings(circuit_breaker=CircuitBreakerSettings(failures=2, cooldown_s=30)))
    router.breaker.failure("gemma-3-270m", now=10.0)
    router.breaker.failure("gemma-3-270m", now=11.0)
    d = router.route("auto", text="My pump rattles after service, why?", prompt_tokens=300, quality_tier=1,
                     simple_quality_tier=0, needs_context=True, now=12.0)
    assert d.model.name != "gemma-3-270m"
    assert "gemma-3-270m" in d.skipped and "circuit open" in d.reason
    with pytest.raises(NoBackendAvailable):
        router.route("gemma-3-270m", text="hi", prompt_tokens=2, now=12.0)


def test_circuit_breaker_opens_after_consecutive_failures_and_allows_one_trial_after_cooldown():
    cb = CircuitBreaker(CircuitBreakerSettings(failures=3, cooldown_s=30))
    assert cb.failure("m", 0.0) is False and cb.failure("m", 1.0) is False
    cb.success("m")  # a success resets the count: failures must be consecutive
    cb.failure("m", 2.0), cb.failure("m", 3.0)
    assert cb.state("m", 3.5) == "closed"
    assert cb.failure("m", 4.0) is True
    assert cb.state("m", 5.0) == "open" and not cb.allow("m", 5.0)
    assert cb.state("m", 34.0) == "half_open"
    assert cb.allow("m", 34.0) is True and cb.allow("m", 34.1) is False  # exactly one trial
    assert cb.failure("m", 34.2) is True and cb.state("m", 40.0) == "open"  # the trial failed: open again
    assert cb.allow("m", 64.3) is True
    cb.success("m")
    assert cb.state("m", 64.4) == "closed" and cb.allow("m", 64.4)


def test_customer_phrasing_is_a_lookup_when_markers_may_appear_anywhere(registry):
    question = "my GV-4150 is installed - how many hours should it run at reduced load?"
    start_only = Router(registry, RoutingSettings())
    assert start_only.classify(question, 300)[0] == "standard"
    anywhere = Router(registry, RoutingSettings(simple_markers_anywhere=True))
    assert anywhere.classify(question, 300)[0] == "simple"
    assert anywhere.classify("temperature limits of the cp-1190?", 300)[0] == "simple"  # ends with "?"
    assert anywhere.classify("Explain why my GV-4150 leaks at the stem?", 300)[0] == "complex"  # a task stays complex
    assert anywhere.classify("I installed a GV-4150 yesterday.", 300)[0] == "standard"
    d = anywhere.route("auto", text=question, prompt_tokens=300, quality_tier=1, simple_quality_tier=0,
                       needs_context=True, now=0.0)
    assert [m.name for m in d.chain][:2] == ["extractive", "gemma-3-270m"]  # the LLM when nothing is extractable
