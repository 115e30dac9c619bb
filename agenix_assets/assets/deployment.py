"""Approvals, the approved release and its staged rollout, each an asset whose blocking checks are the gates.

Lineage per use case: ``eval_report`` + ``release_approvals`` -> ``approved_release`` -> ``staging_deployment``
-> ``shadow_deployment`` -> ``canary_deployment`` -> ``production_deployment`` -> ``release_history`` ->
``audit_evidence_pack``.

Every gate writes, audits, then publishes (core/gates.py): its verdicts go to ``gates.evaluations`` with
``published`` only when all passed, and each step starts with ``gates.require_passed`` on the step before it, so
a deployment asset selected alone, a retry or a sensor run refuses a release that failed any earlier gate. The
release itself is read from the approved-release bundle (core/deployment.py), which exists only for a release
whose four approval gates passed; the deployer pins it (index version and content hashes), and the gateway
refuses a manifest whose pins config/ no longer holds.
"""


import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import dagster as dg

from ..core import deployment as dep
from ..core import gates
from ..core.tables import markdown_table
from ..resources.deployer import LocalDeployer
from ..resources.llm import ModelServerResource, local_model_servers
from ..resources.platform import AgenixResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource
from .evaluation import eval_dir
from .governance import evidence_metadata
from .rag import rag_key

RELEASE_GROUP = "release"
DEPLOYMENT_GROUP = "deployment"
AUDIT_GROUP = "audit"
STAGING_SMOKE_TEST = "staging_smoke_test"
SHADOW_MANIFEST_ACCEPTED = "shadow_manifest_accepted"
CANARY_HEALTHY = "canary_healthy"
PRODUCTION_SERVES_RELEASE = "production_serves_release"
RISK_ORDER = ("low", "medium", "high")


class ApprovalRequest(dg.Config):
    """An approval from the Launchpad: the release, your role, your name and note, and the token
    `agenix approve RELEASE --role ROLE --by NAME --note TEXT --token` printed for exactly these values. Leave
    the token empty to re-judge the approvals already recorded."""

    release: str = ""
    role: str = ""
    by: str = ""
    note: str = ""
    token: str = ""


def _uc_key(use_case: str, name: str) -> dg.AssetKey:
    return rag_key(use_case, name)


def _config_dir(agenix: AgenixResource) -> Path:
    from .release import config_dir_of

    return config_dir_of(agenix)


