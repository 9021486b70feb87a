"""The sandbox's Plivo REST API, and the project's REST module and CLI unchanged against it.

Rules: Plivo's SIP-authentication page (Validation Limits, Security, FAQ), cited below as
"SIP-auth page": https://www.plivo.com/docs/voice/concepts/sip-authentication
(docs/plivo.md, SIP authentication); and Plivo's REST API (docs/plivo.md, REST API).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from sandbox.account import ACL_IN_USE, CREDENTIAL_IN_USE
from sandbox.server import create_sandbox_app
from sipguard.errors import PlivoAPIError
from sipguard.plivo.api import PlivoAPI
from sipguard.plivo.sipauth import Quota, SipAuth
from tests.support.config import AUTH_ID, CANARIES, TOKEN
from tests.support.sandbox import APP_ID, CALLER_PASSWORD, URI, World

ROOT = f"/v1/Account/{AUTH_ID}/"
CREDENTIALS = "SipAuth/Credential/"
ACLS = "SipAuth/IpAccessControlList/"
APPLICATIONS = "Application/"
CALLS = "Call/"
REALM = "app.plivo.com"
OFFICE_IP = "203.0.113.10"
OUTSIDE_IP = "198.51.100.7"
NEW_PASSWORD = "Rotated-Passw0rd-77"
ALICE = "sip:alice@pbx.example.test"
ALICE_PASSWORD = CANARIES["AGENT_ALICE_PASSWORD"]
OTHER_AUTH_ID = "MAOTHERAUTHID0000009"
CREDENTIAL_FIELDS = {"credential_uuid", "username", "realm", "resource_uri"}


def basic(auth_id: str, token: str) -> dict[str, str]:
    """A Basic Authorization header."""
    encoded = base64.b64encode(f"{auth_id}:{token}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def md5_ha1(username: str, password: str) -> str:
    """HA1 computed here, independently of sandbox/digest.py."""
    return hashlib.md5(f"{username}:{REALM}:{password}".encode()).hexdigest()


class Rest:
    """The sandbox's REST edge through Flask's test client, authenticated; keeps every answer."""

    def __init__(self, world: World) -> None:
        self.client: FlaskClient = create_sandbox_app(world.sandbox, TOKEN).test_client()
        self.answers: list[bytes] = []

    def send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        root: str = ROOT,
    ) -> TestResponse:
        response = self.client.open(
            root + path,
            method=method,
            json=dict(body) if body is not None else None,
            query_string=dict(query or {}),
            headers=dict(headers) if headers is not None else basic(AUTH_ID, TOKEN),
        )
        self.answers.append(response.data)
        return response

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> TestResponse:
        return self.send("POST", path, body or {})

    def get(self, path: str, **query: str) -> TestResponse:
        return self.send("GET", path, query=query)

    def delete(self, path: str) -> TestResponse:
        return self.send("DELETE", path)

    def credential(self, username: str = "frontdesk", password: str = CALLER_PASSWORD) -> str:
        response = self.post(CREDENTIALS, {"username": username, "password": password})
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["credential_uuid"])

    def acl(self, name: str = "office") -> str:
        response = self.post(ACLS, {"name": name})
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["ip_acl_uuid"])

    def entry(self, acl: str, ip: str, prefix: int | None = None) -> str:
        body: dict[str, Any] = {"ip_address": ip}
        if prefix is not None:
            body["cidr_prefix"] = prefix
        response = self.post(f"{ACLS}{acl}/Entry/", body)
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["entry_uuid"])

    def application(self) -> str:
        response = self.post(
            APPLICATIONS,
            {
                "app_name": "front",
                "answer_url": "https://voice.example.test/answer",
                "hangup_url": "https://voice.example.test/hangup",
            },
        )
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["app_id"])


@pytest.fixture
def rest(world: World) -> Rest:
    return Rest(world)


@pytest.fixture
def admin(live: World) -> SipAuth:
    """The project's own REST module, pointed at the served sandbox."""
    assert live.url is not None
    return SipAuth(PlivoAPI(AUTH_ID, TOKEN, base_url=live.url))


def snapshot(world: World) -> dict[str, Any]:
    """Everything the account holds, to prove a refusal changed nothing."""
    account = world.account
    return {
        "credentials": {k: (c.username, c.ha1) for k, c in account.credentials.items()},
        "acls": {
            k: (a.name, [(e.ip, e.prefix, e.description) for e in a.entries.values()])
            for k, a in account.acls.items()
        },
        "applications": {k: dataclasses.asdict(a) for k, a in account.applications.items()},
    }


def assert_refused(response: TestResponse, before: dict[str, Any], world: World, *words: str):
    """A 4xx JSON answer whose error names the rule, and an account left as it was."""
    assert 400 <= response.status_code < 500
    body = response.get_json()
    assert isinstance(body, dict)
    error = body["error"]
    for word in words:
        assert word in error, error
    assert snapshot(world) == before


