"""Handoff tokens (signed, expiring, bound to one call and one agent group) and the SIP header
that tells an agent's PBX which API handoff a ringing call is."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from sipguard.errors import HandoffTokenError

EpochClock = Callable[[], float]  # seconds since the epoch, like time.time
TOKEN_PARAM = "token"
HANDOFF_PARAM = "handoff"  # the id of the API handoff a Transfer URL carries out
# The agent leg's sipHeaders name carrying the handoff id: letters and digits, at most 24
# characters (docs/plivo.md, XML, sipHeaders); the PBX sees it as X-PH-Handoff.
HANDOFF_HEADER = "Handoff"
WHISPER = "whisper"  # the purpose of a token that opens /whisper/<handoff id>


class HandoffSigner:
    """Mint and check the ``token`` query parameter of ``/handoff/<group>`` URLs."""

    def __init__(self, secret_key: str, ttl_seconds: int, clock: EpochClock = time.time) -> None:
        signer = type("_ClockedSigner", (TimestampSigner,), {"get_timestamp": _stamp(clock)})
        self._serializer = URLSafeTimedSerializer(secret_key, salt="handoff-v1", signer=signer)
        self.ttl_seconds = ttl_seconds

    def mint(
        self,
        call_uuid: str,
        group: str,
        handoff_id: str | None = None,
        *,
        purpose: str | None = None,
    ) -> str:
        """Return a token that lets `call_uuid` be handed to `group` until it expires.

        With `handoff_id` the token is bound to that API handoff too: the URL's ``handoff``
        parameter must then name it, and a token minted without one accepts none. A token
        minted for a `purpose` (``WHISPER``) opens only that route, never ``/handoff``.
        """
        claims = {"c": call_uuid, "g": group}
        if handoff_id is not None:
            claims["h"] = handoff_id
        if purpose is not None:
            claims["p"] = purpose
        return self._serializer.dumps(claims)

    def check(
        self, token: str | None, call_uuid: str, group: str, handoff_id: str | None = None
    ) -> None:
        """Raise HandoffTokenError unless `token` is valid, fresh, and for this call, group and
        handoff (None: a token minted for no handoff)."""
        claims = self._claims(token, None)
        if claims.get("c") != call_uuid:
            raise HandoffTokenError("handoff token is for another call")
        if claims.get("g") != group:
            raise HandoffTokenError("handoff token is for another group")
        if claims.get("h") != handoff_id:
            raise HandoffTokenError("handoff token is for another handoff")

    def check_for_handoff(
        self, token: str | None, handoff_id: str, purpose: str
    ) -> tuple[str, str]:
        """Check a `purpose` token bound to `handoff_id`; return its (call uuid, group).

        The request's CallUUID is not compared: Plivo fetches a Dial's confirmSound for the
        called party, and does not document what that request carries.
        """
        claims = self._claims(token, purpose)
        if claims.get("h") != handoff_id:
            raise HandoffTokenError("handoff token is for another handoff")
        call_uuid, group = claims.get("c"), claims.get("g")
        if not isinstance(call_uuid, str) or not isinstance(group, str):
            raise HandoffTokenError("handoff token is invalid")
        return call_uuid, group

    def _claims(self, token: str | None, purpose: str | None) -> dict[str, object]:
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
        if claims.get("p") != purpose:
            raise HandoffTokenError("handoff token is for another route")
        return claims


def header_value(text: str) -> str:
    """Fit `text` into a sipHeaders value (letters, digits and ``%``): percent-encode the rest.

    ``ho_abc`` becomes ``ho%5Fabc``; a reader decodes it with ``urllib.parse.unquote``.
    """
    return "".join(
        char if char.isascii() and char.isalnum() else "".join(f"%{b:02X}" for b in char.encode())
        for char in text
    )


def handoff_sip_headers(fields: Mapping[str, str], handoff_id: str) -> dict[str, str]:
    """Return the headers a handoff adds to each agent leg: its `fields`, then its id.

    A field named like the id's header (Plivo compares names case-insensitively) gives way to it.
    """
    headers = {
        name: value for name, value in fields.items() if name.lower() != HANDOFF_HEADER.lower()
    }
    headers[HANDOFF_HEADER] = header_value(handoff_id)
    return headers


def _stamp(clock: EpochClock) -> Callable[[TimestampSigner], int]:
    def get_timestamp(self: TimestampSigner) -> int:
        return int(clock())

    return get_timestamp
