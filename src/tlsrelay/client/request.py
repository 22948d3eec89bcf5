"""`tlsrelay client request`: ask the provider to enable this server's IPs.

With an API token the request is POSTed to the control plane's API
(`POST /api/requests`, body {"location", "server_ip", "ips", "note",
"relay_host"}, answered 201 with the stored request). Without a token the
same facts are printed as the text of a ticket to send to the provider.
The relay host follows from the location (`lon-tls.PROVIDER:587`).

The token goes only into the Authorization header; it is never printed or
logged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import httpx

SUBMISSION_PORT = 587


class RequestError(Exception):
    """The API refused the request or could not be reached."""


@dataclass(frozen=True)
class Enablement:
    location: str
    server_ip: str
    ips: tuple[str, ...] = ()
    note: str = ""
    relay_host: str = ""

    def body(self) -> dict[str, object]:
        document: dict[str, object] = {
            "location": self.location,
            "server_ip": self.server_ip,
            "ips": list(self.ips),
            "note": self.note,
        }
        if self.relay_host:
            document["relay_host"] = self.relay_host
        return document


@dataclass
class Outcome:
    status: int
    document: dict[str, object] = field(default_factory=dict)


def relay_host(location: str, provider_domain: str) -> str:
    return f"{location.lower()}-tls.{provider_domain}:{SUBMISSION_PORT}"


def validate(item: Enablement) -> None:
    """Catch typing errors before they reach staff; the API checks the rest."""
    for ip in (item.server_ip, *item.ips):
        try:
            ipaddress.ip_network(ip, strict=False)
        except ValueError:
            raise RequestError(f"{ip!r} is not an IP address or network") from None


def ticket(item: Enablement, relay: str) -> str:
    """The text a customer without API access sends to the provider."""
    lines = [
        "Subject: Request to enable TLS for my server/IPs",
        "",
        "Please enable the following server for the TLS relay.",
        "",
        f"Relay host:  {relay}",
        f"Location:    {item.location.upper()}",
        f"Server IP:   {item.server_ip}",
    ]
    if item.ips:
        lines.append(f"Further mailing IPs: {', '.join(item.ips)}")
    if item.note:
        lines += ["", f"Note: {item.note}"]
    return "\n".join(lines) + "\n"


def api_url(base: str) -> str:
    base = base.rstrip("/")
    return f"{base}/requests" if base.endswith("/api") else f"{base}/api/requests"


def submit(
    item: Enablement, base_url: str, token: str, client: httpx.Client | None = None
) -> Outcome:
    own = client is None
    client = client or httpx.Client(timeout=30.0)
    try:
        response = client.post(
            api_url(base_url),
            json=item.body(),
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError as exc:
        raise RequestError(f"cannot reach {base_url}: {exc}") from exc
    finally:
        if own:
            client.close()
    try:
        document = response.json()
    except ValueError:
        document = {"detail": response.text[:500]}
    if response.status_code != 201:
        raise RequestError(
            f"the API answered {response.status_code}: {_detail(document)}"
        )
    return Outcome(response.status_code, document)


def _detail(document: dict[str, object]) -> str:
    detail = document.get("detail", document)
    if isinstance(detail, list):  # FastAPI's validation errors: one per fault
        return "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict))
    return str(detail)
