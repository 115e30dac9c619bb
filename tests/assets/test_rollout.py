"""Approvals, staged rollout, rollback and the evidence pack on the small sample company, with the real model
server (Gemma 3 270M on llama.cpp), real gateway processes over HTTP, the real sensors and a real Dagster
instance: a prompt change goes candidate -> eval -> blocked without approvals (naming the missing role) -> signed
approvals (CLI and Launchpad token) -> staging -> shadow -> canary steps -> production, the gateway serving it,
then `agenix rollback`; a candidate that fails its thresholds never reaches staging; a canary whose model calls
fail (injected by a fault proxy in front of the model server) is rolled back by the canary-health sensor; an
altered approval record is detected; the evidence pack lists every gate result."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import httpx
import yaml
from typer.testing import CliRunner

from agenix_assets.cli import app as cli
from agenix_assets.core import approvals as ap
from agenix_assets.core import deployment as dep
from agenix_assets.definitions import APPROVE_RELEASE_JOB, RELEASE_CANDIDATE_JOB
from agenix_assets.sensors.rollout import CANARY_HEALTH_SENSOR, ROLLOUT_SENSOR
from serving.auth import KeyStore, keys_file
from serving.manifest import pick_release
from serving.model_server import free_port
from tests.assets.test_evaluation import add_prompt_version, llm, set_candidate  # noqa: F401 (llm: fixture)
from tests.platform import Platform, asset_metadata, check_evaluations

UC, USE_CASE = "support_assistant", "support-assistant"
APPROVED = dg.AssetKey([UC, "approved_release"])
STAGING = dg.AssetKey([UC, "staging_deployment"])
SHADOW = dg.AssetKey([UC, "shadow_deployment"])
CANARY = dg.AssetKey([UC, "canary_deployment"])
PRODUCTION = dg.AssetKey([UC, "production_deployment"])
HISTORY = dg.AssetKey([UC, "release_history"])
PACK = dg.AssetKey([UC, "audit_evidence_pack"])
SHORT = "What is the warranty period of the {product}?"  # routed to the extractive tier
# More than simple_max_tokens words: routed to Gemma (the tier a fault in the model server hits).
LONG = ("We installed the {product} last quarter and since last week it has been acting up during normal "
        "operation, so could you please explain in some detail what you know about its warranty period for us")


def small_suite(platform: Platform, n: int = 3) -> list[str]:
    """Cut the sample company's suite to ``n`` short answerable questions (the extractive tier: seconds)."""
    path = platform.landing / "_manifest" / "golden" / "support-assistant.yaml"
    suite = yaml.safe_load(path.read_text())
    keep = [i for i in suite["items"] if i.get("answerable", True) and i.get("phrasing", "generator") == "generator"
            and len(i["question"].split()) <= 14][:n]
    suite["items"], suite["conversations"] = keep, []
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return [i["question"] for i in keep]


def fast_rollout(config: Path) -> None:
    """Rollout thresholds for a test's traffic (two canary steps, a few requests each, no minimum dwell time) and a
    latency tolerance for its three-question evaluation."""
    path = config / "rollout.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["use_cases"][USE_CASE] = {"canary_steps": [0.5, 1.0], "min_requests_per_step": 3, "min_step_seconds": 0,
                                     "shadow_min_requests": 3, "severe_min_requests": 3}
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    # A three-question evaluation's p95 is one slow answer: on a busy 2-core machine the candidate's can be 40%
    # above production's by chance. These tests are about the gates after the evaluation, not its latency.
    evaluation = config / "evaluation.yaml"
    settings = yaml.safe_load(evaluation.read_text())
    settings["use_cases"][USE_CASE]["tolerance"]["latency_p95_ms"] = 10.0
    evaluation.write_text(yaml.safe_dump(settings, sort_keys=False))


def product(platform: Platform) -> str:
    """A product the sample company's warranty facts name (its name as the manuals write it)."""
    facts = [json.loads(line) for line in (platform.landing / "_manifest" / "facts.jsonl").read_text().splitlines()]
    for f in facts:
        q = f.get("question", "")
        if q.startswith("What is the warranty period of the "):
            return q.removeprefix("What is the warranty period of the ").rstrip("?")
    raise AssertionError("no warranty fact in the sample company")


