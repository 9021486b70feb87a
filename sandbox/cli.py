"""`sipguard sandbox serve|call|calls|timeline|hangup|lockouts|clock`: run the stand-in, drive it.

`serve --sip-listen HOST:PORT` also answers real SIP over UDP (sandbox/sip_server.py).

Registered through the "sipguard.commands" entry point, so the product never imports it.
`serve` plays the account in PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN on its own port, for the app's
settings (PUBLIC_BASE_URL, the main account's token); every other command talks to the sandbox
at PLIVO_API_URL and, like the REST commands, needs only the account. Exit codes are the REST
commands'; a call the sandbox refused (403/404) exits 3.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from sandbox.timeline import MAX_ADVANCE
from sipguard.commands import context, rest
from sipguard.errors import ConfigError, PlivoAPIError
from sipguard.settings import SETTINGS

if TYPE_CHECKING:
    from sandbox.client import SandboxClient

DEFAULT_PORT = 5100
LOOPBACK = ("127.0.0.1", "localhost", "::1")

sandbox = click.Group("sandbox", help="A local stand-in for Plivo (REST, SIP auth, callbacks).")


def _client() -> SandboxClient:
    from sandbox.client import SandboxClient  # the sandbox loads only when a command runs

    account = context.account()
    parts = urlsplit(account.api_url)
    if parts.hostname not in LOOPBACK:
        raise ConfigError(
            f"PLIVO_API_URL is {account.api_url}, not a local sandbox: set it to the URL "
            f"`sipguard sandbox serve` printed (e.g. http://127.0.0.1:{DEFAULT_PORT})"
        )
    if not account.auth_id:  # the app (Flask CLI) runs without one; `sipguard` refuses earlier
        raise ConfigError("PLIVO_AUTH_ID is not set: the sandbox plays that account")
    return SandboxClient(account.api_url, account.auth_id, account.auth_token)


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif "text" in data:
        click.echo(data["text"])


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Default: PLIVO_API_URL's, or 5100; 0 takes a free one (the URL is printed).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Sandbox world (SANDBOX_CONFIG, default the sandbox package's sample.toml).",
)
@click.option(
    "--sip-listen",
    metavar="HOST:PORT",
    help="Also take SIP calls over UDP there, e.g. 127.0.0.1:5060 (off by default).",
)
@click.option(
    "--sip-t1",
    type=click.FloatRange(0.01, 10),
    help="SIP timer T1, seconds, for the SIP front and real outbound legs: messages are resent "
    "from T1 on, for 64*T1 (default: the world's sandbox.sip_t1, else 0.5).",
)
def serve(
    host: str,
    port: int | None,
    config_path: Path | None,
    sip_listen: str | None,
    sip_t1: float | None,
) -> None:
    """Run the sandbox until interrupted."""
    settings = context.app_runtime().settings
    if port is None:
        parts = urlsplit(settings.plivo_api_url)
        port = parts.port if parts.hostname in LOOPBACK and parts.port else DEFAULT_PORT
    from werkzeug.serving import make_server

    from sandbox.factory import DEFAULT_CONFIG, build
    from sandbox.server import create_sandbox_app
    from sandbox.sip_server import SipServer, parse_listen

    try:
        sip_address = parse_listen(sip_listen) if sip_listen is not None else None
    except ValueError as exc:
        rest.fail(click.BadParameter(str(exc), param_hint="--sip-listen"), False)

    environ = context.environment()
    if config_path is not None:
        label, path = "--config", config_path
    else:
        label, path = "SANDBOX_CONFIG", SETTINGS["SANDBOX_CONFIG"].read(environ) or DEFAULT_CONFIG
    try:
        world = build(settings, environ, path, config_label=label, sip_t1=sip_t1)
    except ConfigError as exc:  # one line and exit 2, like every bad setting
        rest.fail(exc, False)
    server = make_server(host, port, create_sandbox_app(world, settings.auth_tokens[0]), True)
    sip: SipServer | None = None
    if sip_address is not None:
        try:
            sip = SipServer(world, *sip_address, t1=world.config.sip_timers.t1).start()
        except OSError as exc:
            server.server_close()
            rest.fail(ConfigError(f"--sip-listen {sip_listen}: {exc.strerror or exc}"), False)
    url = f"http://{host}:{server.server_port}"
    click.echo(f"sandbox: Plivo stand-in for account {settings.auth_id} at {url}", err=True)
    click.echo(f"sandbox: point the app at it with PLIVO_API_URL={url}", err=True)
    for app in world.account.applications.values():
        click.echo(
            f"sandbox: application {app.app_id} ({app.app_name}): {app.answer_url}", err=True
        )
    for number, app_id in world.account.numbers.items():
        click.echo(f"sandbox: number {number} -> application {app_id}", err=True)
    if sip is not None:
        click.echo(
            f"sandbox: SIP over UDP at {sip.uri}: send INVITEs for sip:APP_ID@app.plivo.com "
            f"(or sip:NUMBER@app.plivo.com) to it",
            err=True,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if sip is not None:
            sip.stop()


@sandbox.command("call")
@click.option("--from-ip", required=True, help="The caller's source IP (IPv4 or IPv6).")
@click.option("--request-uri", required=True, help="e.g. sip:APP_ID@app.plivo.com")
@click.option("--from", "from_", help="From header (default sip:caller@FROM_IP).")
@click.option("--to", help="To header (default the Request-URI).")
@click.option("--username", help="SIP username to answer the 407 challenge with.")
@rest.password_options(generate=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def call(
    from_ip: str,
    request_uri: str,
    from_: str | None,
    to: str | None,
    username: str | None,
    as_json: bool,
    **source: Any,
) -> None:
    """Place an inbound SIP call through the sandbox and print its timeline."""
    try:
        password, _ = rest.read_password(**source)
        if (username is None) != (password is None):
            raise click.BadParameter("--username and a password source go together")
        answer = _client().call(
            from_ip, request_uri, username=username, password=password, from_=from_, to=to
        )
    except (PlivoAPIError, ConfigError, click.BadParameter) as exc:
        rest.fail(exc, as_json)
    status, reason = answer.get("status"), answer.get("reason")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        if "call" in answer:
            click.echo(answer["call"]["text"])
        click.echo(f"result: {status} {reason}")
    if status != 200:
        sys.exit(rest.EXIT_REFUSED)


@sandbox.command("timeline")
@click.argument("call_uuid")
@click.option("--wait", type=click.FloatRange(0, 60), default=0, help="Seconds to wait for it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def timeline(call_uuid: str, wait: float, as_json: bool) -> None:
    """Print a call's timeline."""
    try:
        _show(_client().timeline(call_uuid, wait), as_json)
    except (PlivoAPIError, ConfigError) as exc:
        rest.fail(exc, as_json)


