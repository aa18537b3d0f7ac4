"""What every request of the workspace uses: the settings, the database, storage, Temporal and
the Claude client of estimates, built once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from anthropic import AsyncAnthropic
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from temporalio.client import Client

from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect


@dataclass
class Workspace:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    storage: Storage
    # For a launch's dry-run estimate (count_tokens): the workspace never generates.
    claude: AsyncAnthropic
    _client: Client | None = None
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def build(cls, settings: Settings) -> Workspace:
        engine = create_engine(settings)
        return cls(settings, engine, create_sessionmaker(engine), Storage(settings), create_claude_client(settings))

    async def close(self) -> None:
        await self.claude.close()
        await self.engine.dispose()

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use: pages that need no workflow work while
        Temporal is down."""
        async with self._connecting:
            if self._client is None:
                self._client = await connect(self.settings)
        return self._client

    async def temporal_or_none(self) -> Client | None:
        """The client, or None while Temporal cannot be reached (a job's row still shows)."""
        try:
            return await self.temporal()
        except RuntimeError:  # the SDK's "Failed client connect"
            return None


def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws
