"""Indexing benchmark: the RAG lane's full build and incremental rebuild, timed stage by stage, against the raw
speed of the embedding model on the same texts.

`run_indexing_benchmark(scale, json_path=...)` runs, in one process and with the real components (the same core
functions the Dagster assets of ``assets/rag.py`` call, without Dagster):

1. setup, not part of any build: generate the sample company at ``scale`` into ``<workdir>/home/landing``, ingest
   the five sources (``ingest_source``) into ``<workdir>/home/warehouse.duckdb`` and ``dbt build`` the cleaned
   models; then warm the process up (load the embedding model and encode a warm-up batch, load the chunker's
   tokenizer, import Presidio), so one-time process start-up is charged to neither the build nor the baseline;
2. FULL BUILD, timed end to end and per stage: ``redaction`` (load the cleaned records, build the redactor from
   the CRM contacts, ``sync_redacted_documents``), ``chunking`` (``sync_chunks``), ``embedding`` (every chunk
   text through ``embed_with_cache`` into ``rag.embedding_cache``), ``index`` (``VectorIndexStore.build_version``
   on embedded Chroma at ``<workdir>/home/chroma`` with a ``CachedChunkEmbedder``: all cache hits by then),
   ``artifacts`` (the vectors from the cache, ``write_retrieval_artifacts``, version gc and artifact pruning);
3. INCREMENTAL REBUILD: a sentence is appended to one paragraph in the middle section of ``change_fraction``
   of the knowledge-base documents (Markdown and HTML, chosen deterministically from ``seed``); kb_documents is
   re-ingested and ``dbt build --select stg_kb_documents cleaned_kb_documents`` re-run (both reported, not timed
   as rebuild), then the same five stages run again: only the changed chunks are embedded, the new index version
   carries the rest forward. ``rebuild.percent_of_full`` = rebuild seconds / full build seconds (target <= 5%);
4. RAW BASELINE: ``Embedder.encode`` (same object, same torch threads) on the text of every chunk (or of a seeded
   random sample, ``raw_sample``), timed, no cache, no I/O. ``ratio`` = chunks/s of the full build / chunks/s of
   the raw encode (target >= 0.85). It runs last so that a long run has its build figures on disk first.

The blocking PII check that the chunks asset runs on new chunks (``scan_chunks_for_pii``) is measured too, under
``checks``, and is not part of the stage totals (the brief's five stages); ``ratio_with_checks`` counts it.

Memory: ``peak_rss_mb`` is the process's ru_maxrss; each stage reports the peak VmRSS seen by a sampling thread
(every 0.2 s) while it ran.

No Dagster import; run as ``agenix bench indexing --scale large --json PATH`` (agenix_bench/cli.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .tables import fmt

REPO = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO / "dbt_project"
USE_CASE = "support-assistant"
# The cache table of the embeddings asset (agenix_assets.assets.rag.EMBEDDING_CACHE; not imported: that module
# imports Dagster).
EMBEDDING_CACHE = "rag.embedding_cache"
KB_SOURCE = "kb_documents"
STAGES = ("redaction", "chunking", "embedding", "index", "artifacts")
RATIO_TARGET = 0.85
REBUILD_TARGET_PERCENT = 5.0
DEFAULT_AS_OF = dt.date(2026, 11, 1)
# The sentence the incremental rebuild adds to a paragraph of each changed document (no PII, no numbers).
EDIT_SENTENCE = (
    "Updated guidance: recheck the tightening torque of all mounting bolts after the first fifty operating hours."
)
_SKIP_LINE = re.compile(r"^\s*([-*+>|#]|\d+[.)]\s|```|<)")


def _log_stderr(message: str) -> None:
    print(f"[bench indexing {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------------------


def _vm_rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class RssSampler:
    """A daemon thread reading VmRSS every ``interval`` seconds; ``window()`` returns the peak since ``reset()``."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agenix-bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> float:
        rss = _vm_rss_mb()
        with self._lock:
            self._peak = max(self._peak, rss)
        return rss

    def reset(self) -> None:
        with self._lock:
            self._peak = 0.0
        self.sample()

    def window(self) -> float:
        self.sample()
        with self._lock:
            return self._peak

    def __enter__(self) -> RssSampler:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class StageRecorder:
    """Times named stages; each gets seconds, peak VmRSS during the stage, and whatever the body adds."""

    def __init__(self, sampler: RssSampler, log: Callable[[str], None], label: str) -> None:
        self.sampler, self.log, self.label = sampler, log, label
        self.stages: dict[str, dict[str, Any]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        self.sampler.reset()
        self.log(f"{self.label}: {name} ...")
        start = time.perf_counter()
        yield info
        seconds = time.perf_counter() - start
        items = info.get("items")
        row = {
            "seconds": round(seconds, 3),
            "items": items,
            "per_s": round(items / seconds, 2) if items and seconds > 0 else 0.0,
            "peak_rss_mb": round(self.sampler.window(), 1),
            **{k: v for k, v in info.items() if k != "items"},
        }
        self.stages[name] = row
        self.log(f"{self.label}: {name} {seconds:.2f} s ({items} {info.get('unit', 'items')})")

    def total(self, names: Sequence[str] = STAGES) -> float:
        return sum(self.stages[n]["seconds"] for n in names if n in self.stages)


# --------------------------------------------------------------------------------------------------------------
# setup: sample data, ingestion, dbt
# --------------------------------------------------------------------------------------------------------------


def dbt_executable() -> str:
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def run_dbt_build(warehouse: Path, workdir: Path, as_of: dt.date, select: Sequence[str] = ()) -> float:
    """``dbt build`` in a subprocess with its own target and log paths (the repo's dbt_project/target is not
    touched); returns the seconds; raises with dbt's output on failure."""
    env = {
        **os.environ,
        "AGENIX_WAREHOUSE": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
    }
    cmd = [
        dbt_executable(),
        "build",
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(workdir / "dbt-target"),
        "--log-path",
        str(workdir / "dbt-logs"),
        "--vars",
        json.dumps({"as_of": as_of.isoformat()}),
    ]
    if select:
        cmd += ["--select", *select]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dbt build failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return seconds


def ingest(warehouse: Path, config: Any, landing: Path, names: Sequence[str]) -> dict[str, Any]:
    """``ingest_source`` for each source in ``names``; per-source seconds and counts."""
    import duckdb

    from agenix_assets.core.sources import ingest_source

    out: dict[str, Any] = {}
    start = time.perf_counter()
    con = duckdb.connect(str(warehouse))
    try:
        for name in names:
            t0 = time.perf_counter()
            r = ingest_source(con, config.source(name), landing)
            out[name] = {
                "seconds": round(time.perf_counter() - t0, 3),
                "inserted": r.inserted,
                "updated": r.updated,
                "deleted": r.deleted,
                "unchanged": r.unchanged,
                "quarantined": r.quarantined,
                "rows": r.row_count,
            }
    finally:
        con.close()
    return {"seconds": round(time.perf_counter() - start, 3), "sources": out}


# --------------------------------------------------------------------------------------------------------------
# the document edit of the incremental rebuild
# --------------------------------------------------------------------------------------------------------------


def _edit_markdown(text: str, sentence: str) -> str | None:
    """Append ``sentence`` to the first prose paragraph of the middle ``##`` section (else the middle paragraph)."""
    lines = text.split("\n")
    heads = [i for i, line in enumerate(lines) if line.startswith("## ")]
    candidates: list[int] = []
    if heads:
        mid = heads[len(heads) // 2]
        end = next((h for h in heads if h > mid), len(lines))
        candidates = [i for i in range(mid + 1, end) if lines[i].strip() and not _SKIP_LINE.match(lines[i])]
    if not candidates:
        prose = [i for i, line in enumerate(lines) if line.strip() and not _SKIP_LINE.match(line)]
        candidates = prose[len(prose) // 2 : len(prose) // 2 + 1]
    if not candidates:
        return None
    i = candidates[0]
    lines[i] = lines[i].rstrip() + " " + sentence
    return "\n".join(lines)


_P = re.compile(r"<p>(.*?)</p>", re.DOTALL)


def _edit_html(text: str, sentence: str) -> str | None:
    """Append ``sentence`` to the middle ``<p>`` of the page."""
    paras = list(_P.finditer(text))
    if not paras:
        return None
    m = paras[len(paras) // 2]
    return text[: m.end(1)].rstrip() + " " + sentence + text[m.end(1) :]


def modify_documents(documents_dir: Path, fraction: float, seed: int, sentence: str = EDIT_SENTENCE) -> list[str]:
    """Edit ``fraction`` of the knowledge-base documents (at least one; Markdown and HTML only: the PDFs are
    binary) in place, deterministically for ``seed``; returns their paths relative to ``documents_dir``."""
    files = sorted(
        p
        for p in documents_dir.rglob("*")
        if p.is_file() and not any(s.startswith((".", "_")) for s in p.relative_to(documents_dir).parts)
    )
    editable = [p for p in files if p.suffix.lower() in (".md", ".html", ".htm")]
    n = min(len(editable), max(1, round(len(files) * fraction))) if fraction > 0 else 0
    rng = random.Random(f"agenix-bench-indexing:{seed}")
    changed = []
    for path in sorted(rng.sample(editable, n)):
        text = path.read_text(encoding="utf-8")
        edited = _edit_markdown(text, sentence) if path.suffix.lower() == ".md" else _edit_html(text, sentence)
        if edited is None or edited == text:
            continue
        path.write_text(edited, encoding="utf-8", newline="\n")
        changed.append(path.relative_to(documents_dir).as_posix())
    return changed


# --------------------------------------------------------------------------------------------------------------
# one build through the five stages (full or incremental: the code is the same, the warehouse state differs)
# --------------------------------------------------------------------------------------------------------------


def _connect(warehouse: Path) -> Any:
    import duckdb

    return duckdb.connect(str(warehouse))


def run_build(
    label: str,
    warehouse: Path,
    config: Any,
    settings: Any,
    embedder: Any,
    store: Any,
    artifacts_root: Path,
    sampler: RssSampler,
    log: Callable[[str], None],
    pii_check: bool = True,
    max_layers: int | None = None,
) -> dict[str, Any]:
    """The RAG lane once, stage by stage, as the assets of assets/rag.py run it; one connection per stage.
    ``max_layers``: overrides the use case's setting (1 forces a full copy of the index version)."""
    from agenix_assets.core import rag as core
    from agenix_assets.core.embedding import CachedChunkEmbedder, EmbeddingCache, embed_with_cache

    tables = core.RagTables.for_use_case(settings.use_case)
    rec = StageRecorder(sampler, log, label)
    wall = time.perf_counter()

    with rec.stage("redaction") as info:
        con = _connect(warehouse)
        try:
            t0 = time.perf_counter()
            docs = core.load_source_documents(con, config, settings)
            people = core.load_known_people(con)
            t1 = time.perf_counter()
            rid = core.redactor_id(people, settings)
            redactor = core.build_redactor(people, settings)
            t2 = time.perf_counter()
            result = core.sync_redacted_documents(con, tables, docs, redactor, rid, settings.max_document_chars)
        finally:
            con.close()
        info.update(
            items=result.processed,
            unit="documents redacted",
            documents=len(docs),
            unchanged=result.unchanged,
            removed=result.removed,
            skipped=result.skipped,
            load_seconds=round(t1 - t0, 3),
            setup_seconds=round(t2 - t1, 3),
            redact_seconds=round(result.seconds, 3),
            pii_found=int(sum(result.counts.values())),
        )

    with rec.stage("chunking") as info:
        con = _connect(warehouse)
        try:
            result = core.sync_chunks(con, tables, settings)
            stats = core.chunk_stats(con, tables, settings.chunking.max_tokens)
        finally:
            con.close()
        info.update(
            items=result.counts["chunks_written"],
            unit="chunks written",
            documents_rechunked=result.processed,
            documents_unchanged=result.unchanged,
            chunks_total=stats.chunks,
            mean_tokens=stats.mean_tokens,
        )
    n_chunks = stats.chunks

    checks: dict[str, Any] = {}
    if pii_check:
        # The chunks asset's blocking check: scan the new chunks for any PII type. Measured, not in the stages.
        t0 = time.perf_counter()
        sampler.reset()
        con = _connect(warehouse)
        try:
            detector = core.build_redactor(
                people, settings.model_copy(update={"pii": settings.pii.model_copy(update={"mask_entities": None})})
            )
            scan = core.scan_chunks_for_pii(con, tables, detector, people)
        finally:
            con.close()
        seconds = time.perf_counter() - t0
        checks["pii_scan"] = {
            "seconds": round(seconds, 3),
            "items": scan.scanned,
            "per_s": round(scan.scanned / seconds, 2) if scan.scanned and seconds > 0 else 0.0,
            "findings": len(scan.findings),
            "peak_rss_mb": round(sampler.window(), 1),
        }
        log(f"{label}: pii_scan check {seconds:.2f} s ({scan.scanned} chunks, {len(scan.findings)} findings)")

    # Publishing the audited chunks is part of the chunks asset; the benchmark's warehouse is its own, so with
    # --no-pii-check the chunks are published unscanned (the asset never does that).
    t0 = time.perf_counter()
    con = _connect(warehouse)
    try:
        gate_scan = scan if pii_check else core.PiiScan(scanned=0, findings=[])
        verdicts = core.chunk_gate_results(f"{settings.use_case}/chunks", stats, gate_scan, settings.chunking.max_tokens)
        if not core.publish_chunks(con, tables, verdicts, run_id=f"bench-{label}"):
            raise RuntimeError(f"chunks failed their gates: {[v.description for v in verdicts if not v.passed]}")
    finally:
        con.close()
    checks["publish"] = {"seconds": round(time.perf_counter() - t0, 3), "items": n_chunks}

    with rec.stage("embedding") as info:
        con = _connect(warehouse)
        try:
            rows = con.execute(f"SELECT content_hash, text FROM {tables.chunks} ORDER BY chunk_id").fetchall()
            unique = dict(rows)
            cache = EmbeddingCache(con, EMBEDDING_CACHE)
            _, estats = embed_with_cache(embedder, cache, list(unique.values()), list(unique.keys()))
        finally:
            con.close()
        info.update(
            items=estats.embedded,
            unit="texts embedded",
            chunks=len(rows),
            unique_texts=len(unique),
            cache_hits=estats.cache_hits,
            embed_seconds=round(estats.seconds, 3),
        )
    del rows, unique

    with rec.stage("index") as info:
        con = _connect(warehouse)
        try:
            t0 = time.perf_counter()
            items = core.index_chunks(con, tables)
            t1 = time.perf_counter()
            parent = store.live(settings.use_case)
            embed = CachedChunkEmbedder(embedder, EmbeddingCache(con, EMBEDDING_CACHE))
            version = store.build_version(
                settings.use_case,
                items,
                embed,
                embedder.model_id,
                max_layers=max_layers or settings.index.max_layers,
                max_overlay_fraction=settings.index.max_overlay_fraction,
            )
        finally:
            con.close()
        new = parent is None or version.version != parent.version
        info.update(
            items=len(items),
            unit="chunks in version",
            version=version.version,
            collection=version.collection,
            new_version=new,
            added=version.added if new else 0,
            kept=version.kept if new else version.total,
            removed=version.removed if new else 0,
            total=version.total,
            layout=version.layout,
            layers=len(version.layers),
            stored_in_collection=version.stored,
            masked=version.masked,
            embedded_during_build=embed.stats.embedded,
            cache_hits_during_build=embed.stats.cache_hits,
            read_chunks_seconds=round(t1 - t0, 3),
        )
    if version.total != len(items):
        raise RuntimeError(f"{version.collection} holds {version.total} chunks, expected {len(items)}")

    with rec.stage("artifacts") as info:
        con = _connect(warehouse)
        try:
            t0 = time.perf_counter()
            vectors = CachedChunkEmbedder(embedder, EmbeddingCache(con, EMBEDDING_CACHE))(items) if items else None
        finally:
            con.close()
        t1 = time.perf_counter()
        if not core.artifacts_dir(artifacts_root, version.collection).exists():
            core.write_retrieval_artifacts(artifacts_root, version.collection, items, vectors)
        t2 = time.perf_counter()
        collected = store.gc(settings.use_case, keep=settings.index.retention_versions)
        retained = store.retained(settings.use_case, settings.index.retention_versions)
        core.prune_artifacts(artifacts_root, [v.collection for v in retained])
        info.update(
            items=len(items),
            unit="chunks",
            vectors_seconds=round(t1 - t0, 3),
            write_seconds=round(t2 - t1, 3),
            gc_seconds=round(time.perf_counter() - t2, 3),
            garbage_collected=collected,
        )
    wall = time.perf_counter() - wall

    seconds = rec.total()
    reembedded = rec.stages["embedding"]["items"] + rec.stages["index"]["embedded_during_build"]
    return {
        "seconds": round(seconds, 3),
        "wall_seconds": round(wall, 3),
        "documents": len(docs),
        "chunks": n_chunks,
        "reembedded": reembedded,
        "stages": rec.stages,
        "checks": checks,
        "_items": items,  # for the raw baseline; removed before the result is returned
        "_version": version,
    }


# --------------------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------------------


def _warm_up(embedder: Any, settings: Any, log: Callable[[str], None]) -> dict[str, float]:
    """Load what a long-running process has loaded already: the model (plus one encoded batch), the chunker's
    tokenizer and Presidio. Per-run work (the redactor of the current contacts) stays in the stages."""
    from agenix_assets.core import rag as core
    from agenix_assets.core.chunking import TokenCounter

    out = {}
    t0 = time.perf_counter()
    _ = embedder.model_id
    embedder.model  # noqa: B018 - loads the model
    out["model_load_seconds"] = round(time.perf_counter() - t0, 3)
    words = "the pump delivers a constant flow at nominal speed and must be vented before the first start " * 20
    words = words.split()
    batch = [" ".join(words[: 8 + (i * 37) % 180]) for i in range(embedder.batch_size)]
    t0 = time.perf_counter()
    embedder.encode(batch)
    out["warmup_encode_seconds"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    TokenCounter.default()
    core.build_redactor([], settings).redact("Warm-up text for Ms. Example Person, warmup@example.com.")
    out["warmup_pipeline_seconds"] = round(time.perf_counter() - t0, 3)
    log(
        f"warm-up: model {out['model_load_seconds']:.1f} s, encode {out['warmup_encode_seconds']:.1f} s, "
        f"tokenizer + Presidio {out['warmup_pipeline_seconds']:.1f} s"
    )
    return out


def _public(build: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in build.items() if not k.startswith("_")}


def _relative_to_full(build: dict[str, Any], full_seconds: float) -> dict[str, Any]:
    """A rebuild's public figures plus its seconds as a percentage of the full build's."""
    percent = round(100.0 * build["seconds"] / full_seconds, 3) if full_seconds else 0.0
    return {**_public(build), "percent_of_full": percent}


def run_indexing_benchmark(
    scale: str = "large",
    workdir: Path | None = None,
    json_path: Path | None = None,
    seed: int = 7,
    as_of: dt.date = DEFAULT_AS_OF,
    change_fraction: float = 0.01,
    keep: bool = False,
    config_dir: Path | None = None,
    pii_check: bool = True,
    raw_sample: float = 1.0,
    compaction: bool = True,
    log: Callable[[str], None] | None = _log_stderr,
) -> dict[str, Any]:
    """Run the indexing benchmark (see the module docstring) and return its result; write it to ``json_path``.

    ``workdir``: where the platform home is built (``<workdir>/home``, which must not exist yet or be empty);
    default a fresh temp folder, removed at the end unless ``keep``. A given workdir is never removed.
    ``log``: progress lines (default: stderr); None for silence.
    ``compaction``: after the rebuild, change another ``change_fraction`` of the documents and build that version as
    a full copy (``max_layers=1``), reported as ``compacting_rebuild``: the cost of the periodic compaction.
    ``raw_sample``: the fraction of the chunks (a seeded random sample) the raw baseline encodes; 1.0 = all of them.
    Its rate in chunks/s is what the ratio compares, so a sample trades baseline time for sampling error only.
    With ``json_path``, a partial result (``"complete": false``) is written after the full build and after the
    rebuild, so a long run that is stopped still leaves its build figures.
    """
    from agenix_assets.core.config import load_project_config
    from agenix_assets.core.embedding import Embedder, torch_threads
    from agenix_assets.core.index import VectorIndexStore, chroma_client
    from agenix_assets.core.sample_data import SCALES, generate_sample_company

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    if not 0.0 < change_fraction <= 1.0:
        raise ValueError("change_fraction must be in (0, 1]")
    if not 0.0 < raw_sample <= 1.0:
        raise ValueError("raw_sample must be in (0, 1]")
    if isinstance(as_of, str):
        as_of = dt.date.fromisoformat(as_of)
    say = log or (lambda message: None)
    temp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="agenix-bench-indexing-")) if temp else Path(workdir)
    home = workdir / "home"
    if home.exists() and any(home.iterdir()):
        raise FileExistsError(f"{home} is not empty: the benchmark needs a fresh platform home")
    landing, warehouse = home / "landing", home / "warehouse.duckdb"
    chroma_path, artifacts_root = home / "chroma", home / "index"
    home.mkdir(parents=True, exist_ok=True)
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    client = None
    full: dict[str, Any] = {}
    rebuild: dict[str, Any] = {}
    compacting: dict[str, Any] = {}

    def checkpoint(phase: str) -> None:
        if json_path is None:
            return
        partial: dict[str, Any] = {"scale": scale, "complete": False, "after": phase, "date": started_at.isoformat()}
        if full:
            partial["full_build"] = {
                **_public(full),
                "chunks_per_s": round(full["chunks"] / full["seconds"], 3) if full["seconds"] else 0.0,
            }
        if compacting:
            partial["compacting_rebuild"] = _relative_to_full(compacting, full["seconds"])
        if rebuild:
            partial["rebuild"] = _relative_to_full(rebuild, full["seconds"])
        partial["peak_rss_mb"] = round(peak_rss_mb(), 1)
        _write_json(Path(json_path), partial)

    try:
        with RssSampler() as sampler:
            config = load_project_config(config_dir)
            settings = config.rag_for(USE_CASE)

            # ---- 1. setup (not part of any build)
            say(f"generating the sample company at scale {scale} into {landing}")
            t0 = time.perf_counter()
            summary = generate_sample_company(landing, scale=scale, seed=seed, as_of=as_of)
            generate_seconds = time.perf_counter() - t0
            say(f"generated in {generate_seconds:.1f} s; ingesting")
            ingestion = ingest(warehouse, config, landing, [s.name for s in config.sources])
            say(f"ingested in {ingestion['seconds']:.1f} s; dbt build")
            dbt_seconds = run_dbt_build(warehouse, workdir, as_of)
            say(f"dbt build {dbt_seconds:.1f} s")

            embedder = Embedder()
            warm = _warm_up(embedder, settings, say)
            import torch

            threads_used = torch.get_num_threads()
            client = chroma_client("embedded", path=chroma_path)
            store = VectorIndexStore(client)

            # ---- 2. full build
            build_args = (warehouse, config, settings, embedder, store, artifacts_root, sampler, say, pii_check)
            full = run_build("full build", *build_args)
            items = full.pop("_items")
            full.pop("_version")
            full_seconds = full["seconds"]
            checkpoint("full build")

            # ---- 3. incremental rebuild
            changed = modify_documents(landing / config.source(KB_SOURCE).location, change_fraction, seed)
            say(f"edited {len(changed)} knowledge-base documents; re-ingesting {KB_SOURCE}")
            reingest = ingest(warehouse, config, landing, [KB_SOURCE])
            redbt_seconds = run_dbt_build(warehouse, workdir, as_of, ["stg_kb_documents", "cleaned_kb_documents"])
            say(f"re-ingest {reingest['seconds']:.1f} s, dbt {redbt_seconds:.1f} s")
            rebuild = run_build("rebuild", *build_args)
            rebuild.pop("_items")
            version = rebuild.pop("_version")
            index_stage = rebuild["stages"]["index"]
            kept, added, removed = index_stage["kept"], index_stage["added"], index_stage["removed"]
            checkpoint("rebuild")

            # ---- 3b. the same kind of change once more, built as a full copy of the index (what a compaction
            # costs: every max_layers-th version, or when the layers outgrow max_overlay_fraction)
            if compaction:
                changed2 = modify_documents(landing / config.source(KB_SOURCE).location, change_fraction, seed + 1)
                say(f"edited {len(changed2)} more knowledge-base documents for the compacting rebuild")
                ingest(warehouse, config, landing, [KB_SOURCE])
                run_dbt_build(warehouse, workdir, as_of, ["stg_kb_documents", "cleaned_kb_documents"])
                compacting = run_build("compacting rebuild", *build_args, max_layers=1)
                compacting.pop("_items")
                compacting.pop("_version")
                compacting["documents_changed"] = len(changed2)
                checkpoint("compacting rebuild")

            # ---- 4. raw baseline: the model alone on the chunks' texts (all, or a seeded sample), same object and
            # threads; after the rebuild so that the build figures are on disk first in a long run
            texts = [c.text for c in items]
            del items
            if raw_sample < 1.0:
                rng = random.Random(f"agenix-bench-indexing-raw:{seed}")
                texts = rng.sample(texts, max(1, round(len(texts) * raw_sample)))
            say(f"raw encode of {len(texts)} chunk texts ...")
            sampler.reset()
            t0 = time.perf_counter()
            raw_vectors = embedder.encode(texts)
            raw_seconds = time.perf_counter() - t0
            raw_peak = sampler.window()
            assert raw_vectors.shape[0] == len(texts)
            n_raw = len(texts)
            del raw_vectors, texts
            say(f"raw encode {raw_seconds:.2f} s ({n_raw / raw_seconds:.1f} chunks/s)")
    finally:
        if client is not None:
            try:
                from chromadb.api.shared_system_client import SharedSystemClient

                SharedSystemClient.clear_system_cache()
            except Exception as exc:  # noqa: BLE001 - cleanup only
                say(f"could not clear Chroma's client cache: {exc}")
        if temp and not keep:
            shutil.rmtree(workdir, ignore_errors=True)

    n_chunks = full["chunks"]
    full_rate = n_chunks / full_seconds if full_seconds else 0.0
    raw_rate = n_raw / raw_seconds if raw_seconds else 0.0
    checks_seconds = sum(c["seconds"] for c in full.get("checks", {}).values())
    result: dict[str, Any] = {
        "scale": scale,
        "documents": full["documents"],
        "chunks": n_chunks,
        "setup": {
            "generate_seconds": round(generate_seconds, 3),
            "ingest_seconds": ingestion["seconds"],
            "dbt_seconds": round(dbt_seconds, 3),
            "ingest": ingestion["sources"],
            "sample_counts": summary["counts"],
            "warmup": warm,
        },
        "full_build": {
            **_public(full),
            "docs_per_s": round(full["documents"] / full_seconds, 3) if full_seconds else 0.0,
            "chunks_per_s": round(full_rate, 3),
        },
        "raw_encode": {
            "seconds": round(raw_seconds, 3),
            "chunks": n_raw,
            "sample_fraction": raw_sample,
            "chunks_per_s": round(raw_rate, 3),
            "peak_rss_mb": round(raw_peak, 1),
        },
        "ratio": round(full_rate / raw_rate, 4) if raw_rate else 0.0,
        "ratio_with_checks": round((n_chunks / (full_seconds + checks_seconds)) / raw_rate, 4) if raw_rate else 0.0,
        "rebuild": {
            **_relative_to_full(rebuild, full_seconds),
            "added": added,
            "kept": kept,
            "removed": removed,
            "total": version.total,
            "version": version.version,
            "documents_changed": len(changed),
            "changed_documents": changed[:20],
            "reingest_seconds": reingest["seconds"],
            "reingest": reingest["sources"][KB_SOURCE],
            "dbt_seconds": round(redbt_seconds, 3),
        },
        "compacting_rebuild": _relative_to_full(compacting, full_seconds) if compacting else None,
        "targets": {"ratio": RATIO_TARGET, "rebuild_percent": REBUILD_TARGET_PERCENT},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "meta": {
            "model_id": embedder.model_id,
            "batch_size": embedder.batch_size,
            "torch_threads": threads_used,
            "torch_threads_configured": torch_threads(),
            "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "date": started_at.isoformat(timespec="seconds"),
            "seconds_total": round((dt.datetime.now(dt.UTC) - started_at).total_seconds(), 1),
            "seed": seed,
            "as_of": as_of.isoformat(),
            "change_fraction": change_fraction,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "versions": _versions(),
            "workdir": str(workdir) if (keep or not temp) else None,
            "stages_in_total": list(STAGES),
            "notes": (
                "Full build and rebuild = the five stages; the PII scan check is reported under checks and "
                "counted only in ratio_with_checks. Warm-up (model load, tokenizer, Presidio import) precedes both "
                "timings. raw_encode = Embedder.encode on the text of every chunk (or of the seeded sample of "
                "sample_fraction of them), run after the rebuild; ratio compares chunks/s."
            ),
        },
    }
    result["complete"] = True
    if json_path is not None:
        _write_json(Path(json_path), result)
    return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "sentence-transformers", "chromadb", "duckdb", "presidio-analyzer"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    full, rebuild, raw, meta = result["full_build"], result["rebuild"], result["raw_encode"], result["meta"]
    setup = result.get("setup", {})
    lines = [
        f"Indexing benchmark - scale {result['scale']}: {result['documents']:,} documents, {result['chunks']:,} chunks",
        (
            f"model {meta['model_id']}, torch threads {meta['torch_threads']}, {meta['cpu_count']} CPUs, "
            f"load avg {meta.get('load_average_before', ['?'])[0]} -> {meta.get('load_average_after', ['?'])[0]}, "
            f"{meta['date']}"
        ),
    ]
    if setup:
        lines.append(
            f"setup (not timed as build): generate {setup['generate_seconds']:.1f} s, "
            f"ingest {setup['ingest_seconds']:.1f} s, dbt build {setup['dbt_seconds']:.1f} s; "
            f"rebuild prep: re-ingest {rebuild.get('reingest_seconds', 0):.1f} s, "
            f"dbt {rebuild.get('dbt_seconds', 0):.1f} s"
        )
    header = (
        f"{'stage':<14}{'full s':>10}{'items':>9}{'items/s':>10}{'peak MB':>9}   "
        f"{'rebuild s':>10}{'items':>8}{'items/s':>10}{'peak MB':>9}"
    )
    lines += ["", header, "-" * len(header)]

    def row(name: str, f: dict[str, Any] | None, r: dict[str, Any] | None) -> str:
        f, r = f or {}, r or {}
        return (
            f"{name:<14}{fmt(f.get('seconds')):>10}{fmt(f.get('items')):>9}{fmt(f.get('per_s'), 1):>10}"
            f"{fmt(f.get('peak_rss_mb'), 0):>9}   {fmt(r.get('seconds')):>10}{fmt(r.get('items')):>8}"
            f"{fmt(r.get('per_s'), 1):>10}{fmt(r.get('peak_rss_mb'), 0):>9}"
        )

    for name in STAGES:
        lines.append(row(name, full["stages"].get(name), rebuild["stages"].get(name)))
    lines.append("-" * len(header))
    lines.append(
        row(
            "total",
            {"seconds": full["seconds"], "items": result["chunks"], "per_s": full["chunks_per_s"]},
            {"seconds": rebuild["seconds"], "items": rebuild["reembedded"]},
        )
    )
    for name, check in full.get("checks", {}).items():
        lines.append(row(f"({name})", check, rebuild.get("checks", {}).get(name)) + "   gate step, not in total")
    raw_row = {"seconds": raw["seconds"], "items": raw["chunks"], "per_s": raw["chunks_per_s"]}
    sample = raw.get("sample_fraction", 1.0)
    raw_note = f"   a {sample:.0%} sample of the chunks" if sample < 1.0 else ""
    lines.append(row("raw encode", {**raw_row, "peak_rss_mb": raw.get("peak_rss_mb")}, None) + raw_note)

    def ok(good: bool) -> str:
        return "ok" if good else "MISSED"

    lines += [
        "",
        (
            f"full build: {full['seconds']:.1f} s, {full['docs_per_s']:.1f} documents/s, "
            f"{full['chunks_per_s']:.1f} chunks/s"
        ),
        (
            f"ratio full build / raw encode: {result['ratio']:.3f} "
            f"(target >= {RATIO_TARGET}: {ok(result['ratio'] >= RATIO_TARGET)})"
            + (f"; with the PII check: {result['ratio_with_checks']:.3f}" if full.get("checks") else "")
        ),
        (
            f"rebuild: {rebuild['seconds']:.1f} s = {rebuild['percent_of_full']:.2f}% of the full build "
            f"(target <= {REBUILD_TARGET_PERCENT}%: {ok(rebuild['percent_of_full'] <= REBUILD_TARGET_PERCENT)}); "
            f"{rebuild.get('documents_changed', '?')} documents edited, {rebuild['reembedded']} chunks re-embedded; "
            f"index kept {rebuild['kept']:,}, added {rebuild['added']:,}, removed {rebuild['removed']:,} "
            f"({rebuild['stages']['index'].get('layout', 'full')} version)"
        ),
        f"peak RSS: {result['peak_rss_mb']:,.0f} MB",
    ]
    compacting = result.get("compacting_rebuild")
    if compacting:
        lines.insert(
            -1,
            f"compacting rebuild (the next 1% change, built as a full copy of the index): {compacting['seconds']:.1f} s "
            f"= {compacting['percent_of_full']:.2f}% of the full build",
        )
    return "\n".join(lines)


def print_table(result: dict[str, Any]) -> None:
    print(format_table(result))


__all__ = ["format_table", "modify_documents", "print_table", "run_indexing_benchmark"]
