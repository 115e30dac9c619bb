"""The audit evidence pack of a release (core/evidence.py): collectors on a real DuckDB file and the repo's config,
the derived answers, the HTML page and the files written."""

from __future__ import annotations

import json

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


def approval(seq: int, role: str, by: str, note: str, **extra) -> dict:
    return {"seq": seq, "hash": f"{seq:064x}", "use_case": USE_CASE, "release": RELEASE, "release_hash": RELEASE_HASH,
            "role": role, "by": by, "approver_id": by.split()[0].lower(), "note": note,
            "signed_at": f"2026-12-08T08:0{seq}:00+00:00", "recorded_at": f"2026-12-08T08:0{seq}:01+00:00",
            "channel": "cli", "run_id": "", **extra}


def window(env: str, slot: str, release: str, start: str, end: str | None, weight: float = 1.0) -> dict:
    return {"environment": env, "slot": slot, "release": release, "from": start, "to": end, "moved_in_by": "ops",
            "moved_in_reason": f"promote {release}", "moved_out_by": "ops" if end else None,
            "moved_out_reason": "superseded" if end else None, "max_weight": weight}


def event(seq: int, stage: str, release: str, at: str, weight: float = 1.0, previous: str | None = None) -> dict:
    return {"seq": seq, "hash": f"e{seq:063x}", "environment": "local", "use_case": USE_CASE, "stage": stage,
            "release": release, "release_hash": RELEASE_HASH if release == RELEASE else "1111aaaa2222bbbb",
            "weight": weight, "previous_release": previous, "actor": "ops@halvorsen.example", "run_id": f"run-{seq}",
            "reason": f"{stage} {release}", "at": at}


def gate(evaluation_id: str, check: str, passed: bool, evidence_: dict, at: str) -> dict:
    return {"evaluation_id": evaluation_id, "asset": "support_assistant/release_candidate", "check": check,
            "passed": passed, "description": f"{check} {'ok' if passed else 'broken'}", "evidence": evidence_,
            "run_id": f"run-{evaluation_id}", "evaluated_at": at, "published": passed, "source": "gates.evaluations"}


