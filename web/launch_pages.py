"""Launch: personas, arcs and topics picked from the catalog (many at once), tier, template or
automatic, samples, mode, concurrency and a name; the item count is shown before the button, and
the launch goes through the same service call as `starter.py launch`, as the signed-in user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from models.enums import DeliveryMode, ErrorPolicy, Tier
from service import batches
from service.catalog import list_catalog
from web.auth import CheckedForm, PageUser
from web.rendering import render
from web.workspace import Workspace, workspace

router = APIRouter()
Ws = Annotated[Workspace, Depends(workspace)]


@router.get("/launch")
async def launch_page(request: Request, ws: Ws, user: PageUser) -> Response:
    return render(
        request,
        "launch.html",
        {
            "user": user,
            "catalog": await list_catalog(ws.sessions),
            "tiers": list(Tier),
            "modes": list(DeliveryMode),
            "default_concurrency": ws.settings.default_concurrency,
        },
    )


@router.post("/launch")
async def launch(ws: Ws, user: PageUser, form: CheckedForm) -> Response:
    try:
        request = batches.LaunchRequest(
            personas=[str(value) for value in form.getlist("persona")],
            arcs=[str(value) for value in form.getlist("arc")],
            topics=[str(value) for value in form.getlist("topic")],
            tier=Tier(str(form.get("tier") or "")),
            template=str(form.get("template") or "") or None,
            concurrency=int(str(form.get("concurrency") or ws.settings.default_concurrency)),
            on_error=ErrorPolicy(str(form.get("on_error") or ErrorPolicy.CONTINUE.value)),
            name=str(form.get("name") or "").strip() or None,
            user=user.name,
            mode=DeliveryMode(str(form.get("mode") or DeliveryMode.ONLINE.value)),
            samples=int(str(form.get("samples") or "1")),
        )
    except ValueError as exc:
        raise batches.BatchInputError(f"the launch form: {exc}") from None
    launched = await batches.launch(ws.sessions, await ws.temporal(), ws.settings, request)
    return RedirectResponse(f"/jobs/{launched.job_id}", status_code=303)
