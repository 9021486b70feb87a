"""Plivo REST calls: one client on top of the plivo SDK's, and one table of paths and fields.

The SDK (plivo.RestClient) brings the HTTP session, Basic auth, user agent, timeout and proxies.
Its resource classes know nothing of SIP authentication, and its request() pins the base URL to
api.plivo.com and turns errors into untyped exceptions, so requests are built here and sent
through its session. Every path and field name of the endpoints used is written once, in
`RESOURCES`: a name Plivo spells differently is one edit there.

Sources: Plivo's SIP-authentication page
(https://www.plivo.com/docs/voice/concepts/sip-authentication) and docs/plivo.md, "REST API".
UNCONFIRMED there and marked below (docs/plivo.md, Where Plivo is silent): the IP ACL and entry
paths' field names, and paging with limit/offset on the SipAuth lists (the other Plivo lists page
that way, 20 per page at most).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import plivo
import requests

from sipguard.errors import ConfigError, PlivoAPIError, PlivoOutcomeUnknown, ValidationError

DEFAULT_BASE_URL = "https://api.plivo.com"
PAGE_SIZE = 20  # Plivo's largest page
MAX_PAGES = 50  # 1000 objects: far above every SipAuth quota, so a bad `meta` cannot loop
SECRET_FIELDS = ("password", "sip_auth_password")


@dataclass(frozen=True)
class Resource:
    """Where a resource lives and what Plivo calls its fields.

    `path` is relative to /v1/Account/{auth_id}/ and may name a parent (``{acl}``).
    `fields` maps this project's names to Plivo's, for requests and responses alike.
    """

    path: str
    id_field: str
    fields: Mapping[str, str] = field(default_factory=dict)


RESOURCES: Mapping[str, Resource] = {
    "call": Resource(
        "Call/",
        "request_uuid",
        {
            "from_": "from",
            "to": "to",
            "answer_url": "answer_url",
            "answer_method": "answer_method",
            "hangup_url": "hangup_url",
            "hangup_method": "hangup_method",
            "fallback_url": "fallback_url",
            "fallback_method": "fallback_method",
            "caller_name": "caller_name",
            "time_limit": "time_limit",
            "ring_timeout": "ring_timeout",
            "send_digits": "send_digits",
            "machine_detection": "machine_detection",
            "sip_headers": "sip_headers",
            # Named by the SIP-auth page's Make Call section; absent from every SDK.
            "sip_auth_username": "sip_auth_username",
            "sip_auth_password": "sip_auth_password",
            # Transfer (POST Call/{call_uuid}/).
            "legs": "legs",
            "aleg_url": "aleg_url",
            "aleg_method": "aleg_method",
        },
    ),
    "credential": Resource(
        "SipAuth/Credential/",
        "credential_uuid",
        {"username": "username", "password": "password", "realm": "realm"},
    ),
    # UNCONFIRMED: the public page is cut off before the IP ACL section. The path is the one the
    # SIP-auth page names; "name" is its documented concept; the uuid field mirrors credentials.
    "acl": Resource("SipAuth/IpAccessControlList/", "ip_acl_uuid", {"name": "name"}),
    # UNCONFIRMED: entry field names (documented concepts: IPv4/IPv6 address, CIDR prefix,
    # description).
    "entry": Resource(
        "SipAuth/IpAccessControlList/{acl}/Entry/",
        "entry_uuid",
        {"ip": "ip_address", "prefix": "cidr_prefix", "description": "description"},
    ),
    "application": Resource(
        "Application/",
        "app_id",
        {
            "app_name": "app_name",
            "answer_url": "answer_url",
            "hangup_url": "hangup_url",
            "sip_auth_type": "sip_auth_type",
            "credential_uuid": "credential_uuid",
            "ip_acl_uuid": "ip_acl_uuid",
        },
    ),
}


_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _segment(name: str, value: str) -> str:
    """Check one path segment: an id of letters, digits, '-' and '_' only.

    Anything else is refused rather than sent: "." or ".." would be resolved by the HTTP
    client into another resource (the ACL instead of its entry, the account instead of a call).
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValidationError(name, "must be an id of letters, digits, '-' and '_'")
    return value


