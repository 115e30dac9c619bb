"""`agenix sandbox`: an isolated home on minimized data, made from the session's materialized platform (real DuckDB,
the real index artifacts and embedding model), that holds no raw store and cannot write production's manifest or
index."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from agenix_assets.core.config import load_yaml_model
from agenix_assets.core.rag import prune_artifacts, read_gates, write_index_verdict, write_retrieval_artifacts
from agenix_assets.resources.vector_store import VectorStoreResource
from agenix_assets.resources.warehouse import WarehouseLockTimeout, WarehouseResource
from agenix_assets.sandbox import (
    SANDBOX_FILE,
    SandboxError,
    SandboxViolation,
    assert_writable,
    create_sandbox,
    delete_sandbox,
    list_sandboxes,
    production_eval_path,
)
from serving.config import DeploymentManifest, GatewayConfig
from serving.manifest import write_manifest
from serving.rag import UseCaseIndex

REPO = Path(__file__).resolve().parents[2]
USE_CASE = "support-assistant"
MINIMIZED = {
    "cleaned.cleaned_crm_accounts", "cleaned.cleaned_crm_contacts", "cleaned.cleaned_erp_orders",
    "cleaned.cleaned_kb_documents", "cleaned.cleaned_support_tickets",
    "rag_support_assistant.redacted_documents", "rag_support_assistant.chunks",
    "rag.embedding_cache", "gates.evaluations",
}

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def tree_hashes(*roots: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots for p in sorted(root.rglob("*")) if p.is_file()
    }


def tables(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        return {f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in names}


@pytest.fixture(scope="module")
def made(first_run, tmp_path_factory):
    """(production platform, its file hashes before, the sandbox). Production is only read."""
    production, _, _ = first_run
    before = tree_hashes(production.home, production.config_dir)
    sandbox = create_sandbox("prompt-trial", production.home, production.config_dir,
                             tmp_path_factory.mktemp("sandboxes"))
    return production, before, sandbox


def test_a_sandbox_holds_the_minimized_tables_and_no_raw_store(made):
    production, _, sandbox = made
    got, prod = tables(sandbox.root / "warehouse.duckdb"), tables(production.warehouse)
    assert set(got) == MINIMIZED
    assert not any(name.startswith(("raw.", "staging.")) for name in got)
    assert "rag_support_assistant.chunks_staging" not in got
    for name in MINIMIZED - {"rag.embedding_cache", "gates.evaluations"}:
        assert got[name] == prod[name] > 0, name
    assert got["rag.embedding_cache"] == prod["rag_support_assistant.chunks"]  # the published chunks' vectors only
    assert {t["table"]: t["rows"] for t in sandbox.record["tables"]} == got
    # No landing-zone sources or ground truth beyond the golden sets; no Chroma store, Dagster history, keys, logs.
    landing = [p.relative_to(sandbox.root).as_posix() for p in (sandbox.root / "landing").rglob("*") if p.is_file()]
    assert landing == ["landing/_manifest/golden/support-assistant.yaml"]
    for absent in ("chroma", "logs", "eval", "dagster/storage", "dagster/history"):
        assert not (sandbox.root / absent).exists(), absent
    assert sorted(p.name for p in (sandbox.root / "gateway").iterdir()) == ["known_people.json"]
    deny = json.loads((sandbox.root / "gateway" / "known_people.json").read_text())
    assert len(deny["people"]) == prod["cleaned.cleaned_crm_contacts"]


def test_the_sandbox_record_says_what_was_copied_from_where(made):
    production, _, sandbox = made
    record = json.loads((sandbox.root / SANDBOX_FILE).read_text())
    assert record["name"] == "prompt-trial"
    assert record["source_home"] == str(production.home.resolve())
    assert record["production_config_dir"] == str(production.config_dir.resolve())
    assert record["production_manifest"] == str((production.config_dir / "deployments" / "local.yaml").resolve())
    assert record["manifest"] == str(sandbox.root / "config" / "deployments" / "local.yaml")
    assert record["index"][USE_CASE]["live_collection"] == "agenix.support-assistant.v0001"
    assert record["production_eval"][USE_CASE] == str(production.home.resolve() / "eval" / USE_CASE / "production.json")
    # An eval runner in the sandbox compares with production's report, read from production's home.
    assert production_eval_path(sandbox.root, USE_CASE) == Path(record["production_eval"][USE_CASE])
    assert production_eval_path(production.home, USE_CASE) == production.home.resolve() / "eval" / USE_CASE / "production.json"


def test_the_live_index_version_is_a_byte_copy_that_serves(made):
    production, _, sandbox = made
    collection = sandbox.record["index"][USE_CASE]["live_collection"]
    source, copy = production.home / "index" / collection, sandbox.root / "index" / collection
    files = [p.relative_to(source) for p in source.rglob("*") if p.is_file()]
    assert Path("gates.json") in files and Path("texts.jsonl") in files
    for rel in files:
        a, b = source / rel, copy / rel
        assert not b.is_symlink() and b.read_bytes() == a.read_bytes(), rel
        assert os.stat(a).st_ino != os.stat(b).st_ino and os.stat(b).st_nlink == 1, rel

    from agenix_assets.core.retrieval import default_encoder

    gateway = GatewayConfig.load(sandbox.config_dir)
    index = UseCaseIndex.from_config(USE_CASE, gateway.settings.use_cases[USE_CASE], sandbox.config_dir,
                                     sandbox.root / "index", lambda quantize: default_encoder(quantize=quantize))
    assert index.live_versions() == [1]
    golden = json.loads(json.dumps(__import__("yaml").safe_load(
        (sandbox.root / "landing" / "_manifest" / "golden" / "support-assistant.yaml").read_text())))
    query = golden["queries"][0]
    loaded, passages = index.retrieve(query["question"], "live", None)
    assert loaded.version == 1
    assert query["expected_documents"][0] in {p.document_id for p in passages}


def test_a_sandbox_cannot_write_production_manifest_index_or_warehouse(made, monkeypatch):
    production, _, sandbox = made
    monkeypatch.setenv("AGENIX_HOME", str(sandbox.root))
    monkeypatch.delenv("AGENIX_CHROMA_URL", raising=False)
    prod_manifest = production.config_dir / "deployments" / "local.yaml"
    manifest = load_yaml_model(prod_manifest, DeploymentManifest)
    collection = sandbox.record["index"][USE_CASE]["live_collection"]

    with pytest.raises(SandboxViolation, match="production's deployment manifest") as exc:
        write_manifest(prod_manifest, manifest)
    assert str(prod_manifest.resolve()) in str(exc.value)
    with pytest.raises(SandboxViolation, match="production's index"):
        write_index_verdict(production.home / "index", collection, [])
    with pytest.raises(SandboxViolation, match="production's index"):
        write_retrieval_artifacts(production.home / "index", "agenix.support-assistant.v0099", [], None)
    with pytest.raises(SandboxViolation, match="production's index"):
        prune_artifacts(production.home / "index", [])
    with pytest.raises(SandboxViolation, match="production's warehouse"):
        with WarehouseResource(path=str(production.warehouse)).connect():
            pass
    with pytest.raises(SandboxViolation, match="inside production's home"):
        VectorStoreResource(path=str(production.home / "chroma")).store()
    with pytest.raises(SandboxViolation, match="Chroma server"):
        VectorStoreResource(url="http://127.0.0.1:8000").store()
    # A link inside the sandbox that leads to production is followed, and refused.
    (sandbox.root / "reports" / "to-production").symlink_to(production.home / "index")
    with pytest.raises(SandboxViolation, match="production's index"):
        assert_writable(sandbox.root / "reports" / "to-production" / collection / "gates.json")
    (sandbox.root / "reports" / "to-production").unlink()

    # The sandbox's own manifest and warehouse are its to change.
    own = Path(sandbox.record["manifest"])
    assert write_manifest(own, manifest) == own
    assert load_yaml_model(own, DeploymentManifest) == manifest
    with WarehouseResource().connect() as con:
        con.execute("CREATE TABLE IF NOT EXISTS cleaned.sandbox_note (x INTEGER)")
        con.execute("DROP TABLE cleaned.sandbox_note")
    # Outside a sandbox the guard lets everything through.
    monkeypatch.setenv("AGENIX_HOME", str(production.home))
    assert assert_writable(prod_manifest) == prod_manifest.resolve()


def test_bad_or_taken_names_and_wrong_places_are_refused_clearly(made, tmp_path):
    production, _, sandbox = made
    for bad in ("ab", "Prompt_Trial", "-lead", "x" * 41, "a/b"):
        with pytest.raises(SandboxError, match="expected 3-40 characters"):
            create_sandbox(bad, production.home, production.config_dir, tmp_path)
    with pytest.raises(SandboxError, match="already exists"):
        create_sandbox("prompt-trial", production.home, production.config_dir, sandbox.root.parent)
    with pytest.raises(SandboxError, match="outside production's home"):
        create_sandbox("inside-home", production.home, production.config_dir, production.home / "sandboxes")
    with pytest.raises(SandboxError, match="itself a sandbox"):
        create_sandbox("from-sandbox", sandbox.root, sandbox.config_dir, tmp_path)
    with pytest.raises(SandboxError, match="no sandbox 'not-there'"):
        delete_sandbox("not-there", sandbox.root.parent)
    assert [s.name for s in list_sandboxes(sandbox.root.parent)] == ["prompt-trial"]
    assert not (production.home / "sandboxes").exists() and not list(tmp_path.iterdir())


def test_a_warehouse_locked_by_a_production_writer_fails_clearly_naming_it_and_leaves_nothing(made, tmp_path):
    """A running Dagster step of production holds DuckDB's write lock: create waits (bounded), then names the holder.
    Done on a copy of production's home: the holder opens the file for writing."""
    production, _, _ = made
    home = tmp_path / "home"
    shutil.copytree(production.home, home)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home / "warehouse.duckdb")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WarehouseLockTimeout, match=f"PID {holder.pid}"):
            create_sandbox("while-locked", home, production.config_dir, tmp_path / "sandboxes", lock_timeout_s=1)
    finally:
        holder.kill()
        holder.wait()
    assert list((tmp_path / "sandboxes").iterdir()) == []  # not even the half-made staging folder


