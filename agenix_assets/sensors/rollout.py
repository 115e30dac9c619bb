"""Rollout sensors: move an approved release along staging -> shadow -> canary steps -> production, or roll it back.

Both read files only (approved-release bundles, the deployment ledger, live manifests, the gateway's request logs),
never the warehouse, so they tick while runs hold it. They only *request* runs: every deployment asset re-checks
the gate before it (``gates.require_passed``) and ``canary_deployment`` re-judges the logs itself, so a sensor can
never move a release past a failed gate.

- ``rollout_sensor``: a deployment ledger newer than ``release_history`` -> the history and the evidence packs;
  a passed evaluation not yet approved -> ``approved_release`` (again after each new
  approval: the failing gate names the roles still missing); the newest approved release not yet deployed -> ``staging_deployment``; a release that
  passed staging -> ``shadow_deployment``. Run keys are release + stage, so each step is requested once.
- ``canary_health_sensor``: while production's manifest has a shadow or a canary, judge it from the request logs
  (core.rollout, config/rollout.yaml). Promote -> ``canary_deployment`` (next step) or, at 100 %,
  ``production_deployment``; rollback -> ``canary_deployment`` (which removes it). The decision and its reason are
  in the run's tags (``agenix/decision``, ``agenix/reason``); a hold is a skip reason.
"""


import dagster as dg

from ..assets.rag import rag_key
from ..assets.release import config_dir_of
from ..core import deployment as dep
from .release import last_data_version
from ..resources.platform import AgenixResource

ROLLOUT_SENSOR = "rollout_sensor"
CANARY_HEALTH_SENSOR = "canary_health_sensor"
ROLLOUT_JOB = "release_rollout_job"


def newest_passed_evaluation(home, config_dir, use_case: str) -> str | None:
    """The candidate of the newest evaluation report that passed both gates (the files the eval_report asset
    writes; the approved_release gate itself re-checks the verdict in the warehouse), unless it is what production
    already serves (every part's hash the same): there is nothing to approve then."""
    import json

    from ..assets.evaluation import eval_dir
    from ..core import registry as reg

    newest = None
    for path in eval_dir(home, use_case).glob("*/report.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if report.get("passed") and report.get("parts") and (newest is None or report["evaluated_at"] > newest[0]):
            newest = (report["evaluated_at"], report)
    if newest is None:
        return None
    report = newest[1]
    try:
        registries = reg.load_registries(config_dir, use_case)
        production = reg.production_parts(config_dir, home / "index", use_case, registries)
    except Exception:  # an unreadable manifest or registry: judge the candidate, its gate will say what is wrong
        production = None
    if production is not None:
        theirs = production[1].parts()
        if all(report["parts"][p]["hash"] == theirs[p][1] for p in theirs if p in report["parts"]):
            return None
    return report["candidate_id"]


def _request(use_case: str, step: str, run_key: str, tags: dict[str, str]) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, asset_selection=[rag_key(use_case, step)],
                         tags={"agenix/use_case": use_case, **tags})


