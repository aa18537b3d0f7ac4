"""The database engine and session factory: one per process."""

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from brightrun.settings import Settings

# Under a data step's 30 s start-to-close: an unreachable server fails the attempt as an outage
# that says so (activities/data_errors.py), not as an anonymous timeout.
CONNECT_TIMEOUT_S = 10


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args={"timeout": CONNECT_TIMEOUT_S},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