def failures(result: dg.ExecuteInProcessResult) -> str:
    return "; ".join(e.event_specific_data.error.message[:800] for e in result.all_events if e.is_step_failure)


def materialize(platform: Platform, *keys: dg.AssetKey, run_config: dict | None = None,
                tags: dict | None = None) -> dg.ExecuteInProcessResult:
    defs = platform.defs()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(keys))
    return job.execute_in_process(instance=platform.instance, raise_on_error=False, run_config=run_config or {},
                                  tags=tags or {})


def tick(platform: Platform, sensor: str) -> list[dg.RunRequest]:
    defs = platform.defs()
    repo = defs.get_repository_def()
    context = dg.build_sensor_context(instance=platform.instance, repository_def=repo,
                                      resources={"agenix": repo.get_top_level_resources()["agenix"]})
    result = repo.get_sensor_def(sensor).evaluate_tick(context)
    return list(result.run_requests or [])


def run_requested(platform: Platform, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return materialize(platform, *request.asset_selection, tags=dict(request.tags))


def only_request(platform: Platform, sensor: str) -> dg.RunRequest:
    """The one step a sensor asks for (besides the release-history refresh rollout_sensor asks for whenever the
    deployment ledger moved)."""
    requests = [r for r in tick(platform, sensor) if HISTORY not in r.asset_selection]
    assert len(requests) == 1, [(r.run_key, r.asset_selection) for r in requests]
    return requests[0]


def env(platform: Platform) -> dict[str, str]:
    return {"AGENIX_HOME": str(platform.home), "AGENIX_CONFIG_DIR": str(platform.config_dir)}


@contextlib.contextmanager
def gateway(platform: Platform):
    """The production gateway of the platform (`agenix gateway`), over HTTP on a free port."""
    port = free_port()
    log = platform.home / "logs" / "test-gateway.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agenix_assets.cli", "gateway", "--port", str(port)],
                                env={**os.environ, **env(platform)}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("gateway not ready: " + log.read_text()[-3000:])
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def make_keys(platform: Platform, base: str, n: int) -> list[tuple[str, str]]:
    """``n`` API keys, once the gateway knows them (it re-reads the key file about once a second, after any
    manifest reload and warm-up in progress)."""
    store = KeyStore(keys_file(platform.home))
    keys = [store.create(f"team{i}", use_cases=[USE_CASE]) for i in range(n)]
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {keys[-1][0]}"}).status_code == 401:
        assert time.monotonic() < deadline, "the gateway never loaded the new keys"
        time.sleep(0.25)
    return [(secret, record.key_id) for secret, record in keys]


def ask(base: str, key: str, question: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                      json={"model": USE_CASE, "messages": [{"role": "user", "content": question}]})


def wait_served(base: str, key: str, question: str, release: str, timeout: float = 60) -> float:
    """Seconds until the gateway answers ``key`` from ``release``: it re-reads the manifest about once a second,
    then warms the release up (slower on a loaded machine)."""
    started = time.monotonic()
    while ask(base, key, question).json().get("agenix", {}).get("release") != release:
        assert time.monotonic() - started < timeout, f"the gateway does not serve {release} to key {key[:12]}..."
        time.sleep(0.2)
    return time.monotonic() - started


def approvers(platform: Platform) -> dict[str, str]:
    policy = ap.load_approval_policy(platform.config_dir)
    _, owner = ap.add_approver(platform.home, "Lena Brandt", "product_owner", "test", policy)
    _, lead = ap.add_approver(platform.home, "Max Vogel", "llm_lead", "test", policy)
    return {"product_owner": owner, "llm_lead": lead}


def new_candidate(platform: Platform, version: str = "v2", passes: bool = True) -> str:
    """A new prompt version (a copy of the latest with its own no-answer text: a real change, not one that only
    renames what production serves, which the rollout sensor would leave alone) becomes the candidate."""
    add_prompt_version(platform.config_dir, version)
    path = platform.config_dir / "prompts" / "support-assistant.yaml"
    book = yaml.safe_load(path.read_text())
    book["versions"][version]["no_answer"] = f"I don't know (prompt {version})."
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    set_candidate(platform.config_dir, prompt_version=version)
    result = platform.run_job(RELEASE_CANDIDATE_JOB)
    assert result.success == passes, failures(result)
    return asset_metadata(result, dg.AssetKey([UC, "release_candidate"]))["candidate_id"]


