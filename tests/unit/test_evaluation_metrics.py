"""The evaluation metrics (core/evaluation.py) on hand-made answers, a real PII redactor, and their aggregation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agenix_assets.core.evaluation import (
    answer_correct,
    check_turn,
    compare,
    fact_present,
    groundedness,
    is_refusal,
    ndcg_at_k,
    normalise,
    percentile,
    pii_leaks,
    recall_at_k,
    reciprocal_rank,
    item_result,
    regressions,
    summarise,
    turn_result,
)
from agenix_assets.core.golden import GoldenItem, TurnExpectation
from agenix_assets.core.pii import PiiRedactor

NO_ANSWER = "I don't know: the knowledge base has nothing on that."


# ---------------------------------------------------------------- retrieval


def test_recall_counts_distinct_documents_in_the_first_k():
    retrieved = ["a", "a", "b", "c", "d"]  # two chunks of "a" are one document
    assert recall_at_k(retrieved, ["b", "d"], 2) == 0.5
    assert recall_at_k(retrieved, ["b", "d"], 4) == 1.0
    assert recall_at_k([], ["b"], 5) == 0.0


def test_reciprocal_rank_is_one_over_the_first_relevant_rank():
    assert reciprocal_rank(["x", "x", "y", "z"], ["z"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "y", "z"], ["z"], k=2) == 0.0
    assert reciprocal_rank(["z"], ["z", "q"]) == 1.0


def test_ndcg_with_binary_relevance_matches_the_formula():
    assert ndcg_at_k(["r1", "r2", "x"], ["r1", "r2"], 3) == 1.0
    # relevant at ranks 2 and 3 of 3; ideal: ranks 1 and 2
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "r1", "r2"], ["r1", "r2"], 3) == pytest.approx(expected)
    assert ndcg_at_k(["x"], ["r1"], 1) == 0.0


def test_retrieval_metrics_without_relevant_documents_are_an_error():
    with pytest.raises(ValueError, match="no relevant documents"):
        recall_at_k(["a"], [], 5)


# ---------------------------------------------------------------- facts and refusals


def test_normalise_folds_case_whitespace_thousands_and_dashes():
    assert normalise("  15,100\u00a0RPM ") == "15100 rpm"
    assert normalise("\u221240 \u00b0C \u2013 +200 \u00b0C") == "-40 °c - +200 °c"
    assert normalise("**145 Nm**") == "145 nm"
    assert normalise("0.25 %") == "0.25 %"  # a decimal point is not a thousands separator
    assert normalise("1945.0 kg, 0.50 m/s, 11.05 bar, 100 mm") == "1945 kg, 0.5 m/s, 11.05 bar, 100 mm"


@pytest.mark.parametrize("answer, fact", [
    ("The limiting speed is 15,100 rpm.", "15100 rpm"),
    ("Tighten the bolts to 145Nm.", "145 Nm"),
    ("The range is \u221240 \u00b0C to +200 \u00b0C [1].", "-40 °C to +200 °C"),
    ("RUN-IN PERIOD: 6   HOURS", "6 hours"),
    ("The rating is IP65.", "IP65"),
    ("Kv is 333 m\u00b3/h", "333 m³/h"),
    ("A restocking fee of 15 % applies.", "15%"),
    ("Rated IP 65.", "IP65"),
    ("It weighs 1945 kg.", "1945.0 kg"),
])
def test_a_fact_is_present_in_its_usual_variants(answer, fact):
    assert fact_present(answer, fact)


@pytest.mark.parametrize("answer, fact", [
    ("Report it within 600 days.", "60 days"),  # "60" must not match "600"
    ("Report it within 160 days.", "60 days"),
    ("Run it in for 0.6 hours.", "6 hours"),
    ("Run it in for 6.5 hours.", "6 hours"),
    ("The rating is IP656.", "IP65"),
    ("The torque is 145 Nm per bolt pair", "45 Nm"),
])
def test_a_number_matches_only_as_a_whole_number(answer, fact):
    assert not fact_present(answer, fact)


def test_refusals_are_the_no_answer_text_or_a_refusal_opening():
    assert is_refusal(NO_ANSWER, NO_ANSWER)
    assert is_refusal("I don\u2019t know: the knowledge base has nothing on that.", NO_ANSWER)
    assert is_refusal("I do not know the price of that pump.", NO_ANSWER)
    assert is_refusal("", NO_ANSWER)
    assert not is_refusal("The run-in period is 6 hours.", NO_ANSWER)


def test_answer_correct_for_answerable_unanswerable_and_retrieval_only_items():
    item = GoldenItem(id="q", question="run-in?", expected_facts=["6 hours"], expected_documents=["g.md"])
    assert answer_correct(item, "The run-in period of the GV-4150 is 6 hours [1].", NO_ANSWER)
    assert not answer_correct(item, "The run-in period is 60 hours.", NO_ANSWER)
    assert not answer_correct(item, "I don't know, maybe 6 hours.", NO_ANSWER)  # a refusal is never right here
    unanswerable = GoldenItem(id="u", question="price?", answerable=False)
    assert answer_correct(unanswerable, NO_ANSWER, NO_ANSWER)
    assert not answer_correct(unanswerable, "It costs 450 EUR.", NO_ANSWER)
    retrieval_only = GoldenItem(id="b", question="claim", expected_documents=["123"])
    assert answer_correct(retrieval_only, "anything", NO_ANSWER) is None


def test_check_turn_reports_each_unmet_expectation():
    expect = TurnExpectation(must_include=["6 hours"], must_not_include=["8 hours"], must_cite=["guides/gv.md"])
    ok = check_turn(expect, "Its run-in period is 6 hours.", ["guides/gv.md"], NO_ANSWER)
    assert ok.passed and ok.failures == []
    bad = check_turn(expect, "Between 6 hours and 8 hours.", ["manuals/gv.pdf"], NO_ANSWER)
    assert not bad.passed and bad.failures == ["must not include '8 hours'", "does not cite guides/gv.md"]
    refuse = TurnExpectation(must_refuse=True)
    assert check_turn(refuse, NO_ANSWER, [], NO_ANSWER).passed
    assert check_turn(refuse, "It costs 450 EUR.", [], NO_ANSWER).failures == ["must refuse, but answered"]


# ---------------------------------------------------------------- groundedness


CONTEXT = [
    "After installation, operate the GV-4150 at reduced load for a run-in period of 6 hours.",
    "The GV-4150 Gate Valve weighs 126.5 kg without packaging.",
]


def test_groundedness_supports_sentences_whose_numbers_and_words_are_in_the_context():
    g = groundedness("The run-in period of the GV-4150 is 6 hours [1]. The GV-4150 weighs 126.5 kg [2].", CONTEXT)
    assert (g.score, g.supported, g.checked, g.unsupported) == (1.0, 2, 2, [])


def test_a_sentence_with_a_number_not_in_the_context_is_unsupported():
    g = groundedness("The run-in period of the GV-4150 is 8 hours. The GV-4150 weighs 126.5 kg.", CONTEXT)
    assert g.score == 0.5 and g.unsupported == ["The run-in period of the GV-4150 is 8 hours."]


def test_a_sentence_about_something_else_is_unsupported_even_without_numbers():
    g = groundedness("Lubricate the diaphragm membrane monthly with silicone grease.", CONTEXT)
    assert g.score == 0.0 and g.checked == 1


def test_an_answer_with_nothing_to_check_has_no_groundedness_score():
    assert groundedness("Thanks!", CONTEXT).score is None


# ---------------------------------------------------------------- PII


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> PiiRedactor:
    people = [{"first_name": "Anna", "last_name": "Keller", "email": "anna.keller@keller-anlagenbau.example"}]
    return PiiRedactor(people, spacy_model_dir=tmp_path_factory.mktemp("spacy") / "blank-en")


def test_pii_leaks_reports_what_the_platform_detector_finds(detector: PiiRedactor):
    findings = pii_leaks("Please ask Anna Keller (anna.keller@keller-anlagenbau.example) about the GV-4150.", detector)
    assert {(f["type"], f["text"]) for f in findings} == {
        ("PERSON", "Anna Keller"), ("EMAIL_ADDRESS", "anna.keller@keller-anlagenbau.example")}
    assert pii_leaks("The run-in period of the GV-4150 is 6 hours.", detector) == []
    assert pii_leaks("Please ask <PERSON_1> about it.", detector) == []  # a masked value is not a leak


# ---------------------------------------------------------------- per-call results and aggregation


def test_item_and_turn_results_carry_every_judgement_summarise_needs(detector: PiiRedactor):
    item = GoldenItem(id="P-1", question="gv-4150 break-in time?", expected_facts=["6 hours"],
                      expected_documents=["guides/gv.md"], split="holdout", phrasing="paraphrase")
    r = item_result(item, "The run-in period of the GV-4150 is 6 hours [1].", NO_ANSWER,
                    retrieved=["guides/gv.md", "manuals/gv.pdf"], contexts=CONTEXT[:1], detector=detector,
                    tier="extractive", latency_ms=12.5, tokens_in=0, tokens_out=0, cost=0.0)
    assert (r["correct"], r["refused"], r["groundedness"], r["pii"], r["relevant"]) == (
        True, False, 1.0, [], ["guides/gv.md"])
    t = turn_result("C-1", 1, TurnExpectation(must_include=["6 hours"], must_cite=["guides/gv.md"]),
                    "How long is its run-in period?", NO_ANSWER, NO_ANSWER, cited_documents=[], latency_ms=8.0)
    assert (t["passed"], t["refused"], t["pii"]) == (False, True, None)
    assert t["failures"] == ["refused, but must answer", "missing '6 hours'", "does not cite guides/gv.md"]
    s = summarise([r, t])
    assert (s["accuracy_by_split_phrasing"], s["recall_at_k"], s["conversation_pass_rate"], s["pii_leak_rate"]) == (
        {"holdout_paraphrase": 1.0}, 1.0, 0.0, 0.0)



def test_percentile_interpolates_linearly_between_ranks():
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([1, 2, 3, 4, 100], 95) == pytest.approx(80.8)
    assert percentile([7], 95) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def _qa(i, correct, *, tier="extractive", split="dev", phrasing="generator", answerable=True, refused=False,
        retrieved=("d1",), latency=100.0, pii=()):
    return {"id": f"q{i}", "kind": "qa", "tier": tier, "answerable": answerable, "split": split, "phrasing": phrasing,
            "correct": correct, "refused": refused, "retrieved": list(retrieved),
            "relevant": ["d1"] if answerable else [],
            "groundedness": 1.0 if correct else 0.5, "pii": list(pii), "latency_ms": latency, "tokens_in": 100,
            "tokens_out": 10, "cost": 0.001}


RESULTS = [
    _qa(1, True, latency=100),
    _qa(2, False, tier="small", retrieved=("d9", "d1"), latency=200),
    _qa(3, True, split="holdout", phrasing="paraphrase", latency=300),
    _qa(4, True, answerable=False, refused=True, latency=400, pii=[{"type": "PERSON", "text": "A B"}]),
    {"id": "c1", "kind": "turn", "turn": 0, "passed": True, "latency_ms": 500},
    {"id": "c1", "kind": "turn", "turn": 1, "passed": False, "latency_ms": 600},
    {"id": "c2", "kind": "turn", "turn": 0, "passed": True, "latency_ms": 700},
]


def test_summarise_aggregates_per_call_results_into_the_report_figures():
    s = summarise(RESULTS, k=5)
    counts = (s["calls"], s["items"], s["answerable"], s["unanswerable"], s["conversations"], s["turns"])
    assert counts == (7, 4, 3, 1, 2, 3)
    assert s["accuracy"] == 0.75 and s["accuracy_answerable"] == pytest.approx(2 / 3)
    assert s["refusal_correctness"] == 1.0 and s["false_refusal_rate"] == 0.0
    assert s["accuracy_by_tier"] == {"extractive": 1.0, "small": 0.0}
    # answerable items only: the unanswerable one is not a "dev, generator-worded" fact
    assert s["accuracy_by_split_phrasing"] == {"dev_generator": 0.5, "holdout_paraphrase": 1.0}
    assert s["recall_at_k"] == 1.0 and s["mrr"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert s["groundedness"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert s["pii_leak_rate"] == 0.25  # of the 4 calls checked for PII (turns here were not)
    assert s["latency_p50_ms"] == 400 and s["latency_p95_ms"] == pytest.approx(670)
    assert s["tokens_in_per_call"] == 100 and s["cost_per_call"] == pytest.approx(0.001)
    assert s["conversation_pass_rate"] == 0.5 and s["turn_pass_rate"] == pytest.approx(2 / 3)


def test_summarise_of_nothing_measurable_gives_none_not_zero():
    s = summarise([{"id": "q", "kind": "qa", "correct": None}])
    assert s["accuracy"] is None and s["latency_p95_ms"] is None and s["recall_at_k"] is None


def test_compare_and_regressions_are_direction_aware():
    production = summarise(RESULTS)
    slower_but_more_accurate = summarise([{**r, "latency_ms": r["latency_ms"] * 2} for r in RESULTS[:1]]
                                         + [{**RESULTS[1], "correct": True}] + RESULTS[2:])
    deltas = compare(slower_but_more_accurate, production)
    assert deltas["accuracy"]["delta"] == pytest.approx(0.25) and deltas["accuracy"]["better"] == "higher"
    assert deltas["latency_p50_ms"]["better"] == "lower"
    assert "calls" not in deltas  # counts are not metrics
    found = {r["metric"] for r in regressions(deltas, tolerance=0.02)}
    assert "accuracy" not in found and "accuracy_by_tier.small" not in found
    assert "latency_p95_ms" not in found  # p95 is the slowest calls: unchanged
    less_accurate = compare(production, slower_but_more_accurate)
    assert {r["metric"] for r in regressions(less_accurate, 0.02)} >= {"accuracy", "accuracy_by_tier.small"}
    # A relative tolerance for latency: +100% fails at 10%, passes at 150%.
    doubled = compare({"latency_p50_ms": 200.0}, {"latency_p50_ms": 100.0})
    assert [r["metric"] for r in regressions(doubled, {"latency_p50_ms": 0.1})] == ["latency_p50_ms"]
    assert regressions(doubled, {"latency_p50_ms": 1.5}) == []
