"""The REST module: paths and fields from one table, the SDK's auth and user agent, typed errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
import responses

from sipguard.errors import ConfigError, PlivoAPIError, PlivoOutcomeUnknown, ValidationError
from sipguard.plivo.account import Account, load_account
from sipguard.plivo.api import PAGE_SIZE, RESOURCES, PlivoAPI
from tests.support.config import API, AUTH_ID, TOKEN


@pytest.fixture
def api() -> PlivoAPI:
    return PlivoAPI(AUTH_ID, TOKEN)


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock() as mock:
        yield mock


def page(objects: list[dict[str, Any]], total: int | None = None, more: bool = False) -> dict:
    meta = {"limit": PAGE_SIZE, "offset": 0, "next": "next-page" if more else None}
    if total is not None:
        meta["total_count"] = total
    return {"api_id": "list-1", "meta": meta, "objects": objects}


def test_requests_carry_the_sdk_basic_auth_user_agent_and_json(api: PlivoAPI, rsps) -> None:
    rsps.post(API + "SipAuth/Credential/", json={"credential_uuid": "c-1"}, status=201)
    api.create("credential", {"username": "pbx", "password": "Secret1Secret1"})
    request = rsps.calls[0].request
    expected = base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["User-Agent"].startswith("plivo-python/")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"username": "pbx", "password": "Secret1Secret1"}


@pytest.mark.parametrize(
    ("kind", "parents", "path"),
    [
        ("credential", {}, "SipAuth/Credential/"),
        ("acl", {}, "SipAuth/IpAccessControlList/"),
        ("entry", {"acl": "acl-1"}, "SipAuth/IpAccessControlList/acl-1/Entry/"),
        ("application", {}, "Application/"),
        ("call", {}, "Call/"),
    ],
)
def test_every_operation_uses_the_tables_path_and_method(
    api: PlivoAPI, rsps, kind: str, parents: dict[str, str], path: str
) -> None:
    rsps.post(API + path, json={}, status=201)
    rsps.get(API + path + "u-1/", json={})
    rsps.post(API + path + "u-1/", json={}, status=202)
    rsps.delete(API + path + "u-1/", status=204)
    api.create(kind, {}, **parents)
    api.get(kind, "u-1", **parents)
    api.update(kind, "u-1", {}, **parents)
    api.delete(kind, "u-1", **parents)
    assert [(c.request.method, c.request.url) for c in rsps.calls] == [
        ("POST", API + path),
        ("GET", API + path + "u-1/"),
        ("POST", API + path + "u-1/"),
        ("DELETE", API + path + "u-1/"),
    ]


def test_field_names_are_translated_both_ways_through_the_table(api: PlivoAPI, rsps) -> None:
    rsps.post(
        API + "SipAuth/IpAccessControlList/a-1/Entry/",
        json={"entry_uuid": "e-1", "ip_address": "192.0.2.0", "cidr_prefix": 24},
        status=201,
    )
    created = api.create("entry", {"ip": "192.0.2.0", "prefix": 24, "description": None}, acl="a-1")
    assert json.loads(rsps.calls[0].request.body) == {"ip_address": "192.0.2.0", "cidr_prefix": 24}
    assert created == {"entry_uuid": "e-1", "uuid": "e-1", "ip": "192.0.2.0", "prefix": 24}
    assert RESOURCES["entry"].fields["ip"] == "ip_address"


def test_a_field_missing_from_the_table_is_a_programming_error(api: PlivoAPI) -> None:
    with pytest.raises(ValueError, match="no Plivo field for colour"):
        api.create("acl", {"colour": "blue"})


def test_passwords_never_come_back_from_a_response(api: PlivoAPI, rsps) -> None:
    rsps.get(API + "SipAuth/Credential/c-1/", json={"credential_uuid": "c-1", "password": "x"})
    assert "password" not in api.get("credential", "c-1")


@pytest.mark.parametrize("bad", ["", ".", "..", "../Account", "a/b", "a b", "a?x=1", "é", "a.b"])
def test_ids_that_would_change_the_path_are_refused_before_any_request(
    api: PlivoAPI, rsps, bad: str
) -> None:
    with pytest.raises(ValidationError):
        api.get("credential", bad)
    with pytest.raises(ValidationError):
        api.list("entry", acl=bad)
    assert len(rsps.calls) == 0


def test_list_follows_pages_until_total_count(api: PlivoAPI, rsps) -> None:
    first = [{"credential_uuid": f"c-{i}"} for i in range(PAGE_SIZE)]
    rsps.get(
        API + "SipAuth/Credential/",
        json=page(first, total=PAGE_SIZE + 2, more=True),
        match=[responses.matchers.query_param_matcher({"limit": "20", "offset": "0"})],
    )
    rsps.get(
        API + "SipAuth/Credential/",
        json=page([{"credential_uuid": "c-20"}, {"credential_uuid": "c-21"}], total=22),
        match=[responses.matchers.query_param_matcher({"limit": "20", "offset": "20"})],
    )
    found = api.list("credential")
    assert [item["uuid"] for item in found] == [f"c-{i}" for i in range(22)]


def test_list_stops_on_a_short_page_without_meta(api: PlivoAPI, rsps) -> None:
    rsps.get(API + "SipAuth/IpAccessControlList/", json={"objects": []})
    assert api.list("acl") == []
    assert len(rsps.calls) == 1


def test_list_without_objects_is_an_error(api: PlivoAPI, rsps) -> None:
    rsps.get(API + "SipAuth/IpAccessControlList/", json={"api_id": "x"})
    with pytest.raises(PlivoAPIError, match="no 'objects'"):
        api.list("acl")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"api_id": "id-400", "error": "credential is assigned"}, "credential is assigned"),
        (401, {"api_id": "id-401", "error": "authentication failed"}, "authentication failed"),
        (404, {"api_id": "id-404", "error": "not found"}, "not found"),
        (409, {"api_id": "id-409", "error": "username already exists"}, "username already exists"),
        (429, {"api_id": "id-429", "error": "too many requests"}, "too many requests"),
        (500, {"api_id": "id-500", "error": "internal"}, "internal"),
        (400, {"api_id": "id-obj", "error": {"username": "invalid"}}, "username: invalid"),
    ],
)
def test_api_errors_become_plivo_api_error_with_its_fields(
    api: PlivoAPI, rsps, status: int, body: dict, error: str
) -> None:
    rsps.post(API + "SipAuth/Credential/", json=body, status=status)
    with pytest.raises(PlivoAPIError) as caught:
        api.create("credential", {"username": "pbx"})
    assert (caught.value.status, caught.value.api_id, caught.value.error) == (
        status,
        body["api_id"],
        error,
    )
    assert caught.value.rate_limited is (status == 429)


def test_429_says_rate_limited_and_when_to_retry(api: PlivoAPI, rsps) -> None:
    rsps.get(
        API + "SipAuth/Credential/c-1/",
        json={"api_id": "r", "error": "slow down"},
        status=429,
        headers={"Retry-After": "30"},
    )
    with pytest.raises(PlivoAPIError) as caught:
        api.get("credential", "c-1")
    assert caught.value.retry_after == "30"
    assert "rate limited: retry after 30 s" in str(caught.value)


def test_a_non_json_error_body_still_gives_status_and_reason(api: PlivoAPI, rsps) -> None:
    rsps.get(API + "Call/x/", body="<html>Bad Gateway</html>", status=502)
    with pytest.raises(PlivoAPIError) as caught:
        api.get("call", "x")
    assert (caught.value.status, caught.value.api_id) == (502, None)
    assert caught.value.error == "Bad Gateway"


def test_an_echoed_password_is_masked_in_the_error(api: PlivoAPI, rsps) -> None:
    rsps.post(
        API + "SipAuth/Credential/",
        json={"api_id": "e", "error": "password Secret1Secret1 is too common"},
        status=400,
    )
    with pytest.raises(PlivoAPIError) as caught:
        api.create("credential", {"username": "pbx", "password": "Secret1Secret1"})
    assert "Secret1Secret1" not in str(caught.value)
    assert caught.value.error == "password *** is too common"


def test_unreachable_api_is_a_plivo_api_error_without_status(api: PlivoAPI, rsps) -> None:
    rsps.get(API + "Call/x/", body=requests.ConnectTimeout("timed out talking to host"))
    with pytest.raises(PlivoAPIError) as caught:
        api.get("call", "x")
    assert caught.value.status is None
    assert caught.value.error == "could not reach api.plivo.com (ConnectTimeout)"


def test_base_url_is_configurable_for_the_sandbox(rsps) -> None:
    local = PlivoAPI(AUTH_ID, TOKEN, base_url="http://127.0.0.1:8765/")
    rsps.get(f"http://127.0.0.1:8765/v1/Account/{AUTH_ID}/SipAuth/Credential/", json=page([]))
    assert local.list("credential") == []


@pytest.mark.parametrize(
    ("auth_id", "base_url", "message"),
    [
        ("not-an-auth-id", "https://api.plivo.com", "PLIVO_AUTH_ID"),
        (AUTH_ID, "ftp://api.plivo.com", "PLIVO_API_URL"),
    ],
)
def test_unusable_settings_are_config_errors(auth_id: str, base_url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlivoAPI(auth_id, TOKEN, base_url=base_url)


def test_a_short_page_without_meta_is_the_last(api: PlivoAPI, rsps) -> None:
    rsps.get(API + "SipAuth/IpAccessControlList/", json={"objects": [{"ip_acl_uuid": "a-1"}]})
    assert [item["uuid"] for item in api.list("acl")] == ["a-1"]
    assert len(rsps.calls) == 1


def test_a_server_ignoring_offset_neither_loops_nor_doubles(api: PlivoAPI, rsps) -> None:
    full = {"objects": [{"ip_acl_uuid": f"a-{i}"} for i in range(PAGE_SIZE)]}
    rsps.get(API + "SipAuth/IpAccessControlList/", json=full)
    found = api.list("acl")
    assert len(found) == PAGE_SIZE
    assert len(rsps.calls) == 2  # the repeated page ends the listing


def test_a_create_with_an_effect_refuses_a_2xx_answer_without_the_id(api: PlivoAPI, rsps) -> None:
    """Plivo accepted it: the error says what may have happened, with Plivo's api_id."""
    rsps.post(API + "Call/", json={"api_id": "a-1", "message": "call fired"}, status=201)
    with pytest.raises(PlivoOutcomeUnknown) as caught:
        api.create("call", {"to": "+14155550111"}, effect="the call may have been placed")
    assert (caught.value.status, caught.value.api_id) == (201, "a-1")
    assert caught.value.error == (
        "the answer carried no request_uuid, so the call may have been placed"
    )


