"""Benchmark: `launch --dry-run` of a job of about 10,000 items (every persona, arc and topic of
the sample catalog x samples) on an isolated local stack with the Claude stand-in. Measures the
estimate's wall time and count_tokens calls at the default cap (ESTIMATE_MAX_TOKEN_COUNTS), and
how far its input tokens are from counting every distinct prompt.

    .venv/bin/python -m bench.estimate_10k [--samples 156]

Writes bench/results/estimate_10k.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.results_file import save_result
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from devtools import devstack, sample_catalog
from devtools.standin_control import StandinControl
from models.enums import Tier
from service.batches import LaunchRequest
from service.estimate import JobEstimate, estimate_job


async def _timed_estimate(settings: Settings, request: LaunchRequest) -> tuple[JobEstimate, float, int]:
    assert settings.anthropic_base_url is not None
    control = StandinControl(settings.anthropic_base_url)
    await control.reset()
    engine = create_engine(settings)
    try:
        async with create_claude_client(settings) as claude:
            started = time.monotonic()
            estimate = await estimate_job(create_sessionmaker(engine), claude, settings, request)
            wall_s = time.monotonic() - started
    finally:
        await engine.dispose()
    return estimate, wall_s, (await control.stats())["token_counts"]


async def run(samples: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-estimate-bench-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        request = LaunchRequest(
            personas=[p[0] for p in sample_catalog.PERSONAS],
            arcs=[a[0] for a in sample_catalog.EMOTIONAL_ARCS],
            topics=[t[0] for t in sample_catalog.TRAINING_TOPICS],
            tier=Tier.TEMPLATE,
            samples=samples,
        )
        capped = devstack.standin_settings(env)
        estimate, wall_s, calls = await _timed_estimate(capped, request)
        every = devstack.standin_settings(env, estimate_max_token_counts=10_000)
        exact, exact_wall_s, exact_calls = await _timed_estimate(every, request)
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "items": estimate.items,
        "distinct_prompts": estimate.distinct_prompts,
        "templates": estimate.templates,
        "capped": {
            "estimate_max_token_counts": capped.estimate_max_token_counts,
            "wall_time_s": round(wall_s, 2),
            "count_tokens_calls": calls,
            "input_tokens": estimate.input_tokens,
            "estimated_cost_usd": estimate.estimated_cost_usd,
        },
        "every_prompt_counted": {
            "wall_time_s": round(exact_wall_s, 2),
            "count_tokens_calls": exact_calls,
            "input_tokens": exact.input_tokens,
            "estimated_cost_usd": exact.estimated_cost_usd,
        },
        "input_tokens_error_of_capped": round(abs(estimate.input_tokens - exact.input_tokens) / exact.input_tokens, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=156, help="samples per combination (64 combinations)")
    save_result("estimate_10k", asyncio.run(run(parser.parse_args().samples)))


if __name__ == "__main__":
    main()
