"""The RAG lane on the small sample company: redaction, chunks, embeddings, index versions, incremental
re-indexing started by the ingestion job a landing-zone change triggers."""

from __future__ import annotations

import json
from collections import Counter

import dagster as dg

from agenix_assets.core.index import chroma_client, VectorIndexStore
from tests.platform import Platform, asset_metadata, check_evaluations, materialized_keys

UC = "support_assistant"
KEY = {name: dg.AssetKey([UC, name]) for name in ("redacted_documents", "chunks", "embeddings", "vector_index")}
DOC = "manuals/cp-1190-centrifugal-process-pump.md"


def store(platform: Platform) -> VectorIndexStore:
    return VectorIndexStore(chroma_client("embedded", path=platform.home / "chroma"))


def test_first_build_indexes_every_chunk_and_passes_its_gates(first_run):
    platform, result, summary = first_run
    checks = check_evaluations(result)
    for name in ("no_pii_in_chunks", "chunk_token_bounds", "no_empty_chunks", "unique_chunk_ids"):
        assert checks[f"{UC}/chunks:{name}"].passed, name
    assert checks[f"{UC}/vector_index:every_chunk_indexed"].passed
    smoke = checks[f"{UC}/vector_index:retrieval_smoke_test"]
    assert smoke.passed and smoke.metadata["hit_rate"].value == 1.0 and smoke.metadata["queries"].value == 18

    redacted = asset_metadata(result, KEY["redacted_documents"])
    [(docs,)] = platform.query("SELECT count(*) FROM cleaned.cleaned_kb_documents")
    [(tickets,)] = platform.query("SELECT count(*) FROM cleaned.cleaned_support_tickets")
    assert redacted["documents"] == docs + tickets
    # The counts by type match what the generator planted in the indexed records.
    indexed = {d for (d,) in platform.query("SELECT document_id FROM cleaned.cleaned_kb_documents UNION ALL SELECT ticket_id FROM cleaned.cleaned_support_tickets")}
    planted = Counter(
        p["type"] for p in map(json.loads, (platform.landing / "_manifest" / "pii.jsonl").read_text().splitlines()) if p["record_id"] in indexed
    )
    for kind in ("EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS"):
        assert redacted[f"pii_{kind.lower()}"] == planted[kind], kind

    chunks = asset_metadata(result, KEY["chunks"])
    embeddings = asset_metadata(result, KEY["embeddings"])
    index = asset_metadata(result, KEY["vector_index"])
    assert embeddings["embedded"] == embeddings["unique_texts"] > 0
    assert (index["version"], index["parent_version"], index["added"], index["total"]) == (1, -1, chunks["chunks"], chunks["chunks"])
    live = store(platform).live("support-assistant")
    assert live.version == 1 and live.total == chunks["chunks"]


def test_no_known_contact_or_email_reaches_the_chunks(first_run):
    platform, _, _ = first_run
    contacts = platform.query("SELECT first_name || ' ' || last_name, email FROM cleaned.cleaned_crm_contacts")
    texts = "\n".join(t for (t,) in platform.query(f"SELECT text FROM rag_{UC}.chunks")).lower()
    leaked = [n for n, e in contacts if n.lower() in texts or e.lower() in texts]
    assert leaked == []
    assert "<person_1>" in texts and "<email_address_1>" in texts


def test_rerun_without_change_creates_no_version_and_embeds_nothing(platform: Platform):
    result = platform.run()
    assert result.success
    assert asset_metadata(result, KEY["redacted_documents"])["redacted"] == 0
    assert asset_metadata(result, KEY["embeddings"])["embedded"] == 0
    index = asset_metadata(result, KEY["vector_index"])
    assert (index["version"], index["new_version"]) == (1, False)


def test_editing_one_file_reembeds_only_its_chunks_into_a_new_version(platform: Platform):
    path = platform.landing / "documents" / DOC
    before = {cid: h for cid, h in platform.query(f"SELECT chunk_id, content_hash FROM rag_{UC}.chunks WHERE document_id = ?", [DOC])}
    path.write_text(path.read_text() + "\n## Spare parts\n\nThe CP-1190 spare impeller kit has article number SP-1190-7.\n")
    result = platform.run_job("ingest_kb_documents")
    assert result.success
    assert asset_metadata(result, KEY["redacted_documents"])["redacted"] == 1
    assert asset_metadata(result, KEY["chunks"])["documents_rechunked"] == 1
    after = {cid: h for cid, h in platform.query(f"SELECT chunk_id, content_hash FROM rag_{UC}.chunks WHERE document_id = ?", [DOC])}
    changed = len(set(after) - set(before))
    assert 1 <= changed < len(after)  # chunks before the edit keep their ids
    embedded = asset_metadata(result, KEY["embeddings"])["embedded"]
    assert embedded == changed
    index = asset_metadata(result, KEY["vector_index"])
    assert (index["version"], index["parent_version"], index["added"], index["removed"]) == (2, 1, changed, len(set(before) - set(after)))
    assert index["kept"] == index["total"] - changed
    assert [v.version for v in store(platform).versions("support-assistant")] == [1, 2]
    assert check_evaluations(result)[f"{UC}/vector_index:retrieval_smoke_test"].passed