def keys_of(value: Any) -> Iterator[str]:
    """Every key of every JSON object inside `value`."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from keys_of(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keys_of(inner)


def strings_in(value: Any, seen: set[int] | None = None) -> Iterator[str]:
    """Every string reachable from `value` through containers and instance attributes."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("latin-1")
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from strings_in(key, seen)
            yield from strings_in(inner, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for inner in value:
            yield from strings_in(inner, seen)
    elif not callable(value) and hasattr(value, "__dict__"):
        yield from strings_in(vars(value), seen)


# -- 1. Basic auth, credential resources, list shape ---------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [None, (AUTH_ID, "wrong-token-0123456789abcdef"), (OTHER_AUTH_ID, TOKEN)],
    ids=["no-auth", "wrong-token", "wrong-auth-id"],
)
def test_rest_without_the_accounts_basic_auth_is_401_json(
    live: World, auth: tuple[str, str] | None
) -> None:
    """The REST API takes Basic auth with the auth ID and token (docs/plivo.md, REST API)."""
    session = requests.Session()
    session.trust_env = False
    url = f"{live.url}{ROOT}{CREDENTIALS}"
    created = session.post(
        url, json={"username": "frontdesk", "password": CALLER_PASSWORD}, auth=auth, timeout=10
    )
    listed = session.get(url, auth=auth, timeout=10)
    for response in (created, listed):
        assert response.status_code == 401
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]
    assert live.account.credentials == {}


def test_rest_with_another_auth_id_in_the_path_is_401(rest: Rest, world: World) -> None:
    """The auth ID in /v1/Account/{auth_id}/ must be the authenticated account's."""
    before = snapshot(world)
    response = rest.send(
        "POST",
        CREDENTIALS,
        {"username": "frontdesk", "password": CALLER_PASSWORD},
        root=f"/v1/Account/{OTHER_AUTH_ID}/",
    )
    assert response.status_code == 401
    assert response.is_json and response.get_json()["error"]
    assert snapshot(world) == before


def test_rest_with_a_bearer_or_garbled_header_is_401(rest: Rest) -> None:
    """Only Basic auth with the right pair is accepted."""
    for header in ("Bearer " + TOKEN, "Basic !!!not-base64!!!", "Basic "):
        response = rest.send("GET", CREDENTIALS, headers={"Authorization": header})
        assert response.status_code == 401
        assert response.get_json()["error"]


def test_credential_create_is_201_with_plivos_object(rest: Rest, world: World) -> None:
    """Create: 201 with credential_uuid, username, realm app.plivo.com and resource_uri."""
    response = rest.post(CREDENTIALS, {"username": "frontdesk", "password": CALLER_PASSWORD})
    assert response.status_code == 201
    body = response.get_json()
    made = body["credential_uuid"]
    assert body["username"] == "frontdesk"
    assert body["realm"] == REALM
    assert body["resource_uri"] == f"/v1/Account/{AUTH_ID}/SipAuth/Credential/{made}/"
    assert body["api_id"]
    assert world.account.credentials[made].username == "frontdesk"


def test_no_answer_holds_a_password_or_ha1(rest: Rest, world: World) -> None:
    """Passwords are never returned in any API response (SIP-auth page, Security); nor is HA1."""
    made = rest.credential()
    rest.get(f"{CREDENTIALS}{made}/")
    rest.get(CREDENTIALS)
    assert rest.post(f"{CREDENTIALS}{made}/", {"password": NEW_PASSWORD}).status_code == 202
    rest.get(f"{CREDENTIALS}{made}/")
    rest.get(CREDENTIALS)
    assert len(rest.answers) == 6
    secrets = (
        CALLER_PASSWORD,
        NEW_PASSWORD,
        md5_ha1("frontdesk", CALLER_PASSWORD),
        md5_ha1("frontdesk", NEW_PASSWORD),
    )
    for raw in rest.answers:
        text = raw.decode()
        for secret in secrets:
            assert secret not in text
        found = set(keys_of(json.loads(text)))
        assert not {"password", "ha1", "HA1"} & found
    item = rest.get(f"{CREDENTIALS}{made}/").get_json()
    assert set(item) - {"api_id"} == CREDENTIAL_FIELDS


def test_list_has_plivos_shape_and_pages_by_limit_and_offset(rest: Rest) -> None:
    """List: {api_id, meta{limit, offset, total_count, next, previous}, objects}, paged."""
    made = [rest.credential(f"user{i:02d}") for i in range(25)]
    first = rest.get(CREDENTIALS)
    assert first.status_code == 200
    body = first.get_json()
    assert set(body) == {"api_id", "meta", "objects"}
    meta = body["meta"]
    assert set(meta) == {"limit", "offset", "total_count", "next", "previous"}
    assert (meta["limit"], meta["offset"], meta["total_count"]) == (20, 0, 25)
    assert meta["next"] is not None and "offset=20" in meta["next"]
    assert meta["previous"] is None
    assert len(body["objects"]) == 20
    assert all(set(obj) == CREDENTIAL_FIELDS for obj in body["objects"])

    last = rest.get(CREDENTIALS, limit="10", offset="20").get_json()
    assert (last["meta"]["limit"], last["meta"]["offset"]) == (10, 20)
    assert len(last["objects"]) == 5
    assert last["meta"]["next"] is None
    assert last["meta"]["previous"] is not None and "offset=10" in last["meta"]["previous"]

    pages = [rest.get(CREDENTIALS, limit="10", offset=str(o)).get_json() for o in (0, 10, 20)]
    seen = [obj["credential_uuid"] for page in pages for obj in page["objects"]]
    assert sorted(seen) == sorted(made)


