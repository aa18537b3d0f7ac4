"""Outages on demand, for tests and the chaos runner: stop a server of a running local stack and
start it again as it was (same data, same port), and run worker processes that can be killed.

    outages = Outages(root, env)            # root and env of devstack.start
    with outages.down("postgres"):          # PostgreSQL refuses connections in here
        ...
    outages.stop("temporal"); outages.restart("temporal")   # workflows survive (same SQLite file)

    pool = WorkerPool(root, env)            # env: the stack's env plus the worker's settings
    pool.start(4); pool.kill(); pool.start(4); pool.churn(0.25)

Everything here blocks (a restart waits until the part answers); async code runs it with
`asyncio.to_thread`. The processes are devstack's parts, so `devstack.stop(root)` stops them all.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from devtools import devstack

SERVERS = devstack.SERVER_PARTS  # temporal, postgres, seaweed
WORKER_PREFIX = "worker-pool-"


class Outages:
    """Stops and restarts the servers of the stack started under `root`."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = dict(env)

    def stop(self, part: str, crash: bool = False) -> None:
        """Stops `part` (PostgreSQL with a fast shutdown); `crash` kills it with SIGKILL instead."""
        _check_server(part)
        devstack.stop_part(self.root, part, signal.SIGKILL if crash else None)

    def restart(self, part: str) -> None:
        """Starts `part` again on its data and port, and waits until it answers."""
        _check_server(part)
        devstack.restart_part(self.root, part, self.env)

    def is_up(self, part: str) -> bool:
        """Whether `part` answers requests now."""
        _check_server(part)
        return devstack.answers(part, self.env)

    @contextlib.contextmanager
    def down(self, part: str, crash: bool = False) -> Iterator[None]:
        """`part` is stopped inside the block and running again after it, whatever the block raised."""
        self.stop(part, crash)
        try:
            yield
        finally:
            self.restart(part)


def _check_server(part: str) -> None:
    if part not in SERVERS:
        raise ValueError(f"unknown part {part!r}; outages stop one of {', '.join(SERVERS)}")


class WorkerPool:
    """`python worker.py` processes with the settings of `env`, started, SIGKILLed and replaced."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        # Workers run on the stack's stand-in, never with a real key.
        self.env = {key: value for key, value in {**os.environ, **env}.items() if key != "ANTHROPIC_API_KEY"}
        self._started = 0
        self._lock = threading.Lock()

    def running(self) -> dict[str, int]:
        """The pool's workers that run now, by name, with their pids."""
        names = [f"{WORKER_PREFIX}{number}" for number in range(1, self._started + 1)]
        return devstack.running_parts(self.root, names)

    def start(self, count: int) -> list[int]:
        """Starts `count` workers and waits until each polls its task queue; returns their pids."""
        with self._lock:
            first = self._started + 1
            self._started += count
        return [devstack.start_worker(self.root, self.env, f"{WORKER_PREFIX}{n}") for n in range(first, first + count)]

    def kill(self, count: int | None = None) -> list[int]:
        """SIGKILLs `count` running workers, the oldest first (all of them by default); returns their pids."""
        victims = list(self.running().items())[:count]
        for name, _pid in victims:
            devstack.stop_part(self.root, name, signal.SIGKILL)
        return [pid for _name, pid in victims]

    def churn(self, share: float) -> tuple[list[int], list[int]]:
        """Replaces `share` of the running workers (at least one): SIGKILL, then as many new ones."""
        count = max(1, math.ceil(share * len(self.running())))
        killed = self.kill(count)
        return killed, self.start(len(killed))

    def stop(self) -> None:
        """Stops every worker of the pool gracefully."""
        for name in self.running():
            devstack.stop_part(self.root, name)
