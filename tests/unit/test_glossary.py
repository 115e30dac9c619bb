"""Domain glossary, out-of-scope rules and the attribute concepts of the extractive tier (serving/glossary.py,
serving/config.py ScopeRule, serving/extractive.py SelectionRules)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agenix_assets.core import registry as reg
from agenix_assets.core.config import ConfigError, load_yaml_model
from serving.config import GatewaySettings, ScopeRule
from serving.extractive import SelectionRules, content_words, negated_words, with_expansions, without_negated
from serving.glossary import Glossary, GlossaryTerm, load_glossary

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "glossary" / "support-assistant.yaml"


def glossary(*terms: tuple[list[str], list[str]]) -> Glossary:
    return Glossary(tuple(GlossaryTerm(kb=kb, customer=cust) for kb, cust in terms))


G = glossary(
    (["free air delivery"], ["fad", "air output"]),
    (["run-in period", "reduced load"], ["break in", "running-in"]),
    (["excessive noise", "cavitation"], ["sounds like gravel", "noisy pump"]),
    (["flow rate"], ["how much does it pump"]),
    (["warranty"], ["guarantee"]),
)


def test_a_customer_word_brings_the_knowledge_bases_words():
    assert G.expansions("FAD of the PC-5010?") == [["free air delivery"]]
    assert with_expansions("FAD of the PC-5010?", G.expansions("FAD of the PC-5010?")) == \
        "FAD of the PC-5010? (free air delivery)"
    assert G.expansions("how long is the guarantee?") == [["warranty"]]
    assert G.expansions("guarantees on pumps?") == [["warranty"]]  # a plural ending


def test_a_phrase_matches_by_its_words_in_any_order():
    assert G.expansions("Our CP-5900 sounds like it's pumping gravel") == [["excessive noise", "cavitation"]]
    assert G.expansions("the output of air is low") == [["free air delivery"]]  # "air output", words reordered


def test_one_word_phrases_and_phrases_of_function_words_match_word_for_word():
    # "break in" has one content word: "if something breaks" is not a run-in question ...
    assert G.expansions("How long is the GV-1750 covered if something breaks?") == []
    assert G.expansions("What is the break-in time of the GV-1750?") == [["run-in period", "reduced load"]]
    # ... and "how much does it pump" would otherwise match every question naming a pump.
    assert G.expansions("How much does an HX-120 hydraulic pump cost?") == []
    assert G.expansions("how much does it pump per minute?") == [["flow rate"]]


def test_words_the_question_already_holds_are_not_added_and_each_entry_is_one_group():
    assert G.expansions("what is the run-in period, is it at reduced load?") == []
    assert G.expansions("running-in at reduced load?") == [["run-in period"]]


def test_content_words_are_stemmed_and_ip_codes_are_the_word_ip():
    assert content_words("belt keeps walking") == content_words("belt walks") | {"keep"}
    assert "ip" in content_words("Ingress protection: IP67")


def test_negated_words_are_not_asked_about():
    q = "If I order without express, when will it arrive?"
    assert negated_words(q) == {"express"[:5]}
    assert "express" not in without_negated(q)


def test_the_shipped_glossary_loads_and_has_a_stable_hash():
    g = load_glossary(SHIPPED)
    assert len(g.terms) > 50 and g.content_hash == load_glossary(SHIPPED).content_hash
    assert ["outer diameter"] in g.expansions("OD of CR-1000?")


def test_a_broken_glossary_names_the_file_line_and_field(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("terms:\n  - kb: [warranty]\n    customer: [guarantee]\n  - kb: [flow rate]\n    custmer: [gpm]\n")
    with pytest.raises(ConfigError) as err:
        load_glossary(bad)
    assert str(bad) in str(err.value) and ":5" in str(err.value) and "custmer" in str(err.value)
    bad.write_text("terms:\n  - kb: []\n    customer: [x]\n")
    with pytest.raises(ConfigError, match="kb"):
        load_glossary(bad)


def test_editing_the_glossary_is_a_new_retrieval_config_version(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    before = reg.load_retrieval_registry(config, "support-assistant").entries[0].content_hash
    path = config / "glossary" / "support-assistant.yaml"
    path.write_text(path.read_text() + "  - kb: [net weight]\n    customer: [heft]\n")
    after = reg.load_retrieval_registry(config, "support-assistant").entries[0].content_hash
    assert after != before


# -- what the knowledge base cannot answer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scope() -> list[ScopeRule]:
    return load_yaml_model(REPO / "config" / "gateway" / "gateway.yaml", GatewaySettings) \
        .use_cases["support-assistant"].out_of_scope


def rule_for(rules: list[ScopeRule], text: str) -> str | None:
    return next((r.name for r in rules if r.applies(text)), None)


@pytest.mark.parametrize(("question", "rule"), [
    ("How much does a CP-9180 pump cost?", "pricing"),
    ("What's the list price of PT-5500?", "pricing"),
    ("do you have CR-240 rollers in stock?", "stock"),
    ("Where is my order from Tuesday? It hasn't arrived yet.", "order_status"),
    ("How many DG-8370 bearings did you sell last year?", "sales_figures"),
    ("Is the RS-3920 better than a Nordtek screw compressor?", "competitors"),
    # the policies answer these
    ("How much does it cost to return a part that is not faulty?", None),
    ("How long does standard delivery take?", None),
    ("How much does the CP-9180 weigh?", None),
])
def test_questions_the_knowledge_base_cannot_answer_are_recognised(scope, question, rule):
    assert rule_for(scope, question) == rule


def test_a_scope_rule_with_a_broken_pattern_is_refused():
    with pytest.raises(ValueError, match="unless"):
        ScopeRule(name="x", keywords=["price"], unless=["(unclosed"])


# -- the asked attribute as concepts -------------------------------------------------------------------------

TITLE = "WG-4010 Worm Gearbox Troubleshooting"


def test_a_glossary_group_counts_once_so_the_cause_is_not_outvoted_by_the_fix():
    cause = "Cause: The most likely cause of strong vibration on the WG-4010 is a misaligned motor coupling."
    fix = "Fix: To fix strong vibration on the WG-4010, realign the coupling with a dial gauge or laser alignment tool."
    group = ["strong vibration", "misaligned motor coupling", "realign the coupling", "dial gauge", "laser alignment"]
    # No cause or fix cue in the question: the sentences tie on the group (the fix holds four of its phrases,
    # the cause two), and the similarity decides. A why-question then prefers the cause.
    neutral = SelectionRules().adjust("WG-4010 shaking, any idea?", [cause, fix], [TITLE, TITLE], [group])
    assert neutral[0] == neutral[1]
    why = SelectionRules().adjust("Why is the WG-4010 shaking?", [cause, fix], [TITLE, TITLE], [group])
    assert why[0] > why[1]


def test_a_sentence_stating_what_the_customer_does_not_ask_about_loses():
    express = "Express orders received before 12:00 are dispatched on the same working day."
    standard = "Standard deliveries arrive within 3 to 5 working days after dispatch."
    adj = SelectionRules().adjust("If I order without express, when will it arrive?", [express, standard],
                                  ["Shipping policy", "Shipping policy"])
    assert adj[1] > adj[0]


def test_words_of_the_title_name_the_product_not_the_asked_attribute():
    rules = SelectionRules(quantity_alone_supports=False)
    title = "CP-9180 Centrifugal Process Pump Product Manual"
    flow = "The rated flow rate of the CP-9180 Centrifugal Process Pump is 1960 l/min."
    assert rules.adjust("how much does a CP-9180 pump cost?", [flow], [title])[0] == float("-inf")
    assert SelectionRules(title_words_support=True, quantity_alone_supports=False) \
        .adjust("how much does a CP-9180 pump cost?", [flow], [title])[0] > float("-inf")
