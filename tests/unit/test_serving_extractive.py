"""Extractive answer tier (real all-MiniLM-L6-v2, offline) and the versioned prompt book."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agenix_assets.core.config import ConfigError
from agenix_assets.core.embedding import Embedder
from serving.extractive import (
    ExtractiveAnswerer,
    Passage,
    SelectionRules,
    estimate_usage,
    product_codes,
    split_sentences,
)
from serving.prompts import format_contexts, load_prompt_book, prompt_book_path

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "config" / "prompts" / "support-assistant.yaml"

PASSAGES = [
    (
        "kb-returns",
        "Returns policy",
        (
            "Customers may return unused products within 30 days of delivery. Refunds are issued to the original "
            "payment method within 5 business days. Opened hygiene products cannot be returned."
        ),
        0.61,
    ),
    (
        "kb-hx200",
        "HX-200 pump manual",
        (
            "The HX-200 is a centrifugal pump for domestic water systems. The HX-200 pump has a warranty of "
            "24 months. Wear parts such as seals are excluded from the warranty."
        ),
        0.58,
    ),
    (
        "kb-password",
        "Password reset",
        (
            "To reset your password, open Settings and choose Security, then click Reset password.\n\n"
            "- A reset link is valid for 2 hours.\n- Contact support if the link expired."
        ),
        0.22,
    ),
]


@pytest.fixture(scope="module")
def answerer() -> ExtractiveAnswerer:
    return ExtractiveAnswerer(Embedder())


# -- sentences ------------------------------------------------------------------------------------------------


def test_split_sentences_respects_abbreviations_lists_and_hard_wraps():
    text = (
        "Dr. Smith, e.g. in Jan. 2024, said model no. 5 is fine. Version 2.5 is out! Is it?\n"
        "Yes, it\nis.\n\n# Setup\n1. Plug it in.\n2. Press Start."
    )
    assert split_sentences(text) == [
        "Dr. Smith, e.g. in Jan. 2024, said model no. 5 is fine.",
        "Version 2.5 is out!",
        "Is it?",
        "Yes, it is.",
        "Setup",
        "Plug it in.",
        "Press Start.",
    ]


# -- extractive answers ---------------------------------------------------------------------------------------


def test_answer_quotes_the_sentence_with_the_fact_and_cites_its_passage(answerer):
    ans = answerer.answer("How long is the warranty on the HX-200 pump?", PASSAGES)
    assert ans is not None
    assert ans.text.startswith("The HX-200 pump has a warranty of 24 months. [2]")
    first = ans.citations[0]
    assert first["ref"] == 2
    assert (first["doc_id"], first["title"], first["sentence_index"]) == ("kb-hx200", "HX-200 pump manual", 1)
    assert first["score"] == ans.confidence
    assert 0.7 < ans.confidence <= 1.0
    assert len(ans.citations) <= 2


def test_answer_from_a_list_item_of_a_later_passage(answerer):
    ans = answerer.answer("How long is the password reset link valid?", PASSAGES)
    assert ans is not None
    assert ans.text == "A reset link is valid for 2 hours. [3]"
    assert [(c["doc_id"], c["sentence_index"]) for c in ans.citations] == [("kb-password", 1)]


def test_answer_accepts_passage_objects_and_dicts(answerer):
    q = "How many days do I have to return a product?"
    as_tuples = answerer.answer(q, PASSAGES)
    as_objects = answerer.answer(q, [Passage(*p) for p in PASSAGES])
    as_dicts = answerer.answer(q, [dict(zip(("doc_id", "title", "text", "score"), p)) for p in PASSAGES])
    assert as_tuples is not None and as_tuples.text.startswith(
        "Customers may return unused products within 30 days of delivery. [1]"
    )
    assert as_tuples == as_objects == as_dicts


@pytest.mark.parametrize("question", ["What is the capital of France?", "How do I bake sourdough bread?"])
def test_unrelated_question_returns_none(answerer, question):
    assert answerer.answer(question, PASSAGES) is None


def test_no_passages_or_only_fragments_return_none(answerer):
    assert answerer.answer("How long is the warranty?", []) is None
    assert answerer.answer("How long is the warranty?", [("d", "", "Warranty. See below.", 0.0)]) is None


def test_usage_counts_words_of_question_passages_and_answer(answerer):
    passages = [("a", "", "One two three four five.", 1.0), ("b", "", "Six seven.", 0.5)]
    assert estimate_usage("How many words?", passages, "Five words are here now") == {
        "prompt_tokens": 3 + 5 + 2,
        "completion_tokens": 5,
        "total_tokens": 15,
    }
    assert estimate_usage("q", passages, None)["completion_tokens"] == 0
    ans = answerer.answer("How long is the warranty on the HX-200 pump?", PASSAGES)
    assert ans is not None
    assert ans.usage == estimate_usage("How long is the warranty on the HX-200 pump?", PASSAGES, ans.text)


# -- prompt rendering ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1():
    return load_prompt_book(BOOK).get("v1")


def test_completion_prompt_has_few_shot_block_then_numbered_context(v1):
    prompt, params = v1.render_completion(
        "How long is the\nwarranty?", ["The HX-200 pump has a warranty of 24 months.", "Returns:  30\n days."]
    )
    assert params == {"stop": ["\n"], "max_tokens": 64, "temperature": 0.0}
    blocks = prompt.split("\n\n")
    assert len(blocks) == len(v1.completion.few_shot) + 1
    for block, ex in zip(blocks, v1.completion.few_shot):
        assert block.startswith("Context: [1] ")
        assert block.endswith(f"\nQuestion: {ex.question}\nAnswer: {ex.answer}")
    # The question is flattened to one line: a newline would end the model's answer before it starts.
    assert blocks[-1] == (
        "Context: [1] The HX-200 pump has a warranty of 24 months. [2] Returns: 30 days.\n"
        "Question: How long is the warranty?\nAnswer:"
    )


def test_context_budget_keeps_whole_passages_then_cuts_then_drops():
    passages = ["alpha " * 10, "beta " * 20, "gamma " * 5]
    first = "[1] " + " ".join(["alpha"] * 10)  # 63 characters
    assert len(first) == 63
    out = format_contexts(passages, max_chars=120, separator="\n")
    assert len(out) <= 120
    lines = out.split("\n")
    assert lines[0] == first
    assert lines[1].startswith("[2] beta beta") and lines[1].endswith("beta…")
    assert len(lines) == 2  # [3] does not fit any more
    # Too little room left for a useful piece of [2]: it is dropped, not cut to a stub.
    assert format_contexts(passages, max_chars=90, separator="\n") == first
    assert format_contexts(passages, max_chars=10_000, separator=" ").count("[") == 3


def test_budget_parameter_overrides_the_configured_one(v1):
    long = ["word " * 400, "other " * 400]
    prompt, _ = v1.render_completion("q?", long)
    context = prompt.split("\n\n")[-1].split("\n")[0]
    # The configured budget (1200 characters) holds only [1], cut at a word boundary.
    assert context.startswith("Context: [1] word word") and context.endswith("word…") and "[2]" not in context
    assert len(context) <= len("Context: ") + v1.completion.max_context_chars
    prompt, _ = v1.render_completion("q?", long, max_context_chars=300)
    assert len(prompt.split("\n\n")[-1].split("\n")[0]) == len("Context: ") + 300 - 1  # cut before a space


def test_chat_prompt_numbers_passages_one_per_line(v1):
    messages, params = v1.render_chat("Which warranty?", ["The HX-200 has\n24 months.", "Seals are excluded."])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "cite" in messages[0]["content"].lower() or "[1]" in messages[0]["content"]
    assert messages[1]["content"] == (
        "Context:\n[1] The HX-200 has 24 months.\n[2] Seals are excluded.\n\nQuestion: Which warranty?"
    )
    assert params == {"max_tokens": 256, "temperature": 0.0}


def test_empty_context_is_marked(v1):
    prompt, _ = v1.render_completion("q?", [])
    assert prompt.endswith("Context: (none)\nQuestion: q?\nAnswer:")


# -- prompt book loading ------------------------------------------------------------------------------------------


def test_book_versions_and_lookup(tmp_path):
    book = load_prompt_book(BOOK)
    assert book.use_case == "support-assistant"
    assert book.get("v1").name == "v1"
    assert book.get().name == book.latest == "v1"
    assert book.get("v1").no_answer.startswith("I don't know")
    with pytest.raises(KeyError, match=r"'v9'.*available: v1"):
        book.get("v9")
    assert prompt_book_path(REPO / "config", "support-assistant") == BOOK


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prompts" / "bad.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_misspelled_key_names_file_line_and_key(tmp_path):
    path = _write(
        tmp_path,
        "use_case: x\nversions:\n  v1:\n    no_answer: n/a\n    completion:\n      tmplate: 'Q: {question}'\n",
    )
    with pytest.raises(ConfigError) as err:
        load_prompt_book(path)
    assert f"{path}:6: versions.v1.completion.tmplate: unknown key" in str(err.value)


def test_template_with_a_missing_placeholder_is_rejected(tmp_path):
    path = _write(
        tmp_path,
        "use_case: x\nversions:\n  v2:\n    no_answer: n/a\n    chat:\n      system: s\n"
        "      user_template: 'Q: {question} {ctx}'\n",
    )
    with pytest.raises(ConfigError) as err:
        load_prompt_book(path)
    msg = str(err.value)
    assert f"{path}:7: versions.v2.chat.user_template" in msg
    assert "missing {context}" in msg and "unknown {ctx}" in msg


def test_version_without_any_style_and_missing_file(tmp_path):
    path = _write(tmp_path, "use_case: x\nversions:\n  v1:\n    no_answer: n/a\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3: versions\.v1: .*'completion' or a 'chat'"):
        load_prompt_book(path)
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_prompt_book(tmp_path / "nope.yaml")


def test_snake_case_file_name_is_found(tmp_path):
    (tmp_path / "prompts").mkdir()
    shutil.copy(BOOK, tmp_path / "prompts" / "support_assistant.yaml")
    path = prompt_book_path(tmp_path, "support-assistant")
    assert path.name == "support_assistant.yaml"
    assert load_prompt_book(path).use_case == "support-assistant"


def test_two_sentences_of_one_passage_are_quoted_in_reading_order_and_cited_once():
    class FakeEncoder:
        """Question-sentence similarities fixed by hand: 0.9 for the second sentence, 0.85 for the first."""

        def encode(self, texts):
            import numpy as np

            vecs = {"q": [1.0, 0.0, 0.0], "Pumps": [0.85, 0.527, 0.0], "Seals": [0.9, 0.0, 0.436]}
            return np.array([vecs[t.split()[0]] if t.split()[0] in vecs else [0.0, 0.0, 1.0] for t in texts])

    passages = [("d1", "", "Pumps are covered for two years. Seals are covered for one year only.", 1.0)]
    ans = ExtractiveAnswerer(FakeEncoder(), use_titles=False).answer("q", passages)
    assert ans is not None
    assert ans.text == "Pumps are covered for two years. Seals are covered for one year only. [1]"
    assert [c["sentence_index"] for c in ans.citations] == [0, 1]
    assert ans.confidence == 0.9


# -- selection rules: the asked product, the asked attribute, never a customer's question ----------------------

TICKET = ("TCK-1", "Installation question: SC-5500",
          "We are commissioning a new SC-5500 Scroll Compressor and we cannot find the tightening torques for the "
          "mounting bolts. Is there a torque table for the mounting bolts?", 0.6)
GUIDE = ("guides/pt-5500", "Installation Guide: PT-5500 Pressure Transmitter",
         "Tighten the process connection of the PT-5500 to 25 Nm. Leave at least 650 mm of free space around the "
         "PT-5500 for maintenance access.", 0.5)


def test_product_codes_are_found_however_customers_type_them():
    assert product_codes("my gv-4150 and the GV-4150, or gv4150? kit GV-4150-SK1") == {"GV4150"}
    assert product_codes("a flow of 100 l/min at DN 300, tightened to 220 Nm") == set()  # quantities, not codes
    assert product_codes("the SC-5500 and PT-5500") == {"SC5500", "PT5500"}


def test_a_sentence_about_another_product_is_never_quoted(answerer):
    q = "torque for the bolts when mounting the pt-5500?"
    got = answerer.answer(q, [TICKET, GUIDE])
    assert got is not None and "25 Nm" in got.text and "SC-5500" not in got.text
    # Only the other product's sentence in the context: no answer rather than its number.
    assert answerer.answer(q, [TICKET]) is None


def test_a_question_is_never_quoted_as_the_answer(answerer):
    faq = ("kb-tr", "TR-6530 manual", "Is it suitable for continuous operation at high ambient temperatures? "
           "The TR-6530 can be operated at temperatures from -40 °C to +110 °C.", 0.5)
    got = answerer.answer("can I run the tr-6530 in the cold, what temperatures is it good for?", [faq])
    assert got is not None and "-40 °C to +110 °C" in got.text and "?" not in got.text


def test_the_sentence_stating_the_asked_attribute_wins_over_one_on_the_same_product(answerer):
    manual = ("manuals/cp-1190", "CP-1190 Centrifugal Process Pump",
              "Keep the area around the CP-1190 tidy so that leaks are noticed early. The rated motor power of the "
              "CP-1190 is 11 kW. At nominal speed the CP-1190 delivers a flow rate of 100 l/min.", 0.5)
    got = answerer.answer("what flow do I get out of a CP-1190?", [manual])
    assert got is not None and "100 l/min" in got.text and "tidy" not in got.text


def test_a_how_to_fix_question_gets_the_remedy_not_the_cause(answerer):
    guide = ("troubleshooting/gv-4150", "Troubleshooting Guide: GV-4150 Gate Valve",
             "Cause: The most likely cause of incomplete closing on the GV-4150 is debris trapped on the valve seat."
             "\n\nFix: To fix incomplete closing on the GV-4150, flush the line and clean or replace the seat.", 0.5)
    got = answerer.answer("what should I do about incomplete closing on the GV-4150?", [guide])
    assert got is not None and "flush the line and clean or replace the seat" in got.text
    why = answerer.answer("why does my gv-4150 not close completely?", [guide])
    assert why is not None and "debris trapped on the valve seat" in why.text


def test_a_sentence_on_topic_but_below_the_threshold_is_quoted_when_it_states_the_asked_attribute(answerer):
    guide = ("guides/cp-1190", "Installation Guide: CP-1190 Centrifugal Process Pump",
             "Leave at least 700 mm of free space around the CP-1190 for maintenance access. Tighten the foot "
             "mounting bolts of the CP-1190 to 35 Nm in a crosswise sequence.", 0.4)
    q = "we are putting in a cp-1190, what torque do the bolts need?"
    plain = ExtractiveAnswerer(answerer.encoder, rules=SelectionRules(enabled=False))
    assert plain.answer(q, [guide]) is None  # similarity alone: below the threshold
    got = answerer.answer(q, [guide])
    assert got is not None and "35 Nm" in got.text
    assert answerer.answer("Who won the football world cup in 1954?", [guide]) is None  # off topic: still nothing


def test_a_sentence_that_only_names_the_asked_product_does_not_answer(answerer):
    manual = ("manuals/tr-6530", "TR-6530 Tapered Roller Bearing",
              "The TR-6530 belongs to the Halvorsen TR series of tapered roller bearings. The TR-6530 has a net "
              "weight of 15.6 kg.", 0.5)
    assert answerer.answer("what does a tr-6530 cost?", [manual]) is None
    got = answerer.answer("how heavy is the tr-6530?", [manual])  # the quantity asked for, without the word
    assert got is not None and "15.6 kg" in got.text
