"""Versioned Chroma indexes with the real embedding model: incremental builds, failure recovery, gc, server mode."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest

from agenix_assets.core.embedding import CachedChunkEmbedder, EmbeddingCache, Embedder
from agenix_assets.core.index import (
    HNSW_DEFAULTS,
    LAYOUT_DELTA,
    LAYOUT_FULL,
    STATUS_FAILED,
    STATUS_READY,
    TEXT_KEY,
    ChromaServer,
    IndexChunk,
    VectorIndexStore,
    chroma_client,
    hnsw_configuration,
    mask_collection_name,
)

REPO = Path(__file__).resolve().parents[2]
USE_CASE = "support-assistant"

CORPUS = {
    "support": [
        "To reset your password, open Settings, choose Security and click Reset password; a link is emailed to you.",
        "Two-factor authentication can be enabled from the Security page using any authenticator app.",
        "If the mobile app crashes on start, clear its cache or reinstall it from the app store.",
        "Support tickets marked urgent are answered within four business hours.",
        "You can export all your projects as a ZIP archive from the Account page.",
        "Notifications can be muted per channel from the bell icon in the top bar.",
    ],
    "billing": [
        "Invoices are issued on the first business day of each month and are payable within 30 days.",
        "Refunds for annual plans are prorated to the number of unused months remaining.",
        "We accept Visa, Mastercard and SEPA direct debit; wire transfers only for enterprise plans.",
        "Changing from the monthly to the annual plan takes effect at the next renewal date.",
        "VAT is added to invoices for customers in the European Union without a valid VAT number.",
        "A failed card payment is retried three times over seven days before the account is suspended.",
    ],
    "hr": [
        "Employees accrue twenty-five days of paid vacation per calendar year.",
        "Parental leave of up to sixteen weeks is paid at full salary.",
        "Expense reports must be submitted within sixty days together with the original receipts.",
        "Remote work from abroad is allowed for up to four weeks per year with manager approval.",
        "The annual performance review takes place in November for all staff.",
        "New hires receive a laptop and badge on their first morning from the IT desk.",
    ],
    "engineering": [
        "Production deployments happen every Tuesday and Thursday after the change review.",
        "All services must expose a health endpoint and Prometheus metrics.",
        "Database migrations are applied by the release pipeline, never by hand.",
        "On-call engineers acknowledge pages within fifteen minutes, day or night.",
        "Feature flags are removed from the code within one month of full rollout.",
        "The staging environment is rebuilt from scratch every night at two a.m.",
    ],
}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make_chunks() -> list[IndexChunk]:
    chunks = []
    for domain, texts in CORPUS.items():
        for i, text in enumerate(texts):
            chunks.append(
                IndexChunk(
                    chunk_id=f"{domain}-{i:02d}",
                    content_hash=_hash(text),
                    text=text,
                    metadata={
                        "source": f"{domain}-handbook",
                        "document_id": f"{domain}-doc",
                        "title": f"{domain.title()} handbook",
                        "section_path": [domain.title(), f"Section {i}"],  # joined with " > "
                        "data_domain": domain,
                        "updated_at": "2026-10-01T00:00:00",
                        "token_count": len(text.split()),
                        "owner": None,  # dropped
                    },
                )
            )
    return chunks


def change_text(chunks: list[IndexChunk], chunk_id: str, text: str) -> list[IndexChunk]:
    return [replace(c, text=text, content_hash=_hash(text)) if c.chunk_id == chunk_id else c for c in chunks]


class CountingEmbed:
    """The embed callable the RAG asset passes: Embedder behind the DuckDB cache; records every batch."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache, fail_on_batch: int | None = None):
        self.inner = CachedChunkEmbedder(embedder, cache)
        self.fail_on_batch = fail_on_batch
        self.batches: list[list[str]] = []

    def __call__(self, chunks: list[IndexChunk]) -> np.ndarray:
        self.batches.append([c.chunk_id for c in chunks])
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise RuntimeError("embedding service died")
        return self.inner(chunks)

    @property
    def embedded_ids(self) -> list[str]:
        return [cid for batch in self.batches for cid in batch]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def cache() -> EmbeddingCache:
    return EmbeddingCache(duckdb.connect())


