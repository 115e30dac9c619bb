from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from serving.limits import BudgetTracker, LimitDecision, LimitSubject, RateLimiter, cost_of, next_month_start


def key(rpm=None, tpm=None, id="k1") -> LimitSubject:
    return LimitSubject("key", id, rpm, tpm)


def team(rpm=None, tpm=None, id="support") -> LimitSubject:
    return LimitSubject("team", id, rpm, tpm)


# ---- rate limits -----------------------------------------------------------------------------------------------


def test_rpm_bucket_holds_a_minute_and_refills_continuously():
    limiter, subjects = RateLimiter(), [key(rpm=6)]  # refills one request every 10 s
    assert all(limiter.check(subjects, 0, now=0.0).allowed for _ in range(6))
    refused = limiter.check(subjects, 0, now=0.0)
    assert refused == LimitDecision(
        False, "key", "k1", "rpm", 6, 10, "key k1 is over its rpm limit of 6 per minute; retry in 10 s"
    )
    assert limiter.check(subjects, 0, now=9.99).retry_after_s == 1  # 0.01 s short: rounded up, never 0
    assert limiter.check(subjects, 0, now=10.0).allowed
    assert limiter.check(subjects, 0, now=10.0).retry_after_s == 10
    assert all(limiter.check(subjects, 0, now=30.0).allowed for _ in range(2))  # 20 s refilled exactly two
    assert not limiter.check(subjects, 0, now=30.0).allowed


def test_tpm_bucket_charges_the_estimate_and_says_when_it_fits():
    limiter, subjects = RateLimiter(), [key(tpm=600)]  # 10 tokens per second
    assert limiter.check(subjects, 500, now=0.0).allowed
    refused = limiter.check(subjects, 300, now=0.0)  # 100 left, needs 200 more: 20 s
    assert (refused.allowed, refused.limit_name, refused.limit, refused.retry_after_s) == (False, "tpm", 600, 20)
    assert not limiter.check(subjects, 300, now=19.9).allowed
    assert limiter.check(subjects, 300, now=20.0).allowed


def test_refill_never_exceeds_one_minute_of_capacity():
    limiter, subjects = RateLimiter(), [key(rpm=3)]
    assert limiter.check(subjects, 0, now=0.0).allowed
    # An hour idle refills to 3, not 3 + 60 * 3.
    assert [limiter.check(subjects, 0, now=3600.0).allowed for _ in range(4)] == [True, True, True, False]


def test_refused_request_consumes_nothing_anywhere():
    limiter = RateLimiter()
    subjects = [key(rpm=10, tpm=10_000), team(rpm=2, tpm=10_000)]
    assert limiter.check(subjects, 1000, now=0.0).allowed
    assert limiter.check(subjects, 1000, now=0.0).allowed
    refused = limiter.check(subjects, 1000, now=0.0)
    assert (refused.allowed, refused.scope, refused.subject_id, refused.limit_name) == (False, "team", "support", "rpm")
    # The key's buckets were charged for the two admitted requests only: 8 requests and 8000 tokens left.
    assert [limiter.check([key(rpm=10, tpm=10_000)], 1000, now=0.0).allowed for _ in range(9)] == [True] * 8 + [False]


def test_refusal_reports_the_limit_that_blocks_longest():
    limiter = RateLimiter()
    subjects = [key(tpm=600), team(rpm=2)]
    assert limiter.check(subjects, 550, now=0.0).allowed
    assert limiter.check(subjects, 0, now=0.0).allowed
    # Key tpm needs 50 tokens more (5 s) for 100; team rpm needs 30 s for one request: retrying in 5 s is useless.
    refused = limiter.check(subjects, 100, now=0.0)
    assert (refused.scope, refused.limit_name, refused.retry_after_s) == ("team", "rpm", 30)


def test_unlimited_subjects_are_always_admitted_and_hold_no_memory():
    limiter = RateLimiter()
    assert all(limiter.check([key(), team()], 10**9, now=0.0).allowed for _ in range(1000))
    assert len(limiter) == 0


def test_request_larger_than_the_tpm_limit_can_never_fit():
    limiter = RateLimiter()
    refused = limiter.check([key(), team(tpm=1000)], 1500, now=0.0)
    assert (refused.allowed, refused.scope, refused.limit_name, refused.limit) == (False, "team", "tpm", 1000)
    assert "needs about 1500 tokens" in refused.message and "can never fit" in refused.message
    assert refused.retry_after_s == 60  # not a 1 s retry loop


def test_settle_refunds_an_overestimate():
    limiter, subjects = RateLimiter(), [key(tpm=600), team(tpm=600)]
    assert limiter.check(subjects, 500, now=0.0).allowed
    limiter.settle(subjects, est_tokens=500, actual_tokens=100, now=0.0)
    assert limiter.check(subjects, 500, now=0.0).allowed  # 500 left after the refund of 400 on both


def test_settle_charges_an_underestimate_as_debt_repaid_by_refill():
    limiter, subjects = RateLimiter(), [key(tpm=600)]
    assert limiter.check(subjects, 100, now=0.0).allowed
    limiter.settle(subjects, est_tokens=100, actual_tokens=700, now=0.0)  # level 600 - 700 = -100
    refused = limiter.check(subjects, 1, now=0.0)
    assert refused.retry_after_s == 11  # 101 tokens at 10/s = 10.1 s
    assert not limiter.check(subjects, 0, now=9.9).allowed  # still in debt
    assert limiter.check(subjects, 1, now=10.1).allowed


