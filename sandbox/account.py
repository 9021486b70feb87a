"""The sandbox's Plivo account: SIP credentials, IP ACLs, applications, with Plivo's rules.

Limits and quotas are those of Plivo's SIP-authentication page ("Validation Limits",
https://www.plivo.com/docs/voice/concepts/sip-authentication) and are checked by the same
functions the client uses before it sends anything (sipguard/plivo/sipauth.py), so a limit is
written once. Passwords are kept only as HA1 = MD5(username:realm:password) and never returned.
Where Plivo's pages are silent the code says so, with the choice made (docs/plivo.md, Where
Plivo is silent).
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sandbox.digest import ha1
from sipguard.calls.causes import AUTH_CREDENTIAL, AUTH_IP_ACL, SIP_AUTH_TYPES
from sipguard.calls.forms import unmapped
from sipguard.errors import ValidationError
from sipguard.plivo.sipauth import (
    MAX_ACLS,
    MAX_CREDENTIALS,
    MAX_ENTRIES_PER_ACL,
    REALM,
    check_acl_name,
    check_password,
    check_username,
    parse_entry,
)
from xml_builders import check_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METHODS = ("GET", "POST")
# An application's callback URLs and methods, and its inbound SIP-auth assignment.
URL_FIELDS = (
    "answer_url",
    "answer_method",
    "hangup_url",
    "hangup_method",
    "fallback_answer_url",
    "fallback_method",
)
ASSIGNMENT_FIELDS = ("sip_auth_type", "credential_uuid", "ip_acl_uuid")

# Deleting an assigned credential or ACL "returns a 400 error" (docs/plivo.md, SIP
# authentication); the message is the one Plivo gives for credentials (docs/plivo.md, REST API),
# and the same sentence for ACLs.
CREDENTIAL_IN_USE = (
    "This credential is currently assigned to an application. Remove the assignment first by "
    "setting sip_auth_type to empty."
)
ACL_IN_USE = (
    "This IP ACL is currently assigned to an application. Remove the assignment first by "
    "setting sip_auth_type to empty."
)


class ApiError(Exception):
    """A request Plivo would refuse: the HTTP status and Plivo's ``error`` text."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _invalid(exc: ValidationError) -> ApiError:
    return ApiError(400, exc.message)


@dataclass
class Credential:
    """A SIP credential: the username and HA1, never the password."""

    uuid: str
    username: str
    ha1: str
    realm: str = REALM


@dataclass
class AclEntry:
    """One address or CIDR range of an IP ACL."""

    uuid: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ip: str
    prefix: int
    description: str | None


@dataclass
class Acl:
    """An IP ACL and its entries, in the order they were added."""

    uuid: str
    name: str
    entries: dict[str, AclEntry] = field(default_factory=dict)

    def admits(self, address: IPAddress) -> bool:
        """Tell whether `address` falls in one of the entries (IPv4-mapped IPv6 counts as v4)."""
        candidates = {address, unmapped(address)}
        return any(
            candidate in entry.network
            for entry in self.entries.values()
            for candidate in candidates
            if candidate.version == entry.network.version
        )


@dataclass
class Application:
    """A Plivo application: its URLs and its inbound SIP-auth assignment."""

    app_id: str
    app_name: str
    answer_url: str
    answer_method: str = "POST"
    hangup_url: str | None = None
    hangup_method: str = "POST"
    fallback_answer_url: str | None = None
    fallback_method: str = "POST"
    sip_auth_type: str = ""
    credential_uuid: str | None = None
    ip_acl_uuid: str | None = None


def _only(fields: Mapping[str, Any], *known: str) -> None:
    """Refuse a field the resource does not have, rather than ignore it."""
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]}")


def field_text(fields: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    """Read a string parameter; missing (when required) or not a string is a 400."""
    value = fields.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"{key} parameter is missing")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string")
    return value


def _method(fields: Mapping[str, Any], key: str, default: str) -> str:
    value = (field_text(fields, key) or default).upper()
    if value not in METHODS:
        raise ApiError(400, f"{key} must be GET or POST")
    return value


