"""Load and faults against real gunicorn on real PostgreSQL: nothing acknowledged is lost,
nothing is stored twice, the caller always hears XML, and no secret leaks anywhere."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from devtools.harness import Server
from tests.support.config import ALL_CANARIES, SECRET_KEY, TOKEN
from tests.support.servers import METRICS_TOKEN, Link, get, post_signed, start
from tests.support.signing import inbound

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TOTAL_REQUESTS = int(os.environ.get("RELIABILITY_HANGUPS", "50000"))
DUPLICATE_SHARE = 0.1  # a tenth of the requests re-send a CallUUID already acknowledged
CONCURRENCY = 32
MAX_ATTEMPTS = 30


def _hangup_form(call_uuid: str, index: int) -> dict[str, str]:
    form = inbound(CallUUID=call_uuid, CallStatus="completed", Duration=str(index % 300))
    if index % 7 == 0:
        form.update(
            HangupCauseName="sip_auth_failed",
            HangupCauseCode="4210",
            SIPSourceIP=f"198.51.100.{index % 50}",
        )
    else:
        form.update(HangupCause="NORMAL_CLEARING", HangupCauseName="Normal Hangup")
    return form


class Plivo:
    """Delivers callbacks the way Plivo does: retries on 5xx or a broken connection."""

    def __init__(self, instances: list[Server]) -> None:
        self.instances = instances
        self.acknowledged: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.bodies: list[bytes] = []  # non-XML answers, checked for secrets
        self._lock = threading.Lock()

    def deliver(self, path: str, form: dict[str, str], pick: int) -> int:
        """Send until acknowledged (2xx) or refused (4xx); return the final status."""
        for attempt in range(MAX_ATTEMPTS):
            instance = self.instances[(pick + attempt) % len(self.instances)]
            try:
                status, body, content_type = post_signed(instance.base, path, form)
            except OSError:
                self._count("connection_errors")
                time.sleep(0.05 * (attempt + 1))
                continue
            self._count("attempts")
            if "xml" not in content_type:
                with self._lock:
                    self.bodies.append(body)
            if status >= 500:
                self._count(f"status_{status}")
                time.sleep(0.05 * (attempt + 1))
                continue
            if status < 300 and path == "/hangup":
                with self._lock:
                    self.acknowledged.add(form["CallUUID"])
            self._count(f"status_{status}")
            return status
        self._count("gave_up")
        return 0

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1


def _rows(database_url: str, query: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)))
    finally:
        engine.dispose()


def _assert_no_secret_anywhere(
    database_url: str, instances: list[Server], plivo: Plivo
) -> dict[str, int]:
    """No canary password or token in logs, stored rows, metrics or non-XML answers."""
    secrets = (*ALL_CANARIES, TOKEN, SECRET_KEY, METRICS_TOKEN)
    logs = "".join(instance.log.read_text(errors="replace") for instance in instances)
    rows = [
        repr(tuple(row))
        for table in ("call_events", "hangups", "signature_rejections", "nonces")
        for row in _rows(database_url, f"SELECT * FROM {table}")
    ]
    status, metrics = get(
        instances[0].base + "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert status == 200
    haystacks = {
        "log": logs,
        "rows": "\n".join(rows),
        "metrics": metrics.decode(),
        "answers": b"\n".join(plivo.bodies).decode(errors="replace"),
    }
    for where, haystack in haystacks.items():
        for secret in secrets:
            assert secret not in haystack, f"a secret leaked into {where}"
    return {
        "log_lines_checked": logs.count("\n"),
        "rows_checked": len(rows),
        "non_xml_answers_checked": len(plivo.bodies),
        "leaks": 0,
    }


def test_hangups_survive_a_killed_worker_across_two_instances(
    postgres_url: str, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """≥50k hangups, duplicates and retries mixed in, 32 at a time, two instances sharing
    PostgreSQL, one worker SIGKILLed mid-run: stored = acknowledged, nothing twice."""
    first = start(postgres_url, tmp_path / "a.log")
    second = start(postgres_url, tmp_path / "b.log")
    instances = [first, second]
    plivo = Plivo(instances)
    unique = int(TOTAL_REQUESTS * (1 - DUPLICATE_SHARE))
    plan: list[tuple[str, int]] = [(f"loss-{i:06d}", i) for i in range(unique)]
    rng = random.Random(20261129)
    # Duplicates re-send CallUUIDs from earlier in the plan (Plivo retrying after a lost 200).
    for _ in range(TOTAL_REQUESTS - unique):
        at = rng.randrange(unique // 2, len(plan))
        plan.insert(at, plan[rng.randrange(0, at)])
    killed: list[int] = []
    done = 0
    done_lock = threading.Lock()

    def one(item: tuple[str, int]) -> int:
        nonlocal done
        call_uuid, index = item
        status = plivo.deliver("/hangup", _hangup_form(call_uuid, index), index)
        with done_lock:
            done += 1
            if not killed and done >= len(plan) // 3:
                victim = first.workers()[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
        return status

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            statuses = Counter(pool.map(one, plan, chunksize=64))
        elapsed = time.monotonic() - started
        stored, distinct = _rows(
            postgres_url, "SELECT count(*), count(DISTINCT call_uuid) FROM hangups"
        )[0]
        stored_ids = {row[0] for row in _rows(postgres_url, "SELECT call_uuid FROM hangups")}
        secrets = _assert_no_secret_anywhere(postgres_url, instances, plivo)
    finally:
        first.stop()
        second.stop()
    lost = len(plivo.acknowledged - stored_ids)
    figures.update(
        requests=len(plan),
        attempts=plivo.counts["attempts"],
        connection_errors=plivo.counts["connection_errors"],
        status_5xx=sum(n for key, n in plivo.counts.items() if key.startswith("status_5")),
        killed_worker=killed[0] if killed else None,
        acknowledged=len(plivo.acknowledged),
        stored=stored,
        lost=lost,
        duplicated=stored - distinct,
        unacknowledged_stored=len(stored_ids - plivo.acknowledged),
        seconds=round(elapsed, 1),
        requests_per_second=round(len(plan) / elapsed),
        **secrets,
    )
    assert killed, "no worker was killed"
    assert statuses == Counter({200: len(plan)})
    assert len(plivo.acknowledged) == unique
    assert lost == 0
    assert stored == distinct == unique


def test_database_outage_answers_xml_refuses_hangups_then_stores_every_retry(
    postgres_url: str, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """The database link is cut mid-run: /answer keeps answering XML, /hangup answers 503; once
    the link is back, Plivo's retries of every refused hangup are all stored."""
    link = Link()
    through_link = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{link.port}")
    instance = start(through_link, tmp_path / "outage.log")
    plivo = Plivo([instance])
    answers: Counter[str] = Counter()
    refused: list[dict[str, str]] = []
    sent: set[str] = set()

    def answer(index: int, phase: str) -> None:
        form = inbound(CallUUID=f"{phase}-answer-{index}", SIPAuthType="credential")
        form.update(SIPAuthUser="night", SIPSourceIP="203.0.113.5")
        status, body, content_type = post_signed(instance.base, "/answer", form)
        ok = status == 200 and "xml" in content_type and b"<Response>" in body
        answers[f"{phase}_{'xml' if ok else status}"] += 1
        if "xml" not in content_type:
            plivo.bodies.append(body)

    def both(phase: str) -> Any:
        def run(index: int) -> None:
            answer(index, phase)
            hangup(index, phase)

        return run

    def hangup(index: int, phase: str) -> None:
        form = _hangup_form(f"{phase}-hangup-{index}", index)
        sent.add(form["CallUUID"])
        status, body, content_type = post_signed(instance.base, "/hangup", form)
        answers[f"{phase}_hangup_{status}"] += 1
        if "xml" not in content_type:
            plivo.bodies.append(body)
        if status == 200:
            plivo.acknowledged.add(form["CallUUID"])
        else:
            refused.append(form)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(both("before"), range(200)))
            link.cut()
            outage_started = time.monotonic()
            list(pool.map(both("outage"), range(300)))
            outage = time.monotonic() - outage_started
            link.restore()
            retried = list(pool.map(lambda form: plivo.deliver("/hangup", form, 0), list(refused)))
            list(pool.map(both("after"), range(200)))
        stored_ids = {row[0] for row in _rows(postgres_url, "SELECT call_uuid FROM hangups")}
        secrets = _assert_no_secret_anywhere(postgres_url, [instance], plivo)
    finally:
        instance.stop()
        link.close()
    figures.update(
        answers_during_outage=answers["outage_xml"] + answers["outage_500"],
        answered_xml_during_outage=answers["outage_xml"],
        hangups_during_outage=300,
        hangups_refused_503=answers["outage_hangup_503"],
        retried=len(retried),
        hangups_sent=len(sent),
        stored=len(stored_ids),
        lost=len(sent - stored_ids),
        outage_seconds=round(outage, 1),
        **secrets,
    )
    assert answers["before_xml"] == answers["after_xml"] == 200
    assert answers["outage_xml"] == 300, answers
    assert answers["outage_hangup_503"] == 300, answers
    assert set(retried) == {200}
    assert sent == stored_ids
