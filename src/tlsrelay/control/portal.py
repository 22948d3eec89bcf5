"""The web portal: server-rendered pages for customers and staff.

Customers: the "enable TLS for my server/IPs" form, their requests with
status, and the Postfix lines for their location. Staff: the pending queue
with approve and reject (with a reason), each location's list, the audit log.
Plain HTML forms (Jinja2 templates in control/templates/), no JavaScript.

Sessions live in the store (portal_sessions, id hashed); the cookie carries
only a random id. Every visitor gets a session before the login form, and a
login replaces it with a new id, so a planted cookie never becomes a login
(session fixation). Every POST carries a CSRF token, an HMAC of the session
id with [portal] secret, checked before anything else. Staff actions are
audited by the decision functions themselves.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from tlsrelay import config
from tlsrelay.control import accounts, db, enablement, lists
from tlsrelay.control.errors import ControlError, Invalid, NotFound

COOKIE = "tlsrelay_session"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


@dataclass
class Visit:
    """Who is at the other end of one portal request."""

    sid: str
    actor: accounts.Actor | None
    csrf: str
    new_cookie: bool


def postfix_lines(settings: config.Settings, location: str) -> str:
    host = settings.relay_host(location)
    port = settings.control.submission_port
    return "\n".join(
        [
            f"relayhost = [{host}]:{port}",
            "smtp_tls_security_level = encrypt",
            "smtp_tls_mandatory_protocols = >=TLSv1.2",
            "smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt",
        ]
    )


def make_router(settings: config.Settings, secret: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    secure_cookie = settings.portal.url.startswith("https://")

    # -- sessions and responses ---------------------------------------------

    def visit(request: Request) -> Visit:
        sid = request.cookies.get(COOKIE, "")
        with db.transaction(settings) as session:
            known, actor = (
                accounts.session_actor(session, sid) if sid else (False, None)
            )
            if not known:
                sid = accounts.new_session(session, None)
        return Visit(sid, actor, accounts.csrf_token(secret, sid), not known)

    def with_cookie(response: Response, v: Visit) -> Response:
        if v.new_cookie:
            response.set_cookie(
                COOKIE,
                v.sid,
                httponly=True,
                samesite="lax",
                secure=secure_cookie,
                path="/",
                max_age=int(accounts.SESSION_LIFETIME.total_seconds()),
            )
        return response

    def page(request: Request, v: Visit, name: str, status: int = 200, **data):
        data.update(actor=v.actor, csrf=v.csrf, settings=settings)
        response = TEMPLATES.TemplateResponse(request, name, data, status_code=status)
        return with_cookie(response, v)

    def redirect(v: Visit, url: str) -> Response:
        return with_cookie(RedirectResponse(url, status_code=303), v)

    def refuse(request: Request, v: Visit, status: int, message: str) -> Response:
        return page(request, v, "error.html", status=status, message=message)

    def gate(request: Request, staff: bool = False) -> tuple[Visit, Response | None]:
        v = visit(request)
        if v.actor is None:
            return v, redirect(v, "/login?next=" + quote(request.url.path))
        if staff and not v.actor.is_staff:
            return v, refuse(request, v, 403, "This page is for staff only.")
        return v, None

    def csrf_failed(request: Request, v: Visit, token: str) -> Response | None:
        if accounts.csrf_ok(secret, v.sid, token):
            return None
        return refuse(
            request,
            v,
            403,
            "The form has expired or did not come from this "
            "portal. Reload the page and try again.",
        )

    # -- login ----------------------------------------------------------------

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request):
        v = visit(request)
        if v.actor is None:
            return redirect(v, "/login")
        return redirect(v, "/staff/pending" if v.actor.is_staff else "/requests")

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = ""):
        v = visit(request)
        return page(request, v, "login.html", next=_local(next), error="")

    @router.post("/login", response_class=HTMLResponse)
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=255)] = "",
        password: Annotated[str, Form(max_length=1024)] = "",
        csrf_token: Annotated[str, Form(max_length=128)] = "",
        next: Annotated[str, Form(max_length=1024)] = "",
    ):
        v = visit(request)
        if failed := csrf_failed(request, v, csrf_token):
            return failed
        with db.transaction(settings) as session:
            actor = accounts.authenticate_password(session, username, password)
            if actor is None:
                error = "Wrong user name or password."
            else:
                accounts.end_session(session, v.sid)
                sid = accounts.new_session(session, actor)
                db.audit(session, actor.name, "portal.login", f"user {actor.name}")
        if actor is None:
            return page(
                request, v, "login.html", status=401, next=_local(next), error=error
            )
        fresh = Visit(sid, actor, accounts.csrf_token(secret, sid), True)
        target = _local(next) or ("/staff/pending" if actor.is_staff else "/requests")
        return redirect(fresh, target)

    @router.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form(max_length=128)] = ""):
        v = visit(request)
        if failed := csrf_failed(request, v, csrf_token):
            return failed
        with db.transaction(settings) as session:
            accounts.end_session(session, v.sid)
            sid = accounts.new_session(session, None)
        return redirect(Visit(sid, None, "", True), "/login")

    # -- customer pages -------------------------------------------------------

    def locations() -> list[db.Location]:
        with db.transaction(settings) as session:
            return list(session.scalars(select(db.Location).order_by(db.Location.code)))

    @router.get("/requests", response_class=HTMLResponse)
    def my_requests(request: Request):
        v, stop = gate(request)
        if stop:
            return stop
        with db.transaction(settings) as session:
            rows = [
                enablement.request_json(session, r)
                for r in enablement.visible(session, v.actor)
            ]
        return page(request, v, "requests.html", requests=rows[::-1])

    @router.get("/requests/new", response_class=HTMLResponse)
    def new_request(request: Request):
        v, stop = gate(request)
        if stop:
            return stop
        return page(
            request, v, "request_form.html", locations=locations(), form={}, problems=[]
        )

    @router.post("/requests", response_class=HTMLResponse)
    def submit(
        request: Request,
        csrf_token: Annotated[str, Form(max_length=128)] = "",
        location: Annotated[str, Form(max_length=16)] = "",
        relay_host: Annotated[str, Form(max_length=300)] = "",
        server_ip: Annotated[str, Form(max_length=64)] = "",
        ips: Annotated[str, Form(max_length=20000)] = "",
        note: Annotated[str, Form(max_length=4000)] = "",
        customer: Annotated[str, Form(max_length=64)] = "",
    ):
        v, stop = gate(request)
        if stop:
            return stop
        if failed := csrf_failed(request, v, csrf_token):
            return failed
        sub = enablement.Submission(
            location=location,
            server_ip=server_ip,
            ips=[
                line.strip()
                for line in ips.replace(",", "\n").splitlines()
                if line.strip()
            ],
            relay_host=relay_host.strip() or None,
            note=note.replace("\x00", ""),
            customer=customer.strip() or None,
        )
        try:
            document = enablement.submit_and_notify(settings, v.actor, sub)
        except ControlError as exc:
            problems = exc.problems if isinstance(exc, Invalid) else [str(exc)]
            form = dict(
                location=location,
                relay_host=relay_host,
                server_ip=server_ip,
                ips=ips,
                note=note,
                customer=customer,
            )
            return page(
                request,
                v,
                "request_form.html",
                status=422,
                locations=locations(),
                form=form,
                problems=problems,
            )
        return redirect(v, f"/requests/{document['id']}?submitted=1")

    @router.get("/requests/{request_id}", response_class=HTMLResponse)
    def show(request: Request, request_id: int, submitted: int = 0):
        v, stop = gate(request)
        if stop:
            return stop
        try:
            with db.transaction(settings) as session:
                document = enablement.request_json(
                    session, enablement.get(session, v.actor, request_id)
                )
        except NotFound as exc:
            return refuse(request, v, 404, str(exc))
        return page(
            request,
            v,
            "request_detail.html",
            r=document,
            submitted=bool(submitted),
            postfix=postfix_lines(settings, document["location"]),
        )

    @router.get("/postfix", response_class=HTMLResponse)
    def postfix(request: Request):
        v, stop = gate(request)
        if stop:
            return stop
        with db.transaction(settings) as session:
            mine = sorted({r.location for r in enablement.visible(session, v.actor)})
        codes = mine or [loc.code for loc in locations()]
        blocks = [
            (code, settings.relay_host(code), postfix_lines(settings, code))
            for code in codes
        ]
        return page(request, v, "postfix.html", blocks=blocks, have_requests=bool(mine))

    # -- staff pages --------------------------------------------------------------

    @router.get("/staff/pending", response_class=HTMLResponse)
    def pending(request: Request, done: str = "", id: int = 0):
        v, stop = gate(request, staff=True)
        if stop:
            return stop
        with db.transaction(settings) as session:
            rows = [
                enablement.request_json(session, r)
                for r in enablement.visible(session, v.actor, db.PENDING)
            ]
            recent = [
                enablement.request_json(session, r)
                for r in enablement.visible(session, v.actor, db.APPROVED)
            ][-20:]
        flash = f"Request {id} {done}." if done in _DONE and id else ""
        return page(
            request, v, "pending.html", requests=rows, recent=recent[::-1], flash=flash
        )

    @router.post("/staff/requests/{request_id}/{verb}")
    def decide(
        request: Request,
        request_id: int,
        verb: str,
        csrf_token: Annotated[str, Form(max_length=128)] = "",
        reason: Annotated[str, Form(max_length=4000)] = "",
    ):
        v, stop = gate(request, staff=True)
        if stop:
            return stop
        if failed := csrf_failed(request, v, csrf_token):
            return failed
        if verb not in ("approve", "reject", "revoke"):
            return refuse(request, v, 404, "No such action.")
        try:
            document = enablement.decide_and_notify(
                settings, v.actor, verb, request_id, reason.replace("\x00", "")
            )
        except ControlError as exc:
            status = 404 if isinstance(exc, NotFound) else 409
            if isinstance(exc, Invalid):
                status = 422
            return refuse(request, v, status, str(exc))
        return redirect(v, f"/staff/pending?done={document['status']}&id={request_id}")

    @router.get("/staff/lists", response_class=HTMLResponse)
    def all_lists(request: Request):
        v, stop = gate(request, staff=True)
        if stop:
            return stop
        with db.transaction(settings) as session:
            blocks = [
                (loc, [lists.entry_json(e) for e in lists.entries(session, loc.code)])
                for loc in session.scalars(
                    select(db.Location).order_by(db.Location.code)
                )
            ]
        return page(request, v, "lists.html", blocks=blocks)

    @router.get("/staff/audit", response_class=HTMLResponse)
    def audit(request: Request):
        v, stop = gate(request, staff=True)
        if stop:
            return stop
        with db.transaction(settings) as session:
            records = list(
                session.scalars(
                    select(db.AuditRecord).order_by(db.AuditRecord.id.desc()).limit(500)
                )
            )
        return page(request, v, "audit.html", records=records)

    return router


_DONE = {"approved", "rejected", "revoked"}


def _local(target: str) -> str:
    """Only same-site paths as redirect targets (no open redirect)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""