def _gate(context: dg.AssetExecutionContext, warehouse: WarehouseResource, key: dg.AssetKey, check: str,
          passed: bool, description: str, evidence: dict[str, Any]) -> gates.GateResult:
    """A deployment step's verdict, recorded (published when it passed) in gates.evaluations."""
    result = gates.GateResult(key.to_user_string(), check, passed, description, evidence, context.run_id,
                              dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    with warehouse.connect() as con:
        gates.publish_if_passed(con, [result], context.run_id)
    return result


def _upstream_release(warehouse: WarehouseResource, upstream: dg.AssetKey, consumer: dg.AssetKey, checks,
                      home: Path, use_case: str) -> tuple[list[gates.GateResult], str, dict[str, Any]]:
    """The verdicts of the step before (refused unless they passed), the release they name, and its bundle."""
    with warehouse.connect() as con:
        verdicts = _require(con, upstream, consumer, checks)
    release = _release_of(verdicts)
    return verdicts, release, _bundle(home, use_case, release)


def _check_results(results: list[gates.GateResult]):
    for r in results:
        yield dg.AssetCheckResult(check_name=r.check, passed=r.passed, description=r.description[:1000],
                                  metadata=evidence_metadata(r.evidence))


def _require(con, upstream: dg.AssetKey, consumer: dg.AssetKey, expected) -> list[gates.GateResult]:
    try:
        return gates.require_passed(con, upstream.to_user_string(), consumer.to_user_string(), expected)
    except gates.GateRefused as refused:
        raise dg.Failure(description=str(refused), metadata={
            "refused": upstream.to_user_string(),
            "failed_checks": ", ".join(f.check for f in refused.failed)}) from None


def _release_of(verdicts: list[gates.GateResult]) -> str:
    ids = {v.evidence.get("release") for v in verdicts if v.evidence.get("release")}
    if len(ids) != 1:
        raise dg.Failure(description=f"the upstream verdicts do not name one release ({sorted(map(str, ids))})")
    return ids.pop()


def _latest_report(home: Path, use_case: str, candidate_id: str) -> dict[str, Any]:
    path = eval_dir(home, use_case) / candidate_id / "report.json"
    if not path.is_file():
        raise dg.Failure(description=f"no evaluation report {path} for {candidate_id}")
    report = json.loads(path.read_text(encoding="utf-8"))
    report["report_path"] = str(path.with_name("report.html"))
    return report


def _release_risk(config_dir: Path, use_case: str, charter_risk: str, report: dict[str, Any]) -> tuple[str, dict]:
    """The release's risk class: the charter's, raised by the risk rating of any registry entry it uses."""
    from ..core import registry as reg

    registries = reg.load_registries(config_dir, use_case)
    parts = report.get("parts") or {}
    used: dict[str, str] = {}
    prompt = registries.prompts.get(str((parts.get("prompt_version") or {}).get("value")))
    if prompt:
        used[f"prompt {prompt.name}"] = prompt.risk_rating
    for e in registries.retrieval.entries:
        used[f"retrieval {e.name}"] = e.risk_rating
    model = str((parts.get("model") or {}).get("value"))
    for e in registries.models.entries:
        if (model == "auto" and e.attributes["enabled"] and e.attributes["kind"] in ("openai", "extractive")) \
                or e.name == model:
            used[f"model {e.name}"] = e.risk_rating
    risk = max([charter_risk, *used.values()], key=RISK_ORDER.index)
    return risk, used


def build_deployment_assets(use_case: str) -> list:
    tags = {"agenix/use_case": use_case}
    report_key = _uc_key(use_case, "eval_report")
    approvals_key = _uc_key(use_case, "release_approvals")
    approved_key = _uc_key(use_case, "approved_release")
    staging_key = _uc_key(use_case, "staging_deployment")
    shadow_key = _uc_key(use_case, "shadow_deployment")
    canary_key = _uc_key(use_case, "canary_deployment")
    production_key = _uc_key(use_case, "production_deployment")
    history_key = _uc_key(use_case, "release_history")

    @dg.asset(
        key=approvals_key, group_name=RELEASE_GROUP, owners=["team:llm"], kinds={"python"}, tags=tags,
        description=f"Approvals of '{use_case}' releases: who, role, when, note, signed by the approver's credential, "
        "in the append-only, hash-chained ledger AGENIX_HOME/audit/approvals.jsonl. Launch approve_release_job from "
        "the Launchpad with a token from `agenix approve ... --token`, or approve with `agenix approve`.",
    )
    def release_approvals(context: dg.AssetExecutionContext, config: ApprovalRequest, agenix: AgenixResource):
        from ..core import approvals as ap

        home, config_dir = agenix.paths.home, _config_dir(agenix)
        policy = ap.load_approval_policy(config_dir)
        recorded = None
        if config.token.strip():
            try:
                signed = ap.decode_token(config.token.strip())
                if signed.get("use_case") != use_case:
                    raise ap.ApprovalError(f"the token is for use case {signed.get('use_case')!r}, this is {use_case!r}")
                expected = {k: v for k, v in {"release": config.release, "role": config.role, "by": config.by,
                                              "note": config.note}.items() if v}
                recorded = ap.record_approval(home, signed, policy, expected=expected, run_id=context.run_id)
            except ap.ApprovalError as exc:
                raise dg.Failure(description=f"approval refused: {exc}") from None
            context.log.info(f"recorded approval seq {recorded['seq']}: {recorded['role']} by {recorded['by']} "
                             f"for {recorded['release']}")
        elif any((config.release, config.role, config.by, config.note)):
            raise dg.Failure(description="an approval needs its token: run `agenix approve RELEASE --role ROLE --by "
                             "NAME --note TEXT --token` and paste what it prints into `token`")
        release = config.release or (recorded or {}).get("release") or _newest_evaluated(home, use_case)
        status = ap.approvals_for(home, release, policy) if release else None
        valid = status.valid if status else []
        rows = [{"seq": a["seq"], "role": a["role"], "by": a["by"], "signed_at": a["signed_at"],
                 "channel": a["channel"], "note": a["note"]} for a in valid]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(ap.approvals_ledger(home).head()[:16]),
            metadata={
                "release": release or "(none evaluated yet)",
                "approvals": len(valid),
                "invalid_approvals": len(status.invalid) if status else 0,
                "recorded_now": dg.MetadataValue.json(recorded or {}),
                "approval_table": dg.MetadataValue.md(markdown_table(rows) if rows else "_no approvals_"),
                "ledger_head": ap.approvals_ledger(home).head(),
            },
        )

    approval_checks = [
        dg.AssetCheckSpec(dep.EVALUATION_PASSED, asset=approved_key, blocking=True,
                          description="The release's latest evaluation passed charter_thresholds and no_regression."),
        dg.AssetCheckSpec(dep.REQUIRED_APPROVALS, asset=approved_key, blocking=True,
                          description="Every role the release's risk class requires (config/governance/"
                          "approval_policy.yaml) has a valid, signed approval of this exact release."),
        dg.AssetCheckSpec(dep.DPIA_RECORDED, asset=approved_key, blocking=True,
                          description="A release whose risk class needs a DPIA names one in its charter."),
        dg.AssetCheckSpec(dep.SOURCES_PRIVACY_REVIEWED, asset=approved_key, blocking=True,
                          description="Every source the use case reads (new ones named) has an approved privacy "
                          "review on record."),
    ]

    @dg.asset(
        key=approved_key, deps=[report_key, approvals_key], group_name=RELEASE_GROUP, owners=["team:llm"],
        kinds={"duckdb"}, pool=DUCKDB_POOL, tags=tags, check_specs=approval_checks,
        description=f"The approved release of '{use_case}': the newest evaluated candidate once its evaluation "
        "passed, its risk class's approvals are present, its DPIA is named when needed and its sources are "
        "privacy-reviewed. Published (bundle AGENIX_HOME/releases/<use case>/<release>.json) only when all four "
        "checks passed.",
    )
    def approved_release(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        from ..core import approvals as ap
        from ..core import governance as gov
        from ..core.config import load_project_config

        home, config_dir = agenix.paths.home, _config_dir(agenix)
        asset = approved_key.to_user_string()
        project = load_project_config(config_dir)
        charter = next(c for c in project.use_cases if c.id == use_case)
        with warehouse.connect() as con:
            try:
                evals = gates.require_passed(con, report_key.to_user_string(), asset,
                                             ["charter_thresholds", "no_regression"])
                refusal = None
            except gates.GateRefused as refused:
                evals, refusal = refused.failed, str(refused)
        release = next((v.evidence.get("candidate_id") for v in evals if v.evidence.get("candidate_id")), None)
        if release is None:
            raise dg.Failure(description=refusal or f"{report_key.to_user_string()}'s verdicts name no candidate "
                             "(evaluated before this version): materialize it again")
        report = _latest_report(home, use_case, release)
        release_hash = report.get("candidate_hash", "")
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

        def gate(check, passed, description, evidence):
            return gates.GateResult(asset, check, passed, description,
                                    {"release": release, "release_hash": release_hash, **evidence},
                                    context.run_id, now)

        results = [gate(dep.EVALUATION_PASSED, refusal is None,
                        f"evaluation of {release} passed" if refusal is None else refusal,
                        {"report": report["report_path"], "accuracy": report["candidate"]["summary"].get("accuracy"),
                         "verdicts": ", ".join(f"{v.check}={'passed' if v.passed else 'failed'}" for v in evals)})]
        policy = ap.load_approval_policy(config_dir)
        risk, entry_risks = _release_risk(config_dir, use_case, charter.risk_class, report)
        status = ap.approvals_for(home, release, policy)
        valid = [a for a in status.valid if a.get("release_hash") == release_hash]
        missing = ap.missing_roles(policy, risk, valid)
        results.append(gate(dep.REQUIRED_APPROVALS, not missing, ap.approval_summary(policy, risk, valid),
                            {"risk_class": risk, "charter_risk_class": charter.risk_class,
                             "entry_risk_ratings": entry_risks, "required_roles": ap.required_roles(policy, risk),
                             "missing_roles": missing,
                             "approvals": [{"seq": a["seq"], "hash": a["hash"], "role": a["role"], "by": a["by"],
                                            "signed_at": a["signed_at"]} for a in valid],
                             "invalid_approvals": [{"seq": a.get("seq"), "problems": a.get("problems")}
                                                   for a in status.invalid]}))
        needs_dpia = bool(getattr(policy.risk_classes, risk).dpia_required)
        has_dpia = bool((charter.dpia_reference or "").strip())
        results.append(gate(dep.DPIA_RECORDED, has_dpia or not needs_dpia,
                            (f"DPIA {charter.dpia_reference} named in the charter" if has_dpia else "no DPIA named")
                            + (f" ({risk} risk requires one)" if needs_dpia else f" (not required for {risk} risk)"),
                            {"dpia_required": needs_dpia, "dpia_reference": charter.dpia_reference or ""}))
        previous = dep.approved_releases(home, use_case)
        known = set(previous[-1].get("sources", [])) if previous else set()
        reviews = {s.name: gov.privacy_review_recorded(s, project) for s in project.sources if s.name in charter.sources}
        unreviewed = [n for n in charter.sources if n not in reviews or not reviews[n].passed]
        new = [n for n in charter.sources if previous and n not in known]
        results.append(gate(dep.SOURCES_PRIVACY_REVIEWED, not unreviewed,
                            (f"{len(charter.sources)} source(s) privacy-reviewed" if not unreviewed else
                             "no approved privacy review for: " + "; ".join(
                                 f"{n} ({reviews[n].message if n in reviews else 'not a configured source'})"
                                 for n in unreviewed)) + (f"; new since the last approved release: {', '.join(new)}"
                                                          if new else ""),
                            {"sources": list(charter.sources), "new_sources": new, "unreviewed": unreviewed}))

        bundle = {
            "use_case": use_case, "release": release, "release_hash": release_hash, "approved_at": now,
            "run_id": context.run_id, "risk_class": risk, "parts": report.get("parts") or {},
            "sources": list(charter.sources), "eval_report": report["report_path"],
            "gates": [{"check": r.check, "passed": r.passed, "description": r.description} for r in results],
            "approvals": [{"seq": a["seq"], "hash": a["hash"], "role": a["role"], "by": a["by"]} for a in valid],
        }
        with warehouse.connect() as con:
            published = gates.publish_if_passed(con, results, context.run_id,
                                                publish=lambda _con: dep.write_bundle(home, bundle))
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(f"{release}-{'approved' if published else 'blocked'}-{len(valid)}"),
            metadata={"release": release, "release_hash": release_hash, "risk_class": risk, "published": published,
                      "approvals": len(valid), "missing_roles": ", ".join(missing) or "(none)",
                      "missing_role_count": len(missing),
                      "failed_gates": ", ".join(r.check for r in results if not r.passed) or "(none)",
                      "eval_report": dg.MetadataValue.path(report["report_path"])},
        )
        yield from _check_results(results)

    @dg.asset(
        key=staging_key, deps=[approved_key], group_name=DEPLOYMENT_GROUP, owners=["team:platform"],
        kinds={"yaml"}, pool=DUCKDB_POOL, tags=tags,
        check_specs=[dg.AssetCheckSpec(STAGING_SMOKE_TEST, asset=staging_key, blocking=True,
                                       description="A gateway serving staging answers the smoke questions from the "
                                       "release over HTTP.")],
        description=f"'{use_case}' in staging: the approved release written to the staging manifest "
        "(AGENIX_HOME/deployments/staging.yaml) and smoke-tested through a real gateway over HTTP.",
    )
    def staging_deployment(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource,
                           deployer: LocalDeployer, model_servers: ModelServerResource):
        from serving.config import DeploymentManifest, GatewayConfig, Release, UseCaseDeployment

        home, config_dir = agenix.paths.home, _config_dir(agenix)
        _, release, bundle = _upstream_release(warehouse, approved_key, staging_key, dep.APPROVAL_GATES, home,
                                               use_case)
        spec = dep.release_spec(bundle)
        manifest, _ = dep.load_manifest(config_dir, home, dep.STAGING)
        manifest = DeploymentManifest(environment=dep.STAGING, use_cases={
            **manifest.use_cases, use_case: UseCaseDeployment(release=Release.model_validate(spec))})
        where = deployer.apply(home, manifest)
        questions = _smoke_questions(config_dir, home, use_case)
        gw = GatewayConfig.load(config_dir)
        with local_model_servers(gw.registry, context.log) if model_servers.autostart else contextlib.nullcontext():
            smoke = deployer.smoke_test(home=home, config_dir=config_dir, environment=dep.STAGING, use_case=use_case,
                                        release=release, questions=questions, log=context.log)
        result = _gate(context, warehouse, staging_key, STAGING_SMOKE_TEST, smoke["passed"], smoke["reason"],
                       {"release": release, "release_hash": bundle["release_hash"], "manifest": str(where),
                        "questions": len(smoke["results"]), "gateway_log": smoke["log"]})
        if smoke["passed"]:
            dep.record_event(home, environment=dep.STAGING, use_case=use_case, stage="staging", release=release,
                             release_hash=bundle["release_hash"], actor=f"run:{context.run_id}",
                             reason=smoke["reason"], spec=spec, run_id=context.run_id)
        lat = [r["latency_ms"] for r in smoke["results"]]
        yield dg.MaterializeResult(metadata={
            "release": release, "manifest": dg.MetadataValue.path(str(where)), "smoke_passed": smoke["passed"],
            "smoke_questions": len(smoke["results"]),
            "smoke_failed": sum(1 for r in smoke["results"] if r["problem"]),
            "smoke_latency_max_ms": max(lat) if lat else 0.0,
            "smoke": dg.MetadataValue.md(markdown_table([{k: r[k] for k in ("question", "status", "latency_ms",
                                                                              "release", "problem")}
                                                          for r in smoke["results"]]) or "_none_"),
        })
        yield from _check_results([result])

    @dg.asset(
        key=shadow_key, deps=[staging_key], group_name=DEPLOYMENT_GROUP, owners=["team:platform"], kinds={"yaml"},
        pool=DUCKDB_POOL, tags=tags,
        check_specs=[dg.AssetCheckSpec(SHADOW_MANIFEST_ACCEPTED, asset=shadow_key, blocking=True,
                                       description="Production's manifest mirrors traffic to the release, and its "
                                       "pins match config/ (the gateway would accept it).")],
        description=f"'{use_case}' in shadow: production's manifest mirrors requests to the release that passed "
        "staging (answers logged with shadow: true, never returned); production keeps serving its release.",
    )
    def shadow_deployment(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource,
                          deployer: LocalDeployer):
        from serving.config import Release, ShadowRelease, UseCaseDeployment

        from ..core.registry import pin_problems
        from ..core.rollout import load_rollout_policy

        home, config_dir = agenix.paths.home, _config_dir(agenix)
        _, release, bundle = _upstream_release(warehouse, staging_key, shadow_key, [STAGING_SMOKE_TEST], home,
                                               use_case)
        spec = dep.release_spec(bundle)
        manifest, _ = dep.load_manifest(config_dir, home)
        current = manifest.use_cases.get(use_case)
        if current is None:
            raise dg.Failure(description=f"{use_case} is not deployed in production's manifest: nothing to shadow")
        if current.release.name == release:
            raise dg.Failure(description=f"{release} already serves production")
        rel = Release.model_validate(spec)
        problems = pin_problems(config_dir, home / "index", use_case, rel)
        policy = load_rollout_policy(config_dir, use_case)
        if not problems:
            manifest.use_cases[use_case] = UseCaseDeployment(
                release=current.release, shadow=ShadowRelease(release=rel, sample_rate=policy.shadow_sample_rate))
            deployer.apply(home, manifest)
            dep.record_event(home, environment=manifest.environment, use_case=use_case, stage="shadow",
                             release=release, release_hash=bundle["release_hash"], actor=f"run:{context.run_id}",
                             reason="passed staging; mirroring production traffic", spec=spec,
                             previous_release=current.release.name, run_id=context.run_id)
        result = _gate(context, warehouse, shadow_key, SHADOW_MANIFEST_ACCEPTED, not problems,
                       "production mirrors traffic to " + release if not problems
                       else "pins no longer match config/: " + "; ".join(problems),
                       {"release": release, "release_hash": bundle["release_hash"],
                        "production_release": current.release.name})
        yield dg.MaterializeResult(metadata={"release": release, "production_release": current.release.name,
                                             "shadow_started": not problems})
        yield from _check_results([result])

    @dg.asset(
        key=canary_key, deps=[shadow_key], group_name=DEPLOYMENT_GROUP, owners=["team:platform"], kinds={"yaml"},
        pool=DUCKDB_POOL, tags=tags,
        check_specs=[dg.AssetCheckSpec(CANARY_HEALTHY, asset=canary_key, blocking=True,
                                       description="The shadow or canary is no worse than production (error rate, "
                                       "latency, feedback, groundedness) by config/rollout.yaml; failing rolls it "
                                       "back.")],
        description=f"'{use_case}' canary: each materialization judges the shadow or the current canary step from "
        "the request logs and moves one step (shadow -> 5% -> 25% -> 50% -> 100% of keys, sticky per key), holds, or "
        "rolls the canary back. canary_health_sensor requests it when the judgement changes.",
    )
    def canary_deployment(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource,
                          deployer: LocalDeployer):
        from serving.config import CanaryRelease, Release, UseCaseDeployment

        from ..core.rollout import load_rollout_policy

        home, config_dir = agenix.paths.home, _config_dir(agenix)
        _, release, bundle = _upstream_release(warehouse, shadow_key, canary_key, [SHADOW_MANIFEST_ACCEPTED], home,
                                               use_case)
        state = dep.assess_rollout(home, config_dir, use_case)
        if state["release"] != release:
            raise dg.Failure(description=f"production's manifest has no shadow or canary of {release} (stage "
                             f"{state['stage']}, release {state['release']}): it was rolled back or promoted")
        if state["ready_for_production"]:
            raise dg.Failure(description=f"{release} already serves 100% of keys as the canary: "
                             f"{production_key.to_user_string()} makes it production's release")
        decision, policy = state["decision"], load_rollout_policy(config_dir, use_case)
        manifest, _ = dep.load_manifest(config_dir, home)
        current = manifest.use_cases[use_case]
        action, weight = decision.action, state["weight"]
        reason = "; ".join(decision.reasons) or decision.summary()
        spec = dep.release_spec(bundle)
        if action == "promote":
            weight = policy.canary_steps[0] if state["stage"] == "shadow" else decision.next_weight
            manifest.use_cases[use_case] = UseCaseDeployment(
                release=current.release, canary=CanaryRelease(release=Release.model_validate(spec), weight=weight),
                shadow=None)
            deployer.apply(home, manifest)
            dep.record_event(home, environment=manifest.environment, use_case=use_case, stage="canary",
                             release=release, release_hash=bundle["release_hash"], weight=weight,
                             actor=_actor(context), reason=reason, spec=spec,
                             previous_release=current.release.name, run_id=context.run_id)
        elif action in ("rollback", "reject"):
            manifest.use_cases[use_case] = UseCaseDeployment(release=current.release)
            deployer.apply(home, manifest)
            dep.record_event(home, environment=manifest.environment, use_case=use_case,
                             stage="canary_stopped" if state["stage"] == "canary" else "shadow_stopped",
                             release=release, release_hash=bundle["release_hash"], weight=0.0,
                             actor=_actor(context), reason=reason, previous_release=current.release.name,
                             run_id=context.run_id)
            weight = 0.0
        healthy = action not in ("rollback", "reject")
        result = _gate(
            context, warehouse, canary_key, CANARY_HEALTHY, healthy,
            f"{state['stage']} of {release}: {action}" + (f" -> {weight:.0%} of keys" if action == "promote" else "")
            + f": {reason}",
            {"release": release, "release_hash": bundle["release_hash"], "stage": state["stage"], "action": action,
             "weight": weight, "baseline": state["baseline"]})
        metadata: dict[str, Any] = {"release": release, "stage": state["stage"], "decision": action,
                                    "canary_weight": float(weight), "reason": reason[:2000]}
        for arm in ("canary", "baseline"):
            stats = getattr(decision, arm, None)
            if stats is not None:
                metadata.update(stats.as_metadata(f"{arm}_"))
        yield dg.MaterializeResult(metadata=metadata)
        yield from _check_results([result])

    @dg.asset(
        key=production_key, deps=[canary_key], group_name=DEPLOYMENT_GROUP, owners=["team:platform"],
        kinds={"yaml"}, pool=DUCKDB_POOL, tags=tags,
        check_specs=[dg.AssetCheckSpec(PRODUCTION_SERVES_RELEASE, asset=production_key, blocking=True,
                                       description="Production's manifest serves the release with pins that match "
                                       "config/.")],
        description=f"'{use_case}' in production: the release whose canary reached 100% of keys healthy becomes "
        "production's release (canary and shadow cleared). `agenix rollback` / rollback_job put the previous one back.",
    )
    def production_deployment(context: dg.AssetExecutionContext, agenix: AgenixResource,
                              warehouse: WarehouseResource, deployer: LocalDeployer):
        from serving.config import Release, UseCaseDeployment

        from ..core.registry import pin_problems

        home, config_dir = agenix.paths.home, _config_dir(agenix)
        verdicts, release, bundle = _upstream_release(warehouse, canary_key, production_key, [CANARY_HEALTHY], home,
                                                      use_case)
        stage = verdicts[0].evidence
        if not (stage.get("stage") == "canary" and stage.get("action") == "promote"
                and float(stage.get("weight") or 0) >= 1.0):
            raise dg.Failure(description=f"{release} has not reached 100% of keys healthy as a canary (last "
                             f"canary_deployment: {stage.get('stage')} {stage.get('action')} at "
                             f"{float(stage.get('weight') or 0):.0%}): production_deployment waits for it")
        spec = dep.release_spec(bundle)
        manifest, _ = dep.load_manifest(config_dir, home)
        current = manifest.use_cases[use_case]
        if not (current.canary and current.canary.release.name == release):
            raise dg.Failure(description=f"production's manifest has no canary of {release}: it was rolled back")
        rel = Release.model_validate(spec)
        problems = pin_problems(config_dir, home / "index", use_case, rel)
        if not problems:
            manifest.use_cases[use_case] = UseCaseDeployment(release=rel)
            where = deployer.apply(home, manifest)
            dep.record_event(home, environment=manifest.environment, use_case=use_case, stage="production",
                             release=release, release_hash=bundle["release_hash"], weight=1.0, actor=_actor(context),
                             reason="canary healthy at 100% of keys", spec=spec,
                             previous_release=current.release.name,
                             previous_spec=current.release.model_dump(mode="json", exclude_none=True),
                             run_id=context.run_id)
            context.log.info(f"{release} serves production ({where}); previous: {current.release.name}")
        result = _gate(context, warehouse, production_key, PRODUCTION_SERVES_RELEASE, not problems,
                       f"{release} serves production (was {current.release.name})" if not problems
                       else "pins no longer match config/: " + "; ".join(problems),
                       {"release": release, "release_hash": bundle["release_hash"],
                        "previous_release": current.release.name})
        yield dg.MaterializeResult(metadata={"release": release, "previous_release": current.release.name,
                                             "promoted": not problems})
        yield from _check_results([result])

    @dg.asset(
        key=history_key, deps=[production_key], group_name=DEPLOYMENT_GROUP, owners=["team:platform"],
        kinds={"duckdb"}, pool=DUCKDB_POOL, tags=tags,
        description=f"Which release of '{use_case}' was live in which environment (serving, canary, shadow), from "
        "when to when, and who or what moved it, from the deployment ledger (AGENIX_HOME/deployments/events.jsonl).",
    )
    def release_history(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        from ..core.rollout import release_windows

        home = agenix.paths.home
        ledger = dep.events_ledger(home)
        problems = ledger.verify()
        events = dep.events(home, use_case)
        windows = release_windows(events)
        with warehouse.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS releases")
            con.execute("""CREATE TABLE IF NOT EXISTS releases.history (use_case VARCHAR, environment VARCHAR,
                           slot VARCHAR, release VARCHAR, live_from VARCHAR, live_to VARCHAR, moved_in_by VARCHAR,
                           moved_in_reason VARCHAR, moved_out_by VARCHAR, moved_out_reason VARCHAR,
                           max_weight DOUBLE)""")
            con.execute("BEGIN")
            con.execute("DELETE FROM releases.history WHERE use_case = ?", [use_case])
            if windows:
                con.executemany("INSERT INTO releases.history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [(use_case, w["environment"], w["slot"], w["release"], w["from"], w["to"],
                                  w["moved_in_by"], w["moved_in_reason"], w["moved_out_by"], w["moved_out_reason"],
                                  w.get("max_weight")) for w in windows])
            con.execute("COMMIT")
        live = [w for w in windows if w["to"] is None and w["slot"] == "serving"]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(ledger.head()[:16]),
            metadata={
                "deployment_events": len(events),
                "rollbacks": sum(e["stage"] == "rollback" for e in events),
                "canary_rollbacks": sum(e["stage"] in ("canary_stopped", "shadow_stopped") for e in events),
                "releases_deployed": len({e["release"] for e in events}),
                "live": ", ".join(f"{w['environment']}: {w['release']}" for w in live) or "(none)",
                "ledger_intact": not problems,
                "ledger_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_"),
                "windows": dg.MetadataValue.md(markdown_table(
                    [{k: w.get(k) for k in ("environment", "slot", "release", "from", "to", "moved_in_by",
                                             "moved_out_by")} for w in windows]) or "_none_"),
            },
        )

    return [release_approvals, approved_release, staging_deployment, shadow_deployment, canary_deployment,
            production_deployment, release_history]


def _actor(context: dg.AssetExecutionContext) -> str:
    tags = context.run.tags if context.run else {}
    sensor = tags.get("dagster/sensor_name")
    return f"sensor:{sensor}" if sensor else f"run:{context.run_id}"


def _bundle(home: Path, use_case: str, release: str) -> dict[str, Any]:
    try:
        return dep.read_bundle(home, use_case, release)
    except dep.DeploymentError as exc:
        raise dg.Failure(description=str(exc)) from None


def _newest_evaluated(home: Path, use_case: str) -> str | None:
    reports = sorted(eval_dir(home, use_case).glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    return reports[-1].parent.name if reports else None


def _smoke_questions(config_dir: Path, home: Path, use_case: str, n: int = 3) -> list[str]:
    """The first answerable questions of the use case's golden suite (the one its evaluation asks)."""
    from ..core.golden import load_golden
    from ..core.paths import AgenixPaths
    from .evaluation import golden_suite_path

    suite = load_golden(golden_suite_path(config_dir, AgenixPaths(home).landing, use_case), use_case)
    return [i.question for i in suite.items if getattr(i, "answerable", True)][:n]
