"""Template selection and resolution on the real catalog (the old system's failure 2)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import TEMPLATE_NOT_FOUND, UNKNOWN_PLACEHOLDER
from activities.templates import TemplateActivities
from brightrun.storage import Storage
from devtools.load_catalog import catalog_id
from models.enums import Tier
from models.messages import NIL_UUID, ResolvePromptInput, SelectedTemplate, SelectTemplateInput
from models.tables import PromptTemplate

COUPLE_CONFLICT = catalog_id("arc", "Couple Conflict -> Alignment")
GRIEF = catalog_id("arc", "Grief -> Acceptance")


@pytest.fixture
def templates(sessions: async_sessionmaker, storage: Storage) -> TemplateActivities:
    return TemplateActivities(sessions, storage)


async def resolved_text(templates: TemplateActivities, storage: Storage, request: ResolvePromptInput) -> dict[str, str]:
    """The system and user text an item's prompt resolves to, read where the step stored it."""
    conversation = request.model_copy(update={"user_id": "templates-test", "conversation_id": uuid.uuid4()})
    prompt = await ActivityEnvironment().run(templates.resolve_template, conversation)
    assert prompt.text_key is not None and prompt.system == prompt.user == "", "the text is not in the result"
    text: dict[str, str] = json.loads(await storage.get_bytes(storage.conversation_bucket, prompt.text_key))
    return text


async def select(templates: TemplateActivities, template_id: uuid.UUID | None, arc: uuid.UUID, tier: Tier) -> SelectedTemplate:
    request = SelectTemplateInput(template_id=template_id, emotional_arc_id=arc, tier=tier)
    return await ActivityEnvironment().run(templates.select_template, request)


@pytest.mark.parametrize("template_id", [NIL_UUID, None])
async def test_nil_or_no_template_selects_the_one_written_for_the_arc_type(
    templates: TemplateActivities, template_id: uuid.UUID | None
) -> None:
    selected = await select(templates, template_id, COUPLE_CONFLICT, Tier.SCENARIO)
    assert selected.auto_selected
    assert selected.template_id == catalog_id("template", "scenario - conflict_resolution")


async def test_an_arc_type_without_its_own_template_falls_back_to_the_tier(templates: TemplateActivities) -> None:
    selected = await select(templates, NIL_UUID, GRIEF, Tier.TEMPLATE)
    assert selected.template_id == catalog_id("template", "template - general")


async def test_an_explicit_template_is_kept(templates: TemplateActivities) -> None:
    explicit = catalog_id("template", "template - anxiety_to_confidence")
    selected = await select(templates, explicit, COUPLE_CONFLICT, Tier.TEMPLATE)
    assert (selected.template_id, selected.auto_selected) == (explicit, False)


@pytest.fixture
async def no_edge_case_templates(sessions: async_sessionmaker) -> AsyncIterator[None]:
    async with sessions.begin() as session:
        await session.execute(update(PromptTemplate).where(PromptTemplate.tier == "edge_case").values(is_active=False))
    yield
    async with sessions.begin() as session:
        await session.execute(update(PromptTemplate).where(PromptTemplate.tier == "edge_case").values(is_active=True))


@pytest.mark.usefixtures("no_edge_case_templates")
async def test_no_match_fails_for_good_naming_the_arc_type_and_tier(templates: TemplateActivities) -> None:
    with pytest.raises(ApplicationError) as failure:
        await select(templates, NIL_UUID, COUPLE_CONFLICT, Tier.EDGE_CASE)
    assert failure.value.non_retryable
    assert failure.value.type == TEMPLATE_NOT_FOUND
    assert "'conflict_resolution'" in failure.value.message and "'edge_case'" in failure.value.message


async def test_resolution_fills_every_placeholder(templates: TemplateActivities, storage: Storage) -> None:
    prompt = await resolved_text(
        templates,
        storage,
        ResolvePromptInput(
            template_id=catalog_id("template", "template - conflict_resolution"),
            persona_id=catalog_id("persona", "David Chen"),
            emotional_arc_id=COUPLE_CONFLICT,
            training_topic_id=catalog_id("topic", "Essential Estate Planning"),
            tier=Tier.TEMPLATE,
        ),
    )
    assert "Persona: David Chen" in prompt["user"]
    assert "Emotional arc: Couple Conflict -> Alignment" in prompt["user"]
    assert "Training topic: Essential Estate Planning" in prompt["user"]
    assert "{" not in prompt["user"] and "}" not in prompt["user"]
    assert prompt["system"].startswith("You write training conversations")


@pytest.fixture
async def template_with_unknown_placeholder(sessions: async_sessionmaker) -> AsyncIterator[uuid.UUID]:
    async with sessions.begin() as session:
        template = PromptTemplate(
            name=f"broken {uuid.uuid4()}", tier="template", system_text="s",
            template_text="Persona: {persona_name}, budget {monthly_budget}", is_active=False,
        )
        session.add(template)
    yield template.id
    async with sessions.begin() as session:
        await session.delete(await session.get(PromptTemplate, template.id))


async def test_an_unknown_placeholder_fails_for_good_and_names_it(
    templates: TemplateActivities, template_with_unknown_placeholder: uuid.UUID
) -> None:
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(
            templates.resolve_template,
            ResolvePromptInput(
                template_id=template_with_unknown_placeholder,
                persona_id=catalog_id("persona", "David Chen"),
                emotional_arc_id=COUPLE_CONFLICT,
                training_topic_id=catalog_id("topic", "Essential Estate Planning"),
                tier=Tier.TEMPLATE,
            ),
        )
    assert failure.value.non_retryable and failure.value.type == UNKNOWN_PLACEHOLDER
    assert "{monthly_budget}" in failure.value.message


async def test_each_further_sample_gets_its_own_prompt(templates: TemplateActivities, storage: Storage) -> None:
    def request(sample: int) -> ResolvePromptInput:
        return ResolvePromptInput(
            template_id=catalog_id("template", "template - conflict_resolution"),
            persona_id=catalog_id("persona", "David Chen"),
            emotional_arc_id=COUPLE_CONFLICT,
            training_topic_id=catalog_id("topic", "Essential Estate Planning"),
            tier=Tier.TEMPLATE,
            sample=sample,
        )

    prompts = [(await resolved_text(templates, storage, request(n)))["user"] for n in (1, 2, 3)]

    assert len(set(prompts)) == 3
    assert "sample" not in prompts[0], "the first sample keeps the template's text"
    assert "This is sample 3 of this combination" in prompts[2]
