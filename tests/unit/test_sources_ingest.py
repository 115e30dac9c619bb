"""Incremental, transactional ingestion of landing-zone sources into DuckDB (agenix_assets.core.sources)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from agenix_assets.core import sources as src
from agenix_assets.core.config import SourceConfig
from agenix_assets.core.sources import SourceError, ingest_source, source_files, source_fingerprint

T0 = dt.datetime(2026, 3, 1, 12, 0, 0)
T1 = dt.datetime(2026, 3, 2, 12, 0, 0)
T2 = dt.datetime(2026, 3, 3, 12, 0, 0)

ORDER_HEADER = "order_id,account_id,order_date,quantity,unit_price,status,updated_at"
ORDER_COLUMNS = [
    {"name": "order_id", "type": "string", "required": True},
    {"name": "account_id", "type": "string", "required": True},
    {"name": "order_date", "type": "date", "required": True},
    {"name": "quantity", "type": "integer", "required": True},
    {"name": "unit_price", "type": "decimal", "required": True},
    {"name": "status", "type": "string"},
    {"name": "updated_at", "type": "timestamp", "required": True},
]


def make_source(name: str, kind: str, location: str, **kw) -> SourceConfig:
    data = {
        "name": name,
        "kind": kind,
        "location": location,
        "primary_key": kw.pop("primary_key", "order_id"),
        "change_detection": kw.pop("change_detection", {"mode": "content_hash"}),
        "owner": "team:data",
        "data_domain": "test",
        "data_categories": ["test"],
        **kw,
    }
    return SourceConfig.model_validate(data)


def orders_source(**kw) -> SourceConfig:
    return make_source("erp_orders", "csv", "erp", pattern="*.csv", columns=ORDER_COLUMNS, **kw)


def order_line(i: int, qty: int = 1, status: str = "open") -> str:
    return f"O-{i:03d},A-{i % 3},2026-01-{i:02d},{qty},{i}.50,{status},2026-01-{i:02d}T08:00:00Z"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def bump_mtime(path: Path) -> None:
    """Make sure a rewritten file does not keep its old (size, mtime_ns), whatever the clock resolution."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    p = tmp_path / "landing"
    p.mkdir()
    return p


@pytest.fixture
def con(tmp_path: Path):
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


def one(con, sql: str) -> tuple:
    return con.execute(sql).fetchall()[0]


def live(con, table: str, cols: str = "*", order: str = "1") -> list[tuple]:
    return con.execute(f"SELECT {cols} FROM raw.{table} WHERE NOT _deleted ORDER BY {order}").fetchall()


def counts(r) -> tuple[int, ...]:
    return (r.inserted, r.updated, r.deleted, r.unchanged, r.quarantined)


# ---------------------------------------------------------------- CSV: the incremental cycle