@sandbox.command("hangup")
@click.argument("call_uuid")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def hangup(call_uuid: str, as_json: bool) -> None:
    """Hang up, as the caller, a call the simulated AI agent holds."""
    try:
        _show(_client().hang_up(call_uuid), as_json)
    except (PlivoAPIError, ConfigError) as exc:
        rest.fail(exc, as_json)


@sandbox.command("clock")
@click.option(
    "--advance",
    type=click.FloatRange(0, MAX_ADVANCE.total_seconds()),
    default=0,
    help="Seconds to move on.",
)
def clock(advance: float) -> None:
    """Show the sandbox clock, or move it forward (lockouts expire, nonces go stale)."""
    try:
        click.echo(_client().advance(advance))
    except (PlivoAPIError, ConfigError) as exc:
        rest.fail(exc, False)


@sandbox.command("calls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def calls(as_json: bool) -> None:
    """List the calls the sandbox has carried, oldest first, with how each ended."""
    try:
        found = _client().calls()
    except (PlivoAPIError, ConfigError) as exc:
        rest.fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [
        {
            "call_uuid": call["call_uuid"],
            "direction": call["direction"],
            "from": call["from"],
            "to": call["to"],
            "state": call["state"],
            "end": " ".join(str((call.get("hangup") or {}).get(key, "")) for key in _END).strip(),
        }
        for call in found
    ]
    rest.table(rows, ("call_uuid", "direction", "from", "to", "state", "end"))()


_END = ("HangupCauseName", "HangupCauseCode", "CallStatus")


@sandbox.command("lockouts")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def lockouts(as_json: bool) -> None:
    """List the source IPs locked out now (10 failures within 60 s; 60 s each)."""
    try:
        found = _client().lockouts()
    except (PlivoAPIError, ConfigError) as exc:
        rest.fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(found, indent=2))
    elif not found:
        click.echo("no source IP is locked out")
    else:
        rest.table(found, ("ip", "since", "until"))()
