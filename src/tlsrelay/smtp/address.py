"""Parse the path and the ESMTP parameters of MAIL FROM and RCPT TO.

Also checks the EHLO/HELO argument (RFC 5321 4.1.1.1), which shares the
domain and address-literal syntax.

RFC 5321 4.1.2 (Path, Mailbox, Local-part, Domain, address literals),
4.1.1.3 and appendix F.2 (source routes are accepted and stripped),
4.5.3.1.3 (256-octet paths; the 64-octet local-part limit is deliberately not
enforced, see case 15), RFC 6531 (UTF-8 atoms and domains under SMTPUTF8),
RFC 1870 (SIZE), RFC 6152 (BODY), RFC 3461 (RET, ENVID, NOTIFY, ORCPT, xtext).

Addresses are returned exactly as written (a quoted local part keeps its
quotes); ``%`` and ``!`` are ordinary local-part characters and nothing here
ever rewrites them.  Every failure is a :class:`AddressError` carrying the
reply from replies.py; this module never raises anything else on bad input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tlsrelay.smtp import replies
from tlsrelay.smtp.events import MailParams, RcptParams
from tlsrelay.smtp.replies import Reply

MAX_PATH_OCTETS = 256  # RFC 5321 4.5.3.1.3, including the angle brackets
MAX_ENVID_CHARS = 100  # RFC 3461 4.4
MAX_ORCPT_CHARS = 500  # RFC 3461 4.2

_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_UTF8_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_QTEXT = r"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])"
_UTF8_QTEXT = r"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])"
_LDH = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_UTF8_LDH = (
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*"
    r"[A-Za-z0-9\u0080-\U0010ffff])?"
)


def _local_re(atext: str, qtext: str) -> re.Pattern[str]:
    return re.compile(rf'(?:{atext}+(?:\.{atext}+)*|"{qtext}*")')


_LOCAL = _local_re(_ATEXT, _QTEXT)
_UTF8_LOCAL = _local_re(_UTF8_ATEXT, _UTF8_QTEXT)
_DOMAIN = re.compile(rf"{_LDH}(?:\.{_LDH})*")
_UTF8_DOMAIN = re.compile(rf"{_UTF8_LDH}(?:\.{_UTF8_LDH})*")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")
_HELO_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class AddressError(Exception):
    """The peer's path or parameters are wrong; ``reply`` says how."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Errors:
    """The replies for one role (sender or recipient)."""

    syntax: Reply
    too_long: Reply


SENDER_ERRORS = Errors(replies.BAD_SENDER, replies.SENDER_PATH_TOO_LONG)
RECIPIENT_ERRORS = Errors(replies.BAD_RECIPIENT, replies.PATH_TOO_LONG)


def split_path(text: str, errors: Errors) -> tuple[str, str]:
    """Split ``<path> params`` into the bracketed path and the parameter text.

    Quoted strings may hold ``>``, so the closing bracket is found by
    walking the (at most a few hundred characters of) path.
    """
    if not text.startswith("<"):
        raise AddressError(errors.syntax)
    quoted = escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            rest = text[index + 1 :]
            if rest and not rest.startswith(" "):
                raise AddressError(errors.syntax)
            return text[: index + 1], rest.strip(" ")
    raise AddressError(errors.syntax)


def parse_path(path: str, errors: Errors, smtputf8: bool) -> str:
    """The mailbox of a bracketed path, source route stripped; "" for ``<>``.

    Raises AddressError for bad syntax (invalid UTF-8 included), a path over
    256 octets, or UTF-8 without SMTPUTF8 (553 5.6.7).
    """
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_OCTETS:
        raise AddressError(errors.too_long)
    inner = path[1:-1]
    if inner == "":
        return ""
    # Octets that are not UTF-8 are bad syntax, declared SMTPUTF8 or not;
    # only well-formed UTF-8 without SMTPUTF8 is a 553 5.6.7 (RFC 6531 3.2).
    if _has_surrogates(inner):
        raise AddressError(errors.syntax)
    if not inner.isascii() and not smtputf8:
        raise AddressError(replies.NEED_SMTPUTF8)
    if inner.startswith("@"):
        inner = _strip_route(inner, errors)
    return parse_mailbox(inner, errors, smtputf8)


def parse_recipient(path: str, smtputf8: bool, postmaster: str) -> str:
    """The mailbox of a RCPT path; it must have a domain (no local mailboxes).

    ``<postmaster>`` (RFC 5321 4.5.1) becomes ``postmaster`` when that is set,
    and is refused like any other unqualified recipient when it is "".  An
    address-literal domain (``x@[192.0.2.1]``) is refused with 550 5.1.2.
    """
    if path[1:-1].lower() == "postmaster" and postmaster:
        return postmaster
    if path == "<>":
        raise AddressError(RECIPIENT_ERRORS.syntax)
    mailbox = parse_path(path, RECIPIENT_ERRORS, smtputf8)
    if mailbox.endswith("]"):
        # The relay must never deliver to an IP address the sender chose.
        raise AddressError(replies.LITERAL_RECIPIENT)
    return mailbox


def parse_mailbox(text: str, errors: Errors, smtputf8: bool) -> str:
    """Check ``local@domain`` and return it unchanged."""
    local_re = _UTF8_LOCAL if smtputf8 else _LOCAL
    at = text.rfind("@")
    if at < 0 and local_re.fullmatch(text) and errors is RECIPIENT_ERRORS:
        raise AddressError(replies.UNQUALIFIED_RECIPIENT)
    if at <= 0:
        raise AddressError(errors.syntax)
    local, domain = text[:at], text[at + 1 :]
    if not local_re.fullmatch(local) or not _domain_ok(domain, smtputf8):
        raise AddressError(errors.syntax)
    return text


