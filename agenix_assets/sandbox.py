"""Sandboxes: an isolated AGENIX_HOME on minimized data, where an engineer tries prompts, models and retrieval
settings as release candidates without touching production (seed step 3.1).

``create_sandbox`` makes a folder with the layout of a home, outside production's home (default
``<parent of AGENIX_HOME>/agenix-sandboxes/<name>``, or $AGENIX_SANDBOXES), holding only:

- ``warehouse.duckdb`` with the minimized tables: every table of the dbt ``cleaned`` schema, each use case's
  published RAG tables (``rag_<use case>.redacted_documents`` and ``.chunks``), the cached embeddings of those
  chunks (``rag.embedding_cache``), and the latest gate evaluation of each use case's RAG assets (so a consumer in
  the sandbox refuses exactly what production's would). Never the ``raw`` or dbt ``staging`` schemas, the
  chunker's staging table, or anything else;
- ``index/<collection>``: a byte copy of each use case's live index version (the newest whose verdict file says
  servable, ``serving.rag.UseCaseIndex.live_versions``) with its ``gates.json``, plus any version the deployment
  manifest pins;
- ``config/``: a copy of the production config folder; the sandbox's deployment manifest is the copy, so the
  engineer edits prompts, models and retrieval settings there;
- ``landing/_manifest/golden/``: the generated golden sets (evaluation ground truth; no source data);
- ``gateway/known_people.json``: the PII deny list, rebuilt from the sandbox's own cleaned contacts;
- ``dagster/`` without history, and ``sandbox.json`` (below).

No landing-zone source files, no raw tables, no Chroma store, no Dagster event history, no gateway keys or request
logs. Every file is copied byte for byte (never a link), and the copy is built in a hidden folder and renamed into
place, so a failed create leaves nothing half made.

Isolation: the write paths that could reach production (the warehouse, the index root, the vector store, the
deployment manifest, the PII deny list) call ``assert_writable``: while AGENIX_HOME is a sandbox, a path that
resolves outside the sandbox's folder raises ``SandboxViolation`` naming it. Production's eval report is read,
never written, from a sandbox: ``production_eval_path``.

No Dagster import (the gateway imports the guard); what needs the warehouse or the gateway config is imported where
it is used.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SANDBOX_FILE = "sandbox.json"
SANDBOXES_ENV = "AGENIX_SANDBOXES"
SANDBOXES_FOLDER = "agenix-sandboxes"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]")
CLEANED_SCHEMA = "cleaned"
EMBEDDING_CACHE = "rag.embedding_cache"
GOLDEN_DIR = Path("landing") / "_manifest" / "golden"
# The RAG assets whose latest gate evaluation travels with the copied tables and index (keys as the UI writes them).
RAG_GATED_ASSETS = ("chunks", "embeddings", "vector_index")


class SandboxError(ValueError):
    """A sandbox could not be created, found or deleted (bad name, already there, nothing to copy)."""


class SandboxViolation(PermissionError):
    """Code running in a sandbox tried to write outside it (production's manifest, index, warehouse...)."""

    def __init__(self, path: Path | str, sandbox: Path, what: str | None = None):
        self.path, self.sandbox = path, sandbox
        super().__init__(
            f"sandbox {sandbox.name} ({sandbox}) may not write {path}"
            + (f" ({what})" if what else "")
            + ": it is outside the sandbox. A sandbox writes only its own folder; point AGENIX_HOME and "
            "AGENIX_CONFIG_DIR at the sandbox (`agenix sandbox create` prints both)."
        )


# ---------------------------------------------------------------------------------------------- where and what


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise SandboxError(
            f"sandbox name {name!r}: expected 3-40 characters of a-z, 0-9 and '-', starting and ending with a "
            "letter or digit (e.g. 'prompt-v3-trial')"
        )
    return name


def default_production_home() -> Path:
    return Path(os.environ.get("AGENIX_HOME", ".agenix")).resolve()


def sandboxes_dir(production_home: Path | None = None) -> Path:
    """$AGENIX_SANDBOXES, else ``agenix-sandboxes`` beside production's home (outside it, so creating or using a
    sandbox changes nothing inside production's folder)."""
    env = os.environ.get(SANDBOXES_ENV)
    if env:
        return Path(env).resolve()
    home = Path(production_home).resolve() if production_home else default_production_home()
    if (home / SANDBOX_FILE).is_file():  # run from inside a sandbox: its siblings
        return home.parent
    return home.parent / SANDBOXES_FOLDER


def read_sandbox(home: Path | str | None) -> dict[str, Any] | None:
    """The sandbox record of ``home`` (its sandbox.json), or None when ``home`` is not a sandbox."""
    if home is None:
        return None
    path = Path(home) / SANDBOX_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise SandboxError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def active_home(home: Path | str | None = None) -> Path:
    return Path(home).resolve() if home is not None else default_production_home()


def is_sandbox(home: Path | str | None = None) -> bool:
    return (active_home(home) / SANDBOX_FILE).is_file()


def _production_role(record: dict[str, Any], path: Path) -> str | None:
    """What a path outside the sandbox is, in production's terms (for the error message)."""
    manifest = record.get("production_manifest")
    if manifest and path == Path(manifest).resolve():
        return "production's deployment manifest"
    source = Path(record.get("source_home", "/nonexistent")).resolve()
    if path.is_relative_to(source / "index"):
        return "production's index"
    if path == source / "warehouse.duckdb":
        return "production's warehouse"
    if path.is_relative_to(source):
        return "inside production's home"
    config = record.get("production_config_dir")
    if config and path.is_relative_to(Path(config).resolve()):
        return "production's config"
    return None


def assert_writable(path: Path | str, home: Path | str | None = None) -> Path:
    """Raise SandboxViolation if the active home (``home``, else $AGENIX_HOME) is a sandbox and ``path`` resolves
    (symlinks followed) outside it; return the resolved path. Outside a sandbox it allows everything."""
    root = active_home(home)
    record = read_sandbox(root)
    target = Path(path).resolve()
    if record is None:
        return target
    if not target.is_relative_to(root):
        raise SandboxViolation(target, root, _production_role(record, target))
    return target


def production_eval_path(home: Path | str | None, use_case: str) -> Path:
    """Where the latest eval report of the release in production is: ``<production home>/eval/<use case>/
    production.json``. From a sandbox, production's (read it, never write it); elsewhere the home's own."""
    root = active_home(home)
    record = read_sandbox(root)
    base = Path(record["source_home"]) if record else root
    return base / "eval" / use_case / "production.json"


# ---------------------------------------------------------------------------------------------- create


@dataclass(frozen=True)
class Sandbox:
    root: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    def env(self) -> dict[str, str]:
        """The environment that makes every agenix command (and the gateway) run on the sandbox."""
        return {"AGENIX_HOME": str(self.root), "AGENIX_CONFIG_DIR": str(self.config_dir),
                "DAGSTER_HOME": str(self.root / "dagster")}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_tree(source: Path, target: Path) -> None:
    """A byte copy: symlinks are followed and copied as files, so nothing in the sandbox shares an inode with
    production."""
    shutil.copytree(source, target, symlinks=False, copy_function=shutil.copy2)


def _index_versions(config_dir: Path, production_home: Path, environment: str | None) -> dict[str, dict[str, Any]]:
    """use case -> {collection, version, pinned} of the versions to copy: the live one and any the manifest pins."""
    from serving.config import DeploymentManifest, GatewayConfig
    from serving.rag import UseCaseIndex

    from .core.config import load_yaml_model
    from .core.index import collection_name

    gateway = GatewayConfig.load(config_dir, environment)
    live = gateway.live_manifest_path(production_home)
    manifest = load_yaml_model(live, DeploymentManifest) if live.is_file() else None
    out: dict[str, dict[str, Any]] = {}
    for name, settings in gateway.settings.use_cases.items():
        index = UseCaseIndex.from_config(name, settings, gateway.config_dir, production_home / "index", lambda _q: None)
        live = index.live_versions()
        if not live:
            raise SandboxError(
                f"use case {name!r}: production has no servable index version under {production_home / 'index'} "
                f"(built: {index.available_versions()}); materialize its vector_index asset first"
            )
        pinned: set[int] = set()
        deployment = manifest.use_cases.get(name) if manifest else None
        if deployment is not None:
            releases = [deployment.release, deployment.canary and deployment.canary.release,
                        deployment.shadow and deployment.shadow.release]
            pinned = {r.index_version for r in releases if r and isinstance(r.index_version, int)}
        versions = sorted({live[-1], *(v for v in pinned if v in index.available_versions())})
        out[name] = {
            "use_case": index.rag.use_case,
            "live_version": live[-1],
            "live_collection": collection_name(index.namespace, index.rag.use_case, live[-1]),
            "versions": versions,
            "collections": [collection_name(index.namespace, index.rag.use_case, v) for v in versions],
        }
    return out


def _copy_warehouse(source: Path, target: Path, use_cases: Iterable[str], lock_timeout_s: float) -> list[dict[str, Any]]:
    """Copy the minimized tables from production's warehouse (opened read-only, waiting boundedly for a writer's
    lock) into a new warehouse file. Returns [{table, rows}] as counted in the sandbox after the copy."""
    from .core.rag import RagTables
    from .resources.warehouse import connect_waiting

    con = connect_waiting(str(source), read_only=True, timeout_s=lock_timeout_s)
    try:
        [(catalog,)] = con.execute("SELECT current_database()").fetchall()
        tables = con.execute(
            "SELECT schema_name, table_name, sql FROM duckdb_tables() WHERE database_name = ? ORDER BY 1, 2",
            [catalog],
        ).fetchall()
        ddl = {(s, t): sql for s, t, sql in tables}
        wanted: list[tuple[str, str, str | None]] = [(s, t, None) for s, t, _ in tables if s == CLEANED_SCHEMA]
        rag_schemas = sorted({RagTables.for_use_case(uc).schema for uc in use_cases})
        hashes = []
        for schema in rag_schemas:
            for table in ("redacted_documents", "chunks"):
                if (schema, table) in ddl:
                    wanted.append((schema, table, None))
            if (schema, "chunks") in ddl:
                hashes.append(f"SELECT content_hash FROM {_quote(catalog)}.{_quote(schema)}.chunks")
        if ("rag", "embedding_cache") in ddl and hashes:
            wanted.append(("rag", "embedding_cache", "content_hash IN (" + " UNION ".join(hashes) + ")"))
        if ("gates", "evaluations") in ddl:
            keys = [f"{uc.replace('-', '_')}/{a}" for uc in use_cases for a in RAG_GATED_ASSETS]
            # The latest evaluation of each gated RAG asset: what a consumer there reads (gates.require_passed).
            wanted.append(("gates", "evaluations", (
                "evaluation_id IN (SELECT arg_max(evaluation_id, evaluated_at) FROM "
                f"{_quote(catalog)}.gates.evaluations WHERE asset IN ({', '.join(_sql_str(k) for k in keys)}) GROUP BY asset)"
            )))
        if not any(s == CLEANED_SCHEMA for s, _, _ in wanted):
            raise SandboxError(f"{source}: no tables in the {CLEANED_SCHEMA!r} schema; materialize production first")

        con.execute(f"ATTACH {_sql_str(str(target))} AS sandbox (READ_WRITE)")
        try:
            con.execute("USE sandbox")
            counts = []
            for schema, table, where in wanted:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}")
                con.execute(ddl[(schema, table)])  # same columns and constraints as production's (unqualified: sandbox)
                src = f"{_quote(catalog)}.{_quote(schema)}.{_quote(table)}"
                con.execute(f"INSERT INTO sandbox.{_quote(schema)}.{_quote(table)} SELECT * FROM {src}"
                            + (f" WHERE {where}" if where else ""))
                [(n,)] = con.execute(f"SELECT count(*) FROM sandbox.{_quote(schema)}.{_quote(table)}").fetchall()
                [(m,)] = con.execute(f"SELECT count(*) FROM {src}" + (f" WHERE {where}" if where else "")).fetchall()
                if n != m:
                    raise SandboxError(f"copy of {schema}.{table}: {n} rows in the sandbox, {m} in production")
                counts.append({"table": f"{schema}.{table}", "rows": int(n), "filtered": where is not None})
            con.execute("CHECKPOINT sandbox")
        finally:
            con.execute(f"USE {_quote(catalog)}")
            con.execute("DETACH sandbox")
    finally:
        con.close()
    return counts


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_sandbox(
    name: str,
    production_home: Path | str | None = None,
    config_dir: Path | str | None = None,
    directory: Path | str | None = None,
    environment: str | None = None,
    lock_timeout_s: float | None = None,
) -> Sandbox:
    """Create sandbox ``name`` from production's home and config folder (see the module docstring)."""
    from serving.config import GatewayConfig

    from .core.config import default_config_dir
    from .core.rag import export_deny_list, load_known_people
    from .resources.warehouse import DEFAULT_LOCK_TIMEOUT_S, LOCK_TIMEOUT_ENV

    validate_name(name)
    home = Path(production_home).resolve() if production_home else default_production_home()
    config = Path(config_dir or default_config_dir()).resolve()
    if read_sandbox(home) is not None:
        raise SandboxError(f"{home} is itself a sandbox; create sandboxes from production's home "
                           f"({read_sandbox(home).get('source_home')})")
    if not (home / "warehouse.duckdb").is_file():
        raise SandboxError(f"{home}: no warehouse.duckdb; is this AGENIX_HOME materialized? (--from-home)")
    parent = Path(directory).resolve() if directory else sandboxes_dir(home)
    root = parent / name
    if root.is_relative_to(home) or home.is_relative_to(root):
        raise SandboxError(f"{root}: a sandbox must live outside production's home {home} (choose another --dir)")
    if root.is_relative_to(config):
        raise SandboxError(f"{root}: a sandbox must live outside production's config folder {config}")
    if root.exists():
        raise SandboxError(f"sandbox {name!r} already exists at {root}; delete it (`agenix sandbox delete {name} "
                           f"--dir {parent}`) or choose another name")
    if lock_timeout_s is None:
        raw = os.environ.get(LOCK_TIMEOUT_ENV)
        try:
            lock_timeout_s = float(raw) if raw else DEFAULT_LOCK_TIMEOUT_S
        except ValueError:
            raise SandboxError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None

    gateway = GatewayConfig.load(config, environment)
    indexes = _index_versions(config, home, environment)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{name}.creating"
    if staging.exists():
        shutil.rmtree(staging)  # debris of a create that died
    staging.mkdir()
    try:
        for folder in ("dagster", "reports", "gateway", "index"):
            (staging / folder).mkdir()
        tables = _copy_warehouse(home / "warehouse.duckdb", staging / "warehouse.duckdb",
                                 [i["use_case"] for i in indexes.values()], lock_timeout_s)
        for info in indexes.values():
            for collection in info["collections"]:
                _copy_tree(home / "index" / collection, staging / "index" / collection)
        _copy_tree(config, staging / "config")
        if (home / GOLDEN_DIR).is_dir():
            _copy_tree(home / GOLDEN_DIR, staging / GOLDEN_DIR)
        import duckdb

        with duckdb.connect(str(staging / "warehouse.duckdb"), read_only=True) as con:
            if any(t["table"] == f"{CLEANED_SCHEMA}.cleaned_crm_contacts" for t in tables):
                export_deny_list(staging / "gateway" / "known_people.json", load_known_people(con))
        manifest_rel = gateway.manifest_path.resolve().relative_to(config)
        live = gateway.live_manifest_path(home)
        if live != gateway.manifest_path:
            # Production serves what the deployer wrote: the sandbox's manifest starts as that, not config's default.
            shutil.copyfile(live, staging / "config" / manifest_rel)
        record = {
            "name": name,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source_home": str(home),
            "production_config_dir": str(config),
            "production_manifest": str(gateway.live_manifest_path(home).resolve()),
            "manifest": str(root / "config" / manifest_rel),
            "environment": gateway.settings.environment,
            "index": indexes,
            "tables": tables,
            "golden_sets": sorted(str(p.relative_to(staging)) for p in (staging / GOLDEN_DIR).rglob("*") if p.is_file()),
            "production_eval": {uc: str(home / "eval" / uc / "production.json") for uc in indexes},
        }
        (staging / SANDBOX_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Sandbox(root, record)


# ---------------------------------------------------------------------------------------------- list, delete


def list_sandboxes(directory: Path | str | None = None) -> list[Sandbox]:
    parent = Path(directory).resolve() if directory else sandboxes_dir()
    if not parent.is_dir():
        return []
    out = []
    for folder in sorted(parent.iterdir()):
        record = read_sandbox(folder) if folder.is_dir() and not folder.name.startswith(".") else None
        if record is not None:
            out.append(Sandbox(folder, record))
    return out


def open_sandbox(name: str, directory: Path | str | None = None) -> Sandbox:
    validate_name(name)
    parent = Path(directory).resolve() if directory else sandboxes_dir()
    root = parent / name
    record = read_sandbox(root)
    if record is None:
        known = ", ".join(s.name for s in list_sandboxes(parent)) or "none"
        raise SandboxError(f"no sandbox {name!r} in {parent} (sandboxes there: {known})")
    return Sandbox(root, record)


def delete_sandbox(name: str, directory: Path | str | None = None) -> Path:
    """Remove a sandbox's folder; only a folder with a sandbox.json (never anything else)."""
    sandbox = open_sandbox(name, directory)
    shutil.rmtree(sandbox.root)
    return sandbox.root
