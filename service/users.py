"""Users of the review workspace: accounts, sign-in, sessions and API tokens.

Passwords are kept as Argon2id hashes. Session and API tokens are random (256 bits) and kept as
their SHA-256: a copy of the database signs nobody in. After `sign_in_max_failures` bad
passwords in a row a user's sign-in is refused for `sign_in_throttle_s`, the right password
included. A disabled user's sessions and tokens stop working at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.settings import Settings
from models.enums import UserRole
from models.tables import ApiToken, User, UserSession
from service.access import NotFoundError, Owner
from service.batches import BatchInputError, validate_user

# argon2-cffi's defaults are RFC 9106's second recommendation, in its Argon2id variant.
_HASHER = PasswordHasher()
PASSWORD_MIN_LENGTH = 12
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
    async with sessions() as session:
        user = await session.scalar(select(User).where(User.name == name))
    if user is None:
        await asyncio.to_thread(_verifies, _NOBODYS_HASH, password)
        raise SignInRefused("wrong user name or password")
    now = datetime.now(UTC)
    if user.throttled_until is not None and user.throttled_until > now:
        raise SignInThrottled(
            f"too many failed sign-ins: try again in {(user.throttled_until - now).total_seconds() / 60:.0f} min"
        )
    if not await asyncio.to_thread(_verifies, user.password_hash, password):
        await _count_failure(sessions, settings, user.id)
        raise SignInRefused("wrong user name or password")
    if user.disabled_at is not None:
        raise SignInRefused("this user is disabled")
    token = secrets.token_urlsafe(32)
    async with sessions.begin() as session:
        await session.execute(update(User).where(User.id == user.id).values(failed_sign_ins=0, throttled_until=None))
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


async def _count_failure(sessions: async_sessionmaker, settings: Settings, user_id: uuid.UUID) -> None:
    """One more bad password in a row; the last one allowed starts the throttle and a new count."""
    async with sessions.begin() as session:
        failures = await session.scalar(
            update(User).where(User.id == user_id).values(failed_sign_ins=User.failed_sign_ins + 1)
            .returning(User.failed_sign_ins)
        )
        if failures is not None and failures >= settings.sign_in_max_failures:
            await session.execute(
                update(User).where(User.id == user_id).values(
                    failed_sign_ins=0, throttled_until=func.now() + timedelta(seconds=settings.sign_in_throttle_s)
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
