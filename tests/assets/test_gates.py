"""Gates hold across runs (write-audit-publish): each scenario runs as separate `dg.materialize` calls on a real
Dagster instance, the way a user selecting assets in the UI, a retry or a sensor run would, and checks what the
gateway's own index resolution (serving.rag.UseCaseIndex) would serve afterwards."""

from __future__ import annotations

import dagster as dg
import yaml

from agenix_assets.core import gates
from agenix_assets.core.config import RagSettings, load_yaml_model
from agenix_assets.core.index import VectorIndexStore, chroma_client
from agenix_assets.core.paths import sample_golden_set_path
from agenix_assets.core.rag import INDEX_VERSION_GATES, read_gates
from serving.rag import UseCaseIndex
from tests.platform import Platform, asset_metadata, check_evaluations, materialized_keys

UC, USE_CASE = "support_assistant", "support-assistant"
KEY = {name: dg.AssetKey([UC, name]) for name in ("redacted_documents", "chunks", "embeddings", "vector_index")}
DOC = "manuals/cp-1190-centrifugal-process-pump.md"
LEAK = "quentin.vallaster@mailbox.example"


def store(platform: Platform) -> VectorIndexStore:
    return VectorIndexStore(chroma_client("embedded", path=platform.home / "chroma"))


def gateway_live_version(platform: Platform) -> int:
    """What the gateway serves for `index_version: live` (its own resolution code, a fresh reader each time)."""
    rag = load_yaml_model(platform.config_dir / "rag" / "support_assistant.yaml", RagSettings)
    return UseCaseIndex(USE_CASE, None, rag, platform.home / "index", encoder=None).resolve("live")


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {e.step_key: e.event_specific_data.error.message for e in result.all_events if e.is_step_failure}


def index_texts(platform: Platform) -> str:
    s = store(platform)
    return "\n".join(
        text for v in s.versions(USE_CASE) if v.status == "ready" for text in s.get_all(USE_CASE, v.version)[2]
    )


def narrow_masking(platform: Platform) -> str:
    settings = platform.config_dir / "rag" / "support_assistant.yaml"
    original = settings.read_text()
    settings.write_text(original.replace("index:\n", "pii:\n  mask_entities: [PERSON, PHONE_NUMBER, IBAN_CODE, STREET_ADDRESS]\nindex:\n"))
    return original


def test_a_leak_caught_in_one_run_never_reaches_an_index_selected_in_the_next(platform: Platform):
    """The issue's scenario: e-mails left unmasked, materialize up to chunks (the gate fails); restore the setting and
    select embeddings and vector_index alone. They refuse, naming the check and its evidence; no version is built;
    the gateway keeps serving v1."""
    assert gateway_live_version(platform) == 1
    original = narrow_masking(platform)
    path = platform.landing / "documents" / DOC
    path.write_text(path.read_text() + f"\n## Feedback\n\nWrite to {LEAK} about this manual.\n")

    first = platform.run(dg.AssetSelection.assets(KEY["chunks"]).upstream())
    pii = check_evaluations(first)[f"{UC}/chunks:no_pii_in_chunks"]
    assert not pii.passed and "EMAIL_ADDRESS" in pii.metadata["finding_types"].value
    assert asset_metadata(first, KEY["chunks"])["published"] is False
    # Written and audited in staging, never published.
    assert platform.query(f"SELECT count(*) FROM rag_{UC}.chunks_staging WHERE text LIKE ?", [f"%{LEAK}%"]) == [(1,)]
    assert platform.query(f"SELECT count(*) FROM rag_{UC}.chunks WHERE text LIKE ?", [f"%{LEAK}%"]) == [(0,)]

    (platform.config_dir / "rag" / "support_assistant.yaml").write_text(original)
    second = platform.run([KEY["embeddings"], KEY["vector_index"]])
    assert not second.success
    failures = step_failures(second)
    refusal = next(iter(failures.values()))
    assert "no_pii_in_chunks failed on support_assistant/chunks" in refusal and "EMAIL_ADDRESS" in refusal
    assert materialized_keys(second) == set()
    assert [v.version for v in store(platform).versions(USE_CASE)] == [1]
    assert LEAK not in index_texts(platform)
    assert gateway_live_version(platform) == 1

    # vector_index alone refuses too, on the same evidence (a sensor run or a retry selects it like this).
    third = platform.run([KEY["vector_index"]])
    assert "no_pii_in_chunks" in next(iter(step_failures(third).values()))
    assert [v.version for v in store(platform).versions(USE_CASE)] == [1]

    # The fix flows once the gate passes again: re-redacted with e-mails masked, published, indexed, served.
    fixed = platform.run([KEY["redacted_documents"], KEY["chunks"], KEY["embeddings"], KEY["vector_index"]])
    assert fixed.success, step_failures(fixed)
    assert asset_metadata(fixed, KEY["chunks"])["published"] is True
    assert asset_metadata(fixed, KEY["vector_index"])["servable"] is True
    assert gateway_live_version(platform) == 2
    assert LEAK not in index_texts(platform)


