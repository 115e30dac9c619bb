"""RAG lane: redacted documents -> chunks -> embeddings -> vector index version, per use case (seed step 2.3).

Each step is incremental (content hashes in the warehouse's rag_<use case> schema, an embedding cache keyed
by content hash and model id, index versions that carry unchanged vectors forward), so editing one
knowledge-base file re-redacts, re-chunks and re-embeds only that file.

Gates hold across runs (write-audit-publish, core/gates.py): `chunks` writes to a staging table, runs its blocking
checks there and publishes only what passed; `embeddings` and `vector_index` read only the published chunks and
refuse, in any run, while the latest evaluation of what they read failed (the refusal names the check and its
evidence). An index version is servable only when every blocking check of the lane that covers it passed: its
verdict file (gates.json beside its artifacts) lists each one, and the gateway serves only servable versions.
A version that failed stays in Chroma as evidence, but the last servable one keeps serving and is never
garbage-collected in its favour.
"""

import dataclasses
import datetime as dt
import json
import time

import dagster as dg

from ..core import gates
from ..core import rag as core
from ..core.config import RagSettings
from ..core.embedding import CachedChunkEmbedder, EmbeddingCache, embed_with_cache
from ..core.index import STATUS_READY, IndexVersion
from ..core.tables import markdown_table
from ..resources.embedder import EmbedderResource
from ..resources.platform import AgenixResource
from ..resources.vector_store import VectorStoreResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource
from .governance import USE_CASE_CHARTERS, evidence_metadata
from .transform import FIELDS_ALLOWED_BY_REGISTER

GROUP = "rag"
# Check names are core's: the gateway reads them back from index verdict files without importing Dagster.
NO_PII_IN_CHUNKS = core.NO_PII_IN_CHUNKS
CHUNK_TOKEN_BOUNDS = core.CHUNK_TOKEN_BOUNDS
NO_EMPTY_CHUNKS = core.NO_EMPTY_CHUNKS
UNIQUE_CHUNK_IDS = core.UNIQUE_CHUNK_IDS
EVERY_CHUNK_EMBEDDED = core.EVERY_CHUNK_EMBEDDED
EVERY_CHUNK_INDEXED = core.EVERY_CHUNK_INDEXED
RETRIEVAL_SMOKE_TEST = core.RETRIEVAL_SMOKE_TEST
EMBEDDING_CACHE = "rag.embedding_cache"


def use_case_prefix(use_case: str) -> str:
    return use_case.replace("-", "_")


