"""Gateway settings: where the operational endpoints are served, per environment, validated."""

from __future__ import annotations

import pytest

from agenix_assets.core.config import ConfigError
from serving.app import admin_only_paths
from serving.config import GatewayConfig


def test_local_settings_serve_metrics_and_docs_on_the_api_port(config_dir):
    settings = GatewayConfig.load(config_dir).settings
    assert (settings.admin.metrics, settings.admin.docs, settings.admin.port) == ("public", "public", None)
    assert settings.host == "127.0.0.1"
    assert admin_only_paths(settings.admin) == frozenset()


def test_production_settings_keep_metrics_and_docs_off_the_public_port(config_dir):
    settings = GatewayConfig.load(config_dir, environment="production").settings
    assert settings.environment == "production"
    assert (settings.admin.metrics, settings.admin.docs) == ("admin", "admin")
    assert settings.admin.host == "127.0.0.1" and settings.admin.port not in (None, settings.port)
    assert {"/metrics", "/docs", "/redoc", "/openapi.json"} <= admin_only_paths(settings.admin)
    assert settings.use_cases == GatewayConfig.load(config_dir).settings.use_cases  # the rest is the base file's


def test_admin_exposure_without_an_admin_port_names_the_key(config_dir):
    path = config_dir / "gateway" / "gateway.yaml"
    path.write_text(path.read_text() + "admin:\n  metrics: admin\n")
    with pytest.raises(ConfigError, match="admin.port is required"):
        GatewayConfig.load(config_dir)


def test_an_unknown_exposure_is_refused(config_dir):
    path = config_dir / "gateway" / "gateway.yaml"
    path.write_text(path.read_text() + "admin:\n  docs: everywhere\n")
    with pytest.raises(ConfigError, match="admin.docs"):
        GatewayConfig.load(config_dir)


def test_an_override_file_is_validated_and_named(config_dir):
    (config_dir / "gateway" / "gateway.staging.yaml").write_text("admin: {metrics: admin, port: 8080}\n")
    with pytest.raises(ConfigError, match=r"gateway\.staging\.yaml.*admin\.port must differ"):
        GatewayConfig.load(config_dir, environment="staging")
    (config_dir / "gateway" / "gateway.staging.yaml").write_text("use_cases: {}\n")
    with pytest.raises(ConfigError, match="use_cases"):  # only the keys an environment may change
        GatewayConfig.load(config_dir, environment="staging")
