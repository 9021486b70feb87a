"""What every scenario is fed: the settings the servers share and pre-signed callback requests.

wrk's Lua has no HMAC-SHA256, so each request is signed here, with its own nonce and CallUUID,
and written one per line (``path TAB nonce TAB signature TAB body``) for bench/signed.lua to
replay in order. A signed request is good once: the app refuses a replayed nonce with 403.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from sipguard.calls.signature import V3_HEADER, V3_NONCE_HEADER, signed_headers

ROOT = Path(__file__).resolve().parent.parent
# The URL Plivo would be configured with; the signed URL never depends on the bench's ports.
PUBLIC_BASE_URL = "https://sipguard.bench.example"
VOICE_CONFIG = ROOT / "config" / "voice.sample.toml"
# Agent passwords of the sample config: the test suite's canary values (tests/support/config.py).
AGENT_PASSWORDS = {
    "AGENT_ALICE_PASSWORD": "Canary-Alice-Pw-a1ice",
    "AGENT_BOB_PASSWORD": "Canary-Bob-Pw-b0bby",
}
FORM_TYPE = "application/x-www-form-urlencoded"

# The <Dial> the sample config answers an authenticated PBX call with (group "support",
# attempt 0 rings alice). Scenarios (a) and (b) and the micro-benchmarks build exactly this.
DIAL_ACTION = f"{PUBLIC_BASE_URL}/dial-action?group=support&attempt=0"
DIAL_TIMEOUT = 20
DIAL_CALLER_ID = "+14155550100"
DIAL_CALLER_NAME = "Support line"
AGENT_URI = "sip:alice@pbx.example.com"
AGENT_USERNAME = "alice"
AGENT_PASSWORD = AGENT_PASSWORDS["AGENT_ALICE_PASSWORD"]


def new_token() -> str:
    """Return a random auth token for one bench run."""
    return secrets.token_hex(20)


def answer_form(call_uuid: str) -> dict[str, str]:
    """Return an answer_url form for a PBX call that passed IP ACL + credential auth."""
    return {
        "CallUUID": call_uuid,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "Event": "StartApp",
        "From": "sip:frontdesk@203.0.113.10",
        "To": "sip:20372631212782780@app.plivo.com",
        "CallerName": "frontdesk",
        "SIPAuthType": "ip_acl_and_credential",
        "SIPAuthUser": "frontdesk",
        "SIPSourceIP": "203.0.113.10",
        "BillRate": "0.00300",
        "ParentAuthID": "MAXXXXXXXXXXXXXXXXXX",
    }


def hangup_form(call_uuid: str) -> dict[str, str]:
    """Return a hangup_url form for the end of that call."""
    return {
        "CallUUID": call_uuid,
        "Direction": "inbound",
        "CallStatus": "completed",
        "Event": "Hangup",
        "From": "sip:frontdesk@203.0.113.10",
        "To": "sip:20372631212782780@app.plivo.com",
        "SIPAuthType": "ip_acl_and_credential",
        "SIPAuthUser": "frontdesk",
        "SIPSourceIP": "203.0.113.10",
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseName": "Normal Hangup",
        "HangupCauseCode": "4000",
        "HangupSource": "Caller",
        "Duration": "42",
        "BillDuration": "60",
        "TotalCost": "0.00300",
    }


@dataclass(frozen=True)
class SignedRequest:
    """One POST as Plivo would send it: path, V3 headers and urlencoded body."""

    path: str
    nonce: str
    signature: str
    body: str

    def headers(self) -> dict[str, str]:
        """Return the request's headers (signature, nonce, content type)."""
        return {
            "Content-Type": FORM_TYPE,
            V3_NONCE_HEADER: self.nonce,
            V3_HEADER: self.signature,
        }


def sign(token: str, path: str, form: dict[str, str], nonce: str) -> SignedRequest:
    """Sign `form` for POST `path` with a V3 signature over the public URL."""
    params = {key: [value] for key, value in form.items()}
    headers = signed_headers(token, "POST", PUBLIC_BASE_URL + path, params, nonce)
    return SignedRequest(path, nonce, headers[V3_HEADER], urlencode(form))


def generate(token: str, route: str, count: int, tag: str) -> list[SignedRequest]:
    """Return `count` signed requests to `route` (answer or hangup), each nonce and call new."""
    prefix = f"{tag}-{secrets.token_hex(6)}"
    build = answer_form if route == "answer" else hangup_form
    return [
        sign(token, f"/{route}", build(f"{prefix}-{i:08d}"), f"{prefix}{i:010d}")
        for i in range(count)
    ]


def write(requests: list[SignedRequest], path: Path) -> Path:
    """Write requests one per line for bench/signed.lua; return `path`."""
    with path.open("w", encoding="utf-8") as handle:
        for r in requests:
            handle.write(f"{r.path}\t{r.nonce}\t{r.signature}\t{r.body}\n")
    return path
