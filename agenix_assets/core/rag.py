"""The RAG data pipeline's incremental steps: cleaned records -> redacted documents -> chunks.

Each step compares content hashes with what the warehouse already holds and only works on what changed,
so editing one document redacts, chunks and (downstream) embeds only that document. State lives in the
warehouse's `rag` schema:

- rag_<use case>.redacted_documents: one row per indexed record (doc_key = "<source>/<id>"), PII masked.
- rag_<use case>.document_skips: records that could not be indexed, with the reason (empty text, ...).
- rag_<use case>.chunks_staging: the chunker's working table (write-audit-publish: the chunks asset writes here and
  runs its blocking checks here).
- rag_<use case>.chunks: the *published* chunks, with the metadata the index and access filters need: a copy of
  the staging table made only when every blocking check on it passed (``publish_chunks``). Embeddings and the
  vector index read only this table, so a chunk that failed a gate never reaches them, in any run.

No Dagster import; the assets in assets/rag.py wire resources to these functions and report metadata.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .chunking import ChunkingConfig, TokenCounter, chunk_document
from . import gates
from .config import ProjectConfig, RagSettings
from .gates import GateResult
from .golden import GoldenSuite
from .index import IndexChunk
from .pii import PiiRedactor
from ..sandbox import assert_writable

# Bump when the redaction or chunking code changes what it produces, so stored results are recomputed.
PIPELINE_REVISION = "1"


@dataclass(frozen=True)
class RagTables:
    """The warehouse tables of one use case's RAG pipeline, in schema rag_<use case>."""

    schema: str

    @classmethod
    def for_use_case(cls, use_case: str) -> RagTables:
        return cls("rag_" + re.sub(r"[^a-z0-9]+", "_", use_case.lower()).strip("_"))

    @property
    def redacted(self) -> str:
        return f"{self.schema}.redacted_documents"

    @property
    def skips(self) -> str:
        return f"{self.schema}.document_skips"

    @property
    def chunks(self) -> str:
        """The published chunks: what passed every blocking check of the chunks asset."""
        return f"{self.schema}.chunks"

    @property
    def chunks_staging(self) -> str:
        """The chunker's working table: written and audited before anything is published."""
        return f"{self.schema}.chunks_staging"


@dataclass(frozen=True)
class SourceDocument:
    doc_key: str
    source: str
    document_id: str
    title: str
    text: str
    fmt: str
    data_domain: str
    updated_at: str
    source_hash: str


@dataclass
class StepResult:
    processed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    total: int = 0
    seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)
    skip_reasons: list[tuple[str, str]] = field(default_factory=list)
    changed_keys: list[str] = field(default_factory=list)


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a plain column name: {name!r}")
    return f'"{name}"'


def ensure_schema(con: duckdb.DuckDBPyConnection, t: RagTables) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {t.schema}")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {t.redacted} (
            doc_key VARCHAR PRIMARY KEY, source VARCHAR, document_id VARCHAR, title VARCHAR, body VARCHAR,
            format VARCHAR, data_domain VARCHAR, updated_at VARCHAR, source_hash VARCHAR, redactor_id VARCHAR,
            redacted_hash VARCHAR, pii_counts VARCHAR, redacted_at TIMESTAMP)"""
    )
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {t.skips} (
            doc_key VARCHAR PRIMARY KEY, source VARCHAR, document_id VARCHAR, source_hash VARCHAR, reason VARCHAR,
            skipped_at TIMESTAMP)"""
    )
    had_staging = _table_exists(con, t.schema, "chunks_staging")
    for table in (t.chunks, t.chunks_staging):
        con.execute(
            f"""CREATE TABLE IF NOT EXISTS {table} (
                chunk_id VARCHAR PRIMARY KEY, doc_key VARCHAR, source VARCHAR, document_id VARCHAR, chunk_index INTEGER,
                title VARCHAR, section_path VARCHAR, data_domain VARCHAR, updated_at VARCHAR, text VARCHAR,
                token_count INTEGER, content_hash VARCHAR, redacted_hash VARCHAR, chunker_id VARCHAR,
                pii_checked BOOLEAN)"""
        )
    if not had_staging:
        # A warehouse from before staging existed: its chunks table is the chunker's state; start from it.
        con.execute(f"INSERT INTO {t.chunks_staging} SELECT * FROM {t.chunks}")


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    [(n,)] = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
    ).fetchall()
    return bool(n)


