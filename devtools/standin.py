"""The offline Claude stand-in: an HTTP server that speaks the Anthropic Messages API well enough
for the official SDK (non-streaming and streaming), so the whole pipeline runs without an API key.

It answers with a plausible conversation built from the persona, arc, topic and tier lines of
the prompt, with real-looking `usage` (prompt caching included) and rate-limit headers, and it
injects the faults the real API has, so tests drive the real SDK and our retry code over a real
socket. Every response carries `x-brightrun-standin: 1`: a worker records a reply with it as
the stand-in's (placeholder text), whatever API key it has.

    python -m devtools.standin --host 127.0.0.1 --port 8765

Message Batches: devtools/standin_batches.py.

Also POST /v1/messages/count_tokens. Control: POST /_standin/config, POST /_standin/reset,
GET /_standin/stats, GET /_standin/health.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from brightrun.claude_client import STANDIN_HEADER
from brightrun.model_traits import Thinking, estimated_tokens, traits_of
from devtools import standin_batches
from devtools.standin_batches import EXPIRED, MessageBatches, has_api_key
from devtools.standin_judge import VERDICT_FAULTS, block_text, called_tool, forced, tools_tokens, verdict_block

# Injected faults answered with an HTTP error: status, Anthropic error type, message.
ERROR_FAULTS = {
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
    "504": (504, "timeout_error", "Request timed out"),
    "400": (400, "invalid_request_error", "messages: prompt is too long for this model"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "402": (402, "billing_error", "Your credit balance is too low to access the Anthropic API"),
    "403": (403, "permission_error", "Your API key does not have permission to use the specified resource"),
    "404": (404, "not_found_error", "model: not found"),
    # The organization's monthly spend cap: a 429 with no retry-after, told from a rate limit only
    # by error.details.error_code (as the API documents it).
    "429_spend_limit": (429, "rate_limit_error", "You have reached your organization's monthly usage limit"),
}
# Injected faults answered with 200 and a reply our validation must reject: a broken document,
# one cut at max_tokens, a refusal (stop_reason `refusal`, no text), and one cut at the model's
# context window (stop_reason `model_context_window_exceeded`).
REFUSAL = "refusal"
CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"
REPLY_FAULTS = ("malformed", "truncated", REFUSAL, CONTEXT_WINDOW_EXCEEDED)
# Injected faults that break an answer after its HTTP 200, half way through the text: an SSE
# `error` event (what the real API sends when it overloads mid-stream), or the connection closed.
MIDSTREAM_OVERLOADED = "midstream_overloaded"
MIDSTREAM_DROP = "midstream_drop"
MIDSTREAM_FAULTS = (MIDSTREAM_OVERLOADED, MIDSTREAM_DROP)
# error.details.error_code of the error faults that carry one, as the API documents them.
ERROR_CODES = {"429_spend_limit": "enforced_spend_limit_reached"}
# Answered as a proxy in front of the API answers a body too large: HTML, not Anthropic's JSON.
TOO_LARGE_FAULT = "413"
TOO_LARGE_BODY = "<html><head><title>413 Request Entity Too Large</title></head><body>Request Entity Too Large</body></html>"
# `expired` applies to requests inside Message Batches; an online request that draws it is answered.
# A judge request's verdict can also be spoiled with a score out of range (devtools/standin_judge.py).
FAULTS = (*ERROR_FAULTS, TOO_LARGE_FAULT, *REPLY_FAULTS, *VERDICT_FAULTS, *MIDSTREAM_FAULTS, EXPIRED)

PROMPT_LINES = {  # metadata field -> (prompt line label, value when the line is missing)
    "persona": ("persona", "Unknown persona"),
    "emotional_arc": ("emotional arc", "Unknown arc"),
    "training_topic": ("training topic", "Unknown topic"),
    "tier": ("tier", "Unknown tier"),
}

RATE_WINDOW_S = 60.0
# The largest request body the API takes: a Message Batch's create, 256 MB (aiohttp's default,
# 1 MiB, refused a batch of 300 requests with the sample prompt as 413).
MAX_REQUEST_BYTES = 256 * 1000 * 1000
REQUESTS_LIMIT_SHOWN = 4000  # the requests-limit header when no rpm_limit is configured
# Token buckets per minute, a Tier 4 Sonnet account's: they refill continuously, and a reset
# header says when the bucket is full again. Cache reads do not count against input tokens.
INPUT_TOKENS_PER_MINUTE = 2_000_000
OUTPUT_TOKENS_PER_MINUTE = 400_000
# Prompt cache lifetimes by cache_control ttl; a hit starts the lifetime again.
CACHE_TTL_S = {"5m": 300.0, "1h": 3600.0}
# Thinking tokens a thinking model spends before its text (they count against max_tokens): each
# alone outgrows the smallest tier's output budget, as real thinking on a long conversation does.
THINKING_TOKENS = {Thinking.ADAPTIVE: 4_000, Thinking.ALWAYS: 8_000}
STREAM_CHUNK_CHARS = 120
ERROR_LATENCY_SHARE = 0.25  # errors come back well before a generation would


# --- state ----------------------------------------------------------------------------------


@dataclass
class StandinConfig:
    latency_ms: int = 0
    # A silence before the first text of an answer (time to first token): no byte arrives meanwhile.
    first_token_ms: int = 0
    # The pace of an answer after its first token (0: all of it at once); latency_ms comes on top.
    output_tokens_per_s: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    retry_after_s: int = 1
    seed: int | None = None
    rpm_limit: int | None = None
    script: list[str] = field(default_factory=list)
    # How long a Message Batch stays in_progress before its results are ready.
    batch_processing_s: float = 0.0
    # Appended to every assistant turn of a generated conversation (tests of untrusted text).
    turn_suffix: str = ""
    # Moves the prompt cache's clock forward, so tests see a cache entry expire without waiting.
    cache_clock_offset_s: float = 0.0
    # Message Batches: results in another order than the requests; refusals at its endpoints
    # (devtools/standin_batches.py).
    shuffle_results: bool = False
    endpoint_faults: dict[str, dict[str, float]] = field(default_factory=dict)

    def merge(self, changes: dict[str, Any]) -> None:
        check_config_changes(changes)
        for key, value in changes.items():
            setattr(self, key, list(value) if key == "script" else dict(value) if key == "faults" else value)


# How fast answers come: Claude's own pace (about 1 s to the first token, then 60-80 output tokens
# a second), what `make up` and real-use benchmarks run at; or at once, for tests.
PACES = {
    "claude": StandinConfig(first_token_ms=1000, output_tokens_per_s=70.0),
    "instant": StandinConfig(),
}


def pace_config(pace: str, latency_ms: int = 0) -> dict[str, Any]:
    """The config keys that make a running stand-in answer at one of PACES, plus a latency."""
    answers = PACES[pace]
    return {"first_token_ms": answers.first_token_ms, "output_tokens_per_s": answers.output_tokens_per_s, "latency_ms": latency_ms}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config_changes(changes: Any) -> None:
    """Refuses a bad config as a whole (ValueError or TypeError), so a typo in a test never
    half-applies."""
    if not isinstance(changes, dict):
        raise TypeError("the config must be a JSON object")
    unknown = set(changes) - set(StandinConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    for key in ("latency_ms", "first_token_ms", "retry_after_s"):
        if key in changes and not (_is_int(changes[key]) and changes[key] >= 0):
            raise ValueError(f"{key} must be a non-negative integer")
    for key in ("batch_processing_s", "cache_clock_offset_s", "output_tokens_per_s"):
        if key in changes and not (
            isinstance(changes[key], int | float) and not isinstance(changes[key], bool) and changes[key] >= 0
        ):
            raise ValueError(f"{key} must be a non-negative number")
    if "turn_suffix" in changes and not isinstance(changes["turn_suffix"], str):
        raise ValueError("turn_suffix must be a string")
    if changes.get("seed") is not None and not _is_int(changes["seed"]):
        raise ValueError("seed must be an integer or null")
    if changes.get("rpm_limit") is not None and not (_is_int(changes["rpm_limit"]) and changes["rpm_limit"] > 0):
        raise ValueError("rpm_limit must be a positive integer or null")
    if "faults" in changes:
        _check_faults(changes["faults"])
    if "script" in changes:
        _check_script(changes["script"])
    if "shuffle_results" in changes and not isinstance(changes["shuffle_results"], bool):
        raise ValueError("shuffle_results must be true or false")
    if "endpoint_faults" in changes:
        standin_batches.check_endpoint_faults(changes["endpoint_faults"])


def _check_faults(faults: Any) -> None:
    if not isinstance(faults, dict):
        raise TypeError("faults must be an object of outcome -> probability")
    unknown = [name for name in faults if name not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults: {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    if not all(isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1 for p in faults.values()):
        raise ValueError("fault probabilities must be numbers between 0 and 1")
    if sum(faults.values()) > 1:
        raise ValueError("fault probabilities must add up to at most 1")


def _check_script(script: Any) -> None:
    if not isinstance(script, list):
        raise TypeError("script must be a list of outcomes")
    unknown = [str(outcome) for outcome in script if outcome not in ("ok", *FAULTS)]
    if unknown:
        raise ValueError(f"unknown script outcomes: {', '.join(unknown)}; known: ok, {', '.join(FAULTS)}")


class RequestWindow:
    """Arrival times of the requests admitted in the trailing minute: both the rpm limit and the
    requests-remaining header count them."""

    def __init__(self) -> None:
        self._arrivals: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._arrivals and now - self._arrivals[0] >= RATE_WINDOW_S:
            self._arrivals.popleft()

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._arrivals)

    def next_slot_at(self, now: float) -> float:
        """When the oldest admitted request leaves the window (now, if none is in it)."""
        self._expire(now)
        return self._arrivals[0] + RATE_WINDOW_S if self._arrivals else now

    def admit(self, now: float, limit: int | None) -> bool:
        if limit is not None and self.count(now) >= limit:
            return False
        self._arrivals.append(now)
        return True


class TokenBucket:
    """A per-minute token budget that refills continuously, as Anthropic's rate limiter does."""

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self._level = float(per_minute)
        self._at = 0.0

    def _refill(self, now: float) -> None:
        # A request that started before the last one seen (answers end out of order) refills nothing.
        self._level = min(self.limit, self._level + max(0.0, now - self._at) * self.limit / RATE_WINDOW_S)
        self._at = max(self._at, now)

    def spend(self, now: float, tokens: int) -> None:
        self._refill(now)
        self._level = max(0.0, self._level - tokens)

    def remaining(self, now: float) -> int:
        self._refill(now)
        return int(self._level)

    def full_at(self, now: float) -> float:
        """When the bucket is full again: what its reset header says."""
        return now + (self.limit - self.remaining(now)) * RATE_WINDOW_S / self.limit


