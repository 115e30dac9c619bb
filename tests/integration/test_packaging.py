"""The installed distribution: `agenix bench` works from a wheel (the benchmarks and their data files are in it)
and nothing only a benchmark needs, such as a model trained on SciFact's CC BY-NC labels, ships with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("agenix_assets", "serving", "agenix_bench"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True, capture_output=True, timeout=240,
    )
    (path,) = out.glob("agenix-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_has_the_bench_package_and_its_litellm_files(wheel):
    names = set(wheel.namelist())
    for module in ("cli", "retrieval", "indexing", "index_copy", "gateway", "stub_backend"):
        assert f"agenix_bench/{module}.py" in names, module
    for data in ("config.yaml", "config.plain.yaml", "requirements.txt", "constraints.txt", "request_log.py"):
        assert f"agenix_bench/litellm/{data}" in names, data
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "agenix = agenix_assets.cli:main" in wheel.read(entry_points).decode()


def test_wheel_ships_no_trained_benchmark_model(wheel):
    shipped = [n for n in wheel.namelist() if n.endswith(".json") or "reranker" in n.rsplit("/", 1)[-1]]
    assert shipped == []
