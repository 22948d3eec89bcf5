"""The HTTP API under /api: enablement requests, locations, lists.

Bearer tokens (`tlsrelay user add` prints one). The rules, checked in this
order: no or unknown token is 401; a customer calling a staff action is 403;
an object of another customer is 404, as if it did not exist; a decision the
request's status forbids is 409; refused input is 422 with one message per
fault in FastAPI's validation-error shape (an unknown key included).  The
schema checks only types and sizes; enablement.validate says what is wrong
with the values (one address, not a network; an unknown location), and a
new request with a schema fault still gets those messages for its other
fields.  A message never repeats more than a short prefix of the input. The
OpenAPI document is served at /api/openapi.json.

Handlers are plain functions run in the thread pool; each opens one store
transaction. Tokens are never logged.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from tlsrelay import config
from tlsrelay.control import accounts, db, enablement, lists
from tlsrelay.control.errors import (
    Conflict,
    ControlError,
    Forbidden,
    Invalid,
    NotFound,
    StoreUnavailable,
)

_bearer = HTTPBearer(auto_error=False, description="API token from `tlsrelay user add`")

_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # no control characters but TAB/LF/CR


class RequestIn(BaseModel):
    # Types and sizes only: what the values mean (a known location, one public
    # address, the right relay host) is checked by enablement.validate, which
    # names every fault in the product's own words.
    # A misspelt key ("ip" for "ips") must be refused, not silently dropped.
    model_config = ConfigDict(extra="forbid")

    location: str = Field(max_length=16, examples=["LON"])
    server_ip: str = Field(max_length=64, examples=["198.51.100.7"])
    ips: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=256
    )
    relay_host: str | None = Field(
        default=None, max_length=300, examples=["lon-tls.relay.example:587"]
    )
    note: str = Field(default="", max_length=4000, pattern=_TEXT)
    customer: str | None = Field(
        default=None,
        max_length=64,
        description="staff only: the customer the request is for",
    )


class RequestOut(BaseModel):
    id: int
    status: str
    customer: str | None
    location: str
    relay_host: str
    server_ip: str | None
    ips: list[str]
    note: str
    reason: str
    submitted_by: str
    submitted_at: str
    decided_by: str | None
    decided_at: str | None


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=4000, pattern=_TEXT)


class LocationOut(BaseModel):
    code: str
    relay_host: str
    port: int


class ListEntryOut(BaseModel):
    location: str
    network: str
    added_by: str
    added_at: str
    request_id: int | None


class ErrorOut(BaseModel):
    detail: str


def _errors(*codes: int) -> dict:
    text = {
        401: "no or unknown API token",
        403: "staff only",
        404: "no such object for this user",
        409: "the request's status forbids this",
        503: "the store is unavailable",
    }
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}


RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LocationCode = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,16}$")]


def make_router(settings: config.Settings) -> APIRouter:
    router = APIRouter(
        prefix="/api", responses=_errors(401, 503), route_class=_route_class(settings)
    )

    def actor(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> accounts.Actor:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized()
        with db.transaction(settings) as session:
            found = accounts.authenticate_token(session, credentials.credentials)
        if found is None:
            raise Unauthorized()
        return found

    Actor = Annotated[accounts.Actor, Depends(actor)]

    @router.get("/requests", response_model=list[RequestOut])
    def list_requests(
        who: Actor,
        status: Annotated[
            str | None, Query(pattern="^(pending|approved|rejected|revoked)$")
        ] = None,
    ):
        with db.transaction(settings) as session:
            return [
                enablement.request_json(session, r)
                for r in enablement.visible(session, who, status)
            ]

    @router.post(
        "/requests",
        status_code=201,
        response_model=RequestOut,
        responses=_errors(404),
    )
    def submit_request(who: Actor, body: RequestIn):
        sub = enablement.Submission(**body.model_dump())
        return enablement.submit_and_notify(settings, who, sub)

    @router.get(
        "/requests/{request_id}", response_model=RequestOut, responses=_errors(404)
    )
    def show_request(who: Actor, request_id: RequestId):
        with db.transaction(settings) as session:
            return enablement.request_json(
                session, enablement.get(session, who, request_id)
            )

    decision = _errors(403, 404, 409)

    @router.post(
        "/requests/{request_id}/approve", response_model=RequestOut, responses=decision
    )
    def approve_request(who: Actor, request_id: RequestId):
        return enablement.decide_and_notify(settings, who, "approve", request_id)

    @router.post(
        "/requests/{request_id}/reject", response_model=RequestOut, responses=decision
    )
    def reject_request(who: Actor, request_id: RequestId, body: ReasonIn):
        return enablement.decide_and_notify(
            settings, who, "reject", request_id, body.reason
        )

    @router.post(
        "/requests/{request_id}/revoke", response_model=RequestOut, responses=decision
    )
    def revoke_request(who: Actor, request_id: RequestId, body: ReasonIn | None = None):
        reason = body.reason if body else ""
        return enablement.decide_and_notify(settings, who, "revoke", request_id, reason)

    @router.get("/locations", response_model=list[LocationOut])
    def list_locations(who: Actor):
        with db.transaction(settings) as session:
            return [
                {
                    "code": loc.code,
                    "relay_host": loc.relay_host,
                    "port": settings.control.submission_port,
                }
                for loc in session.scalars(
                    db.select(db.Location).order_by(db.Location.code)
                )
            ]

    @router.get(
        "/locations/{code}/list",
        response_model=list[ListEntryOut],
        responses=_errors(403, 404),
    )
    def location_list(who: Actor, code: LocationCode):
        if not who.is_staff:
            raise Forbidden("only staff may read the filtering lists")
        with db.transaction(settings) as session:
            return [lists.entry_json(e) for e in lists.entries(session, code)]

    return router


class Unauthorized(Exception):
    """No token, or one the store does not know."""


# -- refused input -----------------------------------------------------------

_ECHO = 40  # at most this much of a refused value appears in a message
# The first words of enablement's messages about each field of RequestIn.
_LABELS = {
    "location": "unknown location",
    "server_ip": "server IP",
    "ips": "mailing IP",
    "relay_host": "relay host",
    "note": "the note",
}


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _ECHO else text[:_ECHO] + "..."


def _fault_text(error: dict) -> str:
    """One schema fault in words, never with more than a prefix of the input."""
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    name = ".".join(loc) or "body"
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"unknown key {_short(loc[-1] if loc else name)!r}"
    if kind == "string_too_long":
        return f"{name} is longer than {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"{name} has more than {ctx.get('max_length')} entries"
    if kind == "string_pattern_mismatch" and loc[-1:] in (["note"], ["reason"]):
        return f"{name} may not hold control characters other than TAB, CR, LF"
    return f"{name}: {_short(error.get('msg', 'invalid'))}"


def _schema_problems(exc: RequestValidationError) -> list[dict]:
    return [
        {"loc": list(e.get("loc", ())), "msg": _fault_text(e), "type": e.get("type")}
        for e in exc.errors()
    ]


def _semantic_problems(settings: config.Settings, body: object, bad: set) -> list:
    """enablement's messages for the fields of BODY that passed the schema."""
    if not isinstance(body, dict):
        return []
    fields = {
        key: value
        for key, value in body.items()
        if key in RequestIn.model_fields and key not in bad
    }
    sub = enablement.Submission(location="", server_ip="")
    for key, value in fields.items():
        setattr(sub, key, value)
    try:
        with db.transaction(settings) as session:
            problems = enablement.validate(session, settings, sub)[2]
    except ControlError:
        return []
    skipped = tuple(_LABELS[f] for f in bad if f in _LABELS)
    return [p for p in problems if not p.startswith(skipped)]