def test_a_create_without_an_effect_returns_whatever_came_back(api: PlivoAPI, rsps) -> None:
    rsps.post(API + "SipAuth/IpAccessControlList/", body="not json", status=201)
    assert api.create("acl", {"name": "office"}) == {}


# -- the account the REST commands act for, from the environment alone -------------------------


def test_load_account_reads_only_the_plivo_variables(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN},old-token\n", encoding="utf-8")
    account = load_account(
        {
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN_FILE": str(token_file),
            "PLIVO_API_URL": "http://127.0.0.1:5100/",
            "PLIVO_API_TIMEOUT_SECONDS": "3",
        }
    )
    assert account == Account(AUTH_ID, TOKEN, "http://127.0.0.1:5100", 3)
    assert TOKEN not in repr(account)
    assert load_account({"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": TOKEN}).api().base_url == (
        "https://api.plivo.com"
    )


ACCOUNT = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": TOKEN}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN are not set"),
        ({"PLIVO_AUTH_TOKEN": TOKEN}, "PLIVO_AUTH_ID is not set"),
        ({"PLIVO_AUTH_ID": AUTH_ID}, "PLIVO_AUTH_TOKEN is not set"),
        ({**ACCOUNT, "PLIVO_API_URL": "ftp://x"}, "PLIVO_API_URL must be an absolute http(s) URL"),
        ({**ACCOUNT, "PLIVO_API_TIMEOUT_SECONDS": "soon"}, "PLIVO_API_TIMEOUT_SECONDS must be a"),
        ({**ACCOUNT, "PLIVO_API_TIMEOUT_SECONDS": "0"}, "PLIVO_API_TIMEOUT_SECONDS must be at"),
        ({"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN_FILE": "/nonexistent"}, "cannot read"),
    ],
)
def test_load_account_names_what_to_set(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_account(environ)
    assert message in caught.value.message
    assert "\n" not in caught.value.message and TOKEN not in caught.value.message
