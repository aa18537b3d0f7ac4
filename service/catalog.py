"""The catalog as the command line lists it: personas, arcs, topics and templates with their ids."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from activities.templates import placeholders_of
from models.tables import EmotionalArc, Persona, PromptTemplate, TrainingTopic


async def list_catalog(sessions: async_sessionmaker) -> dict[str, list[dict[str, Any]]]:
    async with sessions() as session:
        personas = (await session.scalars(select(Persona).order_by(Persona.name))).all()
        arcs = (await session.scalars(select(EmotionalArc).order_by(EmotionalArc.name))).all()
        topics = (await session.scalars(select(TrainingTopic).order_by(TrainingTopic.name))).all()
        templates = (
            await session.scalars(select(PromptTemplate).order_by(PromptTemplate.tier, PromptTemplate.name))
        ).all()
    return {
        "personas": [{"id": str(p.id), "name": p.name} for p in personas],
        "emotional_arcs": [{"id": str(a.id), "name": a.name, "arc_type": a.arc_type} for a in arcs],
        "training_topics": [{"id": str(t.id), "name": t.name} for t in topics],
        "prompt_templates": [
            {
                "id": str(t.id),
                "name": t.name,
                "tier": t.tier,
                "arc_type": t.arc_type,
                "version": t.version,
                "is_active": t.is_active,
                "placeholders": sorted(placeholders_of(t.template_text)),
            }
            for t in templates
        ],
    }
