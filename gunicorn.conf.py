"""gunicorn settings, read automatically from the working directory (Procfile, make run).

Its variables are rows of sipguard.settings.SETTINGS, parsed and defaulted there like the app's.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sipguard.settings import SETTINGS


def _setting(name: str) -> Any:
    return SETTINGS[name].read(os.environ)


bind = _setting("BIND") or f"0.0.0.0:{_setting('PORT')}"
workers = _setting("WEB_CONCURRENCY")
# Above 1, gunicorn runs gthread workers: while one thread waits on PostgreSQL's commit, the
# others answer, and PostgreSQL can group the commits. The store's pool holds as many connections.
threads = _setting("WEB_THREADS")
timeout = 30
accesslog = "-"
# %(U)s is the path without its query: handoff tokens travel in the query and stay out of logs.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)sB %(M)sms'
# The control socket lives at one per-user path, so two instances on a host would collide.
control_socket_disable = True

# Prometheus multiprocess mode: every worker writes its samples under this directory and /metrics
# adds them up. It must be set before any worker imports prometheus_client, i.e. here.
_OWN_METRICS_DIR = _setting("PROMETHEUS_MULTIPROC_DIR") is None
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sipguard-metrics-")
_METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server: Any) -> None:
    """Start from empty metric files: samples of a previous run must not be added in.

    Only prometheus-client's own *.db files go: the directory may be one the operator shares.
    """
    _METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in _METRICS_DIR.glob("*.db"):
        stale.unlink()


def when_ready(server: Any) -> None:
    """With METRICS_BIND (host:port), serve /metrics from the master on an internal address."""
    address = _setting("METRICS_BIND")
    if not address:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    host, _, port = address.rpartition(":")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    server.log.info("metrics on http://%s/metrics", address)


def child_exit(server: Any, worker: Any) -> None:
    """Fold a dead worker's live gauges away (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory this configuration made for itself."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)
