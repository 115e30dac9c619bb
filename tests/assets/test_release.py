"""Registries as assets and the release candidate, on the materialized sample platform (real Dagster instance,
DuckDB, index verdicts): data versions change exactly with the part that changed, the sensor follows them, and a
candidate that does not resolve is never published."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest
import yaml

from agenix_assets.core import gates
from agenix_assets.core import registry as core
from agenix_assets.sensors.release import RELEASE_CANDIDATE_JOB, RELEASE_CANDIDATE_SENSOR
from tests.platform import Platform, asset_metadata, check_evaluations

UC, USE_CASE = "support_assistant", "support-assistant"
MODELS = dg.AssetKey(["registry", "models"])
PROMPTS = dg.AssetKey([UC, "prompt_registry"])
RETRIEVAL = dg.AssetKey([UC, "retrieval_config"])
CANDIDATE = dg.AssetKey([UC, "release_candidate"])
REGISTRIES = (MODELS, PROMPTS, RETRIEVAL)


def data_versions(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.event_specific_data.materialization.asset_key.to_user_string():
            e.event_specific_data.materialization.tags["dagster/data_version"]
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def short_suite(platform: Platform) -> None:
    """The release job also evaluates each candidate; these tests are about registries and candidates, so two
    golden questions keep each evaluation to seconds (tests/assets/test_evaluation.py measures the full suite)."""
    golden = platform.landing / "_manifest" / "golden" / "support-assistant.yaml"
    suite = yaml.safe_load(golden.read_text())
    suite["items"], suite["conversations"] = suite["items"][:2], []
    golden.write_text(yaml.safe_dump(suite, sort_keys=False))


def run_candidate(platform: Platform) -> dg.ExecuteInProcessResult:
    result = platform.run_job(RELEASE_CANDIDATE_JOB)
    assert result.success, [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    return result


def add_prompt_v2(platform: Platform) -> None:
    path = platform.config_dir / "prompts" / "support-assistant.yaml"
    book = yaml.safe_load(path.read_text())
    v2 = dict(book["versions"]["v1"], description="v1 with a shorter no-answer text")
    v2["no_answer"] = "I don't know."
    book["versions"]["v2"] = v2
    path.write_text(yaml.safe_dump(book, sort_keys=False))


def set_candidate(platform: Platform, **candidate) -> None:
    path = core.release_spec_path(platform.config_dir, USE_CASE)
    path.write_text(yaml.safe_dump({"use_case": USE_CASE, "candidate": candidate}))


def test_a_prompt_change_makes_a_new_candidate_and_only_the_prompt_registry_changes_version(platform: Platform):
    short_suite(platform)
    first = run_candidate(platform)
    same = run_candidate(platform)
    assert data_versions(same) == data_versions(first)  # nothing changed: same versions, same candidate
    unchanged = asset_metadata(same, PROMPTS)
    assert (unchanged["changed"], unchanged["added"], unchanged["changed_entries"]) == (0, 0, "(none)")
    before = asset_metadata(first, CANDIDATE)
    assert before["differs_from_production"] == "(none)" and before["index_version"] == 1

    add_prompt_v2(platform)
    second = run_candidate(platform)
    old, new = data_versions(first), data_versions(second)
    assert new[PROMPTS.to_user_string()] != old[PROMPTS.to_user_string()]
    assert new[MODELS.to_user_string()] == old[MODELS.to_user_string()]
    assert new[RETRIEVAL.to_user_string()] == old[RETRIEVAL.to_user_string()]
    assert new[CANDIDATE.to_user_string()] != old[CANDIDATE.to_user_string()]

    prompts = asset_metadata(second, PROMPTS)
    assert (prompts["entries"], prompts["added"], prompts["changed_entries"]) == (2, 1, "v2")
    after = asset_metadata(second, CANDIDATE)
    assert after["candidate_id"] != before["candidate_id"] and after["prompt_version"] == "v2"
    assert after["candidate_id"] == f"{USE_CASE}-{new[CANDIDATE.to_user_string()][:8]}"
    assert after["differs_from_production"] == "prompt_version" and after["parts_differing"] == 1
    assert (after["model_hash"], after["index_hash"], after["retrieval_hash"]) == (
        before["model_hash"], before["index_hash"], before["retrieval_hash"])

    # Every entry version and every candidate is kept; the evaluation reads the published one back.
    assert platform.query("SELECT name FROM registry.entries WHERE registry = ? ORDER BY name",
                          [f"{USE_CASE}/prompts"]) == [("v1",), ("v2",)]
    rows = platform.query("SELECT candidate_id, prompt_version, published FROM releases.candidates "
                          "WHERE candidate_id IN (?, ?) ORDER BY created_at",
                          [before["candidate_id"], after["candidate_id"]])
    assert rows == [(before["candidate_id"], "v1", True), (after["candidate_id"], "v2", True)]
    with duckdb.connect(str(platform.warehouse)) as con:
        got = core.latest_candidate(con, CANDIDATE.to_user_string(), f"{UC}/eval_report")
        assert got.candidate_id == after["candidate_id"] and got.release().prompt_version == "v2"
        assert core.entry_content(con, f"{USE_CASE}/prompts", "v2", got.prompt_hash)["no_answer"] == "I don't know."
    index_root = platform.home / "index"
    assert core.stale_parts(got, platform.config_dir, index_root) == []
    # v2 edited in place after the candidate was resolved: the recorded candidate no longer matches config/.
    path = platform.config_dir / "prompts" / "support-assistant.yaml"
    book = yaml.safe_load(path.read_text())
    book["versions"]["v2"]["no_answer"] = "No idea."
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    assert core.stale_parts(got, platform.config_dir, index_root) == ["prompt_version"]


def test_candidate_resolves_fails_with_its_reason_and_the_candidate_is_not_published(platform: Platform):
    set_candidate(platform, model="auto", prompt_version="v9", index_version="live")
    missing = platform.run_job(RELEASE_CANDIDATE_JOB)
    check = check_evaluations(missing)[f"{UC}/release_candidate:candidate_resolves"]
    assert not check.passed
    assert "prompt version 'v9' does not exist" in check.metadata["problems"].value
    assert "prompt version 'v9' does not exist" in check.description
    meta = asset_metadata(missing, CANDIDATE)
    assert meta["published"] is False
    assert platform.query("SELECT published FROM releases.candidates WHERE candidate_id = ?",
                          [meta["candidate_id"]]) == [(False,)]
    with duckdb.connect(str(platform.warehouse)) as con:
        with pytest.raises(gates.GateRefused, match="prompt version 'v9' does not exist"):
            core.latest_candidate(con, CANDIDATE.to_user_string(), f"{UC}/eval_report")
        with pytest.raises(LookupError, match="not published"):
            core.resolved_candidate(con, meta["candidate_id"])

    set_candidate(platform, model="llama-3.1-8b-instruct", prompt_version="v1", index_version="live")
    disabled = platform.run_job(RELEASE_CANDIDATE_JOB)
    check = check_evaluations(disabled)[f"{UC}/release_candidate:candidate_resolves"]
    assert not check.passed and "model 'llama-3.1-8b-instruct' is disabled" in check.metadata["problems"].value

    set_candidate(platform, model="gemma-3-270m", prompt_version="v1", index_version=1)
    short_suite(platform)  # the job evaluates the candidate: Gemma first for every question, seconds each
    fixed = platform.run_job(RELEASE_CANDIDATE_JOB)
    assert check_evaluations(fixed)[f"{UC}/release_candidate:candidate_resolves"].passed
    assert asset_metadata(fixed, CANDIDATE)["differs_from_production"] == "model"
    with duckdb.connect(str(platform.warehouse)) as con:
        assert core.latest_candidate(con, CANDIDATE.to_user_string(), f"{UC}/eval_report").model == "gemma-3-270m"


def test_a_registry_entry_without_owner_fails_its_asset_naming_file_line_and_entry(platform: Platform):
    path = platform.config_dir / "prompts" / "support-assistant.yaml"
    path.write_text(path.read_text().replace("    owner: team:llm\n", "", 1))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("  v1:"))
    result = platform.run([PROMPTS])
    [failure] = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert f"{path}:{line}: prompt version 'v1': missing owner" in failure


def test_the_sensor_requests_a_run_when_the_prompt_file_changes_and_not_otherwise(platform: Platform):
    defs = platform.defs()
    sensor = defs.resolve_sensor_def(RELEASE_CANDIDATE_SENSOR)
    short_suite(platform)

    def tick():
        context = dg.build_sensor_context(instance=platform.instance, resources=defs.resources, definitions=defs)
        return sensor.evaluate_tick(context)

    never = tick()  # this instance never materialized a candidate
    assert len(never.run_requests) == 1
    run_candidate(platform)
    unchanged = tick()
    assert unchanged.run_requests == [] and "unchanged" in unchanged.skip_message

    add_prompt_v2(platform)
    changed = tick()
    [request] = changed.run_requests
    expected = core.current_candidate(platform.config_dir, platform.home / "index", USE_CASE).candidate
    assert request.run_key == expected.candidate_hash and request.tags["agenix/candidate"] == expected.candidate_id
    # The registries, the candidate and what evaluates it (downstream of the candidate).
    assert set(request.asset_selection) == {*REGISTRIES, CANDIDATE, dg.AssetKey([UC, "eval_report"])}

    run_candidate(platform)
    assert tick().run_requests == []
