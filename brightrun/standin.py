"""The offline Claude stand-in: an HTTP server that speaks the Anthropic Messages API well enough
for the official SDK (non-streaming and streaming), so the whole pipeline runs without an API key.

It answers with a plausible conversation built from the persona, arc and topic lines of the
prompt, with real-looking `usage` and rate-limit headers, and injects the faults the real API
has, so tests exercise the real SDK and our retry code over a real socket.

    python -m brightrun.standin --host 127.0.0.1 --port 8765

Control: POST /_standin/config, POST /_standin/reset, GET /_standin/stats, GET /_standin/health.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OUTCOMES = ("429", "529", "500", "400", "malformed", "truncated")
_ERRORS = {
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
    "400": (400, "invalid_request_error", "messages: prompt is too long for this model"),
}
_PROMPT_FIELDS = {
    "persona": (r"^\s*persona:\s*(.+)$", "Unknown persona"),
    "emotional_arc": (r"^\s*emotional arc:\s*(.+)$", "Unknown arc"),
    "training_topic": (r"^\s*training topic:\s*(.+)$", "Unknown topic"),
    "tier": (r"^\s*tier:\s*(.+)$", "template"),
}
REQUESTS_PER_MINUTE_SHOWN = 4000
TOKENS_PER_MINUTE_SHOWN = 400_000


@dataclass
class StandinConfig:
    latency_ms: int = 0
    faults: dict[str, float] = field(default_factory=dict)
    retry_after_s: int = 1
    seed: int | None = None
    rpm_limit: int | None = None
    script: list[str] = field(default_factory=list)

    def update(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        bad = [o for o in changes.get("faults", {}) if o not in OUTCOMES] + [
            o for o in changes.get("script", []) if o not in (*OUTCOMES, "ok")
        ]
        if bad:
            raise ValueError(f"unknown outcomes: {', '.join(bad)}; known: ok, {', '.join(OUTCOMES)}")
        for key, value in changes.items():
            setattr(self, key, dict(value) if key == "faults" else list(value) if key == "script" else value)


@dataclass
class StandinState:
    config: StandinConfig = field(default_factory=StandinConfig)
    outcomes: Counter = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)
    recent: deque = field(default_factory=deque)  # request times of the trailing minute
    cached_prefixes: set[str] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)

    def reset(self) -> None:
        self.__init__()

    def choose_outcome(self) -> str:
        if self.config.script:
            return self.config.script.pop(0)
        draw = self.rng.random()
        for outcome, probability in self.config.faults.items():
            if draw < probability:
                return outcome
            draw -= probability
        return "ok"

    def over_rpm_limit(self, now: float) -> float | None:
        """Seconds until a slot frees, when the trailing minute is full."""
        while self.recent and now - self.recent[0] >= 60:
            self.recent.popleft()
        if self.config.rpm_limit is not None and len(self.recent) >= self.config.rpm_limit:
            return 60 - (now - self.recent[0])
        self.recent.append(now)
        return None


STATE = web.AppKey("state", StandinState)


# --- the conversation ---------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content if isinstance(block, dict))


def prompt_fields(prompt: str) -> dict[str, str]:
    found = {}
    for name, (pattern, default) in _PROMPT_FIELDS.items():
        match = re.search(pattern, prompt, re.IGNORECASE | re.MULTILINE)
        found[name] = match.group(1).strip() if match else default
    return found


def build_conversation(prompt: str) -> dict[str, Any]:
    """A plausible conversation naming the persona and topic, varied by the prompt's hash."""
    f = prompt_fields(prompt)
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    first_name = f["persona"].split()[0]
    topic = f["training_topic"]
    openers = [
        f"Hi, I'm {f['persona']}. I've been putting off thinking about {topic.lower()} and it's starting to worry me.",
        f"My name is {f['persona']}. Honestly, {topic.lower()} is something my partner and I keep arguing about.",
        f"I'm {f['persona']}, and I need help with {topic.lower()}. I don't even know where to begin.",
    ]
    advisor = [
        f"Thank you for sharing that, {first_name}. Many people feel the same way about {topic.lower()}. "
        "Can you tell me what feels most pressing right now?",
        f"That's a very common place to start, {first_name}. Let's break {topic.lower()} into a few small steps.",
        "It sounds like both of you care about the same outcome, even if you disagree on the route. "
        "What would a good result look like for each of you?",
        f"A practical first step this week would be to write down what you already have in place for {topic.lower()}.",
        "You're making real progress. Let's agree on one concrete action and a date to check in.",
    ]
    client = [
        "I guess the biggest worry is what happens to my kids if something happens to me.",
        "We have some savings, but no real plan. It feels overwhelming.",
        "That actually makes sense. I hadn't thought of splitting it up like that.",
        "Okay. I think I can do that this week, and talk it through at home tonight.",
    ]
    turns = [{"role": "user", "content": rng.choice(openers)}]
    for index in range(rng.randint(3, 5) * 2 - 1):
        pool = advisor if index % 2 == 0 else client
        turns.append({"role": "assistant" if index % 2 == 0 else "user", "content": pool[index // 2 % len(pool)]})
    if turns[-1]["role"] == "user":
        turns.append({"role": "assistant", "content": advisor[-1]})
    return {
        "title": f"{f['persona']}: {topic} ({f['emotional_arc']})",
        "metadata": {
            "persona": f["persona"],
            "emotional_arc": f["emotional_arc"],
            "training_topic": topic,
            "tier": f["tier"],
        },
        "turns": turns,
    }


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


# --- the Messages API ---------------------------------------------------------------------


def _headers(state: StandinState, remaining_requests: int | None = None) -> dict[str, str]:
    limit = state.config.rpm_limit or REQUESTS_PER_MINUTE_SHOWN
    remaining = remaining_requests if remaining_requests is not None else max(0, limit - len(state.recent))
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    return {
        "request-id": f"req_standin_{uuid.uuid4().hex[:20]}",
        "anthropic-ratelimit-requests-limit": str(limit),
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": str(TOKENS_PER_MINUTE_SHOWN),
        "anthropic-ratelimit-tokens-remaining": str(TOKENS_PER_MINUTE_SHOWN if remaining else 0),
        "anthropic-ratelimit-tokens-reset": reset,
    }


def _error(status: int, error_type: str, message: str, headers: dict[str, str]) -> web.Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": headers["request-id"]}
    return web.json_response(body, status=status, headers=headers)


def _validate(request_body: Any) -> str | None:
    if not isinstance(request_body, dict):
        return "the request body must be a JSON object"
    if not isinstance(request_body.get("model"), str):
        return "model: Field required"
    max_tokens = request_body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        return "max_tokens: must be a positive integer"
    messages = request_body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    return None


def _usage(state: StandinState, body: dict[str, Any], output_text: str) -> dict[str, int]:
    system = body.get("system") or ""
    system_text = _text_of(system)
    messages_text = "\n".join(_text_of(m.get("content", "")) for m in body["messages"])
    cached = isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control") for b in system)
    usage = {"input_tokens": _tokens(messages_text), "output_tokens": _tokens(output_text),
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if cached:
        key = hashlib.sha256(system_text.encode()).hexdigest()
        usage["cache_read_input_tokens" if key in state.cached_prefixes else "cache_creation_input_tokens"] = _tokens(system_text)
        state.cached_prefixes.add(key)
    else:
        usage["input_tokens"] += _tokens(system_text)
    return usage


async def messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    now = time.time()
    try:
        body = await request.json()
    except json.JSONDecodeError:
        body = None
    streaming = isinstance(body, dict) and bool(body.get("stream"))
    entry = {"at": now, "outcome": "", "item": request.headers.get("x-brightrun-item"), "stream": streaming}
    state.log.append(entry)

    def finish(outcome: str) -> None:
        entry["outcome"] = outcome
        state.outcomes[outcome] += 1

    headers = _headers(state)
    if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
        finish("401")
        return _error(401, "authentication_error", "x-api-key header is required", headers)
    problem = _validate(body)
    if problem:
        finish("400")
        return _error(400, "invalid_request_error", problem, headers)
    wait = state.over_rpm_limit(now)
    if wait is not None:
        finish("429_rpm")
        headers = {**_headers(state, remaining_requests=0), "retry-after": str(max(1, round(wait)))}
        return _error(429, "rate_limit_error", "This request would exceed your per-minute request rate limit", headers)

    outcome = state.choose_outcome()
    finish(outcome)
    if outcome in _ERRORS:
        status, error_type, message = _ERRORS[outcome]
        if outcome == "429":
            headers = {**_headers(state, remaining_requests=0), "retry-after": str(state.config.retry_after_s)}
        await asyncio.sleep(state.config.latency_ms / 4000)
        return _error(status, error_type, message, headers)

    prompt = _text_of(body.get("system") or "") + "\n" + "\n".join(
        _text_of(m.get("content", "")) for m in body["messages"] if m.get("role") == "user"
    )
    text = json.dumps(build_conversation(prompt), indent=2)
    stop_reason = "end_turn"
    if outcome == "malformed":
        text = "Here is the conversation you asked for:\n" + text[: len(text) // 2] + "\n... (and so on)"
    elif outcome == "truncated":
        text, stop_reason = text[: len(text) // 2], "max_tokens"
    message = {
        "id": f"msg_standin_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(state, body, text),
    }
    if streaming:
        return await _stream(request, message, headers, state.config.latency_ms / 1000)
    await asyncio.sleep(state.config.latency_ms / 1000)
    return web.json_response(message, headers=headers)


async def _stream(request: web.Request, message: dict[str, Any], headers: dict[str, str], latency_s: float) -> web.StreamResponse:
    """Server-sent events in the order the real API sends them, latency spread over the chunks."""
    response = web.StreamResponse(headers={**headers, "content-type": "text/event-stream", "cache-control": "no-cache"})
    await response.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        await response.write(f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode())

    text = message["content"][0]["text"]
    usage = message["usage"]
    chunks = [text[i : i + 200] for i in range(0, len(text), 200)] or [""]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    await send("message_start", {"message": start})
    await send("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    for chunk in chunks:
        await asyncio.sleep(latency_s / len(chunks))
        await send("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": chunk}})
    await send("content_block_stop", {"index": 0})
    await send(
        "message_delta",
        {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, "usage": {"output_tokens": usage["output_tokens"]}},
    )
    await send("message_stop", {})
    await response.write_eof()
    return response


# --- control ------------------------------------------------------------------------------


async def configure(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        changes = await request.json()
        state.config.update(changes)
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if "seed" in changes:
        state.rng.seed(state.config.seed)
    return web.json_response(vars(state.config))


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"requests": len(state.log), "by_outcome": dict(state.outcomes), "log": state.log})


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_app() -> web.Application:
    app = web.Application()
    app[STATE] = StandinState()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/_standin/config", configure)
    app.router.add_post("/_standin/reset", reset)
    app.router.add_get("/_standin/stats", stats)
    app.router.add_get("/_standin/health", health)
    return app


async def start_standin(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _serve(host: str, port: int) -> None:
    runner, bound = await start_standin(host, port)
    print(f"OFFLINE Claude stand-in (not the Anthropic API) listening on http://{host}:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="The offline Claude stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