def test_csv_first_load_rerun_edit_append(con, landing):
    f = write(landing / "erp" / "orders.csv", "\n".join([ORDER_HEADER] + [order_line(i) for i in range(1, 6)]) + "\n")
    s = orders_source()

    r1 = ingest_source(con, s, landing, now=T0)
    assert counts(r1) == (5, 0, 0, 0, 0)
    assert (r1.files_read, r1.files_unchanged, r1.files_removed, r1.row_count) == (1, 0, 0, 5)
    assert r1.cursor is None
    assert r1.schema[:7] == [
        ("order_id", "VARCHAR"), ("account_id", "VARCHAR"), ("order_date", "DATE"), ("quantity", "BIGINT"),
        ("unit_price", "DECIMAL(18,4)"), ("status", "VARCHAR"), ("updated_at", "TIMESTAMP"),
    ]
    assert [c for c, _ in r1.schema[7:]] == [
        "_record_hash", "_source_file", "_source_line", "_loaded_at", "_load_id", "_deleted", "_deleted_at"
    ]
    assert r1.preview[0] == {
        "order_id": "O-001", "account_id": "A-1", "order_date": dt.date(2026, 1, 1), "quantity": 1,
        "unit_price": Decimal("1.5000"), "status": "open", "updated_at": dt.datetime(2026, 1, 1, 8, 0),
    }
    assert [p["order_id"] for p in r1.preview] == ["O-001", "O-002", "O-003", "O-004", "O-005"]
    assert live(con, "erp_orders", "order_id, _source_file, _source_line, _loaded_at, _deleted")[2] == (
        "O-003", "erp/orders.csv", 4, T0, False)
    loads = con.execute("SELECT load_id, inserted, files_read FROM raw._agenix_loads").fetchall()
    assert loads == [(r1.load_id, 5, 1)]
    state = con.execute("SELECT source, path, size_bytes FROM raw._agenix_file_state").fetchall()
    assert state == [("erp_orders", "erp/orders.csv", f.stat().st_size)]

    # no change: the file is not even parsed
    r2 = ingest_source(con, s, landing, now=T1)
    assert counts(r2) == (0, 0, 0, 0, 0)
    assert (r2.files_read, r2.files_unchanged, r2.row_count) == (0, 1, 5)

    # touched but identical bytes: hashed, still unchanged
    bump_mtime(f)
    r2b = ingest_source(con, s, landing, now=T1)
    assert (r2b.files_read, r2b.files_unchanged, r2b.inserted + r2b.updated) == (0, 1, 0)

    # one row edited
    lines = f.read_text().splitlines()
    lines[2] = order_line(2, qty=7)
    write(f, "\n".join(lines) + "\n")
    bump_mtime(f)
    r3 = ingest_source(con, s, landing, now=T1)
    assert counts(r3) == (0, 1, 0, 4, 0)
    assert live(con, "erp_orders", "quantity, _loaded_at", "order_id")[1] == (7, T1)
    assert live(con, "erp_orders", "_loaded_at", "order_id")[0] == (T0,)  # unchanged rows keep their load time

    # one line inserted at the top: 1 inserted, the others unchanged but their line numbers follow
    lines.insert(1, order_line(9))
    write(f, "\n".join(lines) + "\n")
    bump_mtime(f)
    r4 = ingest_source(con, s, landing, now=T2)
    assert counts(r4) == (1, 0, 0, 5, 0)
    assert r4.row_count == 6
    assert live(con, "erp_orders", "order_id, _source_line", "order_id") == [
        ("O-001", 3), ("O-002", 4), ("O-003", 5), ("O-004", 6), ("O-005", 7), ("O-009", 2)]

    # a line removed: tombstone, the row stays
    del lines[4]  # O-003
    write(f, "\n".join(lines) + "\n")
    bump_mtime(f)
    r5 = ingest_source(con, s, landing, now=T2)
    assert counts(r5) == (0, 0, 1, 5, 0)
    assert one(con, "SELECT _deleted, _deleted_at FROM raw.erp_orders WHERE order_id = 'O-003'") == (True, T2)
    assert r5.row_count == 5
    assert one(con, "SELECT count(*) FROM raw._agenix_loads") == (6,)


def test_csv_file_removed_and_key_moved_to_another_file(con, landing):
    a = write(landing / "erp" / "a.csv", "\n".join([ORDER_HEADER, order_line(1), order_line(2)]) + "\n")
    write(landing / "erp" / "b.csv", "\n".join([ORDER_HEADER, order_line(3)]) + "\n")
    s = orders_source()
    assert counts(ingest_source(con, s, landing, now=T0)) == (3, 0, 0, 0, 0)
    # O-002 moves to b.csv, a.csv disappears: O-001 tombstoned, O-002 stays live from b.csv
    write(landing / "erp" / "b.csv", "\n".join([ORDER_HEADER, order_line(3), order_line(2)]) + "\n")
    bump_mtime(landing / "erp" / "b.csv")
    a.unlink()
    r = ingest_source(con, s, landing, now=T1)
    assert counts(r) == (0, 0, 1, 2, 0)
    assert (r.files_read, r.files_removed) == (1, 1)
    assert con.execute("SELECT order_id, _deleted, _source_file FROM raw.erp_orders ORDER BY 1").fetchall() == [
        ("O-001", True, "erp/a.csv"), ("O-002", False, "erp/b.csv"), ("O-003", False, "erp/b.csv")]
    assert con.execute("SELECT path FROM raw._agenix_file_state").fetchall() == [("erp/b.csv",)]
    # the file comes back: the tombstoned key is revived and counted as inserted
    write(a, "\n".join([ORDER_HEADER, order_line(1)]) + "\n")
    r = ingest_source(con, s, landing, now=T2)
    assert counts(r) == (1, 0, 0, 0, 0)
    assert one(con, "SELECT _deleted, _deleted_at FROM raw.erp_orders WHERE order_id = 'O-001'") == (False, None)


