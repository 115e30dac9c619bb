"""Staged rollout: the policy file, the request log read back, canary and shadow verdicts, the release history."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenix_assets.core.config import ConfigError
from agenix_assets.core.rollout import RolloutPolicy, load_rollout_policy

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
