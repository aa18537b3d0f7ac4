"""Benchmark: what Claude as judge costs per conversation next to what generating it cost, online
and in Message Batches mode, with the default models (CLAUDE_MODEL, JUDGE_MODEL) and rubric, on
the real local stack (Temporal dev server, PostgreSQL, SeaweedFS, the stand-in) and the real
API's caching rules as the stand-in imitates them (the rubric and the verdict tool are the cached
prefix, from the judge model's 4,096-token minimum; a batch caches for an hour).

Realistic token counts: the stand-in's own conversations are short (about 400 output tokens), so
every advisor turn gets `--turn-chars` more characters of advisor speech (the default gives
conversations of about 1,800 output tokens: 8-10 turns of 1-5 sentences, as the template asks).
The judge reads the same, longer, conversation: both sides of the ratio grow together.

    .venv/bin/python -m bench.judge [--personas 4] [--turn-chars 1400]

Writes bench/results/judge.json. Target: judge cost <= 10% of generation cost per conversation,
online and in batch mode.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from bench.results_file import save_result
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.sample_catalog import EMOTIONAL_ARCS, PERSONAS, TRAINING_TOPICS
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, Tier
from models.messages import TokenUsage
from models.tables import BatchItem, Conversation
from service import batches
from worker import build_workers

TARGET_SHARE = 0.10
# Advisor speech appended to every advisor turn, repeated to --turn-chars.
ADVISOR_SPEECH = (
    " To put that in context, the first step is simply to write down what you already have, who depends on you, "
    "and which decisions would be hardest for someone else to make without you. Once that is on paper, we can "
    "look at the options one at a time and decide which matters most for your family this year."
)


def _mean_usage(usages: list[TokenUsage]) -> dict[str, float]:
    return {
        field: round(statistics.mean(getattr(u, field) for u in usages), 1)
        for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }


async def run_mode(settings: Settings, standin: StandinControl, mode: DeliveryMode, personas: list[str], suffix: str) -> dict:
    await standin.reset()
    await standin.configure(batch_processing_s=settings.message_batch_poll_initial_s, turn_suffix=suffix)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    client = await connect(settings)
    request = batches.LaunchRequest(
        personas=personas, arcs=[arc[0] for arc in EMOTIONAL_ARCS[:2]], topics=[TRAINING_TOPICS[0][0]],
        tier=Tier.TEMPLATE, concurrency=8, mode=mode, judge=True,
    )
    async with AsyncExitStack() as running:
        for worker in build_workers(client, settings, sessions, Storage(settings), create_claude_client(settings)):
            await running.enter_async_context(worker)
        job = await batches.launch(sessions, client, settings, request)
        await client.get_workflow_handle(job.workflow_id).result()
    status = await batches.job_status(sessions, str(job.job_id), client)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(BatchItem.usage, Conversation.judge_usage)
                .join(Conversation, Conversation.id == BatchItem.conversation_id)
                .where(BatchItem.batch_job_id == job.job_id)
            )
        ).all()
    await engine.dispose()
    generations = [TokenUsage.model_validate(item_usage) for item_usage, _ in rows]
    judgings = [TokenUsage.model_validate(judge_usage) for _, judge_usage in rows]
    shares = [j.cost_usd / g.cost_usd for g, j in zip(generations, judgings, strict=True)]
    # The first conversation of a job writes the rubric to the cache; the others read it.
    return {
        "conversations": len(rows),
        "judged": status.judged,
        "generation_cost_per_conversation_usd": round(statistics.mean(g.cost_usd for g in generations), 8),
        "judge_cost_per_conversation_usd": round(statistics.mean(j.cost_usd for j in judgings), 8),
        "judge_share_mean": round(statistics.mean(shares), 4),
        "judge_share_max": round(max(shares), 4),
        "judge_share_of_job": round(status.judge_cost_usd / (status.cost_usd - status.judge_cost_usd), 4)
        if status.judge_cost_usd is not None else None,
        "generation_tokens_mean": _mean_usage(generations),
        "judge_tokens_mean": _mean_usage(judgings),
        # The target is per conversation on average: the job's judging against its generating.
        "meets_target": status.judge_cost_usd is not None
        and status.judge_cost_usd <= TARGET_SHARE * (status.cost_usd - status.judge_cost_usd),
    }


async def main(personas: int, turn_chars: int, other_judge_models: list[str]) -> dict:
    suffix = (ADVISOR_SPEECH * (turn_chars // len(ADVISOR_SPEECH) + 1))[:turn_chars]
    root = Path(tempfile.mkdtemp(prefix="brightrun-bench-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        settings = devstack.standin_settings(
            env,
            claude_calls_per_minute=6000,
            claude_max_concurrent_calls=16,
            message_batch_gather_s=1.0,
            message_batch_poll_initial_s=2.0,
            message_batch_poll_max_s=4.0,
        )
        standin = StandinControl(env["ANTHROPIC_BASE_URL"])
        chosen = [persona[0] for persona in PERSONAS[:personas]]
        measured = {}
        for judge_model in [settings.judge_model, *other_judge_models]:
            judged_by = settings.model_copy(update={"judge_model": judge_model})
            measured[judge_model] = {
                "online": await run_mode(judged_by, standin, DeliveryMode.ONLINE, chosen, suffix),
                "batch": await run_mode(judged_by, standin, DeliveryMode.BATCH, chosen, suffix),
            }
    finally:
        devstack.stop(root)
    default = measured.pop(settings.judge_model)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "claude_model": settings.claude_model,
        "judge_model": settings.judge_model,
        "rubric": "advisor-conversations v1",
        "turn_chars_added": turn_chars,
        "target_share": TARGET_SHARE,
        **default,
        "other_judge_models": measured,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", type=int, default=4, help="conversations = personas x 2 arcs")
    parser.add_argument("--turn-chars", type=int, default=1400, help="characters added to every advisor turn")
    parser.add_argument("--also-judge-with", action="append", default=[], help="another JUDGE_MODEL to measure")
    args = parser.parse_args()
    save_result("judge", asyncio.run(main(args.personas, args.turn_chars, args.also_judge_with)))
