"""Pages from Jinja templates, every value escaped: conversations are model output, and every
byte of them is shown as text (no template marks anything `|safe`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from starlette.templating import Jinja2Templates, _TemplateResponse

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _when(value: datetime | str | None) -> str:
    """A time as every page shows it; a conversation's fields come as JSON (ISO 8601 text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


_ENVIRONMENT.filters["when"] = _when
_ENVIRONMENT.filters["duration"] = _duration
_TEMPLATES = Jinja2Templates(env=_ENVIRONMENT)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> _TemplateResponse:
    return _TEMPLATES.TemplateResponse(request, name, {"user": None, **context}, status_code=status_code)
