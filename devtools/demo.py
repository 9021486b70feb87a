"""`make demo`: the app and the sandbox side by side, three scenarios played and checked.

Starts the app (gunicorn) and `sipguard sandbox serve` on free loopback ports with fresh secrets and
an empty SQLite database, protects the sample application with the project's own
`sipguard sipauth setup` (PLIVO_API_URL pointing at the sandbox), then plays:

1. a call from an allowed IP with good credentials: routed to the AI agent, handed over with
   `sipguard handoff` (the Transfer API) to the support group, whose first agent's PBX rejects the
   app's credentials (sip_auth_failed 4240) and whose second agent answers;
2. a call whose Request-URI is a phone number: SIP auth does not run, no SIPAuth* parameters;
3. eleven bad-password calls from one IP: the tenth starts a lockout, a good call is refused
   while it lasts (sandbox clock advanced 59 s), and passes once 60 s have gone by;
4. the AI's API: the demo, acting as the AI agent with a key from `sipguard api-key create`, hands
   a call to the support group with a summary, a field and a whisper: alice's PBX rejects the app's
   credentials (4240), bob hears the summary before he is bridged and answers;
5. the same to the overflow group, where nobody answers: the caller goes back to the AI's
   return_url with the outcome, instead of to a fallback;
6. when `sipp` and `kamailio` are installed, the story again over real SIP, with a second app and
   sandbox (`serve --sip-listen`): SIPp calls sip:{app_id}@app.plivo.com from 127.0.0.2, answers
   the sandbox's 407 with the credential `sipguard sipauth setup` made and is admitted; the app's
   answer dials alice, whose PBX is Kamailio on loopback (devtools/sip_peers.py), and Kamailio
   checks the app's digest; a wrong password is refused 403. Without the programs the run is
   skipped with a notice (a failed check when REQUIRE_SIP=1).

`sipguard worker` runs beside the app, and a receiver on loopback takes the outcome webhooks and
verifies each one with the `standardwebhooks` package (an independent implementation).

It prints every timeline and the app's auth-failure report, checks each step against Plivo's
SIP-authentication page (https://www.plivo.com/docs/voice/concepts/sip-authentication: the
SIPAuth* parameters, the 4210/4240 causes, the 10-failures-in-60-s lockout), and exits 0 only if
every check held. Run it from the repository root with the virtualenv's Python
(`.venv/bin/python -m devtools.demo`): it starts its processes with devtools.harness and runs the
`sipguard` console script installed beside that Python, as a user would. DEMO_KEEP=1 keeps the
working directory (logs, database).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from devtools.harness import ROOT, free_port, request, spawn, start, start_gunicorn
from devtools.receiver import Receiver
from devtools.sip_peers import Pbx, kamailio, sipp_command
from sandbox.client import SandboxClient
from sipguard.errors import ConfigError
from sipguard.plivo.sipauth import generate_password
from sipguard.settings import SETTINGS

APP_ID = "10000000000000000001"  # sandbox/sample.toml
URI = f"sip:{APP_ID}@app.plivo.com"
NUMBER_URI = "sip:+14155550199@app.plivo.com"
CALLER = "ai-frontline"
GOOD_IP, ATTACKER_IP, CARRIER_IP = "198.51.100.7", "198.51.100.66", "192.0.2.50"
ALLOW = ("198.51.100.0/24", "2001:db8:42::/48")
START_TIMEOUT = 30.0
WEBHOOK_WAIT = 30.0  # seconds the worker gets to deliver an outcome webhook
RETURN_URL = "https://ai-agent.example.com/plivo/return"  # under the sandbox's ai_urls
SUMMARY = "Jane Doe wants to move her delivery for order 4417 to Friday; identity checked."
# The installed console script, as users run it (beside this interpreter in the virtualenv).
SIPGUARD = str(Path(sys.executable).parent / "sipguard")
SIP_PROGRAMS = ("sipp", "kamailio")
SIP_HOST = "127.0.0.1"  # the sandbox's SIP front and Kamailio listen here
SIP_CALLER_IP = "127.0.0.2"  # SIPp calls from here: the only address the SIP run's ACL allows
SIP_T1 = "0.1"  # seconds: the SIP run's timers (a transaction gives up after 64*T1 = 6.4 s)
SIP_CALL_SECONDS = 20  # each SIPp call ends by then
SCENARIOS = ROOT / "tests" / "data" / "sipp"


class Checks:
    """Collect pass/fail lines; the demo's exit code is whether all passed."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def __call__(self, ok: bool, what: str) -> bool:
        self.count += 1
        print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


