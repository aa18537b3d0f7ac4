"""`python -m web`: serve the review workspace with uvicorn on WEB_HOST:WEB_PORT."""

import uvicorn

from brightrun.logs import configure_logging
from brightrun.settings import get_settings
from web.app import create_app


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    # Uvicorn's access lines carry paths only: tokens travel in cookies and headers, never in URLs.
    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port, log_config=None, proxy_headers=False)


if __name__ == "__main__":
    main()
