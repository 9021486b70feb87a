"""Scenario (b): "the plivo SDK way", as a customer would write the answer URL with the SDK.

Every POST /answer is checked with ``plivo.utils.validate_v3_signature`` over the public URL
and the form, and the same <Dial> is built per request with ``plivo.plivoxml`` and
``to_string()``. No routing, no nonce store, no database. The SDK's UserElement has no
sipAuthUsername/sipAuthPassword (plivo 4.63.0), so a two-line subclass adds them: the least a
customer must write to answer a PBX's digest challenge. Served by gunicorn as
``bench.sdk_app:create_app()``; the token comes from BENCH_AUTH_TOKEN.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, request
from plivo import plivoxml
from plivo.utils import validate_v3_signature

from bench import workload


class CredentialUserElement(plivoxml.UserElement):
    """plivoxml's <User> plus the digest credentials the SDK does not know yet."""

    def __init__(self, content: str, sip_auth_username: str, sip_auth_password: str) -> None:
        super().__init__(content)
        self.sip_auth_username = sip_auth_username
        self.sip_auth_password = sip_auth_password

    def to_dict(self) -> dict[str, Any]:
        """Return the element's attributes, credentials included."""
        return {
            **super().to_dict(),
            "sipAuthUsername": self.sip_auth_username,
            "sipAuthPassword": self.sip_auth_password,
        }


def build_dial(pretty: bool = False) -> str:
    """Build the bench's <Dial> with plivoxml and serialise it."""
    dial = plivoxml.DialElement(
        action=workload.DIAL_ACTION,
        method="POST",
        timeout=workload.DIAL_TIMEOUT,
        caller_id=workload.DIAL_CALLER_ID,
        caller_name=workload.DIAL_CALLER_NAME,
        redirect=True,
    )
    dial.add(
        CredentialUserElement(workload.AGENT_URI, workload.AGENT_USERNAME, workload.AGENT_PASSWORD)
    )
    return str(plivoxml.ResponseElement().add(dial).to_string(pretty))


def create_app() -> Flask:
    """Build the app: POST /answer verifies with the SDK then answers plivoxml; GET /healthz."""
    app = Flask(__name__, static_folder=None)
    token = os.environ["BENCH_AUTH_TOKEN"]

    @app.post("/answer")
    def answer() -> Response:
        valid = validate_v3_signature(
            "POST",
            workload.PUBLIC_BASE_URL + request.path,
            request.headers.get("X-Plivo-Signature-V3-Nonce", ""),
            token,
            request.headers.get("X-Plivo-Signature-V3", ""),
            request.form.to_dict(),
        )
        if not valid:
            return Response('{"error": "invalid signature"}\n', 403, mimetype="application/json")
        return Response(build_dial(), mimetype="application/xml")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app
