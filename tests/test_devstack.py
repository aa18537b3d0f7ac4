"""`make up` (devstack.start) restarts what is not running, also when the shell sourced the
stack's env file, so DATABASE_URL names the stack's own embedded PostgreSQL."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import devstack


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


def test_a_database_url_of_another_server_is_not_taken_for_the_stacks_own(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    (root / "pgdata").mkdir(parents=True)
    (root / "pgdata" / "PG_VERSION").write_text("18\n")
    (root / "env").write_text("DATABASE_URL='postgresql+asyncpg://postgres@/brightrun?host=/tmp/own'\n")

    assert devstack._is_own_embedded_database(root, "postgresql+asyncpg://postgres@/brightrun?host=/tmp/own")
    assert not devstack._is_own_embedded_database(root, "postgresql://postgres@127.0.0.1:5432/brightrun")
