"""Staged rollout: staging -> shadow -> canary (weights stepping through ``canary_steps``) -> production.

The decisions are taken from evidence, never from time alone: the gateway's request log (serving/logs.py, one record
per request as ``RequestRecord.to_dict()`` writes it, shadow answers included) and its feedback log. This module is
pure (no Dagster import): the sensors and assets read the logs through ``load_traffic``, call ``judge_canary`` /
``judge_shadow`` and act on the decision; ``release_windows`` and friends read the deployment events the deploy
module writes to its ledger.

Thresholds live in config/rollout.yaml (``RolloutPolicy``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .config import Strict, load_yaml_model
from .paths import AgenixPaths

ROLLOUT_FILE = "rollout.yaml"

# ---------------------------------------------------------------- policy


class RolloutPolicy(Strict):
    """The thresholds of one use case's rollout (config/rollout.yaml explains each)."""

    canary_steps: list[float] = Field(default=[0.05, 0.25, 0.5, 1.0], min_length=2)
    min_requests_per_step: int = Field(default=20, ge=1)
    min_step_seconds: float = Field(default=120, ge=0)
    max_step_seconds: float = Field(default=3600, gt=0)
    severe_min_requests: int = Field(default=5, ge=1)
    max_error_rate_increase: float = Field(default=0.02, ge=0, le=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_latency_p95_ratio: float = Field(default=1.5, ge=1)
    latency_floor_ms: float = Field(default=200, ge=0)
    max_negative_feedback_increase: float = Field(default=0.10, ge=0, le=1)
    min_feedback: int = Field(default=10, ge=1)
    rating_scale: Literal["stars", "thumbs"] = "stars"
    max_ungrounded_increase: float = Field(default=0.05, ge=0, le=1)
    # Share of production's requests mirrored to the shadow release (sticky per request id).
    shadow_sample_rate: float = Field(default=1.0, gt=0, le=1)
    shadow_min_requests: int = Field(default=20, ge=1)
    shadow_max_error_rate: float = Field(default=0.05, ge=0, le=1)
    shadow_max_latency_p95_ratio: float = Field(default=2.0, ge=1)
    shadow_min_agreement: float | None = Field(default=0.8, ge=0, le=1)

    @field_validator("canary_steps")
    @classmethod
    def _steps_climb_to_one(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in steps):
            raise ValueError(f"every step is a share of keys in (0, 1]; got {steps}")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"steps must be strictly increasing; got {steps}")
        if steps[-1] != 1.0:
            raise ValueError(f"the last step must be 1.0 (production); got {steps}")
        return steps

    @model_validator(mode="after")
    def _consistent(self) -> RolloutPolicy:
        if self.max_step_seconds <= self.min_step_seconds:
            raise ValueError(f"max_step_seconds ({self.max_step_seconds}) must exceed min_step_seconds "
                             f"({self.min_step_seconds})")
        if self.severe_min_requests > self.min_requests_per_step:
            raise ValueError(f"severe_min_requests ({self.severe_min_requests}) must not exceed "
                             f"min_requests_per_step ({self.min_requests_per_step})")
        return self

    def next_step(self, weight: float) -> float:
        """The first step above ``weight`` (1.0, production, after the last canary step). A weight set by hand
        between two steps continues at the next one."""
        return next(s for s in self.canary_steps if s > weight + 1e-9) if weight < 1.0 else 1.0


class RolloutFile(Strict):
    """config/rollout.yaml: ``default`` and per-use-case overrides. A use case's block is laid over ``default``
    before validation, so an error in an override names the override's own line (and one in ``default`` is
    reported once, at its line)."""

    default: RolloutPolicy = RolloutPolicy()
    use_cases: dict[str, RolloutPolicy] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _inherit_default(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("use_cases"), dict):
            return data
        base = data.get("default") if isinstance(data.get("default"), dict) else {}
        try:
            RolloutPolicy.model_validate(base)
        except ValueError:
            base = {}  # the error is reported once, at default's own line, not again under every use case
        merged = {name: {**base, **over} if isinstance(over, dict) else over if over is not None else dict(base)
                  for name, over in data["use_cases"].items()}
        return {**data, "use_cases": merged}

    def for_use_case(self, use_case: str) -> RolloutPolicy:
        return self.use_cases.get(use_case, self.default)


