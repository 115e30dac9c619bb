"""The audit evidence pack of a release (core/evidence.py): collectors on a real DuckDB file and the repo's config,
the derived answers, the HTML page and the files written."""

from __future__ import annotations

import duckdb
import pytest

from agenix_assets.core import evidence, gates
from agenix_assets.core.gates import GateResult
from tests.conftest import CONFIG_DIR

USE_CASE = "support-assistant"
RELEASE = "support-assistant-65e046c2"
RELEASE_HASH = "65e046c2882b3088"


@pytest.fixture
def con(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as c:
        yield c


def test_gate_history_keeps_a_failed_evaluation_and_its_passing_rerun_oldest_first(con):
    gates.record_evaluation(con, [GateResult("support_assistant/chunks", "no_pii_in_chunks", True, "no PII",
                                             {"findings": 0})], "run-1", published=True)
    gates.record_evaluation(con, [
        GateResult("support_assistant/release_candidate", "candidate_resolves", False, "index version 9 missing",
                   {"candidate_id": RELEASE, "problems": ["index version 9 missing"]})], "run-2", published=False)
    gates.record_evaluation(con, [
        GateResult("support_assistant/release_candidate", "candidate_resolves", True, "resolves",
                   {"candidate_id": RELEASE, "problems": []})], "run-3", published=True)
    # Another use case's gates are not this use case's evidence.
    gates.record_evaluation(con, [GateResult("other_case/chunks", "no_pii_in_chunks", True, "no PII")], "run-4",
                            published=True)

    history = evidence.collect_gate_history(con, USE_CASE)

    assert [(h["run_id"], h["check"], h["passed"], h["published"]) for h in history] == [
        ("run-1", "no_pii_in_chunks", True, True),
        ("run-2", "candidate_resolves", False, False),
        ("run-3", "candidate_resolves", True, True),
    ]
    failed = history[1]
    assert failed["evidence"] == {"candidate_id": RELEASE, "problems": ["index version 9 missing"]}
    assert failed["description"] == "index version 9 missing"
    assert failed["source"] == "gates.evaluations"
    assert failed["evaluated_at"].endswith("+00:00")
    assert len({h["evaluation_id"] for h in history}) == 3


def test_gate_history_is_empty_without_the_table_and_reads_a_read_only_warehouse(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    with duckdb.connect(str(path), read_only=True) as ro:
        assert evidence.collect_gate_history(ro, USE_CASE) == []


def test_sources_of_the_support_assistant_carry_their_privacy_review_and_register_entry():
    sources = {s["name"]: s for s in evidence.collect_sources(CONFIG_DIR, USE_CASE)}

    assert list(sources) == ["kb_documents", "support_tickets", "crm_contacts"]
    assert {n: s["privacy_review"] for n, s in sources.items()} == {
        "kb_documents": "PR-2026-005", "support_tickets": "PR-2026-003", "crm_contacts": "PR-2026-002"}
    tickets = sources["support_tickets"]
    assert tickets["privacy_review_record"]["reviewer"] == "Dana Ortiz"
    assert tickets["privacy_review_record"]["outcome"] == "approved_with_conditions"
    assert tickets["privacy_review_record"]["decided_at"] == "2026-01-19"
    assert (tickets["kind"], tickets["owner"], tickets["data_domain"]) == ("jsonl", "team:data", "support")
    assert tickets["data_categories"] == ["support_communications", "contact_details"]
    assert all(s["in_processing_register"] and s["privacy_review_covers_source"] for s in sources.values())
    assert sources["crm_contacts"]["processing_register_entry"]["retention_days"] == 1095


def test_a_source_whose_review_is_missing_says_not_recorded(config_dir):
    reviews = config_dir / "governance" / "privacy_reviews.yaml"
    text = reviews.read_text(encoding="utf-8")
    reviews.write_text(text.replace("id: PR-2026-005", "id: PR-2026-099"), encoding="utf-8")

    kb = {s["name"]: s for s in evidence.collect_sources(config_dir, USE_CASE)}["kb_documents"]

    assert kb["privacy_review"] == "PR-2026-005"
    assert kb["privacy_review_record"] == "NOT RECORDED"
    assert kb["privacy_review_covers_source"] is False


def test_the_charter_names_its_risk_class_dpia_and_file():
    charter = evidence.collect_charter(CONFIG_DIR, USE_CASE)

    assert (charter["id"], charter["risk_class"], charter["dpia_reference"]) == (USE_CASE, "medium", "DPIA-2026-003")
    assert charter["sources"] == ["kb_documents", "support_tickets", "crm_contacts"]
    assert charter["latency_target_ms_p95"] == 2500
    assert charter["file"].endswith("use_cases/support_assistant.yaml") and len(charter["file_sha256"]) == 64
    assert {r["id"] for r in charter["risks"]} == {"RISK-001", "RISK-002"}