def test_get_returns_one_credential_and_404_for_an_unknown_one(rest: Rest) -> None:
    """Retrieve: the credential object; an unknown uuid is 404 JSON."""
    made = rest.credential()
    found = rest.get(f"{CREDENTIALS}{made}/")
    assert found.status_code == 200
    body = found.get_json()
    assert (body["credential_uuid"], body["username"], body["realm"]) == (made, "frontdesk", REALM)
    missing = rest.get(f"{CREDENTIALS}{uuid.uuid4()}/")
    assert missing.status_code == 404
    assert missing.get_json()["error"]


def test_password_update_is_202_and_the_username_cannot_change(rest: Rest, world: World) -> None:
    """Update takes just the password; the username remains unchanged (SIP-auth page, FAQ)."""
    made = rest.credential()
    changed = rest.post(f"{CREDENTIALS}{made}/", {"password": NEW_PASSWORD})
    assert changed.status_code == 202
    assert changed.get_json()["username"] == "frontdesk"
    assert world.account.credentials[made].ha1 == md5_ha1("frontdesk", NEW_PASSWORD)

    before = snapshot(world)
    renamed = rest.post(
        f"{CREDENTIALS}{made}/", {"username": "backdesk", "password": "Another-Passw0rd-1"}
    )
    assert_refused(renamed, before, world, "username")
    assert rest.get(f"{CREDENTIALS}{made}/").get_json()["username"] == "frontdesk"


def test_delete_is_204_then_404(rest: Rest, world: World) -> None:
    """Delete answers 204; the credential is then gone (docs/plivo.md, REST API)."""
    made = rest.credential()
    deleted = rest.delete(f"{CREDENTIALS}{made}/")
    assert deleted.status_code == 204
    assert deleted.data == b""
    assert rest.get(f"{CREDENTIALS}{made}/").status_code == 404
    assert rest.delete(f"{CREDENTIALS}{made}/").status_code == 404
    assert rest.get(CREDENTIALS).get_json()["meta"]["total_count"] == 0
    assert world.account.credentials == {}


def test_duplicate_username_is_409(rest: Rest, world: World) -> None:
    """Usernames are unique per account: a second one is 409 (docs/plivo.md, REST API)."""
    rest.credential()
    before = snapshot(world)
    again = rest.post(CREDENTIALS, {"username": "frontdesk", "password": NEW_PASSWORD})
    assert again.status_code == 409
    assert_refused(again, before, world, "frontdesk")


# -- 2. Limits, both sides of each boundary ------------------------------------------------------


@pytest.mark.parametrize(
    "username", ["abc", "a" * 64, "first.last", "first_last", "first-last", "Front.Desk_9-x"]
)
def test_username_within_limits_is_accepted(rest: Rest, world: World, username: str) -> None:
    """Username: 3-64 characters of letters, digits, '.', '_' and '-'."""
    made = rest.credential(username)
    assert world.account.credentials[made].username == username


@pytest.mark.parametrize(
    ("username", "rule"),
    [
        ("ab", "3-64"),
        ("a" * 65, "3-64"),
        ("front desk", "letters, digits"),
        ("front@desk", "letters, digits"),
        ("front:desk", "letters, digits"),
        ("frönt", "letters, digits"),
    ],
    ids=["2-chars", "65-chars", "space", "at", "colon", "non-ascii"],
)
def test_username_outside_limits_is_refused(
    rest: Rest, world: World, username: str, rule: str
) -> None:
    """Username: 3-64 characters of letters, digits, '.', '_' and '-' (enforced by the API)."""
    before = snapshot(world)
    response = rest.post(CREDENTIALS, {"username": username, "password": CALLER_PASSWORD})
    assert response.status_code == 400
    assert_refused(response, before, world, "username", rule)


@pytest.mark.parametrize(
    "password",
    ["Aa1" + "x" * 9, "Aa1" + "x" * 125],
    ids=["12-chars", "128-chars"],
)
def test_password_within_limits_is_accepted(rest: Rest, world: World, password: str) -> None:
    """Password: 12-128 characters with an upper-case letter, a lower-case letter and a digit."""
    made = rest.credential(password=password)
    assert world.account.credentials[made].ha1 == md5_ha1("frontdesk", password)


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("Aa1" + "x" * 8, "12-128"),
        ("Aa1" + "x" * 126, "12-128"),
        ("aa1" + "x" * 9, "upper"),
        ("AA1" + "X" * 9, "lower"),
        ("Aab" + "x" * 9, "digit"),
    ],
    ids=["11-chars", "129-chars", "no-upper", "no-lower", "no-digit"],
)
def test_password_outside_limits_is_refused(
    rest: Rest, world: World, password: str, rule: str
) -> None:
    """Password: 12-128 characters, one upper, one lower, one digit; the error never echoes it."""
    before = snapshot(world)
    response = rest.post(CREDENTIALS, {"username": "frontdesk", "password": password})
    assert response.status_code == 400
    assert_refused(response, before, world, "password", rule)
    assert password not in response.get_data(as_text=True)