# ---------------------------------------------------------------- reading the cleaned sources


def load_source_documents(con: duckdb.DuckDBPyConnection, config: ProjectConfig, settings: RagSettings) -> list[SourceDocument]:
    """Every record of the use case's indexed sources, as text documents, from the cleaned dbt models."""
    docs: list[SourceDocument] = []
    for entry in settings.indexed_sources:
        source = config.source(entry.source)
        fields = [entry.id_field, *entry.text_fields]
        optional = [f for f in (entry.title_field, entry.format_field, entry.updated_field) if f]
        select = ", ".join(_ident(f) for f in dict.fromkeys(fields + optional))
        rows = con.execute(f'SELECT {select} FROM cleaned."cleaned_{source.name}" ORDER BY 1').fetchall()
        names = list(dict.fromkeys(fields + optional))
        for row in rows:
            record = dict(zip(names, row))
            parts = []
            for i, name in enumerate(entry.text_fields):
                value = record.get(name)
                if value is None or not str(value).strip():
                    continue
                text = str(value).strip()
                parts.append(text if i == 0 else f"{name.replace('_', ' ').capitalize()}: {text}")
            title = str(record.get(entry.title_field) or "") if entry.title_field else ""
            fmt = str(record.get(entry.format_field) or entry.format) if entry.format_field else entry.format
            updated = record.get(entry.updated_field) if entry.updated_field else None
            text = "\n\n".join(parts)
            document_id = str(record[entry.id_field])
            docs.append(
                SourceDocument(
                    doc_key=f"{source.name}/{document_id}",
                    source=source.name,
                    document_id=document_id,
                    title=title,
                    text=text,
                    fmt=fmt,
                    data_domain=source.data_domain,
                    updated_at=updated.isoformat() if hasattr(updated, "isoformat") else str(updated or ""),
                    source_hash=_sha(title, text, fmt),
                )
            )
    return docs


# ---------------------------------------------------------------- redaction


def redactor_id(known_people: Sequence[dict[str, Any]], settings: RagSettings) -> str:
    """Identifies what redaction produces: the deny list and the masked types. A change re-redacts everything."""
    people = sorted(f"{p.get('first_name')}|{p.get('last_name')}|{p.get('email')}" for p in known_people)
    return _sha(PIPELINE_REVISION, json.dumps(people), json.dumps(settings.pii.model_dump(), sort_keys=True))[:16]


def load_known_people(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute("SELECT first_name, last_name, email FROM cleaned.cleaned_crm_contacts ORDER BY contact_id").fetchall()
    return [{"first_name": f, "last_name": l, "email": e} for f, l, e in rows]


def export_deny_list(path: Path, known_people: Sequence[dict[str, Any]]) -> None:
    """The CRM contacts (names, e-mails) for redactors outside Dagster: the gateway masks known people in requests
    before any model sees them, and never opens the warehouse. Private file (0600), replaced atomically."""
    path = assert_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = {"source": "cleaned.cleaned_crm_contacts", "purpose": "PII redaction deny list",
            "people": [{k: p.get(k) for k in ("first_name", "last_name", "email")} for p in known_people]}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)
    os.replace(tmp, path)


def load_deny_list(path: Path) -> list[dict[str, Any]] | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["people"]
    except FileNotFoundError:
        return None


def build_redactor(known_people: Sequence[dict[str, Any]], settings: RagSettings) -> PiiRedactor:
    return PiiRedactor.from_contacts(
        known_people, entities=settings.pii.mask_entities, allow_list=settings.pii.allow_list
    )


