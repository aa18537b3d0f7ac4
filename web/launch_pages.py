"""Launch: personas, arcs and topics picked from the catalog (many at once), tier, template or
automatic, samples, mode, concurrency, a name and a budget; the item count follows the picks,
and "Estimate" shows the dry-run estimate (cost online and in batch mode, time) before the
launch. Both go through the service calls of `starter.py launch [--dry-run]`, as the signed-in user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from models.enums import DeliveryMode, ErrorPolicy, Tier
from service import batches
from service import estimate as estimates
from service.catalog import list_catalog
from service.users import SignedIn
from web.auth import CheckedForm, PageUser
from web.rendering import render
from web.workspace import Workspace, workspace

router = APIRouter()
Ws = Annotated[Workspace, Depends(workspace)]


@router.get("/launch")
async def launch_page(request: Request, ws: Ws, user: PageUser) -> Response:
    return await _form(request, ws, user, None, None)


async def _form(
    request: Request, ws: Workspace, user: SignedIn, form: FormData | None, estimate: estimates.JobEstimate | None
) -> Response:
    """The launch form, with what was filled in kept (after an estimate)."""
    values: dict[str, Any] = {"concurrency": ws.settings.default_concurrency, "samples": 1}
    picked: set[str] = set()
    if form is not None:
        values = {name: str(form.get(name) or "") for name in (
            "tier", "template", "samples", "mode", "concurrency", "on_error", "name", "max_cost"
        )}
        picked = {str(value) for name in ("persona", "arc", "topic") for value in form.getlist(name)}
    return render(
        request,
        "launch.html",
        {
            "user": user, "catalog": await list_catalog(ws.sessions), "tiers": list(Tier), "modes": list(DeliveryMode),
            "values": values, "picked": picked, "estimate": estimate,
        },
    )


def _request(ws: Workspace, user: SignedIn, form: FormData) -> batches.LaunchRequest:
    max_cost = str(form.get("max_cost") or "").strip()
    try:
        return batches.LaunchRequest(
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
            max_cost_usd=float(max_cost) if max_cost else None,
        )
    except ValueError as exc:
        raise batches.BatchInputError(f"the launch form: {exc}") from None


@router.post("/launch")
async def launch(request: Request, ws: Ws, user: PageUser, form: CheckedForm) -> Response:
    launch_request = _request(ws, user, form)
    if form.get("action") == "estimate":
        estimate = await estimates.estimate_job(ws.sessions, ws.claude, ws.settings, launch_request)
        return await _form(request, ws, user, form, estimate)
    launched, _ = await estimates.launch_estimated(ws.sessions, await ws.temporal(), ws.claude, ws.settings, launch_request)
    return RedirectResponse(f"/jobs/{launched.job_id}", status_code=303)
