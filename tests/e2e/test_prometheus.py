"""The alerting rules in deploy/prometheus: promtool's checks and unit tests, then Debian's
Prometheus scraping the app under real gunicorn and evaluating them. Loopback only."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from devtools.harness import ROOT, Server, free_port, request, start
from tests.support import servers
from tests.support.signing import hangup
from tests.support.tools import require_programs

RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "sipguard-rules.yml"
RULE_TESTS = RULES_DIR / "sipguard-rules.test.yml"
EXAMPLE = RULES_DIR / "prometheus.example.yml"
EXAMPLE_TOKEN_PATH = "/etc/prometheus/sipguard-metrics.token"
ALERTS = {
    "SipGuardTargetDown",
    "SipGuardSourceProbablyLockedOut",
    "SipGuardAgentCredentialDrift",
    "SipGuardSignatureRejectionBurst",
    "SipGuardSipAuthNotRunning",
    "SipGuardSlowCallbacks",
}
SCRAPE_TIMEOUT = 20.0  # seconds to wait for a scrape or an evaluation to show what was sent


def _programs() -> dict[str, str]:
    return require_programs(
        "REQUIRE_PROMETHEUS", "prometheus", "promtool", install="make prometheus"
    )


def _promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    promtool = _programs()["promtool"]
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` finds every alert and no error."""
    done = _promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_the_rules_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires on its series and stays quiet at its boundary."""
    done = _promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each rule in the file is named by the unit tests, expected both to fire and not to."""
    rules = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    assert rules == ALERTS
    checks = re.findall(
        r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text(), re.MULTILINE
    )
    assert {name for name, quiet in checks if quiet} == ALERTS
    assert {name for name, quiet in checks if not quiet} == ALERTS


def test_the_example_config_passes_promtool(tmp_path: Path) -> None:
    """The example scrape config, with its token file present, loads the rules."""
    token = tmp_path / "sipguard-metrics.token"
    token.write_text("a-metrics-token-of-sixteen-or-more\n")
    config = EXAMPLE.read_text()
    assert EXAMPLE_TOKEN_PATH in config
    (tmp_path / "prometheus.yml").write_text(config.replace(EXAMPLE_TOKEN_PATH, str(token)))
    (tmp_path / RULES.name).write_text(RULES.read_text())
    done = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


# -- Prometheus scraping the app ---------------------------------------------------------------


@contextmanager
def _prometheus(tmp_path: Path, target: str) -> Iterator[Server]:
    """Run Debian's prometheus as a plain binary on loopback, scraping `target` every second."""
    binary = _programs()["prometheus"]
    token = tmp_path / "metrics.token"
    token.write_text(servers.METRICS_TOKEN + "\n")
    token.chmod(0o600)
    config = {  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "sipguard",
                "authorization": {"type": "Bearer", "credentials_file": str(token)},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config, indent=2))
    port = free_port()
    argv = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # Debian's defaults point under /etc/prometheus: nothing there is needed.
        f"--web.console.templates={tmp_path / 'consoles'}",
        f"--web.console.libraries={tmp_path / 'console_libraries'}",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    server = start(
        "prometheus",
        argv,
        env=env,
        log=tmp_path / "prometheus.log",
        port=port,
        health_path="/-/ready",
        timeout=20,
    )
    try:
        yield server
    finally:
        server.stop()


def _api(prometheus: Server, path: str, **params: str) -> Any:
    """GET Prometheus' HTTP API and return its `data`."""
    query = f"?{urlencode(params)}" if params else ""
    reply = request("GET", f"{prometheus.base}/api/v1/{path}{query}")
    assert reply.status == 200, reply.body[:500]
    answer = json.loads(reply.body)
    assert answer["status"] == "success", answer
    return answer["data"]


