"""Every setting of the engine, read from environment variables in one place.

docs/settings.md lists each variable with its default. Secrets are `SecretStr` so they never
print in a repr, a log line or a workflow history.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from brightrun.model_traits import traits_of
from models.enums import Tier

STANDIN_API_KEY = "standin-offline-key"
# Written by `make up` in the checkout: the local stack's addresses, for commands run without
# sourcing it. Environment variables still win over it.
DEVSTACK_ENV_FILE = Path(__file__).resolve().parent.parent / ".devstack" / "env"


def stack_env_file() -> Path | None:
    """The local stack's env file (BRIGHTRUN_STACK_ENV_FILE names another one), if it exists."""
    path = Path(os.environ.get("BRIGHTRUN_STACK_ENV_FILE", DEVSTACK_ENV_FILE))
    return path if path.is_file() else None
CLAUDE_STORAGE_MARGIN_S = 30.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # Temporal
    # Unset: Temporal's environment configuration decides (a profile, else 127.0.0.1:7233, default).
    temporal_address: str | None = None
    temporal_namespace: str | None = None
    temporal_ui_url: str = "http://127.0.0.1:8233"
    task_queue: str = "brightrun-batch"

    # PostgreSQL. Any of postgresql://, postgres:// or postgresql+asyncpg:// is accepted.
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/brightrun"

    # S3 storage
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    aws_access_key_id: str = "brightrun"
    aws_secret_access_key: SecretStr = SecretStr("brightrun")
    conversation_bucket: str = "conversation-files"
    log_bucket: str = "batch-logs"

    # Claude
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    claude_model: str = "claude-sonnet-4-6"
    # Output budget per tier (Anthropic reserves output-token rate limit from max_tokens); a model
    # that thinks gets its thinking reserve on top (brightrun/model_traits.py).
    claude_max_tokens_by_tier: dict[Tier, int] = Field(
        default={Tier.TEMPLATE: 4096, Tier.SCENARIO: 6144, Tier.EDGE_CASE: 6144}
    )
    # The HTTP timeout of a call grows with its max_tokens: base + max_tokens / slowest tokens per second.
    # One attempt's start-to-close adds the longest rate-limit wait and a margin for storage.
    claude_timeout_base_s: float = Field(default=60.0, gt=0)
    claude_min_output_tokens_per_s: float = Field(default=20.0, gt=0)
    # A call heartbeats every few seconds, even while no byte arrives: a lost worker or a
    # cancellation is noticed within this timeout.
    claude_heartbeat_timeout_s: float = Field(default=20.0, ge=1)
    # Claude calls run on their own task queue: a calls-per-minute limit for all workers of the
    # queue together (evenly spaced turns from the database). A worker takes a call from the
    # queue once it has a turn (activities/claude_slots.py), so the calls in flight follow the
    # rate and the latency; this caps them per worker, by default at what the rate allows while
    # the slowest call lasts (claude_max_calls_in_flight).
    claude_task_queue: str = "brightrun-claude"
    claude_calls_per_minute: float = Field(default=50.0, gt=0)
    claude_max_concurrent_calls: int | None = Field(default=None, ge=1)
    # Below this share of the remaining request or token budget (anthropic-ratelimit-* headers),
    # the next call waits for the budget's reset.
    claude_rate_limit_low_watermark: float = Field(default=0.05, ge=0, lt=1)
    # The longest such wait before one call; after it the call is tried (a 429 then says how long).
    claude_rate_limit_max_wait_s: float = Field(default=60.0, ge=0)
    model_prices_file: Path | None = None
    # Conversations scoring below this quality (0..1) fail with the reason.
    quality_min_score: float = Field(default=0.5, ge=0, le=1)
    # Attempts per Claude call before the item fails, and the backoff between them.
    claude_max_attempts: int = Field(default=6, ge=1)
    claude_retry_base_s: float = Field(default=2.0, gt=0)
    claude_retry_cap_s: float = Field(default=60.0, gt=0)

    # The cost estimate (`launch --dry-run`, and every launch): distinct prompts counted with the
    # API's count_tokens at most (it has its own rate limit; the rest are scaled from them by
    # their length), counts at once, and each count's timeout.
    estimate_max_token_counts: int = Field(default=50, ge=1, le=10_000)
    estimate_token_count_concurrency: int = Field(default=4, ge=1, le=100)
    estimate_token_count_timeout_s: float = Field(default=10.0, gt=0)
    # Claude as judge (docs/judge.md): the model that scores each conversation against the job's
    # rubric (the smallest priced: a verdict must cost a tenth of a generation or less, and with
    # claude-haiku-4-5 it costs 13-15%, bench/results/judge.json), and its output budget (a verdict
    # of five scores and one-sentence reasons is about 300 tokens; a thinking model's reserve is
    # added, brightrun/model_traits.py).
    judge_model: str = "claude-haiku-5-5"
    judge_max_tokens: int = Field(default=1024, ge=256)

    # Message Batches mode (launch --mode batch): batch size and bytes below the API's limits
    # (100,000 requests, 256 MB), how long a batch gathers requests, how often open ones are polled.
    message_batch_max_requests: int = Field(default=10_000, ge=1, le=100_000)
    message_batch_max_bytes: int = Field(default=100_000_000, ge=1_000, le=256_000_000)
    message_batch_gather_s: float = Field(default=5.0, ge=0)
    message_batch_poll_initial_s: float = Field(default=10.0, gt=0)
    message_batch_poll_max_s: float = Field(default=300.0, gt=0)
    message_batch_in_flight_items: int = Field(default=10_000, ge=1)

    # Batch defaults
    default_user_id: str = "local-user"
    default_concurrency: int = Field(default=3, ge=1, le=100)
    item_page_size: int = Field(default=100, ge=1, le=1000)
    # The batch workflow continues as new once its history passes this many events.
    history_event_limit: int = Field(default=2000, ge=50)
    # How often a job checks its in-flight items for a workflow that ended without reporting.
    unreported_check_s: float = Field(default=60.0, gt=0)

    # Enrichment, when a job's items are done: conversations per activity call, and the estimated
    # Jaccard similarity (word 5-grams) from which a conversation is a near-duplicate of an earlier one.
    enrichment_page_size: int = Field(default=200, ge=1, le=5000)
    near_duplicate_threshold: float = Field(default=0.8, gt=0, le=1)

    # Export: conversations per page (one activity each), and the system prompt every exported
    # conversation starts with (the assistant's role, as the fine-tuned model will be prompted).
    export_page_size: int = Field(default=500, ge=1, le=10000)
    export_system_prompt: str = (
        "You are an empathetic, competent financial advisor. You explain money matters in plain "
        "language, follow the client's feelings as well as their questions, never promise returns "
        "and never give legal advice."
    )

    worker_max_concurrent_activities: int = Field(default=100, ge=1)
    # Workflow tasks run under one interpreter lock, so more at once only stretches each: with
    # 200 at once, a 10,000-item job's tasks took 12-37 s and timed out (retried, replayed, and
    # its run passed 2,000 events).
    worker_max_concurrent_workflow_tasks: int = Field(default=10, ge=2)
    # On SIGTERM or SIGINT a worker takes no new tasks and gives its running activities (paid
    # Claude calls above all) this long to finish before it cancels them.
    worker_shutdown_grace_s: float = Field(default=300.0, ge=0)

    # The review workspace (`python -m web`): where it listens, how long a sign-in lasts, and how
    # many bad passwords in a row refuse a user's sign-in for how long. Behind TLS, set
    # WEB_SECURE_COOKIES=true so the session cookie is never sent in clear.
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8800, ge=1, le=65535)
    web_secure_cookies: bool = False
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    sign_in_max_failures: int = Field(default=10, ge=1)
    sign_in_throttle_s: float = Field(default=900.0, gt=0)

    # Logging: "auto" = readable on a terminal, JSON otherwise.
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = "INFO"

    @field_validator("anthropic_api_key", "anthropic_base_url", "temporal_address", "temporal_namespace", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _asyncpg_driver(cls, url: str) -> str:
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise ValueError("must be a postgresql:// URL (postgres:// and postgresql+asyncpg:// work too)")

    def claude_max_tokens(self, tier: Tier) -> int:
        """The tier's output budget, plus room for the model's thinking, which spends the same budget."""
        return self.claude_max_tokens_by_tier[tier] + traits_of(self.claude_model).max_tokens_reserve

    def claude_timeout_s(self, tier: Tier) -> float:
        """The SDK's timeout for one call of this tier."""
        return self.claude_timeout_base_s + self.claude_max_tokens(tier) / self.claude_min_output_tokens_per_s

    def claude_max_calls_in_flight(self) -> int:
        """A worker's cap on Claude calls in flight: the setting, else every call the rate lets
        start within the slowest tier's timeout (the most that can be in flight at once)."""
        if self.claude_max_concurrent_calls is not None:
            return self.claude_max_concurrent_calls
        slowest_s = max(self.claude_timeout_s(tier) for tier in Tier)
        return max(1, math.ceil(self.claude_calls_per_minute * slowest_s / 60))

    def claude_attempt_timeout_s(self, tier: Tier) -> float:
        """Start-to-close of one attempt: a rate-limit wait, the call, then the raw response's upload."""
        return self.claude_rate_limit_max_wait_s + self.claude_timeout_s(tier) + CLAUDE_STORAGE_MARGIN_S

    def judge_call_max_tokens(self) -> int:
        """A judge call's output budget, plus room for the judge model's thinking, if it thinks."""
        return self.judge_max_tokens + traits_of(self.judge_model).max_tokens_reserve

    def judge_timeout_s(self) -> float:
        """The SDK's timeout for one judge call, sized like a generation's from its max_tokens."""
        return self.claude_timeout_base_s + self.judge_call_max_tokens() / self.claude_min_output_tokens_per_s

    def judge_attempt_timeout_s(self) -> float:
        return self.claude_rate_limit_max_wait_s + self.judge_timeout_s() + CLAUDE_STORAGE_MARGIN_S

    @property
    def uses_standin(self) -> bool:
        """True when no API key is set: the SDK talks to the offline stand-in."""
        return self.anthropic_api_key is None

    def anthropic_key_value(self) -> str:
        return self.anthropic_api_key.get_secret_value() if self.anthropic_api_key else STANDIN_API_KEY


class SettingsError(ValueError):
    """A setting's value does not validate; the message names each variable, in one line."""


def load_settings(env_file: Path | None = None) -> Settings:
    """Settings from environment variables, then env_file; raises SettingsError."""
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        # The variable and the reason, never the value: it may hold a password or a key.
        problems = (
            f"{'.'.join(str(part) for part in error['loc']).upper()}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings: environment variables, then the local stack's env file if any."""
    return load_settings(stack_env_file())
