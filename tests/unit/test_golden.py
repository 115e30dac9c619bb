"""Golden sets (core/golden.py): the schema, the original queries-only format, BEIR import and clear errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest

from agenix_assets.core.config import ConfigError
from agenix_assets.core.golden import import_beir, load_golden
from agenix_assets.core.sample_data import (
    GOLDEN_PER_KIND,
    GOLDEN_USE_CASE,
    build_catalog,
    generate_sample_company,
    golden_set,
)
from tests.conftest import AS_OF, CONFIG_DIR

BEIR = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "scifact"


def _write(tmp_path: Path, text: str, name: str = "golden.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


FULL = """\
use_case: support-assistant
items:
  - id: Q-1
    question: "How long do I run in the GV-4150?"
    expected_facts: ["6 hours"]
    expected_documents: [guides/gv-4150-gate-valve-installation-guide.md]
    split: holdout
    phrasing: paraphrase
    fact_key: GV-4150.install.run_in
  - id: U-1
    question: "What does the GV-4150 cost?"
    answerable: false
conversations:
  - id: C-1
    turns:
      - user: "I installed a GV-4150."
      - user: "How long is its run-in period?"
        expect: {must_include: ["6 hours"], must_cite: [guides/gv-4150-gate-valve-installation-guide.md]}
      - user: "And what does it cost?"
        expect: {must_refuse: true}
