"""The sandbox's world: applications, numbers, the simulated AI agent and agent endpoints (TOML).

sandbox/sample.toml documents every key; unknown keys are refused so a typo fails at
start-up. Endpoint passwords come from environment variables and are kept as HA1 only, as a
PBX would keep them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from sandbox import digest
from sandbox.account import URL_FIELDS
from sandbox.sip_client import Timers
from sipguard.calls.voice_config import check_table, read_toml
from sipguard.errors import ConfigError
from xml_builders import is_number, is_sip_uri

ANSWERS = ("answer", "busy", "no_answer")
CONFIRMS = ("accept", "ignore")  # what an agent does when a Dial asks for its confirmKey
REPLIES = ("verify", "timeout")
SIP_TIMER_B = 32.0  # seconds an unanswered INVITE transaction lasts (RFC 3261, 64*T1)


@dataclass
class EndpointAuth:
    """A PBX's digest challenge and the one credential it accepts (HA1 only)."""

    realm: str
    username: str
    ha1: str
    status: int = 407  # 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)
    algorithm: str = "MD5"
    reply: str = "verify"  # "timeout": never answers the authenticated INVITE (-> 4250)
    nonces: digest.Nonces = field(default_factory=digest.Nonces)

    def challenge(self, uri: str, now: datetime) -> digest.Challenge:
        """Issue a fresh challenge for an INVITE to `uri`."""
        return digest.Challenge(self.realm, self.nonces.issue(self.realm, uri, now), self.algorithm)

    def accepts(self, auth: digest.Authorization, uri: str, now: datetime) -> bool:
        """Check an answer to one of this PBX's challenges."""
        fresh = self.nonces.redeem(auth.nonce, uri, now)
        return (
            fresh
            and auth.username == self.username
            and auth.realm == self.realm
            and auth.uri == uri
            and auth.algorithm.upper() == self.algorithm.upper()
            and auth.qop == "auth"  # offered in every challenge, so it must come back
            and digest.verify(auth, self.ha1, "INVITE")
        )


@dataclass
class Endpoint:
    """A simulated agent (SIP URI) or phone (number) that a Dial or Make Call rings."""

    address: str
    answer: str = "answer"
    answer_after: float = 2.0
    talk: float = 30.0
    auth: EndpointAuth | None = None
    confirm: str = "accept"  # "ignore": never presses a Dial's confirmKey


@dataclass(frozen=True)
class InitialApp:
    """An application the sandbox account starts with."""

    fields: Mapping[str, str]
    app_id: str | None = None
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxConfig:
    """Everything sandbox/sample.toml describes."""

    applications: Sequence[InitialApp] = ()
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    ai_urls: tuple[str, ...] = ()
    message_seconds: float = 8.0  # how long a simulated caller talks to a <Record>
    sip_timers: Timers = field(default_factory=Timers)  # real outbound legs (sandbox/sip_client)


def _number(where: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where} must be a number of seconds ≥ 0")
    return float(value)


def _endpoint(
    label: str, address: str, spec: Mapping[str, Any], environ: Mapping[str, str]
) -> Endpoint:
    where = f"{label}: endpoints.{address!r}"
    if not (is_sip_uri(address) or is_number(address)):
        raise ConfigError(f"{where}: not a SIP URI or a phone number")
    check_table(where, spec, {"answer", "answer_after", "talk", "auth", "confirm"})
    answer = spec.get("answer", "answer")
    if answer not in ANSWERS:
        raise ConfigError(f"{where}.answer must be one of {', '.join(ANSWERS)}")
    confirm = spec.get("confirm", "accept")
    if confirm not in CONFIRMS:
        raise ConfigError(f"{where}.confirm must be one of {', '.join(CONFIRMS)}")
    auth = None
    if "auth" in spec:
        auth = _auth(f"{where}.auth", spec["auth"], environ)
    return Endpoint(
        address,
        answer,
        _number(f"{where}.answer_after", spec.get("answer_after"), 2.0),
        _number(f"{where}.talk", spec.get("talk"), 30.0),
        auth,
        confirm,
    )


