"""Deployments as data (core/deployment.py): approved-release bundles are read only when every approval gate
passed, the deployer pins a release to its parts' hashes and a pin config/ no longer holds is named, rollback
walks production's history back from the ledger, and the gateway's manifest watcher follows the deployed
manifest once there is one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agenix_assets.core import deployment as dep
from agenix_assets.core import registry as reg
from serving.config import Release
from serving.manifest import ManifestWatcher

UC = "support-assistant"


def bundle(release: str = "support-assistant-aaaa1111", failed: str | None = None) -> dict:
    return {
        "use_case": UC, "release": release, "release_hash": "aaaa1111bbbb2222", "approved_at": "2026-12-08T10:00:00Z",
        "parts": {"model": {"value": "auto", "hash": "m1"}, "prompt_version": {"value": "v2", "hash": "p2"},
                  "index_version": {"value": 3, "hash": "i3"}, "retrieval_version": {"value": "v1", "hash": "r1"}},
        "gates": [{"check": c, "passed": c != failed, "description": ""} for c in dep.APPROVAL_GATES],
    }


def test_a_bundle_is_published_and_read_only_when_every_approval_gate_passed(tmp_path: Path):
    with pytest.raises(dep.DeploymentError, match="failed: required_approvals"):
        dep.write_bundle(tmp_path, bundle(failed="required_approvals"))
    with pytest.raises(dep.DeploymentError, match="is not approved"):
        dep.read_bundle(tmp_path, UC, "support-assistant-aaaa1111")
    path = dep.write_bundle(tmp_path, bundle())
    assert dep.read_bundle(tmp_path, UC, "support-assistant-aaaa1111")["release_hash"] == "aaaa1111bbbb2222"
    # A file edited to drop a gate is refused like a missing one: the required list is the code's.
    edited = bundle()
    edited["gates"] = edited["gates"][:2]
    path.write_text(json.dumps(edited))
    with pytest.raises(dep.DeploymentError, match="does not list dpia_recorded, sources_privacy_reviewed"):
        dep.read_bundle(tmp_path, UC, "support-assistant-aaaa1111")
    assert dep.approved_releases(tmp_path, UC) == []


def test_a_deployed_release_is_pinned_to_its_index_version_and_part_hashes():
    spec = dep.release_spec(bundle())
    assert spec == {"name": "support-assistant-aaaa1111", "model": "auto", "prompt_version": "v2", "index_version": 3,
                    "pins": {"release": "aaaa1111bbbb2222", "model": "m1", "prompt_version": "p2",
                             "index_version": "i3", "retrieval_version": "r1"}}
    assert Release.model_validate(spec).pins["prompt_version"] == "p2"


def test_a_pin_that_config_no_longer_holds_is_named(config_dir: Path, tmp_path: Path):
    registries = reg.load_registries(config_dir, UC)
    spec = reg.ReleaseSpec(use_case=UC, candidate=reg.CandidateSpec(prompt_version="v1", index_version=1))
    c = reg.resolve_candidate(registries, spec, [1]).candidate
    release = Release(name=c.candidate_id, model=c.model, prompt_version="v1", index_version=1,
                      pins={p: h for p, (_, h) in c.parts().items()} | {"release": c.candidate_hash})
    assert reg.pin_problems(config_dir, tmp_path / "index", UC, release) == []
    path = config_dir / "prompts" / "support-assistant.yaml"
    book = yaml.safe_load(path.read_text())
    book["versions"]["v1"]["no_answer"] = "Edited in place after approval."
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    [problem] = reg.pin_problems(config_dir, tmp_path / "index", UC, release)
    assert problem.startswith(f"prompt_version v1 was {c.prompt_hash} when approved, is ")


def event(home: Path, stage: str, release: str, previous: str | None = None) -> dict:
    spec = {"name": release, "model": "auto", "prompt_version": "v1", "index_version": 1}
    prev = {"name": previous, "model": "auto", "prompt_version": "v1", "index_version": "live"} if previous else None
    return dep.record_event(home, environment="local", use_case=UC, stage=stage, release=release, release_hash="h",
                            actor="test", reason="test", spec=spec, previous_release=previous, previous_spec=prev)


def test_rollback_walks_production_back_through_the_ledger(tmp_path: Path):
    with pytest.raises(dep.DeploymentError, match="no earlier production release than r1"):
        dep.rollback_target(tmp_path, UC, "local", "r1")
    event(tmp_path, "staging", "r2")
    event(tmp_path, "production", "r2", previous="r1")
    event(tmp_path, "production", "r3", previous="r2")
    assert dep.rollback_target(tmp_path, UC, "local", "r3")["name"] == "r2"
    event(tmp_path, "rollback", "r2", previous="r3")
    # A second rollback goes one release further back, never forward to the one rolled back from.
    assert dep.rollback_target(tmp_path, UC, "local", "r2")["name"] == "r1"
    assert dep.rollback_target(tmp_path, UC, "local", "r2")["index_version"] == "live"
    with pytest.raises(ValueError, match="stage 'promoted'"):
        event(tmp_path, "promoted", "r4")
    assert [e["seq"] for e in dep.events(tmp_path, UC)] == [1, 2, 3, 4]
    assert dep.events_ledger(tmp_path).verify() == []


def test_rollback_writes_the_previous_release_and_clears_the_canary(config_dir: Path, tmp_path: Path):
    from serving.config import CanaryRelease, DeploymentManifest, UseCaseDeployment

    r1 = Release(name="support-assistant-r1", model="auto", prompt_version="v1")
    r2 = Release(name="support-assistant-r2", model="auto", prompt_version="v1", index_version=1)
    r3 = Release(name="support-assistant-r3", model="auto", prompt_version="v1", index_version=1)
    dep.record_event(tmp_path, environment="local", use_case=UC, stage="production", release=r2.name,
                     release_hash="h2", actor="test", reason="promoted", spec=r2.model_dump(exclude_none=True),
                     previous_release=r1.name, previous_spec=r1.model_dump(exclude_none=True))
    dep.write_live_manifest(tmp_path, DeploymentManifest(environment="local", use_cases={
        UC: UseCaseDeployment(release=r2, canary=CanaryRelease(release=r3, weight=0.25))}))
    done = dep.rollback(tmp_path, config_dir, UC, actor="user:on-call", reason="complaints")
    assert (done["stage"], done["release"], done["previous_release"]) == ("rollback", r1.name, r2.name)
    live = yaml.safe_load(dep.deployed_manifest_path(tmp_path, "local").read_text())
    assert live["use_cases"][UC] == {"release": {"name": r1.name, "model": "auto", "prompt_version": "v1",
                                                 "index_version": "live"}}


def test_the_gateway_reads_config_manifest_until_a_release_is_deployed(tmp_path: Path):
    shipped, deployed = tmp_path / "config.yaml", tmp_path / "home" / "deployments" / "local.yaml"
    shipped.write_text("environment: local\nuse_cases: {}\n")
    watcher = ManifestWatcher(deployed, fallback=shipped)
    assert watcher.poll() and watcher.path == shipped
    deployed.parent.mkdir(parents=True)
    deployed.write_text("environment: local\nuse_cases: {}\n# deployed\n")
    assert watcher.poll() and watcher.path == deployed and watcher.reloads == 2


def test_rollback_job_from_the_launchpad_rolls_back_and_names_what_it_cannot(config_dir: Path, tmp_path: Path):
    from agenix_assets.resources.platform import AgenixResource
    from agenix_assets.sensors.rollout import rollback_job
    from serving.config import DeploymentManifest, UseCaseDeployment

    r1 = Release(name="support-assistant-r1", model="auto", prompt_version="v1")
    r2 = Release(name="support-assistant-r2", model="auto", prompt_version="v1", index_version=1)
    resources = {"agenix": AgenixResource(home=str(tmp_path), config_dir=str(config_dir))}
    config = {"ops": {"rollback_release": {"config": {"use_case": UC, "by": "Lena Brandt", "reason": "complaints"}}}}
    dep.write_live_manifest(tmp_path, DeploymentManifest(environment="local", use_cases={
        UC: UseCaseDeployment(release=r2)}))
    nothing = rollback_job.execute_in_process(run_config=config, resources=resources, raise_on_error=False)
    assert not nothing.success
    assert "no earlier production release than support-assistant-r2" in str(
        [e.event_specific_data.error.message for e in nothing.all_events if e.is_step_failure])
    dep.record_event(tmp_path, environment="local", use_case=UC, stage="production", release=r2.name,
                     release_hash="h2", actor="test", reason="promoted", spec=r2.model_dump(exclude_none=True),
                     previous_release=r1.name, previous_spec=r1.model_dump(exclude_none=True))
    done = rollback_job.execute_in_process(run_config=config, resources=resources)
    assert done.success
    [event] = [e for e in dep.events(tmp_path, UC) if e["stage"] == "rollback"]
    assert (event["release"], event["actor"], event["reason"]) == (
        r1.name, "user:Lena Brandt (rollback_job)", "complaints")
