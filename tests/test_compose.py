"""docker-compose.yml, checked against the code: Docker does not run here, so these tests are
what keeps the production topology in step with the settings, the schema tool and the
search attributes the workflows write, and what keeps it bound to loopback with the
credentials of the environment. The file is read the way Compose reads it: variables
interpolated from a given environment."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy import make_url
from temporalio.common import SearchAttributeIndexedValueType

from brightrun.settings import Settings
from models import search_attributes

REPO = Path(__file__).resolve().parent.parent
WORKER_NEEDS = (
    "TEMPORAL_ADDRESS",
    "DATABASE_URL",
    "S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "ANTHROPIC_API_KEY",
)
# How the temporal CLI spells each type: an oracle independent of the code under test.
CLI_TYPE_NAMES = {SearchAttributeIndexedValueType.KEYWORD: "Keyword", SearchAttributeIndexedValueType.INT: "Int"}
# What an operator exports before `docker compose up` (docs/production.md); none of it has a default.
CREDENTIALS = {
    "POSTGRES_PASSWORD": "pg-7f3a9c",
    "S3_ACCESS_KEY_ID": "s3-key-51be",
    "S3_SECRET_ACCESS_KEY": "s3-secret-c08d",
    "ANTHROPIC_API_KEY": "sk-ant-test",
}
# Compose's interpolation: $$ is a literal $, ${VAR}, ${VAR:-default} and ${VAR:?error}.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(node: Any, environment: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: interpolate(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environment) for value in node]
    if not isinstance(node, str):
        return node

    def value_of(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        value = environment.get(match["name"]) or None
        if value is None and match["op"] == ":?":
            raise MissingVariable(f"required variable {match['name']} is missing a value: {match['arg']}")
        return value if value is not None else (match["arg"] or "")

    return VARIABLE.sub(value_of, node)


def compose_services(environment: dict[str, str]) -> dict[str, dict[str, Any]]:
    return interpolate(yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"], environment)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return compose_services(CREDENTIALS)


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(command)


def published_container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).rsplit(":", 1)[-1]) for mapping in service.get("ports", [])}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """{dependency: condition}, for both the list and the mapping form of depends_on."""
    declared = service.get("depends_on", {})
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in declared.items()}


def test_every_worker_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    environment = services["worker"]["environment"]
    unknown = [name for name in environment if name.lower() not in Settings.model_fields]
    assert unknown == []
    assert set(WORKER_NEEDS) <= set(environment)


def test_worker_database_is_the_postgres_service(services: dict[str, dict[str, Any]]) -> None:
    url = make_url(Settings(database_url=services["worker"]["environment"]["DATABASE_URL"]).database_url)
    assert url.host in services
    postgres = services[url.host]
    assert postgres["image"].startswith("postgres:")
    assert "healthcheck" in postgres
    assert (url.port, url.username, url.password, url.database) == (
        5432,
        postgres["environment"]["POSTGRES_USER"],
        postgres["environment"]["POSTGRES_PASSWORD"],
        postgres["environment"]["POSTGRES_DB"],
    )


def test_temporal_listens_on_7233_on_postgres(services: dict[str, dict[str, Any]]) -> None:
    host, port = services["worker"]["environment"]["TEMPORAL_ADDRESS"].split(":")
    assert host in services
    temporal = services[host]
    assert int(port) == 7233
    assert 7233 in published_container_ports(temporal)
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] in services


def test_web_ui_talks_to_temporal(services: dict[str, dict[str, Any]]) -> None:
    assert "temporal-ui" in services
    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert ui["environment"]["TEMPORAL_ADDRESS"] == services["worker"]["environment"]["TEMPORAL_ADDRESS"]
    assert 8080 in published_container_ports(ui)


def test_s3_endpoint_is_the_s3_service(services: dict[str, dict[str, Any]]) -> None:
    endpoint = urlsplit(services["worker"]["environment"]["S3_ENDPOINT_URL"])
    assert endpoint.hostname in services
    s3 = services[endpoint.hostname]
    assert f"-s3.port={endpoint.port}" in command_text(s3).split()
    assert endpoint.port in published_container_ports(s3)


def test_buckets_are_created_where_the_worker_writes(services: dict[str, dict[str, Any]]) -> None:
    one_shot = services["s3-buckets"]
    worker_env = services["worker"]["environment"]
    for name in ("S3_ENDPOINT_URL", "CONVERSATION_BUCKET", "LOG_BUCKET"):
        assert one_shot["environment"][name] == worker_env[name]
    assert "devtools.devstack buckets" in command_text(one_shot)
    assert depends_on(services["worker"]).get("s3-buckets") == "service_completed_successfully"


def test_registered_search_attributes_match_the_code(services: dict[str, dict[str, Any]]) -> None:
    one_shot = services["temporal-search-attributes"]
    registered: dict[str, str] = {}
    for line in command_text(one_shot).splitlines():
        if "search-attribute create" in line:
            words = shlex.split(line)
            registered[words[words.index("--name") + 1]] = words[words.index("--type") + 1]
    expected = {
        key.name: CLI_TYPE_NAMES[key.indexed_value_type] for key in search_attributes.ALL
    }
    assert registered == expected
    assert depends_on(services["worker"]).get("temporal-search-attributes") == "service_completed_successfully"


def test_migrate_runs_alembic_before_the_worker(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert re.search(r"python -m alembic upgrade head\b", command_text(migrate))
    assert depends_on(migrate).get("postgresql") == "service_healthy"
    assert migrate["environment"]["DATABASE_URL"] == services["worker"]["environment"]["DATABASE_URL"]
    assert depends_on(services["worker"]).get("migrate") == "service_completed_successfully"


def test_worker_runs_worker_py_from_the_pinned_image(services: dict[str, dict[str, Any]]) -> None:
    assert command_text(services["worker"]) == "python worker.py"
    assert services["worker"]["build"] == "."
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install -c constraints.txt ." in dockerfile


def published_host_addresses(services: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """{service: host addresses its ports bind}; a mapping without an address binds all of them."""
    return {
        name: {str(m).rsplit(":", 2)[0] if str(m).count(":") == 2 else "0.0.0.0" for m in service["ports"]}
        for name, service in services.items()
        if service.get("ports")
    }


def test_published_ports_bind_loopback_unless_told_otherwise() -> None:
    on_loopback = published_host_addresses(compose_services(CREDENTIALS))
    assert set(on_loopback) == {"temporal", "temporal-ui", "s3", "web"}
    assert all(addresses == {"127.0.0.1"} for addresses in on_loopback.values())
    told = published_host_addresses(compose_services({**CREDENTIALS, "BIND_ADDRESS": "10.0.0.5"}))
    assert all(addresses == {"10.0.0.5"} for addresses in told.values())


@pytest.mark.parametrize("missing", sorted(CREDENTIALS))
def test_a_missing_credential_stops_compose_naming_it(missing: str) -> None:
    environment = {name: value for name, value in CREDENTIALS.items() if name != missing}
    with pytest.raises(MissingVariable, match=f"required variable {missing} is missing a value: set {missing}"):
        compose_services(environment)


def test_every_credential_comes_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    """No fixed password: each secret a service gets is the operator's value, everywhere it is used."""
    password = CREDENTIALS["POSTGRES_PASSWORD"]
    assert services["postgresql"]["environment"]["POSTGRES_PASSWORD"] == password
    assert services["temporal"]["environment"]["POSTGRES_PWD"] == password
    for name in ("worker", "migrate", "s3-buckets"):
        environment = services[name]["environment"]
        assert make_url(environment["DATABASE_URL"]).password == password
        assert environment["AWS_ACCESS_KEY_ID"] == CREDENTIALS["S3_ACCESS_KEY_ID"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == CREDENTIALS["S3_SECRET_ACCESS_KEY"]
    # The S3 server takes the same key pair as its only identity (SeaweedFS refuses other keys).
    s3 = services["s3"]["environment"]
    assert (s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]) == (
        CREDENTIALS["S3_ACCESS_KEY_ID"],
        CREDENTIALS["S3_SECRET_ACCESS_KEY"],
    )
    assert services["worker"]["environment"]["ANTHROPIC_API_KEY"] == CREDENTIALS["ANTHROPIC_API_KEY"]
