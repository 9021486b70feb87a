"""SIP-auth resources: every documented limit on both sides, checked before any request."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import responses

from sipguard.errors import PlivoAPIError, PlivoOutcomeUnknown, ValidationError
from sipguard.plivo.api import PlivoAPI
from sipguard.plivo.sipauth import (
    MAX_ACLS,
    MAX_CREDENTIALS,
    MAX_ENTRIES_PER_ACL,
    SipAuth,
    assignment,
    check_acl_name,
    check_password,
    check_username,
    generate_password,
    parse_entry,
    request_uri,
)
from sipguard.secret import Secret
from tests.support.config import API, AUTH_ID, TOKEN

CREDENTIALS = API + "SipAuth/Credential/"
ACLS = API + "SipAuth/IpAccessControlList/"
GOOD_PASSWORD = "Abcdefghij12"


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def admin() -> SipAuth:
    return SipAuth(PlivoAPI(AUTH_ID, TOKEN))


def listing(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"api_id": "l", "meta": {"total_count": len(objects), "next": None}, "objects": objects}


def bodies(rsps: Any) -> list[tuple[str, str, Any]]:
    return [
        (c.request.method, c.request.url.removeprefix(API).split("?")[0], _body(c.request.body))
        for c in rsps.calls
    ]


def _body(raw: bytes | str | None) -> Any:
    return json.loads(raw) if raw else None


# -- limits, both sides of each boundary ----------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "a" * 64, "pbx.trunk_01-A", "A.B"])
def test_usernames_inside_the_limits(name: str) -> None:
    assert check_username(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ab", "3-64 characters"),
        ("a" * 65, "3-64 characters"),
        ("pbx trunk", "only letters"),
        ("pbx@trunk", "only letters"),
        ("pbx+1", "only letters"),
        ("pbxé", "only letters"),
        ("pbx\n", "only letters"),
    ],
)
def test_usernames_outside_the_limits(name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        check_username(name)
    assert caught.value.field == "username"


@pytest.mark.parametrize(
    "password",
    ["Abcdefghij12"[:12], "Aa1" + "x" * 125, "aaaaaaaaaaA1", "1234567890aZ", "Pass word 12"],
)
def test_passwords_inside_the_limits(password: str) -> None:
    assert check_password(password) == password
    assert check_password(Secret(password)) == password


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Abcdefghij1", "12-128 characters"),
        ("Aa1" + "x" * 126, "12-128 characters"),
        ("abcdefghij12", "upper-case"),
        ("ABCDEFGHIJ12", "lower-case"),
        ("Abcdefghijkl", "digit"),
        ("Abcdefghij1\x00", "control"),
        ("ÀÉÏabcdefgh12", "upper-case"),  # non-ASCII capitals do not count
    ],
)
def test_passwords_outside_the_limits_never_echo_the_password(password: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        check_password(password)
    assert password not in str(caught.value)


@pytest.mark.parametrize("draw", range(20))
def test_generated_passwords_meet_the_rules(draw: int) -> None:
    password = generate_password(choice=random.Random(draw).choice)
    assert check_password(password) == password
    assert len(password) == 24


def test_generated_passwords_differ() -> None:
    assert len({generate_password() for _ in range(50)}) == 50


@pytest.mark.parametrize("name", ["x", "a" * 120, "Office PBX (Berlin)"])
def test_acl_names_inside_the_limit(name: str) -> None:
    assert check_acl_name(name) == name


@pytest.mark.parametrize("name", ["", "   ", "a" * 121, "tab\there"])
def test_acl_names_outside_the_limit(name: str) -> None:
    with pytest.raises(ValidationError):
        check_acl_name(name)


@pytest.mark.parametrize(
    ("text", "ip", "prefix"),
    [
        ("203.0.113.7", "203.0.113.7", 32),
        ("203.0.113.0/24", "203.0.113.0", 24),
        ("0.0.0.0/0", "0.0.0.0", 0),
        ("203.0.113.7/32", "203.0.113.7", 32),
        ("2001:db8::/32", "2001:db8::", 32),
        ("2001:DB8::1", "2001:db8::1", 128),
        ("::/0", "::", 0),
        ("2001:db8::1/128", "2001:db8::1", 128),
        (" 198.51.100.0/24 ", "198.51.100.0", 24),
    ],
)
def test_entries_inside_the_limits(text: str, ip: str, prefix: int) -> None:
    entry = parse_entry(text)
    assert (entry.ip, entry.prefix) == (ip, prefix)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("203.0.113.0/33", "prefix"),
        ("2001:db8::/129", "prefix"),
        ("203.0.113.0/-1", "prefix"),
        ("203.0.113.0/", "prefix"),
        ("203.0.113.0/24/8", "prefix"),
        ("203.0.113.0/٢٤", "prefix"),
        ("pbx.example.com", "ip"),
        ("pbx.example.com/24", "ip"),
        ("203.0.113", "ip"),
        ("010.0.0.1", "ip"),
        ("fe80::1%eth0", "ip"),
        ("", "ip"),
    ],
)
def test_entries_outside_the_limits(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_entry(text)
    assert caught.value.field == field


def test_entry_description_limit_both_sides() -> None:
    assert parse_entry("192.0.2.1", "d" * 255).description == "d" * 255
    with pytest.raises(ValidationError, match="255"):
        parse_entry("192.0.2.1", "d" * 256)


@pytest.mark.parametrize(
    ("mode", "credential", "acl", "fields"),
    [
        ("ip_acl", None, "a-1", {"sip_auth_type": "ip_acl", "ip_acl_uuid": "a-1"}),
        ("credential", "c-1", None, {"sip_auth_type": "credential", "credential_uuid": "c-1"}),
        (
            "ip_acl_and_credential",
            "c-1",
            "a-1",
            {
                "sip_auth_type": "ip_acl_and_credential",
                "credential_uuid": "c-1",
                "ip_acl_uuid": "a-1",
            },
        ),
        ("none", None, None, {"sip_auth_type": ""}),
        ("", None, None, {"sip_auth_type": ""}),
    ],
)
def test_assignment_fields(mode: str, credential: str | None, acl: str | None, fields) -> None:
    assert assignment(mode, credential, acl) == fields


@pytest.mark.parametrize(
    ("mode", "credential", "acl"),
    [
        ("ip_acl", None, None),
        ("ip_acl", "c-1", "a-1"),
        ("credential", None, None),
        ("credential", "c-1", "a-1"),
        ("ip_acl_and_credential", "c-1", None),
        ("ip_acl_and_credential", None, "a-1"),
        ("none", "c-1", None),
        ("digest", "c-1", None),
    ],
)
def test_assignment_mismatches(mode: str, credential: str | None, acl: str | None) -> None:
    with pytest.raises(ValidationError):
        assignment(mode, credential, acl)


def test_request_uri_is_the_app_sip_uri() -> None:
    assert request_uri("20372631212782780") == "sip:20372631212782780@app.plivo.com"
    with pytest.raises(ValidationError):
        request_uri("123@evil.example")


# -- operations: no request on invalid input, quotas counted first ----------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.create_credential("ab", GOOD_PASSWORD),
        lambda a: a.create_credential("pbx", "short1A"),
        lambda a: a.set_password("c-1", "nodigitsHere"),
        lambda a: a.create_acl("a" * 121),
        lambda a: a.add_entry("a-1", "203.0.113.0/33"),
        lambda a: a.add_entry("a-1", "pbx.example.com"),
        lambda a: a.add_entry("a-1", "192.0.2.1", "d" * 256),
        lambda a: a.assign("123", "credential"),
        lambda a: a.assign("12/3", "none"),
        lambda a: a.setup("123", "ip_acl"),
        lambda a: a.setup("123", "credential"),
        lambda a: a.setup("123", "credential", credential_user="ab", password=GOOD_PASSWORD),
        lambda a: a.setup("123", "ip_acl", allow=["10.0.0.0/8"], credential_user="pbx"),
        lambda a: a.setup("123", "credential", credential_user="pbx", allow=["10.0.0.0/8"]),
        lambda a: a.setup("123", "ip_acl", allow=["10.0.0.0/99"]),
        lambda a: a.setup("123", "ip_acl", allow=["10.0.0.0/8"], acl_name="n" * 121),
        lambda a: a.setup("123", "none", allow=["10.0.0.0/8"]),
    ],
)
def test_invalid_input_makes_no_http_call(admin: SipAuth, rsps, call) -> None:
    with pytest.raises(ValidationError):
        call(admin)
    assert len(rsps.calls) == 0


def test_create_credential_sends_username_and_password(admin: SipAuth, rsps) -> None:
    rsps.get(CREDENTIALS, json=listing([]))
    rsps.post(
        CREDENTIALS,
        status=201,
        json={"credential_uuid": "c-1", "username": "pbx", "realm": "app.plivo.com"},
    )
    created = admin.create_credential("pbx", Secret(GOOD_PASSWORD))
    assert created["uuid"] == "c-1"
    assert bodies(rsps)[-1] == (
        "POST",
        "SipAuth/Credential/",
        {"username": "pbx", "password": GOOD_PASSWORD},
    )


@pytest.mark.parametrize(
    ("existing", "allowed"), [(MAX_CREDENTIALS - 1, True), (MAX_CREDENTIALS, False)]
)
def test_credential_quota_is_counted_before_creating(
    admin: SipAuth, rsps, existing: int, allowed: bool
) -> None:
    rsps.get(
        CREDENTIALS,
        json=listing(
            [{"credential_uuid": f"c-{i}", "username": f"u{i:03}"} for i in range(existing)]
        ),
    )
    if allowed:
        rsps.post(CREDENTIALS, status=201, json={"credential_uuid": "new"})
        admin.create_credential("newuser", GOOD_PASSWORD)
    else:
        with pytest.raises(ValidationError, match="maximum of 200"):
            admin.create_credential("newuser", GOOD_PASSWORD)
    assert [c.request.method for c in rsps.calls] == (["GET", "POST"] if allowed else ["GET"])


def test_a_taken_username_is_refused_before_the_post(admin: SipAuth, rsps) -> None:
    rsps.get(CREDENTIALS, json=listing([{"credential_uuid": "c-9", "username": "pbx"}]))
    with pytest.raises(ValidationError, match="already exists"):
        admin.create_credential("pbx", GOOD_PASSWORD)
    assert [c.request.method for c in rsps.calls] == ["GET"]


@pytest.mark.parametrize(("existing", "allowed"), [(MAX_ACLS - 1, True), (MAX_ACLS, False)])
def test_acl_quota_is_counted_before_creating(
    admin: SipAuth, rsps, existing: int, allowed: bool
) -> None:
    rsps.get(ACLS, json=listing([{"ip_acl_uuid": f"a-{i}"} for i in range(existing)]))
    if allowed:
        rsps.post(ACLS, status=201, json={"ip_acl_uuid": "new", "name": "office"})
        assert admin.create_acl("office")["uuid"] == "new"
        assert bodies(rsps)[-1] == ("POST", "SipAuth/IpAccessControlList/", {"name": "office"})
    else:
        with pytest.raises(ValidationError, match="maximum of 100"):
            admin.create_acl("office")
        assert len(rsps.calls) == 1


@pytest.mark.parametrize(
    ("create", "url", "effect"),
    [
        (lambda a: a.create_acl("office"), ACLS, "the IP ACL may have been created"),
        (lambda a: a.add_entry("a-1", "192.0.2.1"), ACLS + "a-1/Entry/", "entry may have been"),
        (
            lambda a: a.create_credential("pbx", GOOD_PASSWORD),
            CREDENTIALS,
            "the credential may have been created",
        ),
    ],
)
def test_a_create_accepted_without_an_id_may_have_happened(
    admin: SipAuth, rsps, create, url: str, effect: str
) -> None:
    rsps.get(url, json=listing([]))  # each create counts its quota first
    rsps.post(url, status=201, json={"api_id": "api-odd"})
    with pytest.raises(PlivoOutcomeUnknown, match=effect) as caught:
        create(admin)
    assert caught.value.api_id == "api-odd"


@pytest.mark.parametrize(
    ("existing", "allowed"), [(MAX_ENTRIES_PER_ACL - 1, True), (MAX_ENTRIES_PER_ACL, False)]
)
def test_entry_quota_is_counted_before_adding(
    admin: SipAuth, rsps, existing: int, allowed: bool
) -> None:
    entries = ACLS + "a-1/Entry/"
    rsps.get(entries, json=listing([{"entry_uuid": f"e-{i}"} for i in range(existing)]))
    if allowed:
        rsps.post(entries, status=201, json={"entry_uuid": "e-new"})
        admin.add_entry("a-1", "2001:db8::/48", "HQ v6")
        assert bodies(rsps)[-1] == (
            "POST",
            "SipAuth/IpAccessControlList/a-1/Entry/",
            {"ip_address": "2001:db8::", "cidr_prefix": 48, "description": "HQ v6"},
        )
    else:
        with pytest.raises(ValidationError, match="maximum of 50"):
            admin.add_entry("a-1", "2001:db8::/48")
        assert len(rsps.calls) == 1


def test_update_password_only_sends_the_password(admin: SipAuth, rsps) -> None:
    rsps.post(CREDENTIALS + "c-1/", json={"api_id": "u", "message": "changed"}, status=202)
    admin.set_password("c-1", GOOD_PASSWORD)
    assert bodies(rsps) == [("POST", "SipAuth/Credential/c-1/", {"password": GOOD_PASSWORD})]


@pytest.mark.parametrize("status", [400, 409])
@pytest.mark.parametrize(("kind", "url"), [("credential", CREDENTIALS), ("acl", ACLS)])
def test_deleting_something_assigned_says_to_unassign_first(
    admin: SipAuth, rsps, status: int, kind: str, url: str
) -> None:
    error = "This credential is currently assigned to an application."
    rsps.delete(url + "x-1/", json={"api_id": "d-1", "error": error}, status=status)
    delete = admin.delete_credential if kind == "credential" else admin.delete_acl
    with pytest.raises(PlivoAPIError) as caught:
        delete("x-1")
    assert (caught.value.status, caught.value.api_id, caught.value.error) == (status, "d-1", error)
    assert "--mode none" in str(caught.value)


def test_delete_not_found_has_no_unassign_hint(admin: SipAuth, rsps) -> None:
    rsps.delete(ACLS + "x-1/", json={"api_id": "d-2", "error": "not found"}, status=404)
    with pytest.raises(PlivoAPIError) as caught:
        admin.delete_acl("x-1")
    assert caught.value.hint is None


def test_assign_and_unassign_post_to_the_application(admin: SipAuth, rsps) -> None:
    rsps.post(API + "Application/123/", json={"message": "changed"}, status=202)
    admin.assign("123", "ip_acl_and_credential", credential_uuid="c-1", ip_acl_uuid="a-1")
    admin.assign("123", "none")
    assert [b[2] for b in bodies(rsps)] == [
        {"sip_auth_type": "ip_acl_and_credential", "credential_uuid": "c-1", "ip_acl_uuid": "a-1"},
        {"sip_auth_type": ""},
    ]


def test_quotas_count_every_resource(admin: SipAuth, rsps) -> None:
    rsps.get(CREDENTIALS, json=listing([{"credential_uuid": "c-1"}]))
    rsps.get(ACLS, json=listing([{"ip_acl_uuid": "a-1", "name": "office"}]))
    rsps.get(ACLS + "a-1/Entry/", json=listing([{"entry_uuid": "e-1"}, {"entry_uuid": "e-2"}]))
    found = [(q.resource, q.used, q.limit) for q in admin.quotas()]
    assert found == [("credentials", 1, 200), ("ip_acls", 1, 100), ("entries in office", 2, 50)]


# -- setup -------------------------------------------------------------------------------------


def test_setup_from_nothing_creates_everything_then_assigns(admin: SipAuth, rsps) -> None:
    rsps.get(ACLS, json=listing([]))
    rsps.get(CREDENTIALS, json=listing([]))
    rsps.post(ACLS, status=201, json={"ip_acl_uuid": "a-1", "name": "sipguard-123"})
    rsps.post(ACLS + "a-1/Entry/", status=201, json={"entry_uuid": "e-1"})
    rsps.post(CREDENTIALS, status=201, json={"credential_uuid": "c-1", "username": "pbx"})
    rsps.post(API + "Application/123/", status=202, json={"message": "changed"})
    report = admin.setup(
        "123",
        "ip_acl_and_credential",
        allow=["203.0.113.0/24", "2001:db8::/32", "203.0.113.9/24"],  # the last is the first again
        credential_user="pbx",
        password=GOOD_PASSWORD,
    )
    assert [(m, p) for m, p, _ in bodies(rsps)] == [
        ("GET", "SipAuth/IpAccessControlList/"),
        ("GET", "SipAuth/Credential/"),
        ("POST", "SipAuth/IpAccessControlList/"),
        ("POST", "SipAuth/IpAccessControlList/a-1/Entry/"),
        ("POST", "SipAuth/IpAccessControlList/a-1/Entry/"),
        ("POST", "SipAuth/Credential/"),
        ("POST", "Application/123/"),
    ]
    assert bodies(rsps)[-1][2] == {
        "sip_auth_type": "ip_acl_and_credential",
        "credential_uuid": "c-1",
        "ip_acl_uuid": "a-1",
    }
    assert report.entries_added == ["203.0.113.0/24", "2001:db8::/32"]
    assert (report.acl_created, report.credential_action) == (True, "created")
    assert report.request_uri == "sip:123@app.plivo.com"


def test_setup_reuses_what_exists_and_only_assigns(admin: SipAuth, rsps) -> None:
    rsps.get(ACLS, json=listing([{"ip_acl_uuid": "a-7", "name": "sipguard-123"}]))
    rsps.get(
        ACLS + "a-7/Entry/",
        json=listing([{"entry_uuid": "e-1", "ip_address": "203.0.113.0", "cidr_prefix": 24}]),
    )
    rsps.get(CREDENTIALS, json=listing([{"credential_uuid": "c-7", "username": "pbx"}]))
    rsps.post(API + "Application/123/", status=202, json={})
    report = admin.setup(
        "123", "ip_acl_and_credential", allow=["203.0.113.0/24"], credential_user="pbx"
    )
    assert [m for m, _, _ in bodies(rsps)] == ["GET", "GET", "GET", "POST"]
    assert (report.entries_kept, report.entries_added) == (["203.0.113.0/24"], [])
    assert (report.acl_created, report.credential_action) == (False, "kept")


def test_setup_with_a_password_updates_an_existing_credential(admin: SipAuth, rsps) -> None:
    rsps.get(CREDENTIALS, json=listing([{"credential_uuid": "c-7", "username": "pbx"}]))
    rsps.post(CREDENTIALS + "c-7/", status=202, json={})
    rsps.post(API + "Application/123/", status=202, json={})
    report = admin.setup("123", "credential", credential_user="pbx", password=GOOD_PASSWORD)
    assert bodies(rsps)[1] == ("POST", "SipAuth/Credential/c-7/", {"password": GOOD_PASSWORD})
    assert report.credential_action == "password updated"


def test_setup_without_a_password_for_a_new_credential_writes_nothing(admin: SipAuth, rsps) -> None:
    rsps.get(ACLS, json=listing([]))
    rsps.get(CREDENTIALS, json=listing([]))
    with pytest.raises(ValidationError, match="does not exist yet"):
        admin.setup("123", "ip_acl_and_credential", allow=["10.0.0.0/8"], credential_user="pbx")
    assert {c.request.method for c in rsps.calls} == {"GET"}


def test_setup_past_the_entry_quota_writes_nothing(admin: SipAuth, rsps) -> None:
    rsps.get(ACLS, json=listing([{"ip_acl_uuid": "a-7", "name": "sipguard-123"}]))
    present = [
        {"entry_uuid": f"e-{i}", "ip_address": f"10.0.{i}.0", "cidr_prefix": 24}
        for i in range(MAX_ENTRIES_PER_ACL - 1)
    ]
    rsps.get(ACLS + "a-7/Entry/", json=listing(present))
    with pytest.raises(ValidationError, match="maximum of 50"):
        admin.setup("123", "ip_acl", allow=["192.0.2.0/24", "198.51.100.0/24"])
    assert {c.request.method for c in rsps.calls} == {"GET"}


def test_setup_past_the_acl_quota_writes_nothing(admin: SipAuth, rsps) -> None:
    rsps.get(
        ACLS, json=listing([{"ip_acl_uuid": f"a-{i}", "name": f"n{i}"} for i in range(MAX_ACLS)])
    )
    with pytest.raises(ValidationError, match="maximum of 100"):
        admin.setup("123", "ip_acl", allow=["192.0.2.0/24"])
    assert len(rsps.calls) == 1


def _reused_acl_with(rsps: Any, entries: list[tuple[str, str, int]]) -> None:
    rsps.get(ACLS, json=listing([{"ip_acl_uuid": "a-7", "name": "sipguard-123"}]))
    rsps.get(
        ACLS + "a-7/Entry/",
        json=listing(
            [{"entry_uuid": uuid, "ip_address": ip, "cidr_prefix": p} for uuid, ip, p in entries]
        ),
    )


def test_setup_reports_entries_it_was_not_asked_for(admin: SipAuth, rsps) -> None:
    _reused_acl_with(rsps, [("e-1", "203.0.113.0", 24), ("e-old", "192.0.2.0", 24)])
    rsps.post(API + "Application/123/", status=202, json={})
    report = admin.setup("123", "ip_acl", allow=["203.0.113.0/24"])
    assert report.entries_extra == ["192.0.2.0/24"]
    assert report.entries_removed == []
    assert [m for m, _, _ in bodies(rsps)] == ["GET", "GET", "POST"]


def test_setup_with_prune_removes_them_before_adding(admin: SipAuth, rsps) -> None:
    _reused_acl_with(rsps, [("e-old", "192.0.2.0", 24)])
    rsps.delete(ACLS + "a-7/Entry/e-old/", status=204)
    rsps.post(ACLS + "a-7/Entry/", status=201, json={"entry_uuid": "e-new"})
    rsps.post(API + "Application/123/", status=202, json={})
    report = admin.setup("123", "ip_acl", allow=["203.0.113.0/24"], prune=True)
    assert [(m, p) for m, p, _ in bodies(rsps)][2:] == [
        ("DELETE", "SipAuth/IpAccessControlList/a-7/Entry/e-old/"),
        ("POST", "SipAuth/IpAccessControlList/a-7/Entry/"),
        ("POST", "Application/123/"),
    ]
    assert (report.entries_removed, report.entries_extra) == (["192.0.2.0/24"], [])


def test_prune_makes_room_within_the_entry_quota(admin: SipAuth, rsps) -> None:
    full = [(f"e-{i}", f"10.0.{i}.0", 24) for i in range(MAX_ENTRIES_PER_ACL)]
    _reused_acl_with(rsps, full)
    with pytest.raises(ValidationError, match="maximum of 50"):
        admin.setup("123", "ip_acl", allow=["203.0.113.0/24"])
    assert {c.request.method for c in rsps.calls} == {"GET"}
