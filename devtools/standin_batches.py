"""The Message Batches API of the offline Claude stand-in: create, retrieve, list, cancel and the
JSONL results, in the shapes the official SDK parses (`client.messages.batches.*`).

A batch stays `in_progress` for the configured `batch_processing_s`, then ends. Each request's
outcome is drawn when the batch is created, from the same `script` and `faults` as online calls:
`ok`, `malformed` and `truncated` succeed (with a spoiled reply for the last two), the HTTP error
faults and the mid-stream faults become `errored` results with the API's error type, `expired`
expires, and params the API would refuse are `errored` with `invalid_request_error` (the real API
validates them only after the batch ends). A cancel ends the batch at once: requests that would
have finished by then keep their outcome, the others are `canceled`.

As the documentation says, results come in no set order: `shuffle_results` answers them in
another order than the requests'. `endpoint_faults` ({"batches": {"401": 1.0}}) refuses calls of
the Message Batches endpoints (create, retrieve, list, results, cancel) with the API's error
body; `POST /_standin/foreign_batch {"requests": N}` creates a batch of another user of the same
workspace (listed, never counted in the stats).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

BATCH_REQUEST_LIMIT = 100_000
BATCH_EXPIRY_S = 24 * 3600
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 1000

# Draws of the shared fault config -> the error type of an `errored` result.
ERRORED_TYPES = {
    "400": "invalid_request_error",
    "429": "rate_limit_error",
    "529": "overloaded_error",
    "500": "api_error",
    "midstream_overloaded": "overloaded_error",
    "midstream_drop": "api_error",
}
EXPIRED = "expired"
# Refusals `endpoint_faults` can inject at the Message Batches endpoints: status, error type,
# message and `error.details.error_code` (the spend limit's, as anthropic's typed errors name it).
ENDPOINT_FAULTS: dict[str, tuple[int, str, str, str | None]] = {
    "401": (401, "authentication_error", "invalid x-api-key", None),
    "402": (402, "billing_error", "Your credit balance is too low to access the Anthropic API.", None),
    "403": (403, "permission_error", "Your API key does not have permission to use the specified resource.", None),
    "404": (404, "not_found_error", "The requested resource could not be found.", None),
    "429_spend_limit": (
        429,
        "rate_limit_error",
        "You have reached your specified API usage limits.",
        "enforced_spend_limit_reached",
    ),
    "500": (500, "api_error", "Internal server error", None),
    "529": (529, "overloaded_error", "Overloaded", None),
}
ENDPOINT_GROUPS = ("batches",)
FOREIGN_PARAMS = {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": "Persona: Someone else"}]}


class Answering(Protocol):
    """What a batch needs from the stand-in that owns it."""

    def next_outcome(self) -> str: ...
    def answer(self, body: dict[str, Any], outcome: str) -> dict[str, Any]: ...
    def request_problem(self, body: Any) -> str | None: ...


def check_endpoint_faults(faults: Any) -> None:
    """Refuses a bad `endpoint_faults` config (ValueError or TypeError)."""
    if not isinstance(faults, dict) or not all(isinstance(group, dict) for group in faults.values()):
        raise TypeError("endpoint_faults must be an object of endpoint group -> {fault: probability}")
    for group, drawn in faults.items():
        if group not in ENDPOINT_GROUPS:
            raise ValueError(f"unknown endpoint group {group!r}; known: {', '.join(ENDPOINT_GROUPS)}")
        unknown = [name for name in drawn if name not in ENDPOINT_FAULTS]
        if unknown:
            raise ValueError(f"unknown endpoint faults: {', '.join(unknown)}; known: {', '.join(ENDPOINT_FAULTS)}")
        if not all(isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1 for p in drawn.values()):
            raise ValueError("endpoint fault probabilities must be numbers between 0 and 1")
        if sum(drawn.values()) > 1:
            raise ValueError("endpoint fault probabilities must add up to at most 1")


def has_api_key(request: web.Request) -> bool:
    # anthropic 2.x sends the API key as `Authorization: Bearer`; raw HTTP callers use x-api-key.
    return bool(request.headers.get("x-api-key") or request.headers.get("authorization"))


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BatchRequest:
    custom_id: str
    params: Any
    outcome: str
    done_at: float  # when its processing would finish


@dataclass
class MessageBatch:
    id: str
    created_at: float
    ends_at: float
    requests: list[BatchRequest]
    cancel_initiated_at: float | None = None
    results: list[dict[str, Any]] | None = None  # fixed when the batch ends
    counts: dict[str, int] = field(default_factory=dict)

    def ended(self, now: float) -> bool:
        return self.results is not None or self.cancel_initiated_at is not None or now >= self.ends_at


class MessageBatches:
    """The batches of one stand-in, with the counters its stats show."""

    def __init__(self) -> None:
        self._batches: dict[str, MessageBatch] = {}
        self.created = 0
        self.requests_received = 0

    def create(
        self,
        requests: list[dict[str, Any]],
        processing_s: float,
        standin: Answering,
        draw: Callable[[], float],
        foreign: bool = False,
    ) -> MessageBatch:
        """A batch of ours, or with `foreign` one another user of the workspace created (all its
        requests succeed; the stats do not count it)."""
        now = time.time()
        batch_id = f"msgbatch_standin_{uuid.uuid4().hex[:24]}"
        batch = MessageBatch(
            id=batch_id,
            created_at=now,
            ends_at=now + processing_s,
            requests=[
                BatchRequest(r["custom_id"], r["params"], "ok" if foreign else standin.next_outcome(), now + processing_s * draw())
                for r in requests
            ],
        )
        self._batches[batch_id] = batch
        if not foreign:
            self.created += 1
            self.requests_received += len(requests)
        return batch

    def get(self, batch_id: str) -> MessageBatch | None:
        return self._batches.get(batch_id)

    def newest_first(self) -> list[MessageBatch]:
        return sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)


def _result(request: BatchRequest, standin: Answering, canceled: bool) -> dict[str, Any]:
    if canceled:
        return {"type": "canceled"}
    problem = standin.request_problem(request.params)
    if problem:
        return _errored("invalid_request_error", problem)
    if request.outcome == EXPIRED:
        return {"type": "expired"}
    if request.outcome in ERRORED_TYPES:
        return _errored(ERRORED_TYPES[request.outcome], f"injected fault {request.outcome}")
    return {"type": "succeeded", "message": standin.answer(request.params, request.outcome)}


def _errored(error_type: str, message: str) -> dict[str, Any]:
    request_id = f"req_standin_{uuid.uuid4().hex[:24]}"
    return {"type": "errored", "error": {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}}


def _settle(batch: MessageBatch, standin: Answering, now: float) -> None:
    """Fixes the results of a batch whose processing has ended (by time or by a cancel)."""
    if batch.results is not None or not batch.ended(now):
        return
    cut = batch.cancel_initiated_at
    batch.results = [
        {"custom_id": r.custom_id, "result": _result(r, standin, canceled=cut is not None and r.done_at > cut)}
        for r in batch.requests
    ]
    batch.counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    for line in batch.results:
        batch.counts[line["result"]["type"]] += 1


def batch_object(batch: MessageBatch, base_url: str) -> dict[str, Any]:
    ended = batch.results is not None
    counts = batch.counts if ended else {"processing": len(batch.requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if ended:
        status = "ended"
    elif batch.cancel_initiated_at is not None:
        status = "canceling"
    else:
        status = "in_progress"
    ended_at = min(batch.ends_at, batch.cancel_initiated_at or batch.ends_at) if ended else None
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": _iso(batch.created_at),
        "expires_at": _iso(batch.created_at + BATCH_EXPIRY_S),
        "ended_at": _iso(ended_at),
        "cancel_initiated_at": _iso(batch.cancel_initiated_at),
        "archived_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def creation_problem(body: Any) -> str | None:
    """Why the API would refuse to create this batch (params are checked only after it ends)."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
        return "requests: at least one request is required"
    requests = body["requests"]
    if len(requests) > BATCH_REQUEST_LIMIT:
        return f"requests: at most {BATCH_REQUEST_LIMIT} requests per batch"
    seen: set[str] = set()
    for index, request in enumerate(requests):
        if not isinstance(request, dict) or "params" not in request:
            return f"requests.{index}: custom_id and params are required"
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            return f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
        if custom_id in seen:
            return f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}"
        seen.add(custom_id)
    return None