def load_rollout_policy(config_dir: Path, use_case: str) -> RolloutPolicy:
    """The policy of ``use_case`` from ``<config_dir>/rollout.yaml`` (``default`` when the file names no block for
    it). Raises ConfigError naming file, line and key."""
    return load_yaml_model(Path(config_dir) / ROLLOUT_FILE, RolloutFile).for_use_case(use_case)


# ---------------------------------------------------------------- the request log


def default_log_dir() -> Path:
    """Where the gateway writes its logs: ``$AGENIX_HOME/logs`` (gateway.yaml ``request_log.dir: logs``, relative
    to AGENIX_HOME), with one folder per stream (``requests/``, ``feedback/``)."""
    return AgenixPaths.from_env().home / "logs"


def _utc(value: dt.datetime | str) -> dt.datetime:
    """An aware UTC datetime; a naive one is taken as UTC (the gateway and the ledger write UTC)."""
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


@dataclass(frozen=True)
class Traffic:
    """One use case's chat requests in a window (shadow answers included, ``shadow: true``) and the feedback
    given on them, as the gateway logged them."""

    requests: list[dict[str, Any]]
    feedback: list[dict[str, Any]]

    def between(self, start: dt.datetime, end: dt.datetime | None = None) -> list[dict[str, Any]]:
        """The requests that started in [start, end]."""
        start, end = _utc(start), None if end is None else _utc(end)
        return [r for r in self.requests if start <= _utc(r["ts"]) and (end is None or _utc(r["ts"]) <= end)]


def load_traffic(log_dir: Path, use_case: str, since: dt.datetime, until: dt.datetime | None = None) -> Traffic:
    """The use case's chat requests whose ``ts`` (when the request started) is in [since, until), and the feedback
    records on any of them.

    Every file of both streams is read (``read_records`` tolerates the partial last line of the file the gateway
    is writing); the window is applied to the records, since a file opened before ``since`` may hold later ones."""
    from serving.logs import read_records  # the gateway's reader, so both sides agree on the format

    since, until = _utc(since), None if until is None else _utc(until)
    requests = [
        r for r in read_records(Path(log_dir), "requests")
        if r.get("endpoint") == "chat" and r.get("use_case") == use_case and r.get("ts")
        and since <= _utc(r["ts"]) and (until is None or _utc(r["ts"]) < until)
    ]
    ids = {r["request_id"] for r in requests}
    feedback = [f for f in read_records(Path(log_dir), "feedback") if f.get("request_id") in ids]
    return Traffic(requests, feedback)


# ---------------------------------------------------------------- one arm's figures


def is_server_error(record: dict[str, Any]) -> bool:
    """A failure of the release or its backends: HTTP 5xx (backend_error 502, backend_unavailable and
    index_unavailable 503, an internal error 500). 4xx are not: a rate limit, a blocked input, an unknown model
    are the client's doing and say nothing about the release."""
    return int(record.get("status", 200)) >= 500


def is_client_error(record: dict[str, Any]) -> bool:
    return 400 <= int(record.get("status", 200)) < 500


def answered(record: dict[str, Any]) -> bool:
    """Whether the client got an answer, not the no-answer text. The request record has no ``answered`` field
    (the API response does): a pipeline run that gave the no-answer text leaves ``model`` unset (out of scope,
    nothing relevant retrieved, no backend found an answer), one that answered names the model. A record that
    carries ``answered`` (a later gateway) is taken at its word."""
    if "answered" in record:
        return bool(record["answered"])
    return int(record.get("status", 200)) < 400 and record.get("model") is not None


def grounding_rejected(record: dict[str, Any]) -> bool:
    """A generated answer was rejected as not grounded in the passages (even when a later tier then answered)."""
    return any(e.get("rule") == "grounding" for e in record.get("guardrail_events") or ())


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (a value that was observed); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def is_negative(feedback: dict[str, Any], rating_scale: str = "stars") -> bool | None:
    """Whether one feedback record says the answer was bad: escalated, a thumbs down (-1), or a low rating (1 or 2
    stars on the ``stars`` scale; on ``thumbs`` a 1 is a thumbs up). None: the record rates nothing (only a
    comment or answer_used)."""
    if feedback.get("escalated"):
        return True
    rating = feedback.get("rating")
    if rating is None:
        return None
    if rating == -1:
        return True
    return rating <= 2 if rating_scale == "stars" else False