def test_csv_bad_rows_are_quarantined_and_good_rows_load(con, landing):
    rows = [
        ORDER_HEADER,
        order_line(1),
        order_line(2) + ",extra",                       # line 3: too many fields
        "O-004,A-1,2026-01-04,twelve,1.00,open,2026-01-04T08:00:00",  # line 4: bad integer
        "O-005,,2026-01-05,1,1.00,open,2026-01-05T08:00:00",  # line 5: required empty
        "O-006,A-1,2026-13-45,1,1.00,open,2026-01-05 08:00:00",  # line 6: bad date
        order_line(7),
    ]
    data = ("\n".join(rows) + "\n").encode() + b"O-008,A-\xff,2026-01-08,1,1.00,open,2026-01-08T08:00:00\n"
    data += (order_line(9) + "\n").encode()
    write(landing / "erp" / "orders.csv", data)
    r = ingest_source(con, orders_source(), landing, now=T0)
    assert counts(r) == (3, 0, 0, 0, 5)
    assert [x[0] for x in live(con, "erp_orders", "order_id")] == ["O-001", "O-007", "O-009"]
    got = [(q.file, q.line, q.field, q.reason) for q in r.quarantine]
    assert got == [
        ("erp/orders.csv", 3, None, "line 3: expected 7 fields, found 8"),
        ("erp/orders.csv", 4, "quantity", "line 4: field 'quantity': 'twelve' is not an integer"),
        ("erp/orders.csv", 5, "account_id", "line 5: required field 'account_id' is empty"),
        ("erp/orders.csv", 6, "order_date",
         "line 6: field 'order_date': '2026-13-45' is not a date (expected YYYY-MM-DD)"),
        ("erp/orders.csv", 8, None,
         "line 8: not valid UTF-8: invalid byte 0xff at offset 8 of the line (byte 406 of the file)"),
    ]
    assert r.quarantine[0].raw == order_line(2) + ",extra\n"
    assert r.quarantine[1].message == "erp_orders: erp/orders.csv:4: " + got[1][3]
    stored = con.execute(
        "SELECT load_id, source, file, line, field, reason FROM raw._agenix_quarantine ORDER BY line").fetchall()
    assert stored[1] == (r.load_id, "erp_orders", "erp/orders.csv", 4, "quantity", got[1][3])
    assert len(stored) == 5


def test_csv_missing_required_column_quarantines_the_file_only(con, landing):
    write(landing / "erp" / "a.csv", "\n".join([ORDER_HEADER, order_line(1)]) + "\n")
    bad_header = ORDER_HEADER.replace(",unit_price", "").replace("quantity", "quantity,color")
    write(landing / "erp" / "b.csv", bad_header + "\nO-002,A-1,2026-01-02,1,red,open,2026-01-02T08:00:00\n")
    r = ingest_source(con, orders_source(), landing, now=T0)
    assert counts(r) == (1, 0, 0, 0, 1)
    q = r.quarantine[0]
    assert (q.file, q.line, q.field) == ("erp/b.csv", 1, "unit_price")
    assert q.reason == (
        "missing required column 'unit_price' (expected: order_id, account_id, order_date, quantity, "
        "unit_price, status, updated_at)"
    )
    assert q.raw == bad_header + "\n"


