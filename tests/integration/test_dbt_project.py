"""Integration test of the dbt project: real `dbt build` against a small hand-written raw schema.

The raw tables are created from config/sources.yaml exactly as the ingestion writes them (config columns
with their DuckDB types plus the metadata columns), filled with a handful of messy rows: a tombstone,
duplicated keys, odd casing and whitespace, and records older than the history windows. dbt runs in a
subprocess with its own target and log paths so the repo's dbt_project/target is not touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from agenix_assets.core.sources import DUCKDB_TYPES

REPO = Path(__file__).resolve().parents[2]
PROJECT_DIR = REPO / "dbt_project"
SOURCES_YAML = REPO / "config" / "sources.yaml"
REGISTER_YAML = REPO / "config" / "governance" / "processing_register.yaml"
DBT = Path(sys.executable).parent / "dbt"
AS_OF = "2026-11-01"

pytestmark = pytest.mark.timeout(600)

KB_COLUMNS = {
    "document_id": "VARCHAR",
    "path": "VARCHAR",
    "title": "VARCHAR",
    "format": "VARCHAR",
    "body": "VARCHAR",
    "content_hash": "VARCHAR",
    "size_bytes": "BIGINT",
    "modified_at": "TIMESTAMP",
}
METADATA_COLUMNS = {
    "_record_hash": "VARCHAR",
    "_source_file": "VARCHAR",
    "_source_line": "INTEGER",
    "_loaded_at": "TIMESTAMP",
    "_load_id": "VARCHAR",
    "_deleted": "BOOLEAN",
    "_deleted_at": "TIMESTAMP",
}

T1 = dt.datetime(2026, 10, 1, 8, 0)
T2 = dt.datetime(2026, 10, 2, 8, 0)
T3 = dt.datetime(2026, 10, 3, 8, 0)


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


# Every row: source columns, plus optional _loaded_at / _deleted overrides.
RAW_ROWS: dict[str, list[dict]] = {
    "crm_accounts": [
        # A001: two versions, the newer one (messy) must win.
        {"account_id": "A001", "name": "Old Name GmbH", "industry": "Machinery", "segment": "smb",
         "country": "de", "city": "Hamburg", "street": "Altweg 1", "postal_code": "20095",
         "account_manager": "Eva Berg", "created_at": ts("2020-01-01 10:00"),
         "updated_at": ts("2025-01-01 10:00"), "_loaded_at": T1},
        {"account_id": " A001 ", "name": "  Halvorsen   Test \t GmbH ", "industry": " Machinery ",
         "segment": " Enterprise ", "country": " de ", "city": "  Hamburg ", "street": "Neuweg 2",
         "postal_code": " 20095 ", "account_manager": "Eva  Berg", "created_at": ts("2020-01-01 10:00"),
         "updated_at": ts("2026-01-01 10:00"), "_loaded_at": T2},
        {"account_id": "A002", "name": "Nordic Pumps AS", "industry": "Pumps", "segment": "Mid Market",
         "country": "no", "city": "Oslo", "street": "Gate 3", "postal_code": "0150",
         "account_manager": "Jon Lie", "created_at": ts("2018-05-01 09:00"),
         "updated_at": ts("2019-05-01 09:00"), "_loaded_at": T1},
        # A003: deleted in the source, only a tombstone.
        {"account_id": "A003", "name": "Gone AG", "industry": "Retail", "segment": "smb", "country": "ch",
         "city": "Basel", "street": "x", "postal_code": "4001", "account_manager": "x",
         "created_at": ts("2021-01-01 00:00"), "updated_at": ts("2021-01-01 00:00"),
         "_loaded_at": T1, "_deleted": True},
        # A004: a live version loaded first, then its tombstone: must not fall back to the live copy.
        {"account_id": "A004", "name": "Later Gone KG", "industry": "Retail", "segment": "smb",
         "country": "at", "city": "Wien", "street": "y", "postal_code": "1010", "account_manager": "y",
         "created_at": ts("2021-01-01 00:00"), "updated_at": ts("2021-06-01 00:00"), "_loaded_at": T1},
        {"account_id": "A004", "name": "Later Gone KG", "industry": "Retail", "segment": "smb",
         "country": "at", "city": "Wien", "street": "y", "postal_code": "1010", "account_manager": "y",
         "created_at": ts("2021-01-01 00:00"), "updated_at": ts("2021-06-01 00:00"), "_loaded_at": T2,
         "_deleted": True},
    ],
    "crm_contacts": [
        {"contact_id": "C001", "account_id": "A001", "first_name": " John ", "last_name": "Doe  ",
         "email": "  John.DOE@Example.COM ", "phone": " +49 40 123456 ", "job_title": "Buyer",
         "created_at": ts("2022-01-01 00:00"), "updated_at": ts("2022-01-01 00:00")},
        {"contact_id": "C002", "account_id": "A002", "first_name": "Kari", "last_name": "Nordmann",
         "email": "kari@old.example", "phone": None, "job_title": None,
         "created_at": ts("2022-01-01 00:00"), "updated_at": ts("2022-01-01 00:00"), "_loaded_at": T1},
        {"contact_id": "C002", "account_id": "A002", "first_name": "Kari", "last_name": "Van  der   Berg",
         "email": "KARI@New.Example", "phone": "", "job_title": None,
         "created_at": ts("2022-01-01 00:00"), "updated_at": ts("2026-02-01 00:00"), "_loaded_at": T2},
        {"contact_id": "C003", "account_id": "A001", "first_name": "Deleted", "last_name": "Person",
         "email": "deleted@example.com", "phone": None, "job_title": None,
         "created_at": ts("2022-01-01 00:00"), "updated_at": ts("2022-01-01 00:00"), "_deleted": True},
    ],
    "support_tickets": [
        {"ticket_id": "T001", "account_id": "A001", "contact_id": "C001", "created_at": ts("2026-06-01 09:00"),
         "updated_at": ts("2026-06-02 09:00"), "channel": " Email", "category": "Product Question ",
         "priority": "HIGH", "status": " Open ", "product_sku": " hx-100 ", "subject": "  Pump   noise ",
         "body": "The pump is noisy.", "resolution": None},
        # T002: opened long before the 730-day window: in staging, not in cleaned.
        {"ticket_id": "T002", "account_id": "A002", "contact_id": "C002", "created_at": ts("2023-05-01 09:00"),
         "updated_at": ts("2023-05-10 09:00"), "channel": "phone", "category": "warranty",
         "priority": "normal", "status": "closed", "product_sku": "HX-200", "subject": "Old claim",
         "body": "Warranty claim.", "resolution": "Replaced."},
        # T003: two versions, the later one is resolved.
        {"ticket_id": "T003", "account_id": "A002", "contact_id": None, "created_at": ts("2026-09-01 09:00"),
         "updated_at": ts("2026-09-01 09:00"), "channel": "portal", "category": "billing",
         "priority": "low", "status": "open", "product_sku": None, "subject": "Invoice",
         "body": "Wrong invoice.", "resolution": None, "_loaded_at": T1},
        {"ticket_id": "T003", "account_id": "A002", "contact_id": None, "created_at": ts("2026-09-01 09:00"),
         "updated_at": ts("2026-09-05 09:00"), "channel": "Portal", "category": "Billing",
         "priority": "Low", "status": "Resolved", "product_sku": None, "subject": "Invoice",
         "body": "Wrong invoice.", "resolution": "Credit note sent.", "_loaded_at": T2},
        {"ticket_id": "T004", "account_id": "A001", "contact_id": None, "created_at": ts("2026-08-01 09:00"),
         "updated_at": ts("2026-08-01 09:00"), "channel": "email", "category": "shipping",
         "priority": "urgent", "status": "open", "product_sku": None, "subject": "Where is it",
         "body": "Late.", "resolution": None, "_deleted": True},
    ],
    "erp_orders": [
        {"order_id": "O001", "account_id": "A001", "order_date": dt.date(2026, 3, 1), "sku": "hx-100",
         "product_name": "Pump  HX 100", "quantity": 3, "unit_price": "1250.5000", "currency": " eur",
         "status": "Shipped ", "updated_at": ts("2026-03-02 00:00"), "_loaded_at": T1},
        {"order_id": "O001", "account_id": "A001", "order_date": dt.date(2026, 3, 1), "sku": "hx-100",
         "product_name": "Pump  HX 100", "quantity": 3, "unit_price": "1250.5000", "currency": " eur",
         "status": "Delivered", "updated_at": ts("2026-03-09 00:00"), "_loaded_at": T2},
        # O002: older than the 1095-day window.
        {"order_id": "O002", "account_id": "A002", "order_date": dt.date(2022, 1, 10), "sku": "HX-200",
         "product_name": "Pump HX 200", "quantity": 1, "unit_price": "999.0000", "currency": "NOK",
         "status": "delivered", "updated_at": ts("2022-01-20 00:00")},
        {"order_id": "O003", "account_id": "A002", "order_date": dt.date(2026, 5, 1), "sku": "HX-300",
         "product_name": "Valve", "quantity": 10, "unit_price": "12.0000", "currency": "EUR",
         "status": "open", "updated_at": ts("2026-05-01 00:00"), "_deleted": True},
    ],
    "kb_documents": [
        {"document_id": "D001", "path": "manuals/hx-100.md", "title": "  HX 100   Manual ", "format": "Markdown",
         "body": "# HX 100\nInstall it.", "content_hash": "h1", "size_bytes": 20,
         "modified_at": ts("2026-01-01 00:00")},
        {"document_id": "D002", "path": "faq/returns.html", "title": "Returns", "format": " HTML ",
         "body": "Returns within 30 days.", "content_hash": "h2", "size_bytes": 40,
         "modified_at": ts("2025-01-01 00:00"), "_loaded_at": T1},
        {"document_id": "D002", "path": "faq/returns.html", "title": "Returns policy", "format": "html",
         "body": "Returns within 60 days.", "content_hash": "h3", "size_bytes": 41,
         "modified_at": ts("2026-02-01 00:00"), "_loaded_at": T2},
        {"document_id": "D003", "path": "old/gone.pdf", "title": "Gone", "format": "pdf", "body": "x",
         "content_hash": "h4", "size_bytes": 1, "modified_at": ts("2020-01-01 00:00"), "_deleted": True},
    ],
}


def _source_columns() -> dict[str, dict[str, str]]:
    config = yaml.safe_load(SOURCES_YAML.read_text())
    tables: dict[str, dict[str, str]] = {}
    for src in config["sources"]:
        if src["kind"] == "documents":
            cols = dict(KB_COLUMNS)
        else:
            cols = {c["name"]: DUCKDB_TYPES[c.get("type", "string")] for c in src["columns"]}
        tables[src["name"]] = {**cols, **METADATA_COLUMNS}
    return tables


def _register() -> dict:
    return yaml.safe_load(REGISTER_YAML.read_text())["sources"]


def create_raw_warehouse(path: Path, extra_rows: dict[str, list[dict]] | None = None) -> None:
    tables = _source_columns()
    assert set(RAW_ROWS) == set(tables), "test data must cover every source in config/sources.yaml"
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema raw")
        for name, cols in tables.items():
            con.execute(f"create table raw.{name} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
            rows = RAW_ROWS[name] + (extra_rows or {}).get(name, [])
            for line, row in enumerate(rows, start=1):
                deleted = row.get("_deleted", False)
                loaded_at = row.get("_loaded_at", T1)
                record = {
                    **{c: row.get(c) for c in cols if not c.startswith("_")},
                    "_record_hash": f"hash-{name}-{line}",
                    "_source_file": f"{name}.test",
                    "_source_line": line,
                    "_loaded_at": loaded_at,
                    "_load_id": f"load-{loaded_at:%Y%m%d}",
                    "_deleted": deleted,
                    "_deleted_at": T3 if deleted else None,
                }
                con.execute(
                    f"insert into raw.{name} ({', '.join(record)}) values ({', '.join('?' * len(record))})",
                    list(record.values()),
                )
    finally:
        con.close()


def run_dbt(command: str, warehouse: Path, workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a dbt command in a subprocess; return the process and its run_results.json (if any)."""
    target = workdir / "target"
    env = {
        **os.environ,
        "AGENIX_WAREHOUSE": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
    }
    proc = subprocess.run(
        [
            str(DBT), command,
            "--project-dir", str(PROJECT_DIR),
            "--profiles-dir", str(PROJECT_DIR),
            "--target-path", str(target),
            "--log-path", str(workdir / "logs"),
            *args,
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    results_file = target / "run_results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return proc, results


def build(warehouse: Path, workdir: Path) -> tuple[subprocess.CompletedProcess, dict]:
    return run_dbt("build", warehouse, workdir, "--vars", f"{{as_of: {AS_OF}}}")


def query(warehouse: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def columns(warehouse: Path, schema: str, table: str) -> list[str]:
    return [
        r[0]
        for r in query(
            warehouse,
            f"select column_name from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position",
        )
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A warehouse with the test raw data, after one successful `dbt build`."""
    workdir = tmp_path_factory.mktemp("dbt_build")
    warehouse = workdir / "warehouse.duckdb"
    create_raw_warehouse(warehouse)
    proc, results = build(warehouse, workdir)
    assert proc.returncode == 0, f"dbt build failed:\n{proc.stdout}\n{proc.stderr}"
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    assert statuses and all(s in ("success", "pass") for s in statuses.values()), statuses
    return warehouse


def test_build_creates_all_models(built: Path) -> None:
    tables = {
        (s, t) for s, t in query(built, "select table_schema, table_name from information_schema.tables")
    }
    for name in RAW_ROWS:
        assert ("staging", f"stg_{name}") in tables
        assert ("cleaned", f"cleaned_{name}") in tables
    # generate_schema_name: plain schemas, no main_staging / main_cleaned.
    assert not {s for s, _ in tables if s.startswith("main_")}


def test_tombstones_are_dropped(built: Path) -> None:
    assert query(built, "select account_id from staging.stg_crm_accounts order by 1") == [("A001",), ("A002",)]
    assert query(built, "select count(*) from staging.stg_crm_contacts where contact_id = 'C003'") == [(0,)]
    assert query(built, "select count(*) from staging.stg_support_tickets where ticket_id = 'T004'") == [(0,)]
    assert query(built, "select count(*) from staging.stg_erp_orders where order_id = 'O003'") == [(0,)]
    assert query(built, "select document_id from cleaned.cleaned_kb_documents order by 1") == [("D001",), ("D002",)]


def test_duplicates_collapse_to_latest_version(built: Path) -> None:
    # A001's second row has a padded key " A001 ": trimmed, it is the same account and the newer one.
    assert query(built, "select name, segment, country, city from staging.stg_crm_accounts where account_id = 'A001'") == [
        ("Halvorsen Test GmbH", "enterprise", "DE", "Hamburg")
    ]
    assert query(built, "select last_name, email, phone from cleaned.cleaned_crm_contacts where contact_id = 'C002'") == [
        ("Van der Berg", "kari@new.example", None)
    ]
    assert query(built, "select status, resolution from staging.stg_support_tickets where ticket_id = 'T003'") == [
        ("resolved", "Credit note sent.")
    ]
    assert query(built, "select status, currency, sku from cleaned.cleaned_erp_orders where order_id = 'O001'") == [
        ("delivered", "EUR", "HX-100")
    ]
    assert query(built, "select title, format, content_hash from cleaned.cleaned_kb_documents where document_id = 'D002'") == [
        ("Returns policy", "html", "h3")
    ]
    for name, key in [("crm_accounts", "account_id"), ("crm_contacts", "contact_id"),
                      ("support_tickets", "ticket_id"), ("erp_orders", "order_id"), ("kb_documents", "document_id")]:
        n, distinct = query(built, f"select count(*), count(distinct {key}) from staging.stg_{name}")[0]
        assert n == distinct, name


def test_values_are_normalised(built: Path) -> None:
    assert query(built, "select first_name, last_name, email, phone from cleaned.cleaned_crm_contacts where contact_id = 'C001'") == [
        ("John", "Doe", "john.doe@example.com", "+49 40 123456")
    ]
    assert query(built, "select segment from cleaned.cleaned_crm_accounts where account_id = 'A002'") == [("mid_market",)]
    assert query(
        built,
        "select channel, category, priority, status, product_sku, subject "
        "from cleaned.cleaned_support_tickets where ticket_id = 'T001'",
    ) == [("email", "product_question", "high", "open", "HX-100", "Pump noise")]
    assert query(built, "select title, format from cleaned.cleaned_kb_documents where document_id = 'D001'") == [
        ("HX 100 Manual", "markdown")
    ]
    assert query(built, "select count(*) from staging.stg_crm_contacts where email <> lower(trim(email))") == [(0,)]


def test_history_windows(built: Path) -> None:
    # T002 (2023-05-01) is older than 730 days before as_of; O002 (2022-01-10) older than 1095 days.
    assert query(built, "select count(*) from staging.stg_support_tickets where ticket_id = 'T002'") == [(1,)]
    assert query(built, "select ticket_id from cleaned.cleaned_support_tickets order by 1") == [("T001",), ("T003",)]
    assert query(built, "select count(*) from staging.stg_erp_orders where order_id = 'O002'") == [(1,)]
    assert query(built, "select order_id from cleaned.cleaned_erp_orders order by 1") == [("O001",)]


def test_cleaned_columns_equal_register_allowed_fields(built: Path) -> None:
    for name, entry in _register().items():
        assert set(columns(built, "cleaned", f"cleaned_{name}")) == set(entry["allowed_fields"]), name


def test_cleaned_windows_match_register() -> None:
    """The window in each cleaned model's SQL is the register's history_window_days on its history_column."""
    for name, entry in _register().items():
        sql = (PROJECT_DIR / "models" / "cleaned" / f"cleaned_{name}.sql").read_text()
        code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
        windows = re.findall(r"where\s+(\w+)\s*>=\s*\{\{\s*as_of_date\(\)\s*\}\}\s*-\s*interval\s+(\d+)\s+day", code)
        if entry.get("history_window_days"):
            assert windows == [(entry["history_column"], str(entry["history_window_days"]))], name
        else:
            assert "interval" not in code, name
        assert "select *" not in code.lower(), name


def test_bad_status_fails_test_and_skips_cleaned_model(tmp_path: Path) -> None:
    bad = {
        "support_tickets": [
            {"ticket_id": "T900", "account_id": "A001", "contact_id": None,
             "created_at": ts("2026-10-01 09:00"), "updated_at": ts("2026-10-01 09:00"), "channel": "email",
             "category": "billing", "priority": "low", "status": "Escalated", "product_sku": None,
             "subject": "Bad", "body": "Bad status.", "resolution": None},
        ]
    }
    warehouse = tmp_path / "warehouse.duckdb"
    create_raw_warehouse(warehouse, extra_rows=bad)
    proc, results = build(warehouse, tmp_path)
    assert proc.returncode != 0
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    failing = [u for u, s in statuses.items() if s in ("fail", "error")]
    assert len(failing) == 1, statuses
    assert failing[0].startswith("test.agenix.accepted_values_stg_support_tickets_status"), failing
    assert statuses["model.agenix.cleaned_support_tickets"] == "skipped"
    # The other sources are unaffected.
    assert statuses["model.agenix.cleaned_crm_accounts"] == "success"
    assert statuses["model.agenix.cleaned_erp_orders"] == "success"


def test_parse_without_warehouse(tmp_path: Path) -> None:
    """dagster-dbt runs `dbt parse` to build the manifest; it must work before the warehouse exists."""
    warehouse = tmp_path / "not_yet" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    proc, _ = run_dbt("parse", warehouse, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    for name in RAW_ROWS:
        source = manifest["sources"][f"source.agenix.raw.{name}"]
        assert source["meta"]["dagster"]["asset_key"] == ["raw", name]
        assert manifest["nodes"][f"model.agenix.stg_{name}"]["schema"] == "staging"
        assert manifest["nodes"][f"model.agenix.cleaned_{name}"]["schema"] == "cleaned"