@dataclass(frozen=True)
class ArmStats:
    """What one arm (the canary, the baseline, the shadow, the primary) did in a window.

    ``requests`` counts every record; ``client_errors`` (4xx) are left out of ``served``, the denominator of the
    rates and the evidence a step needs, since a rate-limited or blocked request never reached the release.
    ``errors`` are 5xx (see ``is_server_error``). Latencies are of successful (2xx/3xx) requests. ``ungrounded``:
    served requests with a grounding rejection or no answer. Feedback is counted per request (a request rated
    twice counts once; bad if any of its feedback is): ``feedback_count`` rated requests, ``negative_feedback``
    of them bad; ``answer_used_rate`` among requests whose feedback says whether the answer was used."""

    requests: int = 0
    client_errors: int = 0
    served: int = 0
    errors: int = 0
    error_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    ttft_p95_ms: float | None = None
    answered: int = 0
    ungrounded: int = 0
    ungrounded_rate: float | None = None
    feedback_count: int = 0
    negative_feedback: int = 0
    negative_feedback_rate: float | None = None
    answer_used_count: int = 0
    answer_used_rate: float | None = None

    def as_metadata(self, prefix: str = "") -> dict[str, float | int]:
        """Flat numbers for Dagster metadata (plotted across runs); a figure without data (no requests, no
        ratings) is left out rather than shown as 0."""
        return {prefix + k: (round(v, 6) if isinstance(v, float) else v)
                for k, v in self.__dict__.items() if v is not None}


def arm_stats(records: Iterable[dict[str, Any]], feedback: Iterable[dict[str, Any]] = (),
              rating_scale: str = "stars") -> ArmStats:
    """The figures of one arm from its request records and the feedback on them (feedback on other requests is
    ignored)."""
    records = list(records)
    served = [r for r in records if not is_client_error(r)]
    ok = [r for r in served if not is_server_error(r)]
    errors = len(served) - len(ok)
    latencies = [float(r["latency_ms"]) for r in ok if r.get("latency_ms") is not None]
    ttfts = [float(r["ttft_ms"]) for r in ok if r.get("ttft_ms") is not None]
    n_answered = sum(answered(r) for r in ok)
    ungrounded = sum(grounding_rejected(r) or (not is_server_error(r) and not answered(r)) for r in served)
    ids = {r["request_id"] for r in records}
    verdicts: dict[str, bool] = {}
    used: dict[str, bool] = {}
    for f in feedback:
        rid = f.get("request_id")
        if rid not in ids:
            continue
        bad = is_negative(f, rating_scale)
        if bad is not None:
            verdicts[rid] = verdicts.get(rid, False) or bad
        if f.get("answer_used") is not None:
            used[rid] = used.get(rid, False) or bool(f["answer_used"])
    negative = sum(verdicts.values())
    n_used = sum(used.values())
    return ArmStats(
        requests=len(records), client_errors=len(records) - len(served), served=len(served), errors=errors,
        error_rate=_rate(errors, len(served)), latency_p50_ms=percentile(latencies, 0.50),
        latency_p95_ms=percentile(latencies, 0.95), ttft_p95_ms=percentile(ttfts, 0.95), answered=n_answered,
        ungrounded=ungrounded, ungrounded_rate=_rate(ungrounded, len(served)), feedback_count=len(verdicts),
        negative_feedback=negative, negative_feedback_rate=_rate(negative, len(verdicts)),
        answer_used_count=len(used), answer_used_rate=_rate(n_used, len(used)))


# ---------------------------------------------------------------- verdicts

SUMMARY_CHARS = 200


def _short(text: str) -> str:
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _latency_ratio(arm_p95: float, base_p95: float, floor_ms: float) -> float:
    """arm p95 / baseline p95, the baseline counted as at least ``floor_ms``: fast answers jitter by more than
    any ratio (40 ms vs 90 ms is 2.25x and harmless), so two p95s under the floor never compare as a regression."""
    return arm_p95 / max(base_p95, floor_ms, 1e-9)