def test_csv_duplicate_key_in_one_load_keeps_the_last(con, landing):
    write(landing / "erp" / "o.csv", "\n".join([ORDER_HEADER, order_line(1), order_line(1, qty=5)]) + "\n")
    r = ingest_source(con, orders_source(), landing, now=T0)
    assert counts(r) == (1, 0, 0, 0, 1)
    assert r.quarantine[0].reason == "line 2: duplicate primary key 'O-001': replaced by erp/o.csv line 3"
    assert live(con, "erp_orders", "quantity") == [(5,)]


def test_missing_location_raises_source_error(con, landing):
    s = orders_source()
    with pytest.raises(SourceError) as err:
        ingest_source(con, s, landing)
    assert str(err.value) == (
        f"source 'erp_orders': location '{landing / 'erp'}' does not exist (sources.yaml: location)"
    )
    with pytest.raises(SourceError, match="does not exist"):
        source_fingerprint(s, landing)


def test_source_files_and_fingerprint(landing):
    write(landing / "docs" / "a.md", "# A\n")
    write(landing / "docs" / "sub" / "b.md", "# B\n")
    write(landing / "docs" / ".hidden.md", "x")
    write(landing / "docs" / "_draft" / "c.md", "x")
    write(landing / "docs" / "sub" / "_tmp.md", "x")
    s = make_source("kb", "documents", "docs", pattern="**/*", primary_key="document_id")
    files = source_files(s, landing)
    assert [p.relative_to(landing).as_posix() for p in files] == ["docs/a.md", "docs/sub/b.md"]
    fp = source_fingerprint(s, landing)
    assert fp == source_fingerprint(s, landing)
    write(landing / "docs" / "sub" / "b.md", "# B changed\n")
    assert source_fingerprint(s, landing) != fp
    single = make_source("kb2", "documents", "docs/a.md", primary_key="document_id")
    assert source_files(single, landing) == [landing / "docs" / "a.md"]


# ---------------------------------------------------------------- JSONL


TICKET_COLUMNS = [
    {"name": "ticket_id", "type": "string", "required": True},
    {"name": "priority", "type": "integer"},
    {"name": "urgent", "type": "boolean"},
    {"name": "score", "type": "float"},
    {"name": "body", "type": "string", "required": True},
    {"name": "updated_at", "type": "timestamp", "required": True},
]


def ticket(i: int, **kw) -> str:
    obj = {"ticket_id": f"T-{i}", "priority": i, "urgent": i % 2 == 0, "score": i / 4,
           "body": f"Printer {i} is broken", "updated_at": f"2026-02-0{i}T10:00:00+01:00", "extra": [1, 2]}
    obj.update(kw)
    return json.dumps(obj)


def test_jsonl_bad_lines_are_quarantined_and_cursor_recorded(con, landing):
    lines = [
        ticket(1).encode(),
        b'{"ticket_id": "T-2", "body": "x" "updated_at": "2026-02-02"}',      # line 2 invalid JSON
        b"[1, 2, 3]",                                                         # line 3 not an object
        ticket(4).encode()[:-2] + b'\xff"}',                                  # line 4 non-UTF-8
        b"",                                                                  # line 5 blank: skipped
        ticket(6, priority="high").encode(),                                  # line 6 bad integer
        ticket(7, body=None).encode(),                                        # line 7 required missing
        ticket(8).encode(),
    ]
    write(landing / "tickets" / "2026-02.jsonl", b"\n".join(lines) + b"\n")
    s = make_source("support_tickets", "jsonl", "tickets", pattern="*.jsonl", primary_key="ticket_id",
                    change_detection={"mode": "cursor", "cursor_column": "updated_at"}, columns=TICKET_COLUMNS)
    r = ingest_source(con, s, landing, now=T0)
    assert counts(r) == (2, 0, 0, 0, 5)
    assert [(q.line, q.field, q.reason) for q in r.quarantine] == [
        (2, None, "line 2: invalid JSON: Expecting ',' delimiter at column 34"),
        (3, None, "line 3: expected a JSON object, found array"),
        (4, None, "line 4: not valid UTF-8: invalid byte 0xff at offset 154 of the line (byte 384 of the file)"),
        (6, "priority", "line 6: field 'priority': 'high' is not an integer"),
        (7, "body", "line 7: required field 'body' is missing"),
    ]
    assert live(con, "support_tickets", "ticket_id, priority, urgent, score, updated_at") == [
        ("T-1", 1, False, 0.25, dt.datetime(2026, 2, 1, 9, 0)),
        ("T-8", 8, True, 2.0, dt.datetime(2026, 2, 8, 9, 0)),
    ]
    assert r.cursor == "2026-02-08 09:00:00"
    assert con.execute("SELECT cursor_value FROM raw._agenix_cursor_state").fetchall() == [("2026-02-08 09:00:00",)]