def _value(prometheus: Server, promql: str) -> float | None:
    """Evaluate an instant query whose answer is one number (None when it is empty)."""
    result = _api(prometheus, "query", query=promql)["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def _wait(what: str, check: Callable[[], bool], prometheus: Server) -> None:
    """Poll `check` until it holds, for at most SCRAPE_TIMEOUT seconds."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {SCRAPE_TIMEOUT:g} s for {what}\n{prometheus.log_tail()}")
        time.sleep(0.25)


def _inbound_auth_failure() -> dict[str, str]:
    """The hangup of an inbound call Plivo refused for bad SIP credentials (4210)."""
    return hangup(
        CallStatus="failed",
        HangupCause="sip_auth_failed",
        HangupCauseName="sip_auth_failed",
        HangupCauseCode="4210",
        HangupSource="Plivo",
        SIPSourceIP="203.0.113.66",
        SIPAuthType="credential",
        SIPAuthUser="frontdesk",
        Duration="0",
        BillDuration="0",
    )


class _Traffic:
    """Callbacks sent to the app, counted as the metrics should count them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sent: dict[str, int] = {}

    def _count(self, kind: str, status: int, expected: int) -> None:
        assert status == expected, f"{kind}: {status}"
        self.sent[kind] = self.sent.get(kind, 0) + 1

    def hangups(self, count: int, form: Callable[[], dict[str, str]], kind: str) -> None:
        for _ in range(count):
            status, _, _ = servers.post_signed(self.base, "/hangup", form())
            self._count(kind, status, 200)

    def agent_failures(self, count: int, cause: str, status_name: str) -> None:
        """Dial actions of an agent leg that ended in `cause` (4240 or 4250)."""
        for _ in range(count):
            call = str(uuid.uuid4())
            form = {
                "CallUUID": call,
                "DialALegUUID": call,
                "Direction": "inbound",
                "From": "sip:frontdesk@203.0.113.10",
                "To": "sip:12345678901234567890@app.plivo.com",
                "CallStatus": "in-progress",
                "DialStatus": status_name,
                "DialHangupCause": cause,
            }
            path = "/dial-action?group=support&attempt=0"
            status, _, _ = servers.post_signed(self.base, path, form)
            self._count(cause, status, 200)

    def auth_not_running(self, count: int) -> None:
        """Answer requests of SIP calls that arrived without SIPAuthType."""
        for _ in range(count):
            form = {
                "CallUUID": str(uuid.uuid4()),
                "From": "sip:frontdesk@203.0.113.10",
                "To": "+14155550123",
                "Direction": "inbound",
                "CallStatus": "ringing",
                "Event": "StartApp",
            }
            status, body, _ = servers.post_signed(self.base, "/answer", form)
            assert b"<Hangup" in body
            self._count("not_running", status, 200)

    def unsigned(self, count: int) -> None:
        """Hangups with no Plivo signature at all."""
        for _ in range(count):
            reply = request(
                "POST",
                f"{self.base}/hangup",
                body=urlencode(hangup()),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            self._count("unsigned", reply.status, 403)


def _expected_counts(sent: dict[str, int]) -> dict[str, int]:
    """PromQL queries over the real metric names, and the number each must return."""
    inbound = sent["inbound_4210"]
    return {
        'sum(sipguard_auth_failures_total{cause="sip_auth_failed", code="4210"})': inbound,
        'sum(sipguard_auth_failures_total{cause="sip_auth_failed", code="4240"})': sent[
            "sip_auth_failed"
        ],
        'sum(sipguard_auth_failures_total{cause="sip_auth_timeout", code="4250"})': sent[
            "sip_auth_timeout"
        ],
        "sum(sipguard_auth_failures_total)": (
            inbound + sent["sip_auth_failed"] + sent["sip_auth_timeout"]
        ),
        'sum(sipguard_signature_rejections_total{reason="no Plivo signature header"})': sent[
            "unsigned"
        ],
        'sum(sipguard_callbacks_total{route="hangup", status="200"})': inbound + sent["normal"],
        'sum(sipguard_callbacks_total{route="hangup", status="403"})': sent["unsigned"],
        'sum(sipguard_callbacks_total{route="answer", decision="reject"})': sent["not_running"],
        "sum(sipguard_sip_auth_not_running_total)": sent["not_running"],
        'sum(sipguard_callbacks_total{route="dial_action", status="200"})': (
            sent["sip_auth_failed"] + sent["sip_auth_timeout"]
        ),
        'sum(sipguard_callback_seconds_count{route="hangup"})': (
            inbound + sent["normal"] + sent["unsigned"]
        ),
    }


def _counts_match(prometheus: Server, sent: dict[str, int]) -> Callable[[], bool]:
    def check() -> bool:
        expected = _expected_counts(sent)
        return {query: _value(prometheus, query) for query in expected} == expected

    return check


def _alerts(prometheus: Server) -> set[tuple[str, str, str]]:
    """Return (alert name, state, cause-or-empty) of every pending or firing alert."""
    return {
        (alert["labels"]["alertname"], alert["state"], alert["labels"].get("cause", ""))
        for alert in _api(prometheus, "alerts")["alerts"]
    }


@pytest.mark.slow
def test_prometheus_scrapes_the_app_and_evaluates_the_rules(tmp_path: Path) -> None:
    """Counts sent through two gunicorn workers come back exactly through PromQL, and the
    rules, loaded by a real Prometheus, go pending and firing on that traffic."""
    _programs()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    app = servers.start(f"sqlite:///{app_dir / 'sipguard.db'}", app_dir / "gunicorn.log")
    try:
        assert len(app.workers()) == 2
        traffic = _Traffic(app.base)
        # Every series exists before the first scrape, so later bursts show in increase().
        traffic.hangups(4, _inbound_auth_failure, "inbound_4210")
        traffic.hangups(3, hangup, "normal")
        traffic.agent_failures(1, "sip_auth_failed", "failed")
        traffic.agent_failures(1, "sip_auth_timeout", "timeout")
        traffic.auth_not_running(1)
        traffic.unsigned(2)

        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        with _prometheus(prom_dir, f"127.0.0.1:{app.port}") as prometheus:
            _wait("a successful scrape", lambda: _value(prometheus, "up") == 1.0, prometheus)
            assert _value(prometheus, 'up{job="sipguard"}') == 1.0
            _wait("the first counts", _counts_match(prometheus, dict(traffic.sent)), prometheus)

            groups = _api(prometheus, "rules")["groups"]
            assert [group["name"] for group in groups] == ["sipguard"]
            assert groups[0]["file"] == str(RULES)
            rules = groups[0]["rules"]
            assert {rule["name"] for rule in rules} == ALERTS
            for rule in rules:
                assert rule["type"] == "alerting"
                assert rule["labels"]["severity"] in {"critical", "warning"}
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert _alerts(prometheus) == set()

            # A lockout-sized burst, agent credential drift, forgeries, unauthenticated calls.
            traffic.hangups(10, _inbound_auth_failure, "inbound_4210")
            traffic.agent_failures(3, "sip_auth_failed", "failed")
            traffic.unsigned(20)
            traffic.auth_not_running(1)
            _wait("the new counts", _counts_match(prometheus, dict(traffic.sent)), prometheus)
            expected = {
                ("SipGuardSourceProbablyLockedOut", "firing", ""),
                ("SipGuardAgentCredentialDrift", "pending", "sip_auth_failed"),
                ("SipGuardSignatureRejectionBurst", "pending", ""),
                ("SipGuardSipAuthNotRunning", "pending", ""),
            }
            _wait("the alerts", lambda: _alerts(prometheus) == expected, prometheus)
            evaluated = _api(prometheus, "rules")["groups"][0]["rules"]
            assert [rule["health"] for rule in evaluated] == ["ok"] * len(ALERTS)
    finally:
        app.stop()