@dataclass(frozen=True)
class CanaryDecision:
    """What to do with a canary at ``weight``: ``promote`` to ``next_weight`` (1.0: to production), ``rollback``
    (``next_weight`` 0.0) or ``wait`` (``next_weight`` = ``weight``). ``reasons`` name each metric with the canary's
    value, the baseline's and the threshold (for a wait: what evidence is missing). ``stalled``: the step ran past
    max_step_seconds without enough traffic; it still waits (no promotion without evidence) and needs a person."""

    action: Literal["promote", "rollback", "wait"]
    canary_release: str
    baseline_release: str
    weight: float
    next_weight: float
    reasons: list[str]
    canary: ArmStats
    baseline: ArmStats
    elapsed_s: float
    stalled: bool = False

    def summary(self) -> str:
        """One line (at most 200 characters) for run tags and sensor cursors."""
        if self.action == "promote":
            to = "production" if self.next_weight >= 1.0 else f"{self.next_weight:g}"
            head = (f"promote {self.canary_release} {self.weight:g} -> {to}: {self.canary.served} canary / "
                    f"{self.baseline.served} baseline requests in {self.elapsed_s:.0f} s, no threshold breached")
            return _short(head)
        verb = (f"rollback {self.canary_release} at {self.weight:g} to {self.baseline_release}"
                if self.action == "rollback" else f"{'stalled' if self.stalled else 'wait'} {self.canary_release} "
                f"at {self.weight:g}")
        return _short(f"{verb}: {'; '.join(self.reasons)}")

    def as_metadata(self) -> dict[str, float | int]:
        return {"weight": self.weight, "next_weight": self.next_weight, "elapsed_s": round(self.elapsed_s, 3),
                **self.canary.as_metadata("canary_"), **self.baseline.as_metadata("baseline_")}


