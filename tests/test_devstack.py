"""`make up` (devstack.start) restarts what is not running, also when the shell sourced the
stack's env file, so DATABASE_URL names the stack's own embedded PostgreSQL (even after `make
down` deleted that file) and when it runs on ports the shell no longer names; any failure of the
command is one line."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import devstack
from tests.conftest import REPO


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[devstack.StackConfig]:
    """A stack of this test's own: its PostgreSQL is killed."""
    config = devstack.isolated_config(tmp_path / "stack")
    try:
        yield config
    finally:
        devstack.stop(config.root)


def test_up_from_a_shell_that_sourced_the_env_file_restarts_the_embedded_postgres(
    own_stack: devstack.StackConfig,
) -> None:
    env = devstack.start(own_stack)
    devstack.stop_part(own_stack.root, "postgres", signal.SIGKILL)  # a crash
    assert not devstack.answers("postgres", env)

    # What `make up` sees after `source .devstack/env`: DATABASE_URL is the stack's own.
    devstack.start(dataclasses.replace(own_stack, database_url=env["DATABASE_URL"]))

    assert devstack.answers("postgres", env)
    assert "postgres" in devstack.running_parts(own_stack.root)


def test_up_restarts_a_crashed_part_on_the_ports_its_stack_runs_on(own_stack: devstack.StackConfig) -> None:
    env = devstack.start(own_stack)  # on free ports, not the defaults
    devstack.stop_part(own_stack.root, "standin", signal.SIGKILL)  # a crash

    # `make up` from a shell that does not repeat the stack's DEVSTACK_*_PORT overrides.
    config = devstack.cli_config(own_stack.root, {})
    again = devstack.start(dataclasses.replace(config, start_worker=False, start_standin=True, standin_pace="instant"))

    assert again["ANTHROPIC_BASE_URL"] == env["ANTHROPIC_BASE_URL"]
    assert "standin" in devstack.running_parts(own_stack.root)
    assert devstack._http_ok(f"{env['ANTHROPIC_BASE_URL']}/_standin/health")


def test_up_naming_other_ports_than_the_running_stacks_is_refused(own_stack: devstack.StackConfig) -> None:
    devstack.start(own_stack)
    other_port = str(devstack.free_port())

    config = devstack.cli_config(own_stack.root, {"DEVSTACK_STANDIN_PORT": other_port})

    with pytest.raises(devstack.DevstackError, match="runs with other ports"):
        devstack.start(config)


def test_up_starts_the_review_workspace_and_writes_its_address(own_stack: devstack.StackConfig) -> None:
    env = devstack.start(dataclasses.replace(own_stack, start_web=True))

    assert env["BRIGHTRUN_WEB_URL"] == f"http://127.0.0.1:{own_stack.web_port}"
    assert f"BRIGHTRUN_WEB_URL={env['BRIGHTRUN_WEB_URL']}" in (own_stack.root / "env").read_text().splitlines()
    assert "web" in devstack.running_parts(own_stack.root)
    assert devstack._http_ok(f"{env['BRIGHTRUN_WEB_URL']}/healthz")
    assert devstack._http_ok(f"{env['BRIGHTRUN_WEB_URL']}/login")


def test_up_on_a_stack_started_before_the_workspace_existed_keeps_its_ports(own_stack: devstack.StackConfig) -> None:
    devstack.start(own_stack)
    ports_file = own_stack.root / "ports.json"
    ports_file.write_text(json.dumps({k: v for k, v in json.loads(ports_file.read_text()).items() if k != "web_port"}))

    config = devstack.cli_config(own_stack.root, {"DEVSTACK_WEB_PORT": str(own_stack.web_port)})
    again = devstack.start(dataclasses.replace(config, start_worker=False, start_standin=True, standin_pace="instant"))

    assert again["BRIGHTRUN_WEB_URL"] == f"http://127.0.0.1:{own_stack.web_port}"
    assert json.loads(ports_file.read_text())["web_port"] == own_stack.web_port


def test_down_then_up_from_a_shell_that_sourced_the_old_env_file_starts_the_embedded_postgres_again(
    own_stack: devstack.StackConfig,
) -> None:
    env = devstack.start(own_stack)
    devstack.stop(own_stack.root)  # `make down`: every part stops and the env file is deleted
    assert not (own_stack.root / "env").exists() and not devstack.answers("postgres", env)

    # `make up` from the shell that still has the old DATABASE_URL.
    again = devstack.start(dataclasses.replace(own_stack, database_url=env["DATABASE_URL"]))

    assert again["DATABASE_URL"] == env["DATABASE_URL"]
    assert devstack.answers("postgres", again)
    assert "postgres" in devstack.running_parts(own_stack.root)


def test_a_database_url_of_another_server_is_not_taken_for_the_stacks_own(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    (root / "pgdata").mkdir(parents=True)
    (root / "pgdata" / "PG_VERSION").write_text("18\n")

    assert devstack._is_own_embedded_database(root, f"postgresql+asyncpg://postgres@/brightrun?host={root / 'pgdata'}")
    assert not devstack._is_own_embedded_database(root, "postgresql+asyncpg://postgres@/brightrun?host=/tmp/other")
    assert not devstack._is_own_embedded_database(root, "postgresql://postgres@127.0.0.1:5432/brightrun")


def test_any_failure_of_the_devstack_command_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.devstack", "buckets"], check=False, cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": "mysql://x"}, timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: DATABASE_URL: must be a postgresql:// URL")
