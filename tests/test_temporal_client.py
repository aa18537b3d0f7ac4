"""The Temporal connection follows Temporal's environment configuration; the settings' address
and namespace go over it."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from brightrun.settings import Settings
from brightrun.temporal_client import connect_options

PROFILE = """
[profile.cloud]
address = "my-ns.a1b2c.tmprl.cloud:7233"
namespace = "my-ns.a1b2c"
api_key = "secret-api-key"

[profile.mtls]
address = "temporal.internal:7233"
namespace = "batch"
[profile.mtls.tls]
client_cert_data = "CERT"
client_key_data = "KEY"
"""


@pytest.fixture
def temporal_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "temporal.toml"
    path.write_text(PROFILE)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    return path


def test_without_configuration_the_local_dev_server(temporal_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(temporal_config.parent / "none.toml"))

    options = connect_options(Settings(temporal_address=None, temporal_namespace=None))

    assert options["target_host"] == "127.0.0.1:7233"
    assert options["namespace"] == "default"
    assert "tls" not in options and "api_key" not in options


def test_a_cloud_profile_brings_address_namespace_and_api_key_with_tls(
    temporal_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")

    options = connect_options(Settings(temporal_address=None, temporal_namespace=None))

    assert options["target_host"] == "my-ns.a1b2c.tmprl.cloud:7233"
    assert options["namespace"] == "my-ns.a1b2c"
    assert options["api_key"] == "secret-api-key"
    assert options["tls"] is True


def test_an_mtls_profile_brings_the_client_certificate(temporal_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "mtls")

    options = connect_options(Settings(temporal_address=None, temporal_namespace=None))

    assert isinstance(options["tls"], TLSConfig)
    assert (options["tls"].client_cert, options["tls"].client_private_key) == (b"CERT", b"KEY")


def test_the_settings_address_and_namespace_go_over_the_profile(
    temporal_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")

    options = connect_options(Settings(temporal_address="127.0.0.1:17233", temporal_namespace="staging"))

    assert (options["target_host"], options["namespace"]) == ("127.0.0.1:17233", "staging")
    assert options["api_key"] == "secret-api-key"


def test_the_api_key_never_shows_in_the_settings(temporal_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", "env-secret")

    settings = Settings(temporal_address=None, temporal_namespace=None)

    assert connect_options(settings)["api_key"] == "env-secret"
    assert "env-secret" not in repr(settings) and "env-secret" not in str(settings.model_dump())
