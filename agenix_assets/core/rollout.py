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
from dataclasses import dataclass, field
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