def _auth(where: str, spec: Any, environ: Mapping[str, str]) -> EndpointAuth:
    check_table(where, spec, {"realm", "username", "password_env", "status", "algorithm", "reply"})
    for key in ("realm", "username", "password_env"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ConfigError(f"{where}.{key} is required")
    password = environ.get(spec["password_env"], "")
    if not password:
        raise ConfigError(f"{where}.password_env names {spec['password_env']}, which is not set")
    status = spec.get("status", 407)
    if status not in (401, 407):
        raise ConfigError(f"{where}.status must be 401 or 407")
    algorithm = spec.get("algorithm", "MD5")
    if algorithm not in digest.HASHES:
        raise ConfigError(f"{where}.algorithm must be MD5 or SHA-256")
    reply = spec.get("reply", "verify")
    if reply not in REPLIES:
        raise ConfigError(f"{where}.reply must be one of {', '.join(REPLIES)}")
    return EndpointAuth(
        realm=spec["realm"],
        username=spec["username"],
        ha1=digest.ha1(spec["username"], spec["realm"], password, algorithm),
        status=status,
        algorithm=algorithm,
        reply=reply,
    )


APP_KEYS = {"app_id", "app_name", "numbers", *URL_FIELDS}


def _application(
    label: str, index: int, spec: Mapping[str, Any], base_url: str | None
) -> InitialApp:
    where = f"{label}: applications[{index}]"
    check_table(where, spec, APP_KEYS)
    fields: dict[str, str] = {}
    for key, value in spec.items():
        if key in ("app_id", "numbers"):
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key} must be a string")
        if key.endswith("_url") and value.startswith("/"):
            # Relative to the app's PUBLIC_BASE_URL: the sample works on any port.
            if base_url is None:
                raise ConfigError(f"{where}.{key} is relative; set PUBLIC_BASE_URL")
            value = urljoin(base_url + "/", value.lstrip("/"))
        fields[key] = value
    numbers = spec.get("numbers", [])
    if not isinstance(numbers, list) or not all(is_number(n) for n in numbers):
        raise ConfigError(f"{where}.numbers must be a list of phone numbers")
    app_id = spec.get("app_id")
    if app_id is not None and not (isinstance(app_id, str) and app_id.isdigit()):
        raise ConfigError(f"{where}.app_id must be digits, as Plivo's are")
    return InitialApp(fields, app_id, tuple(numbers))


def load_sandbox_config(
    path: Path, environ: Mapping[str, str], base_url: str | None, *, label: str = "SANDBOX_CONFIG"
) -> SandboxConfig:
    """Read and check the sandbox TOML; raise ConfigError naming `label` (where the path came
    from) and the bad key."""
    data = read_toml(path, label)
    check_table(label, data, {"sandbox", "applications", "endpoints"})
    settings = check_table(
        f"{label}: [sandbox]", data.get("sandbox", {}), {"ai_urls", "message_seconds", "sip_t1"}
    )
    ai_urls = settings.get("ai_urls", [])
    if not isinstance(ai_urls, list) or not all(isinstance(u, str) and u for u in ai_urls):
        raise ConfigError(f"{label}: sandbox.ai_urls must be a list of URL prefixes")
    endpoints = {
        address: _endpoint(label, address, spec, environ)
        for address, spec in check_table(
            f"{label}: [endpoints]", data.get("endpoints", {}), None
        ).items()
    }
    listed = data.get("applications", [])
    if not isinstance(listed, list):
        raise ConfigError(f"{label}: applications must be [[applications]] tables")
    applications = [_application(label, i, spec, base_url) for i, spec in enumerate(listed)]
    return SandboxConfig(
        applications=applications,
        endpoints=endpoints,
        ai_urls=tuple(ai_urls),
        message_seconds=_number(
            f"{label}: sandbox.message_seconds", settings.get("message_seconds"), 8.0
        ),
        sip_timers=_timers(label, settings.get("sip_t1")),
    )


def _timers(label: str, t1: Any) -> Timers:
    """SIP's T1 for the SIP front and real outbound legs: 0.5 s (RFC 3261) unless set."""
    if t1 is None:
        return Timers()
    if isinstance(t1, bool) or not isinstance(t1, int | float) or not 0.01 <= t1 <= 10:
        raise ConfigError(f"{label}: sandbox.sip_t1 must be a number of seconds in 0.01-10")
    return Timers.from_t1(float(t1))
