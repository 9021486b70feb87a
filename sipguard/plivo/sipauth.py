"""SIP-auth resources (credentials, IP ACLs, entries, app assignment) within Plivo's limits.

Every documented limit is checked here before a request is sent, and quotas are counted before
anything is created, so a user learns of a limit from this tool rather than from a refused call
halfway through a setup. Limits: Plivo's SIP-authentication page, "Validation Limits" and FAQ
(https://www.plivo.com/docs/voice/concepts/sip-authentication; docs/plivo.md, "SIP authentication").
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sipguard.calls.causes import AUTH_CREDENTIAL, AUTH_IP_ACL, AUTH_NONE, SIP_AUTH_TYPES
from sipguard.errors import PlivoAPIError, ValidationError
from sipguard.plivo.api import PlivoAPI
from sipguard.secret import Secret
from xml_builders import check_text, has_control

USERNAME_MIN, USERNAME_MAX = 3, 64
PASSWORD_MIN, PASSWORD_MAX = 12, 128
ACL_NAME_MAX = 120
ENTRY_DESCRIPTION_MAX = 255
MAX_ACLS, MAX_CREDENTIALS, MAX_ENTRIES_PER_ACL = 100, 200, 50
REALM = "app.plivo.com"
GENERATED_PASSWORD_LENGTH = 24

_USERNAME = re.compile(r"[A-Za-z0-9._-]+")
_APP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What a create may have done when Plivo accepts it (2xx) but returns no id (PlivoOutcomeUnknown).
_ACL_EFFECT = "the IP ACL may have been created"
_ENTRY_EFFECT = "the entry may have been added"
_CREDENTIAL_EFFECT = "the credential may have been created"
_UNASSIGN_HINT = (
    "If it is still assigned to an application, remove the assignment first: "
    'sipguard sipauth assign --app-id APP_ID --mode none (sets sip_auth_type to "")'
)

Password = str | Secret


def request_uri(app_id: str) -> str:
    """Return the Request-URI a SIP provider must send INVITEs to for auth to apply."""
    return f"sip:{check_app_id(app_id)}@{REALM}"


def check_app_id(app_id: str) -> str:
    """Check a Plivo application id (digits in practice) is safe to put in a path."""
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id):
        raise ValidationError("app_id", "must be a Plivo application id (letters, digits, - or _)")
    return app_id


def check_username(username: str) -> str:
    """3-64 characters of letters, digits, '.', '_' and '-'."""
    if not isinstance(username, str) or not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise ValidationError("username", f"must be {USERNAME_MIN}-{USERNAME_MAX} characters")
    if not _USERNAME.fullmatch(username):
        raise ValidationError("username", "may hold only letters, digits, '.', '_' and '-'")
    return username


def check_password(password: Password) -> str:
    """12-128 characters with an upper-case letter, a lower-case letter and a digit.

    Messages name the rule, never the password.
    """
    value = password.reveal() if isinstance(password, Secret) else password
    if not isinstance(value, str) or not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise ValidationError("password", f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")
    if has_control(value):
        raise ValidationError("password", "must not contain control characters")
    for test, kind in ((str.isupper, "an upper-case letter"), (str.islower, "a lower-case letter")):
        if not any(test(char) and char.isascii() for char in value):
            raise ValidationError("password", f"must include {kind}")
    if not any(char in string.digits for char in value):
        raise ValidationError("password", "must include a digit")
    return value


def generate_password(
    length: int = GENERATED_PASSWORD_LENGTH, choice: Callable[[str], str] = secrets.choice
) -> str:
    """Return a random password that meets Plivo's rules (letters and digits, no quoting needed)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        password = "".join(choice(alphabet) for _ in range(length))
        try:
            return check_password(password)
        except ValidationError:
            continue  # about 1 draw in 300 lacks a class; draw again rather than bias the result


def check_acl_name(name: str) -> str:
    """A non-empty name of at most 120 characters."""
    if isinstance(name, str) and name and not name.strip():
        raise ValidationError("name", "must not be blank")
    return check_text("name", name, max_length=ACL_NAME_MAX)