class PlivoAPI:
    """Calls Plivo's REST API through the SDK's session; every failure is a PlivoAPIError."""

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("PLIVO_API_URL must be an absolute http(s) URL")
        try:
            self._client = plivo.RestClient(auth_id, auth_token, timeout=timeout)
        except plivo.exceptions.AuthenticationError:
            raise ConfigError(
                "PLIVO_AUTH_ID must be your 20-character Plivo auth ID (MA… or SA…), "
                "from the console's overview page"
            ) from None
        self.auth_id = auth_id
        self.base_url = base_url.rstrip("/")
        self._root = f"{self.base_url}/v1/Account/{auth_id}/"

    # -- generic operations over RESOURCES ------------------------------------------------------

    def create(
        self, kind: str, values: Mapping[str, Any], *, effect: str | None = None, **parents: str
    ) -> dict[str, Any]:
        """POST a new `kind` resource; return Plivo's answer in this project's field names.

        With `effect` (what the request may have done, e.g. "the call may have been placed"), a
        2xx answer without the resource's id raises PlivoOutcomeUnknown saying so, with
        Plivo's api_id: a caller that retried on it could do the thing twice.
        """
        expect = (RESOURCES[kind].id_field, effect) if effect is not None else None
        return self._send("POST", self._path(kind, parents), kind, values, expect=expect)

    def get(self, kind: str, uuid: str, **parents: str) -> dict[str, Any]:
        """GET one resource."""
        return self._send("GET", self._path(kind, parents, uuid), kind)

    def update(
        self, kind: str, uuid: str, values: Mapping[str, Any], **parents: str
    ) -> dict[str, Any]:
        """POST changed fields to one resource (Plivo updates with POST)."""
        return self._send("POST", self._path(kind, parents, uuid), kind, values)

    def delete(self, kind: str, uuid: str, **parents: str) -> None:
        """DELETE one resource (Plivo answers 204)."""
        self._send("DELETE", self._path(kind, parents, uuid), kind)

    def list(self, kind: str, **parents: str) -> list[dict[str, Any]]:
        """Return every resource of `kind`, following Plivo's limit/offset pages."""
        return list(self._pages(kind, parents))

    # -- plumbing -------------------------------------------------------------------------------

    def _path(self, kind: str, parents: Mapping[str, str], uuid: str | None = None) -> str:
        path = RESOURCES[kind].path.format(
            **{name: _segment(name, value) for name, value in parents.items()}
        )
        return path + (f"{_segment(kind, uuid)}/" if uuid is not None else "")

    def _pages(self, kind: str, parents: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        path = self._path(kind, parents)
        offset = 0
        seen: set[object] = set()
        for _ in range(MAX_PAGES):
            page = self._request("GET", path, params={"limit": PAGE_SIZE, "offset": offset})
            objects = page.get("objects")
            if not isinstance(objects, list):
                raise PlivoAPIError(200, "list answer has no 'objects' array")
            fresh = 0
            for obj in objects:
                if not isinstance(obj, dict):
                    continue
                item = self._ours(kind, obj)
                key = item.get("uuid")
                if key is not None and key in seen:
                    continue  # a server that ignores `offset` must not double the count
                seen.add(key)
                fresh += 1
                yield item
            if objects and not fresh:
                return  # the same page again: `offset` is being ignored
            offset += len(objects)
            meta = page.get("meta")
            meta = meta if isinstance(meta, dict) else {}
            total = meta.get("total_count")
            # A short page is the last one, whatever `meta` says (or if it is missing).
            done = len(objects) < PAGE_SIZE or (meta.get("next") is None and "next" in meta)
            if done or (isinstance(total, int) and offset >= total):
                return

    def _send(
        self,
        method: str,
        path: str,
        kind: str,
        values: Mapping[str, Any] | None = None,
        *,
        expect: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        body = self._wire(kind, values) if values is not None else None
        secrets = tuple(str(values[key]) for key in SECRET_FIELDS if values and values.get(key))
        answer = self._request(method, path, json=body, secrets=secrets, expect=expect)
        return self._ours(kind, answer)

    def _wire(self, kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
        names = RESOURCES[kind].fields
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{kind}: no Plivo field for {', '.join(unknown)}")
        return {names[key]: value for key, value in values.items() if value is not None}

    def _ours(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Rename Plivo's fields to ours; keep the rest; expose the id as ``uuid``."""
        resource = RESOURCES[kind]
        ours = {wire: key for key, wire in resource.fields.items()}
        renamed = {
            ours.get(name, name): value
            for name, value in obj.items()
            if ours.get(name, name) not in SECRET_FIELDS  # should one ever come back
        }
        if resource.id_field in obj:
            renamed["uuid"] = obj[resource.id_field]
        return renamed

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        secrets: tuple[str, ...] = (),
        expect: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; return a 2xx answer's JSON object ({} for anything else).

        `expect` is (field, effect): a 2xx answer without that id field raises
        PlivoOutcomeUnknown saying `effect`, since Plivo did accept the request.
        """
        client = self._client
        prepared = client.session.prepare_request(
            requests.Request(method, self._root + path, params=params, json=json)
        )
        try:
            response = client.send_request(prepared)
        except requests.RequestException as exc:
            # The exception text can carry the URL; the type says enough.
            host = urlsplit(self.base_url).hostname
            raise PlivoAPIError(None, f"could not reach {host} ({type(exc).__name__})") from None
        body = _json(response)
        if 200 <= response.status_code < 300:
            found = body if isinstance(body, dict) else {}
            if expect is not None and not _is_id(found.get(expect[0])):
                raise _unsure(response.status_code, found, *expect)
            return found
        error = body.get("error") if isinstance(body, dict) else None
        api_id = body.get("api_id") if isinstance(body, dict) else None
        text = _error_text(error) or response.reason or "request refused"
        for secret in secrets:
            # Should Plivo ever echo a password back, it stops here.
            text = text.replace(secret, "***")
        raise PlivoAPIError(
            response.status_code,
            text,
            api_id=str(api_id) if api_id else None,
            retry_after=response.headers.get("Retry-After"),
        )


def _is_id(value: Any) -> bool:
    """An id Plivo returns: a non-empty string, or a non-empty list of them (several calls)."""
    if isinstance(value, list):
        return bool(value) and all(_is_id(item) for item in value)
    return isinstance(value, str) and bool(value.strip())


def _unsure(status: int, body: Mapping[str, Any], field: str, effect: str) -> PlivoOutcomeUnknown:
    api_id = body.get("api_id")
    return PlivoOutcomeUnknown(
        status,
        f"the answer carried no {field}, so {effect}",
        api_id=str(api_id) if api_id else None,
        hint=(
            "Look for it in Plivo's console (by api_id, when there is one) before retrying: "
            "a retry could do it a second time"
        ),
    )


def _json(response: requests.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {}


def _error_text(error: Any) -> str | None:
    """Plivo's `error` is usually a string, sometimes a {field: message} object."""
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        return "; ".join(f"{key}: {value}" for key, value in error.items())
    return None
