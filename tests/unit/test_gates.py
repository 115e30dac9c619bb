"""Gate verdicts in the warehouse (core/gates.py) and index verdict files (core/rag.py), on a real DuckDB file."""

from __future__ import annotations

import json

import duckdb
import pytest

from agenix_assets.core import gates
from agenix_assets.core.gates import GateRefused, GateResult
from agenix_assets.core.rag import INDEX_VERSION_GATES, index_servable, read_gates, write_index_verdict


def verdicts(asset: str, **passed: bool) -> list[GateResult]:
    return [GateResult(asset, name, ok, f"{name} {'ok' if ok else 'broken'}", {"found": 0 if ok else 3}) for name, ok in passed.items()]


@pytest.fixture
def con(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as c:
        yield c


def test_the_latest_evaluation_decides_and_a_refusal_names_the_check_and_its_evidence(con):
    gates.record_evaluation(con, verdicts("uc/chunks", no_pii=True, bounds=True), "run-1", published=True)
    assert [g.check for g in gates.require_passed(con, "uc/chunks", "uc/embeddings", ["no_pii", "bounds"])] == ["bounds", "no_pii"]

    gates.record_evaluation(con, verdicts("uc/chunks", no_pii=False, bounds=True), "run-2", published=False)
    with pytest.raises(GateRefused) as refused:
        gates.require_passed(con, "uc/chunks", "uc/embeddings")
    message = str(refused.value)
    assert "uc/embeddings refuses to read uc/chunks" in message
    assert "no_pii failed on uc/chunks (run run-2" in message and "found=3" in message
    assert [g.check for g in refused.value.failed] == ["no_pii"]

    # A later passing evaluation lifts the refusal; the history keeps all three, newest first.
    gates.record_evaluation(con, verdicts("uc/chunks", no_pii=True, bounds=True), "run-3", published=True)
    assert gates.require_passed(con, "uc/chunks", "uc/embeddings")[0].run_id == "run-3"
    runs = [h["run_id"] for h in gates.history(con, "uc/chunks")]
    assert runs == ["run-3", "run-3", "run-2", "run-2", "run-1", "run-1"]


def test_a_check_missing_from_the_latest_evaluation_is_refused(con):
    gates.record_evaluation(con, verdicts("uc/chunks", bounds=True), "run-1", published=True)
    with pytest.raises(GateRefused, match="no_pii failed on uc/chunks .*not evaluated"):
        gates.require_passed(con, "uc/chunks", "uc/index", ["no_pii", "bounds"])


def test_evaluations_of_other_assets_do_not_count(con):
    gates.record_evaluation(con, verdicts("uc/embeddings", every_chunk_embedded=True), "run-1", published=True)
    with pytest.raises(GateRefused, match="never evaluated"):
        gates.require_passed(con, "uc/chunks", "uc/index")
    with pytest.raises(ValueError, match="one evaluation judges one asset"):
        gates.record_evaluation(con, [*verdicts("a", x=True), *verdicts("b", y=True)], "run-2", published=True)


def test_an_index_version_is_servable_only_when_every_lane_check_is_listed_and_passed(tmp_path):
    collection = "agenix.uc.v0001"
    (tmp_path / collection).mkdir()
    all_passed = [GateResult("uc/x", name, True, "ok") for name in INDEX_VERSION_GATES]
    verdict = write_index_verdict(tmp_path, collection, all_passed)
    assert verdict["servable"] and index_servable(read_gates(tmp_path, collection))

    one_failed = [GateResult("uc/x", n, n != "no_pii_in_chunks", "") for n in INDEX_VERSION_GATES]
    assert write_index_verdict(tmp_path, collection, one_failed)["servable"] is False
    assert not index_servable(read_gates(tmp_path, collection))

    # A verdict that omits a check (e.g. one written before the check existed: only the smoke test) never serves.
    assert not index_servable({"checks": {"retrieval_smoke_test": {"passed": True}}})
    partial = {"checks": {n: {"passed": True} for n in INDEX_VERSION_GATES if n != "every_chunk_embedded"}, "servable": True}
    assert not index_servable(partial)
    (tmp_path / collection / "gates.json").write_text("{not json")
    assert read_gates(tmp_path, collection) == {} and not index_servable({})
    assert json.loads(json.dumps(verdict))["required"] == list(INDEX_VERSION_GATES)