def build_rollout_sensors(job, use_cases: list[str]) -> list[dg.SensorDefinition]:
    @dg.sensor(name=ROLLOUT_SENSOR, job=job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Deploys the newest approved release to staging, then (once its smoke test passed) to "
               "shadow in production.")
    def rollout_sensor(context: dg.SensorEvaluationContext, agenix: AgenixResource):
        from ..core.approvals import approvals_ledger

        home, config_dir = agenix.paths.home, config_dir_of(agenix)
        requests, notes = [], []
        head = approvals_ledger(home).head()[:16]
        for uc in use_cases:
            # A passed evaluation of a release that is not approved yet: judge its approval gate (again whenever an
            # approval was recorded), so the UI shows which roles are still missing.
            evaluated = newest_passed_evaluation(home, config_dir, uc)
            if evaluated and not dep.bundle_path(home, uc, evaluated).is_file():
                requests.append(_request(uc, "approved_release", f"{evaluated}:approval:{head}",
                                         {"agenix/release": evaluated, "agenix/decision": "judge approvals"}))
            # The deployment ledger moved (a step, a sensor's promotion or rollback, `agenix rollback`): refresh the
            # release history and the evidence packs (their data version is the ledger head they read).
            ledger_head = dep.events_ledger(home).head()[:16]
            if dep.events(home, uc) and last_data_version(context.instance, rag_key(uc, "release_history")) \
                    != ledger_head:
                requests.append(dg.RunRequest(
                    run_key=f"{uc}:history:{ledger_head}",
                    asset_selection=[rag_key(uc, "release_history"), rag_key(uc, "audit_evidence_pack")],
                    tags={"agenix/use_case": uc, "agenix/decision": "refresh release history"}))
            approved = dep.approved_releases(home, uc)
            if not approved:
                notes.append(f"{uc}: no approved release")
                continue
            release = approved[-1]["release"]
            stages = {e["stage"] for e in dep.events(home, uc) if e["release"] == release}
            if not stages:
                requests.append(_request(uc, "staging_deployment", f"{release}:staging",
                                         {"agenix/release": release, "agenix/decision": "deploy to staging"}))
            elif stages == {"staging"}:
                requests.append(_request(uc, "shadow_deployment", f"{release}:shadow",
                                         {"agenix/release": release, "agenix/decision": "start shadow"}))
            else:
                notes.append(f"{uc}: {release} is past staging ({', '.join(sorted(stages))})")
        return requests or dg.SkipReason("; ".join(notes) or "no use case")

    @dg.sensor(name=CANARY_HEALTH_SENSOR, job=job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Compares the shadow or canary with production from the request logs and promotes it a "
               "step, promotes it to production, or rolls it back (config/rollout.yaml).")
    def canary_health_sensor(context: dg.SensorEvaluationContext, agenix: AgenixResource):
        home, config_dir = agenix.paths.home, config_dir_of(agenix)
        requests, notes = [], []
        for uc in use_cases:
            try:
                state = dep.assess_rollout(home, config_dir, uc)
            except Exception as exc:  # a broken manifest or policy: say so, keep ticking for the other use cases
                notes.append(f"{uc}: cannot judge the rollout: {exc}")
                continue
            decision = state["decision"]
            if state["ready_for_production"]:
                release = state["release"]
                requests.append(_request(uc, "production_deployment", f"{release}:production",
                                         {"agenix/release": release, "agenix/decision": "promote to production",
                                          "agenix/reason": "canary healthy at every step, serving 100% of keys"}))
                continue
            if decision is None:
                notes.append(f"{uc}: no shadow or canary in production")
                continue
            release, weight, action = state["release"], state["weight"], decision.action
            tags = {"agenix/release": release, "agenix/decision": action, "agenix/reason": decision.summary()[:200]}
            if action == "wait":
                notes.append(f"{uc}: {state['stage']} of {release} at {weight:.0%}: {decision.summary()}")
                continue
            step = f"{state['stage']}:{weight}"
            requests.append(_request(uc, "canary_deployment", f"{release}:{step}:{action}", tags))
            context.log.info(f"{uc}: {state['stage']} of {release} at {weight:.0%}: {action}: {decision.summary()}")
        return requests or dg.SkipReason("; ".join(notes) or "no use case")

    return [rollout_sensor, canary_health_sensor]


class RollbackRequest(dg.Config):
    """Launchpad config of rollback_job: which use case, who asks, and why (all recorded in the ledger)."""

    use_case: str
    by: str
    reason: str


@dg.op(description="Put production's previous release back in force (canary and shadow cleared).")
def rollback_release(context: dg.OpExecutionContext, config: RollbackRequest, agenix: AgenixResource) -> None:
    try:
        event = dep.rollback(agenix.paths.home, config_dir_of(agenix), config.use_case,
                             actor=f"user:{config.by} (rollback_job)", reason=config.reason, run_id=context.run_id)
    except dep.DeploymentError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.log.info(f"{config.use_case}: production serves {event['release']} again (was {event['previous_release']})")


@dg.job(description="Roll a use case's production back to its previous release (`agenix rollback USE_CASE` does "
        "the same without Dagster).", tags={"agenix/action": "rollback"})
def rollback_job():
    rollback_release()