@pytest.fixture
def store(tmp_path) -> VectorIndexStore:
    return VectorIndexStore(chroma_client("embedded", tmp_path / "chroma"))


def embed_fn(embedder, cache, **kw) -> CountingEmbed:
    return CountingEmbed(embedder, cache, **kw)


def vectors_by_id(store: VectorIndexStore, version: int) -> dict[str, np.ndarray]:
    ids, emb, _, _ = store.get_all(USE_CASE, version)
    return dict(zip(ids, emb))


def test_incremental_versions_carry_forward_unchanged_vectors(store, embedder, cache):
    chunks = make_chunks()
    e1 = embed_fn(embedder, cache)
    v1 = store.build_version(USE_CASE, chunks, e1, embedder.model_id, batch_size=8)
    assert (v1.version, v1.status, v1.parent_version) == (1, STATUS_READY, None)
    assert (v1.added, v1.kept, v1.removed, v1.total, v1.dimension) == (24, 0, 0, 24, 384)
    assert v1.collection == "agenix.support-assistant.v0001"
    assert sorted(e1.embedded_ids) == sorted(c.chunk_id for c in chunks)
    assert [len(b) for b in e1.batches] == [8, 8, 8]
    assert store.live(USE_CASE) == v1

    ids, emb, texts, metas = store.get_all(USE_CASE)
    assert len(ids) == 24 and emb.shape == (24, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    meta = metas[ids.index("billing-01")]
    assert meta["section_path"] == "Billing > Section 1" and meta["data_domain"] == "billing"
    assert "owner" not in meta and meta["content_hash"] == _hash(CORPUS["billing"][1])

    # v2: one chunk changed -> exactly one embedding, the rest carried with identical vectors.
    changed = change_text(chunks, "billing-01", "Refunds are only possible within fourteen days of purchase.")
    e2 = embed_fn(embedder, cache)
    v2 = store.build_version(USE_CASE, changed, e2, embedder.model_id, batch_size=8)
    assert e2.embedded_ids == ["billing-01"]
    assert (e2.inner.stats.total, e2.inner.stats.cache_hits, e2.inner.stats.embedded) == (1, 0, 1)
    assert (v2.version, v2.parent_version, v2.added, v2.kept, v2.removed, v2.total) == (2, 1, 1, 23, 0, 24)
    assert store.live(USE_CASE).version == 2
    old, new = vectors_by_id(store, 1), vectors_by_id(store, 2)
    for cid in old:
        if cid == "billing-01":
            assert float(old[cid] @ new[cid]) < 0.99
        else:  # the stored vector, copied (Chroma's cosine space re-normalises on add: <= a few ulp of change)
            np.testing.assert_allclose(new[cid], old[cid], rtol=0, atol=1e-7)
    # v1 is immutable and still readable by explicit version.
    q = embedder.encode_query("can I get my money back for unused months of a yearly plan")
    hit_v1 = store.query(USE_CASE, q, 1, version=1)[0]
    assert hit_v1.chunk_id == "billing-01" and "prorated" in hit_v1.text
    assert all("prorated" not in h.text for h in store.query(USE_CASE, q, 24))  # live = v2

    # v3: a chunk deleted -> removed, nothing embedded.
    fewer = [c for c in changed if c.chunk_id != "hr-03"]
    e3 = embed_fn(embedder, cache)
    v3 = store.build_version(USE_CASE, fewer, e3, embedder.model_id, batch_size=8)
    assert e3.batches == []
    assert (v3.version, v3.added, v3.kept, v3.removed, v3.total) == (3, 0, 23, 1, 23)
    ids3, _, _, _ = store.get_all(USE_CASE)
    assert "hr-03" not in ids3 and len(ids3) == 23

    # Unchanged input -> the live version itself, no new collection.
    n_collections = len(store.client.list_collections())
    e4 = embed_fn(embedder, cache)
    again = store.build_version(USE_CASE, list(reversed(fewer)), e4, embedder.model_id, batch_size=8)
    assert again.version == 3 and again.collection == v3.collection and e4.batches == []
    assert len(store.client.list_collections()) == n_collections

    # Metadata-only change -> new version, all vectors carried, nothing embedded.
    retitled = [replace(c, metadata={**c.metadata, "title": "Renamed"}) if c.chunk_id == "hr-00" else c
                for c in fewer]
    e5 = embed_fn(embedder, cache)
    v4 = store.build_version(USE_CASE, retitled, e5, embedder.model_id, batch_size=8)
    assert (v4.version, v4.added, v4.kept, v4.removed) == (4, 0, 23, 0) and e5.batches == []
    _, _, _, metas4 = store.get_all(USE_CASE)
    assert {m["title"] for m in metas4 if m["document_id"] == "hr-doc"} == {"Renamed", "Hr handbook"}

    # Another embedder id -> nothing carried over.
    e6 = embed_fn(embedder, cache)
    v5 = store.build_version(USE_CASE, retitled, e6, embedder.model_id + "-other", batch_size=8)
    assert (v5.added, v5.kept) == (23, 0) and len(e6.embedded_ids) == 23


def test_failed_build_keeps_previous_live_and_next_build_recovers(store, embedder, cache):
    chunks = make_chunks()
    v1 = store.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id, batch_size=8)
    q = embedder.encode_query("how many vacation days do employees get each year")
    assert store.query(USE_CASE, q, 1)[0].chunk_id == "hr-00"

    # Change 10 chunks so v2 needs two embed batches of 8; the second one raises.
    edited = chunks
    for c in chunks[:10]:
        edited = change_text(edited, c.chunk_id, c.text + " (revised)")
    failing = embed_fn(embedder, cache, fail_on_batch=2)
    with pytest.raises(RuntimeError, match="embedding service died"):
        store.build_version(USE_CASE, edited, failing, embedder.model_id, batch_size=8)
    assert len(failing.batches) == 2
    assert store.live(USE_CASE) == v1
    statuses = {v.version: v.status for v in store.versions(USE_CASE)}
    assert statuses == {1: STATUS_READY, 2: STATUS_FAILED}
    assert store.query(USE_CASE, q, 1)[0].chunk_id == "hr-00"  # readers unaffected

    # gc removes the failed debris, never the live version.
    assert store.gc(USE_CASE, keep=1) == ["agenix.support-assistant.v0002"]
    assert [v.version for v in store.versions(USE_CASE)] == [1]

    # Fail again, then the next build deletes the debris itself and completes (numbers are never reused).
    with pytest.raises(RuntimeError):
        store.build_version(USE_CASE, edited, embed_fn(embedder, cache, fail_on_batch=2), embedder.model_id,
                            batch_size=8)
    ok = embed_fn(embedder, cache)
    v3 = store.build_version(USE_CASE, edited, ok, embedder.model_id, batch_size=8)
    assert (v3.version, v3.parent_version, v3.added, v3.kept, v3.total) == (3, 1, 10, 14, 24)
    assert [(v.version, v.status) for v in store.versions(USE_CASE)] == [(1, STATUS_READY), (3, STATUS_READY)]
    assert store.gc(USE_CASE, keep=5) == []


