"""The answers benchmark's question set and scoring (agenix_bench/answers.py); the run itself needs the model."""

from __future__ import annotations

from agenix_bench.answers import (
    Outcome,
    customer_questions,
    fact_present,
    split_of,
    summarise,
    unanswerable_questions,
)

FACTS = [
    {"key": "GV-4150.install.run_in", "answer": "6 hours", "question": "How long is the run-in period of the GV-4150?",
     "document_id": "guides/gv-4150.md"},
    {"key": "BV-6640.weight", "answer": "126.5 kg", "question": "How much does the BV-6640 weigh?",
     "document_id": "manuals/bv-6640.md"},
    {"key": "GV-4150.troubleshooting.incomplete-closing.fix", "answer": "flush the line", "question": "...",
     "document_id": "troubleshooting/gv-4150.md"},
    {"key": "policy.returns.global.return_window_days", "answer": "30 days", "question": "...", "document_id": "p"},
]


def test_dev_and_heldout_products_never_overlap_and_policies_are_left_out():
    assert (split_of("GV-4150"), split_of("BV-6640")) == ("dev", "heldout")
    dev = customer_questions(FACTS, "dev")
    held = customer_questions(FACTS, "heldout")
    assert {q.sku for q in dev} == {"GV-4150"} and {q.sku for q in held} == {"BV-6640"}
    fix = next(q for q in dev if q.attribute == "troubleshooting.fix")
    assert "incomplete closing" in fix.question and fix.question != FACTS[2]["question"]
    assert len(customer_questions(FACTS, "all", variants=2)) == 6  # two phrasings of each product fact


def test_a_fact_is_present_with_normalised_case_space_and_separators():
    assert fact_present("every 15000 operating hours", "The GV-4150 needs maintenance every 15,000  Operating hours.")
    assert fact_present("-10 °C to +180 °C", "from \u221210 °C to +180 °C")
    assert not fact_present("6 hours", "a run-in period of 2 hours")


def test_summary_counts_accuracy_per_tier():
    outs = [Outcome("a", "q", ["x"], "x", "extractive", True, 10.0), Outcome("b", "q", ["y"], "", "no_answer", False, 30.0)]
    s = summarise(outs)
    assert s["accuracy"] == 0.5 and s["tiers"]["extractive"]["accuracy"] == 1.0 and s["tiers"]["no_answer"]["n"] == 1


def test_one_unanswerable_question_per_product_scored_as_a_refusal():
    qs = unanswerable_questions(customer_questions(FACTS, "all"))
    assert [q.sku for q in qs] == ["BV-6640", "GV-4150"] and not any(q.answerable or q.expected for q in qs)