def test_an_unknown_persons_email_planted_in_a_document_is_masked(platform: Platform):
    path = platform.landing / "documents" / DOC
    path.write_text(path.read_text() + "\n## Feedback\n\nWrite to quentin.vallaster@mailbox.example about this manual.\n")
    result = platform.run_job("ingest_kb_documents")
    assert result.success
    assert asset_metadata(result, KEY["redacted_documents"])["pii_email_address"] == 1
    texts = " ".join(t for (t,) in platform.query(f"SELECT text FROM rag_{UC}.chunks WHERE document_id = ?", [DOC]))
    assert "quentin.vallaster" not in texts and "<EMAIL_ADDRESS_1>" in texts


def test_pii_that_slips_through_blocks_indexing_and_the_live_version_stays(platform: Platform):
    """Redaction configured not to mask emails: the blocking check finds them, embeddings and index do not run."""
    settings = platform.config_dir / "rag" / "support_assistant.yaml"
    settings.write_text(settings.read_text().replace("index:\n", "pii:\n  mask_entities: [PERSON, PHONE_NUMBER, IBAN_CODE, STREET_ADDRESS]\nindex:\n"))
    result = platform.run()
    assert not result.success
    check = check_evaluations(result)[f"{UC}/chunks:no_pii_in_chunks"]
    assert not check.passed and "EMAIL_ADDRESS" in check.metadata["finding_types"].value
    done = materialized_keys(result)
    assert f"{UC}/embeddings" not in done and f"{UC}/vector_index" not in done
    assert store(platform).live("support-assistant").version == 1


def test_bad_documents_are_skipped_with_a_reason_and_never_stop_the_others(platform: Platform):
    """Five bad documents dropped at once (one ingestion run, as a user's folder sync would): each is quarantined or
    skipped with its own reason, the good ones and the rest of the knowledge base still reach the index."""
    docs = platform.landing / "documents"
    (docs / "guides" / "empty.md").write_text("")
    (docs / "guides" / "junk.md").write_bytes(bytes(range(256)) * 64)
    (docs / "guides" / "latin1.md").write_bytes("# Größe\n\nMaße und Gewichte.".encode("latin-1"))
    (docs / "guides" / "huge.md").write_text("# Huge\n\n" + "Pump impeller clearance table. " * 80_000)
    (docs / "guides" / "scripted.html").write_text(
        "<html><head><title>Seal care</title><style>p{color:red}</style></head><body><h1>Seal care</h1>"
        "<p>Replace the MS-6510 seal faces every 8000 hours.</p><script>track('secret-token')</script></body></html>"
    )
    result = platform.run_job("ingest_kb_documents")
    assert result.success
    raw = asset_metadata(result, dg.AssetKey(["raw", "kb_documents"]))
    redacted = asset_metadata(result, KEY["redacted_documents"])
    assert (raw["quarantined"], raw["inserted"]) == (3, 2)  # empty, binary, latin1 out; huge and scripted in
    reasons = dict(platform.query("SELECT file, reason FROM raw._agenix_quarantine WHERE source = 'kb_documents'"))
    by_name = {name: reason for file, reason in reasons.items() for name in ("empty", "junk", "latin1") if name in file}
    assert "empty" in by_name["empty"] and "binary" in by_name["junk"] and "UTF-8" in by_name["latin1"]
    assert (redacted["redacted"], redacted["skipped"]) == (1, 1)
    [(reason,)] = platform.query(f"SELECT reason FROM rag_{UC}.document_skips")
    assert reason.startswith("too long to index")
    text = " ".join(t for (t,) in platform.query(f"SELECT text FROM rag_{UC}.chunks WHERE document_id = 'guides/scripted.html'"))
    assert "every 8000 hours" in text and "secret-token" not in text and "color:red" not in text
    assert check_evaluations(result)[f"{UC}/vector_index:retrieval_smoke_test"].passed
