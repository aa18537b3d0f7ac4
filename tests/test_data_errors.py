"""Database and storage failures as the data activities report them: the real PostgreSQL and
SeaweedFS refuse or go missing, and the classifier says "retry until it is back" or "never"."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from pathlib import Path

import asyncpg
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.data_errors import classify, classify_data_errors
from activities.errors import DATABASE_ERROR, DATABASE_UNAVAILABLE, STORAGE_ERROR, STORAGE_UNAVAILABLE
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.devstack import free_port
from models.enums import Tier
from models.tables import BatchItem
from service import batches
from workflows.config import DATA_STEP


@classify_data_errors
async def run_sql(sessions: async_sessionmaker, *statements: str) -> None:
    async with sessions.begin() as session:
        for statement in statements:
            await session.execute(text(statement))


async def raised_by(step: Awaitable[object]) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await step
    return raised.value


def closed_port_url() -> str:
    return f"postgresql+asyncpg://brightrun@127.0.0.1:{free_port()}/brightrun"


async def test_a_foreign_key_violation_fails_at_once_quoting_the_constraint(sessions: async_sessionmaker) -> None:
    job_id, _ = await batches.create_job(
        sessions,
        batches.LaunchRequest(personas=["David Chen"], arcs=["Grief -> Acceptance"], topics=["Paying Down Debt"], tier=Tier.TEMPLATE),
    )

    @classify_data_errors
    async def link_to_a_missing_conversation() -> None:
        async with sessions.begin() as session:
            await session.execute(update(BatchItem).where(BatchItem.batch_job_id == job_id).values(conversation_id=uuid.uuid4()))

    error = await raised_by(link_to_a_missing_conversation())

    assert error.type == DATABASE_ERROR and error.non_retryable
    assert error.message.startswith(
        'database refused the write: insert or update on table "batch_items" violates foreign key constraint '
        '"fk_batch_items_conversation_id_conversations" (Key (conversation_id)=('
    )
    assert 'is not present in table "conversations"' in error.message


@pytest.mark.parametrize(
    ("statements", "words"),
    [
        (["CREATE TEMP TABLE t (v varchar(3))", "INSERT INTO t VALUES ('abcd')"], "value too long for type character varying(3)"),
        (["CREATE TEMP TABLE t (v int NOT NULL)", "INSERT INTO t VALUES (NULL)"], 'null value in column "v" of relation "t"'),
        (["CREATE TEMP TABLE t (v int UNIQUE)", "INSERT INTO t VALUES (1), (1)"], 'duplicate key value violates unique constraint "t_v_key"'),
        (["CREATE TEMP TABLE t (v int CHECK (v > 0))", "INSERT INTO t VALUES (0)"], 'violates check constraint "t_v_check"'),
        (["SELECT CAST('not-a-uuid' AS uuid)"], 'invalid input syntax for type uuid: "not-a-uuid"'),
    ],
)
async def test_constraint_and_data_errors_are_refused_writes(
    sessions: async_sessionmaker, statements: list[str], words: str
) -> None:
    error = await raised_by(run_sql(sessions, *statements))

    assert (error.type, error.non_retryable) == (DATABASE_ERROR, True)
    assert error.message.startswith("database refused the write: ") and words in error.message


async def test_a_programming_error_is_permanent(sessions: async_sessionmaker) -> None:
    error = await raised_by(run_sql(sessions, "SELECT no_such_column FROM batch_items"))

    assert (error.type, error.non_retryable) == (DATABASE_ERROR, True)
    assert error.message == 'database refused the query: column "no_such_column" does not exist'


@pytest.mark.parametrize(
    ("server", "words"),
    [
        ("a closed port", "Connect call failed"),
        ("a unix socket nobody serves", "No such file or directory"),  # embedded PostgreSQL stopped
    ],
)
async def test_a_server_that_is_not_there_is_an_outage_that_is_retried(
    stack_settings: Settings, tmp_path: Path, server: str, words: str
) -> None:
    url = closed_port_url() if server == "a closed port" else f"postgresql+asyncpg://brightrun@/brightrun?host={tmp_path}"
    engine = create_engine(stack_settings.model_copy(update={"database_url": url}))
    try:
        error = await raised_by(run_sql(create_sessionmaker(engine), "SELECT 1"))
    finally:
        await engine.dispose()

    assert (error.type, error.non_retryable) == (DATABASE_UNAVAILABLE, False)
    assert error.message.startswith("PostgreSQL unavailable: ") and words in error.message
    assert error.details[0].part == "PostgreSQL"


async def test_a_terminated_connection_is_an_outage(sessions: async_sessionmaker) -> None:
    error = await raised_by(run_sql(sessions, "SELECT pg_terminate_backend(pg_backend_pid())"))

    assert (error.type, error.non_retryable) == (DATABASE_UNAVAILABLE, False)
    assert "terminating connection due to administrator command" in error.message


async def test_too_many_connections_and_cannot_connect_now_are_outages() -> None:
    for exc in (asyncpg.TooManyConnectionsError("sorry, too many clients already"),
                asyncpg.CannotConnectNowError("the database system is starting up")):
        error = classify(exc)
        assert error is not None
        assert (error.type, error.non_retryable) == (DATABASE_UNAVAILABLE, False)
        assert error.message.startswith(f"PostgreSQL unavailable: {exc.args[0]}")


async def test_an_unreachable_s3_endpoint_is_an_outage(stack_settings: Settings) -> None:
    storage = Storage(stack_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}))

    error = await raised_by(classify_data_errors(storage.get_bytes)(storage.conversation_bucket, "raw/u/x_raw.json"))

    assert (error.type, error.non_retryable) == (STORAGE_UNAVAILABLE, False)
    assert error.message.startswith("S3 storage unavailable: Could not connect to the endpoint URL")
    assert f"(s3://{storage.conversation_bucket}/raw/u/x_raw.json)" in error.message


async def test_a_missing_bucket_fails_at_once_naming_it(stack_settings: Settings) -> None:
    storage = Storage(stack_settings)

    error = await raised_by(classify_data_errors(storage.get_bytes)("no-such-bucket", "a/b.json"))

    assert (error.type, error.non_retryable) == (STORAGE_ERROR, True)
    assert error.message.startswith("storage refused the request: NoSuchBucket: ")
    assert error.message.endswith("(s3://no-such-bucket/a/b.json)")


def s3_error(code: str, status: int) -> ClientError:
    response = {"Error": {"Code": code, "Message": f"{code} said"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500), ("BadGateway", 502)])
def test_s3_overload_and_5xx_are_outages(code: str, status: int) -> None:
    error = classify(s3_error(code, status))

    assert error is not None
    assert (error.type, error.non_retryable) == (STORAGE_UNAVAILABLE, False)
    assert error.message.startswith(f"S3 storage unavailable: {code}: {code} said")


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "NoSuchBucket", "SignatureDoesNotMatch"])
def test_s3_refusals_are_permanent(code: str) -> None:
    error = classify(s3_error(code, 403))

    assert error is not None
    assert (error.type, error.non_retryable) == (STORAGE_ERROR, True)
    assert error.message == f"storage refused the request: {code}: {code} said"


async def test_an_error_of_neither_part_is_left_to_temporal(tmp_path: Path) -> None:
    assert classify(KeyError("persona_id")) is None

    @classify_data_errors
    async def read_a_missing_file() -> bytes:
        return (tmp_path / "missing.json").read_bytes()

    with pytest.raises(FileNotFoundError):  # an OSError, but not the database's
        await read_a_missing_file()


def test_data_steps_never_run_out_of_attempts_and_retry_soon_after_a_part_is_back() -> None:
    policy = DATA_STEP["retry_policy"]

    assert policy is not None
    assert policy.maximum_attempts == 0
    assert policy.maximum_interval is not None and policy.non_retryable_error_types is not None
    assert policy.maximum_interval.total_seconds() <= 60
    assert {DATABASE_ERROR, STORAGE_ERROR} <= set(policy.non_retryable_error_types)