def skip_reason(doc: SourceDocument, max_chars: int) -> str | None:
    if not doc.text.strip():
        return "empty text: nothing to index"
    if len(doc.text) > max_chars:
        return f"too long to index: {len(doc.text):,} characters > max_document_chars {max_chars:,}"
    return None


def _split_title(redacted: str, has_title: bool) -> tuple[str, str]:
    if not has_title:
        return "", redacted
    title, _, body = redacted.partition("\n\n")
    return title, body


def sync_redacted_documents(
    con: duckdb.DuckDBPyConnection,
    t: RagTables,
    docs: Sequence[SourceDocument],
    redactor: PiiRedactor,
    redactor_key: str,
    max_chars: int = 2_000_000,
    now: dt.datetime | None = None,
) -> StepResult:
    """Redact new and changed documents, drop removed ones; one transaction."""
    start = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    ensure_schema(con, t)
    stored = {
        k: (h, r)
        for k, h, r in con.execute(f"SELECT doc_key, source_hash, redactor_id FROM {t.redacted}").fetchall()
    }
    stored_skips = dict(con.execute(f"SELECT doc_key, source_hash FROM {t.skips}").fetchall())
    result = StepResult(total=len(docs))
    current = {d.doc_key for d in docs}
    rows, skips = [], []
    for doc in docs:
        if stored.get(doc.doc_key) == (doc.source_hash, redactor_key) or stored_skips.get(doc.doc_key) == doc.source_hash:
            result.unchanged += 1
            continue
        reason = skip_reason(doc, max_chars)
        if reason:
            skips.append((doc.doc_key, doc.source, doc.document_id, doc.source_hash, reason, now))
            result.skip_reasons.append((doc.doc_key, reason))
            continue
        has_title = bool(doc.title.strip())
        combined = f"{doc.title}\n\n{doc.text}" if has_title else doc.text
        red = redactor.redact(combined)
        title, body = _split_title(red.text, has_title)
        result.counts.update(red.counts)
        rows.append(
            {
                "doc_key": doc.doc_key,
                "source": doc.source,
                "document_id": doc.document_id,
                "title": title,
                "body": body,
                "format": doc.fmt,
                "data_domain": doc.data_domain,
                "updated_at": doc.updated_at,
                "source_hash": doc.source_hash,
                "redactor_id": redactor_key,
                "redacted_hash": _sha(title, body),
                "pii_counts": json.dumps(dict(sorted(red.counts.items()))),
                "redacted_at": now,
            }
        )
        result.changed_keys.append(doc.doc_key)
    removed = sorted((set(stored) | set(stored_skips)) - current)
    skipped_keys = [s[0] for s in skips]
    drop_redacted = removed + skipped_keys
    drop_skips = removed + skipped_keys + [r["doc_key"] for r in rows]
    con.execute("BEGIN TRANSACTION")
    try:
        if rows:
            con.register("_agenix_redacted", pa.Table.from_pylist(rows))
            con.execute(f"DELETE FROM {t.redacted} WHERE doc_key IN (SELECT doc_key FROM _agenix_redacted)")
            con.execute(f"INSERT INTO {t.redacted} BY NAME SELECT * FROM _agenix_redacted")
            con.unregister("_agenix_redacted")
        if drop_redacted:
            con.execute(f"DELETE FROM {t.redacted} WHERE doc_key IN (SELECT unnest(?))", [drop_redacted])
        if drop_skips:
            con.execute(f"DELETE FROM {t.skips} WHERE doc_key IN (SELECT unnest(?))", [drop_skips])
        if skips:
            con.executemany(f"INSERT INTO {t.skips} VALUES (?, ?, ?, ?, ?, ?)", skips)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    result.processed = len(rows)
    result.removed = len(removed)
    result.skipped = len(skips)
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- chunking


