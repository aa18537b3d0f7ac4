"""The review workspace's sign-in and ownership over HTTP, against `python -m web` on the real
stack: another user's objects are "not found", a form without its CSRF token is refused, a
disabled user and an expired session are refused, and ten bad passwords in a row are throttled."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from models.enums import UserRole
from models.tables import ApiToken, SignInThrottle, User, UserSession
from service import users
from tests.conftest import REPO
from tests.conversations import new_job
from tests.workspace import browser, new_user, page_token, sign_in


async def test_a_user_signs_in_and_sees_their_jobs_and_not_another_users(
    workspace_url: str, sessions: async_sessionmaker
) -> None:
    alice, bob = await new_user(sessions, "alice"), await new_user(sessions, "bob")
    alices_job, bobs_job = await new_job(sessions, alice.name), await new_job(sessions, bob.name)
    async with browser() as client:
        answer = await sign_in(client, workspace_url, bob.name, bob.password)
        assert answer.status == 303 and answer.headers["Location"] == "/jobs"
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        async with client.get(f"{workspace_url}/jobs/{bobs_job}") as own:
            assert own.status == 200
        async with client.get(f"{workspace_url}/jobs/{alices_job}") as others:
            assert others.status == 404
            assert f"job {alices_job} not found" in await others.text()
        # A prefix resolves among the user's own jobs only: it neither finds nor names another's.
        async with client.get(f"{workspace_url}/jobs/{str(alices_job)[:8]}") as guessed:
            assert guessed.status == 404 and str(alices_job) not in await guessed.text()
        async with client.get(f"{workspace_url}/jobs/{str(bobs_job)[:8]}") as own_prefix:
            assert own_prefix.status == 200
        async with client.get(f"{workspace_url}/api/jobs") as listed:
            assert [job["job_id"] for job in await listed.json()] == [str(bobs_job)]

    token = await users.new_api_token(sessions, bob.name)
    async with browser() as script:
        headers = {"Authorization": f"Bearer {token}"}
        async with script.get(f"{workspace_url}/api/jobs", headers=headers) as listed:
            assert [job["job_id"] for job in await listed.json()] == [str(bobs_job)]
        async with script.get(f"{workspace_url}/api/jobs", headers={"Authorization": "Bearer not-a-token"}) as refused:
            assert refused.status == 401


async def test_an_admin_sees_every_job_and_a_shared_job_is_seen_but_not_controlled(
    workspace_url: str, sessions: async_sessionmaker
) -> None:
    carol, dave = await new_user(sessions, "carol"), await new_user(sessions, "dave")
    admin = await new_user(sessions, "erin", UserRole.ADMIN)
    carols_job = await new_job(sessions, carol.name)
    async with browser() as client:
        await sign_in(client, workspace_url, admin.name, admin.password)
        async with client.get(f"{workspace_url}/jobs/{carols_job}") as seen:
            assert seen.status == 200
    async with browser() as client:
        await sign_in(client, workspace_url, carol.name, carol.password)
        token = await page_token(client, workspace_url)
        share = {"csrf_token": token, "user_name": dave.name}
        async with client.post(f"{workspace_url}/jobs/{carols_job}/share", data=share, allow_redirects=False) as shared:
            assert shared.status == 303
    async with browser() as client:
        await sign_in(client, workspace_url, dave.name, dave.password)
        async with client.get(f"{workspace_url}/jobs/{carols_job}") as seen:
            assert seen.status == 200
        token = await page_token(client, workspace_url)
        async with client.post(f"{workspace_url}/jobs/{carols_job}/cancel", data={"csrf_token": token}) as refused:
            assert refused.status == 400
            assert "only its owner or an admin controls it" in await refused.text()


async def test_a_form_without_its_csrf_token_is_refused(workspace_url: str, sessions: async_sessionmaker) -> None:
    frank = await new_user(sessions, "frank")
    job = await new_job(sessions, frank.name)
    async with browser() as client:
        async with client.post(
            f"{workspace_url}/login", data={"username": frank.name, "password": frank.password}, allow_redirects=False
        ) as refused:
            assert refused.status == 403
        await sign_in(client, workspace_url, frank.name, frank.password)
        for fields in ({}, {"csrf_token": "forged"}):
            async with client.post(f"{workspace_url}/jobs/{job}/pause", data=fields, allow_redirects=False) as refused:
                assert refused.status == 403
                assert "CSRF token is missing or wrong" in await refused.text()


async def test_a_disabled_user_and_an_expired_session_are_refused(
    workspace_url: str, sessions: async_sessionmaker
) -> None:
    grace, heidi = await new_user(sessions, "grace"), await new_user(sessions, "heidi")
    token = await users.new_api_token(sessions, grace.name)
    async with browser() as client:
        await sign_in(client, workspace_url, grace.name, grace.password)
        await users.disable_user(sessions, grace.name)
        async with client.get(f"{workspace_url}/jobs", allow_redirects=False) as signed_out:
            assert signed_out.status == 303 and signed_out.headers["Location"].startswith("/login")
        answer = await sign_in(client, workspace_url, grace.name, grace.password)
        assert answer.status == 401
    async with browser() as script, script.get(
        f"{workspace_url}/api/jobs", headers={"Authorization": f"Bearer {token}"}
    ) as refused:
        assert refused.status == 401

    async with browser() as client:
        await sign_in(client, workspace_url, heidi.name, heidi.password)
        async with client.get(f"{workspace_url}/jobs", allow_redirects=False) as page:
            assert page.status == 200
        async with sessions.begin() as session:
            heidis = select(User.id).where(User.name == heidi.name).scalar_subquery()
            expired_at = func.now() - timedelta(seconds=1)
            await session.execute(update(UserSession).where(UserSession.user_id == heidis).values(expires_at=expired_at))
        async with client.get(f"{workspace_url}/jobs", allow_redirects=False) as expired:
            assert expired.status == 303 and expired.headers["Location"] == "/login?next=%2Fjobs"


async def test_ten_bad_passwords_in_a_row_throttle_the_sign_in(workspace_url: str, sessions: async_sessionmaker) -> None:
    ivan = await new_user(sessions, "ivan")
    async with browser() as client:
        for _ in range(9):
            assert (await sign_in(client, workspace_url, ivan.name, "wrong password!")).status == 401
        answer = await sign_in(client, workspace_url, ivan.name, ivan.password)
        assert answer.status == 303, "nine bad passwords do not throttle, and a good one resets the count"
        for _ in range(10):
            assert (await sign_in(client, workspace_url, ivan.name, "wrong password!")).status == 401
        answer = await sign_in(client, workspace_url, ivan.name, ivan.password)
        assert answer.status == 429, "the tenth bad password in a row throttles even the right one"


async def test_an_unknown_name_is_throttled_alike_and_a_throttle_ends(
    workspace_url: str, sessions: async_sessionmaker
) -> None:
    kim = await new_user(sessions, "kim")
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    async with browser() as client:
        for name in (kim.name, nobody):
            for _ in range(10):
                assert (await sign_in(client, workspace_url, name, "wrong password!")).status == 401
        throttled = [await sign_in(client, workspace_url, name, "wrong password!") for name in (kim.name, nobody)]
        assert [answer.status for answer in throttled] == [429, 429], "a made-up name is throttled like a real one"
        async with sessions.begin() as session:
            await session.execute(
                update(SignInThrottle).where(SignInThrottle.name == kim.name)
                .values(throttled_until=func.now() - timedelta(seconds=1))
            )
        answer = await sign_in(client, workspace_url, kim.name, kim.password)
        assert answer.status == 303, "once the throttle's time is over, the right password signs in"
    async with sessions() as session:
        kept = (await session.scalars(select(SignInThrottle.name).where(SignInThrottle.name.in_([kim.name, nobody])))).all()
    assert kept == [nobody], "a sign-in clears its name's count"


def _users_command(env: dict[str, str], *args: str, stdin: str | None = None) -> Awaitable[subprocess.CompletedProcess]:
    return asyncio.to_thread(
        subprocess.run, [sys.executable, "starter.py", "users", *args], cwd=REPO, env=env, input=stdin,
        capture_output=True, text=True, timeout=120, check=False,
    )


async def test_the_cli_adds_lists_and_disables_users_and_keeps_only_hashes(
    cli_env: dict[str, str], sessions: async_sessionmaker
) -> None:
    name = f"judy-{uuid.uuid4().hex[:8]}"
    added = await _users_command(cli_env, "add", name, "--role", "reviewer")
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("password: ")[1].strip()
    assert len(password) >= users.PASSWORD_MIN_LENGTH
    again = await _users_command(cli_env, "add", name, "--role", "admin", "--password-stdin", stdin="long enough pass\n")
    assert again.returncode == 2 and f"user {name} exists already" in again.stderr
    short = await _users_command(cli_env, "add", f"{name}x", "--role", "reviewer", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    token = (await _users_command(cli_env, "token", name)).stdout.strip()
    listed = json.loads((await _users_command(cli_env, "list", "--json")).stdout)
    assert [(row["role"], row["disabled_at"]) for row in listed if row["name"] == name] == [("reviewer", None)]
    assert (await _users_command(cli_env, "disable", name)).returncode == 0
    assert (await _users_command(cli_env, "disable", f"nobody-{name}")).returncode == 2

    async with sessions() as session:
        user = await session.scalar(select(User).where(User.name == name))
        assert user is not None and user.disabled_at is not None
        token_hashes = (await session.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user.id))).all()
    assert user.password_hash.startswith("$argon2id$") and password not in user.password_hash
    assert token_hashes == [users.token_hash(token)]
