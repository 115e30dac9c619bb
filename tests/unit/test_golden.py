"""Golden sets (core/golden.py): the schema, the original queries-only format, BEIR import and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenix_assets.core.config import ConfigError
from agenix_assets.core.golden import import_beir, load_golden
from tests.conftest import CONFIG_DIR

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
    (FULL.replace("    split: holdout", "    split: test"), r"golden.yaml:7: items\.0\.split: Input should be 'dev' or 'holdout'"),
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
