"""`status` says when a job's template is too short for the model to cache (the real API caches
nothing under a model's minimum, without an error)."""

from __future__ import annotations

import uuid

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.model_traits import estimated_tokens, traits_of
from brightrun.settings import Settings
from devtools.load_catalog import catalog_id
from devtools.sample_catalog import SYSTEM_TEXT
from models.enums import Tier
from models.tables import PromptTemplate
from service import batches

SHORT_SYSTEM = "You write training conversations as one JSON object. " * 18  # 238 tokens, like the old sample


def one_job(tier: Tier, template: str | None = None) -> batches.LaunchRequest:
    return batches.LaunchRequest(
        personas=["David Chen"], arcs=["Couple Conflict -> Alignment"], topics=["Essential Estate Planning"],
        tier=tier, template=template,
    )


async def short_template(sessions: async_sessionmaker) -> tuple[uuid.UUID, str]:
    """An active edge-case template of an arc type no arc has, so auto-selection never picks it."""
    template_id, name = uuid.uuid4(), f"short instructions {uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            insert(PromptTemplate).values(
                id=template_id, name=name, tier=Tier.EDGE_CASE.value, arc_type=f"nobody-{template_id}",
                system_text=SHORT_SYSTEM, template_text="Persona: {persona_name}", version=1, is_active=True,
            )
        )
    return template_id, name


async def test_a_job_whose_template_is_under_the_models_minimum_says_so(sessions: async_sessionmaker) -> None:
    template_id, name = await short_template(sessions)
    job_id, _ = await batches.create_job(sessions, one_job(Tier.EDGE_CASE, str(template_id)))

    status = await batches.job_status(sessions, str(job_id), claude_model="claude-sonnet-4-6")
    on_opus_5 = await batches.job_status(sessions, str(job_id), claude_model="claude-opus-5")  # caches from 512

    [too_short] = status.as_json()["templates_too_short_to_cache"]
    assert too_short == {
        "template_id": str(template_id), "name": name, "version": 1, "system_tokens": estimated_tokens(SHORT_SYSTEM),
        "model": "claude-sonnet-4-6", "model_min_tokens": 1024,
    }
    assert status.templates_too_short_to_cache is not None
    assert status.templates_too_short_to_cache[0].summary == (
        f"template {name!r} (v1): its system text is about 238 tokens, under the 1024 that claude-sonnet-4-6 "
        "caches from, so no call of this job is cached"
    )
    assert on_opus_5.templates_too_short_to_cache is not None  # 238 < 512 too


async def test_an_auto_selected_sample_template_is_long_enough_unless_the_model_needs_more(
    sessions: async_sessionmaker,
) -> None:
    job_id, _ = await batches.create_job(sessions, one_job(Tier.SCENARIO))

    default_model = await batches.job_status(sessions, str(job_id), claude_model=Settings().claude_model)
    haiku = await batches.job_status(sessions, str(job_id), claude_model="claude-haiku-4-5")  # caches from 4,096

    assert "templates_too_short_to_cache" not in default_model.as_json()
    assert haiku.templates_too_short_to_cache is not None
    assert [t.template_id for t in haiku.templates_too_short_to_cache] == [
        catalog_id("template", "scenario - conflict_resolution")
    ]


def test_the_sample_instructions_are_long_enough_for_the_default_model_to_cache() -> None:
    assert estimated_tokens(SYSTEM_TEXT) >= traits_of(Settings().claude_model).cache_min_tokens
