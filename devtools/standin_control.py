"""The Claude stand-in's control endpoints, as tests use them."""

from __future__ import annotations

from typing import Any

import aiohttp


class StandinControl:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.request(method, self.base_url + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def configure(self, **config: Any) -> dict[str, Any]:
        return await self._call("POST", "/_standin/config", config)

    async def reset(self) -> None:
        await self._call("POST", "/_standin/reset")

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/_standin/stats")

    async def foreign_batch(self, requests: int) -> dict[str, Any]:
        """A batch of another user of the workspace: listed by the API, never ours."""
        return await self._call("POST", "/_standin/foreign_batch", {"requests": requests})
