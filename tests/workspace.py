"""Users of the review workspace and browsers signed in to it, for the workspace's tests."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import async_sessionmaker

from models.enums import UserRole
from service import users

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Person:
    name: str
    password: str


async def new_user(sessions: async_sessionmaker, prefix: str, role: UserRole = UserRole.REVIEWER) -> Person:
    person = Person(f"{prefix}-{uuid.uuid4().hex[:8]}", users.new_password())
    await users.add_user(sessions, person.name, role, person.password)
    return person


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies (also of a loopback IP address) and sees redirects itself."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_token_in(page: str) -> str:
    found = _CSRF_FIELD.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: aiohttp.ClientSession, url: str, name: str, password: str) -> aiohttp.ClientResponse:
    """The sign-in form filled in and posted, as a browser does; the answer before any redirect."""
    async with client.get(f"{url}/login") as form:
        token = csrf_token_in(await form.text())
    fields = {"username": name, "password": password, "csrf_token": token, "next": "/jobs"}
    async with client.post(f"{url}/login", data=fields, allow_redirects=False) as answer:
        await answer.read()
        return answer


async def page_token(client: aiohttp.ClientSession, url: str) -> str:
    """The signed-in session's CSRF token, from one of its pages."""
    async with client.get(f"{url}/jobs") as page:
        return csrf_token_in(await page.text())
