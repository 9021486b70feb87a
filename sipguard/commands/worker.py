"""`sipguard worker`: deliver the outcome webhooks waiting in the outbox.

It builds the app from its settings, as the server does, and runs the delivery loop over the
app's store until SIGTERM or Ctrl-C; the Procfile's `worker:` line and `make run` start it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import timedelta

import click

from sipguard.commands.context import app_runtime
from sipguard.notify.delivery import Delivery, Schedule
from sipguard.notify.model import webhook_secret
from sipguard.notify.worker import DEFAULT_BATCH, Worker


def schedule(pauses: Sequence[int]) -> Schedule:
    """Return the retry schedule of WEBHOOK_RETRY_SECONDS: each pause in turn, then the last."""
    steps = tuple(timedelta(seconds=pause) for pause in pauses)
    return Schedule(steps=steps[:-1], every=steps[-1])


@click.command("worker")
@click.option("--once", is_flag=True, help="Deliver the events due now, then exit.")
@click.option(
    "--batch",
    type=click.IntRange(1, 100),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Events claimed at a time.",
)
def worker(once: bool, batch: int) -> None:
    """Deliver the outcome webhooks and alerts in the outbox: signed, retried, until SIGTERM or
    Ctrl-C.

    Several workers, on one host or many, may share a database: an event is leased to one of
    them at a time (WEBHOOK_TIMEOUT_SECONDS, WEBHOOK_POLL_SECONDS, WEBHOOK_RETRY_SECONDS).
    """
    rt = app_runtime()
    settings = rt.settings
    delivery = Delivery(
        timeout=settings.webhook_timeout, schedule=schedule(settings.webhook_retry_seconds)
    )
    loop = Worker(
        rt.store,
        delivery,
        functools.partial(webhook_secret, settings.secret_key),
        batch=batch,
        poll=settings.webhook_poll,
        receivers=settings.alert_receivers(),
    )
    try:
        if once:
            attempted = total = loop.run_once()
            while attempted == batch:
                attempted = loop.run_once()
                total += attempted
            click.echo(f"attempted {total} webhook delivery(ies)")
            return
        with loop.signals():
            loop.run()
    finally:
        delivery.close()
