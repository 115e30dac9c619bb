"""The indexing benchmark end to end at scale "small" (real sample data, ingestion, dbt, Presidio, embedding model,
embedded Chroma): the JSON has its stable shape and its numbers agree with each other. Speed targets are not
asserted here (they are what the benchmark measures, on a quiet machine)."""

from __future__ import annotations

import json

import pytest

from agenix_bench import indexing as bench

pytestmark = pytest.mark.timeout(900)

STAGE_KEYS = {"seconds", "items", "per_s", "peak_rss_mb"}


def _check_stages(stages: dict) -> None:
    assert set(stages) == set(bench.STAGES)
    for name, stage in stages.items():
        assert STAGE_KEYS <= set(stage), name
        assert stage["seconds"] >= 0 and stage["peak_rss_mb"] > 0, name


def test_indexing_benchmark_small(tmp_path, capsys):
    out = tmp_path / "out" / "indexing.json"
    result = bench.run_indexing_benchmark(
        "small", workdir=tmp_path / "work", json_path=out, change_fraction=0.1, raw_sample=0.5, log=None
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))

    # shape
    assert {
        "scale",
        "documents",
        "chunks",
        "full_build",
        "raw_encode",
        "ratio",
        "rebuild",
        "peak_rss_mb",
        "meta",
    } <= set(result)
    assert result["scale"] == "small"
    full, raw, rebuild, meta = result["full_build"], result["raw_encode"], result["rebuild"], result["meta"]
    assert {"seconds", "docs_per_s", "chunks_per_s", "stages"} <= set(full)
    assert {"seconds", "chunks_per_s"} <= set(raw)
    assert {"seconds", "percent_of_full", "reembedded", "added", "kept", "removed", "stages"} <= set(rebuild)
    assert {"model_id", "torch_threads", "cpu_count", "date"} <= set(meta)
    _check_stages(full["stages"])
    _check_stages(rebuild["stages"])

    # full build: every chunk embedded once, then served from the cache to the index
    chunks = result["chunks"]
    assert result["documents"] > 0 and chunks > 0
    assert full["stages"]["redaction"]["documents"] == result["documents"]
    assert full["stages"]["chunking"]["chunks_total"] == chunks
    embedding = full["stages"]["embedding"]
    assert embedding["chunks"] == chunks and embedding["cache_hits"] == 0
    assert 0 < embedding["items"] == embedding["unique_texts"] <= chunks
    index = full["stages"]["index"]
    assert index["total"] == chunks and index["added"] == chunks and index["kept"] == 0
    assert index["embedded_during_build"] == 0
    assert full["reembedded"] == embedding["items"]
    assert full["seconds"] == pytest.approx(sum(s["seconds"] for s in full["stages"].values()), abs=0.01)
    assert full["chunks_per_s"] > 0 and full["docs_per_s"] > 0
    # the raw baseline encoded a seeded half of the chunks; the ratio compares rates
    assert raw["chunks"] == round(chunks * 0.5) and raw["sample_fraction"] == 0.5
    assert raw["seconds"] > 0 and raw["chunks_per_s"] == pytest.approx(raw["chunks"] / raw["seconds"], rel=1e-3)
    assert result["ratio"] > 0 and result["ratio"] == pytest.approx(
        full["chunks_per_s"] / raw["chunks_per_s"], rel=1e-3
    )
    assert full["checks"]["pii_scan"]["items"] == chunks and full["checks"]["pii_scan"]["findings"] == 0

    # incremental rebuild: only the edited documents' changed chunks are embedded
    assert rebuild["documents_changed"] == len(rebuild["changed_documents"]) >= 1
    assert rebuild["reingest"]["updated"] == rebuild["documents_changed"]
    assert rebuild["stages"]["redaction"]["items"] == rebuild["documents_changed"]
    assert rebuild["stages"]["chunking"]["documents_rechunked"] == rebuild["documents_changed"]
    assert 0 < rebuild["reembedded"] < chunks
    assert rebuild["stages"]["index"]["embedded_during_build"] == 0
    assert rebuild["kept"] > 0 and rebuild["added"] >= rebuild["reembedded"]
    assert rebuild["kept"] + rebuild["added"] == rebuild["total"] == rebuild["chunks"]
    assert rebuild["version"] == index["version"] + 1
    # a small change is a delta version over the full one: only the edited documents' records are written
    rindex = rebuild["stages"]["index"]
    assert (index["layout"], rindex["layout"], rindex["layers"]) == ("full", "delta", 2)
    assert rebuild["added"] <= rindex["stored_in_collection"] < chunks and rindex["masked"] >= rebuild["added"]
    # the next change built as a full copy (compaction): every record written again
    compacting = result["compacting_rebuild"]
    cindex = compacting["stages"]["index"]
    assert cindex["layout"] == "full" and cindex["version"] == rebuild["version"] + 1
    assert cindex["stored_in_collection"] == cindex["total"] == compacting["chunks"]
    assert 0 < compacting["reembedded"] < chunks and 0 < compacting["percent_of_full"] < 100
    assert result["complete"] is True
    assert 0 < rebuild["percent_of_full"] < 100
    assert result["peak_rss_mb"] > 0
    assert meta["torch_threads"] >= 1 and meta["cpu_count"] >= 1
    assert meta["model_id"].startswith("all-MiniLM-L6-v2@")

    # a given workdir is kept; the table renders every stage
    assert (tmp_path / "work" / "home" / "warehouse.duckdb").exists()
    bench.print_table(result)
    table = capsys.readouterr().out
    for name in (*bench.STAGES, "raw encode", "ratio", "rebuild", "compacting rebuild", "50% sample"):
        assert name in table


def test_modify_documents_is_deterministic(tmp_path):
    docs = {
        "a.md": "# A\n\nIntro.\n\n## One\n\nFirst section text.\n\n## Two\n\n- a list item\n\nSecond section text.\n\n## Three\n\nThird.\n",
        "b.html": "<html><body><p>One.</p><p>Two.</p><p>Three.</p></body></html>\n",
        "c.pdf": "%PDF-1.4 binary",
    }
    for root in ("x", "y"):
        for name, text in docs.items():
            (tmp_path / root).mkdir(exist_ok=True)
            (tmp_path / root / name).write_text(text)
    changed = bench.modify_documents(tmp_path / "x", 1.0, seed=3)
    assert changed == bench.modify_documents(tmp_path / "y", 1.0, seed=3) == ["a.md", "b.html"]
    md = (tmp_path / "x" / "a.md").read_text()
    assert f"Second section text. {bench.EDIT_SENTENCE}" in md and md.count(bench.EDIT_SENTENCE) == 1
    assert f"<p>Two. {bench.EDIT_SENTENCE}</p>" in (tmp_path / "x" / "b.html").read_text()
    assert (tmp_path / "x" / "c.pdf").read_text() == docs["c.pdf"]