def test_gc_keeps_newest_n(store, embedder, cache):
    chunks = make_chunks()
    for i in range(4):
        chunks = change_text(chunks, "engineering-05", f"The staging environment is rebuilt every night, take {i}.")
        store.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id, max_layers=1)
    assert [v.version for v in store.versions(USE_CASE)] == [1, 2, 3, 4]
    deleted = store.gc(USE_CASE, keep=2)
    assert deleted == ["agenix.support-assistant.v0001", "agenix.support-assistant.v0002"]
    assert [v.version for v in store.versions(USE_CASE)] == [3, 4]
    assert store.gc(USE_CASE, keep=0) == ["agenix.support-assistant.v0003"]  # keep is at least 1: the live one
    assert store.live(USE_CASE).version == 4
    # Other use cases in the same Chroma are untouched.
    other = store.build_version("other-case", chunks[:3], embed_fn(embedder, cache), embedder.model_id)
    store.gc(USE_CASE, keep=1)
    assert store.live("other-case") == other


def test_query_paraphrase_and_where_filter(store, embedder, cache):
    store.build_version(USE_CASE, make_chunks(), embed_fn(embedder, cache), embedder.model_id)
    cases = {
        "I forgot my login credentials, how do I get a new one?": "support-00",
        "when do I have to pay the monthly bill": "billing-00",
        "how long can new parents stay home with pay": "hr-01",
        "which days of the week do we ship releases to prod": "engineering-00",
    }
    for question, expected in cases.items():
        hits = store.query(USE_CASE, embedder.encode_query(question), k=3)
        assert hits[0].chunk_id == expected, (question, [(h.chunk_id, round(h.score, 3)) for h in hits])
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
        assert 0.2 < hits[0].score <= 1.0001
    q = embedder.encode_query("how do I pay")
    hits = store.query(USE_CASE, q, k=10, where={"data_domain": "hr"})
    assert len(hits) == 6 and {h.metadata["data_domain"] for h in hits} == {"hr"}
    hits = store.query(USE_CASE, q, k=10, where={"data_domain": "hr", "source": "hr-handbook"})  # -> $and
    assert len(hits) == 6
    hits = store.query(USE_CASE, q, k=10, where={"data_domain": {"$in": ["hr", "billing"]}})
    assert {h.metadata["data_domain"] for h in hits} == {"hr", "billing"}
    assert store.query(USE_CASE, q, k=3, where={"data_domain": "nope"}) == []
    with pytest.raises(LookupError):
        store.query("no-such-use-case", q, k=3)
    with pytest.raises(ValueError, match="dims"):
        store.query(USE_CASE, q[:100], k=3)