def rag_key(use_case: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([use_case_prefix(use_case), name])


def _check_result(result: gates.GateResult, metadata: dict | None = None) -> dg.AssetCheckResult:
    """A gate verdict as Dagster's check result."""
    return dg.AssetCheckResult(
        check_name=result.check, passed=result.passed, description=result.description,
        metadata={**evidence_metadata(result.evidence), **(metadata or {})},
    )


def _require(con, upstream: dg.AssetKey, consumer: dg.AssetKey, expected: tuple[str, ...]) -> list[gates.GateResult]:
    """The upstream's latest verdicts, or a step failure that names each failed check and its evidence."""
    try:
        return gates.require_passed(con, upstream.to_user_string(), consumer.to_user_string(), expected)
    except gates.GateRefused as refused:
        raise dg.Failure(
            description=str(refused),
            metadata={
                "refused_upstream": upstream.to_user_string(),
                "failed_checks": ", ".join(g.check for g in refused.failed),
                "failed_run": refused.failed[0].run_id or "(none)",
                "evidence": dg.MetadataValue.json({g.check: {"description": g.description, **g.evidence} for g in refused.failed}),
            },
        ) from None


def _require_instance_checks(context: dg.AssetExecutionContext, keys: list[dg.AssetCheckKey]) -> None:
    """Refuse while the latest completed evaluation of any of these checks failed, as recorded by this Dagster
    instance (any run). For upstreams that publish in place (dbt), where there is no staged copy to withhold."""
    storage = context.instance.event_log_storage
    failed = []
    for key in keys:
        # Newest first; a planned execution (a run in progress or one that died) has no evaluation yet.
        done = [r for r in storage.get_asset_check_execution_history(key, limit=10)
                if isinstance(r.evaluation, dg.AssetCheckEvaluation)]
        if done and not done[0].evaluation.passed and done[0].evaluation.severity == dg.AssetCheckSeverity.ERROR:
            failed.append((key, done[0].run_id, done[0].evaluation.description or ""))
    if failed:
        raise dg.Failure(
            description=f"{context.asset_key.to_user_string()} refuses to read "
            + "; ".join(f"{k.asset_key.to_user_string()}: its latest {k.name} failed (run {run}): {why}" for k, run, why in failed)
            + ". Fix the model and materialize it again so the check passes.",
            metadata={"failed_checks": ", ".join(f"{k.asset_key.to_user_string()}:{k.name}" for k, _, _ in failed)},
        )


def _counts_md(counts: dict) -> dg.MetadataValue:
    rows = [{"entity": k, "found": v} for k, v in sorted(counts.items())]
    return dg.MetadataValue.md(markdown_table(rows) if rows else "_none_")


def build_rag_assets(settings: RagSettings) -> list:
    use_case = settings.use_case
    tables = core.RagTables.for_use_case(use_case)
    redacted_key = rag_key(use_case, "redacted_documents")
    chunks_key = rag_key(use_case, "chunks")
    embeddings_key = rag_key(use_case, "embeddings")
    index_key = rag_key(use_case, "vector_index")
    cleaned = [dg.AssetKey(["cleaned", f"cleaned_{e.source}"]) for e in settings.indexed_sources]
    cleaned_inputs = [*cleaned, dg.AssetKey(["cleaned", "cleaned_crm_contacts"])]
    tags = {"agenix/use_case": use_case}

    def current_settings(agenix: AgenixResource) -> tuple:
        config = agenix.load_config()
        return config, config.rag_for(use_case)

    @dg.asset(
        key=redacted_key,
        deps=[*cleaned_inputs, USE_CASE_CHARTERS],
        group_name=GROUP,
        owners=["team:data"],
        kinds={"duckdb", "presidio"},
        pool=DUCKDB_POOL,
        tags=tags,
        description=f"Every text of use case '{use_case}' that can reach its index, with PII masked (Presidio, "
        "offline, plus a deny list of the CRM's contacts). Placeholders are consistent within a document. "
        f"Table {tables.redacted}; skipped records in {tables.skips}.",
    )
    def redacted_documents(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        config, rs = current_settings(agenix)
        # dbt writes the cleaned tables in place, so their data-minimization gate is read from the instance.
        _require_instance_checks(context, [dg.AssetCheckKey(k, FIELDS_ALLOWED_BY_REGISTER) for k in cleaned_inputs])
        with warehouse.connect() as con:
            docs = core.load_source_documents(con, config, rs)
            people = core.load_known_people(con)
            core.export_deny_list(agenix.paths.home / "gateway" / "known_people.json", people)
            rid = core.redactor_id(people, rs)
            redactor = core.build_redactor(people, rs)
            result = core.sync_redacted_documents(con, tables, docs, redactor, rid, rs.max_document_chars)
            skips = con.execute(f"SELECT doc_key, reason FROM {tables.skips} ORDER BY doc_key LIMIT 20").fetchall()
            [(n_skipped,)] = con.execute(f"SELECT count(*) FROM {tables.skips}").fetchall()
            [(n_docs,)] = con.execute(f"SELECT count(*) FROM {tables.redacted}").fetchall()
        context.log.info(f"redacted {result.processed}, unchanged {result.unchanged}, removed {result.removed}")
        per_sec = result.processed / result.seconds if result.seconds and result.processed else 0.0
        metadata = {
            "documents": n_docs,
            "redacted": result.processed,
            "unchanged": result.unchanged,
            "removed": result.removed,
            "skipped": n_skipped,
            "redactor_id": rid,
            "known_people": len(people),
            "seconds": round(result.seconds, 2),
            "documents_per_second": round(per_sec, 1),
            "entities_found": _counts_md(dict(result.counts)),
            "skip_reasons": dg.MetadataValue.md(markdown_table([{"document": k, "reason": r} for k, r in skips]) if skips else "_none_"),
            "dagster/row_count": n_docs,
        }
        # One numeric series per entity type, so the UI plots what each run found.
        metadata.update({f"pii_{k.lower()}": int(v) for k, v in sorted(result.counts.items())})
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        key=chunks_key,
        deps=[redacted_key],
        group_name=GROUP,
        owners=["team:data"],
        kinds={"duckdb"},
        pool=DUCKDB_POOL,
        tags=tags,
        description="Structure-aware, token-bounded chunks of the redacted documents, with source, document, "
        f"title, section path, data domain and updated_at. Table {tables.chunks}.",
        check_specs=[
            dg.AssetCheckSpec(NO_PII_IN_CHUNKS, asset=chunks_key, blocking=True, description="No chunk contains PII of any type, nor a CRM contact's name or email (an independent literal scan). Blocks embedding and indexing."),
            dg.AssetCheckSpec(CHUNK_TOKEN_BOUNDS, asset=chunks_key, blocking=True, description="Every chunk has between 1 and max_tokens tokens (the embedding model's tokenizer)."),
            dg.AssetCheckSpec(NO_EMPTY_CHUNKS, asset=chunks_key, blocking=True, description="No chunk is empty or whitespace."),
            dg.AssetCheckSpec(UNIQUE_CHUNK_IDS, asset=chunks_key, blocking=True, description="Chunk ids are unique."),
        ],
    )
    def chunks(context: dg.AssetExecutionContext, agenix: AgenixResource, warehouse: WarehouseResource):
        config, rs = current_settings(agenix)
        with warehouse.connect() as con:
            # Write and audit in staging; publish only if every blocking check passes (core.publish_chunks).
            result = core.sync_chunks(con, tables, rs)
            stats = core.chunk_stats(con, tables, rs.chunking.max_tokens)
            people = core.load_known_people(con)
            # The scan looks for every entity type, whatever the redaction settings mask.
            detector = core.build_redactor(people, rs.model_copy(update={"pii": rs.pii.model_copy(update={"mask_entities": None})}))
            scan = core.scan_chunks_for_pii(con, tables, detector, people)
            verdicts = core.chunk_gate_results(chunks_key.to_user_string(), stats, scan, rs.chunking.max_tokens)
            published = core.publish_chunks(con, tables, verdicts, context.run_id)
            [(n_published,)] = con.execute(f"SELECT count(*) FROM {tables.chunks}").fetchall()
        failed = [v.check for v in verdicts if not v.passed]
        if failed:
            context.log.error(f"chunks not published: {', '.join(failed)} failed; the last published chunks stay in force")
        yield dg.MaterializeResult(
            metadata={
                "chunks": stats.chunks,
                "documents": stats.documents,
                "documents_rechunked": result.processed,
                "documents_unchanged": result.unchanged,
                "chunks_written": result.counts["chunks_written"],
                "mean_tokens": stats.mean_tokens,
                "max_tokens": stats.max_tokens,
                "chunker_id": core.chunker_id(rs),
                "seconds": round(result.seconds, 2),
                "published": published,
                "published_chunks": n_published,
                "failed_gates": ", ".join(failed) or "(none)",
                "staging_table": tables.chunks_staging,
                "dagster/row_count": n_published,
            }
        )
        for verdict in verdicts:
            extra = {}
            if verdict.check == NO_PII_IN_CHUNKS:
                findings = verdict.evidence["examples"]
                extra["examples"] = dg.MetadataValue.md(markdown_table(findings) if findings else "_none_")
            yield _check_result(verdict, extra)

    @dg.asset(
        key=embeddings_key,
        deps=[chunks_key],
        group_name=GROUP,
        owners=["team:llm"],
        kinds={"duckdb", "pytorch"},
        pool=DUCKDB_POOL,
        tags=tags,
        description="Embeddings of every chunk (all-MiniLM-L6-v2, normalised) in the cache "
        f"{EMBEDDING_CACHE}, keyed by content hash and model id: an unchanged chunk is never embedded twice.",
        check_specs=[dg.AssetCheckSpec(EVERY_CHUNK_EMBEDDED, asset=embeddings_key, blocking=True, description="Every chunk has a cached embedding for the current model.")],
    )
    def embeddings(context: dg.AssetExecutionContext, warehouse: WarehouseResource, embedder: EmbedderResource):
        model = embedder.embedder()
        with warehouse.connect() as con:
            _require(con, chunks_key, embeddings_key, core.CHUNK_GATES)
            rows = con.execute(f"SELECT content_hash, text FROM {tables.chunks} ORDER BY chunk_id").fetchall()
            unique = dict(rows)
            cache = EmbeddingCache(con, EMBEDDING_CACHE)
            _, stats = embed_with_cache(model, cache, list(unique.values()), list(unique.keys()))
            missing = len(set(unique) - set(cache.get_many(list(unique), model.model_id)))
            verdict = gates.GateResult(
                embeddings_key.to_user_string(), EVERY_CHUNK_EMBEDDED, missing == 0,
                f"{missing} published chunk text(s) without an embedding for {model.model_id}",
                {"missing": missing, "chunks": len(rows), "model_id": model.model_id},
            )
            gates.record_evaluation(con, [verdict], context.run_id, published=verdict.passed)
        rate = stats.embedded / stats.seconds if stats.embedded and stats.seconds else 0.0
        context.log.info(f"embedded {stats.embedded}, cache hits {stats.cache_hits}")
        yield dg.MaterializeResult(
            metadata={
                "chunks": len(rows),
                "unique_texts": len(unique),
                "embedded": stats.embedded,
                "cache_hits": stats.cache_hits,
                "seconds": round(stats.seconds, 2),
                "chunks_per_second": round(rate, 1),
                "model_id": model.model_id,
                "dimension": model.dimension,
            }
        )
        yield _check_result(verdict)

    @dg.asset(
        key=index_key,
        deps=[embeddings_key],
        group_name=GROUP,
        owners=["team:llm"],
        kinds={"chroma"},
        pool=DUCKDB_POOL,
        tags=tags,
        description=f"The vector index of use case '{use_case}': an immutable Chroma collection per version "
        "(agenix.<use case>.v<N>) that carries unchanged vectors forward from its parent (a small change is a "
        "delta collection layered over its parent's; a full copy compacts the chain), plus the version's "
        "retrieval artifacts (exact dense index and BM25) for query time. A failed build leaves the previous "
        "version live; old versions are garbage-collected by retention.",
        check_specs=[
            dg.AssetCheckSpec(EVERY_CHUNK_INDEXED, asset=index_key, blocking=True, description="The version built holds exactly the published chunks."),
            dg.AssetCheckSpec(RETRIEVAL_SMOKE_TEST, asset=index_key, blocking=True, description="Golden queries of the use case find their documents in the top k with the production retrieval configuration."),
        ],
    )
    def vector_index(
        context: dg.AssetExecutionContext,
        agenix: AgenixResource,
        warehouse: WarehouseResource,
        vector_store: VectorStoreResource,
        embedder: EmbedderResource,
    ):
        config, rs = current_settings(agenix)
        model = embedder.embedder()
        store = vector_store.store()
        parent = store.live(use_case)
        started = time.perf_counter()
        with warehouse.connect() as con:
            # Build only from what passed its gates: the published chunks, and embeddings whose check passed.
            upstream = _require(con, chunks_key, index_key, core.CHUNK_GATES)
            upstream += _require(con, embeddings_key, index_key, core.EMBEDDING_GATES)
            items = core.index_chunks(con, tables)
            embed = CachedChunkEmbedder(model, EmbeddingCache(con, EMBEDDING_CACHE))
            version: IndexVersion = store.build_version(
                use_case,
                items,
                embed,
                model.model_id,
                max_layers=rs.index.max_layers,
                max_overlay_fraction=rs.index.max_overlay_fraction,
            )
            vectors = embed([c for c in items]) if items else None
        build_seconds = time.perf_counter() - started
        root = agenix.paths.home / "index"
        if not core.artifacts_dir(root, version.collection).exists():
            core.write_retrieval_artifacts(root, version.collection, items, vectors)
        new = parent is None or version.version != parent.version

        # Audit the version just built (not whichever is newest in the store).
        asset = index_key.to_user_string()
        stored = set(store.ids(use_case, version.version))
        expected = {c.chunk_id for c in items}
        missing, extra = len(expected - stored), len(stored - expected)
        indexed = gates.GateResult(
            asset, EVERY_CHUNK_INDEXED, not missing and not extra,
            f"version {version.version}: {len(stored)} vectors, {missing} chunk(s) missing, {extra} unexpected",
            {"indexed": len(stored), "chunks": len(expected), "missing": missing, "unexpected": extra,
             "index_version": version.version},
        )
        golden_path, golden = config.smoke_test_golden_set(rs, agenix.paths.landing)
        retriever = core.load_retriever(root, version.collection, rs.retrieval, model)
        smoke = core.smoke_test(retriever, golden, rs.smoke_test.top_k)
        smoke_result = gates.GateResult(
            asset, RETRIEVAL_SMOKE_TEST, smoke.hit_rate >= rs.smoke_test.min_hit_rate,
            f"{smoke.hits}/{smoke.total} golden queries found their document in the top {rs.smoke_test.top_k}"
            + (f"; first miss: {smoke.misses[0][0]} expected {smoke.misses[0][1]}" if smoke.misses else ""),
            {"hit_rate": round(smoke.hit_rate, 4), "threshold": rs.smoke_test.min_hit_rate, "queries": smoke.total,
             "golden_set": str(golden_path), "p50_query_ms": round(smoke.p50_ms, 2), "index_version": version.version},
        )
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        own = [dataclasses.replace(r, run_id=context.run_id, evaluated_at=now) for r in (indexed, smoke_result)]
        # The verdict file lists every blocking check of the lane that covers this version; the gateway serves
        # the version only if each one passed.
        verdict = core.write_index_verdict(root, version.collection, [*upstream, *own])
        with warehouse.connect() as con:
            gates.record_evaluation(con, own, context.run_id, published=verdict["servable"])

        ready = [v for v in store.versions(use_case) if v.status == STATUS_READY]
        serving = next((v for v in reversed(ready) if core.index_servable(core.read_gates(root, v.collection))), None)
        # The newest servable version outlives newer versions that failed their gates: it is what still serves.
        protect = [serving.version] if serving else []
        removed = store.gc(use_case, keep=rs.index.retention_versions, protect=protect)
        kept = [v.collection for v in store.versions(use_case)]
        # Artifacts are per version and self-contained: only the retained versions need theirs (older versions that
        # stay in Chroma only as layers of retained delta versions do not).
        core.prune_artifacts(root, [v.collection for v in store.retained(use_case, rs.index.retention_versions, protect)])
        if not verdict["servable"]:
            failed = [n for n, c in verdict["checks"].items() if not c["passed"]]
            context.log.error(
                f"index {version.collection} is not servable ({', '.join(failed)} failed); the gateway keeps serving "
                + (serving.collection if serving else "nothing")
            )
        context.log.info(f"index {version.collection} ({'new' if new else 'unchanged'}), gc removed {removed}")
        yield dg.MaterializeResult(
            metadata={
                "version": version.version,
                "parent_version": version.parent_version if version.parent_version is not None else -1,
                "collection": version.collection,
                "new_version": new,
                "servable": verdict["servable"],
                "serving_version": serving.version if serving else -1,
                "added": version.added if new else 0,
                "kept": version.kept if new else version.total,
                "removed": version.removed if new else 0,
                "total": version.total,
                "layout": version.layout,
                "layers": len(version.layers),
                "stored_in_collection": version.stored,
                "masked": version.masked,
                "embedder_id": version.embedder_id,
                "embedded_during_build": embed.stats.embedded,
                "build_seconds": round(build_seconds, 2),
                "versions_retained": len(kept),
                "garbage_collected": json.dumps(removed),
                "vector_store": vector_store.location,
                "verdict": dg.MetadataValue.md(
                    markdown_table(
                        [{"check": n, "asset": c["asset"], "passed": c["passed"], "run": c["run_id"]}
                         for n, c in verdict["checks"].items()]
                    )
                ),
            }
        )
        yield _check_result(indexed)
        yield _check_result(
            smoke_result,
            {
                "misses": dg.MetadataValue.md(
                    markdown_table([{"query": q, "expected": e, "top documents": ", ".join(d)} for q, e, d in smoke.misses])
                    if smoke.misses
                    else "_none_"
                )
            },
        )

    return [redacted_documents, chunks, embeddings, vector_index]