def test_settle_refund_is_capped_at_capacity():
    limiter, subjects = RateLimiter(), [key(tpm=600)]
    assert limiter.check(subjects, 100, now=0.0).allowed
    limiter.settle(subjects, est_tokens=100, actual_tokens=0, now=30.0)  # refill would already be full
    assert limiter.check(subjects, 600, now=30.0).allowed
    assert not limiter.check(subjects, 1, now=30.0).allowed


def test_changed_limit_applies_to_the_existing_bucket():
    limiter = RateLimiter()
    assert limiter.check([key(rpm=60)], 0, now=0.0).allowed  # 59 left
    # Lowered to 2 (key file reloaded): the level is clamped to the new capacity, refill slows to 2/min.
    assert [limiter.check([key(rpm=2)], 0, now=0.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.check([key(rpm=2)], 0, now=0.0).retry_after_s == 30


def test_idle_full_buckets_are_evicted_but_indebted_ones_kept():
    limiter = RateLimiter()
    assert limiter.check([key(rpm=60, tpm=600, id="idle")], 10, now=0.0).allowed
    assert limiter.check([key(tpm=600, id="debtor")], 10, now=0.0).allowed
    limiter.settle([key(tpm=600, id="debtor")], 10, 20_000, now=0.0)  # -19 410 tokens: ~32 min to repay
    assert len(limiter) == 3
    assert limiter.evict_idle(now=600.0) == 0  # not idle for *more* than 10 min yet
    assert limiter.evict_idle(now=600.5) == 2
    assert len(limiter) == 1
    # The debtor's debt survives: it is still refused.
    assert not limiter.check([key(tpm=600, id="debtor")], 10, now=601.0).allowed


def test_check_sweeps_idle_buckets_so_memory_stays_bounded():
    limiter = RateLimiter()
    for i in range(1000):
        assert limiter.check([key(rpm=60, id=f"k{i}")], 0, now=0.0).allowed
    assert len(limiter) == 1000
    assert limiter.check([key(rpm=60, id="late")], 0, now=700.0).allowed
    assert len(limiter) == 1


def test_negative_estimate_is_rejected():
    with pytest.raises(ValueError, match="est_tokens must be >= 0"):
        RateLimiter().check([key(tpm=10)], -1, now=0.0)


# ---- cost and budgets ------------------------------------------------------------------------------------------


def test_cost_of_prices_input_and_output_per_thousand_tokens():
    assert cost_of(1500, 500, 0.002, 0.006) == pytest.approx(0.006)
    assert cost_of(0, 0, 1.0, 1.0) == 0.0
    assert cost_of(1000, 0, 0.5, 100.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="token counts must be >= 0"):
        cost_of(-1, 0, 1.0, 1.0)


def test_budget_refuses_once_spent_until_the_next_month():
    tracker = BudgetTracker()
    now = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    tracker.add("support", 9.99, now)
    assert tracker.check("support", 10.0, now).allowed
    tracker.add("support", 0.01, now)
    decision = tracker.check("support", 10.0, now)
    assert (decision.allowed, decision.spent, decision.budget, decision.retry_after_s) == (
        False,
        pytest.approx(10.0),
        10.0,
        60,
    )
    assert decision.message == (
        "team support has spent 10.00 of its monthly budget of 10.00; the budget resets at 2026-02-01T00:00:00+00:00"
    )
    assert tracker.check("finance", 10.0, now).allowed  # budgets are per team
    assert tracker.check("support", None, now).allowed  # no budget: no limit


def test_month_rollover_resets_spend():
    tracker = BudgetTracker()
    tracker.add("support", 10.0, datetime(2026, 1, 31, 23, 59, tzinfo=UTC))
    feb = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    assert tracker.spent("support", feb) == 0.0
    assert tracker.check("support", 10.0, feb).allowed
    tracker.add("support", 2.5, feb)
    assert tracker.spent("support", feb) == 2.5


def test_months_are_calendar_months_in_utc():
    tracker = BudgetTracker()
    # 00:30 on 1 February in Paris is still 31 January in UTC: January's spend, 30 min to the reset.
    paris = timezone(timedelta(hours=1))
    tracker.add("support", 10.0, datetime(2026, 1, 15, tzinfo=UTC))
    decision = tracker.check("support", 5.0, datetime(2026, 2, 1, 0, 30, tzinfo=paris))
    assert (decision.allowed, decision.retry_after_s) == (False, 1800)
    assert next_month_start(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert tracker.spent("support", datetime(2026, 1, 20, 12, 0)) == 10.0  # naive = UTC


def test_spend_survives_a_restart(tmp_path: Path):
    path = tmp_path / "gateway" / "budget.json"
    now = datetime(2026, 3, 10, tzinfo=UTC)
    tracker = BudgetTracker(path)
    assert tracker.flush() is False and not path.exists()  # nothing to write yet
    tracker.add("support", 1.25, now)
    tracker.add("finance", 0.5, now)
    assert tracker.flush() is True
    assert tracker.flush() is False  # unchanged since
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    restarted = BudgetTracker(path)
    assert (restarted.spent("support", now), restarted.spent("finance", now)) == (1.25, 0.5)
    assert restarted.spent("support", datetime(2026, 4, 1, tzinfo=UTC)) == 0.0  # a saved month still rolls over


def test_unreadable_budget_file_refuses_to_start_rather_than_reset_spend(tmp_path: Path):
    path = tmp_path / "budget.json"
    path.write_text(json.dumps({"version": 1, "month": "2026-03"}))
    with pytest.raises(ValueError, match=f"budget file {path} is unreadable"):
        BudgetTracker(path)


def test_negative_cost_is_rejected():
    with pytest.raises(ValueError, match="cost must be >= 0"):
        BudgetTracker().add("support", -1.0, datetime(2026, 3, 1, tzinfo=UTC))
