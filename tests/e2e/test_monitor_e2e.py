"""/metrics and /monitor against real gunicorn: counters summed over workers, and a real browser."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from werkzeug.security import generate_password_hash

from devtools.harness import Server, free_port
from sipguard.calls import signature
from tests.support.config import ALL_CANARIES, SECRET_KEY, TOKEN
from tests.support.metrics import metric_total
from tests.support.servers import start
from tests.support.signing import hangup

METRICS_TOKEN = "e2e-metrics-token-0123456789abcdef"
ADMIN_PASSWORD = "e2e admin password, correct horse"
ATTACKER_IP = "203.0.113.66"


@contextmanager
def _gunicorn(tmp_path: Path, workers: int, **extra: str) -> Iterator[Server]:
    """Start the app under gunicorn on SQLite in tmp_path; stop it afterwards."""
    instance = start(
        f"sqlite:///{tmp_path / 'sipguard.db'}", tmp_path / "gunicorn.log", workers=workers, **extra
    )
    try:
        yield instance
    finally:
        instance.stop()


def _auth_failure(ip: str) -> dict[str, str]:
    """An inbound call Plivo refused for bad SIP credentials (4210)."""
    return hangup(
        CallStatus="failed",
        HangupCause="sip_auth_failed",
        HangupCauseName="sip_auth_failed",
        HangupCauseCode="4210",
        HangupSource="Plivo",
        SIPSourceIP=ip,
        SIPAuthType="credential",
        SIPAuthUser="frontdesk",
        Duration="0",
        BillDuration="0",
    )


def _post_hangup(session: requests.Session, base: str, form: dict[str, str], forge: bool) -> int:
    """POST a hangup signed as Plivo would (or with a wrong signature); return the status."""
    url = f"{base}/hangup"
    params = {k: [v] for k, v in form.items()}
    headers = signature.signed_headers(TOKEN, "POST", url, params, uuid.uuid4().hex)
    if forge:
        headers[signature.V3_HEADER] = "Zm9yZ2VkLXNpZ25hdHVyZQ=="
    return session.post(url, data=form, headers=headers, timeout=10).status_code


def _send(base: str, jobs: list[tuple[dict[str, str], bool]], threads: int = 8) -> list[int]:
    """Send the hangups over `threads` concurrent keep-alive connections."""
    sessions = [requests.Session() for _ in range(threads)]
    try:
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(_post_hangup, sessions[i % threads], base, form, forge)
                for i, (form, forge) in enumerate(jobs)
            ]
            return [future.result() for future in futures]
    finally:
        for session in sessions:
            session.close()


def _worker_pids(metrics_dir: Path) -> set[str]:
    """PIDs of the workers that wrote counter samples (files named counter_<pid>.db)."""
    return {path.stem.rpartition("_")[2] for path in metrics_dir.glob("counter_*.db")}


@pytest.mark.slow
def test_metrics_add_up_across_two_gunicorn_workers(tmp_path: Path) -> None:
    """Counters written by two workers are summed by /metrics, which wants its bearer token."""
    with _gunicorn(tmp_path, workers=2, METRICS_TOKEN=METRICS_TOKEN) as server:
        sent = failures = forged = 0
        metrics_dir = server.metrics_dir
        assert metrics_dir is not None  # start_gunicorn always gives the workers one
        # Batches of concurrent requests until both workers have served some (normally one).
        for _ in range(5):
            jobs = [(hangup(), False) for _ in range(40)]
            jobs += [(_auth_failure("198.51.100.7"), False) for _ in range(12)]
            jobs += [(hangup(), True) for _ in range(8)]
            statuses = _send(server.base, jobs)
            assert statuses == [403 if forge else 200 for _, forge in jobs]
            sent += sum(1 for _, forge in jobs if not forge)
            failures += 12
            forged += 8
            if len(_worker_pids(metrics_dir)) >= 2:
                break
        assert len(_worker_pids(metrics_dir)) == 2, list(metrics_dir.iterdir())

        anonymous = requests.get(f"{server.base}/metrics", timeout=5)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = requests.get(
            f"{server.base}/metrics", headers={"Authorization": "Bearer not-the-token"}, timeout=5
        )
        assert wrong.status_code == 401

        response = requests.get(
            f"{server.base}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=5,
        )
        assert response.status_code == 200
        body = response.text
        ok = metric_total(body, "sipguard_callbacks_total", route="hangup", status="200")
        assert ok == sent
        assert (
            metric_total(body, "sipguard_callbacks_total", route="hangup", status="403") == forged
        )
        auth = metric_total(
            body, "sipguard_auth_failures_total", cause="sip_auth_failed", code="4210"
        )
        assert auth == failures
        assert metric_total(body, "sipguard_auth_failures_total") == failures
        assert metric_total(body, "sipguard_signature_rejections_total") == forged
        timed = metric_total(body, "sipguard_callback_seconds_count", route="hangup")
        assert timed >= sent
        assert timed == sent + forged  # refused callbacks are timed too
        assert TOKEN not in body and METRICS_TOKEN not in body


def _browser_or_skip() -> None:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed: `make browser` installs them"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_monitor_page_in_a_real_browser(tmp_path: Path) -> None:
    """Log in with the admin password in Chromium and see the lockout and the chart."""
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    password_hash = generate_password_hash(ADMIN_PASSWORD)
    with _gunicorn(tmp_path, workers=2, MONITOR_PASSWORD_HASH=password_hash) as server:
        jobs = [(_auth_failure(ATTACKER_IP), False) for _ in range(10)]
        jobs += [(_auth_failure("198.51.100.20"), False) for _ in range(3)]
        jobs += [(hangup(), False) for _ in range(3)]
        assert _send(server.base, jobs, threads=4) == [200] * len(jobs)

        # A Plivo signature is not an admin login.
        url = f"{server.base}/monitor"
        headers = signature.signed_headers(TOKEN, "GET", url, {}, uuid.uuid4().hex)
        signed = requests.get(url, headers=headers, allow_redirects=False, timeout=5)
        assert signed.status_code == 302
        assert signed.headers["Location"].endswith("/monitor/login")

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1600",
            f"--user-data-dir={tmp_path / 'chromium'}",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.set_page_load_timeout(15)
            wait = WebDriverWait(driver, 10)

            driver.get(url)
            assert driver.current_url == f"{server.base}/monitor/login"
            assert not driver.find_elements(By.ID, "failures-chart")

            driver.find_element(By.ID, "password").send_keys("not the password")
            driver.find_element(By.ID, "login").click()
            error = wait.until(ec.presence_of_element_located((By.ID, "login-error")))
            assert error.text == "wrong password"
            assert driver.current_url == f"{server.base}/monitor/login"

            driver.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
            driver.find_element(By.ID, "login").click()
            chart = wait.until(ec.presence_of_element_located((By.ID, "failures-chart")))
            assert driver.current_url == url

            bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
            assert bars
            assert any(float(bar.get_attribute("height") or 0) > 0 for bar in bars)
            assert any(bar.rect["height"] > 0 for bar in bars)  # drawn, not just declared

            locks = driver.find_elements(By.CSS_SELECTOR, "section#lockouts p.lock")
            assert [lock.text for lock in locks if ATTACKER_IP in lock.text]
            assert not [lock.text for lock in locks if "198.51.100.20" in lock.text]

            handoffs = driver.find_element(By.CSS_SELECTOR, "section#handoffs")
            assert "Recent handoffs" in handoffs.text and "No handoffs yet." in handoffs.text

            screenshot = tmp_path / "monitor.png"
            assert driver.save_screenshot(str(screenshot))
            assert screenshot.read_bytes().startswith(b"\x89PNG")
            assert screenshot.stat().st_size > 5_000

            page = driver.page_source
            for secret in (*ALL_CANARIES, TOKEN, SECRET_KEY, ADMIN_PASSWORD, password_hash):
                assert secret not in page
        finally:
            driver.quit()


@pytest.mark.slow
def test_metrics_bind_serves_every_workers_counters_on_an_internal_port(tmp_path: Path) -> None:
    """With METRICS_BIND, gunicorn's master serves the summed metrics there, no token needed;
    the public /metrics stays closed when no METRICS_TOKEN is set."""
    metrics_port = free_port()
    with _gunicorn(
        tmp_path, workers=2, METRICS_BIND=f"127.0.0.1:{metrics_port}", METRICS_TOKEN=""
    ) as server:
        jobs = [(hangup(), False) for _ in range(20)]
        assert _send(server.base, jobs) == [200] * 20
        internal = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert internal.status_code == 200
        counted = metric_total(internal.text, "sipguard_callbacks_total", route="hangup")
        assert counted == 20
        assert requests.get(f"{server.base}/metrics", timeout=5).status_code == 404