def judge_canary(policy: RolloutPolicy, *, canary_release: str, baseline_release: str, traffic: Traffic,
                 step_started_at: dt.datetime, now: dt.datetime, weight: float) -> CanaryDecision:
    """Judge the current canary step from the requests since ``step_started_at``.

    The arms: canary records (``canary: true``, release ``canary_release``) against the baseline (``canary:
    false``, ``shadow: false``, release ``baseline_release``) over the same window, so both saw the same hour's
    questions and load.

    - rollback: the canary's error rate is above ``max_error_rate`` after ``severe_min_requests`` canary requests
      (a broken release is stopped early, before min_requests_per_step); or, with ``min_requests_per_step`` on both
      arms, a comparison breaks its threshold: error-rate increase, p95 latency ratio, ungrounded-share increase,
      negative-feedback increase (the last only with ``min_feedback`` rated requests on each arm).
    - promote: both arms have ``min_requests_per_step`` served requests, ``min_step_seconds`` passed, and nothing
      is breached.
    - wait: otherwise, naming what is missing.

    ``weight`` is the canary's current share, below 1.0 (1.0 is production, where no baseline is left to compare).
    """
    if not 0 < weight < 1:
        raise ValueError(f"canary weight {weight} is not a canary step (0 < weight < 1; 1.0 is production)")
    start, now = _utc(step_started_at), _utc(now)
    window = traffic.between(start, now)
    c = arm_stats([r for r in window if r.get("canary") and not r.get("shadow")
                   and r.get("release") == canary_release], traffic.feedback, policy.rating_scale)
    b = arm_stats([r for r in window if not r.get("canary") and not r.get("shadow")
                   and r.get("release") == baseline_release], traffic.feedback, policy.rating_scale)
    elapsed = (now - start).total_seconds()
    n = policy.min_requests_per_step
    base = f"on the baseline ({baseline_release})"
    breaches: list[str] = []
    held: list[str] = []

    def judge(breached: bool, text: str) -> None:
        (breaches if breached else held).append(text)

    if c.served >= policy.severe_min_requests and c.error_rate is not None:
        judge(c.error_rate > policy.max_error_rate,
              f"error rate {c.error_rate:.3f} on the canary ({c.errors}/{c.served}): "
              f"{'>' if c.error_rate > policy.max_error_rate else '<='} max_error_rate {policy.max_error_rate:g}")
    if c.served >= n and b.served >= n:
        d = c.error_rate - b.error_rate  # type: ignore[operator]  # served >= 1, so both rates exist
        judge(d > policy.max_error_rate_increase,
              f"error rate {c.error_rate:.3f} on the canary vs {b.error_rate:.3f} {base}: {d:+.3f} "
              f"{'>' if d > policy.max_error_rate_increase else '<='} max_error_rate_increase "
              f"{policy.max_error_rate_increase:g}")
        if c.latency_p95_ms is not None and b.latency_p95_ms is not None:
            ratio = _latency_ratio(c.latency_p95_ms, b.latency_p95_ms, policy.latency_floor_ms)
            judge(ratio > policy.max_latency_p95_ratio,
                  f"latency p95 {c.latency_p95_ms:.0f} ms on the canary vs {b.latency_p95_ms:.0f} ms {base}: ratio "
                  f"{ratio:.2f} {'>' if ratio > policy.max_latency_p95_ratio else '<='} max_latency_p95_ratio "
                  f"{policy.max_latency_p95_ratio:g} (baseline counted as at least {policy.latency_floor_ms:g} ms)")
        d = c.ungrounded_rate - b.ungrounded_rate  # type: ignore[operator]
        judge(d > policy.max_ungrounded_increase,
              f"ungrounded share (grounding rejection or no answer) {c.ungrounded_rate:.3f} on the canary vs "
              f"{b.ungrounded_rate:.3f} {base}: {d:+.3f} {'>' if d > policy.max_ungrounded_increase else '<='} "
              f"max_ungrounded_increase {policy.max_ungrounded_increase:g}")
        if min(c.feedback_count, b.feedback_count) >= policy.min_feedback:
            d = c.negative_feedback_rate - b.negative_feedback_rate  # type: ignore[operator]
            judge(d > policy.max_negative_feedback_increase,
                  f"negative feedback {c.negative_feedback_rate:.3f} on the canary ({c.negative_feedback}/"
                  f"{c.feedback_count} rated) vs {b.negative_feedback_rate:.3f} {base} ({b.negative_feedback}/"
                  f"{b.feedback_count}): {d:+.3f} {'>' if d > policy.max_negative_feedback_increase else '<='} "
                  f"max_negative_feedback_increase {policy.max_negative_feedback_increase:g}")
        else:
            held.append(f"negative feedback not judged: {c.feedback_count} rated requests on the canary, "
                        f"{b.feedback_count} {base}, min_feedback {policy.min_feedback}")

    def decision(action: Literal["promote", "rollback", "wait"], next_weight: float, reasons: list[str],
                 stalled: bool = False) -> CanaryDecision:
        return CanaryDecision(action, canary_release, baseline_release, weight, next_weight, reasons, c, b,
                              elapsed, stalled)

    if breaches:
        return decision("rollback", 0.0, breaches)
    missing = [f"{c.served}/{n} canary requests"] if c.served < n else []
    missing += [f"{b.served}/{n} baseline requests"] if b.served < n else []
    if not missing and elapsed >= policy.min_step_seconds:
        return decision("promote", policy.next_step(weight), held)
    if elapsed < policy.min_step_seconds:
        missing.append(f"{elapsed:.0f}/{policy.min_step_seconds:g} s")
    stalled = bool(missing) and elapsed > policy.max_step_seconds and (c.served < n or b.served < n)
    if stalled:
        missing.append(f"step running {elapsed:.0f} s > max_step_seconds {policy.max_step_seconds:g} without "
                       "enough traffic: not promoted without evidence; promote or stop it by hand")
    return decision("wait", weight, missing, stalled)


