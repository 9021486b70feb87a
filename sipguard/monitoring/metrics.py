"""Prometheus metrics for the callbacks, correct under gunicorn's several workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it before any worker starts), each
worker writes its samples to files there and `render` adds them up across workers; without it
(tests, `flask run`) the process's own registry is used. Labels hold only bounded values:
routes, decisions from the voice config, Plivo's cause names and codes, and this app's fixed
signature-rejection reasons. Never a number, a user or an address.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CALLBACKS = Counter(
    "sipguard_callbacks",
    "Plivo callbacks answered, by route, decision and HTTP status.",
    ["route", "decision", "status"],
)
AUTH_FAILURES = Counter(
    "sipguard_auth_failures",
    "SIP-auth failures seen in hangup and Dial-action callbacks (4210 inbound, 4240/4250 "
    "towards an agent).",
    ["cause", "code"],
)
SIGNATURE_REJECTIONS = Counter(
    "sipguard_signature_rejections",
    "Callbacks refused because their Plivo signature was missing, wrong or replayed.",
    ["reason"],
)
LATENCY = Histogram(
    "sipguard_callback_seconds",
    "Time to answer a callback, signature check and database write included.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


# Each label set's child, looked up once: `labels()` validates and locks on every call. The
# children are the registry's own (it hands out the same object each time), so this holds no
# value of its own and the multiprocess files see exactly the same writes.
_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def observe(
    route: str,
    decision: str,
    status: int,
    seconds: float,
    *,
    auth_failures: Sequence[tuple[str, int]] = (),
    rejection: str | None = None,
) -> None:
    """Count one answered callback, the auth failures it reported, and a refusal."""
    _child(CALLBACKS, route, decision, str(status)).inc()
    _child(LATENCY, route).observe(seconds)
    for cause, code in auth_failures:
        _child(AUTH_FAILURES, cause, str(code)).inc()
    if rejection is not None:
        _child(SIGNATURE_REJECTIONS, rejection).inc()


def render() -> tuple[bytes, str]:
    """Return the exposition text and its content type, summed over workers when needed."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
