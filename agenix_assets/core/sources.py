"""Config-driven, incremental, transactional ingestion of landing-zone sources into DuckDB (raw.<source>).

One call of :func:`ingest_source` is one DuckDB transaction. It

1. finds the source's files (or its SQLite database) under the landing zone,
2. skips files whose bytes did not change since the last load (state in ``raw._agenix_file_state``;
   a (size, mtime_ns) pre-check avoids hashing, then the sha256 decides),
3. parses new and changed files record by record against the schema contract in ``config/sources.yaml``;
   every record that breaks the contract goes to ``raw._agenix_quarantine`` with a reason naming the
   file, the line and the field, and never stops the good records,
4. hashes every parsed record (a stable hash of its typed config-column values) and compares it by
   primary key with the live table: new key -> inserted, other hash -> updated in place, same hash ->
   unchanged; records of changed or removed files that are gone become tombstones
   (``_deleted = true``) and are revived when they reappear,
5. records file state, the cursor high-water mark and a row in ``raw._agenix_loads``,

and commits all of it together, or rolls all of it back and re-raises.

No Dagster import here: the asset factory, the landing sensor and the tests all call this module.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import duckdb
import pyarrow as pa

from agenix_assets.core.config import ColumnSpec, SourceConfig

# ---------------------------------------------------------------- constants

RAW_SCHEMA = "raw"
#: Documents larger than this are quarantined instead of parsed (a 20 MB Markdown file loads fine).
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
#: Quarantined raw text is cut to this many characters.
RAW_TEXT_LIMIT = 2000
#: Share of control characters above which a "text" file is treated as binary junk.
BINARY_CONTROL_RATIO = 0.30
#: Rows fetched from SQLite per round trip.
SQL_FETCH_SIZE = 10_000

FILE_STATE_TABLE = "_agenix_file_state"
CURSOR_STATE_TABLE = "_agenix_cursor_state"
QUARANTINE_TABLE = "_agenix_quarantine"
LOADS_TABLE = "_agenix_loads"

DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "decimal": "DECIMAL(18,4)",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.large_string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "decimal": pa.decimal128(18, 4),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}

METADATA_COLUMNS: list[tuple[str, str]] = [
    ("_record_hash", "VARCHAR"),
    ("_source_file", "VARCHAR"),
    ("_source_line", "INTEGER"),
    ("_loaded_at", "TIMESTAMP"),
    ("_load_id", "VARCHAR"),
    ("_deleted", "BOOLEAN"),
    ("_deleted_at", "TIMESTAMP"),
]

#: The fixed columns of a ``documents`` source.
DOCUMENT_COLUMNS: list[ColumnSpec] = [
    ColumnSpec(name="document_id", type="string", required=True,
               description="path relative to the source location (posix)"),
    ColumnSpec(name="path", type="string", required=True, description="path relative to the landing zone"),
    ColumnSpec(name="title", type="string"),
    ColumnSpec(name="format", type="string", required=True, description="markdown | html | pdf | text"),
    ColumnSpec(name="body", type="string", required=True, description="extracted plain text"),
    ColumnSpec(name="content_hash", type="string", required=True, description="sha256 of the file bytes"),
    ColumnSpec(name="size_bytes", type="integer", required=True),
    ColumnSpec(name="modified_at", type="timestamp", required=True, description="file mtime (UTC)"),
]

DOCUMENT_FORMATS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}


# ---------------------------------------------------------------- public types


class SourceError(Exception):
    """A source cannot be loaded at all (missing location, missing SQL table, schema conflict, ...)."""


@dataclass
class QuarantinedRecord:
    source: str
    file: str
    line: int | None
    field: str | None
    reason: str
    raw: str
    # True when the whole file was rejected (its header, encoding or format), not one record of it.
    whole_file: bool = False

    @property
    def message(self) -> str:
        """One line for logs: ``erp/orders.csv:57: line 57: expected 10 fields, found 11``."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{self.source}: {where}: {self.reason}"


@dataclass
class LoadResult:
    source: str
    load_id: str
    inserted: int
    updated: int
    deleted: int
    unchanged: int
    quarantined: int
    files_read: int
    files_unchanged: int
    files_removed: int
    row_count: int
    quarantine: list[QuarantinedRecord] = field(default_factory=list)
    schema: list[tuple[str, str]] = field(default_factory=list)
    preview: list[dict] = field(default_factory=list)
    cursor: str | None = None


# ---------------------------------------------------------------- small helpers


def _q(identifier: str) -> str:
    """Quote an identifier that comes from validated config (names match ^[A-Za-z_][A-Za-z0-9_]*$)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", identifier):
        raise SourceError(f"invalid identifier {identifier!r}")
    return '"' + identifier + '"'


def _table(name: str) -> str:
    return f"{_q(RAW_SCHEMA)}.{_q(name)}"


def _clip(text: str, limit: int = RAW_TEXT_LIMIT) -> str:
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utc_naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def columns_of(source: SourceConfig) -> list[ColumnSpec]:
    """The config columns of raw.<source> (the fixed DOCUMENT_COLUMNS for documents sources)."""
    return list(DOCUMENT_COLUMNS) if source.kind == "documents" else list(source.columns)


def _location(source: SourceConfig, landing: Path) -> Path:
    loc = Path(source.location).expanduser()
    return loc if loc.is_absolute() else Path(landing) / loc


def _rel(path: Path, landing: Path) -> str:
    try:
        return path.relative_to(landing).as_posix()
    except ValueError:
        pass
    try:
        return path.resolve().relative_to(Path(landing).resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_hidden(rel_parts: Iterable[str]) -> bool:
    return any(part.startswith((".", "_")) for part in rel_parts)


# ---------------------------------------------------------------- files and fingerprint


def source_files(source: SourceConfig, landing: Path) -> list[Path]:
    """The files of a file source (sorted by relative path); for a sql source its database file."""
    landing = Path(landing)
    loc = _location(source, landing)
    if not loc.exists():
        raise SourceError(
            f"source '{source.name}': location '{loc}' does not exist (sources.yaml: location)"
        )
    if source.kind == "sql":
        if not loc.is_file():
            raise SourceError(
                f"source '{source.name}': location '{loc}' is not a file; a sql source needs a SQLite "
                f"database file (sources.yaml: location)"
            )
        return [loc]
    if loc.is_file():
        return [loc]
    pattern = source.pattern or "*"
    found = []
    for path in loc.glob(pattern):
        rel = path.relative_to(loc)
        if _is_hidden(rel.parts):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(loc).as_posix())


def _wal_file(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def source_fingerprint(source: SourceConfig, landing: Path) -> str:
    """A cheap hash of (relative path, size, mtime_ns) of the source's files; contents are not read.

    For sql sources the SQLite write-ahead log (``<db>-wal``) is included when present, because committed
    changes can sit there while the database file itself is untouched.
    """
    landing = Path(landing)
    files = source_files(source, landing)
    if source.kind == "sql":
        wal = _wal_file(files[0])
        if wal.exists():
            files = [*files, wal]
    h = hashlib.sha256()
    h.update(f"{source.name}\n".encode())
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:  # removed while listing
            continue
        h.update(f"{_rel(path, landing)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


# ---------------------------------------------------------------- typed values

_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_NUM_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TS_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?", re.ASCII
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_INT64_MAX = 2**63 - 1
_DECIMAL_LIMIT = Decimal(10) ** 14
_QUANT = Decimal("0.0001")


class _BadValue(Exception):
    """A value that does not parse as its column's type; the message completes "field 'x': ..."."""


