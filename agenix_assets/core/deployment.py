"""Deployments as data: approved-release bundles, the live manifests the gateway reads, and the deployment ledger.

No Dagster import; the deployment assets, the rollout sensors and ``agenix rollback`` all call these functions,
and none of them opens the warehouse, so a rollback works while a Dagster run holds it.

- An **approved release bundle** (``AGENIX_HOME/releases/<use case>/<release>.json``) is written by
  ``approved_release`` only when every one of its blocking checks passed (write-audit-publish): the release's
  parts with their hashes, the checks with their evidence, the approvals it relied on (ledger seq and hash). A
  deployer reads a bundle only through ``read_bundle``, which refuses one that does not list every required
  check as passed; the required list is this module's, not the file's.
- **Live manifests** (``AGENIX_HOME/deployments/<environment>.yaml``): what the deployer last wrote; the gateway
  reads it (``serving.config.GatewayConfig.live_manifest_path``), and the manifest shipped in
  ``config/deployments/`` until a release has been deployed. Each deployed release is pinned: a concrete index
  version and the content hashes of its prompt, model and retrieval configuration.
- The **deployment ledger** (``AGENIX_HOME/deployments/events.jsonl``, a ``core.ledger.Ledger``): one record per
  move (staging, shadow, canary step, production, rollback), with who or what moved it and why. Each record
  carries the release's manifest entry (``spec``) and production's before the move (``previous_spec``), so a
  rollback rebuilds the manifest from the ledger alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from .ledger import Ledger, strip_line

STAGING = "staging"
# The checks approved_release must have passed for a bundle to be deployable (core/approvals.py's policy decides
# which approvals; these are the gates).
EVALUATION_PASSED = "evaluation_passed"
REQUIRED_APPROVALS = "required_approvals"
DPIA_RECORDED = "dpia_recorded"
SOURCES_PRIVACY_REVIEWED = "sources_privacy_reviewed"
APPROVAL_GATES = (EVALUATION_PASSED, REQUIRED_APPROVALS, DPIA_RECORDED, SOURCES_PRIVACY_REVIEWED)
STAGES = ("staging", "shadow", "canary", "production", "rollback", "shadow_stopped", "canary_stopped")


class DeploymentError(RuntimeError):
    """A release cannot be deployed or rolled back; the message says why and what to do."""


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------ bundles


def bundle_path(home: Path, use_case: str, release: str) -> Path:
    return Path(home) / "releases" / use_case / f"{release}.json"


def write_bundle(home: Path, bundle: dict[str, Any]) -> Path:
    """Publish an approved release (atomically: a reader sees the old file or the new one)."""
    from ..sandbox import assert_writable

    failed = [g["check"] for g in bundle.get("gates", []) if not g.get("passed")]
    if failed:
        raise DeploymentError(f"release {bundle['release']}: a bundle is published only when every gate passed "
                              f"(failed: {', '.join(failed)})")
    path = assert_writable(bundle_path(home, bundle["use_case"], bundle["release"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(bundle, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def read_bundle(home: Path, use_case: str, release: str) -> dict[str, Any]:
    """An approved release, or ``DeploymentError`` when it was never approved or its bundle does not list every
    approval gate as passed (an edited or partial file is refused like a missing one)."""
    path = bundle_path(home, use_case, release)
    if not path.is_file():
        raise DeploymentError(f"release {release} of {use_case} is not approved: no {path} (its approved_release "
                              "gates have not all passed)")
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"{path}: not valid JSON ({exc.msg})") from None
    passed = {g.get("check") for g in bundle.get("gates", []) if g.get("passed") is True}
    missing = [c for c in APPROVAL_GATES if c not in passed]
    if missing:
        raise DeploymentError(f"{path}: release {release} does not list {', '.join(missing)} as passed: not deployable")
    if bundle.get("release") != release or bundle.get("use_case") != use_case:
        raise DeploymentError(f"{path}: names release {bundle.get('release')} of {bundle.get('use_case')}, "
                              f"expected {release} of {use_case}")
    return bundle


def approved_releases(home: Path, use_case: str) -> list[dict[str, Any]]:
    """Every deployable bundle of the use case, oldest approval first."""
    folder = Path(home) / "releases" / use_case
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(read_bundle(home, use_case, path.stem))
        except DeploymentError:
            continue
    return sorted(out, key=lambda b: b.get("approved_at", ""))


def release_spec(bundle: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry of an approved release: pinned to its index version and its parts' content hashes."""
    parts = bundle["parts"]
    return {
        "name": bundle["release"],
        "model": parts["model"]["value"],
        "prompt_version": parts["prompt_version"]["value"],
        "index_version": int(parts["index_version"]["value"]),
        "pins": {"release": bundle["release_hash"], **{p: v["hash"] for p, v in parts.items()}},
    }


# ------------------------------------------------------------------------------------------------ manifests


def deployed_manifest_path(home: Path, environment: str) -> Path:
    return Path(home) / "deployments" / f"{environment}.yaml"


def events_ledger(home: Path) -> Ledger:
    return Ledger(Path(home) / "deployments" / "events.jsonl")


def load_manifest(config_dir: Path, home: Path, environment: str | None = None):
    """The manifest in force for ``environment`` (default: the gateway's): the deployed one, else config's."""
    from serving.config import DeploymentManifest, GatewayConfig

    from .config import load_yaml_model

    gw = GatewayConfig.load(config_dir, environment)
    path = gw.live_manifest_path(home)
    if not path.is_file():
        return DeploymentManifest(environment=gw.settings.environment), path
    return load_yaml_model(path, DeploymentManifest), path


def write_live_manifest(home: Path, manifest) -> Path:
    from serving.manifest import write_manifest

    path = deployed_manifest_path(home, manifest.environment)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_manifest(path, manifest)


