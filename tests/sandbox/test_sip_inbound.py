"""The sandbox over real SIP, with SIPp as the caller (a UAC someone else wrote): every inbound
rule of Plivo's SIP-authentication page (docs/plivo.md, SIP authentication) through
sandbox/sip_server.py, and the transactions a real caller needs (a lost 200, CANCEL, BYE).

SIPp and the sandbox's SIP front bind 127.0.0.x only; each SIPp run is bounded by -timeout and
-m, and the front is stopped by its fixture.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.sip_peers import sipp_command
from sandbox.sip_server import SipServer
from sipguard.calls.causes import AUTH_CREDENTIAL, AUTH_IP_ACL, AUTH_IP_ACL_AND_CREDENTIAL
from tests.support.config import DATA
from tests.support.sandbox import APP_ID, CALLER_PASSWORD, World, callback_forms, hangup_form
from tests.support.tools import require_programs

SCENARIOS = DATA / "sipp"
T1 = 0.05  # seconds: retransmissions come quickly, the 64*T1 timeouts after 3.2 s
CALLER_IP = "127.0.0.2"
OTHER_IP = "127.0.0.3"
NUMBER = "14155550199"  # +14155550199 is mapped to APP_ID in tests/data/sandbox.toml
WRONG_PASSWORD = "Wrong-Passw0rd-99"


@pytest.fixture
def sipp() -> str:
    return require_programs("REQUIRE_SIP", "sipp", install="make sip")["sipp"]


@pytest.fixture
def front(world: World) -> Iterator[SipServer]:
    with SipServer(world.sandbox, "127.0.0.1", 0, t1=T1) as server:
        yield server


def _run(
    sipp: str,
    front: SipServer,
    scenario: str,
    tmp_path: Path,
    *,
    ip: str = CALLER_IP,
    service: str = APP_ID,
    caller: str = "sip:frontdesk@pbx.example.test",
    password: str | None = None,
    calls: int = 1,
    via: str | None = None,
    background: bool = False,
) -> Any:
    """Run one SIPp scenario against the front (or start it, `background`): a CompletedProcess
    (or a Popen); SIPp exits 0 when every call followed the scenario."""
    command = sipp_command(
        sipp, (front.host, front.port), SCENARIOS / scenario, ip=ip, service=service,
        caller=caller, logs=tmp_path, password=password, calls=calls, via=via,
    )  # fmt: skip
    if background:
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=30, cwd=tmp_path, check=False
    )


def _ok(result: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    errors = tmp_path / "sipp-errors.log"
    detail = (
        errors.read_text(errors="replace")[-3000:] if errors.exists() else result.stdout[-3000:]
    )
    assert result.returncode == 0, detail


def _assert_refused(world: World) -> None:
    """No answer callback; the call ended sip_auth_failed 4210."""
    assert callback_forms(world, "/answer") == []
    hangup = hangup_form(world)
    assert (hangup["HangupCauseName"], hangup["HangupCauseCode"]) == ("sip_auth_failed", "4210")


def test_ip_acl_pass_then_the_caller_hangs_up(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_IP_ACL, allow=(f"{CALLER_IP}/32",))
    _ok(_run(sipp, front, "call.xml", tmp_path), tmp_path)
    (answer,) = callback_forms(world, "/answer")
    assert answer["SIPAuthType"] == AUTH_IP_ACL
    assert answer["SIPSourceIP"] == CALLER_IP
    assert "SIPAuthUser" not in answer
    hangup = hangup_form(world)
    assert (hangup["CallUUID"], hangup["HangupSource"]) == (answer["CallUUID"], "Caller")
    assert hangup["CallStatus"] == "completed"


def test_ip_acl_fail_is_judged_on_the_source_address(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    # SIPp's Via names the allowed 127.0.0.3; the datagram comes from 127.0.0.2, which is not
    # allowed. The 403 reaches SIPp because the front answers the source, not the Via.
    world.protect(AUTH_IP_ACL, allow=(f"{OTHER_IP}/32",))
    _ok(_run(sipp, front, "refused.xml", tmp_path, via=OTHER_IP), tmp_path)
    _assert_refused(world)


def test_credential_right_password(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_CREDENTIAL)
    _ok(_run(sipp, front, "auth_call.xml", tmp_path, password=CALLER_PASSWORD), tmp_path)
    (answer,) = callback_forms(world, "/answer")
    assert (answer["SIPAuthType"], answer["SIPAuthUser"]) == (AUTH_CREDENTIAL, "frontdesk")
    assert hangup_form(world)["HangupSource"] == "Caller"
    assert world.sandbox.lockouts() == []


def test_credential_wrong_password(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_CREDENTIAL)
    _ok(_run(sipp, front, "auth_refused.xml", tmp_path, password=WRONG_PASSWORD), tmp_path)
    _assert_refused(world)


def test_ip_acl_and_credential_needs_both(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_IP_ACL_AND_CREDENTIAL, allow=(f"{CALLER_IP}/32",))
    # The wrong source is refused before any challenge, even with the right password.
    _ok(_run(sipp, front, "refused.xml", tmp_path, ip=OTHER_IP), tmp_path)
    _ok(_run(sipp, front, "auth_refused.xml", tmp_path, password=WRONG_PASSWORD), tmp_path)
    assert callback_forms(world, "/answer") == []
    _ok(_run(sipp, front, "auth_call.xml", tmp_path, password=CALLER_PASSWORD), tmp_path)
    (answer,) = callback_forms(world, "/answer")
    assert answer["SIPAuthType"] == AUTH_IP_ACL_AND_CREDENTIAL
    assert (answer["SIPAuthUser"], answer["SIPSourceIP"]) == ("frontdesk", CALLER_IP)


def test_lockout_at_the_tenth_failure_and_its_end_after_60_s(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_CREDENTIAL)
    _ok(_run(sipp, front, "auth_refused.xml", tmp_path, password=WRONG_PASSWORD, calls=9), tmp_path)
    assert world.sandbox.lockouts() == []
    _ok(_run(sipp, front, "auth_refused.xml", tmp_path, password=WRONG_PASSWORD), tmp_path)
    assert [lock.ip for lock in world.sandbox.lockouts()] == [CALLER_IP]
    # Locked out: 403 at once, no challenge, even with the right password; other IPs go on.
    _ok(_run(sipp, front, "refused.xml", tmp_path, password=CALLER_PASSWORD), tmp_path)
    _ok(
        _run(sipp, front, "auth_call.xml", tmp_path, ip=OTHER_IP, password=CALLER_PASSWORD),
        tmp_path,
    )
    world.clock.advance(59)
    _ok(_run(sipp, front, "refused.xml", tmp_path, password=CALLER_PASSWORD), tmp_path)
    world.clock.advance(1)
    _ok(_run(sipp, front, "auth_call.xml", tmp_path, password=CALLER_PASSWORD), tmp_path)
    assert [a["SIPSourceIP"] for a in callback_forms(world, "/answer")] == [OTHER_IP, CALLER_IP]


def test_phone_number_request_uri_runs_no_sip_auth(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_CREDENTIAL)  # a challenge would fail: SIPp has no password here
    caller = "sip:trunk@legacy.example.net"  # tests/data/voice.toml speaks to it, then hangs up
    _ok(_run(sipp, front, "sandbox_bye.xml", tmp_path, service=NUMBER, caller=caller), tmp_path)
    (answer,) = callback_forms(world, "/answer")
    assert not {"SIPAuthType", "SIPAuthUser"} & answer.keys()
    assert answer["From"] == caller
    # The XML spoke and hung up: the sandbox sent the BYE SIPp answered.
    assert hangup_form(world)["HangupSource"] != "Caller"


def test_unknown_application_is_404(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    _ok(_run(sipp, front, "not_found.xml", tmp_path, service="29999999999999999999"), tmp_path)
    assert world.http.sent == []


def test_a_lost_200_is_sent_again(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_IP_ACL, allow=(f"{CALLER_IP}/32",))
    _ok(_run(sipp, front, "lost_200.xml", tmp_path), tmp_path)
    log = (tmp_path / "sipp-messages.log").read_text(errors="replace")
    received = [part for part in log.split("message received")[1:] if "CSeq: 1 INVITE" in part]
    assert sum("SIP/2.0 200 OK" in part for part in received) >= 2  # the 200 came again
    assert len(callback_forms(world, "/answer")) == 1  # decided once
    assert hangup_form(world)["HangupSource"] == "Caller"


class _GatedClient:
    """The app's test client, holding the answer callback until `release` (a slow app)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.release = threading.Event()

    def open(self, path: str, **kwargs: Any) -> Any:
        if path.startswith("/answer"):
            self.release.wait(10)
        return self._client.open(path, **kwargs)


