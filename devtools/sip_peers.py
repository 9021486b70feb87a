"""Real SIP peers for the tests and `make demo`: Kamailio as an agent's PBX on a loopback port,
and the SIPp command line that calls the sandbox's SIP front.

Kamailio runs in the foreground (`-DD -E`) from a generated kamailio.cfg with no database: the
auth module checks the digest answer against the password in the script (MD5 or SHA-256,
qop=auth), and the PBX answers as the test asks (200, 486, 403, or nothing at all). It is started
in its own process group by devtools/harness.py, ready once it answers an OPTIONS, and stopped
when the block that started it ends. Finding the programs is the caller's business
(tests/support/sip_peers.py skips or fails a test without them; the demo prints a notice).
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.harness import Server, free_port, spawn
from sandbox import sip_message
from sandbox.sip_message import Request, Response, SipError

MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
READY_TIMEOUT = 15.0  # seconds Kamailio gets to answer its first OPTIONS
# What the PBX does with an INVITE whose answer to its challenge it has checked.
MODES = ("answer", "busy", "silent", "forbid")
_SAFE = re.compile(r"[A-Za-z0-9._@-]+")  # what may go into the generated script unquoted
_MARK = "sipguard-test: "  # the script's own log lines start with this


@dataclass(frozen=True)
class Pbx:
    """A running Kamailio: where it listens and what it checks."""

    host: str
    port: int
    realm: str
    server: Server

    def uri(self, user: str = "alice") -> str:
        """Return the SIP URI of `user` on this PBX."""
        return f"sip:{user}@{self.host}:{self.port}"

    def log(self) -> str:
        """Return the end of Kamailio's log (its script logs each auth check's result)."""
        return self.server.log_tail()

    def script_lines(self, until: str | None = None, timeout: float = 5.0) -> list[str]:
        """Return what the generated script logged (each INVITE, auth check, ACK and BYE),
        once a line starting with `until` is there (or `timeout` s have passed)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                line.split(_MARK, 1)[1]
                for line in self.server.log.read_text(errors="replace").splitlines()
                if _MARK in line
            ]
            done = until is None or any(line.startswith(until) for line in lines)
            if done or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


def kamailio_cfg(
    *,
    host: str,
    port: int,
    username: str,
    password: str,
    challenge: int | None = 407,
    algorithm: str = "MD5",
    mode: str = "answer",
    realm: str | None = None,
) -> str:
    """Write the kamailio.cfg of an agent's PBX.

    `challenge` is 401 (WWW-Authenticate), 407 (Proxy-Authenticate) or None (no digest, an
    IP-authenticated PBX). Once the answer to the challenge checks out, `mode` says what the PBX
    does: answer (200), busy (486), silent (never replies to the answered INVITE) or forbid
    (403 whatever the credentials). A wrong answer is refused with 403.
    """
    for value in (host, username, password, realm or host):
        if not _SAFE.fullmatch(value):
            raise ValueError(f"{value!r} cannot go into the generated kamailio.cfg")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if challenge not in (401, 407, None):
        raise ValueError("challenge must be 401, 407 or None")
    realm = realm or host
    check = {401: "pv_www_authenticate", 407: "pv_proxy_authenticate"}.get(challenge or 0)
    issue = {401: "www_challenge", 407: "proxy_challenge"}.get(challenge or 0)
    auth = ""
    if check:
        auth = f"""
    if (!{check}("{realm}", "{password}", "0")) {{
        $var(rc) = $rc;
        xlog("L_INFO", "sipguard-test: auth check $var(rc) for user [$au]\\n");
        if ($var(rc) == -2) {{ t_reply("403", "Forbidden"); exit; }}
        {issue}("{realm}", "1");
        exit;
    }}
    if ($au != "{username}") {{
        xlog("L_INFO", "sipguard-test: wrong user [$au]\\n");
        t_reply("403", "Forbidden");
        exit;
    }}
    xlog("L_INFO", "sipguard-test: auth ok for user [$au]\\n");"""
    answer = {
        "answer": f"""append_to_reply("Contact: <sip:$rU@{host}:{port}>\\r\\n");
    t_reply("200", "OK");""",
        "busy": 't_reply("486", "Busy Here");',
        "silent": 'xlog("L_INFO", "sipguard-test: staying silent\\n");\n    drop;',
        "forbid": 't_reply("403", "Forbidden");',
    }[mode]
    algorithm_param = f'modparam("auth", "algorithm", "{algorithm}")' if algorithm != "MD5" else ""
    return f"""#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{host}:{port}
mpath="{MODULES}/"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "pv.so"
loadmodule "auth.so"
loadmodule "textops.so"
loadmodule "xlog.so"
modparam("auth", "qop", "auth")
modparam("auth", "secret", "{secrets.token_hex(16)}")
{algorithm_param}

request_route {{
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("ACK")) {{
        xlog("L_INFO", "sipguard-test: ACK cseq [$cs]\\n");
        t_check_trans();
        exit;
    }}
    if (is_method("BYE")) {{
        xlog("L_INFO", "sipguard-test: BYE for call [$ci]\\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("CANCEL")) {{ sl_send_reply("200", "OK"); exit; }}
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    # Stateful: a retransmitted INVITE is absorbed by its transaction, never checked twice.
    if (!t_newtran()) {{ exit; }}
    xlog("L_INFO", "sipguard-test: INVITE cseq [$cs] X-PH-Team [$hdr(X-PH-Team)]\\n");{auth}
    {answer}
    exit;
}}
"""