def inputs(**overrides) -> dict:
    """A release approved by a product owner (whose note tries to inject a script) but not yet by the DPO,
    canaried, promoted, rolled back and promoted again; one of its gate evaluations failed and was rerun."""
    report = {
        "use_case": USE_CASE, "candidate_id": RELEASE, "candidate_hash": RELEASE_HASH,
        "parts": {"model": {"value": "auto", "hash": "a2fceb708d42009c"}},
        "evaluated_at": "2026-12-08T01:58:31+00:00", "suite": "golden.yaml", "suite_hash": "be9f0f408f03f213",
        "passed": True, "production_release": "support-assistant-r1",
        "candidate": {"release": {"name": RELEASE}, "summary": {"accuracy": 0.9231, "latency_p95_ms": 1784.5},
                      "records": [{"id": "Q-001"}]},
        "production": {"release": {"name": "support-assistant-r1"},
                       "summary": {"accuracy": 0.8923, "latency_p95_ms": 1800.0}, "records": []},
        "deltas": {"accuracy": {"candidate": 0.9231, "production": 0.8923, "delta": 0.0308, "better": "higher"}},
        "verdicts": [{"check": "charter_thresholds", "passed": True, "description": "met: accuracy 0.9231 >= 0.85",
                      "evidence": {"accuracy": 0.9231, "accuracy_threshold": 0.85}}],
        "report_path": "eval/support-assistant/support-assistant-65e046c2/report.html",
    }
    base = {
        "release": RELEASE, "use_case": USE_CASE, "generated_at": "2026-12-08T12:00:00+00:00",
        "charter": evidence.collect_charter(CONFIG_DIR, USE_CASE),
        "sources": evidence.collect_sources(CONFIG_DIR, USE_CASE),
        "release_parts": {"model": {"value": "auto", "hash": "a2fceb708d42009c"},
                          "prompt_version": {"value": "v1", "hash": "9a9cf648836e69e6"},
                          "index_version": {"value": 1, "hash": "70a765ec654f8ced"},
                          "retrieval_version": {"value": "v1", "hash": "18fb108814db23b3"}},
        "gate_history": [
            gate("e1", "candidate_resolves", False, {"candidate_id": RELEASE, "problems": ["index 9 <missing>"]},
                 "2026-12-07T22:12:03+00:00"),
            gate("e2", "candidate_resolves", True, {"candidate_hash": RELEASE_HASH, "problems": []},
                 "2026-12-07T22:12:55+00:00"),
            gate("e3", "candidate_resolves", True, {"candidate_id": "support-assistant-65e046c2ff"},
                 "2026-12-07T23:00:00+00:00"),
            gate("e4", "no_pii_in_chunks", True, {"findings": 0}, "2026-12-07T23:10:00+00:00"),
        ],
        "approvals": [approval(1, "product_owner", "Lena Brandt", "<script>alert('pwned')</script> ok to ship")],
        "invalid_approvals": [approval(2, "dpo", "Mallory Fake", "self-approved",
                                       problem="signature does not match the record")],
        "approval_requirement": {"risk_class": "medium", "required_roles": ["product_owner", "dpo"],
                                 "missing_roles": ["dpo"], "dpia_required": False, "dpia_reference": "DPIA-2026-003"},
        "eval_report": report,
        "deployment_events": [
            event(1, "canary", RELEASE, "2026-12-08T08:30:00+00:00", weight=0.1),
            event(2, "production", RELEASE, "2026-12-08T09:00:00+00:00", previous="support-assistant-r1"),
            event(3, "rollback", "support-assistant-r1", "2026-12-08T09:30:00+00:00", previous=RELEASE),
            event(4, "production", RELEASE, "2026-12-08T10:30:00+00:00", previous="support-assistant-r1"),
        ],
        "release_windows": [
            window("staging", "serving", RELEASE, "2026-12-08T07:00:00+00:00", None),
            window("local", "serving", "support-assistant-r1", "2026-11-01T00:00:00+00:00",
                   "2026-12-08T09:00:00+00:00"),
            window("local", "canary", RELEASE, "2026-12-08T08:30:00+00:00", "2026-12-08T09:00:00+00:00", 0.1),
            # Written with another offset: 11:00+02:00 is 09:00 UTC, the first time it served production.
            window("local", "serving", RELEASE, "2026-12-08T11:00:00+02:00", "2026-12-08T09:30:00+00:00"),
            window("local", "serving", "support-assistant-r1", "2026-12-08T09:30:00+00:00",
                   "2026-12-08T10:30:00+00:00"),
            window("local", "serving", RELEASE, "2026-12-08T10:30:00+00:00", None),
        ],
        "audit_problems": [],
        "dagster_checks": [{"asset": "support_assistant/raw_kb_documents", "check": "privacy_review_approved",
                            "passed": True, "run_id": "run-9", "evaluated_at": "2026-12-07T21:00:00+00:00",
                            "metadata": {"review": "PR-2026-005"}, "severity": "ERROR"}],
    }
    return {**base, **overrides}


def test_the_summary_answers_who_approved_whether_it_passed_and_when_it_went_live():
    pack = evidence.build_pack(**inputs())
    s = pack["summary"]

    assert pack["schema_version"] == 1
    assert (s["release"], s["release_hash"], s["release_hashes_consistent"]) == (RELEASE, RELEASE_HASH, True)
    assert s["risk_class"] == "medium"
    assert s["evaluation_passed"] is True
    assert s["approvals_complete"] is False and s["missing_roles"] == ["dpo"]
    assert s["approved_by"] == [
        {"role": "product_owner", "by": "Lena Brandt", "signed_at": "2026-12-08T08:01:00+00:00"}]
    assert s["invalid_approvals"] == 1
    # The earliest production serving window (09:00 UTC, written as 11:00+02:00); staging does not count.
    assert s["first_live_in_production"] == "2026-12-08T11:00:00+02:00"
    assert sorted(s["currently_live_in"]) == ["local/serving", "staging/serving"]
    assert (s["gates_total"], s["gates_failed"], s["gate_checks_failed"]) == (4, 1, 1)
    assert s["audit_trail_intact"] is True
    assert pack["evaluation"]["candidate"] == {"release": {"name": RELEASE},
                                              "summary": {"accuracy": 0.9231, "latency_p95_ms": 1784.5}}


