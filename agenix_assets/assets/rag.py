"""RAG lane: redacted documents -> chunks -> embeddings -> vector index version, per use case (seed step 2.3).

Each step is incremental (content hashes in the warehouse's rag_<use case> schema, an embedding cache keyed
by content hash and model id, index versions that carry unchanged vectors forward), so editing one
knowledge-base file re-redacts, re-chunks and re-embeds only that file. Blocking checks stop the lane:
PII left in a chunk stops embedding and indexing; an index that misses chunks or fails the golden-query
smoke test is never reported ready to downstream releases.
"""

import json
import time
from collections import Counter

import dagster as dg

from ..core import rag as core
from ..core.config import RagSettings
from ..core.embedding import CachedChunkEmbedder, EmbeddingCache, embed_with_cache
from ..core.index import IndexVersion
from ..core.tables import markdown_table
from ..resources.embedder import EmbedderResource
from ..resources.platform import AgenixResource
from ..resources.vector_store import VectorStoreResource
from ..resources.warehouse import DUCKDB_POOL, WarehouseResource
from .governance import USE_CASE_CHARTERS

GROUP = "rag"
NO_PII_IN_CHUNKS = "no_pii_in_chunks"
CHUNK_TOKEN_BOUNDS = "chunk_token_bounds"
NO_EMPTY_CHUNKS = "no_empty_chunks"
UNIQUE_CHUNK_IDS = "unique_chunk_ids"
EVERY_CHUNK_EMBEDDED = "every_chunk_embedded"
EVERY_CHUNK_INDEXED = "every_chunk_indexed"
RETRIEVAL_SMOKE_TEST = "retrieval_smoke_test"
EMBEDDING_CACHE = "rag.embedding_cache"


def use_case_prefix(use_case: str) -> str:
    return use_case.replace("-", "_")


