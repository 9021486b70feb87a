"""The caller's side: place inbound calls through a sandbox, in process or over HTTP.

The simulated SIP caller holds the password and answers Plivo's 407 itself (RFC 2617/7616
digest); only the digest response travels, never the password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from sandbox import digest
from sandbox.engine import Sandbox
from sandbox.server import PROXY_AUTHENTICATE, PROXY_AUTHORIZATION
from sandbox.sip_edge import Invite, InviteResult
from sipguard.errors import PlivoAPIError

R = TypeVar("R")
MAX_CHALLENGES = 2  # a first 407, and one more if the nonce went stale meanwhile


def with_digest(
    send: Callable[[str | None], tuple[int, str | None, R]],
    request_uri: str,
    username: str | None,
    password: str | None,
) -> tuple[R, bool]:
    """INVITE via `send`, answering 407 challenges; return the last answer and if challenged.

    `send(authorization)` returns (status, Proxy-Authenticate or None, answer).
    """
    status, challenge, answer = send(None)
    challenged = False
    for _ in range(MAX_CHALLENGES):
        if status != 407 or challenge is None or username is None or password is None:
            break
        challenged = True
        parsed = digest.Challenge.parse(challenge)
        authorization = digest.answer(parsed, username, password, "INVITE", request_uri)
        status, challenge, answer = send(authorization.header())
    return answer, challenged or status == 407


def call_in(
    sandbox: Sandbox,
    source_ip: str,
    request_uri: str,
    *,
    username: str | None = None,
    password: str | None = None,
    from_: str | None = None,
    to: str | None = None,
) -> InviteResult:
    """Place an inbound call through an in-process sandbox, as a SIP caller would."""

    def send(authorization: str | None) -> tuple[int, str | None, InviteResult]:
        result = sandbox.invite(Invite(source_ip, request_uri, from_, to, None, authorization))
        return result.status, result.challenge, result

    result, _ = with_digest(send, request_uri, username, password)
    return result


class SandboxError(PlivoAPIError):
    """The sandbox, standing where Plivo's API does, could not be reached or refused a request."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message)


@dataclass
class SandboxClient:
    """The sandbox's control API over HTTP (the URL PLIVO_API_URL points at)."""

    base_url: str
    auth_id: str
    auth_token: str = field(repr=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.auth = (self.auth_id, self.auth_token)
        self.base_url = self.base_url.rstrip("/")

    def _request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> requests.Response:
        try:
            response = self._session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise SandboxError(
                None, f"the sandbox at {self.base_url} is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code not in ok:
            raise SandboxError(response.status_code, _error(response))
        return response

    def call(
        self,
        source_ip: str,
        request_uri: str,
        *,
        username: str | None = None,
        password: str | None = None,
        from_: str | None = None,
        to: str | None = None,
    ) -> dict[str, Any]:
        """Place an inbound call; return the sandbox's answer (status, reason, call timeline)."""
        body = {"source_ip": source_ip, "request_uri": request_uri, "from": from_, "to": to}

        def send(authorization: str | None) -> tuple[int, str | None, dict[str, Any]]:
            headers = {PROXY_AUTHORIZATION: authorization} if authorization else {}
            response = self._request(
                "POST",
                "/sandbox/invite",
                ok=(200, 403, 404, 407),
                json={k: v for k, v in body.items() if v is not None},
                headers=headers,
            )
            return response.status_code, response.headers.get(PROXY_AUTHENTICATE), response.json()

        answer, challenged = with_digest(send, request_uri, username, password)
        answer["challenged"] = challenged
        return answer

    def timeline(self, call_uuid: str, wait: float = 0.0) -> dict[str, Any]:
        """Return a call's timeline, waiting up to `wait` s for it to settle."""
        data: dict[str, Any] = self._request(
            "GET", f"/sandbox/calls/{call_uuid}", params={"wait": wait}
        ).json()
        return data

    def hang_up(self, call_uuid: str) -> dict[str, Any]:
        """The caller hangs up a call the AI agent holds."""
        data: dict[str, Any] = self._request("POST", f"/sandbox/calls/{call_uuid}/hangup").json()
        return data

    def advance(self, seconds: float) -> str:
        """Move the sandbox clock forward; return its new time."""
        now: str = self._request("POST", "/sandbox/clock", json={"advance": seconds}).json()["now"]
        return now

    def calls(self) -> list[dict[str, Any]]:
        """Return every call the sandbox remembers, oldest first, without timelines."""
        found: list[dict[str, Any]] = self._request("GET", "/sandbox/calls").json()["calls"]
        return found

    def lockouts(self) -> list[dict[str, str]]:
        """Return the lockouts in force."""
        found: list[dict[str, str]] = self._request("GET", "/sandbox/lockouts").json()["lockouts"]
        return found


def _error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(body.get("error") or body.get("reason") or f"HTTP {response.status_code}")