@dataclass(frozen=True)
class Entry:
    """One IP ACL entry: an IPv4 or IPv6 address and a CIDR prefix."""

    ip: str
    prefix: int
    description: str | None = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The range this entry admits (host bits ignored)."""
        return ipaddress.ip_network(f"{self.ip}/{self.prefix}", strict=False)

    def __str__(self) -> str:
        return f"{self.ip}/{self.prefix}"


def parse_entry(cidr: str, description: str | None = None) -> Entry:
    """Parse ``ADDRESS`` or ``ADDRESS/PREFIX``: IPv4 (prefix 0-32) or IPv6 (0-128), no hostnames."""
    if not isinstance(cidr, str) or not cidr.strip():
        raise ValidationError("ip", "must be an IPv4 or IPv6 address, optionally /PREFIX")
    address, slash, prefix_text = cidr.strip().partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValidationError(
            "ip", f"{address!r} is not an IPv4 or IPv6 address (hostnames are not supported)"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise ValidationError("ip", "an IPv6 zone (%…) has no meaning to Plivo")
    limit: int = ip.max_prefixlen
    prefix: int
    if not slash:
        prefix = limit
    elif prefix_text.isascii() and prefix_text.isdigit() and len(prefix_text) <= 3:
        prefix = int(prefix_text)
    else:
        raise ValidationError("prefix", f"must be a whole number from 0 to {limit}")
    if not 0 <= prefix <= limit:
        raise ValidationError(
            "prefix", f"must be 0-{limit} for an IPv{ip.version} address, got {prefix}"
        )
    return Entry(str(ip), prefix, check_description(description))


def check_description(description: str | None) -> str | None:
    """At most 255 characters; optional."""
    if description is None or description == "":
        return description
    return check_text("description", description, max_length=ENTRY_DESCRIPTION_MAX)


def assignment(
    mode: str, credential_uuid: str | None = None, ip_acl_uuid: str | None = None
) -> dict[str, str]:
    """Return the Application fields for `mode`; ``""`` or ``"none"`` removes the assignment."""
    if mode in ("", AUTH_NONE):
        if credential_uuid or ip_acl_uuid:
            raise ValidationError("mode", "removing the assignment takes no credential or ACL")
        return {"sip_auth_type": ""}
    if mode not in SIP_AUTH_TYPES:
        raise ValidationError("mode", f"must be one of {', '.join(SIP_AUTH_TYPES)} or {AUTH_NONE}")
    fields = {"sip_auth_type": mode}
    needs_acl, needs_credential = mode != AUTH_CREDENTIAL, mode != AUTH_IP_ACL
    for needed, key, value in (
        (needs_acl, "ip_acl_uuid", ip_acl_uuid),
        (needs_credential, "credential_uuid", credential_uuid),
    ):
        if needed and not value:
            raise ValidationError(key, f"mode {mode} needs {key}")
        if not needed and value:
            raise ValidationError(key, f"mode {mode} takes no {key}")
        if value:
            fields[key] = value
    return fields


@dataclass(frozen=True)
class Quota:
    """How much of one documented quota is used."""

    resource: str
    used: int
    limit: int


@dataclass
class SetupReport:
    """What `SipAuth.setup` found, created and assigned."""

    app_id: str
    mode: str
    request_uri: str
    acl: dict[str, Any] | None = None
    acl_created: bool = False
    entries_added: list[str] = field(default_factory=list)
    entries_kept: list[str] = field(default_factory=list)
    entries_extra: list[str] = field(default_factory=list)  # in the ACL, not asked for
    entries_removed: list[str] = field(default_factory=list)  # extra ones removed by prune
    credential: dict[str, Any] | None = None
    credential_action: str | None = None  # "created", "password updated" or "kept"


class SipAuth:
    """Plivo's SipAuth resources and application assignment, limits checked first."""

    def __init__(self, api: PlivoAPI) -> None:
        self.api = api

    # -- credentials ----------------------------------------------------------------------------

    def create_credential(self, username: str, password: Password) -> dict[str, Any]:
        """Create a credential after checking its limits, the quota and that the name is free."""
        check_username(username)
        value = check_password(password)
        self._room_for_credential(username, self.list_credentials())
        return self._create_credential(username, value)

    def list_credentials(self) -> list[dict[str, Any]]:
        """Return every credential (Plivo never returns passwords)."""
        return self.api.list("credential")

    def get_credential(self, uuid: str) -> dict[str, Any]:
        """Return one credential."""
        return self.api.get("credential", uuid)

    def set_password(self, uuid: str, password: Password) -> dict[str, Any]:
        """Change a credential's password (the only field Plivo lets change); effective at once."""
        return self.api.update("credential", uuid, {"password": check_password(password)})

    def delete_credential(self, uuid: str) -> None:
        """Delete a credential; one still assigned is refused with a hint to unassign it."""
        self._delete("credential", uuid)

    # -- IP ACLs and entries --------------------------------------------------------------------

    def create_acl(self, name: str) -> dict[str, Any]:
        """Create an IP ACL after checking its name and the account's quota."""
        check_acl_name(name)
        self._room_for_acl(self.list_acls())
        return self._create_acl(name)

    def list_acls(self) -> list[dict[str, Any]]:
        """Return every IP ACL."""
        return self.api.list("acl")

    def get_acl(self, uuid: str) -> dict[str, Any]:
        """Return one IP ACL."""
        return self.api.get("acl", uuid)

    def delete_acl(self, uuid: str) -> None:
        """Delete an IP ACL; one still assigned is refused with a hint to unassign it."""
        self._delete("acl", uuid)

    def add_entry(self, acl_uuid: str, cidr: str, description: str | None = None) -> dict[str, Any]:
        """Add an address or CIDR range to an ACL after checking it and the ACL's quota."""
        entry = parse_entry(cidr, description)
        self._room_for_entries(acl_uuid, len(self.list_entries(acl_uuid)), 1)
        return self._add(acl_uuid, entry)

    def list_entries(self, acl_uuid: str) -> list[dict[str, Any]]:
        """Return an ACL's entries."""
        return self.api.list("entry", acl=acl_uuid)

    def remove_entry(self, acl_uuid: str, entry_uuid: str) -> None:
        """Remove one entry from an ACL (effective at once for every app using the ACL)."""
        self.api.delete("entry", entry_uuid, acl=acl_uuid)

    # -- quotas and assignment ------------------------------------------------------------------

    def quotas(self) -> list[Quota]:
        """Count what the account uses of each documented quota (entries per ACL included)."""
        acls = self.list_acls()
        found = [
            Quota("credentials", len(self.list_credentials()), MAX_CREDENTIALS),
            Quota("ip_acls", len(acls), MAX_ACLS),
        ]
        for acl in acls:
            uuid = str(acl.get("uuid"))
            label = f"entries in {acl.get('name') or uuid}"
            found.append(Quota(label, len(self.list_entries(uuid)), MAX_ENTRIES_PER_ACL))
        return found

    def assign(
        self,
        app_id: str,
        mode: str,
        *,
        credential_uuid: str | None = None,
        ip_acl_uuid: str | None = None,
    ) -> dict[str, Any]:
        """Set an application's sip_auth_type with the matching uuid(s); mode "none" removes it."""
        fields = assignment(mode, credential_uuid, ip_acl_uuid)
        return self.api.update("application", check_app_id(app_id), fields)

    # -- the whole setup in one step ------------------------------------------------------------

    def setup(
        self,
        app_id: str,
        mode: str,
        *,
        allow: Sequence[str] = (),
        credential_user: str | None = None,
        password: Password | None = None,
        acl_name: str | None = None,
        prune: bool = False,
    ) -> SetupReport:
        """Create or reuse the ACL, entries and credential `mode` needs, then assign them.

        Everything is checked (limits, quotas, a password for a new credential) before the
        first change is sent, so a refused setup leaves the account as it was. Entries of a
        reused ACL that `allow` does not name are reported, and removed with `prune`.
        """
        if mode not in SIP_AUTH_TYPES:
            raise ValidationError("mode", f"must be one of {', '.join(SIP_AUTH_TYPES)}")
        report = SetupReport(check_app_id(app_id), mode, request_uri(app_id))
        needs_acl, needs_credential = mode != AUTH_CREDENTIAL, mode != AUTH_IP_ACL
        entries = [parse_entry(cidr) for cidr in allow]
        if needs_acl and not entries:
            raise ValidationError("allow", f"mode {mode} needs at least one --allow CIDR")
        if not needs_acl and entries:
            raise ValidationError("allow", f"mode {mode} uses no IP ACL; drop --allow")
        if needs_credential and credential_user is None:
            raise ValidationError("credential_user", f"mode {mode} needs --credential-user")
        if not needs_credential and (credential_user is not None or password is not None):
            raise ValidationError("credential_user", f"mode {mode} uses no credential")
        if credential_user is not None:
            check_username(credential_user)
        new_password = check_password(password) if password is not None else None
        name = check_acl_name(acl_name or f"sipguard-{app_id}")

        # Plan: read what exists, check every quota, then write.
        acl, missing, extra = None, list(_unique(entries)), []
        if needs_acl:
            acls = self.list_acls()
            acl = next((item for item in acls if item.get("name") == name), None)
            if acl is None:
                self._room_for_acl(acls)
            else:
                existing = self.list_entries(str(acl["uuid"]))
                present = {_entry_network(item) for item in existing}
                report.entries_kept = [str(e) for e in missing if e.network in present]
                missing = [e for e in missing if e.network not in present]
                wanted = {e.network for e in entries}
                extra = [item for item in existing if _entry_network(item) not in wanted]
                report.entries_extra = [_entry_label(item) for item in extra]
                # Plivo's count is what it holds, duplicates and unreadable entries included.
                holding = len(existing) - (len(extra) if prune else 0)
                self._room_for_entries(str(acl["uuid"]), holding, len(missing))
            if acl is None:
                self._room_for_entries(name, 0, len(missing))
        credential = None
        if needs_credential:
            assert credential_user is not None
            credentials = self.list_credentials()
            credential = next(
                (item for item in credentials if item.get("username") == credential_user), None
            )
            if credential is None:
                if new_password is None:
                    raise ValidationError(
                        "password",
                        f"credential {credential_user} does not exist yet: give a password "
                        "(--password-stdin, --password-env, --password-file or --generate)",
                    )
                self._room_for_credential(credential_user, credentials)

        # Write.
        if needs_acl:
            if acl is None:
                acl = self._create_acl(name)
                report.acl_created = True
            if prune:
                # Removed first: access only narrows, and the quota holds throughout.
                for item in extra:
                    self.remove_entry(str(acl["uuid"]), str(item["uuid"]))
                report.entries_removed, report.entries_extra = report.entries_extra, []
            for entry in missing:
                self._add(str(acl["uuid"]), entry)
                report.entries_added.append(str(entry))
            report.acl = acl
        if needs_credential:
            assert credential_user is not None
            if credential is None:
                assert new_password is not None  # checked while planning
                credential = self._create_credential(credential_user, new_password)
                report.credential_action = "created"
            elif new_password is not None:
                self.api.update("credential", str(credential["uuid"]), {"password": new_password})
                report.credential_action = "password updated"
            else:
                report.credential_action = "kept"
            report.credential = credential
        self.assign(
            app_id,
            mode,
            credential_uuid=str(credential["uuid"]) if credential else None,
            ip_acl_uuid=str(acl["uuid"]) if acl else None,
        )
        return report

    # -- helpers --------------------------------------------------------------------------------

    def _create_acl(self, name: str) -> dict[str, Any]:
        return self.api.create("acl", {"name": name}, effect=_ACL_EFFECT)

    def _create_credential(self, username: str, password: str) -> dict[str, Any]:
        values = {"username": username, "password": password}
        return self.api.create("credential", values, effect=_CREDENTIAL_EFFECT)

    def _add(self, acl_uuid: str, entry: Entry) -> dict[str, Any]:
        values = {"ip": entry.ip, "prefix": entry.prefix, "description": entry.description}
        return self.api.create("entry", values, effect=_ENTRY_EFFECT, acl=acl_uuid)

    def _delete(self, kind: str, uuid: str) -> None:
        try:
            self.api.delete(kind, uuid)
        except PlivoAPIError as exc:
            # Plivo answers 400 (the FAQ) or 409 (the API page) for a resource in use.
            if exc.status not in (400, 409):
                raise
            raise PlivoAPIError(
                exc.status, exc.error, api_id=exc.api_id, hint=_UNASSIGN_HINT
            ) from None

    @staticmethod
    def _room_for_credential(username: str, credentials: list[dict[str, Any]]) -> None:
        taken = next((item for item in credentials if item.get("username") == username), None)
        if taken is not None:
            raise ValidationError(
                "username", f"{username} already exists (credential {taken.get('uuid')})"
            )
        if len(credentials) >= MAX_CREDENTIALS:
            raise ValidationError(
                "credentials", f"the account already has the maximum of {MAX_CREDENTIALS}"
            )

    @staticmethod
    def _room_for_acl(acls: list[dict[str, Any]]) -> None:
        if len(acls) >= MAX_ACLS:
            raise ValidationError("ip_acls", f"the account already has the maximum of {MAX_ACLS}")

    @staticmethod
    def _room_for_entries(acl: str, present: int, adding: int) -> None:
        if present + adding > MAX_ENTRIES_PER_ACL:
            raise ValidationError(
                "entries",
                f"IP ACL {acl} has {present} entries; adding {adding} would pass the maximum "
                f"of {MAX_ENTRIES_PER_ACL}",
            )


def _unique(entries: Iterable[Entry]) -> Iterable[Entry]:
    seen: set[object] = set()
    for entry in entries:
        if entry.network not in seen:
            seen.add(entry.network)
            yield entry


def _entry_label(item: dict[str, Any]) -> str:
    """How an entry Plivo returned reads in a report: ip/prefix, or its uuid."""
    if item.get("ip") is not None and item.get("prefix") is not None:
        return f"{item['ip']}/{item['prefix']}"
    return str(item.get("ip") or item.get("uuid"))


def _entry_network(item: dict[str, Any]) -> object:
    """The network an entry Plivo returned admits, or None when it cannot be read."""
    try:
        return parse_entry(f"{item.get('ip')}/{item.get('prefix')}").network
    except ValidationError:
        try:
            return parse_entry(str(item.get("ip"))).network
        except ValidationError:
            return None
