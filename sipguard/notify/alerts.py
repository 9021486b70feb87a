"""Alerts pushed to the operator's receivers: what each condition says, and the bodies sent.

Two receivers, each optional: a Slack-compatible incoming webhook (POST `{"text": ...}`,
unsigned: Slack checks nothing) and a generic JSON webhook, `{"type": "alert.<condition>",
"timestamp", "data"}` signed per Standard Webhooks like the handoff webhooks. An alert names a
source IP, an agent or a route, never a phone number, a password or a token: its subject and
details come only from those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The outbox's owner ids for alerts (where a handoff webhook has its API key's id): the worker
# resolves them to the configured receiver when it delivers.
SLACK = "alerts:slack"
WEBHOOK = "alerts:webhook"
RECEIVERS = (SLACK, WEBHOOK)

LOCKOUT = "source_locked_out"
QUARANTINED = "agent_quarantined"
RELEASED = "agent_released"
REFUSED_BURST = "signature_refusals"
AUTH_NOT_RUNNING = "sip_auth_not_running"
CONDITIONS = (LOCKOUT, QUARANTINED, RELEASED, REFUSED_BURST, AUTH_NOT_RUNNING)


@dataclass(frozen=True)
class Receiver:
    """Where one receiver's alerts go, and the `whsec_` secret signing them (None: unsigned)."""

    url: str = field(repr=False)  # a Slack webhook URL is itself a secret
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Alert:
    """One condition about one subject (an IP, an agent, a route), with its words."""

    condition: str
    subject: str
    text: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def data(self, window_start: datetime) -> dict[str, Any]:
        """Return the generic webhook's `data`."""
        return {
            "condition": self.condition,
            "subject": self.subject,
            "text": self.text,
            "window_start": _iso(window_start),
            **self.details,
        }


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds") + "Z"


def slack_body(alert: Alert) -> bytes:
    """Return the Slack incoming-webhook body of `alert`."""
    return json.dumps({"text": f"SIP Guard: {alert.text}"}, ensure_ascii=False).encode()


def lockout(ip: str, until: datetime, failures: int) -> Alert:
    """A source IP Plivo has probably locked out (10 failed SIP auths within 60 s)."""
    return Alert(
        LOCKOUT,
        ip,
        f"Plivo has probably locked out source IP {ip} until {_iso(until)}: {failures} failed "
        "SIP auth attempts (4210) within 60 s, so every call from it is refused, even with the "
        "right credentials. Check that PBX's credentials or ACL entry "
        "(sipguard report auth-failures --since 15m).",
        {"ip": ip, "until": _iso(until), "failures": failures},
    )


def quarantined(agent: str, cause: str, failures: int, until: datetime) -> Alert:
    """An agent quarantined after consecutive SIP-auth failures towards its PBX."""
    code = 4250 if cause == "sip_auth_timeout" else 4240
    check = (
        "the PBX's reachability" if code == 4250 else "its username/password_env against its PBX"
    )
    return Alert(
        QUARANTINED,
        agent,
        f"Agent {agent} is quarantined until {_iso(until)} after {failures} {cause} ({code}) "
        f"in a row; its groups skip it. Check {check}; `sipguard agents release {agent}` "
        "rings it again.",
        {"agent": agent, "cause": cause, "code": code, "failures": failures, "until": _iso(until)},
    )


def released(agent: str, how: str) -> Alert:
    """An agent's quarantine ended: it took a call after the cool-down, or was released."""
    return Alert(
        RELEASED,
        agent,
        f"Agent {agent} is no longer quarantined ({how}).",
        {"agent": agent, "how": how},
    )


def refused_burst(total: int, minute: datetime, threshold: int, reason: str) -> Alert:
    """Callbacks refused for their Plivo signature, at least `threshold` in one minute."""
    return Alert(
        REFUSED_BURST,
        "callbacks",
        f"{total} callbacks refused for their Plivo signature in the minute from {_iso(minute)} "
        f"(alert at {threshold}); latest reason: {reason}. On Plivo's own traffic, "
        "'does not match' is a wrong PLIVO_AUTH_TOKEN or PUBLIC_BASE_URL; otherwise someone "
        "is sending forged callbacks.",
        {"refused": total, "minute": _iso(minute), "threshold": threshold, "reason": reason},
    )


def auth_not_running(route: str) -> Alert:
    """A SIP call arrived without SIPAuthType: Plivo's SIP authentication did not run."""
    return Alert(
        AUTH_NOT_RUNNING,
        route,
        f"A SIP call reached {route} without SIPAuthType: SIP authentication is not running. "
        "Point the provider's Request-URI at sip:{app_id}@app.plivo.com and check the "
        "application's assignment (sipguard sipauth assign).",
        {"route": route},
    )