def record_event(home: Path, *, environment: str, use_case: str, stage: str, release: str, release_hash: str,
                 actor: str, reason: str, weight: float | None = None, spec: dict | None = None,
                 previous_release: str | None = None, previous_spec: dict | None = None,
                 run_id: str | None = None) -> dict[str, Any]:
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    return strip_line(events_ledger(home).append({
        "kind": "deployment", "environment": environment, "use_case": use_case, "stage": stage, "release": release,
        "release_hash": release_hash, "weight": weight, "spec": spec, "previous_release": previous_release,
        "previous_spec": previous_spec, "actor": actor, "run_id": run_id, "reason": reason, "at": utcnow(),
    }))


def events(home: Path, use_case: str | None = None) -> list[dict[str, Any]]:
    return [strip_line(e) for e in events_ledger(home).records()
            if e.get("kind") == "deployment" and (use_case is None or e.get("use_case") == use_case)]


def rollback_target(home: Path, use_case: str, environment: str, current: str) -> dict[str, Any]:
    """The manifest entry production served before ``current`` (walking back over rollbacks: a second rollback
    goes one release further back), from the ledger. ``DeploymentError`` when there is none."""
    served: list[dict[str, Any]] = []  # production's releases in the order they came into force
    for e in events(home, use_case):
        if e["environment"] != environment:
            continue
        if e["stage"] == "production":
            if not served and e.get("previous_spec"):
                served.append(e["previous_spec"])
            served.append(e["spec"])
        elif e["stage"] == "rollback":
            # A rollback takes the current release off the stack: it must never come back by a later rollback.
            while served and served[-1]["name"] != e["release"]:
                served.pop()
    while served and served[-1]["name"] == current:
        served.pop()
    if not served:
        raise DeploymentError(f"{use_case}: no earlier production release than {current} in "
                              f"{events_ledger(home).path} to roll back to")
    return served[-1]


def rollback(home: Path, config_dir: Path, use_case: str, *, actor: str, reason: str,
             environment: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Put production's previous release back in force (canary and shadow cleared): one manifest write, which the
    gateway picks up within its poll interval (1 s). Returns the ledger event."""
    from serving.config import Release, UseCaseDeployment

    manifest, path = load_manifest(config_dir, home, environment)
    current = manifest.use_cases.get(use_case)
    if current is None:
        raise DeploymentError(f"{use_case}: not deployed in {path}")
    target = rollback_target(home, use_case, manifest.environment, current.release.name)
    manifest.use_cases[use_case] = UseCaseDeployment(release=Release.model_validate(target))
    write_live_manifest(home, manifest)
    return record_event(home, environment=manifest.environment, use_case=use_case, stage="rollback",
                        release=target["name"], release_hash=(target.get("pins") or {}).get("release", ""),
                        actor=actor, reason=reason, weight=1.0, spec=target, previous_release=current.release.name,
                        previous_spec=current.release.model_dump(mode="json", exclude_none=True), run_id=run_id)


# ------------------------------------------------------------------------------------------------ rollout state


def stage_started_at(home: Path, use_case: str, release: str, stage: str) -> str | None:
    """When the newest ``stage`` event of ``release`` was recorded (a canary step's start, the shadow's start)."""
    found = [e["at"] for e in events(home, use_case) if e["release"] == release and e["stage"] == stage]
    return found[-1] if found else None


def assess_rollout(home: Path, config_dir: Path, use_case: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Where the use case's rollout stands and what the request logs say about it, judged by the rollout policy
    (config/rollout.yaml): ``{"stage": "none"|"shadow"|"canary", "release", "baseline", "weight", "decision"}``.
    The canary-health sensor and the canary_deployment asset both call this, so the asset re-judges what the
    sensor saw instead of trusting its request."""
    from serving.config import GatewayConfig

    from . import rollout

    manifest, _ = load_manifest(config_dir, home)
    dep = manifest.use_cases.get(use_case)
    out: dict[str, Any] = {"stage": "none", "release": None, "baseline": dep.release.name if dep else None,
                           "weight": 0.0, "decision": None, "started_at": None, "ready_for_production": False}
    if dep is None or (dep.canary is None and dep.shadow is None):
        return out
    now = now or dt.datetime.now(dt.UTC)
    policy = rollout.load_rollout_policy(config_dir, use_case)
    log_dir = Path(home) / GatewayConfig.load(config_dir).settings.request_log.dir
    if dep.canary is not None and dep.canary.weight >= 1.0:
        # Judged healthy at its last step and serving every key: production_deployment makes it the release.
        out.update(stage="canary", release=dep.canary.release.name, weight=1.0, ready_for_production=True)
    elif dep.canary is not None:
        name = dep.canary.release.name
        started = stage_started_at(home, use_case, name, "canary")
        since = _parse(started) if started else now - dt.timedelta(hours=1)
        decision = rollout.judge_canary(policy, canary_release=name, baseline_release=dep.release.name,
                                        traffic=rollout.load_traffic(log_dir, use_case, since), step_started_at=since,
                                        now=now, weight=dep.canary.weight)
        out.update(stage="canary", release=name, weight=dep.canary.weight, decision=decision, started_at=started)
    else:
        name = dep.shadow.release.name
        started = stage_started_at(home, use_case, name, "shadow")
        since = _parse(started) if started else now - dt.timedelta(hours=1)
        decision = rollout.judge_shadow(policy, shadow_release=name, primary_release=dep.release.name,
                                        traffic=rollout.load_traffic(log_dir, use_case, since), started_at=since,
                                        now=now)
        out.update(stage="shadow", release=name, decision=decision, started_at=started)
    return out


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
