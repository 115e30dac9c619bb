"""Shared fixtures. Every test runs against real DuckDB, dbt and Dagster in temp folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config"
# Pin the reference date so history windows and generated data do not move with the calendar.
AS_OF = "2026-11-01"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of config/ that a test may edit."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target)
    return target
