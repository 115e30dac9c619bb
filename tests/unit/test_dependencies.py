"""Every library the code imports is a declared dependency: a module that only arrives as some other package's
dependency disappears the day that package drops it, and a fresh install breaks where no test looked."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"agenix_assets", "serving", "agenix_bench", "tests"}
# Package data run by another interpreter (LiteLLM's own venv), not code of this distribution.
NOT_OURS = {REPO / "agenix_bench" / "litellm"}


def _dist_name(requirement: str) -> str:
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {k: {_dist_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    return {_dist_name(r) for r in project["dependencies"]}, extras


def imported_modules(package: str) -> dict[str, list[str]]:
    """Top-level module -> files importing it, for every absolute import anywhere in the package's code."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        if any(folder in path.parents for folder in NOT_OURS):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(path.relative_to(REPO).as_posix())
    return found


def third_party(package: str) -> dict[str, list[str]]:
    return {
        module: files
        for module, files in imported_modules(package).items()
        if module not in FIRST_PARTY and module not in sys.stdlib_module_names and module != "__future__"
    }


@pytest.mark.parametrize(
    ("package", "allowed_extras"), [("agenix_assets", ()), ("serving", ()), ("agenix_bench", ("bench",))]
)
def test_every_third_party_import_is_a_declared_dependency(package, allowed_extras):
    dependencies, extras = _declared()
    allowed = dependencies.union(*(extras.get(e, set()) for e in allowed_extras))
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in sorted(third_party(package).items()):
        dists = {_dist_name(d) for d in distributions.get(module, [])}
        if not dists & allowed:
            undeclared[module] = (sorted(dists) or "no installed distribution", sorted(set(files))[:3])
    assert undeclared == {}, f"imported by {package} but not declared in pyproject.toml: {undeclared}"


def test_the_walk_sees_imports_inside_functions():
    """The rule's own guard: lazy imports (inside functions, as the CLI's) are what most easily go undeclared."""
    modules = third_party("agenix_assets")
    assert "sklearn" in modules and "agenix_assets/core/retrieval.py" in modules["sklearn"]
    assert "torch" in modules and "dagster" in modules
