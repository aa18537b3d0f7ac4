"""What a job would cost and take, before it is launched (`starter.py launch --dry-run`), and the
estimate a launched job keeps beside its actual numbers (docs/cost.md).

Input tokens come from the API's own token counting (`count_tokens`) on the prompts the items
would send: the same template selection and placeholder resolution the items use. Each distinct
prompt is counted once, at most `estimate_max_token_counts` of them (count_tokens has its own rate
limit); the rest are scaled from the counted ones by their length. Output tokens come from the
template's history (the conversations made with it by the same model), else the tier's
max_tokens (an upper bound). Cost is priced per request as the job would be billed: online, in
a Message Batch (half price), each with the template's system text cached when it is long enough
for the model, and without any caching for comparison."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from anthropic import APIConnectionError, APIStatusError, AsyncAnthropic, omit
from pydantic import BaseModel
from sqlalchemy import Float, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.templates import auto_selected_template, prompt_text
from brightrun.logs import get_logger
from brightrun.model_traits import estimated_tokens, traits_of
from brightrun.pricing import ModelPrice, PriceTable
from brightrun.settings import Settings
from models.enums import DeliveryMode, MessageBatchState, Tier
from models.messages import NIL_UUID, TokenUsage
from models.tables import Conversation, MessageBatch, PromptTemplate
from service.batches import LaunchedJob, LaunchRequest, launch, resolve_launch

log = get_logger(__name__)

# Past conversations per template that make its history, newest first.
HISTORY_CONVERSATIONS = 500
# A Message Batch without history to go by: Anthropic says most batches end within an hour.
BATCH_SECONDS_WITHOUT_HISTORY = 3600.0
# What count_tokens is asked for a system text alone (it needs one message): this message's
# count is subtracted again.
_PROBE_MESSAGE = "."


class JobEstimate(BaseModel):
    """What a job would be, cost and take. `estimated_cost_usd` is online and
    `estimated_cost_usd_batch` in a Message Batch, both with prompt caching as the engine asks
    for it; `..._without_cache` is what the same tokens cost with no caching."""

    items: int
    mode: DeliveryMode
    tier: Tier
    model: str
    templates: list[str]  # name (vN) of each template the items would use
    distinct_prompts: int
    prompts_counted: int  # distinct prompts counted by count_tokens; the rest scaled by their length
    input_tokens_counted_by: str  # "count_tokens", or "characters" when token counting failed
    input_tokens: int  # every prompt token, cached or not
    cache_write_tokens: int
    cache_read_tokens: int
    output_tokens: int
    output_tokens_from: str  # "history of N conversations", "max_tokens", or both for several templates
    estimated_cost_usd: float
    estimated_cost_usd_batch: float
    estimated_cost_usd_without_cache: float
    estimated_cost_usd_batch_without_cache: float
    # In the job's mode, with caching: the mean item, and the costliest one (the longest prompt,
    # writing the cache), which is the budget's projection of an item before any has run.
    cost_per_item_usd: float
    max_item_cost_usd: float
    estimated_seconds: float  # in the job's mode
    estimated_seconds_online: float
    estimated_seconds_batch: float
    unresolvable_items: int = 0  # items whose prompt cannot be made (they would fail at once)
    unresolvable_reason: str | None = None

    def job_cost_usd(self) -> float:
        return self.estimated_cost_usd_batch if self.mode == DeliveryMode.BATCH else self.estimated_cost_usd


@dataclass(frozen=True)
class _Prompt:
    template_id: uuid.UUID
    system: str
    user: str


@dataclass
class _TemplatePlan:
    template: PromptTemplate
    requests: int = 0
    system_tokens: int = 0
    output_tokens: float = 0.0
    history: int = 0  # conversations its output tokens are the mean of
    latency_s: float | None = None


async def estimate_job(
    sessions: async_sessionmaker,
    claude: AsyncAnthropic,
    settings: Settings,
    request: LaunchRequest,
    prices: PriceTable | None = None,
) -> JobEstimate:
    """The estimate of the job `request` would launch; creates nothing. BatchInputError for a
    request `launch` would refuse."""
    price = (prices or PriceTable.load(settings.model_prices_file)).price_of(settings.claude_model)
    async with sessions() as session:
        launch = await resolve_launch(session, request)
        templates = await _templates_by_arc(session, launch.template_id, request.tier, {a.arc_type for _, a, _ in launch.combinations})
        plans = {t.id: _TemplatePlan(t) for t in templates.values() if t is not None}
        for plan in plans.values():
            await _read_history(session, settings.claude_model, plan)
        batch_seconds = await _mean_batch_seconds(session)
    prompts: Counter[_Prompt] = Counter()
    unresolvable, reason = 0, None
    for persona, arc, topic in launch.combinations:
        template = templates[arc.arc_type]
        if template is None:
            unresolvable += request.samples
            reason = f"no active prompt template for arc type {arc.arc_type!r} and tier {request.tier.value!r}"
            continue
        for sample in range(1, request.samples + 1):
            try:
                text = prompt_text(template, persona, arc, topic, request.tier, sample)
            except ApplicationError as error:
                unresolvable, reason = unresolvable + 1, error.message
                continue
            prompts[_Prompt(template.id, text["system"], text["user"])] += 1
            plans[template.id].requests += 1

    counter = _TokenCounter(claude, settings)
    prompt_tokens = await counter.prompt_tokens(list(prompts))
    for plan in plans.values():
        if plan.requests:
            plan.system_tokens = await counter.system_tokens(plan.template.system_text)
        if not plan.history:
            plan.output_tokens = settings.claude_max_tokens(request.tier)

    cache_min = traits_of(settings.claude_model).cache_min_tokens
    costs = _Costs(price)
    first_of_template: set[uuid.UUID] = set()
    for prompt, count in prompts.items():
        plan = plans[prompt.template_id]
        cached = plan.system_tokens if plan.system_tokens >= cache_min else 0
        # The template's first request writes its system text to the cache; the others read it.
        writes = 0 if prompt.template_id in first_of_template else 1
        first_of_template.add(prompt.template_id)
        costs.add(prompt_tokens[prompt], cached, round(plan.output_tokens), count, writes)

    items = launch.total
    calls = sum(prompts.values())
    online_s = _online_seconds(settings, request.concurrency, calls, plans.values())
    batch_s = (settings.message_batch_gather_s + batch_seconds) if calls else 0.0
    job_cost = costs.batch if request.mode == DeliveryMode.BATCH else costs.online
    return JobEstimate(
        items=items,
        mode=request.mode,
        tier=request.tier,
        model=settings.claude_model,
        templates=sorted(f"{p.template.name} (v{p.template.version})" for p in plans.values() if p.requests),
        distinct_prompts=len(prompts),
        prompts_counted=counter.counted,
        input_tokens_counted_by="count_tokens" if counter.failure is None else "characters",
        input_tokens=costs.usage.input_tokens + costs.usage.cache_creation_input_tokens + costs.usage.cache_read_input_tokens,
        cache_write_tokens=costs.usage.cache_creation_input_tokens,
        cache_read_tokens=costs.usage.cache_read_input_tokens,
        output_tokens=costs.usage.output_tokens,
        output_tokens_from=_output_source(plans.values()),
        estimated_cost_usd=round(costs.online, 6),
        estimated_cost_usd_batch=round(costs.batch, 6),
        estimated_cost_usd_without_cache=round(costs.online_uncached, 6),
        estimated_cost_usd_batch_without_cache=round(costs.batch_uncached, 6),
        cost_per_item_usd=round(job_cost / calls, 8) if calls else 0.0,
        max_item_cost_usd=round(costs.max_batch if request.mode == DeliveryMode.BATCH else costs.max_online, 8),
        estimated_seconds=round(batch_s if request.mode == DeliveryMode.BATCH else online_s, 1),
        estimated_seconds_online=round(online_s, 1),
        estimated_seconds_batch=round(batch_s, 1),
        unresolvable_items=unresolvable,
        unresolvable_reason=reason,
    )


async def launch_estimated(
    sessions: async_sessionmaker, temporal: Client, claude: AsyncAnthropic, settings: Settings, request: LaunchRequest
) -> tuple[LaunchedJob, JobEstimate]:
    """Estimate the job, then launch it with its estimate (kept on the job, and the budget's
    projection of an item's cost)."""
    estimate = await estimate_job(sessions, claude, settings, request)
    job = await launch(sessions, temporal, settings, request, estimate.model_dump(mode="json"))
    return job, estimate


async def _templates_by_arc(
    session: AsyncSession, chosen: uuid.UUID, tier: Tier, arc_types: set[str]
) -> dict[str, PromptTemplate | None]:
    """The template each arc type's items would use: the chosen one, or the one auto-selection picks."""
    by_arc: dict[str, PromptTemplate | None] = {}
    for arc_type in sorted(arc_types):
        template_id = chosen if chosen != NIL_UUID else await auto_selected_template(session, arc_type, tier)
        by_arc[arc_type] = await session.get(PromptTemplate, template_id) if template_id is not None else None
    return by_arc


async def _read_history(session: AsyncSession, model: str, plan: _TemplatePlan) -> None:
    """The mean output tokens and latency of the template's latest conversations by this model."""
    metadata = Conversation.generation_metadata
    recent = (
        select(
            metadata["usage"]["output_tokens"].astext.cast(Float).label("output_tokens"),
            metadata["latency_ms"].astext.cast(Float).label("latency_ms"),
        )
        .where(Conversation.template_id == plan.template.id, metadata["model"].astext.startswith(model))
        .order_by(Conversation.created_at.desc())
        .limit(HISTORY_CONVERSATIONS)
        .subquery()
    )
    count, output, latency_ms = (
        await session.execute(select(func.count(), func.avg(recent.c.output_tokens), func.avg(recent.c.latency_ms)))
    ).one()
    if count and output is not None:
        plan.history, plan.output_tokens = count, float(output)
        plan.latency_s = float(latency_ms) / 1000 if latency_ms is not None else None


async def _mean_batch_seconds(session: AsyncSession) -> float:
    """How long the latest Message Batches took from submission to their end."""
    recent = (
        select((func.extract("epoch", MessageBatch.ended_at) - func.extract("epoch", MessageBatch.submitted_at)).label("s"))
        .where(MessageBatch.status == MessageBatchState.ENDED.value, MessageBatch.submitted_at.is_not(None))
        .order_by(MessageBatch.ended_at.desc())
        .limit(50)
        .subquery()
    )
    mean = await session.scalar(select(func.avg(recent.c.s)))
    return float(mean) if mean is not None else BATCH_SECONDS_WITHOUT_HISTORY


def _online_seconds(settings: Settings, concurrency: int, calls: int, plans: Iterable[_TemplatePlan]) -> float:
    """Calls at CLAUDE_CALLS_PER_MINUTE; or, when calls last longer than the rate spaces them,
    rounds of `concurrency` calls at the history's mean latency."""
    at_rate = calls * 60 / settings.claude_calls_per_minute
    latencies = [(p.latency_s, p.requests) for p in plans if p.latency_s]
    if not latencies or not calls:
        return at_rate
    mean_latency = sum(s * n for s, n in latencies) / max(1, sum(n for _, n in latencies))
    return max(at_rate, math.ceil(calls / concurrency) * mean_latency)


def _output_source(plans: Iterable[_TemplatePlan]) -> str:
    sources = sorted({f"history of {p.history} conversations" if p.history else "max_tokens" for p in plans if p.requests})
    return " and ".join(sources) or "none"


class _Costs:
    """Every request priced on its own (a long prompt has its own rates), online and in a batch,
    with and without the cached system text."""

    def __init__(self, price: ModelPrice) -> None:
        self._price = price
        self.usage = TokenUsage()
        self.online = self.batch = self.online_uncached = self.batch_uncached = 0.0
        self.max_online = self.max_batch = 0.0  # the costliest single request

    def add(self, prompt_tokens: int, cached: int, output_tokens: int, count: int, writes: int) -> None:
        uncached = TokenUsage(input_tokens=prompt_tokens, output_tokens=output_tokens)
        read = TokenUsage(input_tokens=prompt_tokens - cached, cache_read_input_tokens=cached, output_tokens=output_tokens)
        write = TokenUsage(input_tokens=prompt_tokens - cached, cache_creation_input_tokens=cached, output_tokens=output_tokens)
        reads = count - writes
        price = self._price
        self.online += writes * price.cost_usd(write) + reads * price.cost_usd(read)
        # A batch asks for the 1-hour cache (a batch may outlast the 5-minute one).
        self.batch += writes * price.cost_usd(write, batch=True) + reads * price.cost_usd(read, batch=True)
        self.online_uncached += count * price.cost_usd(uncached)
        self.batch_uncached += count * price.cost_usd(uncached, batch=True)
        self.max_online = max(self.max_online, price.cost_usd(write))
        self.max_batch = max(self.max_batch, price.cost_usd(write, batch=True))
        for usage, times in ((write, writes), (read, reads)):
            self.usage += usage.model_copy(update={k: v * times for k, v in usage.model_dump().items()})


def _scaled(prompt: _Prompt, tokens_per_char: float | None) -> int:
    """An uncounted prompt's tokens: at the counted prompts' tokens per character, else at about
    four characters a token."""
    if tokens_per_char is None:
        return estimated_tokens(prompt.system) + estimated_tokens(prompt.user)
    return round((len(prompt.system) + len(prompt.user)) * tokens_per_char)


class _TokenCounter:
    """count_tokens on the requests the items would send, each distinct one once, at most
    `estimate_max_token_counts` of them, a few at a time. If counting fails (no network, a
    refusal), every prompt is counted by its characters instead, and the estimate says so."""

    def __init__(self, claude: AsyncAnthropic, settings: Settings) -> None:
        self._claude = claude
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.estimate_token_count_concurrency)
        self.counted = 0
        self.failure: str | None = None

    async def prompt_tokens(self, prompts: list[_Prompt]) -> dict[_Prompt, int]:
        limit = self._settings.estimate_max_token_counts
        # Evenly spread over the job when there are more than the limit (samples, long lists).
        chosen = prompts if len(prompts) <= limit else [prompts[i * len(prompts) // limit] for i in range(limit)]
        counts = await asyncio.gather(*(self._count(p.system, p.user) for p in chosen))
        exact = {p: n for p, n in zip(chosen, counts, strict=True) if n is not None}
        self.counted = len(exact)
        counted_chars = sum(len(p.system) + len(p.user) for p in exact)
        tokens_per_char = sum(exact.values()) / counted_chars if counted_chars else None
        return {p: exact[p] if p in exact else _scaled(p, tokens_per_char) for p in prompts}

    async def system_tokens(self, system: str) -> int:
        """The template's system text alone: the part of every prompt that is cached."""
        with_system, probe = await asyncio.gather(self._count(system, _PROBE_MESSAGE), self._count(None, _PROBE_MESSAGE))
        if with_system is None or probe is None:
            return estimated_tokens(system)
        return with_system - probe

    async def _count(self, system: str | None, user: str) -> int | None:
        if self.failure is not None:
            return None
        async with self._slots:
            try:
                counted = await self._claude.messages.count_tokens(
                    model=self._settings.claude_model,
                    messages=[{"role": "user", "content": user}],
                    # The shape the items send: the system text as one block marked for caching.
                    system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}] if system is not None else omit,
                    timeout=self._settings.estimate_token_count_timeout_s,
                )
            except (APIStatusError, APIConnectionError) as error:
                if self.failure is None:
                    log.warning("token counting failed; counting by characters", error=str(error))
                self.failure = str(error)
                return None
        return counted.input_tokens