def chunker_id(settings: RagSettings) -> str:
    return _sha(PIPELINE_REVISION, json.dumps(settings.chunking.model_dump(), sort_keys=True))[:16]


def sync_chunks(
    con: duckdb.DuckDBPyConnection, t: RagTables, settings: RagSettings, counter: TokenCounter | None = None
) -> StepResult:
    """Re-chunk (into the staging table) the redacted documents whose text or chunking settings changed; drop chunks
    of removed ones. Nothing is published: see ``publish_chunks``."""
    start = time.perf_counter()
    ensure_schema(con, t)
    cid = chunker_id(settings)
    cfg = ChunkingConfig(**settings.chunking.model_dump())
    counter = counter or TokenCounter.default()
    todo = con.execute(
        f"""SELECT d.doc_key, d.source, d.document_id, d.title, d.body, d.format, d.data_domain, d.updated_at,
                   d.redacted_hash
            FROM {t.redacted} d
            WHERE NOT EXISTS (SELECT 1 FROM {t.chunks_staging} c WHERE c.doc_key = d.doc_key
                              AND c.redacted_hash = d.redacted_hash AND c.chunker_id = ?)
            ORDER BY d.doc_key""",
        [cid],
    ).fetchall()
    [(docs_total,)] = con.execute(f"SELECT count(*) FROM {t.redacted}").fetchall()
    rows = []
    for doc_key, source, document_id, title, body, fmt, domain, updated, rhash in todo:
        for chunk in chunk_document(doc_key, body, title or None, fmt, cfg, counter):
            rows.append(
                {
                    "chunk_id": chunk.chunk_id,
                    "doc_key": doc_key,
                    "source": source,
                    "document_id": document_id,
                    "chunk_index": chunk.index,
                    "title": title,
                    "section_path": " > ".join(chunk.section_path),
                    "data_domain": domain,
                    "updated_at": updated,
                    "text": chunk.text,
                    "token_count": chunk.token_count,
                    "content_hash": chunk.content_hash,
                    "redacted_hash": rhash,
                    "chunker_id": cid,
                    "pii_checked": False,
                }
            )
    result = StepResult(total=docs_total, processed=len(todo), unchanged=docs_total - len(todo))
    result.changed_keys = [t[0] for t in todo]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {t.chunks_staging} WHERE doc_key NOT IN (SELECT doc_key FROM {t.redacted})")
        if todo:
            con.execute(f"DELETE FROM {t.chunks_staging} WHERE doc_key IN (SELECT unnest(?))", [result.changed_keys])
        if rows:
            con.register("_agenix_chunks", pa.Table.from_pylist(rows))
            con.execute(f"INSERT INTO {t.chunks_staging} BY NAME SELECT * FROM _agenix_chunks")
            con.unregister("_agenix_chunks")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    result.counts = Counter({"chunks_written": len(rows)})
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- checks on chunks


@dataclass(frozen=True)
class ChunkStats:
    chunks: int
    documents: int
    min_tokens: int
    max_tokens: int
    mean_tokens: float
    empty: int
    duplicate_ids: int
    over_limit: int


def chunk_stats(con: duckdb.DuckDBPyConnection, t: RagTables, max_tokens: int, published: bool = False) -> ChunkStats:
    """Statistics of the staging table (what the checks judge), or of the published one."""
    table = t.chunks if published else t.chunks_staging
    [(n, docs, lo, hi, mean, empty, over)] = con.execute(
        f"""SELECT count(*), count(DISTINCT doc_key), coalesce(min(token_count), 0), coalesce(max(token_count), 0),
                   coalesce(avg(token_count), 0), count(*) FILTER (WHERE trim(coalesce(text, '')) = ''),
                   count(*) FILTER (WHERE token_count > ? OR token_count < 1)
            FROM {table}""",
        [max_tokens],
    ).fetchall()
    # chunk_id is the table's primary key, so duplicates are impossible in storage; count them across documents
    # by the id's text to prove it rather than trust it.
    [(dupes,)] = con.execute(f"SELECT count(*) - count(DISTINCT chunk_id) FROM {table}").fetchall()
    return ChunkStats(n, docs, lo, hi, round(float(mean), 1), empty, dupes, over)


