"""Embedder (real all-MiniLM-L6-v2, offline) and the DuckDB embedding cache."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pytest

from agenix_assets.core import embedding as emb
from agenix_assets.core.embedding import EmbeddingCache, Embedder, embed_with_cache

TEXTS = [
    "To reset your password, open Settings and choose Security, then click Reset password.",
    "Invoices are issued on the first business day of each month and are payable within 30 days.",
    "The VPN client must be updated before connecting to the corporate network.",
    "Short.",
    "Refunds for annual plans are prorated to the number of unused months remaining in the term.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(batch_size=4)


def test_construction_identity_and_dimension_do_not_load_the_model(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("model loaded too early")

    monkeypatch.setattr(emb, "_load_model", boom)
    e = Embedder()
    assert re.fullmatch(r"all-MiniLM-L6-v2@[0-9a-f]{12}", e.model_id)
    assert e.model_id == Embedder().model_id  # stable across instances (and cached per process)
    assert e.dimension == 384


def test_encode_normalised_deterministic_and_in_input_order(embedder):
    a = embedder.encode(TEXTS)
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    b = embedder.encode(TEXTS)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # Reversed input -> reversed output (internal length sorting must not leak into the order).
    r = embedder.encode(TEXTS[::-1])
    np.testing.assert_allclose(r[::-1], a, atol=1e-5)
    # Each text alone gives the same vector as inside a batch.
    q = embedder.encode_query(TEXTS[3])
    assert q.shape == (384,) and q.dtype == np.float32
    np.testing.assert_allclose(q, a[3], atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_semantics_paraphrase_is_nearest(embedder):
    docs = embedder.encode(TEXTS)
    q = embedder.encode_query("how can I change my forgotten login password?")
    assert int(np.argmax(docs @ q)) == 0


def test_model_loaded_once_per_process(embedder):
    embedder.encode(["warm"])
    other = Embedder(batch_size=8)
    assert other.loaded and other.model is embedder.model


def test_cache_roundtrip_and_table_shape():
    con = duckdb.connect()
    cache = EmbeddingCache(con)
    assert cache.get_many(["a"], "m") == {}  # no table yet
    rng = np.random.default_rng(0)
    m = rng.standard_normal((3, 8)).astype(np.float32)
    cache.put_many((["a", "b", "a"], m), "m1")  # duplicate key in one call: first wins, no error
    cache.put_many({"c": m[2]}, "m1")
    cache.put_many({"a": m[1]}, "m2")  # same hash, other model -> separate row
    cache.put_many({"a": m[2]}, "m1")  # existing key: left as is
    got = cache.get_many(["a", "c", "zzz"], "m1")
    assert set(got) == {"a", "c"}
    np.testing.assert_array_equal(got["a"], m[0])
    np.testing.assert_array_equal(got["c"], m[2])
    np.testing.assert_array_equal(cache.get_many(["a"], "m2")["a"], m[1])
    assert cache.count() == 4 and cache.count("m1") == 3
    cols = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'rag' AND table_name = 'embedding_cache'"
        ).fetchall()
    )
    assert cols == {
        "content_hash": "VARCHAR",
        "model_id": "VARCHAR",
        "embedding": "FLOAT[8]",
        "created_at": "TIMESTAMP",
    }
    with pytest.raises(ValueError, match="FLOAT\\[8\\]"):
        cache.put_many({"d": np.ones(4, np.float32)}, "m1")
    # A fresh cache object on the same connection sees the table and its dimension.
    assert EmbeddingCache(con).dimension == 8


def test_embed_with_cache_never_embeds_a_hash_twice(embedder, monkeypatch):
    con = duckdb.connect()
    cache = EmbeddingCache(con)
    calls: list[int] = []
    real = Embedder.encode

    def counting(self, texts):
        calls.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(Embedder, "encode", counting)
    hashes = [f"h{i}" for i in range(len(TEXTS))]
    v1, s1 = embed_with_cache(embedder, cache, TEXTS, hashes)
    assert (s1.total, s1.cache_hits, s1.embedded) == (5, 0, 5) and calls == [5]
    v2, s2 = embed_with_cache(embedder, cache, TEXTS, hashes)
    assert (s2.total, s2.cache_hits, s2.embedded) == (5, 5, 0) and calls == [5]  # no model call at all
    np.testing.assert_array_equal(v1, v2)
    # One new text among known ones; a hash repeated within the call is embedded once.
    texts = [*TEXTS[:2], "A brand new paragraph about parking permits.", "A brand new paragraph about parking permits."]
    v3, s3 = embed_with_cache(embedder, cache, texts, ["h0", "h1", "new", "new"])
    assert (s3.total, s3.cache_hits, s3.embedded) == (4, 2, 1) and calls == [5, 1]
    np.testing.assert_array_equal(v3[:2], v1[:2])
    np.testing.assert_array_equal(v3[2], v3[3])
    assert cache.count(embedder.model_id) == 6
    # No cache at all still works.
    v4, s4 = embed_with_cache(embedder, None, TEXTS[:1], ["h0"])
    assert s4.embedded == 1 and np.allclose(v4, v1[:1], atol=1e-5)