def approve_and_stage(platform: Platform, release: str) -> None:
    """Approvals by the two roles a medium-risk release needs (CLI and Launchpad), staging, shadow."""
    creds = approvers(platform)
    cli_env = env(platform)
    out = CliRunner().invoke(cli, ["approve", release, "--role", "product_owner", "--by", "Lena Brandt", "--note",
                                   "KPIs hold", "--credential", creds["product_owner"]], env=cli_env)
    assert out.exit_code == 0, out.output
    token = CliRunner().invoke(cli, ["approve", release, "--role", "llm_lead", "--by", "Max Vogel", "--note",
                                     "eval is fine", "--credential", creds["llm_lead"], "--token"], env=cli_env)
    assert token.exit_code == 0 and token.output.startswith("agxa_"), token.output
    launchpad = {"ops": {f"{UC}__release_approvals": {"config": {
        "release": release, "role": "llm_lead", "by": "Max Vogel", "note": "eval is fine",
        "token": token.output.strip()}}}}
    approved = platform.defs().resolve_job_def(APPROVE_RELEASE_JOB).execute_in_process(
        instance=platform.instance, raise_on_error=False, run_config=launchpad)
    assert approved.success, failures(approved)
    assert dep.bundle_path(platform.home, USE_CASE, release).is_file()

    staging = run_requested(platform, only_request(platform, ROLLOUT_SENSOR))
    assert staging.success, failures(staging)
    smoke = check_evaluations(staging)[f"{STAGING.to_user_string()}:staging_smoke_test"]
    assert smoke.passed and smoke.description.startswith("3/3 smoke questions answered by " + release)
    staged = yaml.safe_load(dep.deployed_manifest_path(platform.home, "staging").read_text())
    assert staged["use_cases"][USE_CASE]["release"]["name"] == release

    shadow = run_requested(platform, only_request(platform, ROLLOUT_SENSOR))
    assert shadow.success, failures(shadow)
    live = yaml.safe_load(dep.deployed_manifest_path(platform.home, "local").read_text())["use_cases"][USE_CASE]
    assert live["release"]["name"] == "support-assistant-r1" and live["shadow"]["release"]["name"] == release
    assert live["shadow"]["release"]["pins"]["release"] == json.loads(
        dep.bundle_path(platform.home, USE_CASE, release).read_text())["release_hash"]


def split_keys(keys: list[tuple[str, str]], canary: str, weight: float) -> tuple[list[str], list[str]]:
    """Which keys the gateway sends to the canary (its own sticky choice) and which to production's release."""
    from serving.config import CanaryRelease, Release, UseCaseDeployment

    deployment = UseCaseDeployment(
        release=Release(name="support-assistant-r1", model="auto", prompt_version="v1"),
        canary=CanaryRelease(release=Release(name=canary, model="auto", prompt_version="v2"), weight=weight))
    arms: tuple[list[str], list[str]] = ([], [])
    for secret, key_id in keys:
        arms[0 if pick_release(USE_CASE, deployment, key_id).canary else 1].append(secret)
    return arms


