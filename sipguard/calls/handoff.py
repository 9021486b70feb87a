"""Handoff tokens: signed, expiring, bound to one call and one agent group."""

from __future__ import annotations

import time
from collections.abc import Callable

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from sipguard.errors import HandoffTokenError

EpochClock = Callable[[], float]  # seconds since the epoch, like time.time
TOKEN_PARAM = "token"
HANDOFF_PARAM = "handoff"  # the id of the API handoff a Transfer URL carries out


class HandoffSigner:
    """Mint and check the ``token`` query parameter of ``/handoff/<group>`` URLs."""

    def __init__(self, secret_key: str, ttl_seconds: int, clock: EpochClock = time.time) -> None:
        signer = type("_ClockedSigner", (TimestampSigner,), {"get_timestamp": _stamp(clock)})
        self._serializer = URLSafeTimedSerializer(secret_key, salt="handoff-v1", signer=signer)
        self.ttl_seconds = ttl_seconds

    def mint(self, call_uuid: str, group: str, handoff_id: str | None = None) -> str:
        """Return a token that lets `call_uuid` be handed to `group` until it expires.

        With `handoff_id` the token is bound to that API handoff too: the URL's ``handoff``
        parameter must then name it, and a token minted without one accepts none.
        """
        claims = {"c": call_uuid, "g": group}
        if handoff_id is not None:
            claims["h"] = handoff_id
        return self._serializer.dumps(claims)

    def check(
        self, token: str | None, call_uuid: str, group: str, handoff_id: str | None = None
    ) -> None:
        """Raise HandoffTokenError unless `token` is valid, fresh, and for this call, group and
        handoff (None: a token minted for no handoff)."""
        if not token:
            raise HandoffTokenError("handoff token is missing")
        try:
            claims = self._serializer.loads(token, max_age=self.ttl_seconds)
        except SignatureExpired:
            raise HandoffTokenError("handoff token has expired") from None
        except BadSignature:
            raise HandoffTokenError("handoff token is invalid") from None
        if not isinstance(claims, dict):
            raise HandoffTokenError("handoff token is invalid")
        if claims.get("c") != call_uuid:
            raise HandoffTokenError("handoff token is for another call")
        if claims.get("g") != group:
            raise HandoffTokenError("handoff token is for another group")
        if claims.get("h") != handoff_id:
            raise HandoffTokenError("handoff token is for another handoff")


def _stamp(clock: EpochClock) -> Callable[[TimestampSigner], int]:
    def get_timestamp(self: TimestampSigner) -> int:
        return int(clock())

    return get_timestamp