def test_password_update_outside_limits_is_refused(rest: Rest, world: World) -> None:
    """The password rules hold for an update too; the old password keeps working."""
    made = rest.credential()
    before = snapshot(world)
    response = rest.post(f"{CREDENTIALS}{made}/", {"password": "Aa1" + "x" * 8})
    assert_refused(response, before, world, "password", "12-128")


def test_acl_name_of_120_is_accepted_and_121_refused(rest: Rest, world: World) -> None:
    """IP ACL name: up to 120 characters."""
    made = rest.acl("n" * 120)
    assert world.account.acls[made].name == "n" * 120
    before = snapshot(world)
    response = rest.post(ACLS, {"name": "n" * 121})
    assert response.status_code == 400
    assert_refused(response, before, world, "name", "120")


def test_entry_description_of_255_is_accepted_and_256_refused(rest: Rest, world: World) -> None:
    """Entry description: up to 255 characters."""
    acl = rest.acl()
    ok = rest.post(f"{ACLS}{acl}/Entry/", {"ip_address": OFFICE_IP, "description": "d" * 255})
    assert ok.status_code == 201
    assert ok.get_json()["description"] == "d" * 255
    before = snapshot(world)
    response = rest.post(
        f"{ACLS}{acl}/Entry/", {"ip_address": OUTSIDE_IP, "description": "d" * 256}
    )
    assert response.status_code == 400
    assert_refused(response, before, world, "description", "255")


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [("198.51.100.0", 0), ("198.51.100.7", 32), ("2001:db8::", 0), ("2001:db8::1", 128)],
    ids=["v4-0", "v4-32", "v6-0", "v6-128"],
)
def test_cidr_prefix_at_its_bounds_is_accepted(
    rest: Rest, world: World, ip: str, prefix: int
) -> None:
    """CIDR prefix: 0-32 for IPv4, 0-128 for IPv6."""
    acl = rest.acl()
    response = rest.post(f"{ACLS}{acl}/Entry/", {"ip_address": ip, "cidr_prefix": prefix})
    assert response.status_code == 201
    body = response.get_json()
    assert (body["ip_address"], body["cidr_prefix"]) == (ip, prefix)
    [entry] = world.account.acls[acl].entries.values()
    assert entry.prefix == prefix


@pytest.mark.parametrize(
    ("ip", "prefix", "words"),
    [
        ("198.51.100.7", 33, ("prefix", "0-32")),
        ("2001:db8::1", 129, ("prefix", "0-128")),
        ("pbx.example.test", None, ("ip", "hostname")),
        ("pbx.example.test", 32, ("ip", "hostname")),
    ],
    ids=["v4-33", "v6-129", "hostname", "hostname-with-prefix"],
)
def test_cidr_prefix_past_its_bound_or_a_hostname_is_refused(
    rest: Rest, world: World, ip: str, prefix: int | None, words: tuple[str, ...]
) -> None:
    """CIDR prefix 0-32 / 0-128; hostnames are not supported (SIP-auth page, FAQ)."""
    acl = rest.acl()
    before = snapshot(world)
    body: dict[str, Any] = {"ip_address": ip}
    if prefix is not None:
        body["cidr_prefix"] = prefix
    response = rest.post(f"{ACLS}{acl}/Entry/", body)
    assert response.status_code == 400
    assert_refused(response, before, world, *words)


def test_200_credentials_fit_and_the_201st_is_refused(rest: Rest, world: World) -> None:
    """Quota: 200 credentials per account."""
    for i in range(199):
        world.account.create_credential({"username": f"user{i:03d}", "password": CALLER_PASSWORD})
    rest.credential("user199")
    assert len(world.account.credentials) == 200
    before = snapshot(world)
    response = rest.post(CREDENTIALS, {"username": "user200", "password": CALLER_PASSWORD})
    assert response.status_code == 400
    assert_refused(response, before, world, "200")


def test_100_acls_fit_and_the_101st_is_refused(rest: Rest, world: World) -> None:
    """Quota: 100 IP ACLs per account."""
    for i in range(99):
        world.account.create_acl({"name": f"acl-{i}"})
    rest.acl("acl-99")
    assert len(world.account.acls) == 100
    before = snapshot(world)
    response = rest.post(ACLS, {"name": "acl-100"})
    assert response.status_code == 400
    assert_refused(response, before, world, "100")


def test_50_entries_fit_and_the_51st_is_refused(rest: Rest, world: World) -> None:
    """Quota: 50 entries per IP ACL."""
    acl = rest.acl()
    for i in range(49):
        world.account.add_entry(acl, {"ip_address": f"198.51.100.{i}"})
    rest.entry(acl, "198.51.100.49")
    assert len(world.account.acls[acl].entries) == 50
    before = snapshot(world)
    response = rest.post(f"{ACLS}{acl}/Entry/", {"ip_address": "198.51.100.50"})
    assert response.status_code == 400
    assert_refused(response, before, world, "50")
    assert rest.entry(rest.acl("other"), "198.51.100.50")  # the quota is per ACL