def test_a_prompt_change_reaches_production_only_through_its_gates_and_rolls_back(platform: Platform, llm):
    small_suite(platform)
    fast_rollout(platform.config_dir)
    product_name = product(platform)
    # Production's gateway runs all along: the new prompt version appears in config/ while it serves.
    with gateway(platform) as base:
        release = new_candidate(platform)

        # Selected alone before anything was approved, a deployment step refuses.
        alone = materialize(platform, STAGING)
        assert not alone.success and "refuses to read support_assistant/approved_release" in failures(alone)

        # The evaluation passed: the rollout sensor asks for the approval gate, which names both missing roles.
        blocked = run_requested(platform, only_request(platform, ROLLOUT_SENSOR))
        gate = check_evaluations(blocked)[f"{APPROVED.to_user_string()}:required_approvals"]
        assert not gate.passed
        assert gate.description.startswith("missing approval by product_owner, llm_lead (medium risk needs")
        assert check_evaluations(blocked)[f"{APPROVED.to_user_string()}:evaluation_passed"].passed
        assert not dep.bundle_path(platform.home, USE_CASE, release).exists()
        assert tick(platform, ROLLOUT_SENSOR)[0].asset_selection == [APPROVED]  # same ledger head: same run key

        approve_and_stage(platform, release)
        keys = make_keys(platform, base, 20)
        for secret, _ in keys:  # mirrored to the shadow, answered by production's release
            r = ask(base, secret, SHORT.format(product=product_name))
            assert r.status_code == 200 and r.json()["agenix"]["release"] == "support-assistant-r1", r.text
        promote = only_request(platform, CANARY_HEALTH_SENSOR)
        assert promote.tags["agenix/decision"] == "promote" and promote.asset_selection == [CANARY]
        step = run_requested(platform, promote)
        assert step.success, failures(step)
        assert asset_metadata(step, CANARY)["canary_weight"] == 0.5

        canary_keys, baseline_keys = split_keys(keys, release, 0.5)
        assert len(canary_keys) >= 3 and len(baseline_keys) >= 3, (len(canary_keys), len(baseline_keys))
        wait_served(base, canary_keys[0], SHORT.format(product=product_name), release)
        for secret in canary_keys + baseline_keys:
            r = ask(base, secret, SHORT.format(product=product_name))
            assert r.status_code == 200
            assert r.json()["agenix"]["canary"] == (secret in canary_keys), r.json()["agenix"]
        step = run_requested(platform, only_request(platform, CANARY_HEALTH_SENSOR))
        assert step.success and asset_metadata(step, CANARY)["canary_weight"] == 1.0, failures(step)
        assert asset_metadata(step, CANARY)["canary_requests"] >= 3

        to_production = only_request(platform, CANARY_HEALTH_SENSOR)
        assert to_production.asset_selection == [PRODUCTION]
        promoted = run_requested(platform, to_production)
        assert promoted.success, failures(promoted)
        wait_served(base, keys[0][0], SHORT.format(product=product_name), release)
        served = ask(base, keys[0][0], SHORT.format(product=product_name)).json()["agenix"]
        assert (served["release"], served["canary"], served["prompt_version"]) == (release, False, "v2")

        # The approved prompt edited in place: the gateway keeps serving what was approved and says why.
        prompts = platform.config_dir / "prompts" / "support-assistant.yaml"
        book = yaml.safe_load(prompts.read_text())
        book["versions"]["v2"]["no_answer"] = "Edited after approval."
        prompts.write_text(yaml.safe_dump(book, sort_keys=False))
        admin, _ = KeyStore(keys_file(platform.home)).create("ops", roles=["admin"])
        deadline = time.monotonic() + 60
        while not (ready := httpx.get(f"{base}/readyz", headers={"Authorization": f"Bearer {admin}"}).json()).get(
                "prompts_error"):
            assert time.monotonic() < deadline, ready
            time.sleep(0.25)
        assert "changes a pinned release in force: prompt_version v2 was" in ready["prompts_error"], ready
        assert ask(base, keys[0][0], SHORT.format(product=product_name)).json()["agenix"]["release"] == release

        # Rollback: one command, production's previous release serves again within seconds.
        out = CliRunner().invoke(cli, ["rollback", USE_CASE, "--by", "On-call", "--reason", "complaints"],
                                 env=env(platform))
        assert out.exit_code == 0 and "serves support-assistant-r1 again" in out.output, out.output
        assert wait_served(base, keys[0][0], SHORT.format(product=product_name), "support-assistant-r1") < 10

    # Which version was live when, and who moved it; the evidence pack holds every gate result. The rollout sensor
    # asks for both once the ledger moved (here: the rollback, made outside Dagster).
    [refresh] = [r for r in tick(platform, ROLLOUT_SENSOR) if HISTORY in r.asset_selection]
    assert set(refresh.asset_selection) == {HISTORY, PACK}
    audit = run_requested(platform, refresh)
    assert audit.success, failures(audit)
    history = asset_metadata(audit, HISTORY)
    assert (history["rollbacks"], history["ledger_intact"]) == (1, True)
    pack = json.loads((platform.home / "audit" / "packs" / f"evidence-{release}.json").read_text())
    gates_rows = platform.query("SELECT count(*) FROM gates.evaluations WHERE asset LIKE 'support_assistant/%'")
    assert len(pack["gate_history"]) == gates_rows[0][0]
    assert {"required_approvals", "staging_smoke_test", "canary_healthy", "production_serves_release",
            "charter_thresholds"} <= {g["check"] for g in pack["gate_history"]}
    assert any(not g["passed"] and g["check"] == "required_approvals" for g in pack["gate_history"])
    assert [(a["role"], a["by"], a["channel"]) for a in pack["approvals"]] == [
        ("product_owner", "Lena Brandt", "cli"), ("llm_lead", "Max Vogel", "launchpad")]
    windows = [(w["environment"], w["slot"], w["release"], w["to"] is None) for w in pack["release_windows"]]
    assert ("local", "serving", release, False) in windows and ("local", "serving", "support-assistant-r1", True) \
        in windows
    assert pack["summary"]["audit_trail_intact"] and pack["summary"]["first_live_in_production"]

    # An approval record altered after the fact is detected, naming the file and line.
    ledger = platform.home / "audit" / "approvals.jsonl"
    ledger.write_text(ledger.read_text().replace('"note":"KPIs hold"', '"note":"KPIs hold (edited)"', 1)
                      if '"note":"KPIs hold"' in ledger.read_text()
                      else ledger.read_text().replace('"note": "KPIs hold"', '"note": "KPIs hold (edited)"', 1))
    verify = CliRunner().invoke(cli, ["audit", "verify"], env=env(platform))
    assert verify.exit_code == 1 and f"{ledger}:1: " in verify.output, verify.output


