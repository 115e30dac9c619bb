from pathlib import Path

import pytest

from agenix_assets.core.config import ConfigError, SourcesFile, load_project_config, load_yaml_model


def test_shipped_config_is_valid():
    config = load_project_config()
    assert {s.name for s in config.sources} == {"crm_accounts", "crm_contacts", "support_tickets", "erp_orders", "kb_documents"}
    assert [u.id for u in config.use_cases] == ["support-assistant"]
    assert config.use_cases[0].risk_class == "medium"


def test_misspelled_key_names_file_line_and_key(config_dir: Path):
    path = config_dir / "sources.yaml"
    text = path.read_text().replace("    primary_key: order_id", "    primary_kee: order_id")
    path.write_text(text)
    line = text.splitlines().index("    primary_kee: order_id") + 1
    with pytest.raises(ConfigError) as err:
        load_yaml_model(path, SourcesFile)
    message = str(err.value)
    assert f"{path}:{line}: sources.3.primary_kee: unknown key (misspelled?)" in message
    assert "sources.3.primary_key: required key is missing" in message


def test_wrong_enum_value_says_what_was_expected(config_dir: Path):
    path = config_dir / "sources.yaml"
    path.write_text(path.read_text().replace("kind: csv", "kind: excel"))
    with pytest.raises(ConfigError) as err:
        load_yaml_model(path, SourcesFile)
    assert "sources.3.kind: Input should be 'sql', 'csv', 'jsonl', 'parquet' or 'documents' (got 'excel')" in str(err.value)


def test_primary_key_must_be_a_declared_column(config_dir: Path):
    path = config_dir / "sources.yaml"
    path.write_text(path.read_text().replace("primary_key: order_id", "primary_key: order_no"))
    with pytest.raises(ConfigError, match=r"primary_key 'order_no' is not one of the columns"):
        load_yaml_model(path, SourcesFile)


def test_yaml_syntax_error_names_the_line(config_dir: Path):
    path = config_dir / "governance" / "risk_register.yaml"
    path.write_text("risks:\n  - id: RISK-1\n    description: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_project_config(config_dir)


def test_missing_file_is_named(config_dir: Path):
    (config_dir / "governance" / "privacy_reviews.yaml").unlink()
    with pytest.raises(ConfigError, match=r"privacy_reviews.yaml: file not found"):
        load_project_config(config_dir)


def test_check_config_validates_the_gateway_registry_prompts_and_manifest(config_dir):
    from typer.testing import CliRunner

    from agenix_assets.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["check-config", "--config-dir", str(config_dir)])
    assert ok.exit_code == 0 and "4 models, 1 deployed use case(s)" in ok.output
    manifest = config_dir / "deployments" / "local.yaml"
    manifest.write_text(manifest.read_text().replace("prompt_version: v1", "prompt_version: v9"))
    bad = runner.invoke(app, ["check-config", "--config-dir", str(config_dir)])
    assert bad.exit_code == 1
    assert "local.yaml: use_cases.support-assistant" in bad.output and "'v9' not found" in bad.output
    models = config_dir / "gateway" / "models.yaml"
    models.write_text(models.read_text().replace("fallbacks: [extractive]", "fallbacks: [gpt-9]"))
    bad = runner.invoke(app, ["check-config", "--config-dir", str(config_dir)])
    assert bad.exit_code == 1 and "models.yaml" in bad.output and "gpt-9" in bad.output
