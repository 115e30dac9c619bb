"""Checks on generated answers before they leave the gateway, and passage text handling."""

from __future__ import annotations

from serving.rag import Passage, grounding_problem


def _passage(text: str, section: str = "Guide > Mounting", title: str = "Guide") -> Passage:
    return Passage("c1", "d1", title, "kb_documents", section, text, 0.03, 0.6)


CONTEXT = [_passage("Guide > Mounting\nTighten the anchor bolts of the PC-6360 to 80 Nm. Maximum pressure 1,200 kPa.")]


def test_grounded_answers_pass():
    q = "What torque applies to the PC-6360 anchor bolts?"
    assert grounding_problem("80 Nm, in a crosswise sequence. [1]", q, CONTEXT) is None
    assert grounding_problem("Up to 1200 kPa.", q, CONTEXT) is None  # separators do not matter
    assert grounding_problem("Tighten them firmly.", q, CONTEXT) is None  # no number, nothing to contradict
    assert grounding_problem("The PC-6360 needs 80 Nm.", q, CONTEXT) is None  # numbers from the question count


def test_invented_number_empty_answer_and_echo_are_rejected():
    q = "What torque applies to the PC-6360 anchor bolts?"
    assert grounding_problem("It is designed for 13 bar.", q, CONTEXT) == "number(s) not in the context: 13"
    assert grounding_problem("  [1] ", q, CONTEXT) == "empty answer"
    assert grounding_problem("What torque applies to the PC-6360 anchor bolts?", q, CONTEXT) == "repeats the question"
    assert grounding_problem("The torque that applies to the PC-6360 anchor bolts", q, CONTEXT) == "repeats the question"
    assert grounding_problem("Which bolts do you mean?", q, CONTEXT) == "answers with a question"


def test_body_drops_the_heading_path_line_the_chunker_adds():
    p = _passage("Guide > Mounting\nTighten the bolts.")
    assert p.body == "Tighten the bolts."
    assert _passage("First line of text\nsecond line").body == "First line of text\nsecond line"