def test_agenix_sandbox_create_list_delete_from_the_command_line(made, tmp_path):
    production, _, _ = made
    env = {**os.environ, "AGENIX_HOME": str(production.home), "AGENIX_CONFIG_DIR": str(production.config_dir),
           "AGENIX_SANDBOXES": str(tmp_path)}

    def agenix(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agenix_assets.cli", *args], cwd=REPO, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)

    made_cli = agenix("sandbox", "create", "retrieval-k8")
    assert made_cli.returncode == 0, made_cli.stderr
    root = tmp_path / "retrieval-k8"
    assert f"export AGENIX_HOME={root} AGENIX_CONFIG_DIR={root / 'config'}" in made_cli.stdout
    assert "rag_support_assistant.chunks" in made_cli.stdout
    assert (root / "dagster" / "dagster.yaml").is_file()
    again = agenix("sandbox", "create", "retrieval-k8")
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = agenix("sandbox", "list")
    assert "retrieval-k8" in listed.stdout and str(root) in listed.stdout
    assert agenix("sandbox", "env", "retrieval-k8").stdout.startswith(f"export AGENIX_HOME={root} ")
    # Materializing every asset would rebuild the sandbox's tables from an empty landing zone: refused.
    refused = agenix("materialize", AGENIX_HOME=str(root))
    assert refused.returncode == 1 and "is a sandbox" in refused.stderr
    gone = agenix("sandbox", "delete", "retrieval-k8")
    assert gone.returncode == 0 and not root.exists()


def test_production_is_byte_identical_after_the_sandbox_was_made_and_used(made):
    production, before, _ = made
    assert tree_hashes(production.home, production.config_dir) == before