@dataclass
class PiiScan:
    scanned: int
    findings: list[tuple[str, str, str]]  # (chunk_id, type, text)


def _known_literals(known_people: Iterable[dict[str, Any]]) -> re.Pattern | None:
    literals = set()
    for p in known_people:
        if p.get("email"):
            literals.add(str(p["email"]).lower())
        if p.get("first_name") and p.get("last_name"):
            literals.add(f"{p['first_name']} {p['last_name']}".lower())
    if not literals:
        return None
    return re.compile("|".join(re.escape(x) for x in sorted(literals, key=len, reverse=True)))


def scan_chunks_for_pii(
    con: duckdb.DuckDBPyConnection, t: RagTables, detector: PiiRedactor, known_people: Sequence[dict[str, Any]], limit: int = 50
) -> PiiScan:
    """Scan every staged chunk not yet scanned with a detector for every entity type, plus a literal search for the
    CRM's known names and emails that does not depend on Presidio. Clean chunks are marked scanned."""
    rows = con.execute(f"SELECT chunk_id, text FROM {t.chunks_staging} WHERE NOT pii_checked ORDER BY chunk_id").fetchall()
    literal = _known_literals(known_people)
    findings: list[tuple[str, str, str]] = []
    clean: list[str] = []
    for chunk_id, text in rows:
        hits = [(chunk_id, s.type, s.text) for s in detector.contains_pii(text)]
        if literal is not None:
            hits += [(chunk_id, "KNOWN_CONTACT", m.group(0)) for m in literal.finditer(text.lower())]
        if hits:
            findings.extend(hits)
        else:
            clean.append(chunk_id)
    if clean:
        con.execute(f"UPDATE {t.chunks_staging} SET pii_checked = true WHERE chunk_id IN (SELECT unnest(?))", [clean])
    return PiiScan(scanned=len(rows), findings=findings[:limit] if limit else findings)


# ---------------------------------------------------------------- the chunks gate (write-audit-publish)

# The blocking checks of the rag lane. An index version is servable only when every one of them passed on what it
# was built from (the chunks and embeddings it read) and on the version itself.
NO_PII_IN_CHUNKS = "no_pii_in_chunks"
CHUNK_TOKEN_BOUNDS = "chunk_token_bounds"
NO_EMPTY_CHUNKS = "no_empty_chunks"
UNIQUE_CHUNK_IDS = "unique_chunk_ids"
EVERY_CHUNK_EMBEDDED = "every_chunk_embedded"
EVERY_CHUNK_INDEXED = "every_chunk_indexed"
RETRIEVAL_SMOKE_TEST = "retrieval_smoke_test"
CHUNK_GATES = (NO_PII_IN_CHUNKS, CHUNK_TOKEN_BOUNDS, NO_EMPTY_CHUNKS, UNIQUE_CHUNK_IDS)
EMBEDDING_GATES = (EVERY_CHUNK_EMBEDDED,)
INDEX_GATES = (EVERY_CHUNK_INDEXED, RETRIEVAL_SMOKE_TEST)
INDEX_VERSION_GATES = CHUNK_GATES + EMBEDDING_GATES + INDEX_GATES


