"""The stand-in as judge: a request that forces a tool (`tool_choice` names it), or offers a single
one (`auto`, which a model that thinks must use), is answered with one call of that tool (after
its thinking, for a model that thinks and was not forced), whose input is a verdict on the conversation in the request's first user
message: a score and a reason for every criterion the tool's input_schema requires.

Scores are deterministic, from the conversation's text, so tests can assert them: a line
`judge-score: N` in the text scores every criterion N, `judge-score <criterion>: N` scores one;
otherwise each criterion scores 3, 4 or 5 by a hash of the criterion and the text. Faults spoil
the verdict as a model might: `malformed` leaves a criterion out and gives another a score that
is not a number, `out_of_range` scores a criterion 7, `truncated` cuts the call off at
max_tokens with an empty input."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

OUT_OF_RANGE = "out_of_range"
# The system prompt the API adds to a request with tools when tool_choice forces a tool (`any` or
# `tool`): input tokens of its own, documented per model (313 for the Claude 4 models).
FORCED_TOOL_SYSTEM_PROMPT_TOKENS = 313
VERDICT_FAULTS = (OUT_OF_RANGE,)
_EVERY_CRITERION = re.compile(r"judge-score:\s*([1-5])\b", re.IGNORECASE)


def called_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool the reply calls: the one tool_choice forces, else the only one offered."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice: Any = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if kind == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    return tools[0] if len(tools) == 1 and kind in ("auto", "any") else None


def forced(body: dict[str, Any]) -> bool:
    choice = body.get("tool_choice")
    return isinstance(choice, dict) and choice.get("type") in ("tool", "any")


def judged_text(body: dict[str, Any]) -> str:
    """The conversation the judge reads: the first user message's text."""
    content = body["messages"][0].get("content")
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))


def stand_in_scores(criteria: list[str], text: str) -> dict[str, int]:
    """What the stand-in scores each criterion of a conversation's text."""
    every = _EVERY_CRITERION.search(text)
    scores = {}
    for key in criteria:
        one = re.search(rf"judge-score\s+{re.escape(key)}:\s*([1-5])\b", text, re.IGNORECASE)
        if one:
            scores[key] = int(one.group(1))
        elif every:
            scores[key] = int(every.group(1))
        else:
            scores[key] = 3 + int(hashlib.sha256(f"{key}\n{text}".encode()).hexdigest()[:8], 16) % 3
    return scores


def verdict_block(tool: dict[str, Any], body: dict[str, Any], outcome: str) -> tuple[dict[str, Any], str]:
    """The tool call that answers a judge request, and its stop reason."""
    criteria = list(tool.get("input_schema", {}).get("required", []))
    scores = stand_in_scores(criteria, judged_text(body))
    verdict: dict[str, Any] = {
        key: {"score": score, "reason": f"The stand-in scored {key.replace('_', ' ')} {score} from the conversation's text."}
        for key, score in scores.items()
    }
    stop_reason = "tool_use"
    if outcome == "malformed" and criteria:
        verdict.pop(criteria[-1])
        if len(criteria) > 1:
            verdict[criteria[0]]["score"] = "high"
    elif outcome == OUT_OF_RANGE and criteria:
        verdict[criteria[0]]["score"] = 7
    elif outcome == "truncated":
        verdict, stop_reason = {}, "max_tokens"
    block = {"type": "tool_use", "id": f"toolu_standin_{uuid.uuid4().hex[:24]}", "name": tool["name"], "input": verdict}
    return block, stop_reason


def tools_tokens(body: dict[str, Any]) -> int:
    """The input tokens a request's tools cost: their definitions and the tool-use system prompt.
    They come first in the prompt, so a cache breakpoint in the system text caches them too."""
    tools = body.get("tools")
    if not tools:
        return 0
    return max(1, len(json.dumps(tools)) // 4) + FORCED_TOOL_SYSTEM_PROMPT_TOKENS


def block_text(block: dict[str, Any]) -> str:
    """What a content block's tokens are counted from."""
    if block["type"] == "tool_use":
        return json.dumps(block["input"])
    return block.get("thinking") or block.get("text", "")