def _error(status: int, error_type: str, message: str, error_code: str | None = None) -> web.Response:
    request_id = f"req_standin_{uuid.uuid4().hex[:24]}"
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error, "request_id": request_id}
    return web.json_response(body, status=status, headers={"request-id": request_id})


def _endpoint_fault(standin: Any) -> web.Response | None:
    """A refusal drawn from `endpoint_faults` for the Message Batches endpoints, or None."""
    draw = standin.rng.random()
    for name, probability in standin.config.endpoint_faults.get("batches", {}).items():
        if draw < probability:
            return _error(*ENDPOINT_FAULTS[name])
        draw -= probability
    return None


def _results_order(batch: MessageBatch, standin: Any) -> list[dict[str, Any]]:
    """The batch's result lines; with `shuffle_results`, never in the requests' order."""
    lines = list(batch.results or [])
    if standin.config.shuffle_results and len(lines) > 1:
        standin.rng.shuffle(lines)
        if lines == batch.results:
            lines = lines[1:] + lines[:1]
    return lines


def add_routes(app: web.Application, owner: web.AppKey) -> None:
    """The Message Batches endpoints, answered by the stand-in stored in the app under `owner`;
    the stand-in has `batches` (MessageBatches), `config.batch_processing_s` and `rng`."""

    def base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def found(request: web.Request) -> tuple[Any, MessageBatch | None]:
        standin = request.app[owner]
        batch = standin.batches.get(request.match_info["batch_id"])
        if batch is not None:
            _settle(batch, standin, time.time())
        return standin, batch

    async def create(request: web.Request) -> web.Response:
        if not has_api_key(request):
            return _error(401, "authentication_error", "x-api-key header is required")
        refused = _endpoint_fault(request.app[owner])
        if refused:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        problem = creation_problem(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        standin = request.app[owner]
        batch = standin.batches.create(body["requests"], standin.config.batch_processing_s, standin, standin.rng.random)
        _settle(batch, standin, time.time())
        return web.json_response(batch_object(batch, base_url(request)))

    async def retrieve(request: web.Request) -> web.Response:
        refused = _endpoint_fault(request.app[owner])
        if refused:
            return refused
        _standin, batch = found(request)
        if batch is None:
            return _error(404, "not_found_error", f"message batch {request.match_info['batch_id']} not found")
        return web.json_response(batch_object(batch, base_url(request)))

    async def listing(request: web.Request) -> web.Response:
        standin = request.app[owner]
        refused = _endpoint_fault(standin)
        if refused:
            return refused
        try:
            limit = int(request.query.get("limit", LIST_LIMIT_DEFAULT))
        except ValueError:
            return _error(400, "invalid_request_error", "limit: must be an integer")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            return _error(400, "invalid_request_error", f"limit: must be between 1 and {LIST_LIMIT_MAX}")
        batches = standin.batches.newest_first()
        ids = [b.id for b in batches]
        if request.query.get("before_id") in ids:  # the page of newer batches just before that one
            end = ids.index(request.query["before_id"])
            start = max(0, end - limit)
            has_more = start > 0
        else:
            start = ids.index(request.query["after_id"]) + 1 if request.query.get("after_id") in ids else 0
            end = min(len(batches), start + limit)
            has_more = end < len(batches)
        page = batches[start:end]
        now = time.time()
        for batch in page:
            _settle(batch, standin, now)
        return web.json_response(
            {
                "data": [batch_object(b, base_url(request)) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def cancel(request: web.Request) -> web.Response:
        refused = _endpoint_fault(request.app[owner])
        if refused:
            return refused
        standin, batch = found(request)
        if batch is None:
            return _error(404, "not_found_error", f"message batch {request.match_info['batch_id']} not found")
        answer = batch_object(batch, base_url(request))
        if batch.results is None and batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = time.time()
            answer = batch_object(batch, base_url(request))  # `canceling`, as the API answers a cancel
            _settle(batch, standin, batch.cancel_initiated_at)
        return web.json_response(answer)

    async def results(request: web.Request) -> web.Response:
        refused = _endpoint_fault(request.app[owner])
        if refused:
            return refused
        standin, batch = found(request)
        if batch is None:
            return _error(404, "not_found_error", f"message batch {request.match_info['batch_id']} not found")
        if batch.results is None:
            return _error(400, "invalid_request_error", f"message batch {batch.id} has not ended; its results are not ready")
        body = "".join(json.dumps(line) + "\n" for line in _results_order(batch, standin))
        return web.Response(body=body.encode(), content_type="application/binary")

    async def foreign_batch(request: web.Request) -> web.Response:
        """Control: a batch another user of the workspace creates, of `requests` requests."""
        standin = request.app[owner]
        body = await request.json()
        count = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= BATCH_REQUEST_LIMIT:
            return web.json_response({"error": f"requests must be an integer from 1 to {BATCH_REQUEST_LIMIT}"}, status=400)
        tag = uuid.uuid4().hex[:12]
        requests = [{"custom_id": f"foreign-{tag}-{n}", "params": FOREIGN_PARAMS} for n in range(count)]
        batch = standin.batches.create(requests, standin.config.batch_processing_s, standin, standin.rng.random, foreign=True)
        _settle(batch, standin, time.time())
        return web.json_response(batch_object(batch, base_url(request)))

    app.router.add_post("/v1/messages/batches", create)
    app.router.add_get("/v1/messages/batches", listing)
    app.router.add_get("/v1/messages/batches/{batch_id}", retrieve)
    app.router.add_post("/v1/messages/batches/{batch_id}/cancel", cancel)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", results)
    app.router.add_post("/_standin/foreign_batch", foreign_batch)