def test_a_failing_smoke_test_keeps_the_previous_version_serving_and_alive(platform: Platform):
    """A new version that fails the retrieval smoke test is built but never served; with retention 1 it still
    cannot garbage-collect the version that serves. Once the smoke test passes on it, it becomes servable."""
    settings = platform.config_dir / "rag" / "support_assistant.yaml"
    settings.write_text(settings.read_text().replace("retention_versions: 3", "retention_versions: 1"))
    golden_path = sample_golden_set_path(platform.landing, USE_CASE)  # the sample company's own golden set
    golden_text = golden_path.read_text()
    golden = yaml.safe_load(golden_text)
    golden["queries"][0]["expected_documents"] = ["manuals/no-such-document.md"]
    golden_path.write_text(yaml.safe_dump(golden, sort_keys=False))
    path = platform.landing / "documents" / DOC
    path.write_text(path.read_text() + "\n## Spare parts\n\nThe CP-1190 spare impeller kit has article number SP-1190-7.\n")

    result = platform.run_job("ingest_kb_documents")
    smoke = check_evaluations(result)[f"{UC}/vector_index:retrieval_smoke_test"]
    assert not smoke.passed
    index = asset_metadata(result, KEY["vector_index"])
    assert (index["version"], index["servable"], index["serving_version"]) == (2, False, 1)
    verdict = read_gates(platform.home / "index", index["collection"])
    assert verdict["servable"] is False and set(verdict["checks"]) == set(INDEX_VERSION_GATES)
    assert verdict["checks"]["retrieval_smoke_test"]["passed"] is False
    assert all(verdict["checks"][name]["passed"] for name in INDEX_VERSION_GATES if name != "retrieval_smoke_test")
    assert [v.version for v in store(platform).versions(USE_CASE)] == [1, 2]
    assert gateway_live_version(platform) == 1

    golden_path.write_text(golden_text)
    again = platform.run([KEY["vector_index"]])
    assert again.success, step_failures(again)
    assert asset_metadata(again, KEY["vector_index"])["servable"] is True
    assert gateway_live_version(platform) == 2
    # Now v2 serves, retention 1 lets v1 go (its collection stays only as a layer v2 reads; its artifacts go).
    assert [v.version for v in store(platform).retained(USE_CASE, 1)] == [2]
    assert not (platform.home / "index" / "agenix.support-assistant.v0001").exists()


def test_a_source_removed_from_the_register_is_refused_by_its_raw_asset_alone(platform: Platform):
    register_path = platform.config_dir / "governance" / "processing_register.yaml"
    register = yaml.safe_load(register_path.read_text())
    del register["sources"]["kb_documents"]
    register_path.write_text(yaml.safe_dump(register, sort_keys=False))
    before = platform.query("SELECT count(*) FROM raw.kb_documents")
    (platform.landing / "documents" / "guides" / "new-guide.md").write_text("# New guide\n\nTorque is 12 Nm.\n")

    result = platform.run([dg.AssetKey(["raw", "kb_documents"])])  # the privacy-review gate is not selected
    assert not result.success
    [message] = step_failures(result).values()
    assert "source_in_processing_register failed" in message and "kb_documents" in message
    assert platform.query("SELECT count(*) FROM raw.kb_documents") == before


def test_a_consumer_refuses_an_upstream_that_was_never_evaluated(tmp_path):
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        try:
            gates.require_passed(con, "uc/chunks", "uc/embeddings", ["no_pii_in_chunks"])
        except gates.GateRefused as refused:
            assert "never evaluated" in str(refused) and "uc/embeddings refuses to read uc/chunks" in str(refused)
        else:
            raise AssertionError("an upstream never evaluated must be refused")


def test_a_cleaned_model_that_failed_data_minimization_is_refused_by_redaction_in_a_later_run(platform: Platform):
    """dbt publishes in place, so the redaction step reads the instance's latest check evaluation instead."""
    register_path = platform.config_dir / "governance" / "processing_register.yaml"
    register = yaml.safe_load(register_path.read_text())
    register["sources"]["kb_documents"]["allowed_fields"].remove("size_bytes")
    register_path.write_text(yaml.safe_dump(register, sort_keys=False))

    first = platform.run_job("ingest_kb_documents")
    assert not check_evaluations(first)["cleaned/cleaned_kb_documents:fields_allowed_by_register"].passed
    assert f"{UC}/redacted_documents" not in materialized_keys(first)

    second = platform.run([KEY["redacted_documents"]])
    [message] = step_failures(second).values()
    assert "cleaned/cleaned_kb_documents: its latest fields_allowed_by_register failed" in message
