"""A TCP gate in front of a real server, for outage tests: while closed, a connect is refused and
every open connection is cut, as when the server is down; opened again, the server is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from sqlalchemy import make_url

from devtools.devstack import LOOPBACK, free_port


class TcpGate:
    def __init__(self, connect_upstream: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]) -> None:
        self._connect_upstream = connect_upstream
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task] = set()

    @classmethod
    def for_database(cls, database_url: str) -> tuple[TcpGate, str]:
        """A gate to the PostgreSQL server of `database_url`, and the URL that goes through it."""
        url = make_url(database_url)
        socket_dir = url.query.get("host")
        if socket_dir:  # embedded PostgreSQL listens on a unix socket only
            path = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
            gate = cls(lambda: asyncio.open_unix_connection(path))
        else:
            gate = cls(lambda: asyncio.open_connection(url.host, url.port or 5432))
        through = url.set(host=LOOPBACK, port=gate.port, query={k: v for k, v in url.query.items() if k != "host"})
        return gate, through.render_as_string(hide_password=False)

    @classmethod
    def for_http(cls, endpoint_url: str) -> tuple[TcpGate, str]:
        """A gate to an HTTP server (S3), and the endpoint URL that goes through it."""
        url = urlsplit(endpoint_url)
        gate = cls(lambda: asyncio.open_connection(url.hostname, url.port or 80))
        return gate, f"{url.scheme}://{LOOPBACK}:{gate.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)

    async def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await self._connect_upstream()
        pumps = [
            asyncio.create_task(_pump(client_reader, upstream_writer)),
            asyncio.create_task(_pump(upstream_reader, client_writer)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._pumps.discard(pump)
            for writer in (client_writer, upstream_writer):
                writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