def _to_string(v: Any) -> str:
    if isinstance(v, str):
        if not v.isascii() and _SURROGATE_RE.search(v):
            raise _BadValue(f"{_short(v)} is not valid UTF-8 text")
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, Decimal)):
        return str(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadValue(f"bytes are not valid UTF-8 (invalid byte 0x{v[exc.start]:02x} at offset {exc.start})")
    raise _BadValue(f"expected a string, found {type(v).__name__} {_short(v)}")


def _to_integer(v: Any) -> int:
    if isinstance(v, bool):
        raise _BadValue(f"{v!r} is not an integer")
    if isinstance(v, int):
        out = v
    elif isinstance(v, float) and v.is_integer():
        out = int(v)
    elif isinstance(v, Decimal) and v == v.to_integral_value():
        out = int(v)
    elif isinstance(v, str) and _INT_RE.fullmatch(v.strip()):
        out = int(v.strip())
    else:
        raise _BadValue(f"{_short(v)} is not an integer")
    if not -_INT64_MAX - 1 <= out <= _INT64_MAX:
        raise _BadValue(f"{_short(v)} is out of range for a 64-bit integer")
    return out


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise _BadValue(f"{v!r} is not a number")
    if isinstance(v, (int, float, Decimal)):
        return float(v)
    if isinstance(v, str) and _NUM_RE.fullmatch(v.strip()):
        return float(v.strip())
    raise _BadValue(f"{_short(v)} is not a number")


def _to_decimal(v: Any) -> Decimal:
    if isinstance(v, bool):
        raise _BadValue(f"{v!r} is not a decimal number")
    try:
        if isinstance(v, Decimal):
            d = v
        elif isinstance(v, int):
            d = Decimal(v)
        elif isinstance(v, float):
            d = Decimal(repr(v))
        elif isinstance(v, str) and _NUM_RE.fullmatch(v.strip()):
            d = Decimal(v.strip())
        else:
            raise _BadValue(f"{_short(v)} is not a decimal number")
        if not d.is_finite():
            raise _BadValue(f"{_short(v)} is not a decimal number")
        d = d.quantize(_QUANT, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        raise _BadValue(f"{_short(v)} is out of range for DECIMAL(18,4)") from None
    if abs(d) >= _DECIMAL_LIMIT:
        raise _BadValue(f"{_short(v)} is out of range for DECIMAL(18,4)")
    return d


def _to_boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise _BadValue(f"{_short(v)} is not a boolean (expected true/false)")


def _to_date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        if v.time() == dt.time(0):
            return v.date()
        raise _BadValue(f"{_short(v)} is not a date (it has a time of day)")
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str) and _DATE_RE.fullmatch(v.strip()):
        try:
            return dt.date.fromisoformat(v.strip())
        except ValueError:
            pass
    raise _BadValue(f"{_short(v)} is not a date (expected YYYY-MM-DD)")


def _to_timestamp(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return _utc_naive(v)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    if isinstance(v, str):
        s = v.strip()
        if _TS_RE.fullmatch(s):
            try:
                return _utc_naive(dt.datetime.fromisoformat(s))
            except ValueError:
                pass
    raise _BadValue(f"{_short(v)} is not a timestamp (expected YYYY-MM-DD[THH:MM:SS[.ffffff]][Z|+HH:MM])")


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": _to_string,
    "integer": _to_integer,
    "float": _to_float,
    "decimal": _to_decimal,
    "boolean": _to_boolean,
    "date": _to_date,
    "timestamp": _to_timestamp,
}


def _record_hash(names: list[str], values: list[Any]) -> str:
    """Stable hash of typed values; NULLs are left out so a new, empty config column changes nothing."""
    parts = [f"{n}\x1f{v!r}" for n, v in zip(names, values) if v is not None]
    return hashlib.sha256("\x1e".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class _Typer:
    """Turns raw values (from CSV, JSON, SQLite or Parquet) into the typed values of the config columns."""

    def __init__(self, columns: list[ColumnSpec], primary_key: str):
        self.names = [c.name for c in columns]
        self.plan = [(c.name, _CONVERTERS[c.type], c.required or c.name == primary_key, c.type == "string")
                     for c in columns]
        self.pk_index = self.names.index(primary_key)
        self.pk_convert = _CONVERTERS[columns[self.pk_index].type]

    def convert(self, raw_values: list[Any]) -> tuple[list[Any], list[tuple[str, str]]]:
        """Typed values and a list of (field, problem); an empty list means the record is valid."""
        values: list[Any] = []
        errors: list[tuple[str, str]] = []
        for (name, conv, required, is_str), raw in zip(self.plan, raw_values):
            if raw is None or (raw == "" if is_str else (isinstance(raw, str) and not raw.strip())):
                if required:
                    what = "missing" if raw is None else "empty"
                    errors.append((name, f"required field '{name}' is {what}"))
                values.append(raw if is_str else None)
                continue
            if required and is_str and isinstance(raw, str) and not raw.strip():
                errors.append((name, f"required field '{name}' is empty"))
                values.append(raw)
                continue
            try:
                values.append(conv(raw))
            except _BadValue as exc:
                errors.append((name, f"field '{name}': {exc}"))
                values.append(None)
        return values, errors

    def key(self, raw: Any) -> Any | None:
        """The typed primary key of a raw value, or None when it is missing or does not parse."""
        if raw is None or raw == "":
            return None
        try:
            return self.pk_convert(raw)
        except _BadValue:
            return None


# ---------------------------------------------------------------- parse results


@dataclass
class _Parsed:
    """What one parsed file (or SQL table) yields."""

    records: list[tuple[list[Any], int | None]] = field(default_factory=list)  # (typed values, line)
    quarantine: list[QuarantinedRecord] = field(default_factory=list)
    keep_keys: set = field(default_factory=set)  # keys of quarantined records: never tombstoned for that
    failed: bool = False  # the whole file was quarantined: its earlier records stay as they are
    record_state: bool = True  # False for transient read errors: retry next load


def _line_prefix(line: int | None) -> str:
    return f"line {line}: " if line is not None else ""


class _Collector:
    def __init__(self, source: str, file: str, typer: _Typer):
        self.source, self.file, self.typer = source, file, typer
        self.out = _Parsed()

    def bad(self, line: int | None, fld: str | None, reason: str, raw: str, key: Any = None) -> None:
        self.out.quarantine.append(
            QuarantinedRecord(self.source, self.file, line, fld, _line_prefix(line) + reason, _clip(raw))
        )
        if key is not None:
            self.out.keep_keys.add(key)

    def fail_file(self, line: int | None, fld: str | None, reason: str, raw: str, record_state: bool = True) -> _Parsed:
        """The whole file is quarantined; its reason has no "line N: " prefix (e.g. "missing required column")."""
        self.out.quarantine.append(QuarantinedRecord(self.source, self.file, line, fld, reason, _clip(raw), True))
        self.out.failed = True
        self.out.record_state = record_state
        return self.out

    def record(self, raw_values: list[Any], line: int | None, raw_text: Callable[[], str],
               where: str = "") -> None:
        values, errors = self.typer.convert(raw_values)
        if errors:
            reason = "; ".join(msg for _, msg in errors)
            self.bad(line, errors[0][0], where + reason, raw_text(),
                     key=self.typer.key(raw_values[self.typer.pk_index]))
            return
        self.out.records.append((values, line))


def _missing_required(typer: _Typer, columns: list[ColumnSpec], present: Iterable[str]) -> list[str]:
    have = set(present)
    return [c.name for c in columns if (c.required or c.name == typer.names[typer.pk_index]) and c.name not in have]


def _expected(columns: list[ColumnSpec]) -> str:
    return ", ".join(c.name for c in columns)


# ---------------------------------------------------------------- CSV


def _decoded_lines(fh: io.BufferedReader, bad_lines: dict[int, str], pending: list[str]) -> Iterator[str]:
    """Decode a binary file line by line; a line that is not UTF-8 is noted in bad_lines and still yielded."""
    offset = 0
    for number, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_lines[number] = (
                f"not valid UTF-8: invalid byte 0x{raw[exc.start]:02x} at offset {exc.start} of the line "
                f"(byte {offset + exc.start} of the file)"
            )
            text = raw.decode("utf-8", "replace")
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        offset += len(raw)
        pending.append(text)
        yield text


def _parse_csv(path: Path, source: SourceConfig, rel: str, columns: list[ColumnSpec], typer: _Typer) -> _Parsed:
    col = _Collector(source.name, rel, typer)
    if csv.field_size_limit() < 256 * 1024 * 1024:
        csv.field_size_limit(256 * 1024 * 1024)  # the default 128 KiB is too small for long free text
    bad_lines: dict[int, str] = {}
    pending: list[str] = []
    try:
        fh = path.open("rb")
    except OSError as exc:
        return col.fail_file(None, None, f"cannot read file: {exc}", "", record_state=False)
    with fh:
        reader = csv.reader(_decoded_lines(fh, bad_lines, pending), strict=True)
        last_line = 0
        try:
            header = next(reader, None)
        except csv.Error as exc:
            return col.fail_file(1, None, f"unreadable CSV header: {exc}", "".join(pending))
        if header is None:
            return col.fail_file(1, None, "empty file: no header row", "")
        header_text = "".join(pending)
        pending.clear()
        last_line = reader.line_num
        if 1 in bad_lines:
            return col.fail_file(1, None, f"header {bad_lines[1]}", header_text)
        missing = _missing_required(typer, columns, header)
        if missing:
            return col.fail_file(
                1, missing[0],
                f"missing required column '{missing[0]}' (expected: {_expected(columns)})"
                + (f"; also missing: {', '.join(missing[1:])}" if len(missing) > 1 else ""),
                header_text,
            )
        position = {name: i for i, name in enumerate(header)}
        index = [position.get(name) for name in typer.names]
        n_fields = len(header)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                start = last_line + 1
                col.bad(start, None, f"malformed CSV: {exc}", "".join(pending))
                pending.clear()
                last_line = reader.line_num
                continue
            start, end = last_line + 1, reader.line_num
            last_line = end
            raw_text = "".join(pending)
            pending.clear()
            if not row:
                continue  # blank line
            decode_error = next((bad_lines[n] for n in range(start, end + 1) if n in bad_lines), None)
            if decode_error:
                pk_at = index[typer.pk_index]
                key = typer.key(row[pk_at]) if len(row) == n_fields and pk_at is not None else None
                col.bad(start, None, decode_error, raw_text, key=key)
                continue
            if len(row) != n_fields:
                col.bad(start, None, f"expected {n_fields} fields, found {len(row)}", raw_text)
                continue
            col.record([row[i] if i is not None else None for i in index], start, lambda t=raw_text: t)
    return col.out


# ---------------------------------------------------------------- JSONL


def _parse_jsonl(path: Path, source: SourceConfig, rel: str, columns: list[ColumnSpec], typer: _Typer) -> _Parsed:
    col = _Collector(source.name, rel, typer)
    names = typer.names
    loads = json.loads
    try:
        fh = path.open("rb")
    except OSError as exc:
        return col.fail_file(None, None, f"cannot read file: {exc}", "", record_state=False)
    offset = 0
    with fh:
        for number, raw in enumerate(fh, start=1):
            line_offset = offset
            offset += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                col.bad(number, None,
                        f"not valid UTF-8: invalid byte 0x{raw[exc.start]:02x} at offset {exc.start} of the line "
                        f"(byte {line_offset + exc.start} of the file)",
                        raw.decode("utf-8", "replace"))
                continue
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if not text.strip():
                continue
            try:
                obj = loads(text)
            except json.JSONDecodeError as exc:
                col.bad(number, None, f"invalid JSON: {exc.msg} at column {exc.colno}", text.rstrip("\r\n"))
                continue
            except RecursionError:
                col.bad(number, None, "invalid JSON: nested too deeply", text.rstrip("\r\n"))
                continue
            if not isinstance(obj, dict):
                kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(obj), "number")
                col.bad(number, None, f"expected a JSON object, found {kind}", text.rstrip("\r\n"))
                continue
            get = obj.get
            col.record([get(n) for n in names], number, lambda t=text: t.rstrip("\r\n"))
    return col.out


# ---------------------------------------------------------------- Parquet


def _parse_parquet(path: Path, source: SourceConfig, rel: str, columns: list[ColumnSpec], typer: _Typer) -> _Parsed:
    import pyarrow.parquet as pq

    col = _Collector(source.name, rel, typer)
    try:
        pf = pq.ParquetFile(path)
        present = pf.schema_arrow.names
    except OSError as exc:
        return col.fail_file(None, None, f"cannot read file: {exc}", "", record_state=False)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        return col.fail_file(None, None, f"unreadable Parquet file: {exc}", "")
    missing = _missing_required(typer, columns, present)
    if missing:
        return col.fail_file(
            None, missing[0], f"missing required column '{missing[0]}' (expected: {_expected(columns)})",
            "schema: " + ", ".join(present),
        )
    wanted = [n for n in typer.names if n in present]
    row_number = 0
    try:
        for batch in pf.iter_batches(columns=wanted, batch_size=65_536):
            data = batch.to_pydict()
            n = batch.num_rows
            cols = [data.get(name, [None] * n) for name in typer.names]
            for i in range(n):
                row_number += 1
                raw_values = [c[i] for c in cols]
                col.record(raw_values, row_number,
                           lambda rv=raw_values: json.dumps(dict(zip(typer.names, rv)), default=str))
    except Exception as exc:  # noqa: BLE001
        return col.fail_file(None, None, f"unreadable Parquet file at row {row_number + 1}: {exc}", "")
    return col.out


# ---------------------------------------------------------------- documents

_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13)) + b"\x7f"
_CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
_MD_TITLE_RE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_BLOCK = "\ue000"  # paragraph break marker while flattening HTML
_BREAK = "\ue001"  # line break marker
_HTML_SKIP = frozenset({"script", "style", "noscript", "template", "head"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_WS_RE = re.compile(r"\s+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_HTML_BLOCKS = frozenset({
    "p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "blockquote", "pre",
    "table", "thead", "tbody", "tr", "ul", "ol", "dl", "dt", "dd", "figure", "figcaption", "form",
    "fieldset", "address", "hr", "details", "summary", "body",
})
_HTML_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_-]+)""", re.IGNORECASE)


_EPOCH = dt.datetime(1970, 1, 1)


class _DocProblem(Exception):
    """A document that cannot be loaded; the message is the quarantine reason."""


def _check_text_bytes(data: bytes) -> str:
    if not data.strip():
        raise _DocProblem("empty document")
    if b"\x00" in data or len(data) - len(data.translate(None, _CONTROL_BYTES)) > BINARY_CONTROL_RATIO * len(data):
        raise _DocProblem("binary content in a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _DocProblem(f"not valid UTF-8: invalid byte 0x{data[exc.start]:02x} at offset {exc.start}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if len(_CONTROL_CHARS_RE.findall(text)) > BINARY_CONTROL_RATIO * len(text):
        raise _DocProblem("binary content in a text file")
    return text


def _extract_text(data: bytes, stem: str) -> tuple[str, str]:
    text = _check_text_bytes(data)
    m = _MD_TITLE_RE.search(text)
    return (m.group(1).strip() if m else stem), text


_END_BLOCK = object()
_END_CELL = object()


def _flatten_html(soup: Any) -> str:
    """Plain text with block structure: one walk over the tree, headings as Markdown (#, ##, ###), list
    items as "- ", paragraphs separated by a blank line; script/style/noscript/template/head dropped."""
    from bs4 import CData, NavigableString, Tag

    out: list[str] = []
    stack: list[Any] = [soup]
    while stack:
        node = stack.pop()
        if node is _END_BLOCK:
            out.append(_BLOCK)
            continue
        if node is _END_CELL:
            out.append(" ")
            continue
        if isinstance(node, NavigableString):
            if type(node) is NavigableString or type(node) is CData:  # not comments, doctype, script text
                out.append(str(node))
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name
        if name in _HTML_SKIP:
            continue
        if name in _HTML_HEADINGS:
            heading = " ".join(node.get_text().split())
            out.append(f"{_BLOCK}{'#' * int(name[1])} {heading}{_BLOCK}" if heading else _BLOCK)
            continue
        if name == "br":
            out.append(_BREAK)
            continue
        if name == "li":
            out.append(f"{_BREAK}- ")
        elif name in _HTML_BLOCKS:
            out.append(_BLOCK)
            stack.append(_END_BLOCK)
        elif name in ("td", "th"):
            stack.append(_END_CELL)
        stack.extend(reversed(node.contents))
    text = _WS_RE.sub(" ", "".join(out))
    text = text.replace(_BLOCK, "\n\n").replace(_BREAK, "\n")
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES_RE.sub("\n\n", text).strip()


def _extract_html(data: bytes, stem: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    if not data.strip():
        raise _DocProblem("empty document")
    if b"\x00" in data:
        raise _DocProblem("binary content in a text file")
    try:
        markup = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        declared = _HTML_CHARSET_RE.search(data[:4096])
        charset = declared.group(1).decode("ascii") if declared else None
        try:
            if not charset or codecs.lookup(charset).name == "utf-8":
                raise LookupError
            markup = data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            raise _DocProblem(f"not valid UTF-8: invalid byte 0x{data[exc.start]:02x} at offset {exc.start}") from None
    if len(_CONTROL_CHARS_RE.findall(markup)) > BINARY_CONTROL_RATIO * len(markup):
        raise _DocProblem("binary content in a text file")
    soup = BeautifulSoup(markup, "html.parser")
    title = None
    if soup.title and soup.title.get_text(strip=True):
        title = " ".join(soup.title.get_text().split())
    else:
        h1 = soup.find("h1")
        if h1 and h1.get_text(strip=True):
            title = " ".join(h1.get_text(" ").split())
    body = _flatten_html(soup)
    if not body.strip():
        raise _DocProblem("HTML has no text")
    return title or stem, body


def _extract_pdf(data: bytes, stem: str) -> tuple[str, str]:
    from pypdf import PdfReader

    if not data:
        raise _DocProblem("empty document")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                reader.decrypt("")
            except Exception:  # noqa: BLE001
                raise _DocProblem("unreadable PDF: encrypted") from None
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = None
        try:
            meta = reader.metadata
            meta_title = (meta.title or "").strip() if meta else None
        except Exception:  # noqa: BLE001
            meta_title = None
    except _DocProblem:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for broken files
        raise _DocProblem(f"unreadable PDF: {type(exc).__name__}: {exc}") from None
    body = "\n\n".join(p for p in pages if p)
    if not body.strip():
        raise _DocProblem("PDF has no extractable text (scanned image?)")
    body = body.replace("\x00", "")
    if meta_title:
        title = meta_title
    else:
        title = next((ln.strip() for ln in body.splitlines() if ln.strip()), stem)[:200]
    return title, body


_EXTRACTORS = {"markdown": _extract_text, "text": _extract_text, "html": _extract_html, "pdf": _extract_pdf}


def _parse_document(path: Path, data: bytes | None, st_size: int, st_mtime_ns: int, sha: str,
                    source: SourceConfig, rel: str, loc: Path, typer: _Typer) -> _Parsed:
    col = _Collector(source.name, rel, typer)
    doc_id = path.relative_to(loc).as_posix() if path != loc else path.name
    suffix = path.suffix.lower()
    fmt = DOCUMENT_FORMATS.get(suffix)
    try:
        if fmt is None:
            raise _DocProblem(f"unsupported file type {suffix}" if suffix else "unsupported file type (no extension)")
        if st_size > MAX_DOCUMENT_BYTES:
            raise _DocProblem(
                f"file is {st_size:,} bytes, over the {MAX_DOCUMENT_BYTES:,}-byte limit (MAX_DOCUMENT_BYTES)"
            )
        if data is None:
            raise _DocProblem("cannot read file")
        if not data:
            raise _DocProblem("empty document")
        title, body = _EXTRACTORS[fmt](data, path.stem)
    except _DocProblem as exc:
        preview = data[:RAW_TEXT_LIMIT].decode("utf-8", "backslashreplace") if data else ""
        col.bad(None, None, str(exc), preview, key=doc_id)
        col.out.failed = True
        return col.out
    modified = _EPOCH + dt.timedelta(microseconds=st_mtime_ns // 1000)  # exact, no float rounding
    values = [doc_id, rel, title, fmt, body, sha, st_size, modified]
    col.out.records.append((values, None))
    return col.out


# ---------------------------------------------------------------- SQLite


def _read_sql(db: Path, source: SourceConfig, rel: str, columns: list[ColumnSpec], typer: _Typer,
              cursor_value: str | None) -> tuple[_Parsed, list[Any], str | None]:
    """Rows of the source table (only those newer than cursor_value in cursor mode), all primary keys of
    the table (for deletions), and the new high-water mark; one consistent read transaction."""
    col = _Collector(source.name, rel, typer)
    table = source.table or ""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise SourceError(f"source '{source.name}': cannot open SQLite database '{db}': {exc}") from exc
    try:
        conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        try:
            conn.execute("BEGIN")
            info = conn.execute(f"PRAGMA table_info({_q(table)})").fetchall()
        except sqlite3.Error as exc:
            raise SourceError(f"source '{source.name}': cannot read SQLite database '{db}': {exc}") from exc
        if not info:
            raise SourceError(
                f"source '{source.name}': table '{table}' not found in '{db}' (sources.yaml: table)"
            )
        present = {row[1].lower(): row[1] for row in info}
        missing = [n for n in _missing_required(typer, columns, []) if n.lower() not in present]
        if missing:
            raise SourceError(
                f"source '{source.name}': table '{table}' in '{db}' has no column '{missing[0]}' "
                f"(expected: {_expected(columns)}; found: {', '.join(r[1] for r in info)})"
            )
        select = ", ".join(_q(present[n.lower()]) if n.lower() in present else "NULL" for n in typer.names)
        pk = _q(present[typer.names[typer.pk_index].lower()])
        cursor_col = source.change_detection.cursor_column
        params: list[Any] = []
        where = ""
        new_cursor = cursor_value
        if cursor_col:
            ccol = _q(present[cursor_col.lower()]) if cursor_col.lower() in present else None
            if ccol is None:
                raise SourceError(
                    f"source '{source.name}': table '{table}' in '{db}' has no cursor column '{cursor_col}'"
                )
            if cursor_value is not None:
                ctype = next(c.type for c in columns if c.name == cursor_col)
                param: Any = cursor_value
                if ctype == "integer":
                    param = int(cursor_value)
                elif ctype in ("float", "decimal"):
                    param = float(cursor_value)
                where = f" WHERE {ccol} > ?"
                params = [param]
            top = conn.execute(f"SELECT max({ccol}) FROM {_q(table)}{where}", params).fetchone()[0]
            if top is not None:
                new_cursor = str(top)
        cur = conn.execute(f"SELECT {select} FROM {_q(table)}{where}", params)
        pk_name = typer.names[typer.pk_index]
        while True:
            rows = cur.fetchmany(SQL_FETCH_SIZE)
            if not rows:
                break
            for row in rows:
                raw_values = list(row)
                col.record(
                    raw_values, None,
                    lambda rv=raw_values: json.dumps(dict(zip(typer.names, rv)), default=str, ensure_ascii=False),
                    where=f"row {pk_name}={_short(raw_values[typer.pk_index])}: ",
                )
        keys = [typer.key(k) for (k,) in conn.execute(f"SELECT {pk} FROM {_q(table)}")]
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise SourceError(f"source '{source.name}': error reading table '{table}' of '{db}': {exc}") from exc
    finally:
        conn.close()
    return col.out, [k for k in keys if k is not None], new_cursor


# ---------------------------------------------------------------- warehouse DDL


def _ensure_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    s = _q(RAW_SCHEMA)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {s}.{_q(FILE_STATE_TABLE)} (source VARCHAR NOT NULL, path VARCHAR NOT NULL, "
        "sha256 VARCHAR, size_bytes BIGINT, mtime_ns BIGINT, loaded_at TIMESTAMP)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {s}.{_q(CURSOR_STATE_TABLE)} (source VARCHAR NOT NULL, cursor_value VARCHAR, "
        "updated_at TIMESTAMP)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {s}.{_q(QUARANTINE_TABLE)} (load_id VARCHAR, source VARCHAR, file VARCHAR, "
        "line INTEGER, field VARCHAR, reason VARCHAR, raw VARCHAR, quarantined_at TIMESTAMP)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {s}.{_q(LOADS_TABLE)} (load_id VARCHAR, source VARCHAR, started_at TIMESTAMP, "
        "finished_at TIMESTAMP, inserted BIGINT, updated BIGINT, deleted BIGINT, unchanged BIGINT, "
        "quarantined BIGINT, files_read BIGINT, files_unchanged BIGINT, files_removed BIGINT)"
    )


def _table_columns(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
            "AND database_name = current_database() ORDER BY column_index",
            [RAW_SCHEMA, name],
        ).fetchall()
    ]


def _ensure_raw_table(
    con: duckdb.DuckDBPyConnection, source: SourceConfig, columns: list[ColumnSpec]
) -> tuple[bool, bool]:
    """Create raw.<source> or add the config columns it lacks. Returns (created, columns_added)."""
    existing = _table_columns(con, source.name)
    wanted = [(c.name, DUCKDB_TYPES[c.type]) for c in columns] + METADATA_COLUMNS
    if not existing:
        cols = ", ".join(f"{_q(n)} {t}" for n, t in wanted)
        con.execute(f"CREATE TABLE {_table(source.name)} ({cols}, PRIMARY KEY ({_q(source.primary_key)}))")
        return True, False
    have = {n.lower(): t for n, t in existing}
    added = False
    for name, typ in wanted:
        current = have.get(name.lower())
        if current is None:
            con.execute(f"ALTER TABLE {_table(source.name)} ADD COLUMN {_q(name)} {typ}")
            added = added or not name.startswith("_")
        elif current.replace(" ", "").upper() != typ.replace(" ", "").upper():
            raise SourceError(
                f"source '{source.name}': column '{name}' of {RAW_SCHEMA}.{source.name} is {current} in the "
                f"warehouse but sources.yaml says {typ}; migrate the table (it is never changed automatically)"
            )
    return False, added


# ---------------------------------------------------------------- the load


@dataclass
class _FileState:
    sha256: str
    size_bytes: int
    mtime_ns: int


def _arrow_table(names: list[str], types: list[pa.DataType], columns: list[list[Any]]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(c, type=t) for c, t in zip(columns, types)], names=names)


def _exec(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Run a statement and drain its result (DuckDB 2 refuses other work while a result is unfinished)."""
    return (con.execute(sql, params) if params is not None else con.execute(sql)).fetchall()


class _Registered:
    """Arrow tables registered on the connection for set-based statements; unregistered on exit."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.names: list[str] = []
        self.tag = uuid.uuid4().hex[:8]

    def add(self, stem: str, table: pa.Table) -> str:
        name = f"_agenix_{stem}_{self.tag}"
        self.con.register(name, table)
        self.names.append(name)
        return name

    def close(self) -> None:
        for name in self.names:
            try:
                self.con.unregister(name)
            except Exception:  # noqa: BLE001
                pass


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    landing: Path,
    now: dt.datetime | None = None,
) -> LoadResult:
    """Load one source into raw.<source.name> incrementally, in one transaction. See the module docstring."""
    landing = Path(landing)
    now = _utc_naive(now) if now is not None else _now_utc()
    started = time.monotonic()
    load_id = f"{source.name}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    files = source_files(source, landing)  # raises SourceError before anything is touched
    loc = _location(source, landing)
    columns = columns_of(source)
    names = [c.name for c in columns]
    typer = _Typer(columns, source.primary_key)
    reg = _Registered(con)

    con.execute("BEGIN TRANSACTION")
    try:
        _ensure_state_tables(con)
        created, added = _ensure_raw_table(con, source, columns)
        # A new table or new config columns: forget file state and cursor so every record is read again.
        reset = created or added

        fs_table = f"{_q(RAW_SCHEMA)}.{_q(FILE_STATE_TABLE)}"
        cs_table = f"{_q(RAW_SCHEMA)}.{_q(CURSOR_STATE_TABLE)}"
        state: dict[str, _FileState] = {
            r[0]: _FileState(r[1], r[2], r[3])
            for r in con.execute(
                f"SELECT path, sha256, size_bytes, mtime_ns FROM {fs_table} WHERE source = ?", [source.name]
            ).fetchall()
        }
        cursor_rows = con.execute(f"SELECT cursor_value FROM {cs_table} WHERE source = ?", [source.name]).fetchall()
        cursor_row = cursor_rows[0] if cursor_rows else None
        stored_cursor = None if reset or cursor_row is None else cursor_row[0]

        parsed: list[tuple[str, _Parsed]] = []  # (relative file, result) in file order
        new_state: dict[str, _FileState] = {}
        files_unchanged = 0
        seen: set[str] = set()
        sql_keys: list[Any] | None = None
        new_cursor: str | None = stored_cursor

        for path in files:
            rel = _rel(path, landing)
            seen.add(rel)
            try:
                st = path.stat()
            except FileNotFoundError:
                seen.discard(rel)
                continue
            prev = None if reset else state.get(rel)
            wal_active = source.kind == "sql" and _wal_file(path).exists() and _wal_file(path).stat().st_size > 0
            if prev and not wal_active and prev.size_bytes == st.st_size and prev.mtime_ns == st.st_mtime_ns:
                files_unchanged += 1
                continue
            data: bytes | None = None
            try:
                if source.kind == "documents" and st.st_size <= MAX_DOCUMENT_BYTES:
                    data = path.read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                else:
                    sha = sha256_file(path)
            except OSError as exc:
                q = QuarantinedRecord(source.name, rel, None, None, f"cannot read file: {exc}", "", True)
                parsed.append((rel, _Parsed(quarantine=[q], failed=True, record_state=False)))
                continue
            if prev and not wal_active and prev.sha256 == sha:
                files_unchanged += 1
                new_state[rel] = _FileState(sha, st.st_size, st.st_mtime_ns)  # refresh mtime for the pre-check
                continue
            if source.kind == "sql":
                result, sql_keys, new_cursor = _read_sql(path, source, rel, columns, typer, stored_cursor)
            elif source.kind == "csv":
                result = _parse_csv(path, source, rel, columns, typer)
            elif source.kind == "jsonl":
                result = _parse_jsonl(path, source, rel, columns, typer)
            elif source.kind == "parquet":
                result = _parse_parquet(path, source, rel, columns, typer)
            else:
                result = _parse_document(path, data, st.st_size, st.st_mtime_ns, sha, source, rel, loc, typer)
            parsed.append((rel, result))
            if result.record_state:
                new_state[rel] = _FileState(sha, st.st_size, st.st_mtime_ns)

        removed = sorted(set(state) - seen) if source.kind != "sql" else []

        # ---- one record per key: content_hash keeps the last occurrence and quarantines earlier ones;
        # cursor mode keeps the newest cursor value (ties: the later one) without complaint.
        quarantine: list[QuarantinedRecord] = []
        keep_keys: set = set()
        staged: dict[Any, tuple[list[Any], str, int | None]] = {}
        pk_i = typer.pk_index
        cursor_col = source.change_detection.cursor_column
        cur_i = names.index(cursor_col) if cursor_col else None
        for rel, result in parsed:
            quarantine.extend(result.quarantine)
            keep_keys |= result.keep_keys
            for values, line in result.records:
                key = values[pk_i]
                old = staged.get(key)
                if old is not None:
                    if cur_i is not None:
                        a, b = old[0][cur_i], values[cur_i]
                        if a is not None and b is not None and a > b:
                            continue
                    else:
                        where = f"{rel}" + (f" line {line}" if line is not None else "")
                        quarantine.append(QuarantinedRecord(
                            source.name, old[1], old[2], source.primary_key,
                            _line_prefix(old[2]) + f"duplicate primary key {_short(key)}: replaced by {where}",
                            _clip(json.dumps(dict(zip(names, old[0])), default=str, ensure_ascii=False)),
                        ))
                staged[key] = (values, rel, line)

        # ---- hand the batch to DuckDB as Arrow and apply it set-based
        raw_t = _table(source.name)
        pk = _q(source.primary_key)
        arrow_types = [ARROW_TYPES[c.type] for c in columns]
        records = list(staged.values())
        col_data: list[list[Any]] = [[r[0][i] for r in records] for i in range(len(names))]
        hashes = [_record_hash(names, r[0]) for r in records]
        stage = reg.add("stage", _arrow_table(
            [*names, "_record_hash", "_source_file", "_source_line"],
            [*arrow_types, pa.string(), pa.string(), pa.int32()],
            [*col_data, hashes, [r[1] for r in records], [r[2] for r in records]],
        ))
        pk_type = ARROW_TYPES[columns[pk_i].type]
        keep = reg.add("keep", _arrow_table(["k"], [pk_type], [list(keep_keys)]))

        guard = "TRUE"
        if cursor_col:
            c = _q(cursor_col)
            guard = f"(t.{c} IS NULL OR s.{c} IS NULL OR s.{c} >= t.{c})"
        inserted, updated, unchanged = con.execute(
            f"""SELECT
                  count(*) FILTER (WHERE t._record_hash IS NULL OR t._deleted),
                  count(*) FILTER (WHERE NOT t._deleted AND t._record_hash <> s._record_hash AND {guard}),
                  count(*) FILTER (WHERE NOT t._deleted AND NOT (t._record_hash <> s._record_hash AND {guard}))
                FROM {stage} s LEFT JOIN {raw_t} t ON t.{pk} = s.{pk}"""
        ).fetchall()[0]

        # tombstones first (keys being loaded now are never tombstoned)
        deleted = 0
        if source.kind == "sql":
            if sql_keys is not None:
                present = reg.add("present", _arrow_table(["k"], [pk_type], [sql_keys]))
                deleted = con.execute(
                    f"""UPDATE {raw_t} SET _deleted = true, _deleted_at = ?, _load_id = ?
                        WHERE NOT _deleted AND {pk} NOT IN (SELECT k FROM {present})""",
                    [now, load_id],
                ).fetchall()[0][0]
        else:
            # a file quarantined as a whole (or a document whose new version is quarantined) keeps its
            # earlier records alive: nothing already loaded is lost because of a broken delivery
            tomb_files = [rel for rel, result in parsed if not result.failed] + removed
            if tomb_files:
                tf = reg.add("tomb_files", _arrow_table(["path"], [pa.string()], [tomb_files]))
                deleted = con.execute(
                    f"""UPDATE {raw_t} SET _deleted = true, _deleted_at = ?, _load_id = ?
                        WHERE NOT _deleted
                          AND _source_file IN (SELECT path FROM {tf})
                          AND {pk} NOT IN (SELECT {pk} FROM {stage})
                          AND {pk} NOT IN (SELECT k FROM {keep})""",
                    [now, load_id],
                ).fetchall()[0][0]

        sets = ", ".join(f"{_q(n)} = s.{_q(n)}" for n in names if n != source.primary_key)
        _exec(
            con,
            f"""UPDATE {raw_t} AS t SET {sets}{", " if sets else ""}_record_hash = s._record_hash,
                    _source_file = s._source_file, _source_line = s._source_line, _loaded_at = ?,
                    _load_id = ?, _deleted = false, _deleted_at = NULL
                FROM {stage} s
                WHERE t.{pk} = s.{pk} AND (t._deleted OR (t._record_hash <> s._record_hash AND {guard}))""",
            [now, load_id],
        )
        # unchanged records whose position moved (a line inserted above them): keep provenance exact
        _exec(
            con,
            f"""UPDATE {raw_t} AS t SET _source_file = s._source_file, _source_line = s._source_line
                FROM {stage} s
                WHERE t.{pk} = s.{pk} AND NOT t._deleted AND t._record_hash = s._record_hash
                  AND (t._source_file IS DISTINCT FROM s._source_file
                       OR t._source_line IS DISTINCT FROM s._source_line)"""
        )
        col_list = ", ".join(_q(n) for n in names)
        _exec(
            con,
            f"""INSERT INTO {raw_t} ({col_list}, _record_hash, _source_file, _source_line, _loaded_at, _load_id,
                                     _deleted, _deleted_at)
                SELECT {", ".join("s." + _q(n) for n in names)}, s._record_hash, s._source_file, s._source_line,
                       ?, ?, false, NULL
                FROM {stage} s ANTI JOIN {raw_t} t ON t.{pk} = s.{pk}""",
            [now, load_id],
        )

        # ---- quarantine, file state, cursor, load log
        if quarantine:
            qt = reg.add("quarantine", pa.table({
                "file": pa.array([q.file for q in quarantine], pa.string()),
                "line": pa.array([q.line for q in quarantine], pa.int32()),
                "field": pa.array([q.field for q in quarantine], pa.string()),
                "reason": pa.array([q.reason for q in quarantine], pa.string()),
                "raw": pa.array([q.raw.encode("utf-8", "replace").decode("utf-8") for q in quarantine],
                                pa.large_string()),
            }))
            _exec(
                con,
                f"""INSERT INTO {_q(RAW_SCHEMA)}.{_q(QUARANTINE_TABLE)}
                    SELECT ?, ?, file, line, field, reason, raw, ? FROM {qt}""",
                [load_id, source.name, now],
            )

        gone = removed + [rel for rel in new_state]
        if gone:
            gt = reg.add("gone", _arrow_table(["path"], [pa.string()], [gone]))
            _exec(con, f"DELETE FROM {fs_table} WHERE source = ? AND path IN (SELECT path FROM {gt})", [source.name])
        if new_state:
            st_t = reg.add("file_state", pa.table({
                "path": pa.array(list(new_state), pa.string()),
                "sha256": pa.array([s.sha256 for s in new_state.values()], pa.string()),
                "size_bytes": pa.array([s.size_bytes for s in new_state.values()], pa.int64()),
                "mtime_ns": pa.array([s.mtime_ns for s in new_state.values()], pa.int64()),
            }))
            _exec(
                con,
                f"INSERT INTO {fs_table} SELECT ?, path, sha256, size_bytes, mtime_ns, ? FROM {st_t}",
                [source.name, now],
            )

        if cursor_col and source.kind != "sql":
            top = con.execute(
                f"SELECT CAST(max({_q(cursor_col)}) AS VARCHAR) FROM {raw_t} WHERE NOT _deleted"
            ).fetchall()[0][0]
            new_cursor = top if top is not None else stored_cursor
        if cursor_col and new_cursor is not None and (new_cursor != stored_cursor or reset or cursor_row is None):
            _exec(con, f"DELETE FROM {cs_table} WHERE source = ?", [source.name])
            _exec(con, f"INSERT INTO {cs_table} VALUES (?, ?, ?)", [source.name, new_cursor, now])

        files_read = sum(1 for _, r in parsed if r.record_state)
        finished = now + dt.timedelta(seconds=time.monotonic() - started)
        _exec(
            con,
            f"INSERT INTO {_q(RAW_SCHEMA)}.{_q(LOADS_TABLE)} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [load_id, source.name, now, finished, inserted, updated, deleted, unchanged, len(quarantine),
             files_read, files_unchanged, len(removed)],
        )

        row_count = con.execute(f"SELECT count(*) FROM {raw_t} WHERE NOT _deleted").fetchall()[0][0]
        schema = _table_columns(con, source.name)
        cur = con.execute(
            f"SELECT {col_list} FROM {raw_t} WHERE NOT _deleted ORDER BY {pk} LIMIT 5"
        )
        preview = [
            {k: (v[:500] + "..." if isinstance(v, str) and len(v) > 500 else v) for k, v in zip(names, r)}
            for r in cur.fetchall()
        ]
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    finally:
        reg.close()

    return LoadResult(
        source=source.name,
        load_id=load_id,
        inserted=inserted,
        updated=updated,
        deleted=deleted,
        unchanged=unchanged,
        quarantined=len(quarantine),
        files_read=files_read,
        files_unchanged=files_unchanged,
        files_removed=len(removed),
        row_count=row_count,
        quarantine=quarantine,
        schema=schema,
        preview=preview,
        cursor=new_cursor if cursor_col else None,
    )


__all__ = [
    "DOCUMENT_COLUMNS",
    "DUCKDB_TYPES",
    "MAX_DOCUMENT_BYTES",
    "LoadResult",
    "QuarantinedRecord",
    "SourceError",
    "columns_of",
    "ingest_source",
    "source_files",
    "source_fingerprint",
]
