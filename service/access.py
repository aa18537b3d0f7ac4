"""Who may see and change what: the one place ownership becomes a query condition.

A user sees their own jobs (a job belongs to the user in its `created_by`) and the jobs shared
with them, with those jobs' conversations; an admin sees everything. Another user's object is
"not found": a guessed id tells nothing about what exists. Only a job's owner (or an admin)
pauses, resumes, cancels or shares it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, or_, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from models.tables import BatchJob, Conversation, JobShare, User
from service.batches import BatchInputError, validate_user
from service.errors import NotFoundError
from service.ids import IdKind, resolve_id


@dataclass(frozen=True)
class Owner:
    """Who acts: a user sees and changes their own jobs and conversations and those of the jobs
    shared with them; an admin everyone's."""

    user: str
    admin: bool = False

    @classmethod
    def of(cls, user: str, admin: bool = False) -> Owner:
        return cls(validate_user(user), admin)

    def shared_jobs(self) -> Select[uuid.UUID]:
        """The ids of the jobs other users shared with this one."""
        return select(JobShare.batch_job_id).where(JobShare.user_name == self.user)

    def jobs(self) -> ColumnElement[bool]:
        """The jobs this owner sees."""
        if self.admin:
            return true()
        return or_(BatchJob.created_by == self.user, BatchJob.id.in_(self.shared_jobs()))

    def scope(self) -> ColumnElement[bool]:
        """The conversations this owner sees."""
        if self.admin:
            return true()
        return or_(Conversation.created_by == self.user, Conversation.batch_job_id.in_(self.shared_jobs()))

    def controls(self, job_owner: str) -> bool:
        """Pause, resume, cancel and share belong to the job's owner and to admins."""
        return self.admin or job_owner == self.user


async def shared_job_ids(sessions: async_sessionmaker, owner: Owner) -> list[uuid.UUID]:
    """The jobs other users shared with this owner (none for an admin, who sees every job)."""
    if owner.admin:
        return []
    async with sessions() as session:
        return list((await session.scalars(owner.shared_jobs().order_by(JobShare.batch_job_id))).all())


async def visible_job(sessions: async_sessionmaker, owner: Owner, job_ref: str) -> BatchJob:
    """The job, if this owner sees it; NotFoundError otherwise."""
    async with sessions() as session:
        job_id = await resolve_id(session, IdKind.JOB, job_ref, owner.jobs())
        job = await session.scalar(select(BatchJob).where(BatchJob.id == job_id, owner.jobs()))
    if job is None:
        raise NotFoundError(f"job {job_ref} not found")
    return job


async def controlled_job(sessions: async_sessionmaker, owner: Owner, job_ref: str) -> BatchJob:
    """The job, if this owner may control it: a job only shared with them is theirs to read, not to stop."""
    job = await visible_job(sessions, owner, job_ref)
    if not owner.controls(job.created_by):
        raise BatchInputError(f"job {job_ref} is {job.created_by}'s: only its owner or an admin controls it")
    return job


async def share_job(sessions: async_sessionmaker, owner: Owner, job_ref: str, user_name: str) -> None:
    """Let another user see the job and review its conversations."""
    job = await controlled_job(sessions, owner, job_ref)
    async with sessions.begin() as session:
        if await session.scalar(select(User.id).where(User.name == user_name)) is None:
            raise NotFoundError(f"user {user_name} not found")
        await session.execute(
            pg_insert(JobShare).values(batch_job_id=job.id, user_name=user_name).on_conflict_do_nothing()
        )
