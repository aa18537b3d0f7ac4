"""Whether a job's prompts can be cached. The API caches a prompt prefix only from the model's
minimum length and says nothing below it: every call then pays the template's instructions at
the full input rate. `status` names such a template."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from activities.templates import auto_selected_template
from brightrun.model_traits import estimated_tokens, traits_of
from models.enums import Tier
from models.messages import NIL_UUID
from models.tables import BatchItem, BatchJob, Conversation, EmotionalArc, PromptTemplate


class TemplateTooShortToCache(BaseModel):
    template_id: uuid.UUID
    name: str
    version: int
    system_tokens: int  # the cached part, the template's system text, at about four characters a token
    model: str
    model_min_tokens: int

    @property
    def summary(self) -> str:
        return (
            f"template {self.name!r} (v{self.version}): its system text is about {self.system_tokens} tokens, "
            f"under the {self.model_min_tokens} that {self.model} caches from, so no call of this job is cached"
        )


async def job_template_ids(session: AsyncSession, job: BatchJob) -> set[uuid.UUID]:
    """The templates the job's items use: the one it was launched with, or for the nil UUID the
    ones its conversations used and the ones auto-selection picks for its arcs now."""
    chosen = uuid.UUID(job.shared_parameters.get("template_id", str(NIL_UUID)))
    if chosen != NIL_UUID:
        return {chosen}
    used = set(
        await session.scalars(select(Conversation.template_id).where(Conversation.batch_job_id == job.id).distinct())
    )
    job_arcs = select(BatchItem.parameters["emotional_arc_id"].astext.cast(UUID(as_uuid=True))).where(
        BatchItem.batch_job_id == job.id
    )
    arc_types = await session.scalars(select(EmotionalArc.arc_type).where(EmotionalArc.id.in_(job_arcs)).distinct())
    for arc_type in arc_types.all():
        template_id = await auto_selected_template(session, arc_type, Tier(job.tier))
        if template_id is not None:
            used.add(template_id)
    return used


async def templates_too_short_to_cache(session: AsyncSession, job: BatchJob, model: str) -> list[TemplateTooShortToCache]:
    """The job's templates whose system text (the cached prefix) is under the model's minimum."""
    min_tokens = traits_of(model).cache_min_tokens
    template_ids = await job_template_ids(session, job)
    templates = await session.scalars(
        select(PromptTemplate).where(PromptTemplate.id.in_(template_ids)).order_by(PromptTemplate.name)
    )
    return [
        TemplateTooShortToCache(
            template_id=template.id,
            name=template.name,
            version=template.version,
            system_tokens=estimated_tokens(template.system_text),
            model=model,
            model_min_tokens=min_tokens,
        )
        for template in templates
        if estimated_tokens(template.system_text) < min_tokens
    ]
