"""Follow-up questions: the standalone query a conversation's last message is retrieved on (serving/pipeline.py)."""

from __future__ import annotations

import pytest

from serving.pipeline import find_entities, rewrite_query


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_a_possessive_follow_up_gets_the_product_of_the_earlier_turn():
    query, rewritten = rewrite_query([user("I installed a GV-4150."), user("How long is its run-in period?")])
    assert (query, rewritten) == ("How long is the run-in period of the GV-4150?", True)


def test_the_product_keeps_its_name_when_the_earlier_turn_gave_it():
    query, _ = rewrite_query([user("We run a PC-6360 Piston Compressor in our plant."), assistant("Noted."),
                              user("What is its first inspection interval after installation?")])
    assert query == "What is the first inspection interval of the PC-6360 Piston Compressor after installation?"


@pytest.mark.parametrize(("follow_up", "expected"), [
    ("How do I install it?", "How do I install the GV-4150?"),
    ("Does this one need a service kit?", "Does the GV-4150 need a service kit?"),
    ("Can I return that product?", "Can I return the GV-4150?"),
    ("When is the first inspection due?", "When is the first inspection due for the GV-4150?"),  # names nothing
])
def test_pronouns_demonstratives_and_bare_follow_ups_are_resolved(follow_up, expected):
    assert rewrite_query([user("I installed a GV-4150."), user(follow_up)]) == (expected, True)


def test_the_most_recent_product_is_the_one_meant():
    convo = [user("I have a GV-4150 and a PC-6360."), user("The GV-4150 leaks."), assistant("Check the gland."),
             user("I also bought a BV-120 Ball Valve."), user("What torque do its flange bolts need?")]
    assert rewrite_query(convo)[0] == "What torque do the flange bolts of the BV-120 Ball Valve need?"


def test_the_assistant_turn_supplies_the_product_when_no_user_turn_named_one():
    convo = [user("Which compressor do you recommend?"), assistant("The PC-6360 Piston Compressor suits you."),
             user("How long is its run-in period?")]
    assert rewrite_query(convo) == ("How long is the run-in period of the PC-6360 Piston Compressor?", True)


def test_an_answer_naming_one_product_is_the_latest_mention_and_one_quoting_several_is_skipped():
    convo = [user("I have a GV-4150."), user("Which compressor fits my plant?"),
             assistant("The PC-6360 Piston Compressor fits."), user("How long is its run-in period?")]
    assert rewrite_query(convo)[0] == "How long is the run-in period of the PC-6360 Piston Compressor?"
    convo[2] = assistant("Both the PC-6360 and the RS-120 fit.")
    assert rewrite_query(convo)[0] == "How long is the run-in period of the GV-4150?"


def test_a_question_that_names_its_own_product_is_not_rewritten():
    convo = [user("I installed a GV-4150."), user("What is the run-in period of the PC-6360 and how long is it?")]
    assert rewrite_query(convo) == (convo[-1]["content"], False)


@pytest.mark.parametrize("question", [
    "What is your returns policy?",  # a new topic, pointing back at nothing
    "How long does it take to ship an order to Austria?",  # "it" that refers to nothing, and its own region
])
def test_a_new_self_contained_question_after_a_product_is_left_alone(question):
    assert rewrite_query([user("I installed a GV-4150."), user(question)]) == (question, False)


def test_the_first_question_of_a_conversation_is_never_rewritten():
    assert rewrite_query([{"role": "system", "content": "Be brief."}, user("How long is its run-in period?")]) == (
        "How long is its run-in period?", False)


def test_a_policy_follow_up_stays_with_the_region_asked_about():
    convo = [user("What is the return window under the returns policy for the Netherlands?"),
             assistant("30 days."), user("How long is an RMA number valid?")]
    assert rewrite_query(convo) == ("How long is an RMA number valid for the Netherlands?", True)
    convo = [user("I am a customer in Austria."), user("And how long is the warranty extension?")]
    assert rewrite_query(convo) == ("And how long is the warranty extension for Austria?", True)


def test_content_parts_are_read_like_plain_text():
    convo = [user([{"type": "text", "text": "I installed a GV-4150."}]),
             user([{"type": "text", "text": "How long is its run-in period?"}])]
    assert rewrite_query(convo)[0] == "How long is the run-in period of the GV-4150?"


def test_entities_name_products_with_codes_topics_and_regions():
    got = find_entities("I live in Germany and returned a BV-120 Ball Valve, galvanised, under the warranty")
    assert (got.product, got.topic, got.region) == ("BV-120 Ball Valve", "warranty", "Germany")
    assert find_entities("Tell me something nice.").any() is False


def test_what_the_customer_said_about_the_product_is_carried_into_a_bare_follow_up():
    convo = [user("Our PT-5500 has no output signal since yesterday."), assistant("Check the loop supply."),
             user("What is the most likely cause?")]
    assert rewrite_query(convo) == (
        "What is the most likely cause for the PT-5500? (Our PT-5500 has no output signal since yesterday.)", True)


def _passage(doc, text, source="kb_documents", relevance=0.5, asked=None):
    from serving.rag import Passage

    p = Passage(chunk_id=doc, document_id=doc, title=doc, source=source, section="", text=text, score=relevance,
                relevance=relevance)
    p.asked_product = asked
    return p


def test_a_question_about_a_product_no_passage_is_about_gets_no_answer():
    from serving.pipeline import asked_product_missing

    other = [_passage("manuals/bv-2400", "The BV-2400 weighs 126.5 kg.", asked=False)]
    assert asked_product_missing("How heavy is the BV-2470 ball valve?", other) == ["BV2470"]
    mine = [*other, _passage("manuals/bv-2470", "The BV-2470 weighs 80 kg.", asked=True)]
    assert asked_product_missing("How heavy is the BV-2470 ball valve?", mine) == []
    assert asked_product_missing("How long do I have to return goods?", other) == []  # names no product


def test_an_llm_answer_with_a_sentence_the_context_does_not_support_is_rejected():
    from serving.pipeline import unsupported_sentences

    context = [_passage("guides/gv", "After installation, operate the GV-4150 at reduced load for a run-in period "
                                     "of 6 hours.")]
    assert unsupported_sentences("The run-in period of the GV-4150 is 6 hours.", context) is None
    assert "variety of colours" in unsupported_sentences("The GV-4150 comes in a variety of colours.", context)


def test_relevant_authoritative_passages_come_before_tickets():
    from serving.rag import authoritative_first

    ticket = _passage("TCK-1", "How many days do I have to send back a pump?", source="support_tickets", relevance=0.6)
    policy = _passage("policies/returns", "Goods can be returned within 30 days.", relevance=0.45)
    weak = _passage("manuals/x", "Typical applications are cooling circuits.", relevance=0.1)
    assert authoritative_first([ticket, weak, policy], ["kb_documents"], 0.3) == [policy, ticket, weak]
