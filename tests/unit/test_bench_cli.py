"""One command line for the benchmarks: `agenix bench ...` is agenix_bench/cli.py's app, mounted by the product's
CLI, which loads no benchmark until one runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agenix_assets.cli import app

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("pii", "retrieval", "retrieval-latency", "indexing", "index-copy", "gateway", "answers")


def test_agenix_bench_lists_every_benchmark():
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = {line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert set(BENCHMARKS) <= listed, listed


def test_loading_the_cli_imports_no_benchmark():
    code = "import sys, agenix_assets.cli; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('agenix_bench', 'torch', 'sklearn', 'sentence_transformers', 'chromadb'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["agenix_bench", "agenix_bench.cli"]


def test_benchmark_commands_are_defined_only_in_the_bench_cli():
    """No second definition of a benchmark's command line (a Typer app or an argparse main) beside cli.py. The stub
    backend keeps its argparse: it is the server process the gateway benchmark spawns, not a benchmark."""
    defining = []
    for path in sorted((REPO / "agenix_bench").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("Typer", "ArgumentParser"):
                defining.append(path.relative_to(REPO).as_posix())
    assert sorted(set(defining)) == ["agenix_bench/cli.py", "agenix_bench/stub_backend.py"]
    product_cli = (REPO / "agenix_assets" / "cli.py").read_text()
    assert "bench_app.command" not in product_cli and "add_typer(bench_app" in product_cli