class PromptCache:
    """Cached prompt prefixes by model and text, each until its lifetime ends; a hit refreshes it."""

    def __init__(self) -> None:
        self._expires_at: dict[str, float] = {}

    def use(self, key: str, ttl: str, now: float) -> bool:
        """True for a hit (the lifetime starts again), False for a write."""
        hit = self._expires_at.get(key, -math.inf) > now
        self._expires_at[key] = max(self._expires_at.get(key, -math.inf), now + CACHE_TTL_S[ttl])
        return hit


class Standin:
    """The config, counters and request log of one stand-in server."""

    def __init__(self, pace: StandinConfig | None = None) -> None:
        self._pace = pace or StandinConfig()  # what a reset returns to
        self.reset()

    def reset(self) -> None:
        self.config = replace(self._pace, faults={}, script=[], endpoint_faults={})
        self.rng = random.Random()
        self.outcomes: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []
        self.window = RequestWindow()
        self.prompt_cache = PromptCache()
        self.input_tokens = TokenBucket(INPUT_TOKENS_PER_MINUTE)
        self.output_tokens = TokenBucket(OUTPUT_TOKENS_PER_MINUTE)
        self.token_counts = 0
        self.batches = MessageBatches()

    def configure(self, changes: dict[str, Any]) -> None:
        self.config.merge(changes)
        if "seed" in changes:
            self.rng.seed(self.config.seed)

    def next_outcome(self) -> str:
        """The scripted outcome if any is left, else a draw over the fault probabilities."""
        if self.config.script:
            return self.config.script.pop(0)
        draw = self.rng.random()
        for outcome, probability in self.config.faults.items():
            if draw < probability:
                return outcome
            draw -= probability
        return "ok"

    def record(self, at: float, outcome: str, item: str | None, stream: bool) -> dict[str, Any]:
        """Counts a request and logs it; `answered` turns true once its whole response is out."""
        self.outcomes[outcome] += 1
        entry = {"at": at, "outcome": outcome, "item": item, "stream": stream, "answered": False}
        self.log.append(entry)
        return entry

    def requests_limit(self) -> int:
        return self.config.rpm_limit or REQUESTS_LIMIT_SHOWN

    def cache_now(self) -> float:
        return time.time() + self.config.cache_clock_offset_s

    def spend_tokens(self, now: float, usage: dict[str, Any]) -> None:
        """An answered request's tokens leave the buckets (cache reads are free of the input limit)."""
        self.input_tokens.spend(now, usage["input_tokens"] + usage["cache_creation_input_tokens"])
        self.output_tokens.spend(now, usage["output_tokens"])

    def answer(self, body: dict[str, Any], outcome: str) -> dict[str, Any]:
        return build_message(self, body, outcome)

    @staticmethod
    def request_problem(body: Any) -> str | None:
        return request_problem(body)


