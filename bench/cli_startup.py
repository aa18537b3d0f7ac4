"""Benchmark: how long the command line takes to answer, as a user runs it after `make up`:
`starter.py --help` and `starter.py status JOB`, each a fresh process, timed from start to exit.
The targets are 0.5 s and 1.0 s on an idle machine; the machine's load average is recorded with
the result, since a loaded machine stretches every run, and so is each run's CPU time (user +
system), which a busy machine stretches far less: it is close to what the run takes when idle.
Where `status` spends its imports is recorded too (`-X importtime`, by top-level package).

A stack of its own (with a worker and the stand-in answering at once) runs one 1-item job first,
so `status` reads a real job from PostgreSQL and Temporal.

    .venv/bin/python -m bench.cli_startup [--runs 7]

Writes bench/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from bench.results_file import save_result
from devtools import devstack

REPO = Path(__file__).resolve().parent.parent
TARGETS_S = {"help": 0.5, "status": 1.0}
JOB_TIMEOUT_S = 120.0


def starter(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "starter.py", *args], check=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_runs(env: Mapping[str, str], args: list[str], runs: int) -> dict[str, list[float]]:
    """Wall seconds of each run, from the process's start to its exit, and its CPU seconds."""
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_before = time.perf_counter(), children_cpu_s()
        starter(env, *args)
        wall.append(round(time.perf_counter() - started, 3))
        cpu.append(round(children_cpu_s() - cpu_before, 3))
    return {"wall_s": wall, "cpu_s": cpu}


def import_ms_by_package(env: Mapping[str, str], args: list[str]) -> dict[str, float]:
    """Where a run's imports spend their time: `python -X importtime`'s self times summed by
    top-level package, largest first (importtime itself slows each import a little)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "starter.py", *args],
        check=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    by_package: dict[str, float] = {}
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(self_us) / 1000
    largest = sorted(by_package.items(), key=lambda item: -item[1])[:12]
    return {"all": round(sum(by_package.values()), 1), **{name: round(ms, 1) for name, ms in largest}}


def finished_job(env: Mapping[str, str]) -> str:
    """A 1-item job, launched and run to its end; its id."""
    launched = json.loads(
        starter(env, "launch", "--persona", "David Chen", "--arc", "Couple Conflict -> Alignment",
                "--topic", "Essential Estate Planning", "--tier", "template", "--json").stdout
    )  # fmt: skip
    job_id = launched["job_id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while json.loads(starter(env, "status", job_id, "--json").stdout)["status"] not in ("completed", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not end within {JOB_TIMEOUT_S:.0f} s")
        time.sleep(1)
    return job_id


def measure(runs: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="cli-startup-stack-"))
    stack = devstack.start(dataclasses.replace(devstack.isolated_config(root), start_worker=True))
    try:
        # What a shell after `make up` has: no addresses of its own, the stack's env file to read.
        env = {key: value for key, value in os.environ.items() if key not in stack and key != "ANTHROPIC_API_KEY"}
        env["BRIGHTRUN_STACK_ENV_FILE"] = str(root / "env")
        job_id = finished_job(env)
        load_before = os.getloadavg()
        commands = {"help": ["--help"], "status": ["status", job_id]}
        measured = {name: timed_runs(env, args, runs) for name, args in commands.items()}
        load_after = os.getloadavg()
        imports = import_ms_by_package(env, commands["status"])
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "runs": runs,
        "targets_s_on_an_idle_machine": TARGETS_S,
        "median_wall_s": {name: statistics.median(runs["wall_s"]) for name, runs in measured.items()},
        "median_cpu_s": {name: statistics.median(runs["cpu_s"]) for name, runs in measured.items()},
        "runs_s": measured,
        "status_import_ms_by_package": imports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs of each command; the median is reported")
    args = parser.parse_args()
    save_result("cli_startup", measure(args.runs))


if __name__ == "__main__":
    main()