# -- 3. HA1-only storage -------------------------------------------------------------------------


def test_only_ha1_is_stored_never_the_password(rest: Rest, world: World) -> None:
    """Passwords are kept as one-way hashes (HA1), never in plaintext (SIP-auth page, Security)."""
    made = rest.credential()
    stored = world.account.credentials[made]
    assert stored.ha1 == md5_ha1("frontdesk", CALLER_PASSWORD)
    held = list(strings_in(world.account))
    assert any(stored.ha1 in text for text in held)  # the walk does reach the credentials
    assert not any(CALLER_PASSWORD in text for text in held)
    assert CALLER_PASSWORD not in repr(vars(world.account))

    assert rest.post(f"{CREDENTIALS}{made}/", {"password": NEW_PASSWORD}).status_code == 202
    assert stored.ha1 == md5_ha1("frontdesk", NEW_PASSWORD)
    held = list(strings_in(world.account))
    for password in (CALLER_PASSWORD, NEW_PASSWORD):
        assert not any(password in text for text in held)
        assert password not in repr(vars(world.account))
        assert all(password.encode() not in raw for raw in rest.answers)


def test_a_digest_call_leaves_no_password_in_the_sandbox(rest: Rest, world: World) -> None:
    """Only the digest response travels; the sandbox keeps HA1 and nothing else of the password."""
    made = rest.credential()
    assert (
        rest.post(
            f"{APPLICATIONS}{APP_ID}/", {"sip_auth_type": "credential", "credential_uuid": made}
        ).status_code
        == 202
    )
    passed = world.call(OFFICE_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert passed.status == 200
    state = {k: v for k, v in vars(world.sandbox).items() if k != "_http"}
    held = list(strings_in(state))
    assert any("frontdesk" in text for text in held)  # the walk reaches the call's records
    assert not any(CALLER_PASSWORD in text for text in held)


# -- 4. Applications and assignment --------------------------------------------------------------


def test_application_create_and_get(rest: Rest) -> None:
    """Applications carry sip_uri sip:{app_id}@app.plivo.com and the SIP-auth fields."""
    created = rest.post(
        APPLICATIONS, {"app_name": "front", "answer_url": "https://voice.example.test/answer"}
    )
    assert created.status_code == 201
    app_id = created.get_json()["app_id"]
    assert app_id
    body = rest.get(f"{APPLICATIONS}{app_id}/").get_json()
    assert body["app_id"] == app_id
    assert body["sip_uri"] == f"sip:{app_id}@app.plivo.com"
    assert body["answer_url"] == "https://voice.example.test/answer"
    assert (body["sip_auth_type"], body["credential_uuid"], body["ip_acl_uuid"]) == ("", "", "")


def test_application_takes_sip_auth_type_with_matching_uuids(rest: Rest, world: World) -> None:
    """sip_auth_type with credential_uuid and/or ip_acl_uuid is set via the Application API."""
    app_id = rest.application()
    credential, acl = rest.credential(), rest.acl()
    path = f"{APPLICATIONS}{app_id}/"
    fields = {
        "sip_auth_type": "ip_acl_and_credential",
        "credential_uuid": credential,
        "ip_acl_uuid": acl,
    }
    assert rest.post(path, fields).status_code == 202
    body = rest.get(path).get_json()
    assert body["sip_auth_type"] == "ip_acl_and_credential"
    assert (body["credential_uuid"], body["ip_acl_uuid"]) == (credential, acl)

    changed = rest.post(path, {"sip_auth_type": "credential", "credential_uuid": credential})
    assert changed.status_code == 202
    body = rest.get(path).get_json()
    assert (body["sip_auth_type"], body["credential_uuid"]) == ("credential", credential)
    assert world.account.applications[app_id].sip_auth_type == "credential"


@pytest.mark.parametrize(
    ("mode", "given", "missing"),
    [
        ("credential", (), "credential_uuid"),
        ("ip_acl", (), "ip_acl_uuid"),
        ("ip_acl_and_credential", ("credential_uuid",), "ip_acl_uuid"),
        ("ip_acl_and_credential", ("ip_acl_uuid",), "credential_uuid"),
    ],
)
def test_a_type_without_its_uuid_is_400(
    rest: Rest, world: World, mode: str, given: tuple[str, ...], missing: str
) -> None:
    """Each sip_auth_type needs its credential_uuid and/or ip_acl_uuid."""
    app_id = rest.application()
    uuids = {"credential_uuid": rest.credential(), "ip_acl_uuid": rest.acl()}
    before = snapshot(world)
    response = rest.post(
        f"{APPLICATIONS}{app_id}/", {"sip_auth_type": mode, **{k: uuids[k] for k in given}}
    )
    assert response.status_code == 400
    assert_refused(response, before, world, missing)


@pytest.mark.parametrize(
    ("mode", "key"), [("credential", "credential_uuid"), ("ip_acl", "ip_acl_uuid")]
)
def test_an_unknown_uuid_is_400(rest: Rest, world: World, mode: str, key: str) -> None:
    """An assignment must name a credential / IP ACL of this account."""
    app_id = rest.application()
    rest.credential()
    rest.acl()
    before = snapshot(world)
    response = rest.post(
        f"{APPLICATIONS}{app_id}/", {"sip_auth_type": mode, key: str(uuid.uuid4())}
    )
    assert response.status_code == 400
    assert_refused(response, before, world, key)


def test_deleting_an_assigned_credential_or_acl_is_400_until_unassigned(
    rest: Rest, world: World
) -> None:
    """Deleting an assigned credential or IP ACL returns 400; sip_auth_type "" unassigns (FAQ)."""
    app_id = rest.application()
    credential, acl = rest.credential(), rest.acl()
    path = f"{APPLICATIONS}{app_id}/"
    fields = {
        "sip_auth_type": "ip_acl_and_credential",
        "credential_uuid": credential,
        "ip_acl_uuid": acl,
    }
    assert rest.post(path, fields).status_code == 202
    before = snapshot(world)
    refused = rest.delete(f"{CREDENTIALS}{credential}/")
    assert refused.status_code == 400
    assert refused.get_json()["error"] == CREDENTIAL_IN_USE
    refused = rest.delete(f"{ACLS}{acl}/")
    assert refused.status_code == 400
    assert refused.get_json()["error"] == ACL_IN_USE
    assert snapshot(world) == before

    assert rest.post(path, {"sip_auth_type": ""}).status_code == 202
    body = rest.get(path).get_json()
    assert (body["sip_auth_type"], body["credential_uuid"], body["ip_acl_uuid"]) == ("", "", "")
    assert rest.delete(f"{CREDENTIALS}{credential}/").status_code == 204
    assert rest.delete(f"{ACLS}{acl}/").status_code == 204
    assert world.account.credentials == {} and world.account.acls == {}


def test_a_credential_shared_by_two_apps_stays_in_use_until_both_unassign(
    rest: Rest, world: World
) -> None:
    """The same credential may serve several apps; it is in use while any one has it."""
    credential = rest.credential()
    apps = [APP_ID, rest.application()]
    for app_id in apps:
        fields = {"sip_auth_type": "credential", "credential_uuid": credential}
        assert rest.post(f"{APPLICATIONS}{app_id}/", fields).status_code == 202
    assert rest.post(f"{APPLICATIONS}{apps[0]}/", {"sip_auth_type": ""}).status_code == 202
    refused = rest.delete(f"{CREDENTIALS}{credential}/")
    assert (refused.status_code, refused.get_json()["error"]) == (400, CREDENTIAL_IN_USE)
    assert rest.post(f"{APPLICATIONS}{apps[1]}/", {"sip_auth_type": ""}).status_code == 202
    assert rest.delete(f"{CREDENTIALS}{credential}/").status_code == 204


# -- 5. The project's REST module and CLI, unchanged, against the served sandbox -----------------


def test_rest_module_manages_credentials(admin: SipAuth, live: World) -> None:
    """PlivoAPI + SipAuth work unchanged: create, list, get, set_password, delete."""
    created = admin.create_credential("frontdesk", CALLER_PASSWORD)
    made = str(created["uuid"])
    assert (created["username"], created["realm"]) == ("frontdesk", REALM)
    assert made in live.account.credentials
    assert [c["uuid"] for c in admin.list_credentials()] == [made]
    assert admin.get_credential(made)["username"] == "frontdesk"
    admin.set_password(made, NEW_PASSWORD)
    assert live.account.credentials[made].ha1 == md5_ha1("frontdesk", NEW_PASSWORD)
    admin.delete_credential(made)
    assert admin.list_credentials() == []
    assert live.account.credentials == {}


def test_rest_module_follows_the_sandboxs_pages(admin: SipAuth, live: World) -> None:
    """PlivoAPI's limit/offset paging reads every credential the sandbox holds."""
    for i in range(45):
        live.account.create_credential({"username": f"user{i:02d}", "password": CALLER_PASSWORD})
    listed = admin.list_credentials()
    assert sorted(c["username"] for c in listed) == [f"user{i:02d}" for i in range(45)]


def test_rest_module_manages_acls_entries_and_quotas(admin: SipAuth, live: World) -> None:
    """IP ACL create, entries add/list/remove (IPv4 and IPv6), and quotas() via the module."""
    acl = admin.create_acl("office")
    acl_uuid = str(acl["uuid"])
    assert live.account.acls[acl_uuid].name == "office"
    v4 = admin.add_entry(acl_uuid, "203.0.113.0/24", "office LAN")
    assert (v4["ip"], v4["prefix"], v4["description"]) == ("203.0.113.0", 24, "office LAN")
    admin.add_entry(acl_uuid, "2001:db8:100::/48")
    listed = {(e["ip"], e["prefix"]) for e in admin.list_entries(acl_uuid)}
    assert listed == {("203.0.113.0", 24), ("2001:db8:100::", 48)}
    admin.remove_entry(acl_uuid, str(v4["uuid"]))
    assert [(e["ip"], e["prefix"]) for e in admin.list_entries(acl_uuid)] == [
        ("2001:db8:100::", 48)
    ]
    admin.create_credential("frontdesk", CALLER_PASSWORD)
    assert admin.quotas() == [
        Quota("credentials", 1, 200),
        Quota("ip_acls", 1, 100),
        Quota("entries in office", 1, 50),
    ]


def test_rest_module_assign_and_delete_while_assigned(admin: SipAuth, live: World) -> None:
    """assign() sets sip_auth_type; deleting what is assigned is a 400 with the unassign hint."""
    credential = str(admin.create_credential("frontdesk", CALLER_PASSWORD)["uuid"])
    acl = str(admin.create_acl("office")["uuid"])
    admin.add_entry(acl, "203.0.113.0/24")
    admin.assign(APP_ID, "ip_acl_and_credential", credential_uuid=credential, ip_acl_uuid=acl)
    app = live.account.applications[APP_ID]
    assert (app.sip_auth_type, app.credential_uuid, app.ip_acl_uuid) == (
        "ip_acl_and_credential",
        credential,
        acl,
    )
    for delete, uuid_, message in (
        (admin.delete_credential, credential, CREDENTIAL_IN_USE),
        (admin.delete_acl, acl, ACL_IN_USE),
    ):
        with pytest.raises(PlivoAPIError) as caught:
            delete(uuid_)
        assert caught.value.status == 400
        assert caught.value.error == message
        assert caught.value.hint is not None
        assert "sipguard sipauth assign" in caught.value.hint and "--mode none" in caught.value.hint
    assert credential in live.account.credentials and acl in live.account.acls

    admin.assign(APP_ID, "none")
    assert live.account.applications[APP_ID].sip_auth_type == ""
    admin.delete_credential(credential)
    admin.delete_acl(acl)
    assert live.account.credentials == {} and live.account.acls == {}


def test_setup_creates_then_reuses_then_prunes(admin: SipAuth, live: World) -> None:
    """setup() creates what is missing, reuses what exists on a second run, prunes extras."""
    allow = ["203.0.113.0/24", "2001:db8:100::/48"]
    first = admin.setup(
        APP_ID,
        "ip_acl_and_credential",
        allow=allow,
        credential_user="frontdesk",
        password=CALLER_PASSWORD,
    )
    assert first.acl_created and first.credential_action == "created"
    assert first.entries_added == allow
    assert live.call(OFFICE_IP, username="frontdesk", password=CALLER_PASSWORD).status == 200

    second = admin.setup(APP_ID, "ip_acl_and_credential", allow=allow, credential_user="frontdesk")
    assert not second.acl_created
    assert second.credential_action == "kept"
    assert (second.entries_added, second.entries_kept) == ([], allow)
    assert len(live.account.credentials) == 1 and len(live.account.acls) == 1
    [acl] = live.account.acls.values()
    assert len(acl.entries) == 2

    live.account.add_entry(acl.uuid, {"ip_address": OUTSIDE_IP})
    pruned = admin.setup(
        APP_ID,
        "ip_acl_and_credential",
        allow=["203.0.113.0/24"],
        credential_user="frontdesk",
        prune=True,
    )
    assert sorted(pruned.entries_removed) == sorted(["2001:db8:100::/48", f"{OUTSIDE_IP}/32"])
    assert [(e.ip, e.prefix) for e in acl.entries.values()] == [("203.0.113.0", 24)]
    assert first.credential is not None
    app = live.account.applications[APP_ID]
    assert (app.credential_uuid, app.ip_acl_uuid) == (first.credential["uuid"], acl.uuid)


def test_cli_sets_up_sip_auth_and_calls_then_pass_or_fail(live: World) -> None:
    """`sipauth setup|credential list|quotas|credential delete` against the sandbox."""
    runner = live.app.test_cli_runner()
    setup = runner.invoke(
        args=[
            "sipauth",
            "setup",
            "--app-id",
            APP_ID,
            "--mode",
            "ip_acl_and_credential",
            "--allow",
            "203.0.113.0/24",
            "--credential-user",
            "frontdesk",
            "--password-env",
            "SOME_VAR",
            "--json",
        ],
        env={"SOME_VAR": CALLER_PASSWORD},
    )
    assert setup.exit_code == 0, setup.output
    report = json.loads(setup.stdout)
    assert report["sip_auth_type"] == "ip_acl_and_credential"
    assert report["request_uri"] == URI
    assert report["entries_added"] == ["203.0.113.0/24"]
    assert report["credential"]["username"] == "frontdesk"
    assert report["credential_action"] == "created"
    assert CALLER_PASSWORD not in setup.output
    credential = report["credential"]["uuid"]

    listed = runner.invoke(args=["sipauth", "credential", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["uuid"], r["username"], r["realm"]) for r in rows] == [
        (credential, "frontdesk", REALM)
    ]

    quotas = runner.invoke(args=["sipauth", "quotas"])
    assert quotas.exit_code == 0, quotas.output
    assert re.search(r"^credentials\s+1\s+200$", quotas.stdout, re.M)
    assert re.search(r"^ip_acls\s+1\s+100$", quotas.stdout, re.M)
    assert re.search(rf"^entries in sipguard-{APP_ID}\s+1\s+50$", quotas.stdout, re.M)

    deleted = runner.invoke(args=["sipauth", "credential", "delete", credential])
    assert deleted.exit_code == 3
    assert "HTTP 400" in deleted.stderr
    assert "sipguard sipauth assign" in deleted.stderr and "--mode none" in deleted.stderr
    assert credential in live.account.credentials

    passed = live.call(OFFICE_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert passed.status == 200
    assert passed.call_uuid is not None
    sip = live.sandbox.calls[passed.call_uuid].sip
    assert sip == {
        "SIPAuthType": "ip_acl_and_credential",
        "SIPAuthUser": "frontdesk",
        "SIPSourceIP": OFFICE_IP,
    }
    assert live.call(OFFICE_IP, username="frontdesk", password=NEW_PASSWORD).status == 403
    assert live.call(OUTSIDE_IP, username="frontdesk", password=CALLER_PASSWORD).status == 403


def test_cli_make_call_to_a_sip_uri_with_digest_credentials(live: World) -> None:
    """Make Call with sip_auth_username/sip_auth_password to a SIP URI answers its challenge."""
    result = live.app.test_cli_runner().invoke(
        args=[
            "call",
            ALICE,
            "--from",
            "+14155550100",
            "--sip-auth-username",
            "alice",
            "--password-env",
            "ALICE_PW",
            "--json",
        ],
        env={"ALICE_PW": ALICE_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    request_uuid = json.loads(result.stdout)["request_uuid"]
    [call] = [c for c in live.sandbox.calls.values() if c.request_uuid == request_uuid]
    [leg] = [e for e in call.events if e.kind == "leg"]
    assert leg.data["address"] == ALICE
    assert leg.data["outcome"] == "answered"
    assert ALICE_PASSWORD not in call.text() and ALICE_PASSWORD not in result.output


def test_cli_make_call_to_a_number_with_credentials_is_refused_before_sending(
    live: World,
) -> None:
    """sip_auth_username/password are only accepted when `to` is a SIP URI: exit 2, no call."""
    result = live.app.test_cli_runner().invoke(
        args=[
            "call",
            "+14155550125",
            "--from",
            "+14155550100",
            "--sip-auth-username",
            "alice",
            "--password-env",
            "ALICE_PW",
        ],
        env={"ALICE_PW": ALICE_PASSWORD},
    )
    assert result.exit_code == 2
    assert "SIP URI" in result.output
    assert live.sandbox.calls == {}


@pytest.mark.parametrize(("to", "status"), [("+14155550125", 400), (ALICE, 201)])
def test_make_call_rest_takes_credentials_only_for_a_sip_uri(
    rest: Rest, world: World, to: str, status: int
) -> None:
    """Straight at the sandbox: credentials with a phone-number `to` are refused with 400."""
    response = rest.post(
        CALLS,
        {
            "from": "+14155550100",
            "to": to,
            "answer_url": "https://voice.example.test/answer",
            "sip_auth_username": "alice",
            "sip_auth_password": ALICE_PASSWORD,
        },
    )
    assert response.status_code == status
    body = response.get_json()
    if status == 400:
        assert "sip_auth_username" in body["error"] and "SIP URI" in body["error"]
        assert world.sandbox.calls == {}
    else:
        assert [c.request_uuid for c in world.sandbox.calls.values()] == [body["request_uuid"]]
    assert ALICE_PASSWORD not in response.get_data(as_text=True)


# -- 6. Changes take effect at once --------------------------------------------------------------


def test_password_update_takes_effect_at_once(rest: Rest, world: World) -> None:
    """A password update "takes effect immediately for all applications using that credential"."""
    credential = rest.credential()
    fields = {"sip_auth_type": "credential", "credential_uuid": credential}
    assert rest.post(f"{APPLICATIONS}{APP_ID}/", fields).status_code == 202
    assert world.call(OFFICE_IP, username="frontdesk", password=CALLER_PASSWORD).status == 200

    assert rest.post(f"{CREDENTIALS}{credential}/", {"password": NEW_PASSWORD}).status_code == 202
    old = world.call(OFFICE_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert old.status == 403
    assert old.call_uuid is not None
    hangup = world.sandbox.calls[old.call_uuid].hangup
    assert hangup is not None and hangup["HangupCauseCode"] == "4210"
    assert world.call(OFFICE_IP, username="frontdesk", password=NEW_PASSWORD).status == 200


@pytest.mark.parametrize(
    ("source", "network", "prefix"),
    [(OFFICE_IP, "203.0.113.0", 24), ("2001:db8:100::10", "2001:db8:100::", 48)],
    ids=["ipv4", "ipv6"],
)
def test_acl_entry_changes_take_effect_at_once(
    rest: Rest, world: World, source: str, network: str, prefix: int
) -> None:
    """Adding or removing ACL entries "takes effect immediately for all applications"."""
    acl = rest.acl()
    entry = rest.entry(acl, network, prefix)
    fields = {"sip_auth_type": "ip_acl", "ip_acl_uuid": acl}
    assert rest.post(f"{APPLICATIONS}{APP_ID}/", fields).status_code == 202
    assert world.call(source).status == 200

    assert rest.delete(f"{ACLS}{acl}/Entry/{entry}/").status_code == 204
    assert world.call(source).status == 403

    rest.entry(acl, network, prefix)
    assert world.call(source).status == 200
