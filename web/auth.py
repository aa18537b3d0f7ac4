"""Who is asking: a signed-in browser (session cookie), or a script (`Authorization: Bearer`).

Every form carries a CSRF token: the session's (derived from its token, service/users.py), or on
the sign-in form a random one also set as a cookie (double submit), since no session exists yet.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import FormData

from service import users
from service.users import SignedIn
from web.workspace import Workspace, workspace

SESSION_COOKIE = "brightrun_session"
SIGN_IN_CSRF_COOKIE = "brightrun_sign_in_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInNeeded(Exception):
    """No valid session: the page sends the browser to /login and back."""


async def page_user(request: Request, ws: Annotated[Workspace, Depends(workspace)]) -> SignedIn:
    token = request.cookies.get(SESSION_COOKIE)
    user = await users.session_user(ws.sessions, token) if token else None
    if user is None:
        raise SignInNeeded
    return user


async def api_user(request: Request, ws: Annotated[Workspace, Depends(workspace)]) -> SignedIn:
    """A script's API token, or the browser's session (its pages poll the API); a browser's
    change also sends the session's CSRF token in X-CSRF-Token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        user = await users.token_user(ws.sessions, token.strip())
    elif (session_token := request.cookies.get(SESSION_COOKIE)) is not None:
        user = await users.session_user(ws.sessions, session_token)
        if user is not None and request.method not in ("GET", "HEAD"):
            _check_csrf(request.headers.get(CSRF_HEADER), user.csrf_token)
    else:
        user = None
    if user is None:
        raise HTTPException(401, "sign in, or send Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})
    return user


def _check_csrf(sent: str | None, expected: str) -> None:
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")


async def checked_form(request: Request, user: Annotated[SignedIn, Depends(page_user)]) -> FormData:
    """The posted form, once its CSRF token is the session's."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    _check_csrf(sent if isinstance(sent, str) else None, user.csrf_token)
    return form


def sign_in_csrf(request: Request) -> str:
    """The sign-in form's token: the browser's cookie if it has one, else a new one."""
    return request.cookies.get(SIGN_IN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def check_sign_in_csrf(request: Request, sent: str) -> None:
    _check_csrf(sent, request.cookies.get(SIGN_IN_CSRF_COOKIE, ""))


PageUser = Annotated[SignedIn, Depends(page_user)]
ApiUser = Annotated[SignedIn, Depends(api_user)]
CheckedForm = Annotated[FormData, Depends(checked_form)]


def local_path(target: object, default: str) -> str:
    """A redirect target from a form or a link, if it is a path of this site: never another
    origin (`//host`, `/\\host`)."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return default
