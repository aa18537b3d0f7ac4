"""Database and storage failures, classified the way the Claude call's are: an outage (PostgreSQL
or S3 unreachable, overloaded, restarting) is retried until the part is back; a refusal (a
constraint, a bad value, a wrong query, a missing bucket, access denied) fails the step at once
with the part's own words, which reach the item row.

Every data activity wears `@classify_data_errors` (under `@activity.defn`)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import sqlalchemy.exc
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import (
    DATABASE_ERROR,
    DATABASE_UNAVAILABLE,
    OUTAGE_PARTS,
    STORAGE_ERROR,
    STORAGE_UNAVAILABLE,
)
from models.messages import OutageDetails

P = ParamSpec("P")
R = TypeVar("R")

# SQLSTATE classes (the first two characters) that no retry can fix: data exceptions, integrity
# violations, bad queries or privileges, authentication, a missing database or schema.
_PERMANENT_SQLSTATE_CLASSES = {"0A", "21", "22", "23", "28", "3D", "3F", "42", "44"}
# The write itself was refused: a constraint or a value that does not fit.
_REFUSED_WRITE_CLASSES = {"22", "23"}
# Connection exceptions, insufficient resources (too many connections), operator intervention
# (shutdown, cannot connect now), system errors: the server is not there for us right now.
_OUTAGE_SQLSTATE_CLASSES = {"08", "53", "57", "58"}
# S3 error codes a later attempt gets past; every other client error is a refusal.
_TRANSIENT_S3_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "503"}


def classify_data_errors(step: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Re-raise the step's database and storage failures as typed ApplicationErrors; anything
    else (its own ApplicationErrors, a cancellation) passes unchanged."""

    @functools.wraps(step)
    async def classified(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await step(*args, **kwargs)
        except ApplicationError:
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            # Without the cause's chain of tracebacks: the server keeps a pending activity's
            # last failure only up to a few KB, and `status` reads it from there.
            raise failure from None

    return classified


def classify(exc: BaseException) -> ApplicationError | None:
    """The failure Temporal should act on, or None when the error is neither the database's nor
    the storage's (Temporal then retries it as it is)."""
    if isinstance(exc, (ClientError, BotoCoreError)):
        return classify_storage_error(exc)
    return _database_error(exc)


def classify_storage_error(exc: ClientError | BotoCoreError) -> ApplicationError:
    """A storage failure: an outage (retried) or a refusal (never)."""
    if isinstance(exc, ClientError):
        return _storage_client_error(exc)
    if isinstance(exc, (HTTPClientError, BotoConnectionError)):
        return outage(STORAGE_UNAVAILABLE, f"{_first_line(exc)}{_object_of(exc)}")
    # bad parameters, no credentials: a retry changes nothing
    said = f"{_first_line(exc)}{_object_of(exc)}"
    return ApplicationError(f"storage refused the request: {said}", type=STORAGE_ERROR, non_retryable=True)


def outage(error_type: str, reason: str) -> ApplicationError:
    """A retryable failure that says which part is down and, in its details, since when this
    step has waited for it (the first attempt's schedule time: every attempt since has failed)."""
    part = OUTAGE_PARTS[error_type]
    since = activity.info().scheduled_time if activity.in_activity() else None
    return ApplicationError(
        f"{part} unavailable: {reason}",
        OutageDetails(part=part, since=since),
        type=error_type,
    )


def _database_error(exc: BaseException) -> ApplicationError | None:
    sqlstate, message, detail = _postgres_error(exc)
    if sqlstate is not None:
        if sqlstate[:2] in _PERMANENT_SQLSTATE_CLASSES:
            what = "write" if sqlstate[:2] in _REFUSED_WRITE_CLASSES else "query"
            said = f"{message} ({detail})" if detail else message
            return ApplicationError(f"database refused the {what}: {said}", type=DATABASE_ERROR, non_retryable=True)
        if sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES:
            return outage(DATABASE_UNAVAILABLE, message)
        return None  # a deadlock, a lock or statement timeout: retried as it is
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # no pooled connection came free in time
        return outage(DATABASE_UNAVAILABLE, _first_line(exc))
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, (sqlalchemy.exc.InterfaceError, sqlalchemy.exc.OperationalError))
    ):
        return outage(DATABASE_UNAVAILABLE, _first_line(exc.orig or exc))
    # asyncpg connects with plain sockets: a refused, missing (unix socket) or timed-out connect
    # is an OSError. Only the driver's own count: a missing file elsewhere is no outage.
    if isinstance(exc, (OSError, TimeoutError)) and _raised_in_database_driver(exc):
        return outage(DATABASE_UNAVAILABLE, _first_line(exc))
    return None


def _raised_in_database_driver(exc: BaseException) -> bool:
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").startswith(("asyncpg.", "sqlalchemy.")):
            return True
        frame = frame.tb_next
    return False


def _postgres_error(exc: BaseException) -> tuple[str | None, str, str | None]:
    """SQLSTATE, message and detail of the server's error under SQLAlchemy's wrappers."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and seen.args:
            # asyncpg's own error carries the server's words; SQLAlchemy's adapter repeats them.
            origin = seen.__cause__ if getattr(seen.__cause__, "sqlstate", None) == sqlstate else seen
            return sqlstate, _first_line(origin), getattr(origin, "detail", None)
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None, "", None


def _storage_client_error(exc: ClientError) -> ApplicationError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    said = f"{code}: {error.get('Message') or _first_line(exc)}{_object_of(exc)}"
    if code in _TRANSIENT_S3_CODES or status >= 500 or status in (408, 429):
        return outage(STORAGE_UNAVAILABLE, said)
    return ApplicationError(f"storage refused the request: {said}", type=STORAGE_ERROR, non_retryable=True)


def _object_of(exc: BaseException) -> str:
    """The bucket and key brightrun.storage noted on the error, when it did."""
    notes = getattr(exc, "__notes__", None)
    return f" ({notes[-1]})" if notes else ""


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__
