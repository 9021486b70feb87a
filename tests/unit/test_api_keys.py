"""API keys in the store, on SQLite and PostgreSQL: create, list, revoke, authenticate."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from sipguard.errors import StoreUnavailable, ValidationError
from sipguard.store import Store, api_keys
from sipguard.store.api_keys import check_callback_url

T0 = datetime(2024, 5, 1, 12, 0, 0)
KEY = re.compile(r"^sgk_[0-9a-z]{16}_[A-Za-z0-9_-]{43}$")


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[Store]:
    opened = Store(database_url, clock=clock)
    opened.upgrade()
    yield opened
    opened.dispose()


def test_create_returns_the_key_once_and_stores_only_its_hash(store: Store) -> None:
    created = store.create_api_key("ai-prod", "https://ai.example.test/hooks")
    assert KEY.fullmatch(created.token)
    assert re.fullmatch(r"key_[0-9a-z]{16}", created.key.id)
    assert created.token.startswith("sgk_" + created.key.id.removeprefix("key_") + "_")
    assert created.token not in repr(created)
    assert created.key.name == "ai-prod"
    assert created.key.callback_url == "https://ai.example.test/hooks"
    assert created.key.created_at == T0 and not created.key.revoked
    [row] = store.query(select(api_keys))
    secret = created.token[len("sgk_") + 17 :]
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(row)


def test_authenticate_accepts_the_key_and_refuses_a_wrong_one(store: Store) -> None:
    created = store.create_api_key("ai")
    assert store.authenticate(created.token) == created.key
    wrong_secret = created.token[:-1] + ("A" if created.token[-1] != "A" else "B")
    assert store.authenticate(wrong_secret) is None
    other_id = "sgk_" + "0" * 16 + created.token[20:]
    assert store.authenticate(other_id) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sgk_",
        "Bearer x",
        "sgk_" + "a" * 16 + "_" + "b" * 42,
        "sgk_" + "A" * 16 + "_" + "b" * 43,
        "sgk_" + "a" * 16 + "_" + "b" * 44,
        "sgk_" + "a" * 16 + "_" + "b" * 42 + "\x00",
        "sgk_" + "a" * 16 + "_" + "b" * 42 + "é",
        "x" * 10_000,
    ],
)
def test_a_malformed_key_never_verifies_and_never_raises(store: Store, token: str) -> None:
    store.create_api_key("ai")
    assert store.authenticate(token) is None


def test_a_revoked_key_never_verifies_and_revoking_again_says_so(
    store: Store, clock: FakeClock
) -> None:
    created = store.create_api_key("ai")
    clock.now = T0 + timedelta(minutes=5)
    first = store.revoke_api_key("ai")
    assert first is not None and not first.already
    assert first.key.revoked_at == T0 + timedelta(minutes=5)
    assert store.authenticate(created.token) is None
    clock.now = T0 + timedelta(minutes=9)
    again = store.revoke_api_key(created.key.id)  # by id this time
    assert again is not None and again.already
    assert again.key.revoked_at == T0 + timedelta(minutes=5)  # the first revocation stands
    assert store.revoke_api_key("no-such-key") is None


def test_two_live_keys_both_verify_for_rotation(store: Store) -> None:
    old = store.create_api_key("ai-old")
    new = store.create_api_key("ai-new")
    assert store.authenticate(old.token) == old.key
    assert store.authenticate(new.token) == new.key
    store.revoke_api_key("ai-old")
    assert store.authenticate(old.token) is None
    assert store.authenticate(new.token) == new.key


def test_list_shows_every_key_without_a_secret(store: Store, clock: FakeClock) -> None:
    first = store.create_api_key("a")
    clock.now = T0 + timedelta(seconds=1)
    second = store.create_api_key("b", "http://127.0.0.1:9000/hooks")
    store.revoke_api_key("a")
    listed = store.list_api_keys()
    assert [key.name for key in listed] == ["a", "b"]
    assert listed[0].revoked and not listed[1].revoked
    assert listed[1].callback_url == "http://127.0.0.1:9000/hooks"
    for token in (first.token, second.token):
        assert token.split("_", 2)[2] not in repr(listed)


def test_a_name_is_unique(store: Store) -> None:
    store.create_api_key("ai")
    with pytest.raises(ValidationError, match="exists already"):
        store.create_api_key("ai")
    assert len(store.list_api_keys()) == 1


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "naïve", "a/b", "key_0123456789abcdef"])
def test_a_bad_name_is_refused(store: Store, name: str) -> None:
    with pytest.raises(ValidationError, match="^name: "):
        store.create_api_key(name)


@pytest.mark.parametrize(
    "url",
    [
        "https://ai.example.test/hooks",
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://[::1]:9000/x",
    ],
)
def test_callback_urls_that_are_accepted(url: str) -> None:
    assert check_callback_url("callback_url", url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://ai.example.test/hooks",
        "http://10.0.0.1/hooks",
        "ftp://ai.example.test/",
        "https://",
        "not a url",
        "http://localhost.evil.test/",
    ],
)
def test_callback_urls_that_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="^callback_url: "):
        check_callback_url("callback_url", url)


def test_an_unreachable_database_is_store_unavailable_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Store("postgresql://postgres@127.0.0.1:1/nope")
    token = "sgk_" + "a" * 16 + "_" + "C" * 43
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailable) as raised:
        down.authenticate(token)
    assert token not in str(raised.value) and "C" * 43 not in caplog.text
    down.dispose()