def _url(fields: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = field_text(fields, key, required)
    if value is None:
        return None
    try:
        return check_url(key, value)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _uuid() -> str:
    return str(uuid.uuid4())


def _app_id() -> str:
    # Plivo's application ids are long digit strings; 20 digits never read as a phone number
    # (E.164 numbers have at most 15).
    return str(secrets.randbelow(9 * 10**19) + 10**19)


class Account:
    """One account's SipAuth resources and applications, safe to share between threads."""

    def __init__(
        self,
        auth_id: str,
        *,
        new_uuid: Callable[[], str] = _uuid,
        new_app_id: Callable[[], str] = _app_id,
    ) -> None:
        self.auth_id = auth_id
        self.lock = threading.RLock()
        self.credentials: dict[str, Credential] = {}
        self.acls: dict[str, Acl] = {}
        self.applications: dict[str, Application] = {}
        self.numbers: dict[str, str] = {}  # phone number -> app_id
        self._new_uuid = new_uuid
        self._new_app_id = new_app_id

    def resource_uri(self, path: str) -> str:
        """Return Plivo's resource_uri for a path under the account."""
        return f"/v1/Account/{self.auth_id}/{path}"

    # -- credentials ----------------------------------------------------------------------------

    def create_credential(self, fields: Mapping[str, Any]) -> Credential:
        """Create a credential; 400 for a limit, 409 for a taken username."""
        _only(fields, "username", "password")
        username = field_text(fields, "username", required=True)
        password = field_text(fields, "password", required=True)
        assert username is not None and password is not None
        try:
            check_username(username)
            check_password(password)
        except ValidationError as exc:
            raise _invalid(exc) from None
        with self.lock:
            if any(c.username == username for c in self.credentials.values()):
                raise ApiError(409, f"a credential with username {username} already exists")
            if len(self.credentials) >= MAX_CREDENTIALS:
                raise ApiError(400, f"credential limit reached: at most {MAX_CREDENTIALS}")
            credential = Credential(self._new_uuid(), username, ha1(username, REALM, password))
            self.credentials[credential.uuid] = credential
            return credential

    def credential(self, uuid: str) -> Credential:
        """Return one credential or raise 404."""
        with self.lock:
            found = self.credentials.get(uuid)
        if found is None:
            raise ApiError(404, "credential not found")
        return found

    def update_credential(self, uuid: str, fields: Mapping[str, Any]) -> Credential:
        """Change the password (the only field that may change); effective at once."""
        _only(fields, "username", "password")
        if "username" in fields and fields["username"] != self.credential(uuid).username:
            raise ApiError(400, "username cannot be changed; only password can be updated")
        password = field_text(fields, "password", required=True)
        assert password is not None
        try:
            check_password(password)
        except ValidationError as exc:
            raise _invalid(exc) from None
        with self.lock:
            credential = self.credential(uuid)
            credential.ha1 = ha1(credential.username, credential.realm, password)
            return credential

    def delete_credential(self, uuid: str) -> None:
        """Delete a credential; 400 while an application has it assigned."""
        with self.lock:
            self.credential(uuid)
            if any(app.credential_uuid == uuid for app in self.applications.values()):
                raise ApiError(400, CREDENTIAL_IN_USE)
            del self.credentials[uuid]

    def credential_json(self, credential: Credential) -> dict[str, Any]:
        """Plivo's credential object: no password, no HA1."""
        return {
            "credential_uuid": credential.uuid,
            "username": credential.username,
            "realm": credential.realm,
            "resource_uri": self.resource_uri(f"SipAuth/Credential/{credential.uuid}/"),
        }

    # -- IP ACLs and entries --------------------------------------------------------------------

    def create_acl(self, fields: Mapping[str, Any]) -> Acl:
        """Create an IP ACL; 400 for a bad name or a full account."""
        _only(fields, "name")
        name = field_text(fields, "name", required=True)
        assert name is not None
        try:
            check_acl_name(name)
        except ValidationError as exc:
            raise _invalid(exc) from None
        with self.lock:
            if len(self.acls) >= MAX_ACLS:
                raise ApiError(400, f"IP ACL limit reached: at most {MAX_ACLS}")
            acl = Acl(self._new_uuid(), name)
            self.acls[acl.uuid] = acl
            return acl

    def acl(self, uuid: str) -> Acl:
        """Return one ACL or raise 404."""
        with self.lock:
            found = self.acls.get(uuid)
        if found is None:
            raise ApiError(404, "IP ACL not found")
        return found

    def delete_acl(self, uuid: str) -> None:
        """Delete an ACL and its entries; 400 while an application has it assigned."""
        with self.lock:
            self.acl(uuid)
            if any(app.ip_acl_uuid == uuid for app in self.applications.values()):
                raise ApiError(400, ACL_IN_USE)
            del self.acls[uuid]

    def add_entry(self, acl_uuid: str, fields: Mapping[str, Any]) -> AclEntry:
        """Add an IPv4/IPv6 address or range; effective at once for every app using the ACL."""
        _only(fields, "ip_address", "cidr_prefix", "description")
        address = field_text(fields, "ip_address", required=True)
        prefix = fields.get("cidr_prefix")
        description = field_text(fields, "description")
        if prefix is not None and not (isinstance(prefix, int) and not isinstance(prefix, bool)):
            if not (isinstance(prefix, str) and prefix.isascii() and prefix.isdigit()):
                raise ApiError(400, "cidr_prefix must be a whole number")
        try:
            text = f"{address}/{prefix}" if prefix is not None else str(address)
            parsed = parse_entry(text, description)
        except ValidationError as exc:
            raise _invalid(exc) from None
        with self.lock:
            acl = self.acl(acl_uuid)
            if len(acl.entries) >= MAX_ENTRIES_PER_ACL:
                raise ApiError(
                    400, f"IP ACL entry limit reached: at most {MAX_ENTRIES_PER_ACL} per ACL"
                )
            entry = AclEntry(
                self._new_uuid(), parsed.network, parsed.ip, parsed.prefix, parsed.description
            )
            acl.entries[entry.uuid] = entry
            return entry

    def entry(self, acl_uuid: str, entry_uuid: str) -> AclEntry:
        """Return one entry or raise 404."""
        with self.lock:
            found = self.acl(acl_uuid).entries.get(entry_uuid)
        if found is None:
            raise ApiError(404, "IP ACL entry not found")
        return found

    def remove_entry(self, acl_uuid: str, entry_uuid: str) -> None:
        """Remove an entry; effective at once."""
        with self.lock:
            self.entry(acl_uuid, entry_uuid)
            del self.acl(acl_uuid).entries[entry_uuid]

    def acl_json(self, acl: Acl) -> dict[str, Any]:
        """The IP ACL object (field names UNCONFIRMED, as in sipguard.plivo.api.RESOURCES)."""
        return {
            "ip_acl_uuid": acl.uuid,
            "name": acl.name,
            "entry_count": len(acl.entries),
            "resource_uri": self.resource_uri(f"SipAuth/IpAccessControlList/{acl.uuid}/"),
        }

    def entry_json(self, acl: Acl, entry: AclEntry) -> dict[str, Any]:
        """The entry object (field names UNCONFIRMED, as in sipguard.plivo.api.RESOURCES)."""
        return {
            "entry_uuid": entry.uuid,
            "ip_address": entry.ip,
            "cidr_prefix": entry.prefix,
            "description": entry.description or "",
            "resource_uri": self.resource_uri(
                f"SipAuth/IpAccessControlList/{acl.uuid}/Entry/{entry.uuid}/"
            ),
        }

    # -- applications ---------------------------------------------------------------------------

    def create_application(self, fields: Mapping[str, Any], app_id: str | None = None) -> str:
        """Create an application (app_name and answer_url required); return its app_id."""
        name = field_text(fields, "app_name", required=True)
        answer_url = _url(fields, "answer_url", required=True)
        assert name is not None and answer_url is not None
        with self.lock:
            new_id = app_id or self._new_app_id()
            if new_id in self.applications:
                raise ApiError(400, f"application {new_id} already exists")
            app = Application(new_id, name, answer_url)
            self._apply(app, {k: v for k, v in fields.items() if k != "answer_url"})
            self.applications[new_id] = app
            return new_id

    def snapshot(self, app_id: str) -> Application | None:
        """Return a copy of an application as it is now (one consistent read), or None."""
        with self.lock:
            found = self.applications.get(app_id)
            return replace(found) if found is not None else None

    def check_application(self, fields: Mapping[str, Any]) -> Application:
        """Check URLs and methods as an application would take them, without storing one."""
        app = Application("", "make-call", "")
        self._apply(app, fields)
        return app

    def application(self, app_id: str) -> Application:
        """Return one application or raise 404."""
        with self.lock:
            found = self.applications.get(app_id)
        if found is None:
            raise ApiError(404, "application not found")
        return found

    def update_application(self, app_id: str, fields: Mapping[str, Any]) -> Application:
        """Change an application's URLs or SIP-auth assignment (checked before any change)."""
        with self.lock:
            app = self.application(app_id)
            self._apply(app, fields)
            return app

    def delete_application(self, app_id: str) -> None:
        """Delete an application (its assignment goes with it)."""
        with self.lock:
            self.application(app_id)
            del self.applications[app_id]
            self.numbers = {n: a for n, a in self.numbers.items() if a != app_id}

    def _apply(self, app: Application, fields: Mapping[str, Any]) -> None:
        _only(fields, "app_name", *URL_FIELDS, *ASSIGNMENT_FIELDS)
        changes: dict[str, Any] = {}
        for key in ("answer_url", "hangup_url", "fallback_answer_url"):
            if key in fields:
                changes[key] = _url(fields, key, required=key == "answer_url")
        for key in ("answer_method", "hangup_method", "fallback_method"):
            if key in fields:
                changes[key] = _method(fields, key, "POST")
        if "app_name" in fields:
            changes["app_name"] = field_text(fields, "app_name", required=True)
        changes.update(self._assignment(app, fields))
        for key, value in changes.items():
            setattr(app, key, value)

    def _assignment(self, app: Application, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Check a SIP-auth assignment: "" removes it, each type needs its uuid(s)."""
        if not set(ASSIGNMENT_FIELDS) & set(fields):
            return {}
        mode = fields.get("sip_auth_type", app.sip_auth_type)
        if not isinstance(mode, str) or mode not in ("", *SIP_AUTH_TYPES):
            raise ApiError(
                400, f"sip_auth_type must be one of {', '.join(SIP_AUTH_TYPES)} or empty"
            )
        if mode == "":
            # "remove the assignment from the application by setting sip_auth_type to empty"
            return {"sip_auth_type": "", "credential_uuid": None, "ip_acl_uuid": None}
        credential = fields.get("credential_uuid", app.credential_uuid) or None
        acl = fields.get("ip_acl_uuid", app.ip_acl_uuid) or None
        if mode != AUTH_IP_ACL:
            if credential is None:
                raise ApiError(400, f"sip_auth_type {mode} needs credential_uuid")
            if not isinstance(credential, str) or credential not in self.credentials:
                raise ApiError(400, "credential_uuid does not name a credential of this account")
        if mode != AUTH_CREDENTIAL:
            if acl is None:
                raise ApiError(400, f"sip_auth_type {mode} needs ip_acl_uuid")
            if not isinstance(acl, str) or acl not in self.acls:
                raise ApiError(400, "ip_acl_uuid does not name an IP ACL of this account")
        # Plivo's pages are silent on a uuid the type does not use (docs/plivo.md, Where Plivo
        # is silent): "at most one IP ACL and one credential" per app; the one the type does
        # not use is dropped, so it blocks no delete.
        return {
            "sip_auth_type": mode,
            "credential_uuid": credential if mode != AUTH_IP_ACL else None,
            "ip_acl_uuid": acl if mode != AUTH_CREDENTIAL else None,
        }

    def application_json(self, app: Application) -> dict[str, Any]:
        """Plivo's application object, with its SIP URI and SIP-auth fields."""
        return {
            "app_id": app.app_id,
            "app_name": app.app_name,
            "answer_url": app.answer_url,
            "answer_method": app.answer_method,
            "hangup_url": app.hangup_url or "",
            "hangup_method": app.hangup_method,
            "fallback_answer_url": app.fallback_answer_url or "",
            "fallback_method": app.fallback_method,
            "sip_uri": f"sip:{app.app_id}@{REALM}",
            "sip_auth_type": app.sip_auth_type,
            "credential_uuid": app.credential_uuid or "",
            "ip_acl_uuid": app.ip_acl_uuid or "",
            "resource_uri": self.resource_uri(f"Application/{app.app_id}/"),
        }

    def assign_number(self, number: str, app_id: str) -> None:
        """Route a phone number to an application (the console's number assignment)."""
        with self.lock:
            self.application(app_id)
            self.numbers[number] = app_id


def page(objects: Iterable[dict[str, Any]], path: str, limit: Any, offset: Any) -> dict[str, Any]:
    """Plivo's list answer: ``meta`` (limit, offset, total_count, next, previous) and objects."""
    items = list(objects)
    size = _paging(limit, "limit", 20, 1, 20)
    start = _paging(offset, "offset", 0, 0, None)
    chosen = items[start : start + size]
    after = start + size
    return {
        "meta": {
            "limit": size,
            "offset": start,
            "total_count": len(items),
            "next": f"{path}?limit={size}&offset={after}" if after < len(items) else None,
            "previous": (
                f"{path}?limit={size}&offset={max(0, start - size)}" if start > 0 else None
            ),
        },
        "objects": chosen,
    }


def _paging(raw: Any, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None or raw == "":
        return default
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 6):
        raise ApiError(400, f"{name} must be a whole number")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise ApiError(400, f"{name} must be {low}-{high}" if high else f"{name} must be ≥ {low}")
    return value