@dataclass(frozen=True)
class ShadowDecision:
    """What to do with a shadow release: ``promote`` (start its canary at ``next_weight``, the first canary step),
    ``reject`` or ``wait``. The arms are the mirrored requests paired with their primary (``pairs``);
    ``unpaired`` shadow records (their primary outside the window or served by another release) are not judged.
    ``agreement``: of the pairs whose primary answered, the share the shadow answered too."""

    action: Literal["promote", "reject", "wait"]
    shadow_release: str
    primary_release: str
    next_weight: float
    reasons: list[str]
    shadow: ArmStats
    primary: ArmStats
    pairs: int
    unpaired: int
    agreement: float | None
    elapsed_s: float
    stalled: bool = False

    def summary(self) -> str:
        if self.action == "promote":
            return _short(f"promote shadow {self.shadow_release} to canary at {self.next_weight:g}: {self.pairs} "
                          f"mirrored requests, no threshold breached")
        verb = "reject" if self.action == "reject" else "stalled" if self.stalled else "wait"
        return _short(f"{verb} shadow {self.shadow_release}: {'; '.join(self.reasons)}")

    def as_metadata(self) -> dict[str, float | int]:
        return {"pairs": self.pairs, "unpaired": self.unpaired, "elapsed_s": round(self.elapsed_s, 3),
                **({"agreement": round(self.agreement, 6)} if self.agreement is not None else {}),
                **self.shadow.as_metadata("shadow_"), **self.primary.as_metadata("primary_")}


SHADOW_SUFFIX = "_shadow"


def judge_shadow(policy: RolloutPolicy, *, shadow_release: str, primary_release: str, traffic: Traffic,
                 started_at: dt.datetime, now: dt.datetime) -> ShadowDecision:
    """Judge a shadow from its answers since ``started_at``, each paired with the primary request it mirrored
    (the gateway logs a shadow as the primary's request id + ``_shadow``), so both answered the same question.

    With ``shadow_min_requests`` pairs: reject when the shadow's error rate is above ``shadow_max_error_rate``, its
    p95 over the primary's above ``shadow_max_latency_p95_ratio`` (the primary counted as at least
    ``latency_floor_ms``), or its answered-agreement below ``shadow_min_agreement``; else promote to the first
    canary step. Fewer pairs: wait. A shadow harms nobody, so there is no early reject on a few requests.
    The gateway mirrors only requests whose primary succeeded, so the primary's error rate is not a baseline."""
    start, now = _utc(started_at), _utc(now)
    primaries = {r["request_id"]: r for r in traffic.requests if not r.get("shadow")}
    shadows = [r for r in traffic.between(start, now) if r.get("shadow") and r.get("release") == shadow_release
               and str(r.get("request_id", "")).endswith(SHADOW_SUFFIX)]
    pairs = []
    for s in shadows:
        p = primaries.get(s["request_id"][: -len(SHADOW_SUFFIX)])
        if p is not None and p.get("release") == primary_release:
            pairs.append((s, p))
    s_stats = arm_stats([s for s, _ in pairs], rating_scale=policy.rating_scale)
    p_stats = arm_stats([p for _, p in pairs], traffic.feedback, policy.rating_scale)
    primary_answered = [(s, p) for s, p in pairs if answered(p)]
    agreement = _rate(sum(answered(s) for s, _ in primary_answered), len(primary_answered))
    elapsed = (now - start).total_seconds()
    n = policy.shadow_min_requests
    breaches: list[str] = []
    held: list[str] = []

    def judge(breached: bool, text: str) -> None:
        (breaches if breached else held).append(text)

    if len(pairs) >= n:
        if s_stats.error_rate is not None:
            judge(s_stats.error_rate > policy.shadow_max_error_rate,
                  f"error rate {s_stats.error_rate:.3f} on the shadow ({s_stats.errors}/{s_stats.served} mirrored "
                  f"requests): {'>' if s_stats.error_rate > policy.shadow_max_error_rate else '<='} "
                  f"shadow_max_error_rate {policy.shadow_max_error_rate:g}")
        if s_stats.latency_p95_ms is not None and p_stats.latency_p95_ms is not None:
            ratio = _latency_ratio(s_stats.latency_p95_ms, p_stats.latency_p95_ms, policy.latency_floor_ms)
            judge(ratio > policy.shadow_max_latency_p95_ratio,
                  f"latency p95 {s_stats.latency_p95_ms:.0f} ms on the shadow vs {p_stats.latency_p95_ms:.0f} ms on "
                  f"the primary ({primary_release}): ratio {ratio:.2f} "
                  f"{'>' if ratio > policy.shadow_max_latency_p95_ratio else '<='} shadow_max_latency_p95_ratio "
                  f"{policy.shadow_max_latency_p95_ratio:g} (primary counted as at least "
                  f"{policy.latency_floor_ms:g} ms)")
        if policy.shadow_min_agreement is not None and agreement is not None:
            judge(agreement < policy.shadow_min_agreement,
                  f"answered-agreement {agreement:.3f}: the shadow answered "
                  f"{sum(answered(s) for s, _ in primary_answered)} of the {len(primary_answered)} mirrored requests "
                  f"the primary ({primary_release}) answered, "
                  f"{'<' if agreement < policy.shadow_min_agreement else '>='} shadow_min_agreement "
                  f"{policy.shadow_min_agreement:g}")

    def decision(action: Literal["promote", "reject", "wait"], next_weight: float, reasons: list[str],
                 stalled: bool = False) -> ShadowDecision:
        return ShadowDecision(action, shadow_release, primary_release, next_weight, reasons, s_stats, p_stats,
                              len(pairs), len(shadows) - len(pairs), agreement, elapsed, stalled)

    if breaches:
        return decision("reject", 0.0, breaches)
    if len(pairs) >= n:
        return decision("promote", policy.canary_steps[0], held)
    reasons = [f"{len(pairs)}/{n} mirrored requests paired with their primary"]
    stalled = elapsed > policy.max_step_seconds
    if stalled:
        reasons.append(f"shadow running {elapsed:.0f} s > max_step_seconds {policy.max_step_seconds:g} without "
                       "enough traffic: not promoted without evidence; promote or stop it by hand")
    return decision("wait", 0.0, reasons, stalled)