def test_jsonl_cursor_mode_newest_version_wins_across_files(con, landing):
    s = make_source("support_tickets", "jsonl", "tickets", pattern="*.jsonl", primary_key="ticket_id",
                    change_detection={"mode": "cursor", "cursor_column": "updated_at"}, columns=TICKET_COLUMNS)
    jan = write(landing / "tickets" / "2026-01.jsonl", ticket(1, body="old", updated_at="2026-01-05T00:00:00") + "\n")
    write(landing / "tickets" / "2026-02.jsonl", ticket(1, body="new", updated_at="2026-02-05T00:00:00") + "\n")
    r = ingest_source(con, s, landing, now=T0)
    assert counts(r) == (1, 0, 0, 0, 0)  # the older version is superseded silently in cursor mode
    assert live(con, "support_tickets", "body, _source_file") == [("new", "tickets/2026-02.jsonl")]
    # the older file changes later: its stale version never overwrites the newer one
    write(jan, ticket(1, body="older edit", updated_at="2026-01-06T00:00:00") + "\n" + ticket(2) + "\n")
    bump_mtime(jan)
    r = ingest_source(con, s, landing, now=T1)
    assert counts(r) == (1, 0, 0, 1, 0)
    assert live(con, "support_tickets", "ticket_id, body") == [("T-1", "new"), ("T-2", "Printer 2 is broken")]
    assert r.cursor == "2026-02-05 00:00:00"


# ---------------------------------------------------------------- SQL (SQLite) in cursor mode

ACCOUNT_COLUMNS = [
    {"name": "account_id", "type": "string", "required": True},
    {"name": "name", "type": "string", "required": True},
    {"name": "employees", "type": "integer"},
    {"name": "updated_at", "type": "timestamp", "required": True},
]


def make_crm(db: Path, n: int = 5) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE accounts (account_id TEXT PRIMARY KEY, name TEXT, employees INTEGER, "
              "updated_at TEXT, internal_note TEXT)")
    c.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, 'x')",
                  [(f"A-{i}", f"Acme {i}", i * 10, f"2026-01-0{i} 10:00:00") for i in range(1, n + 1)])
    c.commit()
    c.close()


def sql_exec(db: Path, sql: str, params=()) -> None:
    c = sqlite3.connect(db)
    c.execute(sql, params)
    c.commit()
    c.close()
    bump_mtime(db)