def test_a_gate_concerns_the_release_when_its_evidence_names_its_id_or_hash():
    pack = evidence.build_pack(**inputs())

    assert [g["concerns_release"] for g in pack["gate_history"]] == [True, True, False, False]
    assert pack["summary"]["gates_concerning_release"] == 2
    assert [c["concerns_release"] for c in pack["dagster_checks"]] == [False]


def test_without_an_evaluation_of_this_release_the_summary_does_not_claim_one():
    other = {**inputs()["eval_report"], "candidate_id": "support-assistant-95aa79f2", "candidate_hash": "95aa79f2"}

    assert evidence.build_pack(**inputs(eval_report=None))["summary"]["evaluation_passed"] is None
    pack = evidence.build_pack(**inputs(eval_report=other))
    assert pack["summary"]["evaluation_passed"] is None and pack["evaluation"]["concerns_release"] is False


def test_broken_ledgers_and_disagreeing_hashes_show_in_the_summary():
    events = inputs()["deployment_events"]
    events[0] = {**events[0], "release_hash": "ffff0000ffff0000"}
    pack = evidence.build_pack(**inputs(audit_problems=["approvals.jsonl:3: record 3 was altered"],
                                        deployment_events=events))

    assert pack["summary"]["audit_trail_intact"] is False
    assert pack["summary"]["release_hashes_consistent"] is False
    assert pack["release_hashes"] == [RELEASE_HASH, "ffff0000ffff0000"]


def test_the_page_shows_every_approval_escaped_every_gate_and_the_live_windows():
    pack = evidence.build_pack(**inputs())
    page = evidence.render_html(pack)

    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; ok to ship" in page
    assert "Lena Brandt" in page and "Mallory Fake" in page
    assert "signature does not match the record" in page
    for g in pack["gate_history"]:
        assert g["evaluated_at"] in page
    assert "problems=[&quot;index 9 &lt;missing&gt;&quot;]" in page  # evidence as key=value, escaped
    assert page.count("<tr class='failed this'>") == 1  # the failed gate, which concerns this release
    assert page.count("◆ this release") == 2
    assert "Live windows: which version was live when" in page
    for w in pack["release_windows"]:
        assert f"<td>{w['from']}</td>" in page
    assert page.count("still live") == 2
    sections = ["Summary", "Charter and risk class", "Release parts", "Sources and privacy reviews", "Approvals",
                "Evaluation", "Gate history", "Dagster check history", "Deployment timeline", "Live windows",
                "Audit-trail verification"]
    positions = [page.index(f"<h2>{s}") for s in sections]
    assert positions == sorted(positions)
    assert 'href="eval/support-assistant/support-assistant-65e046c2/report.html"' in page
    assert not any(tag in page for tag in ("<link", "<script", "src=", "@import"))  # self-contained


def test_a_broken_audit_trail_lists_each_problem_in_red():
    problem = "approvals.jsonl:3: record 3 was altered (its content does not match its hash)"
    page = evidence.render_html(evidence.build_pack(**inputs(audit_problems=[problem])))

    assert f"<li class='fail'>{problem}</li>" in page
    assert "<span class='badge bad'>BROKEN</span>" in page


def test_write_pack_writes_both_files_and_the_json_round_trips(tmp_path):
    report = {**inputs()["eval_report"], "report_path": str(tmp_path / "eval" / RELEASE / "report.html")}
    pack = evidence.build_pack(**inputs(eval_report=report))
    out = tmp_path / "evidence" / USE_CASE

    paths = evidence.write_pack(pack, out)

    assert paths == {"json": out / f"evidence-{RELEASE}.json", "html": out / f"evidence-{RELEASE}.html"}
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == pack
    page = paths["html"].read_text(encoding="utf-8")
    assert page == evidence.render_html(pack, base_dir=out)
    assert f'href="../../eval/{RELEASE}/report.html"' in page  # relative: the pack and the report travel together
    assert sorted(p.name for p in out.iterdir()) == [f"evidence-{RELEASE}.html", f"evidence-{RELEASE}.json"]
    with pytest.raises(ValueError, match="cannot name a file"):
        evidence.write_pack({**pack, "release": "../escape"}, out)