def _events(call: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [event for event in call.get("events", []) if event["kind"] == kind]


def _callback(call: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    return [event for event in _events(call, "callback") if event.get("callback") == name]


class Demo:
    """The two processes, their environment, and the steps."""

    allow: Sequence[str] = ALLOW  # the IP ACL `sipguard sipauth setup` creates
    sandbox_args: Sequence[str] = ()  # more options for `sipguard sandbox serve`
    outcome_webhooks = True  # run `sipguard worker` beside the app (the AI's handoff webhooks)

    def __init__(self, workdir: Path, check: Checks) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.app_port, self.sandbox_port = free_port(), free_port()
        self.caller_password = generate_password()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PLIVO_AUTH_ID": "MADEMO" + secrets.token_hex(7).upper(),
            "PLIVO_AUTH_TOKEN": secrets.token_urlsafe(30),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.app_port}",
            "PLIVO_API_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "VOICE_CONFIG": str(ROOT / "config" / "voice.sample.toml"),
            "SANDBOX_CONFIG": str(ROOT / "sandbox" / "sample.toml"),
            "DATABASE_URL": f"sqlite:///{workdir / 'demo.db'}",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
            "AGENT_ALICE_PASSWORD": generate_password(),
            "AGENT_BOB_PASSWORD": generate_password(),
            # Alice's PBX has a newer password than the app: its credentials get 4240.
            "SANDBOX_ALICE_PBX_PASSWORD": generate_password(),
            "DEMO_CALLER_PASSWORD": self.caller_password,
            "LOG_LEVEL": "WARNING",
            "WEBHOOK_POLL_SECONDS": "1",
            "WEBHOOK_RETRY_SECONDS": "1",
        }
        self.client = SandboxClient(
            self.env["PLIVO_API_URL"], self.env["PLIVO_AUTH_ID"], self.env["PLIVO_AUTH_TOKEN"]
        )
        self.check = check
        self.receiver = Receiver("/hooks")
        self.api_key = ""
        self.webhook_secret = ""

    # -- processes ------------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[None]:
        """Start the app, the sandbox and the worker; stop them however the demo ends."""
        app = start_gunicorn(
            "app",
            env=self.env,
            log=self.workdir / "app.log",
            port=self.app_port,
            timeout=START_TIMEOUT,
        )
        with app:
            sandbox = start(
                "sandbox",
                [
                    SIPGUARD,
                    "sandbox",
                    "serve",
                    "--port",
                    str(self.sandbox_port),
                    *self.sandbox_args,
                ],
                env=self.env,
                log=self.workdir / "sandbox.log",
                port=self.sandbox_port,
                health_path="/sandbox/healthz",
                timeout=START_TIMEOUT,
            )
            with sandbox, self.receiver:
                if not self.outcome_webhooks:
                    yield
                    return
                worker = spawn(
                    "worker", [SIPGUARD, "worker"], env=self.env, log=self.workdir / "worker.log"
                )
                with worker:
                    yield

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the `sipguard` command's commands against the sandbox."""
        return subprocess.run(
            [SIPGUARD, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # -- steps ----------------------------------------------------------------------------------

    def setup(self) -> None:
        _title("Set up: credential + IP ACL with the project's own `sipguard sipauth setup`")
        allow = [arg for cidr in self.allow for arg in ("--allow", cidr)]
        done = self.cli(
            "sipauth", "setup", "--app-id", APP_ID, "--mode", "ip_acl_and_credential", *allow,
            "--credential-user", CALLER, "--password-env", "DEMO_CALLER_PASSWORD",
        )  # fmt: skip
        print(done.stdout + done.stderr, end="")
        self.check(done.returncode == 0, "sipguard sipauth setup exits 0 against the sandbox")
        listed = self.cli("sipauth", "credential", "list", "--json")
        names = [c.get("username") for c in json.loads(listed.stdout or "[]")]
        self.check(names == [CALLER], f"the sandbox holds one credential, {CALLER}")
        self.check(
            self.caller_password not in listed.stdout + done.stdout + done.stderr,
            "no password in the CLI's output (the sandbox keeps HA1 only)",
        )

    def handoff_call(self) -> None:
        _title("1. Allowed IP, good credentials -> AI agent -> handoff to the support group")
        answer = self.client.call(
            GOOD_IP, URI, username=CALLER, password=self.caller_password,
            from_=f"sip:{CALLER}@{GOOD_IP}",
        )  # fmt: skip
        call = answer.get("call", {})
        print(call.get("text", ""))
        check = self.check
        check(answer.get("challenged") is True, "Plivo challenged with 407 (credential auth)")
        check(answer["status"] == 200, "ip_acl_and_credential passed: the call connected")
        sent = (_callback(call, "answer") or [{}])[0].get("sip", {})
        expected = {"SIPAuthType": "ip_acl_and_credential", "SIPAuthUser": CALLER}
        check(
            sent == {**expected, "SIPSourceIP": GOOD_IP},
            "answer_url got SIPAuthType, SIPAuthUser and SIPSourceIP",
        )
        check(call.get("state") == "parked", "the app routed the call to the AI agent")
        check(
            any(event.get("handoff_url") for event in _events(call, "ai")),
            "the AI agent was given a handoff_url",
        )
        uuid = str(answer.get("call_uuid"))
        done = self.cli("handoff", uuid, "support")
        print((done.stdout + done.stderr).strip())
        check(done.returncode == 0, "`sipguard handoff` moved the call with Plivo's Transfer API")
        call = self.client.timeline(uuid, wait=20)
        print(call.get("text", ""))
        legs = {event["address"]: event for event in _events(call, "leg")}
        alice = legs.get("sip:alice@pbx.example.com", {})
        bob = legs.get("sip:bob@pbx.example.com", {})
        check(
            (alice.get("cause"), alice.get("code")) == ("sip_auth_failed", 4240),
            "alice's PBX rejected the app's credentials: sip_auth_failed 4240",
        )
        check(bob.get("outcome") == "answered", "bob's PBX accepted the credentials and answered")
        actions = _callback(call, "action")
        check(
            [a.get("status") for a in actions] == [200, 200],
            "both Dial action callbacks were answered by the app (signed, accepted)",
        )
        hangup = call.get("hangup") or {}
        check(
            hangup.get("CallStatus") == "completed" and bool(_callback(call, "hangup")),
            "the call ended completed and the hangup callback was delivered",
        )
        secrets_seen = [self.env[k] for k in ("AGENT_ALICE_PASSWORD", "AGENT_BOB_PASSWORD")]
        check(
            not any(s in json.dumps(call) for s in secrets_seen),
            "no agent credentials in the timeline",
        )

    def _ai_call(self) -> str:
        """Place a good call that the sample config routes to the AI agent; return its UUID."""
        answer = self.client.call(
            GOOD_IP, URI, username=CALLER, password=self.caller_password,
            from_=f"sip:{CALLER}@{GOOD_IP}",
        )  # fmt: skip
        self.check(answer.get("call", {}).get("state") == "parked", "the AI agent has the call")
        return str(answer.get("call_uuid"))

    def _api(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call the app's /api/v1 as the AI does; return (status, JSON)."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            headers["Idempotency-Key"] = secrets.token_hex(8)
            data = json.dumps(body)
        reply = request(method, self.env["PUBLIC_BASE_URL"] + path, body=data, headers=headers)
        return reply.status, json.loads(reply.body or b"null")

    def _webhooks(self, handoff_id: str, types: list[str]) -> list[dict[str, Any]]:
        """Wait until the receiver has `types` for the handoff; return them, each verified."""
        verifier = Webhook(self.webhook_secret)
        deadline = time.monotonic() + WEBHOOK_WAIT
        while True:
            seen: list[dict[str, Any]] = []
            for received in list(self.receiver.requests):
                try:
                    event = verifier.verify(received.body, received.headers)
                except WebhookVerificationError:  # reported by the check on the types
                    seen.append({"type": "UNVERIFIED", "data": {}})
                    continue
                if event.get("data", {}).get("handoff_id") == handoff_id:
                    seen.append({**event, "webhook_id": received.webhook_id})
            got = [event["type"] for event in seen if event["type"] != "UNVERIFIED"]
            if all(kind in got for kind in types) or time.monotonic() > deadline:
                return seen
            time.sleep(0.2)

    def api_setup(self) -> None:
        _title("The AI's API key: sipguard api-key create, its webhooks to a loopback receiver")
        done = self.cli("api-key", "create", "demo-ai", "--callback-url", self.receiver.url)
        lines = dict(line.strip().split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        self.api_key = lines.get("API key", "").strip()
        self.webhook_secret = lines.get("webhook secret", "").strip()
        self.check(
            done.returncode == 0 and self.webhook_secret.startswith("whsec_"),
            "sipguard api-key create printed a key and a whsec_ webhook secret, once",
        )
        status, groups = self._api("GET", "/api/v1/groups")
        names = [group["name"] for group in (groups or {}).get("groups", [])]
        self.check(
            status == 200 and {"support", "overflow"} <= set(names),
            "GET /api/v1/groups lists the groups the AI may hand a call to",
        )

    def api_handoff(self) -> None:
        _title("4. The AI's API: a summary and a whisper; alice 4240, bob hears it and answers")
        check = self.check
        uuid = self._ai_call()
        status, handoff = self._api(
            "POST",
            "/api/v1/handoffs",
            {
                "call_uuid": uuid, "group": "support", "summary": SUMMARY,
                "fields": {"Ticket": "4417"}, "whisper": True, "on_failure": "return",
                "return_url": RETURN_URL,
            },
        )  # fmt: skip
        print(f"POST /api/v1/handoffs -> {status} {json.dumps(handoff)}")
        # The 202 shows the handoff as it is: the sandbox may have fetched the Transfer's URL
        # and started ringing before the API's answer was written (a loaded machine).
        check(
            status == 202 and handoff.get("state") in ("transferred", "ringing"),
            "202: the handoff is stored and Plivo (the sandbox) accepted the Transfer",
        )
        call = self.client.timeline(uuid, wait=20)
        print(call.get("text", ""))
        legs = {event["address"]: event for event in _events(call, "leg")}
        alice = legs.get("sip:alice@pbx.example.com", {})
        bob = legs.get("sip:bob@pbx.example.com", {})
        check(
            (alice.get("cause"), alice.get("code")) == ("sip_auth_failed", 4240),
            "alice's PBX rejected the app's credentials: sip_auth_failed 4240",
        )
        headers = bob.get("sip_headers", {})
        check(
            headers.get("X-PH-Ticket") == "4417" and "X-PH-Handoff" in headers,
            "bob's INVITE carried the AI's field and the handoff id as X-PH- headers",
        )
        heard = [e for e in _events(call, "confirm") if "bob" in json.dumps(e)]
        check(
            any(SUMMARY in json.dumps(e) for e in heard),
            "bob heard the AI's summary (confirmSound, the app's signed /whisper) first",
        )
        check(bob.get("outcome") == "answered", "bob answered and was bridged to the caller")
        status, found = self._api("GET", f"/api/v1/handoffs/{handoff.get('id')}")
        outcomes = [(a["outcome"], a["code"]) for a in (found or {}).get("attempts", [])]
        print(f"GET /api/v1/handoffs/{handoff.get('id')} -> {status} {json.dumps(found)}")
        check(
            found.get("state") == "connected"
            and outcomes == [("sip_auth_failed", 4240), ("answered", None)],
            "GET /api/v1/handoffs/{id}: connected; attempts sip_auth_failed 4240, answered",
        )
        self._check_webhooks(
            handoff.get("id", ""), ["handoff.transferred", "handoff.agent_answered"]
        )

    def api_return(self) -> None:
        _title("5. Nobody answers the overflow group: the caller goes back to the AI")
        check = self.check
        uuid = self._ai_call()
        status, handoff = self._api(
            "POST",
            "/api/v1/handoffs",
            {
                "call_uuid": uuid, "group": "overflow", "summary": SUMMARY,
                "on_failure": "return", "return_url": RETURN_URL,
            },
        )  # fmt: skip
        check(status == 202, "202: handed to the overflow group")
        call = self.client.timeline(uuid, wait=5)
        print(call.get("text", ""))
        legs = {event["address"]: event for event in _events(call, "leg")}
        check(
            legs.get("sip:carol@pbx.example.com", {}).get("outcome") == "no-answer",
            "carol's softphone rang out: no-answer",
        )
        back = [e for e in _events(call, "ai") if str(e.get("url", "")).startswith(RETURN_URL)]
        check(
            bool(back) and "outcome=no-answer" in str(back[-1].get("url")),
            "the caller is back with the AI at return_url, told the outcome (no-answer)",
        )
        status, found = self._api("GET", f"/api/v1/handoffs/{handoff.get('id')}")
        check(found.get("state") == "returned", "GET /api/v1/handoffs/{id}: returned")
        self._check_webhooks(handoff.get("id", ""), ["handoff.transferred", "handoff.returned"])
        ended = self.client.hang_up(uuid)
        check(ended.get("state") == "ended", "the caller hung up on the AI")
        logs = "".join(
            (self.workdir / name).read_text(errors="replace")
            for name in ("app.log", "worker.log", "sandbox.log")
        )
        check(
            SUMMARY not in logs and self.api_key not in logs,
            "neither the summary nor the API key is in the app's, worker's or sandbox's log",
        )

    def _check_webhooks(self, handoff_id: str, expected: list[str]) -> None:
        """Wait for the handoff's `expected` webhooks, then check them, each verified."""
        events = self._webhooks(handoff_id, expected)
        for event in events:
            print(f"webhook {event.get('webhook_id')} {event['type']} {json.dumps(event['data'])}")
        types = [event["type"] for event in events]
        self.check(
            types == expected,
            f"the receiver got {', '.join(expected)}, each verified with standardwebhooks",
        )
        self.check(
            not any(SUMMARY in json.dumps(event) for event in events),
            "no webhook carries the summary",
        )

    def carrier_call(self) -> None:
        _title("2. A phone number in the Request-URI: SIP auth does not run")
        answer = self.client.call(CARRIER_IP, NUMBER_URI, from_="+14155550142")
        call = answer.get("call", {})
        print(call.get("text", ""))
        check = self.check
        auth = (_events(call, "auth") or [{}])[0]
        check(auth.get("decision") == "not-run", "no auth ran for sip:+14155550199@app.plivo.com")
        answered = _callback(call, "answer")
        check(
            bool(answered) and answered[0].get("sip") == {},
            "answer_url got no SIPAuthType / SIPAuthUser / SIPSourceIP",
        )
        check(
            "Hangup reason=rejected" in call.get("text", ""),
            "the app saw auth was not running and rejected the call (sample config)",
        )

    def lockout(self) -> None:
        _title("3. Eleven bad passwords from one IP, then a good call during and after the lockout")
        check = self.check
        results = []
        for _ in range(11):
            answer = self.client.call(ATTACKER_IP, URI, username=CALLER, password="Wrong-Passw0rd")
            results.append(answer)
        print(results[-1].get("call", {}).get("text", ""))
        statuses = [r["status"] for r in results]
        check(statuses == [403] * 11, "all eleven bad-password calls got 403")
        reasons = [str(r.get("reason")) for r in results]
        check(
            all("locked out" not in r for r in reasons[:9]) and "locked out until" in reasons[9],
            "the 10th failure within 60 s started the lockout, not the 9th",
        )
        check("source IP locked out" in reasons[10], "the 11th was refused by the lockout")
        hangups = [r.get("call", {}).get("hangup") or {} for r in results]
        check(
            all(
                (h.get("HangupCauseName"), h.get("HangupCauseCode"), h.get("CallStatus"))
                == ("sip_auth_failed", "4210", "failed")
                for h in hangups
            ),
            "every refused call ended sip_auth_failed 4210, CallStatus failed",
        )
        locks = [lock["ip"] for lock in self.client.lockouts()]
        check(locks == [ATTACKER_IP], f"the sandbox reports {ATTACKER_IP} locked out")

        def good() -> dict[str, Any]:
            return self.client.call(
                ATTACKER_IP, URI, username=CALLER, password=self.caller_password
            )

        refused = good()
        check(refused["status"] == 403, "a good call during the lockout: 403 Forbidden")
        self.client.advance(59)
        refused = good()
        check(refused["status"] == 403, "still 403 after the clock advanced 59 s")
        self.client.advance(1)
        passed = good()
        print(passed.get("call", {}).get("text", ""))
        check(passed["status"] == 200, "60 s after the lockout began the good call passes")
        ended = self.client.hang_up(str(passed.get("call_uuid")))
        check(ended.get("state") == "ended", "the caller hung up")

    def report(self) -> None:
        _title("The app's auth-failure report (sipguard report auth-failures)")
        text = self.cli("report", "auth-failures", "--since", "1h")
        print(text.stdout + text.stderr, end="")
        data = json.loads(self.cli("report", "auth-failures", "--since", "1h", "--json").stdout)
        by_ip = {row["key"]: row["count"] for row in data["by_source_ip"]}
        check = self.check
        # 10 failed attempts, the 11th and 2 good calls refused by the lockout: 13 ended 4210.
        check(by_ip.get(ATTACKER_IP) == 13, f"the app counted 13 auth failures from {ATTACKER_IP}")
        check(
            [lock["ip"] for lock in data["lockouts"]] == [ATTACKER_IP],
            "the app's report spotted the lockout",
        )
        check(data["auth_not_running"]["count"] == 1, "the app flagged one call without auth")
        causes = {row["key"]: row["count"] for row in data["by_cause"]}
        check(any("4240" in key for key in causes), "the agent-side 4240 is in the report's causes")

    def run(self) -> None:
        with self.running():
            steps = (
                self.setup, self.handoff_call, self.carrier_call, self.lockout,
                self.api_setup, self.api_handoff, self.api_return,
            )  # fmt: skip
            for step in steps:
                _guard(step, self.check)
            _guard(self.report, self.check)


SIP_VOICE = """# `make demo`'s real-SIP run: the credential caller from SIPp's address rings alice.
[answer]
methods = ["POST"]
unauthenticated_sip = {{ action = "reject" }}
default = {{ action = "reject" }}

[[rules]]
name = "pbx-over-sip"
sip_auth_type = "ip_acl_and_credential"
sip_user = ["{caller}"]
source_cidr = ["{source}/32"]
action = "dial"
group = "support"

[groups.support]
strategy = "sequential"
agents = ["alice"]
timeout = 20

[groups.support.fallback]
action = "hangup"
text = "Sorry, nobody can take your call right now."

[agents.alice]
uri = "{uri}"
username = "alice"
password_env = "AGENT_ALICE_PASSWORD"
"""

SIP_SANDBOX = """# `make demo`'s real-SIP run: the sample application; alice (Kamailio) talks 5 s.
[sandbox]
ai_urls = ["https://ai-agent.example.com/"]

[[applications]]
app_id = "{app_id}"
app_name = "sipguard"
answer_url = "/answer"
hangup_url = "/hangup"

[endpoints."{uri}"]
talk = 5
"""


class SipDemo(Demo):
    """The story over real SIP: SIPp is the caller, the sandbox's SIP front plays Plivo's edge,
    Kamailio is alice's PBX; a second app and sandbox, with configs naming Kamailio's address."""

    allow = (f"{SIP_CALLER_IP}/32",)
    outcome_webhooks = False  # no handoffs here: no worker to start and stop

    def __init__(self, workdir: Path, check: Checks, programs: Mapping[str, str]) -> None:
        super().__init__(workdir, check)
        self.programs = programs
        self.sip = (SIP_HOST, free_port())
        self.sandbox_args = ("--sip-listen", f"{SIP_HOST}:{self.sip[1]}", "--sip-t1", SIP_T1)
        self.env["VOICE_CONFIG"] = str(workdir / "voice.toml")
        self.env["SANDBOX_CONFIG"] = str(workdir / "sandbox.toml")
        self.pbx: Pbx | None = None

    def run(self) -> None:
        _title("6. Over real SIP: SIPp calls the sandbox's SIP front; Kamailio is alice's PBX")
        pbx_dir = self.workdir / "pbx"
        password = self.env["AGENT_ALICE_PASSWORD"]  # what the app sends and Kamailio expects
        with kamailio(pbx_dir, program=self.programs["kamailio"], password=password) as pbx:
            self.pbx = pbx
            print(f"Kamailio (alice's PBX) at {pbx.uri()}; the sandbox's SIP front at ", end="")
            print(f"sip:{self.sip[0]}:{self.sip[1]}; SIPp calls from {SIP_CALLER_IP}")
            (self.workdir / "voice.toml").write_text(
                SIP_VOICE.format(caller=CALLER, source=SIP_CALLER_IP, uri=pbx.uri())
            )
            (self.workdir / "sandbox.toml").write_text(
                SIP_SANDBOX.format(app_id=APP_ID, uri=pbx.uri())
            )
            with self.running():
                for step in (self.setup, self.sip_call, self.sip_refused):
                    _guard(step, self.check)

    def _sipp(self, scenario: str, password: str) -> tuple[bool, dict[str, Any]]:
        """Play one SIPp call with `password`; return whether SIPp followed the scenario, and
        the timeline of the call the sandbox made of it."""
        logs = self.workdir / scenario.removesuffix(".xml")
        logs.mkdir()
        command = sipp_command(
            self.programs["sipp"], self.sip, SCENARIOS / scenario, ip=SIP_CALLER_IP,
            service=APP_ID, caller=f"sip:{CALLER}@{SIP_CALLER_IP}", logs=logs,
            username=CALLER, password=password, timeout=SIP_CALL_SECONDS,
        )  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=logs,
            timeout=SIP_CALL_SECONDS + 10, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            errors = logs / "sipp-errors.log"
            print(errors.read_text(errors="replace")[-2000:] if errors.exists() else done.stdout)
        calls = self.client.calls()
        call = self.client.timeline(calls[-1]["call_uuid"], wait=5) if calls else {}
        print(call.get("text", ""))
        return done.returncode == 0, call

    def sip_call(self) -> None:
        check, pbx = self.check, self.pbx
        assert pbx is not None  # run() starts Kamailio first
        followed, call = self._sipp("auth_sandbox_bye.xml", self.caller_password)
        check(
            followed,
            "SIPp's INVITE got 407, its digest answer was admitted with 200; it ACKed, and "
            "answered the sandbox's BYE once the call ended",
        )
        sent = (_callback(call, "answer") or [{}])[0].get("sip", {})
        check(
            sent == {
                "SIPAuthType": "ip_acl_and_credential", "SIPAuthUser": CALLER,
                "SIPSourceIP": SIP_CALLER_IP,
            },
            "answer_url got SIPAuthType, SIPAuthUser and the datagram's source as SIPSourceIP",
        )  # fmt: skip
        alice = {event["address"]: event for event in _events(call, "leg")}.get(pbx.uri(), {})
        check(
            alice.get("outcome") == "answered" and "dialled over SIP" in alice.get("text", ""),
            "the app's answer dialled alice: the sandbox rang Kamailio over SIP and it answered",
        )
        lines = pbx.script_lines(until="BYE")
        print("Kamailio's log: " + "; ".join(lines))
        check(
            "auth ok for user [alice]" in lines,
            "Kamailio verified the digest the sandbox sent with the app's credentials for alice",
        )
        check(
            any(line.startswith("BYE for call") for line in lines),
            "the sandbox hung up Kamailio's leg with a BYE when the call ended",
        )
        hangup = call.get("hangup") or {}
        check(hangup.get("CallStatus") == "completed", "the call ended completed")

    def sip_refused(self) -> None:
        check = self.check
        followed, call = self._sipp("auth_refused.xml", "Wrong-Passw0rd")
        check(followed, "a wrong caller password: SIPp's answer to the 407 got 403 Forbidden")
        hangup = call.get("hangup") or {}
        check(
            (hangup.get("HangupCauseName"), hangup.get("HangupCauseCode"))
            == ("sip_auth_failed", "4210")
            and not _callback(call, "answer"),
            "no answer_url for it; it ended sip_auth_failed 4210",
        )
        logs = "".join(
            path.read_text(errors="replace")
            for path in (self.workdir / "app.log", self.workdir / "sandbox.log")
        )
        passwords = (self.caller_password, self.env["AGENT_ALICE_PASSWORD"])
        check(
            not any(password in logs for password in passwords),
            "neither the caller's nor alice's password is in the app's or the sandbox's log",
        )


def play_over_sip(workdir: Path, check: Checks, required: bool) -> None:
    """Run SipDemo when SIPp and Kamailio are installed; else say why not (or fail, `required`)."""
    found = {name: shutil.which(name) for name in SIP_PROGRAMS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        notice = f"real SIP run skipped: {' and '.join(missing)} not installed (`make sip`)"
        if required:
            check(False, f"{notice}, and REQUIRE_SIP=1")
        else:
            print(f"\n{notice}")
        return
    programs = {name: path for name, path in found.items() if path is not None}
    try:
        SipDemo(workdir, check, programs).run()
    except Exception as exc:  # Kamailio or a process did not start: one failed check
        check(False, f"the real SIP run raised {type(exc).__name__}: {exc}")


def _guard(step: Callable[[], None], check: Checks) -> None:
    """Run a step; an exception is one failed check, and the next steps still run."""
    try:
        step()
    except Exception as exc:  # a demo step that blows up is reported, not a traceback
        check(False, f"{step.__name__} raised {type(exc).__name__}: {exc}")


def _title(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    try:
        keep = SETTINGS["DEMO_KEEP"].read(os.environ)
        require_sip = SETTINGS["REQUIRE_SIP"].read(os.environ)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="sipguard-demo-"))
    check = Checks()
    try:
        Demo(workdir, check).run()
        play_over_sip(workdir / "sip", check, require_sip)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    _title("Result")
    if check.failed:
        print(f"{len(check.failed)} of {check.count} checks FAILED:")
        for what in check.failed:
            print(f"  - {what}")
        return 1
    print(f"all {check.count} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
