"""Rate limits (requests and tokens per minute, per key and per team) and monthly spend budgets per team.

Pure arithmetic on explicit clocks: `RateLimiter` takes monotonic seconds, `BudgetTracker` takes UTC datetimes,
so every number here is unit tested at exact times.

Concurrency: the gateway runs on one asyncio event loop and neither class awaits, so each call runs to completion
without interleaving; no locks are needed. Both keep state in process memory: with several gateway processes each
enforces the limits on its own (the effective limit is multiplied by the process count).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple

from .auth import write_json_atomic

Scope = Literal["key", "team"]
LimitName = Literal["rpm", "tpm"]

IDLE_TTL_S = 600.0  # drop a bucket that is full and unused for this long; it would be recreated full anyway
SWEEP_INTERVAL_S = 60.0  # how often check() looks for idle buckets (amortises the O(n) sweep)
_EPS = 1e-9  # float slack so that exactly-enough refill counts as enough


class LimitSubject(NamedTuple):
    """Who a request counts against: a key or a team, with its limits (None = unlimited)."""

    scope: Scope
    id: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    scope: Scope | None = None
    subject_id: str | None = None
    limit_name: LimitName | None = None
    limit: int | None = None
    retry_after_s: int = 0
    message: str = ""


ALLOWED = LimitDecision(allowed=True)


class _Bucket:
    """A token bucket with continuous refill: `capacity` = the per-minute limit, refilled at capacity/60 per second.

    `level` may go below zero when `settle` learns a response used more tokens than estimated: that debt is
    repaid by refill before the subject can send again."""

    __slots__ = ("capacity", "last_used", "level", "rate", "updated")

    def __init__(self, capacity: int, now: float):
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self.updated = now
        self.last_used = now

    def refill(self, now: float, capacity: int | None = None) -> float:
        if capacity is not None and capacity != self.capacity:  # the limit changed (key file or config reloaded)
            self.capacity = float(capacity)
            self.rate = capacity / 60.0
        elapsed = now - self.updated
        if elapsed > 0:  # a clock that does not move forward adds nothing
            self.level = min(self.capacity, self.level + elapsed * self.rate)
            self.updated = now
        else:
            self.level = min(self.capacity, self.level)
        return self.level

    def seconds_until(self, amount: float) -> float:
        """Seconds of refill until `level` reaches `amount` (call right after refill)."""
        if self.level + _EPS >= amount:
            return 0.0
        return math.inf if self.rate <= 0 else (amount - self.level) / self.rate


def _retry_after(seconds: float) -> int:
    # Whole seconds for the Retry-After header, rounded up so that a client retrying on time finds room.
    return max(1, math.ceil(seconds - _EPS))


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets per (scope, id); O(1) per subject per check."""

    def __init__(self, idle_ttl_s: float = IDLE_TTL_S, sweep_interval_s: float = SWEEP_INTERVAL_S):
        self.idle_ttl_s = idle_ttl_s
        self.sweep_interval_s = sweep_interval_s
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._next_sweep: float | None = None

    def __len__(self) -> int:
        """How many buckets are held (memory)."""
        return len(self._buckets)

    def _bucket(self, scope: str, subject_id: str, name: str, limit: int, now: float) -> _Bucket:
        key = (scope, subject_id, name)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, now)
        else:
            bucket.refill(now, limit)
        return bucket

    def check(self, subjects: Sequence[LimitSubject], est_tokens: int, now: float) -> LimitDecision:
        """Admit one request of about `est_tokens` tokens if every subject has room, consuming from all of them;
        otherwise consume nothing and say which limit refused and when to retry."""
        if est_tokens < 0:
            raise ValueError(f"est_tokens must be >= 0, not {est_tokens}")
        self._maybe_sweep(now)
        admitted: list[tuple[_Bucket, int]] = []
        refusal: LimitDecision | None = None
        refusal_wait = -1.0
        for subject in subjects:
            for name, limit, amount in (("rpm", subject.rpm, 1), ("tpm", subject.tpm, est_tokens)):
                if limit is None:
                    continue
                bucket = self._bucket(subject.scope, subject.id, name, limit, now)
                wait = bucket.seconds_until(amount)
                if wait == 0.0:
                    admitted.append((bucket, amount))
                    continue
                never = amount > limit
                if never:
                    unit = "requests" if name == "rpm" else "tokens"
                    # Retrying cannot help: suggest a full window (longer if the bucket is in debt), not a hammering 1 s.
                    wait = math.inf
                    full_in = bucket.seconds_until(bucket.capacity)
                    retry = _retry_after(max(60.0, full_in if math.isfinite(full_in) else 60.0))
                    message = (
                        f"request needs about {amount} {unit} but the {subject.scope} {subject.id} limit is "
                        f"{limit} {unit} per minute, so it can never fit; send a smaller request"
                    )
                else:
                    retry = _retry_after(wait)
                    message = (
                        f"{subject.scope} {subject.id} is over its {name} limit of {limit} per minute; "
                        f"retry in {retry} s"
                    )
                if wait > refusal_wait:  # report the limit that keeps the request out longest
                    refusal_wait = wait
                    refusal = LimitDecision(False, subject.scope, subject.id, name, limit, retry, message)
        if refusal is not None:
            return refusal
        for bucket, amount in admitted:
            bucket.level -= amount
            bucket.last_used = now
        return ALLOWED

    def settle(self, subjects: Sequence[LimitSubject], est_tokens: int, actual_tokens: int, now: float) -> None:
        """Correct the token buckets once usage is known: charge the overrun, refund the unused estimate."""
        delta = actual_tokens - est_tokens
        if delta == 0:
            return
        for subject in subjects:
            if subject.tpm is None:
                continue
            bucket = self._bucket(subject.scope, subject.id, "tpm", subject.tpm, now)
            bucket.level = min(bucket.capacity, bucket.level - delta)
            bucket.last_used = now

    def _maybe_sweep(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.sweep_interval_s
        elif now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval_s
            self.evict_idle(now)

    def evict_idle(self, now: float) -> int:
        """Drop buckets unused for longer than idle_ttl_s that have refilled to full; returns how many."""
        idle = [
            key
            for key, bucket in self._buckets.items()
            if now - bucket.last_used > self.idle_ttl_s and bucket.refill(now) >= bucket.capacity
        ]
        for key in idle:
            del self._buckets[key]
        return len(idle)


def cost_of(tokens_in: int, tokens_out: int, price_in_per_1k: float, price_out_per_1k: float) -> float:
    """What a request cost, with prices per 1,000 input and output tokens."""
    if tokens_in < 0 or tokens_out < 0:
        raise ValueError(f"token counts must be >= 0, got tokens_in={tokens_in}, tokens_out={tokens_out}")
    return tokens_in * price_in_per_1k / 1000.0 + tokens_out * price_out_per_1k / 1000.0


@dataclass(frozen=True)
class BudgetDecision:
    allowed: bool
    spent: float
    budget: float | None
    retry_after_s: int = 0
    message: str = ""


BUDGET_FILE_VERSION = 1


def _utc(now: datetime) -> datetime:
    # Naive datetimes are taken as UTC; budgets run on calendar months in UTC.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def month_of(now: datetime) -> str:
    return _utc(now).strftime("%Y-%m")


def next_month_start(now: datetime) -> datetime:
    now = _utc(now)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


class BudgetTracker:
    """Spend per team in the current calendar month (UTC), persisted to JSON by `flush` so a restart keeps it.

    Checks happen before a request and costs are added after it, so requests in flight when the budget runs
    out can overshoot it by their own cost."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self._month: str | None = None
        self._spent: dict[str, float] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != BUDGET_FILE_VERSION:
                raise ValueError(f"expected version {BUDGET_FILE_VERSION}, found {data.get('version')!r}")
            month, spent = data["month"], data["spent"]
            self._month = str(month)
            self._spent = {str(team): float(amount) for team, amount in spent.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # Refuse to start rather than silently reset every team's spend to zero.
            raise ValueError(f"budget file {path} is unreadable ({exc}); fix or delete it") from None

    def _roll(self, now: datetime) -> None:
        month = month_of(now)
        if month != self._month:
            self._month = month
            self._spent = {}
            self._dirty = True

    def spent(self, team: str, now: datetime) -> float:
        return self._spent.get(team, 0.0) if month_of(now) == self._month else 0.0

    def add(self, team: str, cost: float, now: datetime) -> None:
        if cost < 0:
            raise ValueError(f"cost must be >= 0, not {cost}")
        self._roll(now)
        self._spent[team] = self._spent.get(team, 0.0) + cost
        self._dirty = True

    def check(self, team: str, budget: float | None, now: datetime) -> BudgetDecision:
        """Allowed while the team's spend this month is below its budget (None = no budget)."""
        spent = self.spent(team, now)
        if budget is None or spent < budget:
            return BudgetDecision(True, spent, budget)
        reset = next_month_start(now)
        retry = max(1, math.ceil((reset - _utc(now)).total_seconds()))
        return BudgetDecision(
            False,
            spent,
            budget,
            retry,
            f"team {team} has spent {spent:.2f} of its monthly budget of {budget:.2f}; "
            f"the budget resets at {reset.isoformat(timespec='seconds')}",
        )

    def flush(self) -> bool:
        """Write the spend to the file if it changed since the last flush; True if written."""
        if self.path is None or not self._dirty:
            return False
        write_json_atomic(self.path, {"version": BUDGET_FILE_VERSION, "month": self._month, "spent": self._spent})
        self._dirty = False
        return True
