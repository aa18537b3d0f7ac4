"""Template selection and resolution: which prompt an item uses, and its text filled in."""

from __future__ import annotations

import string
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.data_errors import classify_data_errors
from activities.errors import CATALOG_ROW_MISSING, TEMPLATE_NOT_FOUND, UNKNOWN_PLACEHOLDER, permanent
from brightrun.storage import Storage, prompt_key
from models.enums import Tier
from models.messages import NIL_UUID, ResolvedPrompt, ResolvePromptInput, SelectedTemplate, SelectTemplateInput
from models.tables import EmotionalArc, Persona, PromptTemplate, TrainingTopic


def sample_variation(sample: int) -> str:
    """A line that makes each further sample of a combination a different prompt, so its
    conversation differs too; the first sample keeps the template's text as it is."""
    if sample <= 1:
        return ""
    return (
        f"\n\nThis is sample {sample} of this combination: write a conversation that differs "
        "from the other samples in its opening, the situation's details and the turns it takes."
    )


def placeholders_of(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def placeholder_values(persona: Persona, arc: EmotionalArc, topic: TrainingTopic, tier: str) -> dict[str, str]:
    """Everything a template may name in braces, e.g. {persona_name}."""
    return {
        "persona_name": persona.name,
        "persona_description": persona.description,
        "arc_name": arc.name,
        "arc_type": arc.arc_type,
        "arc_description": arc.description,
        "topic_name": topic.name,
        "topic_description": topic.description,
        "tier": tier,
    }


def prompt_text(
    template: PromptTemplate, persona: Persona, arc: EmotionalArc, topic: TrainingTopic, tier: Tier, sample: int
) -> dict[str, str]:
    """The item's prompt: the template's system text, and its user text with the placeholders
    filled and the sample's variation; a non-retryable error for a placeholder nothing fills."""
    values = placeholder_values(persona, arc, topic, tier.value)
    unknown = placeholders_of(template.template_text) - values.keys()
    if unknown:
        raise permanent(
            f"prompt template {template.name!r} (v{template.version}) uses unknown placeholders "
            f"{', '.join(sorted('{' + u + '}' for u in unknown))}; known: {', '.join(sorted(values))}",
            UNKNOWN_PLACEHOLDER,
        )
    return {"system": template.system_text, "user": template.template_text.format_map(values) + sample_variation(sample)}


async def auto_selected_template(session: AsyncSession, arc_type: str, tier: Tier) -> uuid.UUID | None:
    """The template the nil UUID stands for: an active one of the tier written for the arc type,
    else the tier's general one, else any active one of the tier; None when the tier has none."""
    active_of_tier = (
        select(PromptTemplate.id)
        .where(PromptTemplate.tier == tier.value, PromptTemplate.is_active)
        # A general template (no arc type) is the better fallback than another arc's one.
        .order_by(PromptTemplate.arc_type.is_not(None), PromptTemplate.version.desc(), PromptTemplate.name)
        .limit(1)
    )
    template_id = await session.scalar(active_of_tier.where(PromptTemplate.arc_type == arc_type))
    return template_id if template_id is not None else await session.scalar(active_of_tier)


class TemplateActivities:
    def __init__(self, sessions: async_sessionmaker, storage: Storage) -> None:
        self._sessions = sessions
        self._storage = storage

    @activity.defn(name="select_template")
    @classify_data_errors
    async def select_template(self, request: SelectTemplateInput) -> SelectedTemplate:
        async with self._sessions() as session:
            if request.template_id not in (None, NIL_UUID):
                template = await session.get(PromptTemplate, request.template_id)
                if template is None or not template.is_active:
                    raise permanent(f"prompt template {request.template_id} does not exist or is inactive", TEMPLATE_NOT_FOUND)
                return SelectedTemplate(template_id=template.id, auto_selected=False)

            arc = await session.get(EmotionalArc, request.emotional_arc_id)
            if arc is None:
                raise permanent(f"emotional arc {request.emotional_arc_id} no longer exists", CATALOG_ROW_MISSING)
            template_id = await auto_selected_template(session, arc.arc_type, request.tier)
            if template_id is None:
                raise permanent(
                    f"no active prompt template for arc type {arc.arc_type!r} and tier {request.tier.value!r}, "
                    f"and no active template of tier {request.tier.value!r} to fall back on",
                    TEMPLATE_NOT_FOUND,
                )
            return SelectedTemplate(template_id=template_id, auto_selected=True)

    @activity.defn(name="resolve_template")
    @classify_data_errors
    async def resolve_template(self, request: ResolvePromptInput) -> ResolvedPrompt:
        async with self._sessions() as session:
            template = await session.get(PromptTemplate, request.template_id)
            persona = await session.get(Persona, request.persona_id)
            arc = await session.get(EmotionalArc, request.emotional_arc_id)
            topic = await session.get(TrainingTopic, request.training_topic_id)
        missing = [
            f"{kind} {row_id}"
            for kind, row, row_id in (
                ("prompt template", template, request.template_id),
                ("persona", persona, request.persona_id),
                ("emotional arc", arc, request.emotional_arc_id),
                ("training topic", topic, request.training_topic_id),
            )
            if row is None
        ]
        if missing:
            raise permanent(f"catalog rows no longer exist: {', '.join(missing)}", CATALOG_ROW_MISSING)

        text = prompt_text(template, persona, arc, topic, request.tier, request.sample)
        resolved = ResolvedPrompt(
            template_id=template.id,
            template_version=template.version,
            persona_name=persona.name,
            topic_name=topic.name,
        )
        if request.user_id is None or request.conversation_id is None:  # scheduled by a run recorded before
            return resolved.model_copy(update=text)
        # In storage, not in the item's history: a prompt may be many kilobytes, and each item's
        # history would carry it twice (this result and the call's input).
        key = prompt_key(request.user_id, request.conversation_id)
        digest = await self._storage.put_json(self._storage.conversation_bucket, key, text, read_back_soon=True)
        return resolved.model_copy(update={"text_key": key, "text_digest": digest})

