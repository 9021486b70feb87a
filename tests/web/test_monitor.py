"""/metrics and /monitor via the test client: each has its own guard, never a Plivo signature."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.security import check_password_hash, generate_password_hash

from app import create_app
from sipguard.errors import ConfigError
from sipguard.store import HandoffRequest, admin_sessions, signature_rejections
from sipguard.store.handoffs import request_hash
from tests.support.config import ALL_CANARIES, TOKEN
from tests.support.metrics import metric_total
from tests.support.queries import stored_hangup
from tests.support.signing import SignedPost, inbound, make_signed_post
from webhooks.monitor import ERROR_SHOWN, LOGIN_LIMIT_ALL

METRICS_TOKEN = "metrics-token-0123456789abcdef"
ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture
def monitored(app_config: dict[str, str]) -> Any:
    application = create_app(
        {
            **app_config,
            "METRICS_TOKEN": METRICS_TOKEN,
            "MONITOR_PASSWORD_HASH": generate_password_hash(ADMIN_PASSWORD),
        }
    )
    yield application
    application.extensions["sipguard"].store.dispose()


def _login(client: Any, password: str = ADMIN_PASSWORD) -> Any:
    page = client.get("/monitor/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    return client.post("/monitor/login", data={"csrf": csrf.group(1), "password": password})


# -- /metrics -----------------------------------------------------------------------------------


def test_metrics_are_off_without_a_token(client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 404
    assert "METRICS_TOKEN" in response.get_json()["error"]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-wrong-token", f"Basic {METRICS_TOKEN}", "Bearer "]
)
def test_metrics_need_the_bearer_token(monitored: Flask, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = monitored.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_plivo_signature_does_not_open_metrics(monitored: Flask) -> None:
    signed = make_signed_post(monitored.test_client())
    assert signed("/metrics", {}, method="GET").status_code == 401


def test_metrics_count_callbacks_failures_and_rejections(monitored: Flask) -> None:
    client = monitored.test_client()
    signed = make_signed_post(client)

    def scrape() -> str:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 200
        return response.get_data(as_text=True)

    before = scrape()
    for index in range(3):
        assert signed("/answer", inbound(SIPAuthType="ip_acl")).status_code == 200
        failure = inbound(
            CallUUID=f"fail-{index}",
            HangupCauseName="sip_auth_failed",
            HangupCauseCode="4210",
            SIPSourceIP="198.51.100.7",
        )
        assert signed("/hangup", failure).status_code == 200
    assert signed("/hangup", inbound(), token="forged-token-000").status_code == 403
    replayed = inbound(CallUUID="replay-1")
    assert signed("/hangup", replayed, nonce="n-1").status_code == 200
    assert signed("/hangup", replayed, nonce="n-1").status_code == 403
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    assert delta("sipguard_callbacks_total", route="hangup", status="200") == 4
    assert delta("sipguard_callbacks_total", route="answer", status="200") == 3
    assert delta("sipguard_auth_failures_total", cause="sip_auth_failed", code="4210") == 3
    assert delta("sipguard_signature_rejections_total", reason="V3 signature does not match") == 1
    assert delta("sipguard_signature_rejections_total", reason="replayed") == 1
    assert delta("sipguard_callback_seconds_count", route="answer") == 3
    for secret in (*ALL_CANARIES, TOKEN, METRICS_TOKEN):
        assert secret not in after


def test_refused_callbacks_are_counted_per_minute_in_the_store(
    monitored: Flask,
) -> None:
    signed = make_signed_post(monitored.test_client())
    for _ in range(3):
        signed("/answer", inbound(), token="forged-token-000")
    rows = monitored.extensions["sipguard"].store.query(signature_rejections.select())
    assert [(r["route"], r["reason"], r["count"]) for r in rows] == [
        ("answer", "V3 signature does not match", 3)
    ]


# -- /monitor -----------------------------------------------------------------------------------


def test_monitor_is_off_without_a_password_hash(client) -> None:
    assert client.get("/monitor").status_code == 404
    assert client.get("/monitor/login").status_code == 404


def test_anonymous_visits_go_to_the_login_page(monitored: Flask) -> None:
    response = monitored.test_client().get("/monitor")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/monitor/login")


def test_a_plivo_signature_is_not_a_login(monitored: Flask) -> None:
    signed = make_signed_post(monitored.test_client())
    response = signed("/monitor", {}, method="GET")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/monitor/login")


def test_wrong_password_is_refused_and_throttled(monitored: Flask) -> None:
    client = monitored.test_client()
    for _ in range(5):
        response = _login(client, "not the password")
        assert response.status_code == 401
        assert b"wrong password" in response.data
    assert _login(client, ADMIN_PASSWORD).status_code == 429  # throttled even when right
    assert client.get("/monitor").status_code == 302


def test_login_needs_the_forms_csrf_token(monitored: Flask) -> None:
    client = monitored.test_client()
    client.get("/monitor/login")
    response = client.post("/monitor/login", data={"csrf": "guess", "password": ADMIN_PASSWORD})
    assert response.status_code == 400
    assert client.get("/monitor").status_code == 302


def test_page_after_login_shows_calls_lockouts_and_no_secrets(
    monitored: Flask,
) -> None:
    client = monitored.test_client(use_cookies=True)
    signed: SignedPost = make_signed_post(client)
    signed("/answer", inbound(CallUUID="seen-call", SIPAuthType="ip_acl"))
    for index in range(10):
        signed(
            "/hangup",
            inbound(
                CallUUID=f"brute-{index}",
                HangupCauseName="sip_auth_failed",
                HangupCauseCode="4210",
                SIPSourceIP="203.0.113.66",
            ),
        )
    signed("/answer", inbound(CallUUID="nr", From="sip:x@203.0.113.9"))  # no SIPAuthType
    response = _login(client)
    assert response.status_code == 302
    page = client.get("/monitor?since=1h")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "seen-call" in text
    assert 'class="lock"' in text and "203.0.113.66 locked out until" in text
    assert "arrived without SIPAuthType" in text
    assert "is probably locked out" not in text  # listed once, under lockouts, not as a warning
    assert "brute-3" in text and 'class="failed"' in text  # the failed calls' hangups
    assert text.count('class="bar"') >= 1
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for secret in (*ALL_CANARIES, TOKEN, METRICS_TOKEN):
        assert secret not in text
    logout_csrf = re.search(r'name="csrf" value="([^"]+)"', text)
    assert logout_csrf is not None
    client.post("/monitor/logout", data={"csrf": logout_csrf.group(1)})
    assert client.get("/monitor").status_code == 302


SUMMARY = "Jane Roe wants a refund for order 4417"
FIELD_VALUES = ("T4417secret", "GoldTier9")


def _handoff(store: Any, key_id: str, call_uuid: str, **fields: str) -> str:
    request = HandoffRequest(
        api_key_id=key_id,
        call_uuid=call_uuid,
        group_name="support",
        request_hash=request_hash({"call_uuid": call_uuid}),
        summary=SUMMARY,
        fields=fields,
        whisper=True,
    )
    return str(store.create_handoff(request).handoff.id)


def _section(text: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', text, re.DOTALL)
    assert found is not None
    return found.group(1)


def test_recent_handoffs_show_outcomes_never_the_summary_or_field_values(
    monitored: Flask,
) -> None:
    """Each handoff: created, id, call, group, state, attempts with outcome and code, last
    error; of its fields only the names."""
    store = monitored.extensions["sipguard"].store
    key_id = store.create_api_key("monitor-ai").key.id
    failed = _handoff(store, key_id, "ho-call-failed", Ticket=FIELD_VALUES[0], Tier=FIELD_VALUES[1])
    store.start_attempt(failed, 0, ["alice", "bob"])
    store.end_attempt(failed, 0, "sip_auth_failed", 4240)
    store.start_attempt(failed, 1, ["carol"])
    store.end_attempt(failed, 1, "no-answer")
    store.transition(failed, "failed", error="Plivo said <b>call not found</b> " + "x" * 400)
    ringing = _handoff(store, key_id, "ho-call-ringing")
    store.start_attempt(ringing, 0, ["dave"])
    client = monitored.test_client()
    anonymous = client.get("/monitor", follow_redirects=True).get_data(as_text=True)
    assert failed not in anonymous and "ho-call-failed" not in anonymous
    _login(client)
    page = client.get("/monitor").get_data(as_text=True)
    rows = {
        row_id: row
        for row_id, row in re.findall(r'<tr class="handoff[^"]*" id="([^"]+)">(.*?)</tr>', page)
    }
    assert set(rows) == {failed, ringing}
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[failed], re.DOTALL)
    assert cells[1:5] == [failed, "ho-call-failed", "support", "failed"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\+00:00)?", cells[0])
    assert "#0 alice, bob: sip_auth_failed (4240)" in cells[5]
    assert "#1 carol: no-answer<" in cells[5]
    assert cells[6] == "Ticket, Tier"
    assert cells[7].startswith("Plivo said &lt;b&gt;call not found&lt;/b&gt; xxx")  # escaped
    shown = cells[7].replace("&lt;", "<").replace("&gt;", ">")
    assert shown.endswith("…") and len(shown) == ERROR_SHOWN
    assert 'class="handoff failed"' in page  # highlighted like a failed call
    assert "#0 dave: ringing" in rows[ringing]
    for private in (SUMMARY, *FIELD_VALUES):
        assert private not in page


def test_no_handoffs_yet_says_so(monitored: Flask) -> None:
    client = monitored.test_client()
    _login(client)
    handoffs = _section(client.get("/monitor").get_data(as_text=True), "handoffs")
    assert "No handoffs yet." in handoffs


def test_a_bad_window_falls_back_to_one_hour(monitored: Flask) -> None:
    client = monitored.test_client()
    _login(client)
    response = client.get("/monitor?since=forever")
    assert response.status_code == 200
    assert "last 1h" in response.get_data(as_text=True)


# -- CLI: report, retention, password hash --------------------------------------------------------


def _brute_force(signed: SignedPost, ip: str, count: int) -> None:
    for index in range(count):
        form = inbound(
            CallUUID=f"{ip}-{index}",
            HangupCauseName="sip_auth_failed",
            HangupCauseCode="4210",
            SIPSourceIP=ip,
            SIPAuthUser="pbx-trunk",
        )
        assert signed("/hangup", form).status_code == 200


def test_report_auth_failures_table_and_json(app: Flask, runner, signed_post: SignedPost) -> None:
    _brute_force(signed_post, "203.0.113.66", 10)
    _brute_force(signed_post, "2001:db8::5", 2)
    table = runner.invoke(args=["report", "auth-failures", "--since", "1h"])
    assert table.exit_code == 0, table.output
    assert "203.0.113.66" in table.output and "ACTIVE" in table.output
    assert "sip_auth_failed 4210 (inbound)" in table.output
    as_json = runner.invoke(args=["report", "auth-failures", "--since", "1h", "--json"])
    data = json.loads(as_json.output)
    assert data["total_failures"] == 12
    assert data["by_source_ip"][0] == {
        "key": "203.0.113.66",
        "count": 10,
        "last": data["by_source_ip"][0]["last"],
    }
    assert data["by_sip_user"][0]["key"] == "pbx-trunk"
    assert [item["ip"] for item in data["lockouts"] if item["active"]] == ["203.0.113.66"]


def test_report_refuses_a_bad_window(runner) -> None:
    result = runner.invoke(args=["report", "auth-failures", "--since", "yesterday"])
    assert result.exit_code == 2
    assert "--since" in result.output


def test_purge_events_keeps_the_retention_period(
    app: Flask, runner, signed_post: SignedPost
) -> None:
    _brute_force(signed_post, "198.51.100.1", 2)
    kept = runner.invoke(args=["db", "purge-events"])
    assert kept.exit_code == 0
    assert "kept 30 day(s); purged 0 call_events, 0 hangups" in kept.output
    assert stored_hangup(app.extensions["sipguard"].store, "198.51.100.1-0") is not None


def test_hash_password_reads_stdin_and_refuses_short_ones(runner) -> None:
    result = runner.invoke(args=["monitor", "hash-password"], input=ADMIN_PASSWORD + "\n")
    assert result.exit_code == 0
    digest = result.output.strip()
    assert check_password_hash(digest, ADMIN_PASSWORD)
    assert ADMIN_PASSWORD not in result.output
    short = runner.invoke(args=["monitor", "hash-password"], input="short\n")
    assert short.exit_code == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 16"),
        ({"MONITOR_PASSWORD_HASH": "hunter2hunter2"}, "must be a password hash, not a password"),
        ({"RETENTION_DAYS": "0"}, "RETENTION_DAYS must be at least 1"),
    ],
)
def test_unusable_monitoring_settings_refuse_to_start(
    app_config: dict[str, str], overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        create_app({**app_config, **overrides})
    assert "hunter2hunter2" not in str(caught.value)


def test_login_throttle_is_shared_by_every_worker(app_config: dict[str, str]) -> None:
    """Two apps on one database (two workers or instances) count failed logins together."""
    config = {**app_config, "MONITOR_PASSWORD_HASH": generate_password_hash(ADMIN_PASSWORD)}
    workers = [create_app(config), create_app(config)]
    try:
        for attempt in range(5):
            client = workers[attempt % 2].test_client()
            assert _login(client, "not the password").status_code == 401
        for worker in workers:
            assert _login(worker.test_client(), ADMIN_PASSWORD).status_code == 429
    finally:
        for worker in workers:
            worker.extensions["sipguard"].store.dispose()


# -- sessions and throttle, after review ---------------------------------------------------------


def _page_status(client: Any) -> int:
    return int(client.get("/monitor").status_code)


def test_logout_ends_the_session_even_for_a_copied_cookie(monitored: Flask) -> None:
    client = monitored.test_client()
    assert _login(client).status_code == 302
    stolen = client.get_cookie("sipguard_session")
    assert stolen is not None
    page = client.get("/monitor").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    client.post("/monitor/logout", data={"csrf": csrf.group(1)})
    thief = monitored.test_client()
    thief.set_cookie("sipguard_session", stolen.value)
    assert _page_status(thief) == 302


def test_sessions_end_after_eight_hours_whatever_the_activity(monitored: Flask) -> None:
    client = monitored.test_client()
    _login(client)
    assert _page_status(client) == 200
    store = monitored.extensions["sipguard"].store
    with store.engine.begin() as conn:
        conn.execute(
            admin_sessions.update().values(
                created_at=admin_sessions.c.created_at - timedelta(hours=8, seconds=1)
            )
        )
    assert _page_status(client) == 302


def test_a_new_password_hash_ends_every_session(
    monitored: Flask, app_config: dict[str, str]
) -> None:
    client = monitored.test_client()
    _login(client)
    cookie = client.get_cookie("sipguard_session")
    assert cookie is not None
    rotated = create_app(
        {**app_config, "MONITOR_PASSWORD_HASH": generate_password_hash("a brand new password")}
    )
    try:
        other = rotated.test_client()
        other.set_cookie("sipguard_session", cookie.value)
        assert _page_status(other) == 302
    finally:
        rotated.extensions["sipguard"].store.dispose()


def test_failed_logins_from_one_ipv6_64_count_together(monitored: Flask) -> None:
    for host in range(1, 6):
        client = monitored.test_client()
        client.environ_base["REMOTE_ADDR"] = f"2001:db8:1:2::{host:x}"
        assert _login(client, "not the password").status_code == 401
    neighbour = monitored.test_client()
    neighbour.environ_base["REMOTE_ADDR"] = "2001:db8:1:2:ffff::9"
    assert _login(neighbour, "not the password").status_code == 429
    elsewhere = monitored.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "2001:db8:1:3::1"
    assert _login(elsewhere, "not the password").status_code == 401


def test_failed_logins_from_everywhere_have_a_ceiling(monitored: Flask) -> None:
    for host in range(LOGIN_LIMIT_ALL):
        client = monitored.test_client()
        client.environ_base["REMOTE_ADDR"] = f"198.51.100.{host}"
        assert _login(client, "not the password").status_code == 401
    late = monitored.test_client()
    late.environ_base["REMOTE_ADDR"] = "203.0.113.200"
    assert _login(late, ADMIN_PASSWORD).status_code == 429


def test_a_window_past_the_limit_falls_back_and_the_report_refuses_it(
    monitored: Flask, runner
) -> None:
    client = monitored.test_client()
    _login(client)
    assert client.get("/monitor?since=999999d").status_code == 200
    result = runner.invoke(args=["report", "auth-failures", "--since", "999999d"])
    assert result.exit_code == 2
    assert "at most 366 days" in result.output


def test_gunicorn_start_clears_only_metric_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"x")
    (shared / "sipguard.sqlite").write_bytes(b"keep me")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    spec = importlib.util.spec_from_file_location(
        "gunicorn_conf", Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
    )
    assert spec is not None and spec.loader is not None
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    config.on_starting(None)
    assert sorted(p.name for p in shared.iterdir()) == ["sipguard.sqlite"]


# -- agent quarantine ---------------------------------------------------------------------------


def _quarantine(app: Flask, agent: str) -> None:
    policy = app.extensions["sipguard"].voice.quarantine
    for _ in range(policy.after):
        app.extensions["sipguard"].store.agent_failed(agent, "sip_auth_failed", policy)


def test_metrics_show_a_quarantine_gauge_for_every_configured_agent(monitored: Flask) -> None:
    _quarantine(monitored, "alice")
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    text = monitored.test_client().get("/metrics", headers=headers).get_data(as_text=True)
    gauges = dict(
        re.findall(r'^sipguard_agent_quarantined\{agent="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    )
    assert gauges == {"alice": "1.0", "bob": "0.0", "carol": "0.0", "dave": "0.0", "erin": "0.0"}


def test_monitor_lists_quarantined_agents_with_cause_and_since(monitored: Flask) -> None:
    client = monitored.test_client()
    _login(client)
    assert "No agent is quarantined." in client.get("/monitor").get_data(as_text=True)
    _quarantine(monitored, "bob")
    page = client.get("/monitor").get_data(as_text=True)
    section = page.split('<section id="quarantine">', 1)[1].split("</section>", 1)[0]
    assert "bob skipped until" in section and "3 sip_auth_failed in a row since" in section
    assert "alice" not in section


def test_metrics_carry_the_rules_series_from_the_first_scrape(monitored: Flask) -> None:
    """The label sets the alerting rules read exist at 0 before any event, so rate() sees the
    first one; the not-running counter has no labels at all."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    text = monitored.test_client().get("/metrics", headers=headers).get_data(as_text=True)
    for series in (
        'sipguard_auth_failures_total{cause="sip_auth_failed",code="4210"}',
        'sipguard_auth_failures_total{cause="sip_auth_failed",code="4240"}',
        'sipguard_auth_failures_total{cause="sip_auth_timeout",code="4250"}',
        'sipguard_signature_rejections_total{reason="no Plivo signature header"}',
        'sipguard_signature_rejections_total{reason="V3 signature does not match"}',
        'sipguard_signature_rejections_total{reason="replayed"}',
        "sipguard_sip_auth_not_running_total",
    ):
        assert re.search(rf"^{re.escape(series)} \S+$", text, re.MULTILINE), series
