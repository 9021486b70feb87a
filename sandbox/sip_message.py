"""SIP messages (RFC 3261 §7, §20, §25) read from and written to UDP datagrams: a small subset.

Covered: request and status lines; headers by name, case-insensitively, with the compact forms
(i f t v m l c k e s o r u x); repeated headers and comma-separated values kept in order;
line folding (a line starting with white space continues the header above); any white space
around the colon; the body cut by Content-Length (RFC 3261 §18.3: a datagram shorter than it
is refused, a longer one truncated), and Content-Length recomputed when a message is written.
Helpers read a header's parameters (Via branch/received/rport, From/To tag), the CSeq, the
digest headers (through sandbox/digest.py), and build a response to a request (§8.2.6).

Not covered: SIP URIs beyond what callers here need (no escaping rules checked), multipart
bodies, S/MIME, header field grammar beyond parameters, and comments in Via.
Anything unreadable raises SipError, so a server drops the datagram (or answers 400) and goes on.
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from sandbox import digest

VERSION = "SIP/2.0"
MAX_DATAGRAM = 65_535  # the most one UDP datagram carries
MAX_HEADERS = 256  # header lines in one message; more is refused
BRANCH_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: every RFC 3261 branch starts with it

# RFC 3261 §7.3.3 and the IANA registry: compact form -> full name, lower case.
COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "e": "content-encoding",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "x": "session-expires",
}
# How the headers this module writes are spelled (others keep the sender's spelling).
CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Supported",
        "Subject",
        "Event",
        "Refer-To",
        "Allow-Events",
        "Session-Expires",
        "Allow",
        "User-Agent",
        "Server",
        "Record-Route",
        "Route",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
    )
}
# Headers whose values contain commas of their own and are never combined (RFC 3261 §7.3.1).
_UNSPLIT = frozenset(
    {"www-authenticate", "proxy-authenticate", "authorization", "proxy-authorization"}
)
REQUIRED = ("via", "from", "to", "call-id", "cseq")  # RFC 3261 §8.1.1, in every message

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")  # RFC 3261 §25.1 token
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) +(\S+) +(SIP/\d+\.\d+)$", re.ASCII)
_STATUS_LINE = re.compile(r"^(SIP/\d+\.\d+) +(\d{3})(?: +(.*))?$", re.ASCII)
_HEADER = re.compile(r"^([^\s:]+)[ \t]*:[ \t]*(.*)$")
_DIGITS = re.compile(r"^[0-9]{1,9}$")
_T = TypeVar("_T")
_CSEQ = re.compile(r"^(\d{1,10})[ \t\r\n]+([A-Za-z0-9.!%*_+`'~-]+)$", re.ASCII)


class SipError(ValueError):
    """A datagram that is not a SIP message this module can read, or a header it cannot use."""


def _key(name: str) -> str:
    lower = name.lower()
    return COMPACT.get(lower, lower)


@dataclass
class Message(ABC):
    """What requests and responses share: headers in order (name, value) and a body."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str) -> str | None:
        """Return the first value of header `name` (any case, compact or full), or None."""
        values = self.values(name)
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        """Return every value of header `name`, in order: its lines, each split at commas."""
        key = _key(name)
        found: list[str] = []
        for header, value in self.headers:
            if _key(header) == key:
                found.extend([value] if key in _UNSPLIT else split_values(value) or [""])
        return found

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self.headers.append((_spelling(name), value))

    def set(self, name: str, value: str) -> None:
        """Give header `name` this one value, where its first line was (else at the end)."""
        key = _key(name)
        for index, (header, _) in enumerate(self.headers):
            if _key(header) == key:
                self.headers[index] = (_spelling(name), value)
                self.headers[index + 1 :] = [
                    h for h in self.headers[index + 1 :] if _key(h[0]) != key
                ]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        """Drop every line of header `name`."""
        key = _key(name)
        self.headers = [h for h in self.headers if _key(h[0]) != key]

    @property
    def call_id(self) -> str:
        """Return the Call-ID."""
        return self._required("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        """Return the CSeq's number and method."""
        return parse_cseq(self._required("cseq"))

    @property
    def branch(self) -> str | None:
        """Return the top Via's branch parameter, if any."""
        return params(self._required("via"))[1].get("branch")

    def tag(self, name: str) -> str | None:
        """Return the tag parameter of From or To."""
        return params(self._required(name))[1].get("tag")

    @abstractmethod
    def first_line(self) -> str:
        """Return the request or status line."""

    def serialise(self) -> bytes:
        """Write the message as a datagram, with Content-Length set to the body's length."""
        lines = [self.first_line()]
        length = False
        for name, value in self.headers:
            if _key(name) == "content-length":
                if length:
                    continue
                value, length = str(len(self.body)), True
            lines.append(f"{name}: {value}")
        if not length:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipError(f"no {_spelling(name)} header")
        return value


@dataclass
class Request(Message):
    """A SIP request: method, Request-URI, headers and body."""

    method: str = ""
    uri: str = ""
    version: str = VERSION

    def first_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass
class Response(Message):
    """A SIP response: status code, reason phrase, headers and body."""

    status: int = 200
    reason: str = "OK"
    version: str = VERSION

    def first_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


def parse(data: bytes) -> Request | Response:
    """Read one datagram as a SIP request or response; raise SipError when it is not one."""
    if len(data) > MAX_DATAGRAM:
        raise SipError("datagram larger than 65535 bytes")
    data = data.lstrip(b"\r\n")  # keep-alive CRLFs before a message (RFC 5626 §4.4.1)
    if not data:
        raise SipError("empty datagram")
    head, body = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("header section is not UTF-8") from None
    lines = _unfold(text.replace("\r\n", "\n").split("\n"))
    start, header_lines = lines[0], lines[1:]
    if len(header_lines) > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} header lines")
    headers = []
    for line in header_lines:
        match = _HEADER.match(line)
        if match is None or not _TOKEN.match(match.group(1)):
            raise SipError(f"malformed header line {line[:40]!r}")
        name, value = match.group(1), match.group(2).strip()
        headers.append((CANONICAL.get(_key(name), name), value))
    message = _start(start, headers)
    message.body = _body(message, body)
    for name in REQUIRED:
        if message.get(name) is None:
            raise SipError(f"no {_spelling(name)} header")
    number, method = message.cseq
    if isinstance(message, Request) and method != message.method:
        raise SipError("CSeq method differs from the request's")
    if not message.values("via"):
        raise SipError("empty Via header")
    return message


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(separator)
        if found:
            return head, body
    return data.rstrip(b"\r\n"), b""  # no blank line: a message without a body