STANDIN = web.AppKey("standin", Standin)
LOG_ENTRY = web.RequestKey("log_entry", dict)


# --- the conversation -----------------------------------------------------------------------


def text_of(content: Any) -> str:
    """The text of a string or of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


def prompt_fields(prompt: str) -> dict[str, str]:
    """The persona, arc, topic and tier named by `Label: value` lines of the prompt."""
    fields = {}
    for name, (label, missing) in PROMPT_LINES.items():
        match = re.search(rf"^\s*{label}:[ \t]*(\S.*)$", prompt, re.IGNORECASE | re.MULTILINE)
        fields[name] = match.group(1).strip() if match else missing
    return fields


def build_conversation(prompt: str, turn_suffix: str = "") -> dict[str, Any]:
    """A ConversationDocument naming the persona and topic; the prompt's hash picks the lines and
    the length (6, 8 or 10 turns), so different items get different conversations."""
    fields = prompt_fields(prompt)
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    persona, topic = fields["persona"], fields["training_topic"]
    name, subject = persona.split()[0], topic.lower()
    openers = [
        f"Hi, I'm {persona}. I've been putting off thinking about {subject} and it's starting to worry me.",
        f"My name is {persona}. Honestly, {subject} is something my partner and I keep arguing about.",
        f"I'm {persona}, and I need help with {subject}. I don't even know where to begin.",
        f"Hello, this is {persona}. A friend said you could walk me through {subject}.",
    ]
    advisor_lines = [
        (
            f"Thank you for telling me that, {name}. A lot of people feel that way about {subject}. "
            "What feels most pressing right now?"
        ),
        f"That's a very common place to start, {name}. Let's break {subject} into a few small steps.",
        (
            "It sounds like you both want the same outcome, even if you disagree on the route. "
            "What would a good result look like for each of you?"
        ),
        f"A practical first step would be to write down what you already have in place for {subject}.",
        f"That's a fair question, {name}. The short answer is that it depends on your goals, so let's start there.",
        f"Nothing about {subject} has to be decided today. What matters is that you know your options.",
    ]
    client_lines = [
        "I guess the biggest worry is what happens to my family if something happens to me.",
        f"We have some savings, but no real plan for {subject}. It feels overwhelming.",
        "That actually makes sense. I hadn't thought of splitting it up like that.",
        "Is it normal to feel this behind? Everyone else seems to have it figured out.",
        f"What would you say is the most common mistake people make with {subject}?",
    ]
    closing = f"You're making real progress, {name}. Let's agree on one concrete action for {subject} and a date to check in."
    exchanges = rng.choice((3, 4, 5))  # each exchange is one user turn and one assistant turn
    users = [rng.choice(openers), *_pick_in_order(rng, client_lines, exchanges - 1)]
    assistants = [*_pick_in_order(rng, advisor_lines, exchanges - 1), closing]
    turns = []
    for user_text, assistant_text in zip(users, assistants, strict=True):
        turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": assistant_text + turn_suffix}]
    return {"title": f"{persona}: {topic} ({fields['emotional_arc']})", "metadata": fields, "turns": turns}


def _pick_in_order(rng: random.Random, lines: list[str], count: int) -> list[str]:
    """`count` of the lines, kept in their written order so the conversation still flows."""
    return [lines[i] for i in sorted(rng.sample(range(len(lines)), count))]


# --- the Messages API -----------------------------------------------------------------------


def _rfc3339(at: float) -> str:
    """Whole seconds, rounded up: a reset time is when the budget is back, never before."""
    return datetime.fromtimestamp(math.ceil(at), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def response_headers(standin: Standin, now: float, exhausted_until: float | None = None) -> dict[str, str]:
    """request-id and the rate-limit headers of each budget: requests (the trailing minute), input
    and output tokens (buckets), and tokens (the more depleted of the two). `exhausted_until`
    reports every budget empty until then."""
    budgets: dict[str, tuple[int, int, float]] = {}  # budget -> limit, remaining, reset
    if exhausted_until is None:
        requests_remaining = max(0, standin.requests_limit() - standin.window.count(now))
        budgets["requests"] = (standin.requests_limit(), requests_remaining, standin.window.next_slot_at(now))
        for name, bucket in (("input-tokens", standin.input_tokens), ("output-tokens", standin.output_tokens)):
            budgets[name] = (bucket.limit, bucket.remaining(now), bucket.full_at(now))
    else:
        budgets["requests"] = (standin.requests_limit(), 0, exhausted_until)
        for name, bucket in (("input-tokens", standin.input_tokens), ("output-tokens", standin.output_tokens)):
            budgets[name] = (bucket.limit, 0, exhausted_until)
    budgets["tokens"] = min(budgets["input-tokens"], budgets["output-tokens"], key=lambda b: b[1] / b[0])
    headers = {"request-id": f"req_standin_{uuid.uuid4().hex[:24]}"}
    for name, (limit, remaining, reset_at) in budgets.items():
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
        headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(reset_at)
    return headers


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str], error_code: str | None = None
) -> web.Response:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error, "request_id": headers["request-id"]}
    return web.json_response(body, status=status, headers=headers)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """How long to wait, as the API says it: whole seconds, and milliseconds beside them."""
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(int(seconds * 1000))}


def request_problem(body: Any) -> str | None:
    """Why the API would refuse this request body, or None."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not _is_int(body.get("max_tokens")) or body["max_tokens"] <= 0:
        return "max_tokens: must be a positive integer"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: at least one message is required"
    if not all(isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in body["messages"]):
        return "messages: each message needs a role of 'user' or 'assistant'"
    return None