"""


def test_a_full_golden_set_loads_with_defaults_and_gives_the_smoke_test_its_queries(tmp_path):
    suite = load_golden(_write(tmp_path, FULL), "support-assistant")
    q, u = suite.items
    assert (q.split, q.phrasing, q.answerable, q.fact_key) == ("holdout", "paraphrase", True, "GV-4150.install.run_in")
    assert (u.answerable, u.expected_facts, u.split, u.phrasing) == (False, [], "dev", "generator")
    turns = suite.conversations[0].turns
    assert turns[0].expect.must_include == [] and turns[2].expect.must_refuse
    assert [x.id for x in suite.queries] == ["Q-1"]  # only answerable items that name documents
    assert [i.id for i in suite.select(split="holdout", phrasing="paraphrase")] == ["Q-1"]


def test_the_original_queries_only_format_still_loads_with_answers_as_expected_facts():
    suite = load_golden(CONFIG_DIR / "golden" / "support_assistant.yaml", "support-assistant")
    assert len(suite.queries) == len(suite.items) == 18
    first_q, first_i = suite.queries[0], suite.items[0]
    assert (first_i.id, first_i.question, first_i.expected_documents) == (
        first_q.id, first_q.question, first_q.expected_documents)
    assert first_i.expected_facts == [first_q.answer] == ["900 mm"]


@pytest.mark.parametrize("text, message", [
    (FULL.replace("    split: holdout", "    split: test"),
     r"golden.yaml:7: items\.0\.split: Input should be 'dev' or 'holdout'"),
    (FULL.replace("    answerable: false", "    answerable: false\n    expected_facts: ['450 EUR']"),
     r"golden.yaml:10: items\.1: Value error, an unanswerable item \(answerable: false\) has no expected_facts"),
    (FULL.replace("        expect: {must_refuse: true}", "        expect: {must_refuse: true, must_include: [x]}"),
     r"golden.yaml:20: conversations\.0\.turns\.2\.expect: Value error, a turn that must_refuse"),
    (FULL.replace("fact_key:", "factkey:"), r"golden.yaml:9: items\.0\.factkey: unknown key"),
    ("use_case: support-assistant\n", r"golden.yaml:1: \(top level\): Value error, a golden set needs at least one"),
])
def test_a_bad_golden_set_names_file_line_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_golden(_write(tmp_path, text))


def test_a_golden_set_for_another_use_case_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="use_case: expected 'other', got 'support-assistant'"):
        load_golden(_write(tmp_path, FULL), "other")


# ---------------------------------------------------------------- BEIR


@pytest.mark.skipif(not BEIR.is_dir(), reason="the SciFact benchmark folder is not on this machine")
def test_beir_queries_become_retrieval_only_items_with_their_judged_documents():
    suite = import_beir(BEIR, split="train", limit=5)
    assert len(suite.items) == 5 and suite.items[0].id == "0"
    first = suite.items[0]
    assert first.question == "0-dimensional biomaterials lack inductive properties."
    assert first.expected_documents == ["31715818"] and first.expected_facts == [] and first.answerable
    assert [q.id for q in suite.queries] == [i.id for i in suite.items]


def _beir(tmp_path: Path, qrels: str, queries: str = '{"_id": "q1", "text": "Is it?"}\n') -> Path:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "It is."}\n'
                                           '{"_id": "d2", "title": "", "text": "It is not."}\n')
    (tmp_path / "queries.jsonl").write_text(queries)
    (tmp_path / "qrels" / "test.tsv").write_text(qrels)
    return tmp_path


def test_a_small_beir_folder_imports_only_relevant_judgements(tmp_path):
    suite = import_beir(_beir(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n"))
    assert [(i.id, i.expected_documents) for i in suite.items] == [("q1", ["d1"])]


@pytest.mark.parametrize("qrels, queries, message", [
    ("query-id\tcorpus-id\tscore\nq1\td3\t1\n", None, r"test.tsv:2: corpus-id: 'd3' is not in corpus.jsonl"),
    ("query-id\tcorpus-id\tscore\nq1\td1\tyes\n", None, r"test.tsv:2: score: expected an integer, got 'yes'"),
    ("query-id\tcorpus-id\tscore\nq2\td1\t1\n", None, r"test.tsv:2: query-id: 'q2' is not in queries.jsonl"),
    ("qid,did,score\n", None, r"test.tsv:1: header: expected"),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\n", '{"_id": "q1", "text": "Is it?"}\n{"_id": "q2"\n',
     r"queries.jsonl:2: not valid JSON"),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\n", '{"_id": "q1", "txt": "Is it?"}\n',
     r"queries.jsonl:1: text: a non-empty string is required"),
])
def test_a_malformed_beir_folder_names_file_line_and_field(tmp_path, qrels, queries, message):
    folder = _beir(tmp_path, qrels, *([queries] if queries else []))
    with pytest.raises(ConfigError, match=message):
        import_beir(folder)


def test_a_missing_beir_split_names_the_splits_there(tmp_path):
    folder = _beir(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(ConfigError, match=r"dev.tsv: file not found \(splits in this folder: \['test'\]\)"):
        import_beir(folder, split="dev")


# ---------------------------------------------------------------- the sample company's golden set


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    landing = tmp_path_factory.mktemp("golden-sample") / "landing"
    summary = generate_sample_company(landing, "small", seed=7, as_of=dt.date.fromisoformat(AS_OF))
    suite = load_golden(landing / summary["paths"]["golden_set"], GOLDEN_USE_CASE)
    facts = {f["key"]: f for f in map(json.loads, (landing / "_manifest" / "facts.jsonl").open())}
    return landing, summary, suite, facts


def _subject(fact_key: str) -> str:
    return ".".join(fact_key.split(".")[:2]) if fact_key.startswith("policy.") else fact_key.split(".")[0]


def test_the_sample_golden_set_splits_by_product_and_paraphrases_only_held_out_facts(sample):
    _landing, summary, suite, _facts = sample
    assert 40 <= len(suite.items) <= 80 and 3 <= len(suite.conversations) <= 5
    assert (summary["counts"]["golden_items"], summary["counts"]["golden_conversations"]) == (
        len(suite.items), len(suite.conversations))
    assert len(suite.queries) == 3 * GOLDEN_PER_KIND  # the smoke test's questions are still there
    answerable = [i for i in suite.items if i.answerable]
    for item in answerable:
        digit = hashlib.sha1(_subject(item.fact_key).encode()).hexdigest()[0]
        assert item.split == ("holdout" if digit in "89abcdef" else "dev"), item.id
    assert {i.split for i in answerable} == {"dev", "holdout"}
    paraphrases = suite.select(phrasing="paraphrase")
    assert paraphrases and all(i.split == "holdout" for i in paraphrases)
    assert len(suite.select("holdout", "generator")) > 0  # held-out facts asked in the generator's words too
    # Every held-out product is asked about in a customer's words.
    held_out = {_subject(i.fact_key) for i in answerable if i.split == "holdout"}
    assert {_subject(i.fact_key) for i in paraphrases} == held_out


def test_every_answerable_sample_item_asks_a_fact_its_document_states_verbatim(sample):
    landing, _summary, suite, facts = sample
    for item in (i for i in suite.items if i.answerable):
        fact = facts[item.fact_key]
        assert item.expected_documents == [fact["document_id"]], item.id
        assert (landing / "documents" / fact["document_id"]).is_file()
        assert item.expected_facts == [fact["answer"]] and fact["answer"] in fact["sentence"], item.id
        if item.phrasing == "generator":
            assert item.question == fact["question"]


def _words(text: str, drop: set[str]) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in drop]


def test_paraphrases_do_not_reuse_the_generator_wording(sample):
    _landing, _summary, suite, facts = sample
    for item in suite.select(phrasing="paraphrase"):
        fact = facts[item.fact_key]
        assert item.question != fact["question"]
        # What names the product and the symptom is shared by necessity; nothing else may be: no four words in a row.
        name = fact["question"] if item.fact_key.startswith("policy.") else ""
        drop = set(re.findall(r"[a-z0-9]+", (item.fact_key.replace("-", " ") + " " + name).lower()))
        sku = item.fact_key.split(".")[0]
        family = re.search(rf"{re.escape(sku)} ([A-Z][^?]*?)(?: after| for| due|\?|$)", fact["question"])
        if family:
            drop |= set(re.findall(r"[a-z0-9]+", family.group(1).lower()))
        ours, theirs = _words(item.question, drop), _words(fact["question"], drop)
        grams = {tuple(theirs[i:i + 4]) for i in range(len(theirs) - 3)}
        shared = [g for g in (tuple(ours[i:i + 4]) for i in range(len(ours) - 3)) if g in grams]
        assert not shared, (item.id, item.question, fact["question"], shared)


def test_unanswerable_sample_items_ask_about_what_no_document_states(sample):
    landing, summary, suite, facts = sample
    unanswerable = [i for i in suite.items if not i.answerable]
    assert len(unanswerable) >= 4 and all(not i.expected_facts for i in unanswerable)
    documents = " ".join(p.read_text(errors="ignore") for p in (landing / "documents").rglob("*.*")
                         if p.suffix != ".pdf")
    known = {k.split(".")[0] for k in facts}
    catalog = {p.sku for p in build_catalog(7, summary["counts"]["products"])}
    for item in unanswerable:
        for sku in re.findall(r"\b[A-Za-z]{2,3}-\d{3,4}\b", item.question):
            if sku.upper() not in known:  # a product the company does not sell: no document names it
                assert sku.upper() not in catalog and sku.upper() not in documents.upper(), item.question


def test_sample_conversations_follow_up_refuse_and_cite(sample):
    _landing, _summary, suite, facts = sample
    by_answer = {(f["answer"], f["document_id"]) for f in facts.values()}
    turns = [t for c in suite.conversations for t in c.turns]
    assert any(t.expect.must_refuse for t in turns) and any(t.expect.must_cite for t in turns)
    assert any(t.expect.must_not_include for t in turns)
    for conversation in suite.conversations:
        assert len(conversation.turns) >= 2
        first, *later = conversation.turns
        sku = re.search(r"\b[A-Z]{2,3}-\d{3,4}\b", first.user).group(0)
        for turn in later:
            for fact in turn.expect.must_include:
                assert any(a == fact for a, _doc in by_answer)
                for doc in turn.expect.must_cite:
                    assert (fact, doc) in by_answer
        follow_ups = [t for t in later if t.expect.must_include or t.expect.must_refuse]
        # A follow-up question does not repeat the product: it only makes sense with the turns before it.
        if not first.expect.must_include:
            assert follow_ups and all(sku not in t.user for t in follow_ups), conversation.id


def test_the_sample_golden_set_is_deterministic_per_seed(sample):
    landing, _summary, suite, _facts = sample
    facts = [json.loads(line) for line in (landing / "_manifest" / "facts.jsonl").open()]
    assert golden_set(7, facts) == golden_set(7, facts)
    assert golden_set(7, facts)["items"] != golden_set(8, facts)["items"]