def test_sql_cursor_mode_reads_only_newer_rows_and_detects_deletes(con, landing):
    db = landing / "crm" / "crm.sqlite"
    make_crm(db)
    s = make_source("crm_accounts", "sql", "crm/crm.sqlite", table="accounts", primary_key="account_id",
                    change_detection={"mode": "cursor", "cursor_column": "updated_at"}, columns=ACCOUNT_COLUMNS)
    r = ingest_source(con, s, landing, now=T0)
    assert counts(r) == (5, 0, 0, 0, 0)
    assert (r.files_read, r.cursor) == (1, "2026-01-05 10:00:00")
    assert live(con, "crm_accounts", "account_id, _source_file, _source_line")[0] == ("A-1", "crm/crm.sqlite", None)

    r = ingest_source(con, s, landing, now=T1)  # database file untouched: not even opened
    assert counts(r) == (0, 0, 0, 0, 0) and r.files_unchanged == 1

    # one row changes and moves the cursor; another changes content but not its cursor (not seen: cursor mode)
    sql_exec(db, "UPDATE accounts SET name = 'Acme One', updated_at = '2026-02-01 09:00:00' WHERE account_id = 'A-1'")
    sql_exec(db, "UPDATE accounts SET name = 'silently changed' WHERE account_id = 'A-2'")
    r = ingest_source(con, s, landing, now=T1)
    assert counts(r) == (0, 1, 0, 0, 0)  # exactly one row was queried
    assert r.cursor == "2026-02-01 09:00:00"
    assert live(con, "crm_accounts", "name", "account_id")[:2] == [("Acme One",), ("Acme 2",)]

    # a deleted row is found by the key scan; a new row comes in through the cursor
    sql_exec(db, "DELETE FROM accounts WHERE account_id = 'A-3'")
    sql_exec(db, "INSERT INTO accounts VALUES ('A-9', 'Nine', 'many', '2026-02-02 00:00:00', '')")
    r = ingest_source(con, s, landing, now=T2)
    assert counts(r) == (0, 0, 1, 0, 1)
    assert r.quarantine[0].reason == "row account_id='A-9': field 'employees': 'many' is not an integer"
    assert r.quarantine[0].field == "employees" and r.quarantine[0].line is None
    assert one(con, "SELECT _deleted, _deleted_at FROM raw.crm_accounts WHERE account_id = 'A-3'") == (True, T2)
    assert r.row_count == 4 and r.cursor == "2026-02-02 00:00:00"


def test_sql_missing_table_is_a_source_error(con, landing):
    make_crm(landing / "crm.sqlite")
    s = make_source("crm_accounts", "sql", "crm.sqlite", table="customers", primary_key="account_id",
                    change_detection={"mode": "content_hash"}, columns=ACCOUNT_COLUMNS)
    with pytest.raises(SourceError, match=r"table 'customers' not found in '.*crm.sqlite' \(sources.yaml: table\)"):
        ingest_source(con, s, landing)
    # the failed load left nothing behind and the connection is usable
    assert one(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'") == (0,)


# ---------------------------------------------------------------- Parquet and schema evolution


def test_parquet_and_added_config_column(con, landing):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (landing / "pq").mkdir()
    pq.write_table(pa.table({"order_id": ["P-1", "P-2"], "account_id": ["A", "B"],
                             "order_date": [dt.date(2026, 1, 1), dt.date(2026, 1, 2)],
                             "quantity": [1, 2], "unit_price": [1.5, 2.25], "status": ["x", "y"],
                             "updated_at": [dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2)],
                             "channel": ["web", "phone"]}), landing / "pq" / "a.parquet")
    pq.write_table(pa.table({"order_id": ["P-3"]}), landing / "pq" / "b.parquet")
    s = make_source("pq_orders", "parquet", "pq", columns=ORDER_COLUMNS)
    r = ingest_source(con, s, landing, now=T0)
    assert counts(r) == (2, 0, 0, 0, 1)
    assert r.quarantine[0].reason == (
        "missing required column 'account_id' (expected: order_id, account_id, order_date, quantity, "
        "unit_price, status, updated_at)")
    assert live(con, "pq_orders", "order_id, unit_price, _source_line") == [
        ("P-1", Decimal("1.5"), 1), ("P-2", Decimal("2.25"), 2)]

    # the config gains a column: ALTER TABLE ADD COLUMN, files are read again, nothing is lost
    s2 = make_source("pq_orders", "parquet", "pq", columns=ORDER_COLUMNS + [{"name": "channel"}])
    r = ingest_source(con, s2, landing, now=T1)
    assert (r.files_read, r.inserted, r.updated) == (2, 0, 2)
    assert live(con, "pq_orders", "order_id, channel") == [("P-1", "web"), ("P-2", "phone")]
    assert ("channel", "VARCHAR") in r.schema


# ---------------------------------------------------------------- documents