def _strip_route(text: str, errors: Errors) -> str:
    # RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain ) ":"
    colon = text.find(":")
    if colon < 0:
        raise AddressError(errors.syntax)
    for hop in text[:colon].split(","):
        if not hop.startswith("@") or not _domain_ok(hop[1:], smtputf8=True):
            raise AddressError(errors.syntax)
    return text[colon + 1 :]


def _domain_ok(domain: str, smtputf8: bool) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        return _literal_ok(domain[1:-1])
    pattern = _UTF8_DOMAIN if smtputf8 else _DOMAIN
    return bool(pattern.fullmatch(domain))


def helo_name_ok(name: str) -> bool:
    """A plausible EHLO/HELO argument: an ASCII host name or address literal.

    RFC 5321 4.1.1.1 asks for a domain or literal.  Like Postfix, underscores,
    a trailing dot and single-label names are accepted (customers' servers
    send them); non-ASCII (RFC 6531 3.7.1: EHLO comes before SMTPUTF8), control
    characters and other punctuation are not.
    """
    if len(name) > MAX_PATH_OCTETS:
        return False
    if name.startswith("[") and name.endswith("]"):
        return _literal_ok(name[1:-1])
    return bool(_HELO_NAME.fullmatch(name))


def _literal_ok(literal: str) -> bool:
    try:
        if literal[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(literal[5:])
            return True
        if literal[:1].isdigit():
            ipaddress.IPv4Address(literal)
            return True
    except ValueError:
        return False
    return bool(_GENERAL_LITERAL.fullmatch(literal))


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def split_params(text: str) -> dict[str, str | None]:
    """``KEY=value KEY2`` into {"KEY": "value", "KEY2": None}; keys upper case.

    A repeated or malformed keyword is a 501 5.5.4.
    """
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(key) or (eq and not value):
            raise AddressError(replies.BAD_PARAMETER.format(name=key[:20]))
        key = key.upper()
        if key in params:
            raise AddressError(replies.BAD_PARAMETER.format(name=key))
        params[key] = value if eq else None
    return params


def mail_params(raw: dict[str, str | None], max_size: int) -> MailParams:
    """Validate MAIL FROM parameters (RFC 1870, 6152, 6531, 3461 4.3, 4.4)."""
    unknown = set(raw) - {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"}
    if unknown:
        name = sorted(unknown)[0]
        raise AddressError(replies.UNKNOWN_PARAMETER.format(name=name))
    size = _size(raw)
    if size is not None and size > max_size:
        raise AddressError(replies.TOO_BIG)
    return MailParams(
        size=size,
        body=_choice(raw, "BODY", ("7BIT", "8BITMIME")),
        smtputf8=_flag(raw, "SMTPUTF8"),
        ret=_choice(raw, "RET", ("FULL", "HDRS")),
        envid=_xtext(raw, "ENVID", MAX_ENVID_CHARS),
    )


def rcpt_params(raw: dict[str, str | None]) -> RcptParams:
    """Validate RCPT TO parameters (RFC 3461 4.1, 4.2)."""
    unknown = set(raw) - {"NOTIFY", "ORCPT"}
    if unknown:
        name = sorted(unknown)[0]
        raise AddressError(replies.UNKNOWN_PARAMETER.format(name=name))
    return RcptParams(notify=_notify(raw), orcpt=_orcpt(raw))


def _bad(name: str) -> AddressError:
    return AddressError(replies.BAD_PARAMETER.format(name=name))


def _size(raw: dict[str, str | None]) -> int | None:
    if "SIZE" not in raw:
        return None
    value = raw["SIZE"]
    if value is None or not value.isdigit() or not value.isascii() or len(value) > 20:
        raise _bad("SIZE")
    return int(value)


def _choice(raw: dict[str, str | None], name: str, allowed: tuple[str, ...]):
    if name not in raw:
        return None
    value = (raw[name] or "").upper()
    if value not in allowed:
        raise _bad(name)
    return value


def _flag(raw: dict[str, str | None], name: str) -> bool:
    if name not in raw:
        return False
    if raw[name] is not None:
        raise _bad(name)
    return True


def _xtext(raw: dict[str, str | None], name: str, limit: int) -> str | None:
    if name not in raw:
        return None
    value = raw[name]
    if value is None or len(value) > limit or not is_xtext(value):
        raise _bad(name)
    return value


def is_xtext(value: str) -> bool:
    """RFC 3461 4: printable ASCII except "+" and "=", or "+" and two HEX."""
    return bool(_XTEXT.fullmatch(value))


def _notify(raw: dict[str, str | None]) -> str | None:
    if "NOTIFY" not in raw:
        return None
    words = (raw["NOTIFY"] or "").upper().split(",")
    if words == ["NEVER"]:
        return "NEVER"
    if len(set(words)) != len(words) or not set(words) <= _NOTIFY_WORDS:
        raise _bad("NOTIFY")
    return ",".join(words)


def _orcpt(raw: dict[str, str | None]) -> str | None:
    if "ORCPT" not in raw:
        return None
    value = raw["ORCPT"] or ""
    addr_type, semi, text = value.partition(";")
    ok = (
        semi
        and text
        and len(value) <= MAX_ORCPT_CHARS
        and _ADDR_TYPE.fullmatch(addr_type)
        and is_xtext(text)
    )
    if not ok:
        raise _bad("ORCPT")
    return value