def rag_key(use_case: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([use_case_prefix(use_case), name])


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
    tags = {"agenix/use_case": use_case}

    def current_settings(agenix: AgenixResource) -> tuple:
        config = agenix.load_config()
        return config, config.rag_for(use_case)

    @dg.asset(
        key=redacted_key,
        deps=[*cleaned, dg.AssetKey(["cleaned", "cleaned_crm_contacts"]), USE_CASE_CHARTERS],
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
            result = core.sync_chunks(con, tables, rs)
            stats = core.chunk_stats(con, tables, rs.chunking.max_tokens)
            people = core.load_known_people(con)
            # The scan looks for every entity type, whatever the redaction settings mask.
            detector = core.build_redactor(people, rs.model_copy(update={"pii": rs.pii.model_copy(update={"mask_entities": None})}))
            scan = core.scan_chunks_for_pii(con, tables, detector, people)
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
                "dagster/row_count": stats.chunks,
            }
        )
        findings = scan.findings
        yield dg.AssetCheckResult(
            check_name=NO_PII_IN_CHUNKS,
            passed=not findings,
            description=(
                f"{len(findings)} PII finding(s) in chunks, e.g. {findings[0][1]} in {findings[0][0]}"
                if findings
                else f"scanned {scan.scanned} new chunk(s): no PII"
            ),
            metadata={
                "chunks_scanned": scan.scanned,
                "findings": len(findings),
                "finding_types": json.dumps(dict(Counter(f[1] for f in findings))),
                "examples": dg.MetadataValue.md(
                    markdown_table([{"chunk": c, "type": t} for c, t, _ in findings[:10]]) if findings else "_none_"
                ),
            },
        )
        limit = rs.chunking.max_tokens
        yield dg.AssetCheckResult(
            check_name=CHUNK_TOKEN_BOUNDS,
            passed=stats.over_limit == 0,
            description=f"{stats.over_limit} chunk(s) outside 1..{limit} tokens; max {stats.max_tokens}",
            metadata={"max_tokens_allowed": limit, "max_tokens_found": stats.max_tokens, "min_tokens_found": stats.min_tokens, "violations": stats.over_limit},
        )
        yield dg.AssetCheckResult(
            check_name=NO_EMPTY_CHUNKS, passed=stats.empty == 0, description=f"{stats.empty} empty chunk(s)", metadata={"empty": stats.empty}
        )
        yield dg.AssetCheckResult(
            check_name=UNIQUE_CHUNK_IDS, passed=stats.duplicate_ids == 0, description=f"{stats.duplicate_ids} duplicate id(s)", metadata={"duplicates": stats.duplicate_ids}
        )

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
            rows = con.execute(f"SELECT content_hash, text FROM {tables.chunks} ORDER BY chunk_id").fetchall()
            unique = dict(rows)
            cache = EmbeddingCache(con, EMBEDDING_CACHE)
            _, stats = embed_with_cache(model, cache, list(unique.values()), list(unique.keys()))
            missing = len(set(unique) - set(cache.get_many(list(unique), model.model_id)))
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
        yield dg.AssetCheckResult(
            check_name=EVERY_CHUNK_EMBEDDED,
            passed=missing == 0,
            description=f"{missing} chunk text(s) without an embedding for {model.model_id}",
            metadata={"missing": missing},
        )

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
            dg.AssetCheckSpec(EVERY_CHUNK_INDEXED, asset=index_key, blocking=True, description="The live version holds exactly the current chunks."),
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
        removed = store.gc(use_case, keep=rs.index.retention_versions)
        kept = [v.collection for v in store.versions(use_case)]
        # Artifacts are per version and self-contained: only the retained versions need theirs (older versions that
        # stay in Chroma only as layers of retained delta versions do not).
        core.prune_artifacts(root, [v.collection for v in store.retained(use_case, rs.index.retention_versions)])
        new = parent is None or version.version != parent.version
        context.log.info(f"index {version.collection} ({'new' if new else 'unchanged'}), gc removed {removed}")
        yield dg.MaterializeResult(
            metadata={
                "version": version.version,
                "parent_version": version.parent_version if version.parent_version is not None else -1,
                "collection": version.collection,
                "new_version": new,
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
            }
        )
        live = store.live(use_case)
        stored = set(store.ids(use_case, live.version)) if live else set()
        expected = {c.chunk_id for c in items}
        missing, extra = len(expected - stored), len(stored - expected)
        yield dg.AssetCheckResult(
            check_name=EVERY_CHUNK_INDEXED,
            passed=live is not None and not missing and not extra,
            description=f"live version {live.version if live else None}: {len(stored)} vectors, {missing} chunk(s) missing, {extra} unexpected",
            metadata={"indexed": len(stored), "chunks": len(expected), "missing": missing, "unexpected": extra},
        )
        golden_path, golden = config.smoke_test_golden_set(rs, agenix.paths.landing)
        retriever = core.load_retriever(root, version.collection, rs.retrieval, model)
        smoke = core.smoke_test(retriever, golden, rs.smoke_test.top_k)
        smoke_passed = smoke.hit_rate >= rs.smoke_test.min_hit_rate
        core.write_gate_result(root, version.collection, RETRIEVAL_SMOKE_TEST, smoke_passed,
                               {"hit_rate": round(smoke.hit_rate, 4), "threshold": rs.smoke_test.min_hit_rate})
        yield dg.AssetCheckResult(
            check_name=RETRIEVAL_SMOKE_TEST,
            passed=smoke_passed,
            description=f"{smoke.hits}/{smoke.total} golden queries found their document in the top {rs.smoke_test.top_k}"
            + (f"; first miss: {smoke.misses[0][0]} expected {smoke.misses[0][1]}" if smoke.misses else ""),
            metadata={
                "hit_rate": round(smoke.hit_rate, 4),
                "threshold": rs.smoke_test.min_hit_rate,
                "queries": smoke.total,
                "golden_set": str(golden_path),
                "p50_query_ms": round(smoke.p50_ms, 2),
                "index_version": version.version,
                "misses": dg.MetadataValue.md(
                    markdown_table([{"query": q, "expected": e, "top documents": ", ".join(d)} for q, e, d in smoke.misses])
                    if smoke.misses
                    else "_none_"
                ),
            },
        )

    return [redacted_documents, chunks, embeddings, vector_index]
