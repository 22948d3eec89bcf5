"""The control process's web application: the API and the portal in one app.

`create_app(settings)` builds a FastAPI app with the API under /api (OpenAPI
at /api/openapi.json; no interactive docs, which would load foreign scripts)
and the server-rendered portal at /.
The control process serves it with uvicorn when [portal] listen is set.
Every response carries headers that forbid framing and foreign scripts.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request

from tlsrelay import config
from tlsrelay.control import api, db, portal

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


def create_app(settings: config.Settings) -> FastAPI:
    db.ensure(settings)
    secret = settings.portal.secret
    if not secret:
        log.warning(
            "portal.secret is not set; using a random one, so forms and sessions "
            "do not survive a restart"
        )
        secret = secrets.token_hex(32)
    app = FastAPI(
        title="tlsrelay control API",
        version="1",
        description="Enablement requests and filtering lists of a tlsrelay provider.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(api.make_router(settings))
    app.include_router(portal.make_router(settings, secret))
    for cls in api.HANDLED:
        app.add_exception_handler(cls, api.handle)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