def chunk_gate_results(asset: str, stats: ChunkStats, scan: PiiScan, max_tokens: int) -> list[GateResult]:
    """The chunks asset's blocking checks, judged on the staging table."""
    findings = scan.findings
    return [
        GateResult(
            asset, NO_PII_IN_CHUNKS, not findings,
            f"{len(findings)} PII finding(s) in chunks, e.g. {findings[0][1]} in {findings[0][0]}"
            if findings else f"scanned {scan.scanned} new chunk(s): no PII",
            {"chunks_scanned": scan.scanned, "findings": len(findings),
             "finding_types": dict(Counter(f[1] for f in findings)),
             "examples": [{"chunk": c, "type": t} for c, t, _ in findings[:10]]},
        ),
        GateResult(
            asset, CHUNK_TOKEN_BOUNDS, stats.over_limit == 0,
            f"{stats.over_limit} chunk(s) outside 1..{max_tokens} tokens; max {stats.max_tokens}",
            {"max_tokens_allowed": max_tokens, "max_tokens_found": stats.max_tokens,
             "min_tokens_found": stats.min_tokens, "violations": stats.over_limit},
        ),
        GateResult(asset, NO_EMPTY_CHUNKS, stats.empty == 0, f"{stats.empty} empty chunk(s)", {"empty": stats.empty}),
        GateResult(asset, UNIQUE_CHUNK_IDS, stats.duplicate_ids == 0, f"{stats.duplicate_ids} duplicate id(s)",
                   {"duplicates": stats.duplicate_ids}),
    ]


def publish_chunks(
    con: duckdb.DuckDBPyConnection, t: RagTables, results: Sequence[GateResult], run_id: str
) -> bool:
    """Record the chunks gate's verdict and, only if every check passed, publish the staging table; one
    transaction, so readers see the verdict and the data it judged together. Returns whether it published."""
    def publish(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"DELETE FROM {t.chunks}")
        con.execute(f"INSERT INTO {t.chunks} SELECT * FROM {t.chunks_staging}")

    return gates.publish_if_passed(con, results, run_id, publish)


# ---------------------------------------------------------------- the index's view of chunks


def index_chunks(con: duckdb.DuckDBPyConnection, t: RagTables) -> list[IndexChunk]:
    rows = con.execute(
        f"""SELECT chunk_id, content_hash, text, source, document_id, doc_key, title, section_path, data_domain,
                   updated_at, token_count, chunk_index
            FROM {t.chunks} ORDER BY chunk_id"""
    ).fetchall()
    return [
        IndexChunk(
            chunk_id=cid,
            content_hash=h,
            text=text,
            metadata={
                "source": source,
                "document_id": document_id,
                "doc_key": doc_key,
                "title": title or "",
                "section_path": section or "",
                "data_domain": domain,
                "updated_at": updated or "",
                "token_count": int(tokens),
                "chunk_index": int(index),
            },
        )
        for cid, h, text, source, document_id, doc_key, title, section, domain, updated, tokens, index in rows
    ]


# ---------------------------------------------------------------- retrieval artifacts of an index version
#
# Next to each immutable Chroma version, the build writes what query-time retrieval needs: the same vectors as
# an exact numpy index (fast, with cheap access-filter masks) and a BM25 index of the same chunks. Readers (the
# gateway, evaluation) load a version's folder; Chroma stays the store of record.


def artifacts_dir(root: Path, collection: str) -> Path:
    return Path(root) / collection


