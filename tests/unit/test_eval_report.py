"""What an evaluation decides: the charter's thresholds, the no-regression rule, and the HTML report."""

from __future__ import annotations

import pytest

from agenix_assets.core.config import ConfigError, UseCaseCharter
from agenix_assets.core.eval_report import (
    Tolerance,
    charter_thresholds,
    judge_regression,
    judge_thresholds,
    load_evaluation_settings,
    render_html,
)
from agenix_assets.core.evaluation import compare
from tests.conftest import CONFIG_DIR


def charter(target: str, p95: int | None = 2500) -> UseCaseCharter:
    return UseCaseCharter(id="support-assistant", name="x", owner="o", risk_class="medium", latency_target_ms_p95=p95,
                          kpis=[{"name": "answer accuracy on golden set", "target": target, "unit": "ratio"},
                                {"name": "CSAT", "target": ">= 4.4"}])


def test_the_charter_gives_the_accuracy_kpi_and_the_p95_target():
    [acc, p95] = charter_thresholds(charter(">= 0.85"))
    assert (acc.metric, acc.op, acc.value) == ("accuracy", ">=", 0.85)
    assert (p95.metric, p95.op, p95.value) == ("latency_p95_ms", "<=", 2500.0)
    assert charter_thresholds(charter("90%"))[0].value == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="not a comparison"):
        charter_thresholds(charter("high"))


def record(i: str, correct: bool) -> dict:
    return {"id": i, "kind": "qa", "question": f"q{i}", "answer": "a", "expected_facts": ["6 hours"], "tier": "extractive",
            "correct": correct, "answerable": True}


def test_a_missed_threshold_names_the_metric_and_shows_the_questions_missed():
    limits = charter_thresholds(charter(">= 0.85"))
    ok = judge_thresholds({"accuracy": 0.9, "latency_p95_ms": 1000.0}, [record("1", True)], limits)
    assert ok.passed and ok.evidence["failed_metrics"] == []
    bad = judge_thresholds({"accuracy": 0.5, "latency_p95_ms": 3000.0}, [record("1", True), record("2", False)], limits)
    assert not bad.passed
    assert bad.evidence["failed_metrics"] == ["accuracy", "latency_p95_ms"]
    assert [e["id"] for e in bad.evidence["examples"]] == ["2"]


def test_no_regression_is_direction_aware_and_relative_for_latency():
    tol = Tolerance()
    prod = {"accuracy": 0.9, "latency_p95_ms": 1000.0, "cost_per_call": 0.0}
    better = {"accuracy": 0.95, "latency_p95_ms": 1200.0, "cost_per_call": 0.0}  # 20% slower: within 25%
    assert judge_regression(compare(better, prod), tol, [], []).passed
    worse = {"accuracy": 0.85, "latency_p95_ms": 1300.0, "cost_per_call": 0.0}
    verdict = judge_regression(compare(worse, prod), tol, [record("1", False)], [record("1", True)])
    assert not verdict.passed
    assert verdict.evidence["regressed_metrics"] == ["accuracy", "latency_p95_ms"]
    assert [e["id"] for e in verdict.evidence["examples"]] == ["1"]  # right in production, wrong now
    assert judge_regression(None, tol, [], None).passed  # nothing in production: nothing to regress from


def test_the_shipped_evaluation_settings_load():
    settings = load_evaluation_settings(CONFIG_DIR)
    assert settings.use_cases["support-assistant"].tolerance.accuracy == 0.02


def test_the_html_report_shows_gates_figures_beside_production_and_misses():
    run = {"release": {"model": "auto", "prompt_version": "v1"}, "index_version": 3, "identity": {"parts": {}},
           "summary": {"accuracy": 0.5, "accuracy_by_tier": {"extractive": 0.5}}, "records": [record("1", True), record("2", False)]}
    prod = {**run, "summary": {"accuracy": 1.0, "accuracy_by_tier": {"extractive": 1.0}}}
    html = render_html({"use_case": "support-assistant", "candidate_id": "support-assistant-abc", "evaluated_at": "now",
                        "suite": "s.yaml", "suite_hash": "h", "items": 2, "conversations": 0, "candidate": run,
                        "production": prod, "deltas": compare(run["summary"], prod["summary"]),
                        "verdicts": [{"check": "charter_thresholds", "passed": False, "description": "failed: <accuracy>"}]})
    assert "FAILED" in html and "&lt;accuracy&gt;" in html  # escaped
    assert "Misses of the candidate (1)" in html and "Accuracy by answer tier" in html
    assert "class='worse'" in html  # accuracy fell against production