def _options(host: str, port: int, local_port: int) -> bytes:
    """An OPTIONS request for the readiness check (sandbox/sip_message.py writes it)."""
    request = Request(method="OPTIONS", uri=f"sip:ping@{host}:{port}")
    request.add("Via", f"SIP/2.0/UDP {host}:{local_port};branch={sip_message.new_branch()}")
    request.add("Max-Forwards", "70")
    request.add("From", f"<sip:ready@{host}>;tag={sip_message.new_tag()}")
    request.add("To", f"<sip:ping@{host}:{port}>")
    request.add("Call-ID", f"{secrets.token_hex(8)}@{host}")
    request.add("CSeq", "1 OPTIONS")
    return request.serialise()


def _answers_options(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(0.3)
        try:
            sock.sendto(_options(host, port, sock.getsockname()[1]), (host, port))
            reply = sip_message.parse(sock.recv(sip_message.MAX_DATAGRAM))
        except (OSError, SipError):  # no answer yet, ICMP port unreachable, or not SIP
            return False
    return isinstance(reply, Response) and reply.status == 200


@contextmanager
def kamailio(
    directory: Path,
    *,
    program: str = "kamailio",
    username: str = "alice",
    password: str = "Agent-Pbx-Pw-1",
    challenge: int | None = 407,
    algorithm: str = "MD5",
    mode: str = "answer",
    host: str = "127.0.0.1",
) -> Iterator[Pbx]:
    """Run Kamailio as an agent's PBX on `host` and a free port until the block ends."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kamailio.cfg"
    config.write_text(
        kamailio_cfg(
            host=host,
            port=port,
            username=username,
            password=password,
            challenge=challenge,
            algorithm=algorithm,
            mode=mode,
        )
    )
    argv = [program, "-DD", "-E", "-f", str(config), "-w", str(directory), "-Y", str(directory)]
    argv += ["-m", "16", "-M", "4"]  # small memory pools: it runs beside the suite
    server = spawn("kamailio", argv, env={"PATH": "/usr/bin:/bin"}, log=directory / "kamailio.log")
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers_options(host, port):
            if server.process.poll() is not None or time.monotonic() > deadline:
                tail = server.log_tail()
                raise RuntimeError(f"kamailio did not come up on {host}:{port}:\n{tail}")
        yield Pbx(host, port, host, server)
    finally:
        server.stop(timeout=5)


def sipp_command(
    program: str,
    target: tuple[str, int],
    scenario: Path,
    *,
    ip: str,
    service: str,
    caller: str,
    logs: Path,
    username: str = "frontdesk",
    password: str | None = None,
    calls: int = 1,
    via: str | None = None,
    timeout: int = 20,
) -> list[str]:
    """Return the SIPp command that plays `scenario` as a caller from `ip` towards the sandbox's
    SIP front at `target`: `calls` calls one at a time (the lockout counts them in order), each
    ended by `timeout` s, errors and messages traced into `logs` (sipp-errors.log,
    sipp-messages.log). The scenarios read [service] (the Request-URI's user), [caller] (From)
    and [via] (the host the Via names; the front answers the source address anyway)."""
    command = [
        program, f"{target[0]}:{target[1]}", "-sf", str(scenario), "-i", ip,
        "-p", str(free_port()), "-m", str(calls), "-l", "1", "-s", service,
        "-key", "caller", caller, "-key", "via", via or ip,
        "-timeout", f"{timeout}s", "-timeout_error",
        "-trace_err", "-error_file", str(logs / "sipp-errors.log"),
        "-trace_msg", "-message_file", str(logs / "sipp-messages.log"),
        "-nostdin",
    ]  # fmt: skip
    if password is not None:
        command += ["-au", username, "-ap", password, "-auth_uri", f"{service}@app.plivo.com"]
    return command