def test_a_candidate_that_fails_its_thresholds_never_reaches_staging(platform: Platform, llm):
    small_suite(platform, n=2)
    charter = platform.config_dir / "use_cases" / "support_assistant.yaml"
    charter.write_text(charter.read_text().replace("latency_target_ms_p95: 2500", "latency_target_ms_p95: 1"))
    release = new_candidate(platform, passes=False)
    assert not json.loads((platform.home / "eval" / USE_CASE / release / "report.json").read_text())["passed"]
    assert tick(platform, ROLLOUT_SENSOR) == []  # no passed evaluation: nothing to approve, deploy or record

    # Approved by both roles all the same (signed with the API: the CLI refuses a failed evaluation) ...
    creds = approvers(platform)
    policy = ap.load_approval_policy(platform.config_dir)
    refused = CliRunner().invoke(cli, ["approve", release, "--role", "product_owner", "--by", "Lena Brandt",
                                       "--note", "x", "--credential", creds["product_owner"]], env=env(platform))
    assert refused.exit_code != 0
    report = json.loads((platform.home / "eval" / USE_CASE / release / "report.json").read_text())
    for role, name in (("product_owner", "Lena Brandt"), ("llm_lead", "Max Vogel")):
        ap.approve(platform.home, creds[role], policy, use_case=USE_CASE, release=release,
                   release_hash=report["candidate_hash"], role=role, by=name, note="approved anyway")
    gate = materialize(platform, APPROVED)
    checks = check_evaluations(gate)
    assert checks[f"{APPROVED.to_user_string()}:required_approvals"].passed
    assert not checks[f"{APPROVED.to_user_string()}:evaluation_passed"].passed
    assert "charter_thresholds failed" in checks[f"{APPROVED.to_user_string()}:evaluation_passed"].description
    assert not dep.bundle_path(platform.home, USE_CASE, release).exists()

    # ... and every deployment step selected alone refuses it, in a later run: nothing is written.
    for step in (STAGING, SHADOW, CANARY, PRODUCTION):
        alone = materialize(platform, step)
        assert not alone.success and "its latest blocking check evaluation failed" in failures(alone), step
    assert not (platform.home / "deployments").exists() or not dep.events(platform.home)
    assert tick(platform, ROLLOUT_SENSOR) == []