def make_pdf(path: Path, text: str | None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    if text:
        pdf.set_font("helvetica", size=12)
        pdf.cell(text=text)
    else:
        pdf.rect(20, 20, 80, 40, style="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


HTML = """<!doctype html><html><head><title>Reset guide</title><style>.x{color:red}</style>
<script>var secret = "SCRIPT-TEXT";</script></head>
<body><noscript>NOSCRIPT-TEXT</noscript><h1>Reset   the router</h1><p>Hold the
button for <b>10 seconds</b>.</p><h2>Lights</h2><ul><li>Green: ok</li><li>Red: call us</li></ul>
<style>p{}</style><h3>Notes</h3><div>Done.<br>Really.</div></body></html>"""


def docs_source() -> SourceConfig:
    return make_source("kb_documents", "documents", "documents", pattern="**/*", primary_key="document_id")


def test_documents_good_and_bad_inputs(con, landing, monkeypatch):
    d = landing / "documents"
    write(d / "guides" / "setup.md", "Intro\n\n# Setting up\n\nPlug it in.\n")
    write(d / "notes.txt", "plain words\n")
    write(d / "reset.html", HTML)
    make_pdf(d / "manual.pdf", "Warranty terms apply for two years")
    make_pdf(d / "scan.pdf", None)
    write(d / "empty.md", b"")
    write(d / "junk.md", bytes(range(256)) * 2)
    write(d / "latin1.md", "# Caf\u00e9\n".encode("latin-1"))
    write(d / "broken.pdf", b"%PDF-1.4 this is not really a pdf")
    write(d / "report.docx", b"PK\x03\x04 zip")
    write(d / "huge.md", "x" * 2000)
    monkeypatch.setattr(src, "MAX_DOCUMENT_BYTES", 1000)

    r = ingest_source(con, docs_source(), landing, now=T0)
    assert (r.inserted, r.quarantined, r.files_read) == (4, 7, 11)
    reasons = {q.file: q.reason for q in r.quarantine}
    assert {k: v for k, v in reasons.items() if k != "documents/broken.pdf"} == {
        "documents/empty.md": "empty document",
        "documents/junk.md": "binary content in a text file",
        "documents/latin1.md": "not valid UTF-8: invalid byte 0xe9 at offset 5",
        "documents/scan.pdf": "PDF has no extractable text (scanned image?)",
        "documents/report.docx": "unsupported file type .docx",
        "documents/huge.md": "file is 2,000 bytes, over the 1,000-byte limit (MAX_DOCUMENT_BYTES)",
    }
    assert reasons["documents/broken.pdf"].startswith("unreadable PDF: ")

    rows = {row[0]: row for row in live(con, "kb_documents", "document_id, path, title, format, body, size_bytes")}
    assert sorted(rows) == ["guides/setup.md", "manual.pdf", "notes.txt", "reset.html"]
    assert rows["guides/setup.md"][1:4] == ("documents/guides/setup.md", "Setting up", "markdown")
    assert rows["notes.txt"][2:5] == ("notes", "text", "plain words\n")
    assert rows["manual.pdf"][3:5] == ("pdf", "Warranty terms apply for two years")
    assert rows["manual.pdf"][2] == "Warranty terms apply for two years"
    html = rows["reset.html"]
    assert html[2:4] == ("Reset guide", "html")
    assert html[4] == (
        "# Reset the router\n\nHold the button for 10 seconds.\n\n## Lights\n\n- Green: ok\n- Red: call us\n\n"
        "### Notes\n\nDone.\nReally."
    )
    assert "SCRIPT-TEXT" not in html[4] and "NOSCRIPT" not in html[4] and "color" not in html[4]
    content_hash, modified = one(
        con, "SELECT content_hash, modified_at FROM raw.kb_documents WHERE document_id = 'notes.txt'")
    import hashlib
    assert content_hash == hashlib.sha256(b"plain words\n").hexdigest()
    mtime_us = (d / "notes.txt").stat().st_mtime_ns // 1000
    assert modified == dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=mtime_us)

    # bad files are remembered: not quarantined again while they do not change
    r = ingest_source(con, docs_source(), landing, now=T1)
    assert (r.inserted, r.quarantined, r.files_unchanged) == (0, 0, 11)

    # a deleted document becomes a tombstone and stays in the table
    (d / "notes.txt").unlink()
    r = ingest_source(con, docs_source(), landing, now=T2)
    assert (r.deleted, r.files_removed, r.row_count) == (1, 1, 3)
    assert one(con, "SELECT _deleted, _deleted_at, body FROM raw.kb_documents WHERE document_id = 'notes.txt'") == (
        True, T2, "plain words\n")

    # an edit that breaks a loaded document keeps its last good version live
    write(d / "guides" / "setup.md", b"")
    r = ingest_source(con, docs_source(), landing, now=T2)
    assert (r.deleted, r.updated, r.quarantined, r.row_count) == (0, 0, 1, 3)
    assert r.quarantine[0].reason == "empty document"


def test_documents_20mb_markdown_loads(con, landing):
    paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20 + "\n\n"
    text = "# Big manual\n\n" + paragraph * (20 * 1024 * 1024 // len(paragraph) + 1)
    write(landing / "documents" / "big.md", text)
    r = ingest_source(con, docs_source(), landing, now=T0)
    assert (r.inserted, r.quarantined) == (1, 0)
    assert one(con, "SELECT title, length(body), size_bytes > 20 * 1024 * 1024 FROM raw.kb_documents") == (
        "Big manual", len(text), True)
    assert len(r.preview[0]["body"]) == 503


# ---------------------------------------------------------------- atomicity


class FailingConnection:
    """Passes everything to DuckDB but fails the load-log insert, i.e. after the raw rows were written."""

    def __init__(self, con):
        self._con = con
        self.raw_rows_seen: int | None = None

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, params=None):
        if "_agenix_loads" in sql and sql.lstrip().startswith("INSERT"):
            self.raw_rows_seen = one(self._con, "SELECT count(*) FROM raw.erp_orders")[0]
            raise RuntimeError("disk full (simulated)")
        return self._con.execute(sql, params) if params is not None else self._con.execute(sql)


def snapshot(con) -> dict[str, list[tuple]]:
    return {t: con.execute(f"SELECT * FROM raw.{t} ORDER BY ALL").fetchall()
            for t in ("erp_orders", "_agenix_file_state", "_agenix_quarantine", "_agenix_loads",
                      "_agenix_cursor_state")}


def test_a_failing_load_changes_nothing(con, landing):
    f = write(landing / "erp" / "orders.csv", "\n".join([ORDER_HEADER, order_line(1), order_line(2)]) + "\n")
    s = orders_source()
    ingest_source(con, s, landing, now=T0)
    before = snapshot(con)

    write(f, "\n".join([ORDER_HEADER, order_line(1, qty=3), order_line(4), "bad,row"]) + "\n")
    bump_mtime(f)
    failing = FailingConnection(con)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_source(failing, s, landing, now=T1)
    assert failing.raw_rows_seen == 3  # the raw rows were written inside the transaction ...
    assert snapshot(con) == before     # ... and rolled back with everything else

    r = ingest_source(con, s, landing, now=T2)
    assert counts(r) == (1, 1, 1, 0, 1)
    assert live(con, "erp_orders", "order_id, quantity") == [("O-001", 3), ("O-004", 1)]


def test_first_load_failure_leaves_no_tables(con, landing, monkeypatch):
    write(landing / "erp" / "orders.csv", "\n".join([ORDER_HEADER, order_line(1)]) + "\n")

    original = src._table_columns

    def fail_once_the_table_exists(con, name):
        if one(con, f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{name}'") == (0,):
            return original(con, name)  # the call that creates the table
        raise RuntimeError("boom")  # the call after the rows were written

    monkeypatch.setattr(src, "_table_columns", fail_once_the_table_exists)
    with pytest.raises(RuntimeError, match="boom"):
        ingest_source(con, orders_source(), landing, now=T0)
    assert one(con, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw'") == (0,)
    monkeypatch.undo()
    assert ingest_source(con, orders_source(), landing, now=T0).inserted == 1
