"""Operator pages: /metrics for Prometheus, /monitor for people. Neither accepts a Plivo signature.

/monitor shows caller numbers and recent handoffs (never their summary, and of their fields only
the names: the AI fills them from the conversation), so it needs the admin password
(MONITOR_PASSWORD_HASH, checked with werkzeug's hash) and keeps the login in Flask's session
cookie, signed with SECRET_KEY. Sessions live in the store as well (logging out ends a copied
cookie too; 8 h from login at most; a new MONITOR_PASSWORD_HASH ends them all). Forms carry a
per-session CSRF token; failed logins are throttled per client address (an IPv6 client's /64)
and in total (behind a proxy, set TRUSTED_PROXY_COUNT so the address is the client's, not the
proxy's).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash

from sipguard.errors import Disabled, Throttled, ValidationError
from sipguard.monitoring import analytics, chart, metrics
from sipguard.store import Handoff, now_utc
from webhooks.context import runtime

bp = Blueprint("monitor", __name__, template_folder="templates")

SESSION_KEY = "monitor_session"
FINGERPRINT_KEY = "monitor_fingerprint"
SESSION_MAX_AGE = timedelta(hours=8)  # from login, not renewed by activity
CSRF_KEY = "monitor_csrf"
# Failed logins per client address per 5 minutes, counted in the store: one limit for every
# worker and instance.
LOGIN_LIMIT, LOGIN_WINDOW = 5, timedelta(minutes=5)
LOGIN_LIMIT_ALL = 50  # from every address together: a spread-out guesser is throttled too
RECENT_HANDOFFS = 50
ERROR_SHOWN = 200  # characters of a handoff's last error on the page
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


# -- /metrics -----------------------------------------------------------------------------------


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition, for a scraper holding METRICS_TOKEN as a bearer token."""
    token = runtime().settings.metrics_token
    if token is None:
        raise Disabled(
            "metrics are not served here: set METRICS_TOKEN, or METRICS_BIND to serve them "
            "on an internal address"
        )
    sent = request.headers.get("Authorization", "")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        response = Response(
            '{"error": "bearer token required"}\n', 401, mimetype="application/json"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    rt = runtime()
    agents = rt.voice.agent_names()
    quarantine = metrics.QuarantineCollector(
        agents, lambda: set(rt.store.quarantined_agents(agents))
    )
    body, content_type = metrics.render([quarantine])
    return Response(body, 200, content_type=content_type)


# -- /monitor -----------------------------------------------------------------------------------


def _password_hash() -> str:
    value = runtime().settings.monitor_password_hash
    if value is None:
        raise Disabled("the monitor page is off: set MONITOR_PASSWORD_HASH (see README)")
    return value


def _csrf() -> str:
    token = session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def _check_csrf() -> None:
    sent = request.form.get("csrf", "")
    if not hmac.compare_digest(sent.encode(), _csrf().encode()):
        abort(400, description="the form expired; reload the page and try again")


def _client() -> str:
    """The throttle's key: the client address, an IPv6 client's whole /64.

    The peer address, or the client's when TRUSTED_PROXY_COUNT lets ProxyFix set it.
    """
    raw = request.remote_addr or "-"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _fingerprint(password_hash: str) -> str:
    """Tie a session to the configured hash: changing MONITOR_PASSWORD_HASH ends every session."""
    key = runtime().settings.secret_key.encode()
    return hmac.new(key, password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def _signed_in(expected: str) -> bool:
    session_id, fingerprint = session.get(SESSION_KEY), session.get(FINGERPRINT_KEY)
    if not isinstance(session_id, str) or not isinstance(fingerprint, str):
        return False
    if not hmac.compare_digest(fingerprint, _fingerprint(expected)):
        return False
    return runtime().store.admin_session_valid(session_id, SESSION_MAX_AGE)


@bp.route("/monitor/login", methods=["GET", "POST"])
def login() -> Any:
    """Ask for the admin password; on success start a session (server-side, 8 h at most)."""
    expected = _password_hash()
    error = None
    if request.method == "POST":
        _check_csrf()
        store, client = runtime().store, _client()
        if (
            store.login_failures(client, LOGIN_WINDOW) >= LOGIN_LIMIT
            or store.login_failures(None, LOGIN_WINDOW) >= LOGIN_LIMIT_ALL
        ):
            raise Throttled("too many failed logins; wait a few minutes")
        # Counted before the check, so parallel guesses cannot slip past the limit.
        store.record_login_failure(client, keep=LOGIN_WINDOW)
        if check_password_hash(expected, request.form.get("password", "")):
            store.forget_login_failures(client)
            session.clear()
            session.permanent = True
            session[SESSION_KEY] = store.open_admin_session(SESSION_MAX_AGE)
            session[FINGERPRINT_KEY] = _fingerprint(expected)
            return redirect(url_for("monitor.page"))
        error = "wrong password"
    status = 401 if error else 200
    return render_template("login.html", csrf=_csrf(), error=error), status


@bp.post("/monitor/logout")
def logout() -> Any:
    """End the session, on the server too."""
    _check_csrf()
    session_id = session.get(SESSION_KEY)
    if isinstance(session_id, str):
        runtime().store.close_admin_session(session_id)
    session.clear()
    return redirect(url_for("monitor.login"))


def _handoff_row(handoff: Handoff) -> dict[str, Any]:
    """What the page shows of a handoff: no summary, and its fields' names without values."""
    error = handoff.error or ""
    return {
        "created_at": handoff.created_at,
        "id": handoff.id,
        "call_uuid": handoff.call_uuid,
        "group": handoff.group_name,
        "state": handoff.state,
        "field_names": sorted(handoff.fields),
        "attempts": [
            {
                "attempt": attempt.attempt,
                "agents": list(attempt.agents),
                "outcome": attempt.outcome or "ringing",
                "code": attempt.code,
            }
            for attempt in handoff.attempts
        ],
        "error": error if len(error) <= ERROR_SHOWN else error[: ERROR_SHOWN - 1] + "…",
    }


@bp.get("/monitor")
def page() -> Any:
    """Recent calls and handoffs, failures by IP with a chart, likely lockouts, warnings."""
    if not _signed_in(_password_hash()):
        return redirect(url_for("monitor.login"))
    raw_since = request.args.get("since", "1h")
    try:
        span = analytics.parse_span(raw_since)
    except ValidationError:
        raw_since, span = "1h", timedelta(hours=1)
    rt = runtime()
    until = now_utc()
    since = until - span
    report = analytics.report(rt.store, since, until)
    width, slices = analytics.timeline(report.failures, since, until)
    return render_template(
        "monitor.html",
        report=report,
        since_text=raw_since,
        chart=chart.build(slices, width, since),
        calls=analytics.recent_calls(rt.store),
        hangups=analytics.recent_hangups(rt.store),
        handoffs=[_handoff_row(handoff) for handoff in rt.store.recent_handoffs(RECENT_HANDOFFS)],
        quarantined=sorted(
            rt.store.quarantined_agents(rt.voice.agent_names()).values(),
            key=lambda health: health.agent,
        ),
        csrf=_csrf(),
        iso=lambda value: value.isoformat(sep=" ", timespec="seconds") if value else "",
    )