class FaultProxy:
    """An HTTP proxy in front of the model server that answers 500 to every request whose body holds ``marker``
    once armed: an outage that only the canary's prompt runs into."""

    def __init__(self, target: str, marker: str):
        self.target, self.marker, self.armed, self.failed = target.rstrip("/"), marker.encode(), False, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if proxy.armed and proxy.marker in body:
                    proxy.failed += 1
                    self.send_response(500)
                    self.send_header("content-type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "injected fault"}}')
                    return
                r = httpx.request(method, proxy.target + self.path, content=body, timeout=120,
                                  headers={"content-type": self.headers.get("content-type", "application/json")})
                self.send_response(r.status_code)
                self.send_header("content-type", r.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self):  # noqa: N802
                self._forward("GET")

            def do_POST(self):  # noqa: N802
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_canary_with_injected_errors_is_rolled_back_by_the_canary_health_sensor(platform: Platform, llm,
                                                                                 monkeypatch):
    marker = "Flow-rated gasket kit FX-9"  # only in prompt v2's examples
    proxy = FaultProxy(llm.base_url.removesuffix("/v1"), marker)
    monkeypatch.setenv("AGENIX_LLM_URL", proxy.url + "/v1")
    try:
        small_suite(platform)
        fast_rollout(platform.config_dir)
        models = platform.config_dir / "gateway" / "models.yaml"
        registry = yaml.safe_load(models.read_text())
        for m in registry["models"]:
            if m["name"] == "gemma-3-270m":
                m["fallbacks"] = []  # a failing model call is an error the client sees, not a quiet fallback
        models.write_text(yaml.safe_dump(registry, sort_keys=False))
        # Standard (not short lookup) questions go to Gemma for every release: the path the fault hits.
        gateway_yaml = platform.config_dir / "gateway" / "gateway.yaml"
        gateway_yaml.write_text(gateway_yaml.read_text().replace("    quality_tier: 0\n", "    quality_tier: 1\n", 1))
        prompts = platform.config_dir / "prompts" / "support-assistant.yaml"
        add_prompt_version(platform.config_dir, "v2")
        book = yaml.safe_load(prompts.read_text())
        book["versions"]["v2"]["completion"]["few_shot"][0]["context"].append(f"The {marker} fits every flange.")
        prompts.write_text(yaml.safe_dump(book, sort_keys=False))
        release = new_candidate(platform)
        approve_and_stage(platform, release)
        product_name = product(platform)
        with gateway(platform) as base:
            keys = make_keys(platform, base, 20)
            for secret, _ in keys:
                assert ask(base, secret, SHORT.format(product=product_name)).status_code == 200
            step = run_requested(platform, only_request(platform, CANARY_HEALTH_SENSOR))
            assert step.success and asset_metadata(step, CANARY)["canary_weight"] == 0.5, failures(step)
            canary_keys, baseline_keys = split_keys(keys, release, 0.5)
            wait_served(base, canary_keys[0], SHORT.format(product=product_name), release)

            proxy.armed = True  # the model server now fails every call made with the canary's prompt
            for secret in baseline_keys:
                assert ask(base, secret, LONG.format(product=product_name)).status_code == 200
            statuses = [ask(base, secret, LONG.format(product=product_name)).status_code for secret in canary_keys]
            assert statuses.count(502) >= 3 and proxy.failed >= 3, statuses

            rollback = only_request(platform, CANARY_HEALTH_SENSOR)
            assert rollback.tags["agenix/decision"] == "rollback" and "error rate" in rollback.tags["agenix/reason"]
            step = run_requested(platform, rollback)
            assert not step.success  # its gate fails: the canary was unhealthy
            check = check_evaluations(step)[f"{CANARY.to_user_string()}:canary_healthy"]
            assert not check.passed and "rollback" in check.description and "error rate" in check.description
            meta = asset_metadata(step, CANARY)
            assert meta["decision"] == "rollback" and meta["canary_weight"] == 0.0 and meta["canary_errors"] >= 3
            live = yaml.safe_load(dep.deployed_manifest_path(platform.home, "local").read_text())["use_cases"]
            assert live[USE_CASE] == {"release": live[USE_CASE]["release"]}
            assert live[USE_CASE]["release"]["name"] == "support-assistant-r1"
            wait_served(base, canary_keys[0], SHORT.format(product=product_name), "support-assistant-r1")
            for secret in canary_keys:
                r = ask(base, secret, SHORT.format(product=product_name))
                assert r.status_code == 200 and r.json()["agenix"]["release"] == "support-assistant-r1"
        # Production never moved, and selecting production_deployment alone cannot promote the rolled-back canary.
        alone = materialize(platform, PRODUCTION)
        assert not alone.success and "canary_healthy failed" in failures(alone)
        stages = [e["stage"] for e in dep.events(platform.home, USE_CASE)]
        assert stages == ["staging", "shadow", "canary", "canary_stopped"]
    finally:
        proxy.close()