def _unfold(lines: list[str]) -> list[str]:
    unfolded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and len(unfolded) > 1:
            unfolded[-1] += " " + line.strip()
        elif line[:1] in (" ", "\t"):
            raise SipError("a continuation line with no header before it")
        else:
            unfolded.append(line)
    return unfolded


def _start(line: str, headers: list[tuple[str, str]]) -> Request | Response:
    status = _STATUS_LINE.match(line)
    if status is not None:
        version, code, reason = status.groups()
        _version(version)
        if not 100 <= int(code) <= 699:
            raise SipError(f"status code {code} out of range")
        return Response(headers, status=int(code), reason=reason or "", version=version)
    request = _REQUEST_LINE.match(line)
    if request is None:
        raise SipError(f"malformed start line {line[:40]!r}")
    method, uri, version = request.groups()
    _version(version)
    if ":" not in uri:
        raise SipError("Request-URI has no scheme")
    return Request(headers, method=method, uri=uri, version=version)


def _version(version: str) -> None:
    if version.upper() != VERSION:
        raise SipError(f"unsupported version {version}")


def _body(message: Message, body: bytes) -> bytes:
    given = message.values("content-length")
    if not given:
        return body  # UDP may omit it: the body is the rest of the datagram (§18.3)
    if len(set(given)) > 1 or not _DIGITS.match(given[0]):
        raise SipError("unreadable Content-Length")
    length = int(given[0])
    if length > len(body):
        raise SipError("datagram shorter than its Content-Length")
    return body[:length]


def _spelling(name: str) -> str:
    return CANONICAL.get(_key(name), name)


def split_values(value: str) -> list[str]:
    """Split a header value at the commas outside quotes and <...> (RFC 3261 §7.3.1)."""
    cuts: list[int] = []
    angle = 0
    for index, char in _unquoted(value, strict=False):
        if char == "<":
            angle += 1
        elif char == ">":
            angle = max(0, angle - 1)
        elif char == "," and not angle:
            cuts.append(index)
    return _cut(value, cuts)


def _unquoted(value: str, *, strict: bool = True) -> Iterator[tuple[int, str]]:
    """Yield each character outside quoted strings (RFC 3261 §25.1), with its index; raise
    SipError at the end of an unclosed quote when `strict`."""
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted:
            yield index, char
    if quoted and strict:
        raise SipError("unclosed quote in header value")


def _cut(value: str, cuts: list[int]) -> list[str]:
    """Split `value` at the given indexes (dropping those characters), keep non-empty parts."""
    starts = [0, *(cut + 1 for cut in cuts)]
    ends = [*cuts, len(value)]
    parts = (value[start:end].strip() for start, end in zip(starts, ends, strict=True))
    return [part for part in parts if part]


