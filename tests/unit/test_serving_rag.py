"""Checks on generated answers before they leave the gateway, and passage text handling."""

from __future__ import annotations

from serving.extractive import product_codes
from serving.rag import Passage, about_asked_product, grounding_problem, prefer_answering_passages


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


def _hit(doc: str, source: str, title: str, text: str, relevance: float, asked: set[str]) -> Passage:
    p = Passage(doc + "#1", doc, title, source, "", text, relevance, relevance)
    p.asked_product = about_asked_product(asked, p)
    return p


def test_authoritative_documents_answer_before_tickets_and_other_products_go():
    asked = product_codes("torque for the bolts when mounting the pt-5500?")
    ticket = _hit("TCK-1", "support_tickets", "Installation question: SC-5500",
                  "We are commissioning a new SC-5500 and cannot find the tightening torques.", 0.62, asked)
    own_ticket = _hit("TCK-2", "support_tickets", "Installation question: PT-5500",
                      "Which torque for the PT-5500 process connection?", 0.6, asked)
    guide = _hit("guides/pt-5500", "kb_documents", "Installation Guide: PT-5500",
                 "Tighten the process connection of the PT-5500 to 25 Nm.", 0.45, asked)
    other = _hit("guides/bv-6640", "kb_documents", "Installation Guide: BV-6640",
                 "Tighten the flange bolts of the BV-6640 to 145 Nm.", 0.5, asked)
    policy = _hit("policies/warranty", "kb_documents", "Warranty policy", "Defects are reported in writing.", 0.4, asked)
    assert (ticket.asked_product, own_ticket.asked_product, guide.asked_product, policy.asked_product) == (
        False, True, True, None)
    kept = prefer_answering_passages([ticket, own_ticket, guide, other, policy], ["kb_documents"], 0.3)
    assert [p.document_id for p in kept] == ["guides/pt-5500", "policies/warranty"]
    # No authoritative passage relevant enough on its own: the tickets about the asked product stay.
    assert prefer_answering_passages([ticket, own_ticket, policy], ["kb_documents"], 0.45) == [own_ticket, policy]
    # Nothing about the asked product: nothing is dropped for being about another one.
    assert prefer_answering_passages([ticket, other], [], 0.3) == [ticket, other]
