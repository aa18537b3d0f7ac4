"""Load the sample catalog (idempotently).

    python -m devtools.load_catalog [--without-rubrics]

Catalog ids derive from the names (uuid5), so every machine and every reload gives the same ids.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import get_settings
from devtools import sample_catalog
from models.judge import Rubric, load_rubric_file
from models.tables import EmotionalArc, JudgeRubric, Persona, PromptTemplate, TrainingTopic

_NAMESPACE = uuid.UUID("6f1c2a52-1f0e-4a5e-9c61-0b7d3c8f2a10")
# The judge's rubrics, a file per version: <name>.v<version>.json (docs/judge.md).
RUBRICS_DIR = Path(__file__).with_name("rubrics")


def catalog_rubrics() -> list[Rubric]:
    return [load_rubric_file(path) for path in sorted(RUBRICS_DIR.glob("*.json"))]


def catalog_id(kind: str, name: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{name}")


async def _upsert(session: AsyncSession, table: type, rows: list[dict[str, Any]], key: list[str]) -> None:
    statement = insert(table).values(rows)
    updated = {column: statement.excluded[column] for column in rows[0] if column not in (*key, "id")}
    await session.execute(statement.on_conflict_do_update(index_elements=key, set_=updated))


async def load_sample_catalog(sessions: async_sessionmaker, rubrics: bool = True) -> dict[str, int]:
    """The sample catalog; `rubrics=False` leaves the judge's rubrics out (for a database whose
    schema predates them: tests of old migrations)."""
    templates = sample_catalog.PROMPT_TEMPLATES
    async with sessions.begin() as session:
        await _upsert(
            session,
            Persona,
            [{"id": catalog_id("persona", n), "name": n, "description": d} for n, d in sample_catalog.PERSONAS],
            ["name"],
        )
        await _upsert(
            session,
            EmotionalArc,
            [
                {"id": catalog_id("arc", n), "name": n, "arc_type": t, "description": d}
                for n, t, d in sample_catalog.EMOTIONAL_ARCS
            ],
            ["name"],
        )
        await _upsert(
            session,
            TrainingTopic,
            [{"id": catalog_id("topic", n), "name": n, "description": d} for n, d in sample_catalog.TRAINING_TOPICS],
            ["name"],
        )
        await _upsert(
            session,
            PromptTemplate,
            [
                {
                    "id": catalog_id("template", name),
                    "name": name,
                    "tier": tier,
                    "arc_type": arc_type,
                    "system_text": sample_catalog.SYSTEM_TEXT,
                    "template_text": text,
                    "version": 1,
                    "is_active": True,
                }
                for name, tier, arc_type, text in templates
            ],
            ["name", "version"],
        )
        judge_rubrics = catalog_rubrics() if rubrics else []
        if judge_rubrics:
            await _upsert(
                session,
                JudgeRubric,
                [
                    {
                        "id": catalog_id("rubric", rubric.label),
                        "name": rubric.name,
                        "version": rubric.version,
                        "document": rubric.model_dump(mode="json"),
                    }
                    for rubric in judge_rubrics
                ],
                ["name", "version"],
            )
    return {
        "personas": len(sample_catalog.PERSONAS),
        "emotional_arcs": len(sample_catalog.EMOTIONAL_ARCS),
        "training_topics": len(sample_catalog.TRAINING_TOPICS),
        "prompt_templates": len(templates),
        "judge_rubrics": len(judge_rubrics),
    }


async def _load(rubrics: bool) -> None:
    engine = create_engine(get_settings())
    try:
        counts = await load_sample_catalog(create_sessionmaker(engine), rubrics)
    finally:
        await engine.dispose()
    print("catalog loaded: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


if __name__ == "__main__":
    asyncio.run(_load(rubrics="--without-rubrics" not in sys.argv[1:]))
