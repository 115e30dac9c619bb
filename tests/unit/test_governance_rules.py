from pathlib import Path

from agenix_assets.core import governance as rules
from agenix_assets.core.config import load_project_config


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_shipped_governance_passes_every_gate():
    config = load_project_config()
    assert rules.charters_complete(config.use_cases).passed
    assert rules.high_risk_has_dpia(config.use_cases).passed
    assert rules.use_case_sources_registered(config).passed
    for source in config.sources:
        assert rules.privacy_review_recorded(source, config).passed, source.name
        assert rules.source_registered(source, config).passed, source.name


def test_incomplete_charter_names_missing_fields(config_dir: Path):
    charter = config_dir / "use_cases" / "support_assistant.yaml"
    _edit(charter, "latency_target_ms_p95: 2500\n", "")
    _edit(charter, "target_users: [support agents, customers on the service portal]", "target_users: []")
    finding = rules.charters_complete(load_project_config(config_dir).use_cases)
    assert not finding.passed
    assert finding.reason == "incomplete charters: support-assistant: missing target_users, latency_target_ms_p95"


def test_high_risk_without_dpia_fails_and_medium_risk_does_not_need_one(config_dir: Path):
    charter = config_dir / "use_cases" / "support_assistant.yaml"
    _edit(charter, "dpia_reference: DPIA-2026-003", "dpia_reference: null")
    assert rules.high_risk_has_dpia(load_project_config(config_dir).use_cases).passed
    _edit(charter, "risk_class: medium", "risk_class: high")
    finding = rules.high_risk_has_dpia(load_project_config(config_dir).use_cases)
    assert not finding.passed
    assert finding.evidence["missing_dpia"] == ["support-assistant"]


def test_use_case_source_missing_from_register_fails(config_dir: Path):
    register = config_dir / "governance" / "processing_register.yaml"
    _edit(register, "  kb_documents:\n    activities: [ROPA-001]\n", "  kb_docs_old:\n    activities: [ROPA-001]\n")
    finding = rules.use_case_sources_registered(load_project_config(config_dir))
    assert not finding.passed
    assert "support-assistant: source 'kb_documents' is not in the processing register" in finding.reason


def test_unregistered_data_category_fails(config_dir: Path):
    _edit(config_dir / "sources.yaml", "data_categories: [commercial_transactions]", "data_categories: [commercial_transactions, health_data]")
    config = load_project_config(config_dir)
    finding = rules.source_registered(config.source("erp_orders"), config)
    assert not finding.passed
    assert "['health_data']" in finding.reason


def test_removed_privacy_review_blocks_with_reason(config_dir: Path):
    reviews = config_dir / "governance" / "privacy_reviews.yaml"
    text = reviews.read_text()
    start = text.index("  - id: PR-2026-004")
    end = text.index("  - id: PR-2026-005")
    reviews.write_text(text[:start] + text[end:])
    config = load_project_config(config_dir)
    finding = rules.privacy_review_recorded(config.source("erp_orders"), config)
    assert not finding.passed
    assert finding.reason.startswith("source 'erp_orders' names privacy review 'PR-2026-004', which is not recorded in ")


def test_rejected_or_mismatched_review_does_not_clear_a_source(config_dir: Path):
    reviews = config_dir / "governance" / "privacy_reviews.yaml"
    text = reviews.read_text()
    reviews.write_text(text.replace("    source: erp_orders\n    reviewer: Marek Novak\n    role: Information Security Officer\n    decided_at: 2026-02-02\n    outcome: approved", "    source: erp_orders\n    reviewer: Marek Novak\n    role: Information Security Officer\n    decided_at: 2026-02-02\n    outcome: rejected"))
    config = load_project_config(config_dir)
    assert rules.privacy_review_recorded(config.source("erp_orders"), config).reason == "privacy review 'PR-2026-004' of source 'erp_orders' was rejected"
    _edit(config_dir / "sources.yaml", "privacy_review: PR-2026-005", "privacy_review: PR-2026-001")
    config = load_project_config(config_dir)
    finding = rules.privacy_review_recorded(config.source("kb_documents"), config)
    assert finding.reason == "privacy review 'PR-2026-001' was recorded for source 'crm_accounts', not 'kb_documents'"


def test_source_without_review_reference_fails(config_dir: Path):
    _edit(config_dir / "sources.yaml", "    privacy_review: PR-2026-004\n", "")
    config = load_project_config(config_dir)
    finding = rules.privacy_review_recorded(config.source("erp_orders"), config)
    assert not finding.passed and finding.reason.startswith("source 'erp_orders' has no privacy review")


def test_fields_outside_register_fail():
    config = load_project_config()
    ok = rules.fields_within_register({"erp_orders": ["order_id", "sku"]}, config)
    bad = rules.fields_within_register({"crm_accounts": ["account_id", "street"]}, config)
    assert ok.passed
    assert not bad.passed and "['street']" in bad.reason
