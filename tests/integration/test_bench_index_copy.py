"""`agenix bench index-copy` at a tiny size: both profiles build a version, carry 99% of it forward into the next
and report comparable rows (embedded Chroma, synthetic vectors, no model). Speeds are what it measures, not asserted."""

from __future__ import annotations

import json

from agenix_bench.index_copy import CopySettings, run_index_copy_benchmark


def test_index_copy_compares_chroma_defaults_with_the_store_settings(tmp_path):
    lines: list[str] = []
    out = tmp_path / "rows.json"
    rows = run_index_copy_benchmark(
        sizes=[400], profiles=("before", "after"), settings=CopySettings(queries=20), json_path=out,
        workdir=tmp_path, log=lines.append,
    )
    assert json.loads(out.read_text()) == rows
    assert [(r["n"], r["profile"]) for r in rows] == [(400, "before"), (400, "after")]
    before, after = rows
    assert before["hnsw"] == "100/16/100" and before["copy_batch"] == 1000 and before["text"] == "document"
    assert after["hnsw"] != before["hnsw"] and after["text"] != "document"
    for row in rows:
        assert row["v1_insert_s"] > 0 and row["v2_s"] > 0 and 0 < row["rebuild_pct_of_full"] < 100
        assert 0.9 <= row["recall@10"] <= 1.0  # HNSW against exact search on 400 vectors
    assert "N=400: after vs before: 1% rebuild" in "\n".join(lines)