def test_cancel_before_the_answer_is_487(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_IP_ACL, allow=(f"{CALLER_IP}/32",))
    gate = _GatedClient(world.http.client)
    world.http.client = gate  # type: ignore[assignment]
    try:
        _ok(_run(sipp, front, "cancel.xml", tmp_path), tmp_path)
    finally:
        gate.release.set()
    # The app answered late; the call was cancelled, so the sandbox ends it as the caller's.
    assert hangup_form(world)["HangupSource"] == "Caller"


def test_the_ai_hanging_up_sends_the_caller_a_bye(
    sipp: str, front: SipServer, world: World, tmp_path: Path
) -> None:
    world.protect(AUTH_IP_ACL, allow=(f"{CALLER_IP}/32",))
    process = _run(sipp, front, "sandbox_bye.xml", tmp_path, background=True)
    try:
        deadline = time.monotonic() + 20
        while not world.sandbox.calls and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until SIPp's INVITE has made a call
        (call,) = world.sandbox.calls.values()
        assert world.sandbox.wait(call.uuid, 5).state == "parked"  # the simulated AI holds it
        world.sandbox.hang_up(call.uuid)  # `sipguard sandbox hangup`: the sandbox's side ends it
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert process.returncode == 0, output[-3000:]
    assert hangup_form(world)["CallUUID"] == call.uuid
