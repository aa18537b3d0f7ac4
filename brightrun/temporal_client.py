"""The Temporal client: Temporal's own environment configuration, so the same worker and CLI run
against the local dev server, a self-hosted cluster with mTLS, or Temporal Cloud with an API key.

Temporal's configuration (a profile in TEMPORAL_CONFIG_FILE or ~/.config/temporalio/temporal.toml,
chosen by TEMPORAL_PROFILE; TEMPORAL_API_KEY, TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_*...) is
read as it is; the address and namespace of the settings (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
or `.devstack/env`) go over it when they are set. Credentials never pass through the settings,
so they never reach a log line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from brightrun.settings import Settings

if TYPE_CHECKING:
    # temporalio is imported where a client is made, so that `starter.py --help`, which only runs
    # under run_and_exit, does not load it.
    from temporalio.client import Client

LOCAL_TEMPORAL_ADDRESS = "127.0.0.1:7233"


def connect_options(settings: Settings) -> dict:
    """Keyword arguments of Client.connect, credentials included."""
    from temporalio.envconfig import ClientConfig

    options: dict = dict(ClientConfig.load_client_connect_config())
    if settings.temporal_address:
        options["target_host"] = settings.temporal_address
    options.setdefault("target_host", LOCAL_TEMPORAL_ADDRESS)
    if settings.temporal_namespace:
        options["namespace"] = settings.temporal_namespace
    options.setdefault("namespace", "default")
    return options


def temporal_address(settings: Settings) -> str:
    """Where the client connects, for messages and log lines."""
    return connect_options(settings)["target_host"]


def workflow_ui_url(settings: Settings, workflow_id: str) -> str:
    """The workflow's page in the Temporal web UI."""
    return f"{settings.temporal_ui_url}/namespaces/{connect_options(settings)['namespace']}/workflows/{workflow_id}"


async def connect(settings: Settings) -> Client:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    return await Client.connect(**connect_options(settings), data_converter=pydantic_data_converter)


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    """Run a process that uses a Temporal client, then end it without the interpreter's teardown.
    The client's Rust runtime keeps threads that can abort an interpreter while it finalizes
    (SIGABRT, exit 134, "Fatal Python error: PyGILState_Release: thread state ... must be current
    when releasing"; temporalio/sdk-python#300): 6 of 40 runs of connect-then-exit did here.
    Output and log handlers are flushed first; the exit code is main's (SystemExit's)."""
    try:
        main()
        code: object = 0
    except SystemExit as done:
        code = done.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message"), as the interpreter would print it
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


async def signal_if_running(client: Client, workflow_id: str, signal: str, arg: Any) -> bool:
    """Whether the workflow took the signal (False: it has ended). By name: an activity must not
    import a workflow (imports never run upward)."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        await client.get_workflow_handle(workflow_id).signal(signal, arg)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True
