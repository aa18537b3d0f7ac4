"""The app factory: routes, templates, static files, and the answers every response shares
(security headers; not found, bad input and sign-in as pages or JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from brightrun.settings import Settings
from service.access import NotFoundError
from service.batches import BatchInputError, ControlNotConfirmed
from web import api, export_pages, launch_pages, pages, review_pages
from web.auth import SignInNeeded
from web.rendering import render
from web.workspace import Workspace

STATIC = Path(__file__).parent / "static"

# Scripts and styles only from the workspace's own files: no inline script, no inline style, no
# other origin. A conversation's text can never become code, even if a template were wrong.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages show conversations and names: never kept by a shared cache or the back button's disk.
    "Cache-Control": "no-store",
}


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ws = Workspace.build(settings)
        app.state.workspace = ws
        yield
        await ws.close()

    app = FastAPI(title="Bright Run review workspace", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages.router)
    app.include_router(review_pages.router)
    app.include_router(export_pages.router)
    app.include_router(launch_pages.router)
    app.include_router(api.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_exception_handler(SignInNeeded, _sign_in)
    app.add_exception_handler(NotFoundError, _error(404))
    app.add_exception_handler(ControlNotConfirmed, _error(504))
    app.add_exception_handler(BatchInputError, _error(400))
    app.add_exception_handler(RequestValidationError, _error(400))
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _sign_in(request: Request, _: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _error(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        message = "the request's fields are missing or malformed" if isinstance(exc, RequestValidationError) else str(exc)
        return _answer(request, status, message)

    return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = _answer(request, exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _answer(request: Request, status: int, message: str) -> Response:
    """JSON for the API, a page for a person."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=status)
    return render(request, "error.html", {"status": status, "message": message}, status_code=status)
