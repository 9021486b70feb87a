"""Prometheus metrics for the callbacks, correct under gunicorn's several workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it before any worker starts), each
worker writes its samples to files there and `render` adds them up across workers; without it
(tests, `flask run`) the process's own registry is used. Labels hold only bounded values:
routes, decisions from the voice config, Plivo's cause names and codes, and this app's fixed
signature-rejection reasons. Never a number, a user or an address.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterator, Sequence
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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sipguard.errors import StoreUnavailable

log = logging.getLogger("sipguard.metrics")

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
SIP_AUTH_NOT_RUNNING = Counter(
    "sipguard_sip_auth_not_running",
    "SIP calls that reached /answer without SIPAuthType: Plivo ran no SIP authentication.",
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


# The label sets the alerting rules read, created at 0 so rate() and increase() see the first
# event (a series that appears at 1 has no earlier sample to count from).
KNOWN_AUTH_FAILURES = (
    ("sip_auth_failed", "4210"),
    ("sip_auth_failed", "4240"),
    ("sip_auth_timeout", "4250"),
)
KNOWN_REJECTIONS = ("no Plivo signature header", "V3 signature does not match", "replayed")
for _cause, _code in KNOWN_AUTH_FAILURES:
    AUTH_FAILURES.labels(_cause, _code)
for _reason in KNOWN_REJECTIONS:
    SIGNATURE_REJECTIONS.labels(_reason)


def observe(
    route: str,
    decision: str,
    status: int,
    seconds: float,
    *,
    auth_failures: Sequence[tuple[str, int]] = (),
    rejection: str | None = None,
    auth_not_running: bool = False,
) -> None:
    """Count one answered callback, the auth failures it reported, a refusal, and a SIP call
    without SIPAuthType."""
    _child(CALLBACKS, route, decision, str(status)).inc()
    if auth_not_running:
        SIP_AUTH_NOT_RUNNING.inc()
    _child(LATENCY, route).observe(seconds)
    for cause, code in auth_failures:
        _child(AUTH_FAILURES, cause, str(code)).inc()
    if rejection is not None:
        _child(SIGNATURE_REJECTIONS, rejection).inc()


class QuarantineCollector(Collector):
    """`sipguard_agent_quarantined{agent}`, 0 or 1 for each configured agent, read at scrape
    time from the store (shared by every worker and instance, so never summed over workers).

    Bounded: the label takes the voice config's agent names only. When the store cannot answer,
    the gauge is left out of that scrape rather than reported as 0.
    """

    def __init__(self, agents: Sequence[str], quarantined: Callable[[], Collection[str]]) -> None:
        self.agents = agents
        self.quarantined = quarantined

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            now = self.quarantined()
        except StoreUnavailable as exc:
            log.warning("agent quarantines not read for /metrics: %s", exc.message)
            return
        gauge = GaugeMetricFamily(
            "sipguard_agent_quarantined",
            "1 while the agent is skipped after consecutive SIP-auth failures (4240/4250).",
            labels=["agent"],
        )
        for agent in self.agents:
            gauge.add_metric([agent], 1.0 if agent in now else 0.0)
        yield gauge


def render(extra: Sequence[Collector] = ()) -> tuple[bytes, str]:
    """Return the exposition text and its content type, summed over workers when needed.

    `extra` collectors (read at scrape time, e.g. from the store) are added as they are.
    """
    own = CollectorRegistry()
    for collector in extra:
        own.register(collector)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(own)
        return generate_latest(own), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY) + generate_latest(own), CONTENT_TYPE_LATEST
