"""Loading the code location builds definitions and does nothing else: settings are read when resources are
built, and dbt's manifest is the one prepared beforehand (never parsed at load)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtProject

import agenix_assets.definitions as code_location
from agenix_assets.assets.transform import (
    DBT_PROJECT_DIR,
    PREPARED_STAMP,
    DbtManifestError,
    dbt_project,
    prepare_manifest,
    require_prepared_manifest,
)
from tests.conftest import REPO


def resources_now() -> dict:
    """Build the loaded location's resources the way a run does, and read what they resolved."""
    with dg.build_resources(code_location.defs.resources) as r:
        return {
            "warehouse": r.warehouse.file,
            "chroma": r.vector_store.location,
            "chroma_mode": r.vector_store.resolved_mode,
            "landing": str(r.agenix.paths.landing),
            "as_of": r.agenix.reference_date,
        }


def test_resources_read_the_environment_when_built_not_when_imported(tmp_path: Path, monkeypatch):
    # The module was imported (and its definitions built) before this test changed anything.
    monkeypatch.setenv("AGENIX_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("AGENIX_AS_OF", "2026-01-15")
    monkeypatch.delenv("AGENIX_CHROMA_URL", raising=False)
    first = resources_now()
    assert first == {
        "warehouse": str(tmp_path / "a" / "warehouse.duckdb"),
        "chroma": str(tmp_path / "a" / "chroma"),
        "chroma_mode": "embedded",
        "landing": str(tmp_path / "a" / "landing"),
        "as_of": "2026-01-15",
    }

    monkeypatch.setenv("AGENIX_HOME", str(tmp_path / "b"))
    monkeypatch.setenv("AGENIX_AS_OF", "2026-11-01")
    monkeypatch.setenv("AGENIX_CHROMA_URL", "http://127.0.0.1:8123")
    second = resources_now()
    assert second == {
        "warehouse": str(tmp_path / "b" / "warehouse.duckdb"),
        "chroma": "http://127.0.0.1:8123",
        "chroma_mode": "server",
        "landing": str(tmp_path / "b" / "landing"),
        "as_of": "2026-11-01",
    }


def test_pinned_settings_win_over_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AGENIX_HOME", str(tmp_path / "env"))
    monkeypatch.setenv("AGENIX_AS_OF", "2020-01-01")
    defs = code_location.build_definitions(home=tmp_path / "pinned", as_of="2026-11-01")
    with dg.build_resources(defs.resources) as r:
        assert r.warehouse.file == str(tmp_path / "pinned" / "warehouse.duckdb")
        assert r.agenix.reference_date == "2026-11-01"


def _target_state() -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in dbt_project.manifest_path.parent.iterdir()}


def test_loading_the_code_location_does_not_run_dbt(tmp_path: Path):
    """Load it the way `dagster dev` does (DAGSTER_IS_DEV_CLI set, which used to trigger a `dbt parse` on
    every load) in a fresh interpreter: nothing in dbt_project/target is written."""
    require_prepared_manifest()
    before = _target_state()
    env = {**os.environ, "DAGSTER_IS_DEV_CLI": "1", "AGENIX_HOME": str(tmp_path / "home")}
    code = "import agenix_assets.definitions as d; print(len(d.defs.resolve_asset_graph().get_all_asset_keys()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 20
    assert _target_state() == before
    assert not (tmp_path / "home").exists()  # nor is AGENIX_HOME created or touched


@pytest.fixture
def project_copy(tmp_path: Path) -> DbtProject:
    target = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, target, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return DbtProject(project_dir=target, profiles_dir=target)


def test_missing_or_stale_manifest_stops_loading_with_the_command_to_run(project_copy: DbtProject):
    with pytest.raises(DbtManifestError, match=r"does not exist.*Run `agenix prepare`"):
        require_prepared_manifest(project_copy)

    assert prepare_manifest(project_copy) is True
    assert require_prepared_manifest(project_copy) == project_copy.manifest_path
    assert (project_copy.manifest_path.parent / PREPARED_STAMP).exists()
    assert prepare_manifest(project_copy) is False  # current: not parsed again

    model = project_copy.project_dir / "models" / "staging" / "stg_erp_orders.sql"
    model.write_text(model.read_text() + "\n-- an edit after the manifest was prepared\n")
    with pytest.raises(DbtManifestError, match=r"is stale: files under .* changed after it was prepared.*agenix prepare"):
        require_prepared_manifest(project_copy)

    assert prepare_manifest(project_copy) is True
    require_prepared_manifest(project_copy)
