"""Claude as judge: a rubric (a versioned file of the catalog), the tool the judge must call to
give its verdict, and the verdict as the engine accepts it.

Structured output comes from a forced tool call (`tool_choice` names the tool): the model's
answer is the tool's input, a JSON object shaped by the tool's input_schema. The schema is not
a guarantee (a model may still leave a criterion out, or score one 0 or 6), so every verdict is
validated here, and one that fails is repaired once, as a generation is (docs/judge.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

VERDICT_TOOL = "record_verdict"
MIN_SCORE, MAX_SCORE = 1, 5
# A reason is one sentence: longer ones cost output tokens and are not read in a review list.
MAX_REASON_CHARS = 400


class RubricCriterion(BaseModel):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{1,49}$")  # the verdict's field and the CLI's name for it
    name: str
    description: str
    weight: float = Field(gt=0)
    # What a 1, 3 and 5 look like (keys "1".."5"; the ones given): how the judge calibrates.
    anchors: dict[str, str] = Field(default_factory=dict)


class AnchorExample(BaseModel):
    """A few-shot anchor: an excerpt and the verdict it earned, criterion by criterion."""

    title: str
    excerpt: str
    scores: dict[str, int]
    reasons: dict[str, str]


class Rubric(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,99}$")
    version: int = Field(ge=1)
    instructions: str
    criteria: list[RubricCriterion] = Field(min_length=1)
    examples: list[AnchorExample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _examples_score_every_criterion(self) -> Rubric:
        keys = [c.key for c in self.criteria]
        if len(set(keys)) != len(keys):
            raise ValueError("criterion keys must be unique")
        for example in self.examples:
            if set(example.scores) != set(keys) or set(example.reasons) != set(keys):
                raise ValueError(f"example {example.title!r} must score and explain every criterion: {', '.join(keys)}")
        return self

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def overall(self, scores: dict[str, int]) -> float:
        """The overall score: the criteria's scores weighted by the rubric, two decimals."""
        total = sum(c.weight for c in self.criteria)
        return round(sum(scores[c.key] * c.weight for c in self.criteria) / total, 2)

    def system_text(self) -> str:
        """The judge's instructions: the whole rubric, the same for every conversation of a job,
        so it is the cached prefix of every judge call (long enough for the judge model's cache
        minimum: tests/test_judge.py checks it)."""
        parts = [self.instructions.strip(), "", f"# Rubric: {self.label}", ""]
        for criterion in self.criteria:
            parts += [f"## {criterion.name} (`{criterion.key}`, weight {criterion.weight:g})", criterion.description.strip()]
            parts += [f"- Score {score}: {text.strip()}" for score, text in sorted(criterion.anchors.items())]
            parts.append("")
        if self.examples:
            parts += ["# Anchors: conversations already scored", ""]
        for example in self.examples:
            parts += [f"## {example.title}", example.excerpt.strip(), "", "Verdict:"]
            parts += [f"- {key}: {example.scores[key]}. {example.reasons[key]}" for key in self.criterion_keys]
            parts.append("")
        parts.append(
            f"Give your verdict by calling the `{VERDICT_TOOL}` tool once, with a score from {MIN_SCORE} to "
            f"{MAX_SCORE} and a one-sentence reason for every criterion."
        )
        return "\n".join(parts)

    @property
    def criterion_keys(self) -> list[str]:
        return [c.key for c in self.criteria]

    def verdict_tool(self) -> dict[str, Any]:
        """The tool whose input is the verdict: one object per criterion, all required."""
        criterion_schema = {
            "type": "object",
            "properties": {
                "score": {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
                "reason": {"type": "string", "description": "One sentence: why this score."},
            },
            "required": ["score", "reason"],
        }
        return {
            "name": VERDICT_TOOL,
            "description": "Record the verdict on the conversation: a score and a one-sentence reason per criterion.",
            "input_schema": {
                "type": "object",
                "properties": {c.key: {**criterion_schema, "description": c.name} for c in self.criteria},
                "required": self.criterion_keys,
            },
        }


class CriterionVerdict(BaseModel):
    score: int = Field(ge=MIN_SCORE, le=MAX_SCORE, strict=True)
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, reason: str) -> str:
        if not reason.strip():
            raise ValueError("the reason is blank")
        return reason.strip()


class Verdict(BaseModel):
    """A validated verdict: every criterion of its rubric scored and explained, and the overall
    score the rubric's weights give (the model is not asked for it: it is arithmetic)."""

    rubric_name: str
    rubric_version: int
    criteria: dict[str, CriterionVerdict]
    overall: float

    @property
    def scores(self) -> dict[str, int]:
        return {key: c.score for key, c in self.criteria.items()}


class VerdictProblem(ValueError):
    """Why the judge's answer is no verdict: said to the model in the repair, and on the item."""


def parse_verdict(rubric: Rubric, tool_input: Any) -> Verdict:
    """The verdict in the tool's input, validated against the rubric, or VerdictProblem."""
    if not isinstance(tool_input, dict):
        raise VerdictProblem(f"the {VERDICT_TOOL} input must be a JSON object")
    keys = rubric.criterion_keys
    missing = [k for k in keys if k not in tool_input]
    unknown = [k for k in tool_input if k not in keys]
    if missing or unknown:
        said = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
        raise VerdictProblem(f"the verdict must score exactly {', '.join(keys)}: {'; '.join(s for s in said if s)}")
    criteria = {}
    for key in keys:
        try:
            criteria[key] = CriterionVerdict.model_validate(tool_input[key])
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())
            raise VerdictProblem(f"{key}: {problems}") from None
    return Verdict(
        rubric_name=rubric.name,
        rubric_version=rubric.version,
        criteria=criteria,
        overall=rubric.overall({k: c.score for k, c in criteria.items()}),
    )


def verdict_tool_input(message: dict[str, Any]) -> Any:
    """The input of the reply's verdict tool call; VerdictProblem when it made none."""
    for block in message.get("content", []):
        if block.get("type") == "tool_use" and block.get("name") == VERDICT_TOOL:
            return block.get("input")
    if message.get("stop_reason") == "max_tokens":
        raise VerdictProblem("the reply was cut off at max_tokens before its verdict was complete")
    raise VerdictProblem(f"the reply did not call the {VERDICT_TOOL} tool")


def load_rubric_file(path: Path) -> Rubric:
    return Rubric.model_validate(json.loads(path.read_text()))


def transcript(document: dict[str, Any]) -> str:
    """A stored conversation as the judge reads it: its title and metadata, then each turn."""
    metadata = document.get("metadata") or {}
    lines = [f"Title: {document.get('title', '')}"]
    lines += [f"{label}: {metadata[field]}" for field, label in _METADATA_LINES if metadata.get(field)]
    lines.append("")
    for turn in document.get("turns", []):
        speaker = "Client" if turn.get("role") == "user" else "Advisor"
        lines += [f"{speaker}: {turn.get('content', '')}", ""]
    return "\n".join(lines).strip()


_METADATA_LINES = (
    ("persona", "Persona"),
    ("emotional_arc", "Emotional arc"),
    ("training_topic", "Training topic"),
    ("tier", "Tier"),
)
