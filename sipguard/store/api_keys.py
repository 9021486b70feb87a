"""API keys for the AI side: created with a random secret shown once, kept only as its hash.

A key reads ``sgk_<id>_<secret>``: the id (the row's "key_" id without its prefix) finds the row,
and the sha256 of the secret part is compared with `hmac.compare_digest`. Keys live in the
database, so every instance sees a new or revoked key at once; several can be live together,
which is how a key is rotated (create the new one, move the AI over, revoke the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, or_, select, update

from sipguard.errors import ValidationError
from sipguard.store.database import Database
from sipguard.store.schema import api_keys
from xml_builders import check_url

KEY_PREFIX = "sgk_"
ID_PREFIX = "key_"
ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 16
SECRET_LENGTH = 43  # secrets.token_urlsafe(32)
_KEY = re.compile(rf"^{KEY_PREFIX}([0-9a-z]{{{ID_LENGTH}}})_([A-Za-z0-9_-]{{{SECRET_LENGTH}}})$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Compared against when no row matches, so a wrong id costs what a wrong secret costs.
_NO_HASH = "0" * 64


def random_id(prefix: str, length: int) -> str:
    """Return `prefix` and `length` random characters of [0-9a-z]."""
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_callback_url(field: str, url: str) -> str:
    """Check a webhook receiver's URL: https, or plain http to a loopback address only."""
    check_url(field, url)
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        # urlsplit refuses a bracketed host that is no IP address ("http://[0]"), which the
        # URL check lets through.
        raise ValidationError(field, "must have a valid host") from None
    if parts.scheme == "https":
        return url
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValidationError(field, "must be https (plain http only to a loopback address)")
    return url


def check_key_name(name: str) -> str:
    """Check an API key's name: 1-64 letters, digits, '.', '_' or '-'."""
    if not _NAME.fullmatch(name):
        raise ValidationError("name", "must be 1-64 letters, digits, '.', '_' or '-'")
    if name.startswith(ID_PREFIX):  # revoke takes a name or an id: they must not overlap
        raise ValidationError("name", f"must not start with {ID_PREFIX!r} (ids do)")
    return name


@dataclass(frozen=True)
class ApiKey:
    """An API key's row: never its secret, which only its holder knows."""

    id: str
    name: str
    callback_url: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        """Tell whether the key was revoked (it never verifies again)."""
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        """Build from an api_keys row."""
        return cls(
            id=row.id,
            name=row.name,
            callback_url=row.callback_url,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: `token` is the full key, shown to its owner once and never again."""

    key: ApiKey
    token: str = field(repr=False)  # never in a log line through a repr


@dataclass(frozen=True)
class Revocation:
    """The answer to a revoke: the key, and whether it had been revoked already."""

    key: ApiKey
    already: bool


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.callback_url,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


class ApiKeys(Database):
    """Create, list, revoke and check the AI side's API keys."""

    def create_api_key(self, name: str, callback_url: str | None = None) -> NewApiKey:
        """Create a key named `name`; return it with its full token (ValidationError if taken)."""
        check_key_name(name)
        if callback_url is not None:
            check_callback_url("callback_url", callback_url)
        key_id = random_id(ID_PREFIX, ID_LENGTH)
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        statement = (
            self._insert()(api_keys)
            .values(
                id=key_id,
                name=name,
                secret_hash=_hash(secret),
                callback_url=callback_url,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(*_COLUMNS)
        )

        def write(conn: Connection) -> ApiKey:
            row = conn.execute(statement).first()
            if row is None:  # the unique name decides, not a read before the write
                raise ValidationError("name", f"an API key named {name!r} exists already")
            return ApiKey.from_row(row)

        key = self._run(write)
        return NewApiKey(key=key, token=f"{KEY_PREFIX}{key_id.removeprefix(ID_PREFIX)}_{secret}")

    def list_api_keys(self) -> list[ApiKey]:
        """Return every key, live and revoked, oldest first."""
        query = select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
        return self._run(
            lambda conn: [ApiKey.from_row(row) for row in conn.execute(query)], write=False
        )

    def revoke_api_key(self, name_or_id: str) -> Revocation | None:
        """Revoke a key by name or id; None when there is no such key.

        Revoking twice is harmless: the second answer says it was revoked already.
        """
        now = self._clock()
        which = or_(api_keys.c.name == name_or_id[:64], api_keys.c.id == name_or_id[:32])

        def write(conn: Connection) -> Revocation | None:
            revoked = conn.execute(
                update(api_keys)
                .where(which, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(*_COLUMNS)
            ).first()
            if revoked is not None:
                return Revocation(ApiKey.from_row(revoked), already=False)
            row = conn.execute(select(*_COLUMNS).where(which)).first()
            return None if row is None else Revocation(ApiKey.from_row(row), already=True)

        return self._run(write)

    def authenticate(self, token: str) -> ApiKey | None:
        """Return the live key `token` is, or None (malformed, unknown, wrong or revoked).

        Raises StoreUnavailable only when the database does not answer.
        """
        match = _KEY.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            return None
        key_id, secret = ID_PREFIX + match[1], match[2]
        query = select(*_COLUMNS, api_keys.c.secret_hash).where(api_keys.c.id == key_id)
        row = self._run(lambda conn: conn.execute(query).first(), write=False)
        stored = row.secret_hash if row is not None else _NO_HASH
        if not hmac.compare_digest(_hash(secret).encode(), stored.encode()):
            return None
        if row is None or row.revoked_at is not None:
            return None
        return ApiKey.from_row(row)
