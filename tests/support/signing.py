"""Callbacks signed as Plivo signs them: `signed_post` and typical inbound forms."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import urlencode

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from sipguard.calls import signature
from tests.support.config import BASE_URL, TOKEN

SignedPost = Callable[..., TestResponse]


def make_signed_post(client: FlaskClient) -> SignedPost:
    """Build the signed_post helper for a given client (several apps may share a test)."""

    def signed_post(
        path: str,
        form: dict[str, str | list[str]] | None = None,
        *,
        method: str = "POST",
        token: str = TOKEN,
        nonce: str | None = None,
        url: str | None = None,
        signature_value: str | None = None,
        main_token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """Send `form` to `path` signed as Plivo would; override any part to forge a failure."""
        form = form or {}
        params = {k: v if isinstance(v, list) else [v] for k, v in form.items()}
        nonce = nonce if nonce is not None else uuid.uuid4().hex
        signed_url = url if url is not None else BASE_URL + path
        if method == "GET":
            query = urlencode([(k, v) for k, vs in params.items() for v in vs])
            path = f"{path}{'&' if '?' in path else '?'}{query}" if query else path
            signed_url = url if url is not None else BASE_URL + path
            params = {}
        sent = signature.signed_headers(token, method, signed_url, params, nonce, main_token)
        if signature_value is not None:
            sent[signature.V3_HEADER] = signature_value
        sent.update(headers or {})
        if method == "GET":
            return client.get(path, headers=sent)
        return client.open(path, method=method, data=params, headers=sent)

    return signed_post


def inbound(**fields: str) -> dict[str, str]:
    """A typical answer_url form for an inbound SIP call, with `fields` overriding."""
    form = {
        "CallUUID": str(uuid.uuid4()),
        "From": "sip:frontdesk@203.0.113.10",
        "To": "sip:12345678901234567890@app.plivo.com",
        "Direction": "inbound",
        "CallStatus": "ringing",
        "Event": "StartApp",
    }
    form.update(fields)
    return {k: v for k, v in form.items() if v is not None}


def hangup(**fields: str) -> dict[str, str]:
    """A hangup_url form for a completed inbound SIP call, with `fields` overriding."""
    form = {
        "CallUUID": str(uuid.uuid4()),
        "CallStatus": "completed",
        "Direction": "inbound",
        "From": "sip:frontdesk@203.0.113.10",
        "To": "sip:12345678901234567890@app.plivo.com",
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseName": "Normal Hangup",
        "HangupCauseCode": "4000",
        "HangupSource": "Caller",
        "Duration": "12",
        "BillDuration": "60",
    }
    form.update(fields)
    return form
