"""Retrieval library: dense, BM25, hybrid, filters, fusion, metrics, learned reranker (real MiniLM model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agenix_assets.core.retrieval import (
    RAW_FEATURES,
    BM25Index,
    CallableDenseBackend,
    Candidate,
    Document,
    LabelledPool,
    LearnedReranker,
    MetadataFilter,
    NumpyDenseIndex,
    RetrievalConfig,
    Retriever,
    SentenceTransformerEncoder,
    _TreeEnsemble,
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)

DOMAINS = ("support", "sales", "finance")

TOPICS = [
    (
        "refund",
        "Refund policy",
        "Customers can return defective items within thirty days for a full reimbursement of the purchase price.",
    ),
    (
        "shipping",
        "Shipping times",
        "Standard parcels are delivered within three to five working days; express delivery arrives the next day.",
    ),
    (
        "password",
        "Account access",
        "To reset a forgotten password, open the login page and follow the link sent to your email address.",
    ),
    (
        "invoice",
        "Invoices",
        "Invoices are issued monthly and must be paid by bank transfer within 30 days of the invoice date.",
    ),
    (
        "pump",
        "Pump maintenance",
        "Centrifugal pumps should be inspected every six months; replace worn seals and check the impeller.",
    ),
    (
        "safety",
        "Safety gear",
        "Operators must wear gloves, goggles and steel-capped boots on the factory floor at all times.",
    ),
    (
        "holiday",
        "Annual leave",
        "Employees accrue twenty-five days of paid holiday per year, requested through the HR portal.",
    ),
    (
        "pricing",
        "Volume discounts",
        "Orders above ten thousand euros receive a tiered discount negotiated by the account manager.",
    ),
    (
        "warranty",
        "Warranty terms",
        "All machines carry a two-year warranty covering manufacturing faults but not misuse or wear.",
    ),
    (
        "forklift",
        "Forklift training",
        "Only certified staff may drive forklifts; certification requires a two-day course and an exam.",
    ),
    (
        "recycling",
        "Waste handling",
        "Metal offcuts are collected in blue bins and sold to a certified recycling partner each week.",
    ),
]


# Near-identical part codes: the embedding barely tells them apart, exact term matching does.
PARTS = {
    "ZQ7781": "Rotterdam",
    "ZQ7718": "Hamburg",
    "ZQ1877": "Antwerp",
    "QZ7781": "Lyon",
    "ZQ7881": "Milan",
    "ZQ7780": "Porto",
}


def _corpus() -> list[Document]:
    docs = [
        Document(
            id=f"part-{code}",
            title=f"Spare part {code}",
            text=f"Part {code} is stocked in the {city} warehouse and listed in the catalogue.",
            metadata={"domain": "support"},
        )
        for code, city in PARTS.items()
    ]
    for i, (key, title, text) in enumerate(TOPICS):
        for j, dom in enumerate(DOMAINS):
            docs.append(
                Document(
                    id=f"{key}-{dom}",
                    title=title,
                    text=text if j == 0 else f"{text} (copy {j} for the {dom} team)",
                    metadata={"domain": dom, "n": i},
                )
            )
    return docs


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(num_threads=1)


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return _corpus()


@pytest.fixture(scope="module")
def dense(encoder, corpus) -> NumpyDenseIndex:
    return NumpyDenseIndex(
        [d.id for d in corpus], encoder.encode([d.full_text for d in corpus]), [d.metadata for d in corpus]
    )


@pytest.fixture(scope="module")
def bm25(corpus) -> BM25Index:
    return BM25Index.build(corpus)


def _retriever(mode, encoder, dense, bm25, **kw) -> Retriever:
    return Retriever(RetrievalConfig(mode=mode, k=5, **kw), encoder=encoder, dense=dense, bm25=bm25)


def test_encoder_single_query_matches_batch(encoder):
    q = "how do I get my money back"
    single, batch = encoder.encode_query(q), encoder.encode([q])[0]
    assert single.shape == (encoder.dim,) and single.dtype == np.float32
    assert abs(float(np.linalg.norm(single)) - 1.0) < 1e-5
    assert float(single @ batch) > 0.9999


def test_int8_query_encoder_stays_close(encoder):
    fast = SentenceTransformerEncoder(num_threads=1, quantize="int8")
    assert fast.quantize == "int8", fast.quantize_error
    q = "Which warehouse stocks the replacement seal?"
    assert float(fast.encode_query(q) @ encoder.encode_query(q)) > 0.95


def test_dense_finds_paraphrase(encoder, dense, bm25):
    r = _retriever("dense", encoder, dense, bm25)
    hits = r.search("How do I get my money back for a broken product?", k=3)
    assert hits[0].id.startswith("refund-")
    # the paraphrase shares no content word with the document, so BM25 cannot rank it first
    lexical = bm25.search("How do I get my money back for a broken product?", 3)
    assert not lexical or not lexical[0][0].startswith("refund-")


def test_bm25_finds_exact_term_dense_misses(encoder, dense, bm25):
    query = "ZQ7781"
    lexical = _retriever("bm25", encoder, dense, bm25).search(query, k=3)
    assert [h.id for h in lexical] == ["part-ZQ7781"]  # only the exact code matches
    semantic = _retriever("dense", encoder, dense, bm25).search(query, k=3)
    assert semantic[0].id != "part-ZQ7781"


def test_hybrid_returns_best_of_both(encoder, dense, bm25):
    query = "money back for broken items, or where is ZQ7781 stocked"
    d_top = _retriever("dense", encoder, dense, bm25).search(query, k=1)[0].id
    b_top = _retriever("bm25", encoder, dense, bm25).search(query, k=1)[0].id
    for fusion in ("rrf", "weighted"):
        hybrid = _retriever("hybrid", encoder, dense, bm25, fusion=fusion).search(query, k=4)
        ids = [h.id for h in hybrid]
        assert d_top in ids and b_top in ids
        assert {"dense", "bm25"} <= set(hybrid[0].features)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_domain_filter_returns_only_allowed_and_still_k(encoder, dense, bm25, mode):
    r = _retriever(mode, encoder, dense, bm25)
    query = "refund warranty invoice pump safety holiday discount forklift password shipping recycling"
    hits = r.search(query, k=5, allowed_domains={"finance"})
    assert len(hits) == 5
    assert all(dense.metadata.get(dense.row_of[h.id])["domain"] == "finance" for h in hits)
    two = r.search(query, k=8, where=MetadataFilter.for_domains({"sales", "finance"}))
    assert len(two) == 8 and all(h.id.split("-")[1] in {"sales", "finance"} for h in two)
    assert r.search(query, k=5, allowed_domains=set()) == []


def test_metadata_filter_equals_and_chroma_where():
    f = MetadataFilter(allowed_domains=frozenset({"a", "b"}), equals=(("lang", "en"),))
    assert f.matches({"domain": "a", "lang": "en"})
    assert not f.matches({"domain": "c", "lang": "en"}) and not f.matches({"lang": "en"})
    assert f.to_chroma_where() == {"$and": [{"domain": {"$in": ["a", "b"]}}, {"lang": {"$eq": "en"}}]}
    assert MetadataFilter().to_chroma_where() is None


def test_callable_dense_backend_passes_chroma_where(encoder, dense, bm25):
    seen = {}

    def search_fn(vec, k, where):
        seen["where"] = where
        flt = MetadataFilter.for_domains(where["domain"]["$in"]) if where else None
        return dense.search(vec, k, flt)

    backend = CallableDenseBackend(search_fn)  # no score_fn: BM25-only candidates get the lowest dense score
    r = Retriever(RetrievalConfig(mode="hybrid", k=3), encoder=encoder, dense=backend, bm25=bm25)
    hits = r.search("return a defective item", allowed_domains={"sales"})
    assert seen["where"] == {"domain": {"$in": ["sales"]}}
    assert hits and all(h.id.endswith("-sales") for h in hits)


def test_rrf_hand_example():
    a = ["d1", "d2", "d3"]
    b = [("d3", 9.0), ("d1", 5.0), ("d4", 1.0)]
    fused = dict(reciprocal_rank_fusion([a, b], k=60))
    assert math.isclose(fused["d1"], 1 / 61 + 1 / 62)
    assert math.isclose(fused["d3"], 1 / 63 + 1 / 61)
    assert math.isclose(fused["d2"], 1 / 62)
    assert math.isclose(fused["d4"], 1 / 63)
    assert [d for d, _ in reciprocal_rank_fusion([a, b], k=60)] == ["d1", "d3", "d2", "d4"]
    weighted = dict(reciprocal_rank_fusion([a, b], k=1, weights=[2.0, 1.0]))
    assert math.isclose(weighted["d1"], 2 / 2 + 1 / 3)


def test_weighted_score_fusion_minmax():
    fused = dict(weighted_score_fusion([{"a": 0.9, "b": 0.5}, {"b": 10.0, "c": 2.0}], [0.5, 0.5]))
    # dense: a=1, b=0, c=floor(0.5)->0 ; bm25: a=floor(2)->0, b=1, c=0
    assert fused == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})


def test_metrics_hand_computed():
    rel = {"a": 1, "b": 1, "c": 1}
    ranking = ["x", "a", "y", "b"]
    assert ndcg_at_k(ranking, rel, 10) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5)
    )
    assert recall_at_k(ranking, rel, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranking, rel, 10) == pytest.approx(2 / 3)
    assert mrr_at_k(ranking, rel, 10) == pytest.approx(0.5)
    assert mrr_at_k(ranking, rel, 1) == 0.0
    assert ndcg_at_k(["a"], {"a": 2, "b": 1}, 10) == pytest.approx(2 / (2 + 1 / math.log2(3)))  # graded gains
    m = evaluate_run({"q1": ["a"], "q2": []}, {"q1": {"a": 1}, "q2": {"z": 1}})
    assert m["ndcg@10"] == pytest.approx(0.5) and m["recall@100"] == pytest.approx(0.5) and m["mrr@10"] == 0.5


def _synthetic_pools(n_queries: int, seed: int) -> list[LabelledPool]:
    """Relevant docs have strong title matches but mediocre dense scores: a learner must up-weight bm25_title."""
    rng = np.random.default_rng(seed)
    pools = []
    for q in range(n_queries):
        cands, rel = [], {}
        target = int(rng.integers(20))
        for j in range(20):
            relevant = j == target
            f = {name: 0.0 for name in RAW_FEATURES}
            f.update(
                dense=float(rng.uniform(0.3, 0.6) + (0.0 if relevant else rng.uniform(0, 0.2))),
                bm25=float(rng.uniform(2, 8)),
                bm25_title=float(rng.uniform(6, 9) if relevant else rng.uniform(0, 4)),
                coverage=float(rng.uniform(0, 1)),
                doc_len=float(rng.integers(50, 300)),
                q_len=8.0,
            )
            cands.append(Candidate(f"q{q}d{j}", f["dense"], f))
            if relevant:
                rel[f"q{q}d{j}"] = 1
        cands.sort(key=lambda c: -c.score)
        pools.append(LabelledPool(f"q{q}", cands, rel))
    return pools


@pytest.mark.parametrize("kind", ["logreg", "hgb", "ensemble"])
def test_learned_reranker_learns_the_signal(kind, tmp_path):
    train, test = _synthetic_pools(60, 1), _synthetic_pools(30, 2)
    hgb = {"min_samples_leaf": 5, "max_iter": 50}
    params = {"ensemble": {"hgb": hgb}, "hgb": hgb, "logreg": {}}[kind]
    rr = LearnedReranker.fit(train, kind=kind, params=params, metadata={"note": "unit"})
    before = evaluate_run(
        {p.query_id: [c.id for c in p.candidates] for p in test}, {p.query_id: p.relevance for p in test}
    )
    reranked = {p.query_id: [c.id for c in rr.rerank("q", p.candidates)] for p in test}
    after = evaluate_run(reranked, {p.query_id: p.relevance for p in test})
    assert after["mrr@10"] > before["mrr@10"] + 0.3
    # round trip: same scores after save/load, training metadata kept
    path = tmp_path / "rr.json"
    rr.save(path)
    loaded = LearnedReranker.load(path)
    assert loaded.training["note"] == "unit" and loaded.training["n_queries"] == 60
    np.testing.assert_allclose(loaded.score(test[0].candidates), rr.score(test[0].candidates), rtol=1e-9)


def test_tree_export_matches_sklearn():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 6))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    ours = _TreeEnsemble.from_sklearn(clf)
    Xt = rng.standard_normal((200, 6))
    np.testing.assert_allclose(ours.decision_function(Xt), clf.decision_function(Xt), rtol=1e-9, atol=1e-9)
    again = _TreeEnsemble(**ours.to_json())
    np.testing.assert_allclose(again.decision_function(Xt), clf.decision_function(Xt), rtol=1e-9, atol=1e-9)


def test_reranker_in_retriever_changes_order(encoder, dense, bm25):
    pools = _synthetic_pools(40, 3)
    rr = LearnedReranker.fit(pools, kind="logreg")
    r = Retriever(RetrievalConfig(mode="hybrid", k=5), encoder=encoder, dense=dense, bm25=bm25, reranker=rr)
    hits = r.search("Spare part ZQ7781 warehouse")
    assert len(hits) == 5 and "pre_rerank" in hits[0].features
    assert set(RAW_FEATURES) <= set(hits[0].features)
    assert hits[0].id == "part-ZQ7781"  # strongest title match: the learned signal


def test_bm25_save_load_round_trip(bm25, tmp_path):
    bm25.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    for q in ("ZQ7781 warehouse", "pump seals inspection", "nothing-matches-xyzzy"):
        assert loaded.search(q, 5) == bm25.search(q, 5)
    flt = MetadataFilter.for_domains({"sales"})
    assert loaded.search("invoice payment", 3, flt) == bm25.search("invoice payment", 3, flt)
    terms = loaded.analyze("refund defective items")
    ids = [d for d, _ in bm25.search("refund defective items", 4)]
    a, b = loaded.candidate_features(terms, ids), bm25.candidate_features(bm25.analyze("refund defective items"), ids)
    for key in a:
        np.testing.assert_allclose(a[key], b[key])


def test_numpy_dense_save_load_and_score_ids(dense, encoder, tmp_path):
    dense.save(tmp_path / "dense")
    loaded = NumpyDenseIndex.load(tmp_path / "dense")
    q = encoder.encode_query("forklift certification")
    assert loaded.search(q, 4) == dense.search(q, 4)
    scores = dense.score_ids(q, ["forklift-sales", "unknown"])
    assert scores[0] == pytest.approx(dict(dense.search(q, 100))["forklift-sales"]) and np.isnan(scores[1])


def test_config_yaml_round_trip_and_validation(tmp_path):
    cfg = RetrievalConfig(mode="hybrid", fusion="weighted", dense_weight=0.7, bm25_weight=0.3)
    path = tmp_path / "retrieval.yaml"
    path.write_text(cfg.to_yaml())
    assert RetrievalConfig.from_yaml(path) == cfg
    with pytest.raises(ValueError):
        RetrievalConfig(mode="dense", reranker_path="x.json")
    with pytest.raises(ValueError):
        RetrievalConfig(mode="hybrid", bogus=1)
