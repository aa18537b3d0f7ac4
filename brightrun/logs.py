"""structlog, configured once per process: JSON in production, readable on a terminal.

Temporal's own stdlib loggers go through the same renderer, and inside an activity every line
carries the workflow id, the activity type and the attempt.
"""

from __future__ import annotations

import logging
import sys

import structlog
from temporalio import activity

from brightrun.settings import Settings

_ID_PREFIXES = {"batch-job-": "job_id", "batch-item-": "item_id"}


def _add_temporal_context(_logger: object, _method: str, event: dict) -> dict:
    """Inside an activity: the workflow, activity and attempt, and the job or item id that the
    workflow id carries (batch-job-{job_id}, batch-item-{item_id})."""
    if activity.in_activity():
        info = activity.info()
        event.setdefault("workflow_id", info.workflow_id)
        event.setdefault("activity", info.activity_type)
        event.setdefault("attempt", info.attempt)
        for prefix, key in _ID_PREFIXES.items():
            if info.workflow_id and info.workflow_id.startswith(prefix):
                event.setdefault(key, info.workflow_id.removeprefix(prefix))
    return event


def configure_logging(settings: Settings) -> None:
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stdout.isatty())
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Fields passed as `extra=` by stdlib loggers, e.g. Temporal's workflow.logger context.
        structlog.stdlib.ExtraAdder(),
        _add_temporal_context,
    ]
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.dict_tracebacks] if use_json else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Per-request lines from HTTP clients would drown the batch's own events.
    for noisy in ("httpx", "httpx2", "httpcore", "botocore", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)

