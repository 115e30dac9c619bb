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


@pytest.fixture(scope="session")
def first_run(tmp_path_factory):
    """Generate the small company and materialize every asset once per session (real DuckDB, dbt, Chroma,
    embedding model); tests that change things work on a copy (the `platform` fixture)."""
    import datetime as dt

    import dagster as dg

    from agenix_assets.core.sample_data import generate_sample_company
    from tests.platform import Platform

    root = tmp_path_factory.mktemp("platform")
    home, config = root / "home", root / "config"
    shutil.copytree(CONFIG_DIR, config)
    summary = generate_sample_company(home / "landing", scale="small", seed=7, as_of=dt.date.fromisoformat(AS_OF))
    platform = Platform(home, config, dg.DagsterInstance.ephemeral())
    result = platform.run()
    return platform, result, summary


@pytest.fixture
def platform(first_run, tmp_path):
    """A private copy of the materialized platform (landing zone, warehouse, Chroma, config) to change."""
    import dagster as dg

    from tests.platform import Platform

    source, _, _ = first_run
    home, config = tmp_path / "home", tmp_path / "config"
    shutil.copytree(source.home, home)
    shutil.copytree(source.config_dir, config)
    return Platform(home, config, dg.DagsterInstance.ephemeral())