def _route_class(settings: config.Settings) -> type[APIRoute]:
    class Route(APIRoute):
        """Schema faults of a new request come with enablement's own checks."""

        def get_route_handler(self):
            handler = super().get_route_handler()
            if self.name != "submit_request":
                return handler

            async def checked(request: Request):
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    problems = _schema_problems(exc)
                    bad = {str(p["loc"][1]) for p in problems if len(p["loc"]) > 1}
                    more = await run_in_threadpool(
                        _semantic_problems, settings, exc.body, bad
                    )
                    problems += [
                        {"loc": ["body"], "msg": m, "type": "value_error"} for m in more
                    ]
                    return JSONResponse({"detail": problems}, status_code=422)

            return checked

    return Route


_STATUS = ((Invalid, 422), (NotFound, 404), (Forbidden, 403), (Conflict, 409))


def error_response(exc: Exception) -> JSONResponse:
    """The JSON answer for a control-plane error raised inside /api."""
    if isinstance(exc, Unauthorized):
        return JSONResponse(
            {"detail": "a valid API token is needed (Authorization: Bearer TOKEN)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(exc, RequestValidationError):
        return JSONResponse({"detail": _schema_problems(exc)}, status_code=422)
    if isinstance(exc, StoreUnavailable):
        return JSONResponse({"detail": "the store is unavailable; retry"}, 503)
    if isinstance(exc, Invalid):
        return JSONResponse(
            {
                "detail": [
                    {"loc": ["body"], "msg": p, "type": "value_error"}
                    for p in exc.problems
                ]
            },
            status_code=422,
        )
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return JSONResponse({"detail": str(exc)}, status_code=status)
    raise exc


async def handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


HANDLED = (Unauthorized, StoreUnavailable, ControlError, RequestValidationError)
