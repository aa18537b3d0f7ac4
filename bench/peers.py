"""Benchmark: this engine against a plain asyncio script (the anthropic SDK and a pacer) and
bespokelabs curator, sending the same N requests to the same stand-in at the same calls/min,
first with no account limit at the stand-in, then with one below ours (429 with retry-after).
Curator runs from its own virtual environment, .peers-venv/, made here on first use (pinned;
never a dependency of the product).

    .venv/bin/python -m bench.peers [--requests 240] [--account-limit-requests 60] [--calls-per-minute 120] \
        [--pace claude|instant] [--latency-ms 0] [--standin-rpm 40]

240 requests at 120/min make a two-minute run; under the 40/min account limit, 60 requests
already take each system over a minute and a half.

Writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import psutil

from bench.rate_limit import engine_settings, run_phase
from bench.results_file import save_result
from brightrun.settings import Settings
from devtools import devstack
from devtools.standin import PACES, pace_config
from devtools.standin_control import StandinControl

REPO = Path(__file__).resolve().parent.parent
CURATOR = "bespokelabs-curator==0.1.31"
CURATOR_VENV = REPO / ".peers-venv"


def curator_python() -> Path:
    python = CURATOR_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CURATOR_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", CURATOR], check=True)
    return python


async def curator_run(settings: Settings, requests: int, calls_per_minute: float) -> float:
    if settings.anthropic_base_url is None:
        raise ValueError("the peers run against the stand-in, and ANTHROPIC_BASE_URL is unset")
    runner = await asyncio.create_subprocess_exec(
        str(curator_python()), str(REPO / "bench" / "curator_peer.py"),
        settings.anthropic_base_url, str(requests), str(int(calls_per_minute)), settings.claude_model,
        stdout=asyncio.subprocess.PIPE, cwd=tempfile.mkdtemp(prefix="curator-run-"),
    )  # fmt: skip
    out, _ = await runner.communicate()
    if runner.returncode:
        raise RuntimeError(f"curator exited with {runner.returncode}")
    return float(out.decode().strip().splitlines()[-1])


async def plain_script(settings: Settings, requests: int, calls_per_minute: float) -> float:
    """What a person writes in 40 lines: one task per request, started on a fixed clock."""
    client = anthropic.AsyncAnthropic(base_url=settings.anthropic_base_url, api_key="standin", max_retries=2)
    interval = 60 / calls_per_minute
    started = time.monotonic()

    async def one(n: int) -> None:
        await asyncio.sleep(n * interval)
        with contextlib.suppress(anthropic.APIError):  # counted by the stand-in's log
            await client.messages.create(
                model=settings.claude_model,
                max_tokens=2048,
                system="You write training conversations as JSON.",
                messages=[{"role": "user", "content": f"Write conversation {n} as JSON."}],
                extra_headers={"x-brightrun-item": f"plain-{n}"},
            )

    await asyncio.gather(*(one(n) for n in range(requests)))
    await client.close()
    return time.monotonic() - started


def temporal_server_cpu_s(root: Path) -> float:
    """CPU seconds the stack's Temporal server has used so far."""
    cpu = psutil.Process(devstack.running_parts(root, ["temporal"])["temporal"]).cpu_times()
    return cpu.user + cpu.system


def summary(stats: dict, wall_s: float, calls_per_minute: float) -> dict:
    times = sorted(entry["at"] for entry in stats["log"])
    ok = sorted(entry["at"] for entry in stats["log"] if entry["outcome"] == "ok")
    rate = len(ok) / (wall_s / 60)
    return {
        "wall_time_s": round(wall_s, 1),
        "requests": stats["requests"],
        "successes": len(ok),
        "by_outcome": stats["by_outcome"],
        "requests_per_minute_over_run": round(rate, 1),
        "share_of_limit": round(rate / calls_per_minute, 3),
        "busiest_60s_window_requests": max(sum(1 for t in times if s <= t < s + 60) for s in times),
        "rate_limit_429s": sum(n for outcome, n in stats["by_outcome"].items() if outcome.startswith("429")),
    }


async def measure(
    requests: int, account_limit_requests: int, calls_per_minute: float, pace: str, latency_ms: int, standin_rpm: int
) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-peers-"))
    results: dict = {}
    try:
        env = devstack.start(devstack.isolated_config(root))
        standin = StandinControl(env["ANTHROPIC_BASE_URL"])
        for phase, config, n in (
            ("no_account_limit", pace_config(pace, latency_ms), requests),
            ("account_limit", {**pace_config(pace, latency_ms), "rpm_limit": standin_rpm}, account_limit_requests),
        ):
            settings = engine_settings(env, calls_per_minute)  # fresh task queues for each phase
            server_cpu_before = temporal_server_cpu_s(root)
            engine = await run_phase(settings, standin, config, samples=n)
            engine_summary = {
                **summary(await standin.stats(), engine["wall_time_s"], calls_per_minute),
                "first_call_after_launch_s": engine["first_call_after_launch_s"],
                "end_after_last_call_s": engine["end_after_last_call_s"],
                "worker_cpu_s_per_item": engine["worker_cpu_s_per_item"],
                "temporal_server_cpu_s_per_item": round((temporal_server_cpu_s(root) - server_cpu_before) / n, 3),
            }
            await standin.reset()
            await standin.configure(**config)
            plain_wall = await plain_script(settings, n, calls_per_minute)
            plain_summary = summary(await standin.stats(), plain_wall, calls_per_minute)
            await standin.reset()
            await standin.configure(**config)
            curator_wall = await curator_run(settings, n, calls_per_minute)
            results[phase] = {
                "requests": n,
                "standin": config,
                "engine": engine_summary,
                "plain_asyncio_script": plain_summary,
                CURATOR: summary(await standin.stats(), curator_wall, calls_per_minute),
            }
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "calls_per_minute_setting": calls_per_minute,
        "standin_pace": pace,
        "standin_latency_ms": latency_ms,
        "standin_account_rpm": standin_rpm,
        **results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--account-limit-requests", type=int, default=60)
    parser.add_argument("--calls-per-minute", type=float, default=120)
    parser.add_argument("--pace", choices=sorted(PACES), default="claude", help="how fast the stand-in answers")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every answer")
    parser.add_argument("--standin-rpm", type=int, default=40)
    args = parser.parse_args()
    save_result("peers", asyncio.run(
        measure(args.requests, args.account_limit_requests, args.calls_per_minute, args.pace, args.latency_ms, args.standin_rpm)
    ))
