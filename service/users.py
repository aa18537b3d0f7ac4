"""Users of the review workspace: accounts, sign-in, sessions and API tokens.

Passwords are kept as Argon2id hashes. Session and API tokens are random (256 bits) and kept as
their SHA-256: a copy of the database signs nobody in. After `sign_in_max_failures` bad
passwords in a row for a name, sign-in with that name is refused for `sign_in_throttle_s`, the
right password included; a name no user has is counted and throttled the same way (each try
costs the same Argon2 check and gets the same answer), so the throttle tells nothing about
which names exist. It ends after its time: a stranger delays a real user, never locks them out
for good. A disabled user's sessions and tokens stop working at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.settings import Settings
from models.enums import UserRole
from models.tables import ApiToken, SignInThrottle, User, UserSession
from service.access import NotFoundError, Owner
from service.batches import BatchInputError, validate_user

# argon2-cffi's defaults are RFC 9106's second recommendation, in its Argon2id variant.
_HASHER = PasswordHasher()
PASSWORD_MIN_LENGTH = 12
# A name attempted is kept (as the key of its throttle) up to the longest a user's name can be.
NAME_KEPT = 200
# The hash of a password nobody has: an unknown name costs a sign-in the same time as a known one.
_NOBODYS_HASH = _HASHER.hash(secrets.token_urlsafe(32))


class SignInRefused(Exception):
    """Wrong name or password, a disabled user, or too many bad passwords: the message is what the
    person sees, and never says whether the name exists."""


class SignInThrottled(SignInRefused):
    """Too many bad passwords in a row: no password is tried until the throttle ends."""


class UserListing(BaseModel):
    name: str
    role: UserRole
    disabled_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user, as the workspace knows them."""

    name: str
    role: UserRole
    # The session's CSRF token (derived from its token), for the forms of the pages.
    csrf_token: str = ""

    @property
    def owner(self) -> Owner:
        return Owner(self.name, admin=self.role == UserRole.ADMIN)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_of(session_token: str) -> str:
    """The session's CSRF token: derived, so it is never stored, and not the session token itself."""
    return hashlib.sha256(b"csrf:" + session_token.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(18)


def check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise BatchInputError(f"a password needs at least {PASSWORD_MIN_LENGTH} characters")


async def add_user(sessions: async_sessionmaker, name: str, role: UserRole, password: str) -> None:
    validate_user(name)
    check_password(password)
    password_hash = await asyncio.to_thread(_HASHER.hash, password)
    try:
        async with sessions.begin() as session:
            await session.execute(insert(User).values(name=name, role=role.value, password_hash=password_hash))
    except IntegrityError:
        raise BatchInputError(f"user {name} exists already") from None


async def list_users(sessions: async_sessionmaker) -> list[UserListing]:
    async with sessions() as session:
        users = (await session.scalars(select(User).order_by(User.name))).all()
    return [UserListing(name=u.name, role=UserRole(u.role), disabled_at=u.disabled_at, created_at=u.created_at) for u in users]


async def disable_user(sessions: async_sessionmaker, name: str) -> None:
    """Refuse the user's sign-in, sessions and tokens from now on."""
    async with sessions.begin() as session:
        user_id = await session.scalar(
            update(User).where(User.name == name).values(disabled_at=func.coalesce(User.disabled_at, func.now()))
            .returning(User.id)
        )
        if user_id is None:
            raise NotFoundError(f"user {name} not found")
        await session.execute(delete(UserSession).where(UserSession.user_id == user_id))


async def new_api_token(sessions: async_sessionmaker, name: str) -> str:
    """A new API token of an enabled user, shown this once."""
    token = secrets.token_urlsafe(32)
    async with sessions.begin() as session:
        user_id = await session.scalar(select(User.id).where(User.name == name, User.disabled_at.is_(None)))
        if user_id is None:
            raise NotFoundError(f"user {name} not found (or disabled)")
        await session.execute(insert(ApiToken).values(user_id=user_id, token_hash=token_hash(token)))
    return token


async def sign_in(sessions: async_sessionmaker, settings: Settings, name: str, password: str) -> str:
    """A new session's token for the right name and password; SignInRefused otherwise."""
    attempted = name[:NAME_KEPT]
    async with sessions() as session:
        user = await session.scalar(select(User).where(User.name == name))
        throttled_until = await session.scalar(
            select(SignInThrottle.throttled_until).where(SignInThrottle.name == attempted)
        )
    now = datetime.now(UTC)
    if throttled_until is not None and throttled_until > now:
        raise SignInThrottled(f"too many failed sign-ins: try again in {(throttled_until - now).total_seconds() / 60:.0f} min")
    # An unknown name costs the same Argon2 check as a known one.
    verified = await asyncio.to_thread(_verifies, user.password_hash if user else _NOBODYS_HASH, password)
    if user is None or not verified:
        await _count_failure(sessions, settings, attempted)
        raise SignInRefused("wrong user name or password")
    if user.disabled_at is not None:
        raise SignInRefused("this user is disabled")
    token = secrets.token_urlsafe(32)
    async with sessions.begin() as session:
        await session.execute(delete(SignInThrottle).where(SignInThrottle.name == attempted))
        await session.execute(
            insert(UserSession).values(
                user_id=user.id, token_hash=token_hash(token), expires_at=now + timedelta(seconds=settings.session_ttl_s)
            )
        )
    return token


def _verifies(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _count_failure(sessions: async_sessionmaker, settings: Settings, attempted: str) -> None:
    """One more bad password in a row for the name attempted; the last one allowed starts the
    throttle and a new count. Names quiet for a throttle's length are forgotten first, so a
    stranger's spray of made-up names leaves no more rows than it tried in that time."""
    quiet = timedelta(seconds=settings.sign_in_throttle_s)
    async with sessions.begin() as session:
        await session.execute(
            delete(SignInThrottle).where(
                SignInThrottle.last_failure_at < func.now() - quiet,
                or_(SignInThrottle.throttled_until.is_(None), SignInThrottle.throttled_until < func.now()),
            )
        )
        failures = await session.scalar(
            pg_insert(SignInThrottle).values(name=attempted, failures=1)
            .on_conflict_do_update(
                index_elements=[SignInThrottle.name],
                set_={"failures": SignInThrottle.failures + 1, "last_failure_at": func.now()},
            )
            .returning(SignInThrottle.failures)
        )
        if failures is not None and failures >= settings.sign_in_max_failures:
            await session.execute(
                update(SignInThrottle).where(SignInThrottle.name == attempted).values(
                    failures=0, throttled_until=func.now() + quiet
                )
            )


async def session_user(sessions: async_sessionmaker, session_token: str) -> SignedIn | None:
    """The enabled user of an unexpired session; None for anything else."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(User.name, User.role)
                .join(UserSession, UserSession.user_id == User.id)
                .where(
                    UserSession.token_hash == token_hash(session_token),
                    UserSession.expires_at > func.now(),
                    User.disabled_at.is_(None),
                )
            )
        ).one_or_none()
    return SignedIn(row.name, UserRole(row.role), csrf_token_of(session_token)) if row else None


async def sign_out(sessions: async_sessionmaker, session_token: str) -> None:
    async with sessions.begin() as session:
        await session.execute(delete(UserSession).where(UserSession.token_hash == token_hash(session_token)))


async def token_user(sessions: async_sessionmaker, api_token: str) -> SignedIn | None:
    """The enabled user of an API token; None for anything else."""
    async with sessions.begin() as session:
        row = (
            await session.execute(
                update(ApiToken)
                .where(ApiToken.token_hash == token_hash(api_token), ApiToken.user_id == User.id, User.disabled_at.is_(None))
                .values(last_used_at=func.now())
                .returning(User.name, User.role)
            )
        ).one_or_none()
    return SignedIn(row.name, UserRole(row.role)) if row else None
