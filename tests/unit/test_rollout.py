"""Staged rollout: the policy file, the request log read back, canary and shadow verdicts, the release history."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agenix_assets.core.config import ConfigError
from agenix_assets.core.rollout import (CanaryDecision, RolloutPolicy, ShadowDecision, Traffic, arm_stats,
                                        is_negative, judge_canary, judge_shadow, live_at, load_rollout_policy, load_traffic,
                                        previous_production, production_lineage, release_windows)
from serving.app import RequestRecord
from serving.logs import JsonlLog

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


# ---------------------------------------------------------------- policy


def test_shipped_policy_loads_with_the_documented_steps():
    policy = load_rollout_policy(REPO_CONFIG, "support-assistant")
    assert policy.canary_steps == [0.05, 0.25, 0.5, 1.0]
    assert (policy.min_requests_per_step, policy.max_error_rate, policy.shadow_min_agreement) == (20, 0.05, 0.8)


def test_a_use_case_overrides_only_the_keys_it_names(tmp_path):
    (tmp_path / "rollout.yaml").write_text(
        "default:\n  min_step_seconds: 30\n  min_requests_per_step: 50\n"
        "use_cases:\n  support-assistant:\n    min_requests_per_step: 7\n  quiet-one:\n")
    own = load_rollout_policy(tmp_path, "support-assistant")
    assert (own.min_requests_per_step, own.min_step_seconds) == (7, 30)
    assert load_rollout_policy(tmp_path, "quiet-one").min_requests_per_step == 50
    assert load_rollout_policy(tmp_path, "not-listed").min_requests_per_step == 50


def test_steps_not_increasing_are_refused_naming_file_line_and_key(tmp_path):
    path = tmp_path / "rollout.yaml"
    path.write_text("default:\n  min_step_seconds: 30\n  canary_steps: [0.05, 0.5, 0.25, 1.0]\n"
                    "use_cases:\n  support-assistant:\n    max_error_rate: 2\n")
    with pytest.raises(ConfigError) as err:
        load_rollout_policy(tmp_path, "support-assistant")
    text = str(err.value)
    assert f"{path}:3: default.canary_steps: Value error, steps must be strictly increasing" in text
    assert f"{path}:6: use_cases.support-assistant.max_error_rate: " in text
    assert text.count("canary_steps") == 1  # an error in default is not repeated under every use case


def test_steps_must_end_at_production_and_keys_must_be_known(tmp_path):
    path = tmp_path / "rollout.yaml"
    path.write_text("default:\n  canary_steps: [0.1, 0.5]\n  min_request_per_step: 3\n")
    with pytest.raises(ConfigError) as err:
        load_rollout_policy(tmp_path, "support-assistant")
    assert f"{path}:2: default.canary_steps: Value error, the last step must be 1.0 (production)" in str(err.value)
    assert f"{path}:3: default.min_request_per_step: unknown key (misspelled?)" in str(err.value)


def test_next_step_climbs_the_ladder_and_ends_at_production():
    policy = RolloutPolicy()
    assert [policy.next_step(w) for w in (0.0, 0.05, 0.1, 0.25, 0.5)] == [0.05, 0.25, 0.25, 0.5, 1.0]


# ---------------------------------------------------------------- the request log as the gateway writes it

USE_CASE = "support-assistant"
R1, R2 = "support-assistant-r1", "support-assistant-r2"
T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)


def request(n: int, *, release: str = R1, canary: bool = False, at: float = 0.0, status: int = 200,
            latency_ms: float = 100.0, answered: bool = True, grounding: bool = False, use_case: str = USE_CASE,
            shadow_of: str | None = None, ttft_ms: float | None = None) -> dict:
    """One record exactly as the gateway logs it (RequestRecord.to_dict), ``at`` seconds after T0."""
    rid = f"req_{release[-2:]}{'c' if canary else 'b'}{n:04d}"
    rec = RequestRecord.start("chat", shadow_of + "_shadow" if shadow_of else rid, use_case=use_case,
                              release=release, canary=canary, shadow=shadow_of is not None)
    rec.ts = (T0 + dt.timedelta(seconds=at)).isoformat(timespec="milliseconds")
    rec.status, rec.latency_ms, rec.ttft_ms = status, latency_ms, ttft_ms
    if status >= 400:
        rec.error_code = "backend_error" if status >= 500 else "rate_limited"
    elif answered:
        rec.model, rec.answer = "extractive", "The run-in period is 50 hours."
    else:
        rec.route_reason, rec.answer = "nothing relevant retrieved -> no answer", "I don't know."
    if grounding:
        rec.guardrail_events.append({"stage": "output", "rule": "grounding", "action": "rejected",
                                     "detail": {"model": "gemma-3-270m", "problem": "invents a number"}})
    return rec.to_dict()


def feedback(rid: str, **fields) -> dict:
    """A feedback record as POST /v1/feedback logs it."""
    return {"feedback_id": f"fb_{rid}", "ts": T0.isoformat(), "key_id": "key_a", "team": "support",
            "request_id": rid, **fields}


def write_logs(log_dir: Path, requests: list[dict], feedbacks: list[dict] = ()) -> Path:
    for stream, records in (("requests", requests), ("feedback", feedbacks)):
        log = JsonlLog(log_dir, stream, flush_interval_s=3600)
        for r in records:
            log.append(r)
        log.close()
    return log_dir


def arm(n: int, span: float = 200, **kw) -> list[dict]:
    """n requests of one arm spread over the first ``span`` seconds of the step."""
    return [request(i, at=1 + i * span / max(n, 1), **kw) for i in range(n)]


def traffic_of(tmp_path: Path, requests: list[dict], feedbacks: list[dict] = ()) -> Traffic:
    write_logs(tmp_path / "logs", requests, feedbacks)
    return load_traffic(tmp_path / "logs", USE_CASE, since=T0)


def test_load_traffic_keeps_the_use_case_in_the_window_and_feedback_on_those_requests(tmp_path):
    inside = arm(3)
    before = request(90, at=-5)
    after = request(91, at=500)
    other = request(92, at=10, use_case="hr-assistant")
    direct = {**request(93, at=10), "endpoint": "embeddings"}
    log_dir = write_logs(tmp_path / "logs", [before, *inside, other, direct, after],
                         [feedback(inside[0]["request_id"], rating=5), feedback(before["request_id"], rating=1)])
    with open(next((log_dir / "requests").glob("requests-*.jsonl")), "ab") as fh:
        fh.write(b'{"request_id": "req_half", "ts": "2026-11-0')  # the gateway is mid-write
    got = load_traffic(log_dir, USE_CASE, since=T0, until=T0 + dt.timedelta(seconds=300))
    assert [r["request_id"] for r in got.requests] == [r["request_id"] for r in inside]
    assert [f["request_id"] for f in got.feedback] == [inside[0]["request_id"]]
    assert [r["request_id"] for r in load_traffic(log_dir, USE_CASE, since=T0).requests][-1] == after["request_id"]


def test_arm_stats_counts_5xx_as_errors_leaves_4xx_out_and_counts_ungrounded_and_feedback():
    records = [request(i, latency_ms=100.0 + i * 10, ttft_ms=50.0) for i in range(16)]
    records += [request(16, status=502), request(17, status=429), request(18, answered=False, latency_ms=20.0),
                request(19, grounding=True, latency_ms=900.0)]
    fb = [feedback(records[0]["request_id"], rating=5, answer_used=True),
          feedback(records[0]["request_id"], rating=2),  # the same request again: counts once, as bad
          feedback(records[1]["request_id"], escalated=True, answer_used=False),
          feedback(records[2]["request_id"], rating=4),
          feedback(records[3]["request_id"], comment="ok"),  # rates nothing
          feedback("req_someone_else", rating=1)]
    s = arm_stats(records, fb)
    assert (s.requests, s.client_errors, s.served, s.errors) == (20, 1, 19, 1)
    assert s.error_rate == pytest.approx(1 / 19)
    # 18 successful latencies: 16 of 100..250 ms, 20 ms, 900 ms; nearest rank p50 = 9th, p95 = 18th
    assert (s.latency_p50_ms, s.latency_p95_ms, s.ttft_p95_ms) == (170.0, 900.0, 50.0)
    assert (s.answered, s.ungrounded) == (17, 2)
    assert s.ungrounded_rate == pytest.approx(2 / 19)
    assert (s.feedback_count, s.negative_feedback, s.negative_feedback_rate) == (3, 2, pytest.approx(2 / 3))
    assert (s.answer_used_count, s.answer_used_rate) == (2, 0.5)
    meta = s.as_metadata("canary_")
    assert meta["canary_errors"] == 1 and meta["canary_latency_p95_ms"] == 900.0
    assert "canary_error_rate" not in arm_stats([]).as_metadata("canary_")  # no data is not a 0


def test_a_rating_of_one_is_bad_on_stars_and_good_on_thumbs():
    assert (is_negative({"rating": 1}), is_negative({"rating": 1}, "thumbs")) == (True, False)
    assert (is_negative({"rating": -1}, "thumbs"), is_negative({"rating": 3}), is_negative({"comment": "x"})) == (
        True, False, None)


# ---------------------------------------------------------------- canary


def judge(traffic: Traffic, *, weight: float = 0.25, seconds: float = 300, **policy) -> CanaryDecision:
    return judge_canary(RolloutPolicy(**policy), canary_release=R2, baseline_release=R1, traffic=traffic,
                        step_started_at=T0, now=T0 + dt.timedelta(seconds=seconds), weight=weight)


def test_healthy_canary_with_enough_traffic_and_time_steps_up(tmp_path):
    traffic = traffic_of(tmp_path, arm(60) + arm(20, release=R2, canary=True))
    d = judge(traffic, weight=0.25)
    assert (d.action, d.next_weight) == ("promote", 0.5)
    assert (d.canary.served, d.baseline.served) == (20, 60)
    assert "error rate 0.000 on the canary vs 0.000 on the baseline (support-assistant-r1): +0.000 <= " \
           "max_error_rate_increase 0.02" in d.reasons
    assert d.summary() == ("promote support-assistant-r2 0.25 -> 0.5: 20 canary / 60 baseline requests in 300 s, "
                           "no threshold breached")
    assert d.as_metadata()["canary_requests"] == 20


def test_healthy_canary_at_the_last_canary_step_goes_to_production(tmp_path):
    d = judge(traffic_of(tmp_path, arm(25) + arm(25, release=R2, canary=True)), weight=0.5)
    assert (d.action, d.next_weight) == ("promote", 1.0)
    assert d.summary().startswith("promote support-assistant-r2 0.5 -> production:")


def test_canary_with_server_errors_is_rolled_back_naming_the_error_rate(tmp_path):
    canary = arm(14, release=R2, canary=True) + [request(100 + i, release=R2, canary=True, status=502, at=50)
                                                 for i in range(6)]
    d = judge(traffic_of(tmp_path, arm(40) + canary + [request(200, release=R2, canary=True, status=429, at=60)]))
    assert (d.action, d.next_weight) == ("rollback", 0.0)
    assert d.reasons[:2] == [
        "error rate 0.300 on the canary (6/20): > max_error_rate 0.05",
        "error rate 0.300 on the canary vs 0.000 on the baseline (support-assistant-r1): +0.300 > "
        "max_error_rate_increase 0.02"]
    assert d.canary.client_errors == 1  # the rate-limited request is no canary error
    assert d.summary().startswith("rollback support-assistant-r2 at 0.25 to support-assistant-r1: error rate 0.300")
    assert len(d.summary()) <= 200


def test_a_severe_error_rate_rolls_back_after_a_few_requests_but_not_before(tmp_path):
    broken = [request(i, release=R2, canary=True, status=503 if i % 2 else 200, at=10 + i) for i in range(5)]
    d = judge(traffic_of(tmp_path / "five", arm(40, span=25) + broken), seconds=30)
    assert d.action == "rollback"
    assert d.reasons == ["error rate 0.400 on the canary (2/5): > max_error_rate 0.05"]
    d = judge(traffic_of(tmp_path / "four", arm(40, span=25) + broken[:4]), seconds=30)
    assert (d.action, d.reasons) == ("wait", ["4/20 canary requests", "30/120 s"])


def test_too_few_canary_requests_wait_naming_the_count_and_the_time(tmp_path):
    d = judge(traffic_of(tmp_path, arm(40, span=35) + arm(12, release=R2, canary=True, span=35)
                         + [request(300 + i, release=R2, canary=True, status=429, at=5) for i in range(5)]), seconds=40)
    assert (d.action, d.next_weight, d.stalled) == ("wait", 0.25, False)
    assert d.reasons == ["12/20 canary requests", "40/120 s"]
    assert d.summary() == "wait support-assistant-r2 at 0.25: 12/20 canary requests; 40/120 s"


def test_enough_requests_before_min_step_seconds_still_wait(tmp_path):
    d = judge(traffic_of(tmp_path, arm(40) + arm(30, release=R2, canary=True)), seconds=300, min_step_seconds=600)
    assert (d.action, d.reasons) == ("wait", ["300/600 s"])


def test_a_step_without_traffic_past_max_step_seconds_is_stalled_not_promoted(tmp_path):
    d = judge(traffic_of(tmp_path, arm(40) + arm(12, release=R2, canary=True)), seconds=4000)
    assert (d.action, d.stalled) == ("wait", True)
    assert d.reasons[0] == "12/20 canary requests"
    assert d.reasons[1].startswith("step running 4000 s > max_step_seconds 3600 without enough traffic")
    assert d.summary().startswith("stalled support-assistant-r2 at 0.25: 12/20 canary requests")


def test_latency_regression_is_rolled_back_naming_p95(tmp_path):
    d = judge(traffic_of(tmp_path, arm(40, latency_ms=300.0) + arm(20, release=R2, canary=True, latency_ms=600.0)))
    assert d.action == "rollback"
    assert d.reasons == ["latency p95 600 ms on the canary vs 300 ms on the baseline (support-assistant-r1): ratio "
                         "2.00 > max_latency_p95_ratio 1.5 (baseline counted as at least 200 ms)"]


def test_latency_ratios_under_the_floor_are_jitter_not_a_regression(tmp_path):
    d = judge(traffic_of(tmp_path, arm(40, latency_ms=50.0) + arm(20, release=R2, canary=True, latency_ms=150.0)))
    assert d.action == "promote"
    assert any(r.startswith("latency p95 150 ms on the canary vs 50 ms") and "ratio 0.75 <=" in r for r in d.reasons)


def test_more_ungrounded_answers_on_the_canary_roll_back(tmp_path):
    canary = arm(16, release=R2, canary=True) + [request(50 + i, release=R2, canary=True, answered=False, at=20)
                                                 for i in range(2)] + \
        [request(60 + i, release=R2, canary=True, grounding=True, at=30) for i in range(2)]
    d = judge(traffic_of(tmp_path, arm(40) + canary))
    assert d.action == "rollback"
    assert d.reasons == ["ungrounded share (grounding rejection or no answer) 0.200 on the canary vs 0.000 on the "
                         "baseline (support-assistant-r1): +0.200 > max_ungrounded_increase 0.05"]


def ratings(records: list[dict], values: list[int]) -> list[dict]:
    return [feedback(r["request_id"], rating=v) for r, v in zip(records, values)]


def test_negative_feedback_is_judged_only_with_enough_ratings_on_both_arms(tmp_path):
    base, canary = arm(40), arm(20, release=R2, canary=True)
    few = judge(traffic_of(tmp_path / "few", base + canary, ratings(base, [5] * 12) + ratings(canary, [1] * 5)))
    assert few.action == "promote"
    assert ("negative feedback not judged: 5 rated requests on the canary, 12 on the baseline "
            "(support-assistant-r1), min_feedback 10") in few.reasons
    enough = judge(traffic_of(tmp_path / "enough", base + canary,
                              ratings(base, [5] * 9 + [2]) + ratings(canary, [1] * 4 + [4] * 6)))
    assert enough.action == "rollback"
    assert enough.reasons == [
        "negative feedback 0.400 on the canary (4/10 rated) vs 0.100 on the baseline (support-assistant-r1) "
        "(1/10): +0.300 > max_negative_feedback_increase 0.1"]


def test_weight_one_is_production_not_a_canary_step(tmp_path):
    with pytest.raises(ValueError, match="1.0 is production"):
        judge(Traffic([], []), weight=1.0)


# ---------------------------------------------------------------- shadow


def shadow_pairs(n: int, *, unanswered: int = 0, status: int = 200, errors: int = 0, latency_ms: float = 120.0):
    """n primaries of R1 and their R2 shadows; the first ``errors`` shadows fail, the next ``unanswered`` give
    no answer."""
    primaries = arm(n, latency_ms=100.0)
    shadows = [request(i, release="support-assistant-r2", at=1.5 + i * 200 / n, shadow_of=p["request_id"],
                       status=502 if i < errors else status, answered=not errors <= i < errors + unanswered,
                       latency_ms=latency_ms)
               for i, p in enumerate(primaries)]
    return primaries, shadows


def shadow(traffic: Traffic, seconds: float = 300, **policy) -> ShadowDecision:
    return judge_shadow(RolloutPolicy(**policy), shadow_release=R2, primary_release=R1, traffic=traffic,
                        started_at=T0, now=T0 + dt.timedelta(seconds=seconds))


def test_shadow_is_paired_with_its_primary_and_promoted_to_the_first_canary_step(tmp_path):
    primaries, shadows = shadow_pairs(20)
    canary_primary = request(500, release="support-assistant-r3", canary=True, at=50)
    orphans = [request(501, release=R2, at=51, shadow_of=canary_primary["request_id"]),
               request(502, release=R2, at=52, shadow_of="req_not_in_log")]
    d = shadow(traffic_of(tmp_path, primaries + shadows + [canary_primary] + orphans))
    assert (d.action, d.next_weight, d.pairs, d.unpaired, d.agreement) == ("promote", 0.05, 20, 2, 1.0)
    assert (d.shadow.served, d.primary.served, d.shadow.latency_p95_ms, d.primary.latency_p95_ms) == (
        20, 20, 120.0, 100.0)
    assert d.summary() == ("promote shadow support-assistant-r2 to canary at 0.05: 20 mirrored requests, "
                           "no threshold breached")


def test_shadow_that_answers_less_than_the_primary_is_rejected(tmp_path):
    d = shadow(traffic_of(tmp_path, [r for pair in zip(*shadow_pairs(20, unanswered=5)) for r in pair]))
    assert d.action == "reject"
    assert d.reasons == ["answered-agreement 0.750: the shadow answered 15 of the 20 mirrored requests the primary "
                         "(support-assistant-r1) answered, < shadow_min_agreement 0.8"]


def test_shadow_errors_and_slowness_are_rejected_with_their_figures(tmp_path):
    primaries, shadows = shadow_pairs(20, errors=2, latency_ms=450.0)
    d = shadow(traffic_of(tmp_path, primaries + shadows))
    assert d.action == "reject"
    assert d.reasons[:2] == [
        "error rate 0.100 on the shadow (2/20 mirrored requests): > shadow_max_error_rate 0.05",
        "latency p95 450 ms on the shadow vs 100 ms on the primary (support-assistant-r1): ratio 2.25 > "
        "shadow_max_latency_p95_ratio 2 (primary counted as at least 200 ms)"]


def test_shadow_with_few_mirrored_requests_waits(tmp_path):
    primaries, shadows = shadow_pairs(8, errors=4)
    d = shadow(traffic_of(tmp_path, primaries + shadows))
    assert (d.action, d.reasons, d.stalled) == ("wait", ["8/20 mirrored requests paired with their primary"], False)


# ---------------------------------------------------------------- release history


def event(seq: int, hour: int, stage: str, release: str, *, environment: str = "production", weight: float = 1.0,
          previous: str | None = None, actor: str = "user:Lena Brandt", reason: str = "") -> dict:
    """A deployment event as the deploy module writes it to its ledger."""
    return {"kind": "deployment", "environment": environment, "use_case": USE_CASE, "stage": stage,
            "release": release, "release_hash": "sha256:" + release[-2:] * 8, "weight": weight,
            "previous_release": previous, "actor": actor, "run_id": f"run{seq}", "reason": reason,
            "at": f"2026-11-01T{hour:02d}:00:00+00:00", "seq": seq, "hash": f"h{seq}"}


R0 = "support-assistant-r0"
ROLLOUT = [
    event(1, 8, "production", R1, actor="job:deploy_job", reason="first release"),
    event(2, 9, "staging", R2, environment="staging", reason="candidate passed evaluation"),
    event(3, 10, "shadow", R2, weight=0.0, previous=R1, reason="approved for shadow"),
    event(4, 11, "canary", R2, weight=0.05, previous=R1, actor="sensor:shadow_health_sensor", reason="shadow healthy"),
    event(5, 12, "canary", R2, weight=0.25, previous=R1, actor="sensor:canary_health_sensor", reason="step healthy"),
    event(6, 13, "production", R2, previous=R1, actor="sensor:canary_health_sensor", reason="0.5 step healthy"),
    event(7, 14, "rollback", R1, previous=R2, actor="job:rollback_job", reason="error rate 0.300 > 0.05"),
]


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 1, hour, minute, tzinfo=dt.UTC)


def test_release_windows_follow_staging_shadow_canary_production_and_rollback():
    rows = release_windows(list(reversed(ROLLOUT)) + [{"kind": "approval", "seq": 99}])  # ledger order is seq
    got = [(r["environment"], r["slot"], r["release"], r["from"][11:16], r["to"] and r["to"][11:16],
            r["moved_in_by"], r["moved_out_stage"], r["max_weight"]) for r in rows]
    assert got == [
        ("production", "serving", R1, "08:00", "13:00", "job:deploy_job", "production", None),
        ("staging", "serving", R2, "09:00", None, "user:Lena Brandt", None, None),
        ("production", "shadow", R2, "10:00", "13:00", "user:Lena Brandt", "production", None),
        ("production", "canary", R2, "11:00", "13:00", "sensor:shadow_health_sensor", "production", 0.25),
        ("production", "serving", R2, "13:00", "14:00", "sensor:canary_health_sensor", "rollback", None),
        ("production", "serving", R1, "14:00", None, "job:rollback_job", None, None),
    ]
    rolled_back = rows[4]
    assert (rolled_back["moved_out_by"], rolled_back["moved_out_reason"]) == ("job:rollback_job",
                                                                              "error rate 0.300 > 0.05")
    assert (rows[5]["moved_in_stage"], rows[5]["moved_in_reason"]) == ("rollback", "error rate 0.300 > 0.05")


def test_live_at_names_the_release_serving_at_each_instant():
    def live(when, environment="production"):
        return live_at(ROLLOUT, environment, USE_CASE, when)

    assert [live(at(7, 59)), live(at(8)), live(at(12, 59)), live(at(13)), live(at(13, 30)), live(at(14)),
            live(at(23))] == [None, R1, R1, R2, R2, R1, R1]
    assert (live(at(8, 30), "staging"), live(at(9, 30), "staging")) == (None, R2)
    assert live_at(ROLLOUT, "production", "hr-assistant", at(13)) is None


def test_previous_production_skips_a_release_rolled_back_from():
    assert previous_production(ROLLOUT[:6], USE_CASE) == R1  # r2 live: a rollback restores r1
    assert production_lineage(ROLLOUT, USE_CASE) == [R1]
    assert previous_production(ROLLOUT, USE_CASE) is None  # r1 was the first release: nothing to go back to
    later = [*ROLLOUT, event(8, 15, "production", "support-assistant-r3", previous=R1)]
    assert previous_production(later, USE_CASE) == R1  # r2 was rolled back from and is never offered again


def test_two_rollbacks_in_a_row_go_two_releases_back():
    r3 = "support-assistant-r3"
    events = [event(1, 8, "production", R0), event(2, 9, "production", R1, previous=R0),
              event(3, 10, "production", R2, previous=R1), event(4, 11, "production", r3, previous=R2)]
    assert previous_production(events, USE_CASE) == R2
    events.append(event(5, 12, "rollback", R2, previous=r3))
    assert previous_production(events, USE_CASE) == R1
    events.append(event(6, 13, "rollback", R1, previous=R2))
    assert (previous_production(events, USE_CASE), live_at(events, "production", USE_CASE, at(13))) == (R0, R1)
    events.append(event(7, 14, "rollback", R0, previous=R1))
    assert previous_production(events, USE_CASE) is None


def test_a_ledger_that_starts_after_a_hand_deployed_release_knows_it_from_previous_release():
    assert previous_production([event(1, 8, "production", R2, previous=R1)], USE_CASE) == R1
    # rolled back to a release the ledger never saw deployed: the one rolled back from is not offered again
    events = [event(1, 8, "production", R2), event(2, 9, "rollback", R1, previous=R2)]
    assert (production_lineage(events, USE_CASE), previous_production(events, USE_CASE)) == ([R1], None)


def test_canary_stopped_closes_the_canary_window_and_an_unknown_stage_is_refused():
    rows = release_windows([event(1, 8, "production", R1), event(2, 9, "canary", R2, weight=0.05),
                            event(3, 10, "canary_stopped", R2, actor="sensor:canary_health_sensor",
                                  reason="stalled")])
    canary = [r for r in rows if r["slot"] == "canary"]
    assert [(r["release"], r["to"][11:16], r["moved_out_stage"], r["max_weight"]) for r in canary] == [
        (R2, "10:00", "canary_stopped", 0.05)]
    with pytest.raises(ValueError, match="unknown stage 'promoted'"):
        release_windows([event(1, 8, "promoted", R1)])