def params(value: str) -> tuple[str, dict[str, str]]:
    """Split a header value into its main part and its ;name=value parameters (names lower case).

    For a name-addr (``"Bob" <sip:bob@h;transport=udp>;tag=1``) the parameters are those after
    the ``>``; for an addr-spec without brackets, those after the first ``;`` (RFC 3261 §20.10).
    A parameter without a value (``;rport``, ``;lr``) maps to "".
    """
    end = _main_end(value)
    main, rest = value[:end].strip(), value[end:]
    found: dict[str, str] = {}
    for part in _segments(rest):
        name, _, given = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipError("empty header parameter")
        given = given.strip()
        if given.startswith('"') and given.endswith('"') and len(given) > 1:
            given = given[1:-1]
        found[name] = given
    return main, found


def format_params(main: str, values: dict[str, str]) -> str:
    """Write a header value back from `params`' parts."""
    return main + "".join(
        f";{name}={given}" if given else f";{name}" for name, given in values.items()
    )


def _main_end(value: str) -> int:
    """Where a header value's main part ends: after its <...>, or at its first ;."""
    for index, char in _unquoted(value):
        if char == "<":
            close = value.find(">", index)
            if close < 0:
                raise SipError("unclosed < in header value")
            return close + 1
        if char == ";":
            return index
    return len(value)


def _segments(rest: str) -> list[str]:
    """Split ``;a=1;b="x;y"`` at the semicolons outside quotes."""
    rest = rest.strip()
    if not rest:
        return []
    if not rest.startswith(";"):
        raise SipError("unexpected text after the address")
    return _cut(rest[1:], [index for index, char in _unquoted(rest[1:]) if char == ";"])


def parse_cseq(value: str) -> tuple[int, str]:
    """Read a CSeq value into its number and method."""
    match = _CSEQ.match(value.strip())
    if match is None or int(match.group(1)) >= 2**31:
        raise SipError("malformed CSeq")
    return int(match.group(1)), match.group(2)


def sent_by(via: str) -> tuple[str, int | None]:
    """Return a Via's sent-by host and port (None when it gives none)."""
    main, _ = params(via)
    main = re.sub(r"\s*/\s*", "/", main)  # "SIP / 2.0 / UDP" is legal (RFC 4475 §3.1.1.1)
    protocol, _, address = main.partition(" ")
    if not protocol.upper().startswith("SIP/2.0/") or not address.strip():
        raise SipError("malformed Via")
    address = address.strip()
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = address.partition(":")
    if port and not _DIGITS.match(port):
        raise SipError("malformed Via port")
    return host, int(port) if port else None


def received(via: str, host: str, port: int) -> str:
    """Stamp a Via with where its request came from: received, and rport if asked (RFC 3581)."""
    main, values = params(via)
    values["received"] = host
    if "rport" in values:
        values["rport"] = str(port)
    return format_params(main, values)


def new_tag() -> str:
    """Return a fresh From/To tag."""
    return secrets.token_hex(8)


def new_branch() -> str:
    """Return a fresh Via branch."""
    return BRANCH_COOKIE + secrets.token_hex(10)


def response_to(request: Request, status: int, reason: str, to_tag: str | None = None) -> Response:
    """Build a response to `request` (RFC 3261 §8.2.6): its Vias, From, Call-ID, CSeq, and its To
    with `to_tag` added unless the To already has one (a 100 gets no tag)."""
    response = Response(status=status, reason=reason)
    for via in request.values("via"):
        response.add("Via", via)
    response.add("From", request._required("from"))
    to = request._required("to")
    if to_tag is not None and status > 100 and _tagless(to):
        to += f";tag={to_tag}"
    response.add("To", to)
    response.add("Call-ID", request.call_id)
    response.add("CSeq", request._required("cseq"))
    return response


def _tagless(to: str) -> bool:
    """Tell whether a To has no tag yet; an unreadable one is copied as it is (for a 400)."""
    try:
        return params(to)[1].get("tag") is None
    except SipError:
        return False


def challenge(message: Message) -> digest.Challenge | None:
    """Read a 407's Proxy-Authenticate (or a 401's WWW-Authenticate) as a digest challenge."""
    value = message.get("proxy-authenticate") or message.get("www-authenticate")
    return _digest(digest.Challenge.parse, value)


def authorization(message: Message) -> digest.Authorization | None:
    """Read a request's Proxy-Authorization (or Authorization) as a digest answer."""
    value = message.get("proxy-authorization") or message.get("authorization")
    return _digest(digest.Authorization.parse, value)


def _digest(read: Callable[[str], _T], value: str | None) -> _T | None:
    if value is None:
        return None
    try:
        return read(value)
    except digest.DigestError as exc:
        raise SipError(str(exc)) from None
