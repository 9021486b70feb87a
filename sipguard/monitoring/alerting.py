"""When the callbacks raise an alert: a source IP probably locked out, a burst of refused
signatures, a SIP call without SIPAuthType. (An agent's quarantine raises its own, in the
store's transaction.) Each runs after its callback is stored; the store keeps one alert per
condition, subject and window, and does nothing when no receiver is configured."""

from __future__ import annotations

from datetime import datetime

from sipguard.calls.forms import Hangup
from sipguard.monitoring import lockout
from sipguard.notify import alerts
from sipguard.store import Store

# A lockout in force now began at most DURATION ago, and its failures lie within WINDOW of that.
_LOOK_BACK = lockout.WINDOW + lockout.DURATION


def probable_lockout(store: Store, ip: str) -> lockout.Lockout | None:
    """Return the lockout Plivo's rule puts `ip` under now, from its stored failures."""
    now = store.now()
    failures = ((ip, at) for at in store.auth_failures_from(ip, now - _LOOK_BACK))
    active = [found for found in lockout.lockouts(failures) if found.active(now)]
    return active[-1] if active else None


def after_hangup(store: Store, hangup: Hangup) -> None:
    """Alert when this failed inbound call's source IP is probably locked out now."""
    ip = hangup.sip_source_ip
    if not store.alerting.active or hangup.auth_failure is None or not ip:
        return
    if hangup.direction == "outbound":
        return
    found = probable_lockout(store, ip)
    if found is not None:
        store.raise_alert(alerts.lockout(ip, found.until, found.failures))


def after_refusal(store: Store, minute: datetime, reason: str) -> None:
    """Alert when the refused callbacks of `minute` reach ALERT_REFUSED_PER_MINUTE."""
    if not store.alerting.active:
        return
    threshold = store.alerting.refused_per_minute
    total = store.refused_in_minute(minute)
    if total >= threshold:
        store.raise_alert(alerts.refused_burst(total, minute, threshold, reason))


def after_auth_not_running(store: Store, route: str) -> None:
    """Alert that SIP calls reach `route` (the route and rule, never the caller) unauthenticated."""
    store.raise_alert(alerts.auth_not_running(route))