def write_retrieval_artifacts(
    root: Path, collection: str, chunks: Sequence[IndexChunk], vectors: np.ndarray
) -> Path:
    from .retrieval import BM25Index, Document, NumpyDenseIndex

    target = assert_writable(artifacts_dir(root, collection))
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ids = [c.chunk_id for c in chunks]
    metadata = [dict(c.metadata) for c in chunks]
    NumpyDenseIndex(ids, vectors, metadata).save(tmp / "dense")
    BM25Index.build(
        Document(id=c.chunk_id, text=c.text, title=str(c.metadata.get("title", "")), metadata=dict(c.metadata))
        for c in chunks
    ).save(tmp / "bm25")
    # The chunk texts, for readers that put retrieved passages in a prompt (the gateway never opens DuckDB).
    with (tmp / "texts.jsonl").open("w", encoding="utf-8") as fh:
        for c in chunks:
            fh.write(json.dumps({"id": c.chunk_id, "text": c.text}, ensure_ascii=False) + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # a reader sees a complete folder or none
    return target


def load_retriever(root: Path, collection: str, retrieval: dict[str, Any], encoder: Any) -> Any:
    from .retrieval import BM25Index, NumpyDenseIndex, RetrievalConfig, Retriever

    folder = artifacts_dir(root, collection)
    config = RetrievalConfig.model_validate({"domain_key": "data_domain", **retrieval})
    dense = NumpyDenseIndex.load(folder / "dense") if config.mode != "bm25" else None
    bm25 = BM25Index.load(folder / "bm25", mmap=True) if config.mode != "dense" else None
    return Retriever(config, encoder=encoder if dense is not None else None, dense=dense, bm25=bm25)


def load_chunk_texts(root: Path, collection: str) -> dict[str, str]:
    """chunk id -> text of an index version's chunks (written beside its retrieval artifacts)."""
    path = artifacts_dir(root, collection) / "texts.jsonl"
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out[row["id"]] = row["text"]
    return out


GATES_FILE = "gates.json"


def write_index_verdict(root: Path, collection: str, results: Sequence[GateResult]) -> dict[str, Any]:
    """The verdict file beside a version's artifacts: every blocking check of the rag lane that covers the version
    (the chunks and embeddings it was built from, and the version itself) with its result, and whether the
    version is servable. Readers outside Dagster (the gateway) serve only versions where every required check is
    listed and passed (``index_servable``); replaced atomically."""
    checks = {r.check: r.as_json() for r in results}
    verdict = {
        "collection": collection,
        "required": list(INDEX_VERSION_GATES),
        "checks": checks,
        "servable": all(name in checks and checks[name]["passed"] for name in INDEX_VERSION_GATES),
        "decided_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = assert_writable(artifacts_dir(root, collection) / GATES_FILE)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(verdict, indent=2, default=str))
    tmp.replace(path)
    return verdict


def read_gates(root: Path, collection: str) -> dict[str, Any]:
    path = artifacts_dir(root, collection) / GATES_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def index_servable(verdict: dict[str, Any]) -> bool:
    """Every blocking check of the rag lane is listed and passed. The required set is this code's, not the file's:
    a verdict written before a check existed (or by hand) lists fewer and is not servable."""
    checks = verdict.get("checks")
    if not isinstance(checks, dict):
        return False
    return all(isinstance(checks.get(n), dict) and checks[n].get("passed") is True for n in INDEX_VERSION_GATES)



def prune_artifacts(root: Path, keep_collections: Iterable[str]) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    assert_writable(root)
    keep = set(keep_collections)
    removed = []
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return sorted(removed)


@dataclass
class SmokeResult:
    hits: int
    total: int
    misses: list[tuple[str, str, list[str]]]  # (query id, expected, top documents)
    p50_ms: float

    @property
    def hit_rate(self) -> float:
        return self.hits / self.total if self.total else 0.0


def smoke_test(retriever: Any, golden: GoldenSuite, top_k: int) -> SmokeResult:
    """Each golden question must retrieve one of its expected documents among the top_k distinct documents."""
    hits, misses, times = 0, [], []
    for q in golden.queries:
        t0 = time.perf_counter()
        candidates = retriever.search(q.question, k=max(top_k * 8, 20))
        times.append((time.perf_counter() - t0) * 1000)
        docs: list[str] = []
        for c in candidates:
            meta = retriever.dense.metadata.get(retriever.dense.row_of[c.id]) if retriever.dense else retriever.bm25.metadata.get(retriever.bm25.row_of[c.id])
            doc = str(meta.get("document_id"))
            if doc not in docs:
                docs.append(doc)
            if len(docs) == top_k:
                break
        if set(q.expected_documents) & set(docs):
            hits += 1
        else:
            misses.append((q.id, ",".join(q.expected_documents), docs))
    return SmokeResult(hits, len(golden.queries), misses, float(np.median(times)) if times else 0.0)
