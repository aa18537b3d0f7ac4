"""Sign-in, the jobs list and a job's page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from brightrun.temporal_client import workflow_ui_url
from service import batches, users
from service.access import controlled_job, share_job, visible_job
from service.job_failures import failures_by_kind
from web.api import JOBS_LISTED
from web.auth import (
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    CheckedForm,
    PageUser,
    check_sign_in_csrf,
    local_path,
    sign_in_csrf,
)
from web.rendering import render
from web.workspace import Workspace, workspace

router = APIRouter()
Ws = Annotated[Workspace, Depends(workspace)]

# How long a pause, resume or cancel from the job page waits to see the job show it.
CONTROL_WAIT_S = 20.0
# What the job page says after a control, by the `notice` the redirect carries.
NOTICES = {"pause": "Paused.", "resume": "Resumed.", "cancel": "Cancelled.", "share": "Shared."}


def _safe_next(target: str | None) -> str:
    return local_path(target, "/jobs")


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/jobs", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, _safe_next(next), message=None, status_code=200)


def _login_form(request: Request, target: str, message: str | None, status_code: int) -> Response:
    token = sign_in_csrf(request)
    response = render(
        request, "login.html", {"csrf_token": token, "next": target, "message": message}, status_code=status_code
    )
    response.set_cookie(SIGN_IN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/login")
    return response


def _secure(request: Request) -> bool:
    ws: Workspace = request.app.state.workspace
    return ws.settings.web_secure_cookies


@router.post("/login")
async def login(
    request: Request,
    ws: Ws,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/jobs",
) -> Response:
    check_sign_in_csrf(request, csrf_token)
    try:
        token = await users.sign_in(ws.sessions, ws.settings, username, password)
    except users.SignInThrottled as refused:
        return _login_form(request, _safe_next(next), str(refused), status_code=429)
    except users.SignInRefused as refused:
        return _login_form(request, _safe_next(next), str(refused), status_code=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(ws.settings.session_ttl_s), httponly=True, samesite="lax",
        secure=ws.settings.web_secure_cookies, path="/",
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, ws: Ws, _: CheckedForm) -> Response:
    await users.sign_out(ws.sessions, request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/jobs")
async def jobs_page(request: Request, ws: Ws, user: PageUser) -> Response:
    listed = await batches.list_jobs(ws.sessions, limit=JOBS_LISTED, visible=user.owner.jobs())
    return render(request, "jobs.html", {"user": user, "jobs": listed})


@router.get("/jobs/{job_id}")
async def job_page(request: Request, ws: Ws, user: PageUser, job_id: str, notice: str | None = None) -> Response:
    job = await visible_job(ws.sessions, user.owner, job_id)
    client = await ws.temporal_or_none()
    status = await batches.job_status(ws.sessions, str(job.id), client, ws.settings.claude_model)
    return render(
        request,
        "job.html",
        {
            "user": user,
            "job": status,
            "owner": job.created_by,
            "controls": user.owner.controls(job.created_by),
            "failures": await failures_by_kind(ws.sessions, job.id),
            "workflow_url": workflow_ui_url(ws.settings, status.workflow_id),
            "notice": NOTICES.get(notice or ""),
        },
    )


@router.post("/jobs/{job_id}/{action}")
async def control(ws: Ws, user: PageUser, job_id: str, action: str, form: CheckedForm) -> Response:
    """Pause, resume and cancel send the CLI's signals (service/batches.py); share lets another user see the job."""
    job = await controlled_job(ws.sessions, user.owner, job_id)
    if action == "share":
        await share_job(ws.sessions, user.owner, str(job.id), str(form.get("user_name", "")).strip())
    elif action in NOTICES:
        await batches.control_job(ws.sessions, await ws.temporal(), str(job.id), action, CONTROL_WAIT_S)
    else:
        raise batches.BatchInputError(f"unknown action {action!r}: pause, resume, cancel or share")
    return RedirectResponse(f"/jobs/{job.id}?notice={action}", status_code=303)