# ---------------------------------------------------------------- release history from deployment events

SLOTS = ("serving", "canary", "shadow")
STAGES = ("staging", "shadow", "canary", "production", "rollback", "shadow_stopped", "canary_stopped")


def _deployments(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deployment events in ledger order (``seq``; the given order when some lack it). Other kinds of ledger
    record are skipped; an unknown stage is an error, since guessing what it did would misstate the history."""
    out = [e for e in events if e.get("kind", "deployment") == "deployment"]
    for e in out:
        if e.get("stage") not in STAGES:
            raise ValueError(f"deployment event seq {e.get('seq')}: unknown stage {e.get('stage')!r}; "
                             f"expected one of {list(STAGES)}")
    if all("seq" in e for e in out):
        out.sort(key=lambda e: e["seq"])
    return out


def release_windows(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which release held which slot when: one row per (environment, use case, slot, release) stretch.

    Slots: ``serving`` (what answers the environment's traffic), ``canary`` and ``shadow``. A row: environment,
    use_case, slot, release, ``from`` / ``to`` (the events' ``at``; ``to`` None while live), moved_in_by /
    moved_in_stage / moved_in_reason, moved_out_by / moved_out_stage / moved_out_reason, and ``max_weight`` (the
    highest canary weight it reached; None for other slots). Ordered by ``from``.

    Event semantics: ``staging`` and ``production`` put the release in the serving slot (production also clears
    canary and shadow, so a promoted canary's row ends with moved_out_stage "production"); ``rollback`` puts
    ``release`` (the one rolled back to) in the serving slot and clears canary and shadow; ``shadow`` and
    ``canary`` fill their slot (a repeated canary event of the same release steps its weight, the same row);
    ``shadow_stopped`` / ``canary_stopped`` clear theirs. An event naming the release already in the slot
    changes nothing."""
    rows: list[dict[str, Any]] = []
    live: dict[tuple[str, str, str], dict[str, Any]] = {}

    def close(key: tuple[str, str, str], ev: dict[str, Any]) -> None:
        row = live.pop(key, None)
        if row is not None:
            row.update({"to": ev["at"], "moved_out_by": ev.get("actor"), "moved_out_stage": ev["stage"],
                        "moved_out_reason": ev.get("reason")})

    def fill(key: tuple[str, str, str], ev: dict[str, Any]) -> None:
        current = live.get(key)
        if current is not None and current["release"] == ev["release"]:
            if key[2] == "canary":
                current["max_weight"] = max(current["max_weight"] or 0.0, float(ev.get("weight") or 0.0))
            return
        close(key, ev)
        row = {"environment": key[0], "use_case": key[1], "slot": key[2], "release": ev["release"],
               "from": ev["at"], "to": None, "moved_in_by": ev.get("actor"), "moved_in_stage": ev["stage"],
               "moved_in_reason": ev.get("reason"), "moved_out_by": None, "moved_out_stage": None,
               "moved_out_reason": None,
               "max_weight": float(ev.get("weight") or 0.0) if key[2] == "canary" else None}
        live[key] = row
        rows.append(row)

    seen: set[tuple[str, str]] = set()
    for ev in _deployments(events):
        env, uc, stage = ev["environment"], ev["use_case"], ev["stage"]
        if (env, uc) not in seen and ev.get("previous_release") and stage != "staging":
            # The release serving before the ledger's first move in this environment (the shipped manifest, or one
            # deployed by hand): live since before the ledger began.
            key = (env, uc, "serving")
            live[key] = {"environment": env, "use_case": uc, "slot": "serving", "release": ev["previous_release"],
                         "from": None, "to": None, "moved_in_by": "before the deployment ledger",
                         "moved_in_stage": None, "moved_in_reason": None, "moved_out_by": None,
                         "moved_out_stage": None, "moved_out_reason": None, "max_weight": None}
            rows.append(live[key])
        seen.add((env, uc))
        if stage in ("staging", "production", "rollback"):
            fill((env, uc, "serving"), ev)
            if stage != "staging":
                close((env, uc, "canary"), ev)
                close((env, uc, "shadow"), ev)
        elif stage in ("shadow", "canary"):
            fill((env, uc, stage), ev)
        else:
            close((env, uc, stage.removesuffix("_stopped")), ev)
    # Stable: same-instant rows keep event order; a window open since before the ledger (from None) comes first.
    return sorted(rows, key=lambda r: (r["from"] is not None, _utc(r["from"]) if r["from"] else 0))


def live_at(events: Iterable[dict[str, Any]], environment: str, use_case: str, when: dt.datetime) -> str | None:
    """The release serving ``environment`` for ``use_case`` at ``when`` (None before the first deployment). A
    window holds from its ``from`` (inclusive) to its ``to`` (exclusive): at the instant of a switch the new
    release serves."""
    when = _utc(when)
    for row in release_windows(events):
        if (row["environment"], row["use_case"], row["slot"]) == (environment, use_case, "serving") \
                and (row["from"] is None or _utc(row["from"]) <= when) and (row["to"] is None or when < _utc(row["to"])):
            return row["release"]
    return None


def production_lineage(events: Iterable[dict[str, Any]], use_case: str,
                       environment: str = "production") -> list[str]:
    """The releases a rollback can walk back through, oldest first, the current one last.

    A ``production`` event pushes its release; a ``rollback`` pops the release rolled back from (it is never
    offered again) and leaves the one rolled back to on top (anything above it was rolled past). So two
    rollbacks in a row go two releases back. The first production event's ``previous_release`` seeds the
    lineage when the ledger starts after a release deployed by hand."""
    stack: list[str] = []
    for ev in _deployments(events):
        if (ev["environment"], ev["use_case"]) != (environment, use_case):
            continue
        if ev["stage"] == "production":
            if not stack and ev.get("previous_release") and ev["previous_release"] != ev["release"]:
                stack.append(ev["previous_release"])
            if not stack or stack[-1] != ev["release"]:
                stack.append(ev["release"])
        elif ev["stage"] == "rollback":
            if stack:
                stack.pop()
            if ev["release"] in stack:
                del stack[len(stack) - stack[::-1].index(ev["release"]):]
            else:
                stack.append(ev["release"])
    return stack


def previous_production(events: Iterable[dict[str, Any]], use_case: str,
                        environment: str = "production") -> str | None:
    """The release a rollback of ``use_case`` should restore: the one that served production before the current
    one, skipping releases already rolled back from (see ``production_lineage``). None when there is nothing to
    go back to (the first release, or every earlier one was rolled past): the caller refuses the rollback."""
    lineage = production_lineage(events, use_case, environment)
    return lineage[-2] if len(lineage) >= 2 else None