KILLED_BUILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from agenix_assets.core.index import IndexChunk, VectorIndexStore, chroma_client
    store = VectorIndexStore(chroma_client("server", port=int(sys.argv[1])))
    chunks = [IndexChunk(f"x-{i}", f"h{i}", f"text {i}", {"data_domain": "x"}) for i in range(20)]
    calls = []
    def embed(batch):
        calls.append(1)
        if len(calls) == 2:
            os._exit(9)  # killed mid-build: no except/finally runs
        v = np.random.default_rng(0).standard_normal((len(batch), 384)).astype("float32")
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    store.build_version(sys.argv[2], chunks, embed, "random", batch_size=8)
    """
)


def test_server_mode_end_to_end(tmp_path, embedder, cache):
    with ChromaServer.start(tmp_path / "chroma-server") as server:
        writer = VectorIndexStore(chroma_client("server", host=server.host, port=server.port))
        chunks = make_chunks()
        v1 = writer.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id, batch_size=10)

        reader = VectorIndexStore(chroma_client("server", host=server.host, port=server.port))
        assert reader.live(USE_CASE) == v1
        q = embedder.encode_query("what is the expense claim deadline")
        hits = reader.query(USE_CASE, q, k=2)
        assert hits[0].chunk_id == "hr-02" and hits[0].metadata["data_domain"] == "hr"

        changed = change_text(chunks, "hr-02", "Expense reports are due within thirty days; receipts are scanned.")
        e2 = embed_fn(embedder, cache)
        v2 = writer.build_version(USE_CASE, changed, e2, embedder.model_id, batch_size=10)
        assert e2.embedded_ids == ["hr-02"] and (v2.added, v2.kept) == (1, 23)
        assert reader.live(USE_CASE) == v2
        assert "thirty days" in reader.query(USE_CASE, q, k=1)[0].text
        ids, emb, _, _ = reader.get_all(USE_CASE)
        assert len(ids) == 24 and emb.shape == (24, 384)

        # A builder process killed mid-build leaves a "building" collection; readers keep the live version.
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(server.port), USE_CASE], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 9, proc.stderr[-2000:]
        debris = [v for v in reader.versions(USE_CASE) if v.status == "building"]
        assert [v.version for v in debris] == [3]
        assert reader.live(USE_CASE) == v2 and reader.query(USE_CASE, q, k=1)[0].chunk_id == "hr-02"
        # Fresh heartbeat and newer than live: gc treats it as a build in progress until it goes stale ...
        assert reader.gc(USE_CASE, keep=2) == []
        reader.stale_build_seconds = 0
        assert reader.gc(USE_CASE, keep=2) == [debris[0].collection]
        # ... and the next build (the only builder) deletes such debris itself.
        subprocess.run([sys.executable, "-c", KILLED_BUILD, str(server.port), USE_CASE], env=env, timeout=120)
        assert [v.status for v in reader.versions(USE_CASE)] == ["ready", "ready", "building"]
        v4 = writer.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id)
        assert v4.version == 4 and reader.live(USE_CASE) == v4  # the number after the debris
        assert [(v.version, v.status) for v in reader.versions(USE_CASE)] == [(1, "ready"), (2, "ready"), (4, "ready")]


def test_hnsw_params_text_layouts_and_copy_batches(tmp_path, embedder, cache):
    """New versions get the store's HNSW parameters (not the parent's), carry forward in ``copy_batch_size`` batches,
    keep answering paraphrase queries, and read back the same texts whichever text layout a version uses."""
    client = chroma_client("embedded", tmp_path / "chroma")
    chunks = make_chunks()
    # v1: Chroma-document layout with other HNSW parameters (as versions built before the tuning).
    old = VectorIndexStore(client, hnsw={"ef_construction": 48, "max_neighbors": 12, "ef_search": 150},
                           text_storage="document")
    v1 = old.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id)
    cfg1 = client.get_collection(v1.collection).configuration_json["hnsw"]
    assert (cfg1["space"], cfg1["ef_construction"], cfg1["max_neighbors"], cfg1["ef_search"]) == ("cosine", 48, 12, 150)
    raw1 = client.get_collection(v1.collection).get(ids=["hr-00"], include=["documents", "metadatas"])
    assert raw1["documents"] == [CORPUS["hr"][0]] and TEXT_KEY not in raw1["metadatas"][0]

    # v2: the default store as a full copy; one chunk changed, the other 23 carried forward in batches of 5.
    store = VectorIndexStore(client, copy_batch_size=5, max_layers=1)
    assert store.hnsw == HNSW_DEFAULTS and store.text_storage == "metadata" and store.copy_batch_size == 5
    added_batches: list[int] = []
    real_add = store._add
    store._add = lambda col, batch, vectors, records: (added_batches.append(len(batch)),
                                                       real_add(col, batch, vectors, records))
    changed = change_text(chunks, "billing-01", "Refunds are only possible within fourteen days of purchase.")
    e2 = embed_fn(embedder, cache)
    v2 = store.build_version(USE_CASE, changed, e2, embedder.model_id, batch_size=8)
    assert e2.embedded_ids == ["billing-01"] and (v2.kept, v2.added, v2.total) == (23, 1, 24)
    assert added_batches == [5, 5, 5, 5, 3, 1]  # carried in copy batches, then the embedded one
    col2 = client.get_collection(v2.collection)
    cfg2 = col2.configuration_json["hnsw"]
    assert {k: cfg2[k] for k in HNSW_DEFAULTS} == HNSW_DEFAULTS  # not inherited from v1
    assert col2.metadata["text_storage"] == "metadata"
    raw2 = col2.get(ids=["hr-00"], include=["documents", "metadatas"])
    assert raw2["documents"] == [None] and raw2["metadatas"][0][TEXT_KEY] == CORPUS["hr"][0]

    # The carried-forward version answers paraphrases with the right chunk, text and clean metadata.
    cases = {
        "how long can new parents stay home with pay": "hr-01",
        "which days of the week do we ship releases to prod": "engineering-00",
        "is there a time limit for getting my money back": "billing-01",
    }
    for question, expected in cases.items():
        hit = store.query(USE_CASE, embedder.encode_query(question), k=3)[0]
        assert hit.chunk_id == expected, question
        assert hit.text == next(c.text for c in changed if c.chunk_id == expected)
        assert TEXT_KEY not in hit.metadata and hit.metadata["data_domain"] == expected.split("-")[0]
    hits = store.query(USE_CASE, embedder.encode_query("how do I pay"), k=10, where={"data_domain": "hr"})
    assert len(hits) == 6 and all(TEXT_KEY not in h.metadata and h.text for h in hits)

    # Both layouts read back identical texts and metadata through get_all (and v1 through the new store).
    for version in (1, 2):
        ids, emb, texts, metas = store.get_all(USE_CASE, version)
        source = {c.chunk_id: c for c in (chunks if version == 1 else changed)}
        assert sorted(ids) == sorted(source) and emb.shape == (24, 384)
        assert all(t == source[i].text for i, t in zip(ids, texts))
        assert all(TEXT_KEY not in m and m["content_hash"] == source[i].content_hash for i, m in zip(ids, metas))
    v1_hit = store.query(USE_CASE, embedder.encode_query("can I get my money back for unused months"), 1, version=1)
    assert v1_hit[0].chunk_id == "billing-01" and "prorated" in v1_hit[0].text


def test_hnsw_configuration_validation(tmp_path):
    assert hnsw_configuration() == HNSW_DEFAULTS
    assert hnsw_configuration({"sync_threshold": 2000})["sync_threshold"] == 2000
    assert hnsw_configuration({"space": "cosine", "ef_search": 64})["ef_search"] == 64
    for bad, match in [
        ({"num_threads": 2}, "ignored by Chroma"),
        ({"batch_size": 5000}, "ignored by Chroma"),
        ({"M": 16}, "unsupported"),
        ({"space": "l2"}, "cosine"),
        ({"ef_construction": 0}, "positive int"),
        ({"max_neighbors": True}, "positive int"),
        ({"resize_factor": 1.0}, "resize_factor"),
    ]:
        with pytest.raises(ValueError, match=match):
            hnsw_configuration(bad)
    client = chroma_client("embedded", tmp_path / "chroma")
    with pytest.raises(ValueError, match="text_storage"):
        VectorIndexStore(client, text_storage="fts")
    with pytest.raises(ValueError, match="copy_batch_size"):
        VectorIndexStore(client, copy_batch_size=0)
    assert VectorIndexStore(client, copy_batch_size=10**6).copy_batch_size == client.get_max_batch_size()
    with pytest.raises(ValueError, match="reserved"):
        VectorIndexStore(client).build_version(
            USE_CASE, [IndexChunk("x", "h", "t", {TEXT_KEY: "nope"})], lambda b: np.zeros((len(b), 3)), "m"
        )


# ---------------------------------------------------------------------------------------------------------------
# Layered (delta) versions
# ---------------------------------------------------------------------------------------------------------------

QUESTIONS = [
    "can I get my money back for unused months of a yearly plan",
    "how many vacation days do employees get each year",
    "what is the expense claim deadline",
    "which days of the week do we ship releases to prod",
    "how do I turn on two factor login",
    "when are invoices sent",
]


def _edits() -> list[tuple[str, list[IndexChunk]]]:
    """A sequence of index contents: text edits, a deletion, a metadata-only change, new chunks, a deleted chunk
    coming back under its old id, and a chunk changed twice."""
    steps = []
    c = make_chunks()
    c = change_text(c, "billing-01", "Refunds are only possible within fourteen days of purchase.")
    steps.append(("text edit", c))
    c = [x for x in c if x.chunk_id != "hr-03"]
    steps.append(("deletion", c))
    c = [replace(x, metadata={**x.metadata, "title": "Renamed"}) if x.chunk_id == "hr-00" else x for x in c]
    steps.append(("metadata only", c))
    new = IndexChunk("support-06", _hash("Passwords expire every ninety days."), "Passwords expire every ninety days.",
                     {"source": "support-handbook", "document_id": "support-doc", "data_domain": "support"})
    c = [*c, new]
    steps.append(("new chunk", c))
    back = next(x for x in make_chunks() if x.chunk_id == "hr-03")
    c = [*c, back]
    steps.append(("deleted chunk back", c))
    c = change_text(c, "billing-01", "Refunds for annual plans are prorated, now also for monthly plans.")
    steps.append(("changed twice", c))
    return steps


def _snapshot(store: VectorIndexStore, embedder: Embedder, version: int) -> dict:
    ids, emb, texts, metas = store.get_all(USE_CASE, version)
    queries = {}
    for question in QUESTIONS:
        q = embedder.encode_query(question)
        queries[question] = [h.chunk_id for h in store.query(USE_CASE, q, k=5, version=version)]
        hr = store.query(USE_CASE, q, k=3, version=version, where={"data_domain": "hr"})
        queries[question + " [hr]"] = [h.chunk_id for h in hr]
    return {
        "records": {cid: (text, meta) for cid, text, meta in zip(ids, texts, metas)},
        "vectors": dict(zip(ids, emb)),
        "ids": sorted(store.ids(USE_CASE, version)),
        "queries": queries,
    }


def test_layered_versions_read_exactly_like_full_copies(tmp_path, embedder, cache):
    # The corpus is tiny, so the overlay limit is lifted to keep every step a delta.
    layered = VectorIndexStore(chroma_client("embedded", tmp_path / "layered"), max_overlay_fraction=1.0)
    full = VectorIndexStore(chroma_client("embedded", tmp_path / "full"), max_layers=1)
    v1 = layered.build_version(USE_CASE, make_chunks(), embed_fn(embedder, cache), embedder.model_id)
    full.build_version(USE_CASE, make_chunks(), embed_fn(embedder, cache), embedder.model_id)
    assert (v1.layout, v1.layers, v1.stored) == (LAYOUT_FULL, (1,), 24)
    base_count = layered.client.get_collection(v1.collection).count()

    for n, (label, chunks) in enumerate(_edits(), start=2):
        e_layered, e_full = embed_fn(embedder, cache), embed_fn(embedder, cache)
        vl = layered.build_version(USE_CASE, chunks, e_layered, embedder.model_id)
        vf = full.build_version(USE_CASE, chunks, e_full, embedder.model_id)
        assert vl.version == vf.version == n, label
        # Same counts and the same chunks embedded: only what changed.
        assert (vl.added, vl.kept, vl.removed, vl.total) == (vf.added, vf.kept, vf.removed, vf.total), label
        assert sorted(e_layered.embedded_ids) == sorted(e_full.embedded_ids), label
        assert vf.layout == LAYOUT_FULL and vf.stored == vf.total
        assert vl.layout == LAYOUT_DELTA and vl.layers == tuple(range(1, n + 1)), label
        # The delta collection holds only what changed (embedded, or carried with new text/metadata).
        assert vl.stored == layered.client.get_collection(vl.collection).count() <= 2, label
        a, b = _snapshot(layered, embedder, n), _snapshot(full, embedder, n)
        assert a["ids"] == b["ids"] == sorted(c.chunk_id for c in chunks), label
        assert a["records"] == b["records"], label
        for cid, vec in a["vectors"].items():
            np.testing.assert_allclose(vec, b["vectors"][cid], rtol=0, atol=1e-6, err_msg=f"{label}: {cid}")
        assert a["queries"] == b["queries"], label

    # Older versions stay exactly as they were: v2 still answers with the first refund text, v1's collection
    # was never written to.
    q = embedder.encode_query("can I get my money back within two weeks")
    assert "fourteen days" in layered.query(USE_CASE, q, 1, version=2)[0].text
    live_hit = layered.query(USE_CASE, embedder.encode_query("are refunds prorated for monthly plans too"), 1)[0]
    assert live_hit.chunk_id == "billing-01" and "monthly plans" in live_hit.text
    assert layered.client.get_collection(v1.collection).count() == base_count
    live = layered.live(USE_CASE)
    assert live.masked == len(layered.client.get_collection(mask_collection_name(live.collection)).get()["ids"])

    # A reader in a new store (no caches) sees the same.
    fresh = VectorIndexStore(chroma_client("embedded", tmp_path / "layered"), max_overlay_fraction=1.0)
    assert _snapshot(fresh, embedder, live.version)["queries"] == _snapshot(full, embedder, live.version)["queries"]


def test_layered_compaction_and_gc_keep_what_retained_versions_read(store, embedder, cache):
    chunks = make_chunks()
    built = []
    for i in range(4):
        chunks = change_text(chunks, "engineering-05", f"The staging environment is rebuilt every night, take {i}.")
        built.append(store.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id, max_layers=3))
    # v1 full, v2 and v3 deltas over it, v4 would be a fourth layer: a full copy (compaction) instead.
    assert [(v.layout, v.layers) for v in built] == [
        (LAYOUT_FULL, (1,)),
        (LAYOUT_DELTA, (1, 2)),
        (LAYOUT_DELTA, (1, 2, 3)),
        (LAYOUT_FULL, (4,)),
    ]
    names = {c.name for c in store.client.list_collections()}
    assert mask_collection_name(built[2].collection) in names and mask_collection_name(built[3].collection) not in names

    # keep=2 retains v3 and v4; v3 reads v1 and v2, so nothing can go yet.
    assert store.gc(USE_CASE, keep=2) == []
    assert "take 2" in store.query(USE_CASE, embedder.encode_query("staging rebuilt nightly"), 1, version=3)[0].text
    # keep=1 retains v4 only: everything else goes, masks included.
    assert store.gc(USE_CASE, keep=1) == [b.collection for b in built[:3]]
    assert {c.name for c in store.client.list_collections()} == {built[3].collection}
    assert len(store.ids(USE_CASE)) == 24

    # Too large a change for a delta (over max_overlay_fraction of the version): a full copy.
    edited = chunks
    for c in chunks[:10]:
        edited = change_text(edited, c.chunk_id, c.text + " (revised)")
    v5 = store.build_version(USE_CASE, edited, embed_fn(embedder, cache), embedder.model_id)
    assert (v5.layout, v5.added, v5.kept) == (LAYOUT_FULL, 10, 14)
    # A small one on top of it: a delta again.
    v6 = store.build_version(USE_CASE, change_text(edited, "hr-00", "Vacation: 26 days."), embed_fn(embedder, cache),
                             embedder.model_id)
    assert (v6.layout, v6.layers, v6.stored, v6.masked) == (LAYOUT_DELTA, (5, 6), 1, 1)


def test_failed_delta_build_leaves_no_masks_behind(store, embedder, cache):
    chunks = make_chunks()
    v1 = store.build_version(USE_CASE, chunks, embed_fn(embedder, cache), embedder.model_id)
    edited = change_text(chunks, "hr-01", "Parental leave is twenty weeks.")
    with pytest.raises(RuntimeError, match="embedding service died"):
        store.build_version(USE_CASE, edited, embed_fn(embedder, cache, fail_on_batch=1), embedder.model_id)
    failed = [v for v in store.versions(USE_CASE) if v.status == STATUS_FAILED]
    assert [v.version for v in failed] == [2] and store.live(USE_CASE) == v1
    assert mask_collection_name(failed[0].collection) in {c.name for c in store.client.list_collections()}
    q = embedder.encode_query("how long can new parents stay home with pay")
    assert store.query(USE_CASE, q, 1)[0].text.startswith("Parental leave of up to sixteen weeks")
    # The next build clears the debris (collection and masks) and builds v3 as a delta over v1.
    v3 = store.build_version(USE_CASE, edited, embed_fn(embedder, cache), embedder.model_id)
    assert (v3.version, v3.layout, v3.layers) == (3, LAYOUT_DELTA, (1, 3))
    assert {c.name for c in store.client.list_collections()} == {
        v1.collection,
        v3.collection,
        mask_collection_name(v3.collection),
    }
    assert store.query(USE_CASE, q, 1)[0].text == "Parental leave is twenty weeks."