def prompt_of(body: dict[str, Any]) -> str:
    """System text and every user turn: where the persona, arc, topic and tier lines are."""
    user_texts = [text_of(m.get("content")) for m in body["messages"] if m["role"] == "user"]
    return "\n".join([text_of(body.get("system")), *user_texts])


def _cache_breakpoint(system: Any) -> tuple[str, str] | None:
    """The system text up to and including its last block marked with cache_control, and that
    mark's ttl; None when nothing is marked."""
    if not isinstance(system, list):
        return None
    marked = [i for i, block in enumerate(system) if isinstance(block, dict) and isinstance(block.get("cache_control"), dict)]
    if not marked:
        return None
    ttl = system[marked[-1]]["cache_control"].get("ttl", "5m")
    return text_of(system[: marked[-1] + 1]), ttl if ttl in CACHE_TTL_S else "5m"


def prompt_tokens(body: dict[str, Any]) -> int:
    """Every input token of a request (tools, system and messages, cached or not): what
    count_tokens answers and what a Messages answer's input, cache write and cache read tokens
    add up to."""
    messages_text = "\n".join(text_of(m.get("content")) for m in body["messages"])
    return estimated_tokens(messages_text) + estimated_tokens(text_of(body.get("system"))) + tools_tokens(body)


def usage_of(standin: Standin, body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    """Imitates prompt caching as documented: a system prefix marked with cache_control and at
    least the model's minimum long is written to the cache (5-minute or 1-hour, as its ttl says)
    and read from it until its lifetime ends, each read starting the lifetime again; a shorter
    one is not cached, without an error. input_tokens is the uncached rest. Tools come first in
    the prompt, so a cached system prefix caches them too."""
    tools = tools_tokens(body)
    usage: dict[str, Any] = {
        "input_tokens": prompt_tokens(body),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }
    breakpoint_ = _cache_breakpoint(body.get("system"))
    if breakpoint_ is None:
        return usage
    prefix, ttl = breakpoint_
    prefix_tokens = estimated_tokens(prefix) + tools
    if prefix_tokens < traits_of(body["model"]).cache_min_tokens:
        return usage
    key = hashlib.sha256(f"{body['model']}\n{json.dumps(body.get('tools'))}\n{prefix}".encode()).hexdigest()
    usage["input_tokens"] -= prefix_tokens
    if standin.prompt_cache.use(key, ttl, standin.cache_now()):
        usage["cache_read_input_tokens"] = prefix_tokens
    else:
        usage["cache_creation_input_tokens"] = prefix_tokens
        usage["cache_creation"][f"ephemeral_{ttl}_input_tokens"] = prefix_tokens
    return usage


def reply_text(prompt: str, outcome: str, turn_suffix: str = "") -> tuple[str, str]:
    """The assistant text and stop reason for an answered request, spoiled as the fault says."""
    text = json.dumps(build_conversation(prompt, turn_suffix), indent=2)
    if outcome == "malformed":
        return "Here is the conversation you asked for:\n" + text[: len(text) // 2] + "\n... (and so on)", "end_turn"
    if outcome == "truncated":
        return text[: len(text) // 2], "max_tokens"
    if outcome == REFUSAL:
        return "", "refusal"
    if outcome == CONTEXT_WINDOW_EXCEEDED:
        return text[: len(text) // 2], "model_context_window_exceeded"
    return text, "end_turn"


def thinking_block(prompt: str, tokens: int) -> dict[str, Any]:
    """A thinking block of about `tokens` tokens, in the documented shape (the signature is opaque)."""
    fields = prompt_fields(prompt)
    thought = (
        f"The client is {fields['persona']}; the arc is {fields['emotional_arc']} and the topic "
        f"{fields['training_topic']}. I should let the feeling come first, then teach one step at a time. "
    )
    text = (thought * (tokens * 4 // len(thought) + 1))[: tokens * 4]
    signature = hashlib.sha256(text.encode()).hexdigest()
    return {"type": "thinking", "thinking": text, "signature": f"standin-{signature}"}


def build_message(standin: Standin, body: dict[str, Any], outcome: str) -> dict[str, Any]:
    """The answer: thinking first for a model that thinks by default, then the text; thinking
    and text together stop at max_tokens, as the real API's output does."""
    prompt = prompt_of(body)
    tool = called_tool(body)
    thinking = traits_of(body["model"]).thinking
    if tool is not None and outcome != REFUSAL:
        block, stop_reason = verdict_block(tool, body, outcome)
        # A forced tool call comes without thinking (the API refuses the two together).
        if thinking in THINKING_TOKENS and not forced(body):
            return _message(standin, body, thinking_block(prompt, THINKING_TOKENS[thinking]), block, stop_reason=stop_reason)
        return _message(standin, body, block, stop_reason=stop_reason)
    text, stop_reason = reply_text(prompt, outcome, standin.config.turn_suffix)
    content: list[dict[str, Any]] = []
    budget = body["max_tokens"]
    if thinking in THINKING_TOKENS and outcome != REFUSAL:
        block = thinking_block(prompt, min(THINKING_TOKENS[thinking], budget))
        content.append(block)
        budget -= estimated_tokens(block["thinking"])
    if budget <= 0:
        text, stop_reason = "", "max_tokens"
    elif estimated_tokens(text) > budget:
        text, stop_reason = text[: budget * 4], "max_tokens"
    if text:
        content.append({"type": "text", "text": text})
    return _message(standin, body, *content, stop_reason=stop_reason)


def _message(standin: Standin, body: dict[str, Any], *content: dict[str, Any], stop_reason: str) -> dict[str, Any]:
    output_tokens = sum(estimated_tokens(block_text(b)) for b in content) or 1
    return {
        "id": f"msg_standin_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_of(standin, body, output_tokens),
    }


def refusal(standin: Standin, request: web.Request, body: Any, now: float) -> tuple[str, web.Response] | None:
    """The outcome and answer of a request the API would refuse before any fault injection."""
    if not has_api_key(request):
        headers = response_headers(standin, now)
        return "401", error_response(401, "authentication_error", "x-api-key header is required", headers)
    problem = request_problem(body)
    if problem:
        return "400_invalid", error_response(400, "invalid_request_error", problem, response_headers(standin, now))
    if not standin.window.admit(now, standin.config.rpm_limit):
        free_at = standin.window.next_slot_at(now)
        headers = {**response_headers(standin, now, exhausted_until=free_at), **retry_after_headers(max(1.0, free_at - now))}
        message = "This request would exceed your organization's rate limit of requests per minute"
        return "429_rpm", error_response(429, "rate_limit_error", message, headers)
    return None


def fault_response(standin: Standin, outcome: str, now: float) -> web.Response:
    if outcome == TOO_LARGE_FAULT:
        return web.Response(status=413, text=TOO_LARGE_BODY, content_type="text/html")
    status, error_type, message = ERROR_FAULTS[outcome]
    retry_after = standin.config.retry_after_s
    if outcome == "429":
        headers = {**response_headers(standin, now, exhausted_until=now + retry_after), **retry_after_headers(retry_after)}
    elif outcome == "529":
        headers = {**response_headers(standin, now), **retry_after_headers(retry_after)}
    else:
        headers = response_headers(standin, now)
    return error_response(status, error_type, message, headers, ERROR_CODES.get(outcome))


async def json_body(request: web.Request) -> Any:
    """The request's JSON, or None when its body is not JSON (the API answers that as a bad request)."""
    try:
        return await request.json()
    except json.JSONDecodeError:
        return None


async def messages(request: web.Request) -> web.StreamResponse:
    standin = request.app[STANDIN]
    now = time.time()
    body = await json_body(request)
    streaming = isinstance(body, dict) and body.get("stream") is True
    item = request.headers.get("x-brightrun-item")
    latency_s = standin.config.latency_ms / 1000

    refused = refusal(standin, request, body, now)
    if refused:
        outcome, response = refused
        request[LOG_ENTRY] = standin.record(now, outcome, item, streaming)
        return response
    outcome = standin.next_outcome()
    if outcome == EXPIRED:  # only a request inside a Message Batch can expire
        outcome = "ok"
    request[LOG_ENTRY] = standin.record(now, outcome, item, streaming)
    if outcome in ERROR_FAULTS or outcome == TOO_LARGE_FAULT:  # also for streams: the API fails before the stream starts
        await asyncio.sleep(latency_s * ERROR_LATENCY_SHARE)
        return fault_response(standin, outcome, now)
    if outcome == MIDSTREAM_OVERLOADED and not streaming:  # without a stream, the API answers 529
        await asyncio.sleep(latency_s * ERROR_LATENCY_SHARE)
        return fault_response(standin, "529", now)

    message = build_message(standin, body, outcome)
    standin.spend_tokens(now, message["usage"])
    headers = response_headers(standin, now)
    first_token_s = standin.config.first_token_ms / 1000
    if standin.config.output_tokens_per_s:
        latency_s += message["usage"]["output_tokens"] / standin.config.output_tokens_per_s
    if streaming:
        return await stream_message(request, message, headers, latency_s, first_token_s, outcome)
    await asyncio.sleep(first_token_s + latency_s)
    if outcome == MIDSTREAM_DROP:
        return await drop_midway(request, json.dumps(message).encode(), {**headers, "content-type": "application/json"})
    return web.json_response(message, headers=headers)


async def count_tokens(request: web.Request) -> web.Response:
    """POST /v1/messages/count_tokens: the input tokens of a Messages request (system, messages),
    without creating a message. It needs no max_tokens and counts against no token budget."""
    standin = request.app[STANDIN]
    now = time.time()
    body = await json_body(request)
    if not has_api_key(request):
        return error_response(401, "authentication_error", "x-api-key header is required", response_headers(standin, now))
    problem = count_tokens_problem(body)
    if problem:
        return error_response(400, "invalid_request_error", problem, response_headers(standin, now))
    standin.token_counts += 1
    return web.json_response({"input_tokens": prompt_tokens(body)}, headers=response_headers(standin, now))


# The body count_tokens takes (its documented parameters): a Messages request without max_tokens,
# stream, sampling or metadata. The API refuses any other field.
COUNT_TOKENS_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control", "output_config", "speed", "mcp_servers"}
)


def count_tokens_problem(body: Any) -> str | None:
    """Why the API would refuse this count_tokens body, or None."""
    if isinstance(body, dict):
        extra = sorted(set(body) - COUNT_TOKENS_FIELDS)
        if extra:
            return f"{extra[0]}: Extra inputs are not permitted"
        if "system" in body and not isinstance(body["system"], str | list):
            return "system: Input should be a valid string or a list of text blocks"
    return request_problem({**body, "max_tokens": 1} if isinstance(body, dict) else body)


async def drop_midway(request: web.Request, body: bytes, headers: dict[str, str]) -> web.StreamResponse:
    """Sends the status, headers and half of the body, then closes the connection."""
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    return _hang_up(request, response)


def _hang_up(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Closes the connection under a response that is not finished: the client reads a body that
    ends early (an incomplete chunked read for a stream)."""
    if request.transport is not None:
        request.transport.close()
    return response


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One content block as its start, deltas (a thinking block's signature last) and stop."""
    if block["type"] == "tool_use":
        text, empty = json.dumps(block["input"]), {**block, "input": {}}
        chunks = [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
        deltas = [("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": c}}) for c in chunks]
        return [("content_block_start", {"index": index, "content_block": empty}), *deltas, ("content_block_stop", {"index": index})]
    if block["type"] == "thinking":
        text, empty, delta = block["thinking"], {"type": "thinking", "thinking": "", "signature": ""}, "thinking"
    else:
        text, empty, delta = block["text"], {"type": "text", "text": ""}, "text"
    chunks = [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
    events = [("content_block_start", {"index": index, "content_block": empty})]
    events += [("content_block_delta", {"index": index, "delta": {"type": f"{delta}_delta", delta: c}}) for c in chunks]
    if block["type"] == "thinking":
        events.append(("content_block_delta", {"index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}}))
    return [*events, ("content_block_stop", {"index": index})]


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a message, in the order and shape the real API sends them."""
    usage = message["usage"]
    started = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    blocks = [event for index, block in enumerate(message["content"]) for event in _block_events(index, block)]
    return [
        ("message_start", {"message": started}),
        ("ping", {}),
        *blocks,
        ("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                           "usage": {"output_tokens": usage["output_tokens"]}}),
        ("message_stop", {}),
    ]


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


async def stream_message(
    request: web.Request,
    message: dict[str, Any],
    headers: dict[str, str],
    latency_s: float,
    first_token_s: float = 0,
    outcome: str = "ok",
) -> web.StreamResponse:
    """Streams the message as server-sent events: silence for `first_token_s` after the message
    starts, then the latency spread over the text deltas. A mid-stream fault breaks the stream
    after half of the deltas."""
    response = web.StreamResponse(headers={**headers, "content-type": "text/event-stream", "cache-control": "no-cache"})
    await response.prepare(request)
    events = stream_events(message)
    deltas = sum(1 for name, _ in events if name == "content_block_delta")
    delta_pause, deltas_sent, first_block = latency_s / max(1, deltas), 0, True
    for name, data in events:
        if name == "content_block_start" and first_block:
            await asyncio.sleep(first_token_s)
            first_block = False
        if name == "content_block_delta":
            if outcome in MIDSTREAM_FAULTS and deltas_sent == deltas // 2:
                return await _break_stream(request, response, outcome)
            await asyncio.sleep(delta_pause)
            deltas_sent += 1
        await response.write(sse(name, data))
    await response.write_eof()
    return response


async def _break_stream(request: web.Request, response: web.StreamResponse, outcome: str) -> web.StreamResponse:
    if outcome == MIDSTREAM_DROP:
        return _hang_up(request, response)
    _status, error_type, message = ERROR_FAULTS["529"]
    await response.write(sse("error", {"error": {"type": error_type, "message": message}}))
    await response.write_eof()
    return response


# --- control --------------------------------------------------------------------------------


async def configure(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    try:
        standin.configure(await request.json())
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(asdict(standin.config))


async def reset(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    standin.reset()
    return web.json_response(asdict(standin.config))


async def stats(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    return web.json_response(
        {
            "requests": len(standin.log),
            "by_outcome": dict(standin.outcomes),
            "log": standin.log,
            "batches": standin.batches.created,
            "batch_requests": standin.batches.requests_received,
            "token_counts": standin.token_counts,
        }
    )


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


# --- serving --------------------------------------------------------------------------------


@web.middleware
async def mark_answered(request: web.Request, handler: Any) -> web.StreamResponse:
    """A call cut off by its client (a worker killed mid-call) raises here and stays unanswered:
    the chaos suite counts the answers a worker received, not the requests that reached us."""
    response = await handler(request)
    if LOG_ENTRY in request:
        request[LOG_ENTRY]["answered"] = True
    return response


async def mark_standin(_request: web.Request, response: web.StreamResponse) -> None:
    """Every response says it comes from the stand-in (streams and Message Batches included):
    a worker records who answered from it, whatever its settings say."""
    response.headers[STANDIN_HEADER] = "1"


def build_app(pace: StandinConfig | None = None) -> web.Application:
    app = web.Application(middlewares=[mark_answered], client_max_size=MAX_REQUEST_BYTES)
    app.on_response_prepare.append(mark_standin)
    app[STANDIN] = Standin(pace)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    standin_batches.add_routes(app, STANDIN)
    app.router.add_post("/_standin/config", configure)
    app.router.add_post("/_standin/reset", reset)
    app.router.add_get("/_standin/stats", stats)
    app.router.add_get("/_standin/health", health)
    return app


async def start_standin(
    host: str = "127.0.0.1", port: int = 0, pace: StandinConfig | None = None
) -> tuple[web.AppRunner, int]:
    """Starts the stand-in on host:port (0 picks a free port), answering at `pace` (at once by
    default) until configured otherwise; returns its runner and bound port."""
    # handler_cancellation: a client that hangs up cancels its handler's latency sleep.
    runner = web.AppRunner(build_app(pace), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


async def serve(host: str, port: int, pace: StandinConfig) -> None:
    """Serves until SIGTERM or SIGINT, then closes the listener and open connections."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, bound = await start_standin(host, port, pace)
    print(f"OFFLINE Claude stand-in (not the Anthropic API) listening on http://{host}:{bound}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="The offline Claude stand-in (Anthropic Messages API imitation).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--pace",
        choices=sorted(PACES),
        default="claude",
        help="how fast answers come until configured otherwise: claude's pace (default) or at once (tests)",
    )
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, PACES[args.pace]))


if __name__ == "__main__":
    main()
