"""Load VOICE_CONFIG (TOML): answer options, routing rules, agent groups and agents.

Unknown keys are refused so a typo cannot silently change routing, and a plaintext password is
refused outright: agent passwords come from `password_env` or `password_file`.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sipguard.calls import documents
from sipguard.calls.agents import Agent, AgentGroup, Closed, Fallback, Quarantine
from sipguard.calls.causes import AUTH_NONE, SIP_AUTH_TYPES
from sipguard.calls.hours import YEARS, Hours, Window, overlap, parse_window
from sipguard.calls.routing import (
    HANDOFF_GROUP_HEADER,
    STREAM_CALL_HEADERS,
    Action,
    Match,
    Policy,
    Rule,
)
from sipguard.errors import ConfigError, ValidationError
from sipguard.monitoring.analytics import parse_span
from sipguard.secret import Secret
from xml_builders.elements import STREAM_CONTENT_TYPES, STREAM_EXTRA_HEADERS_MAX

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PLAIN = re.compile(r"[A-Za-z0-9]+")  # extraHeaders' charset, names and values alike
_ACTION_KINDS = ("dial", "redirect", "speak", "reject", "stream")
_STREAM_KEYS = {"bidirectional", "keep_call_alive", "content_type", "extra_headers"}
_ACTION_KEYS = {
    "action",
    "group",
    "url",
    "handoff_group",
    "text",
    "voice",
    "language",
    *_STREAM_KEYS,
}
# A stream's fixed extraHeaders (handoffgroup included) may fill half of Plivo's 512 bytes; the
# other half is kept for the per-call ones (From, To, the SIP-auth result), known only per call.
STREAM_FIXED_HEADERS_MAX = STREAM_EXTRA_HEADERS_MAX // 2
_LOOPBACK_NAMES = {"localhost"}
_MATCH_KEYS = {"sip_auth_type", "sip_user", "source_cidr", "to", "from"}
_GROUP_KEYS = {
    "strategy",
    "agents",
    "timeout",
    "time_limit",
    "caller_id",
    "caller_name",
    "dial_music",
    "confirm_sound",
    "confirm_key",
    "fallback",
    "hours",
}
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_HOURS_KEYS = {"zone", "windows", "closed_dates", "closed"}
_FALLBACK_KEYS = {
    "action",
    "text",
    "url",
    "voice",
    "language",
    "max_length",
    "recording_callback_url",
}
_AGENT_KEYS = {"uri", "username", "password_env", "password_file", "send_digits", "sip_headers"}
_ANSWER_KEYS = {"methods", "default", "unauthenticated_sip"}
_QUARANTINE_KEYS = {"after", "cool_down"}
_MAX_QUARANTINE_AFTER = 100
_CHECK_URL = "https://config-check.invalid/dial-action"


@dataclass(frozen=True)
class VoiceConfig:
    """The parsed voice configuration."""

    answer_methods: tuple[str, ...]
    policy: Policy
    groups: Mapping[str, AgentGroup]
    quarantine: Quarantine = Quarantine()

    def agent_names(self) -> tuple[str, ...]:
        """Return the name of every agent some group dials, each once, in config order."""
        names = (agent.name for group in self.groups.values() for agent in group.agents)
        return tuple(dict.fromkeys(names))

    def secrets(self) -> tuple[str, ...]:
        """Return every agent password, for the log redaction filter."""
        return tuple(secret for group in self.groups.values() for secret in group.secrets())


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """Read a TOML config file; an unreadable or malformed one is a ConfigError naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label} {path}: {exc}") from None


def check_table(where: str, value: Any, allowed: set[str] | None) -> dict[str, Any]:
    """Check `value` is a TOML table holding only `allowed` keys (None: any key)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(value) - allowed) if allowed is not None else []
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return value


def _named_tables(where: str, value: Any) -> dict[str, Any]:
    """Read a table of named sub-tables, e.g. [agents.alice] (not an [[agents]] array)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be named tables like [{where}.NAME], not [[{where}]]")
    return value


def _str_list(where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a string or a list of strings")
    if not value:
        raise ConfigError(f"{where} must not be empty")
    return value


def _pattern(where: str, value: Any) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a regular expression string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression ({exc})") from None


def _password(where: str, spec: Mapping[str, Any], environ: Mapping[str, str], base: Path) -> str:
    env_name, file_name = spec.get("password_env"), spec.get("password_file")
    if env_name and file_name:
        raise ConfigError(f"{where}: set password_env or password_file, not both")
    if env_name:
        value = environ.get(str(env_name), "")
        if not value:
            raise ConfigError(f"{where}: environment variable {env_name} is not set")
        return value
    if file_name:
        path = base / str(file_name)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{where}: cannot read password_file {path} ({exc.strerror})"
            ) from None
        if not value:
            raise ConfigError(f"{where}: password_file {path} is empty")
        return value
    raise ConfigError(f"{where}: username is set, so password_env or password_file is required")


def _agent(name: str, spec: Any, environ: Mapping[str, str], base: Path) -> Agent:
    where = f"agents.{name}"
    if isinstance(spec, dict) and "password" in spec:
        raise ConfigError(
            f"{where}: a plaintext password in VOICE_CONFIG is refused; "
            "use password_env (an environment variable) or password_file"
        )
    spec = check_table(where, spec, _AGENT_KEYS)
    if not isinstance(spec.get("uri"), str):
        raise ConfigError(f"{where}: uri (sip:user@host) is required")
    username = spec.get("username")
    if username is None and (spec.get("password_env") or spec.get("password_file")):
        raise ConfigError(f"{where}: a password is set without a username")
    password = Secret(_password(where, spec, environ, base)) if username is not None else None
    headers = spec.get("sip_headers", {})
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}.sip_headers must be a table of name = value")
    return Agent(
        name=name,
        uri=spec["uri"],
        username=str(username) if username is not None else None,
        password=password,
        send_digits=spec.get("send_digits"),
        sip_headers=dict(headers),
    )


def _fallback(where: str, spec: Any) -> Fallback:
    spec = check_table(where, spec, _FALLBACK_KEYS)
    kind = spec.get("action")
    if kind not in ("voicemail", "hangup", "redirect"):
        raise ConfigError(f"{where}.action must be voicemail, hangup or redirect")
    if kind == "redirect" and not spec.get("url"):
        raise ConfigError(f"{where}: a redirect fallback needs url")
    return Fallback(
        kind=kind,
        text=spec.get("text"),
        url=spec.get("url"),
        voice=spec.get("voice"),
        language=spec.get("language"),
        max_length=spec.get("max_length", 120),
        recording_callback_url=spec.get("recording_callback_url"),
    )


def _group(name: str, spec: Any, agents: Mapping[str, Agent]) -> AgentGroup:
    where = f"groups.{name}"
    spec = check_table(where, spec, _GROUP_KEYS)
    strategy = spec.get("strategy", "simultaneous")
    if strategy not in ("simultaneous", "sequential"):
        raise ConfigError(f"{where}.strategy must be simultaneous or sequential")
    members = _str_list(f"{where}.agents", spec.get("agents"))
    missing = [m for m in members if m not in agents]
    if missing:
        raise ConfigError(f"{where}.agents: no agent named {', '.join(missing)}")
    if "fallback" not in spec:
        raise ConfigError(f"{where}: fallback is required (voicemail, hangup or redirect)")
    fallback = _fallback(f"{where}.fallback", spec["fallback"])
    hours, closed = (
        _hours(f"{where}.hours", spec["hours"], fallback) if "hours" in spec else (None, None)
    )
    return AgentGroup(
        name=name,
        strategy=strategy,
        agents=tuple(agents[m] for m in members),
        fallback=fallback,
        hours=hours,
        closed=closed,
        timeout=spec.get("timeout", 20),
        time_limit=spec.get("time_limit"),
        caller_id=spec.get("caller_id"),
        caller_name=spec.get("caller_name"),
        dial_music=spec.get("dial_music"),
        confirm_sound=spec.get("confirm_sound"),
        confirm_key=spec.get("confirm_key"),
    )


def _hours(where: str, spec: Any, fallback: Fallback) -> tuple[Hours, Closed]:
    """Read a group's business hours and what it does outside them (its fallback by default)."""
    spec = check_table(where, spec, _HOURS_KEYS)
    zone_name = spec.get("zone")
    if not isinstance(zone_name, str) or not zone_name:
        raise ConfigError(f'{where}.zone is required: an IANA time zone like "Europe/London"')
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.zone: {zone_name!r} is not an IANA time zone") from None
    if "windows" not in spec:
        raise ConfigError(f'{where}.windows is required, e.g. ["mon-fri 09:00-17:30"]')
    raw_windows = spec["windows"]
    if not isinstance(raw_windows, list) or not raw_windows:
        raise ConfigError(f'{where}.windows must be a list like ["mon-fri 09:00-17:30"]')
    windows: list[tuple[int, Window]] = []
    for index, text in enumerate(raw_windows):
        key = f"{where}.windows[{index}]"
        if not isinstance(text, str):
            raise ConfigError(f'{key} must be a string like "mon-fri 09:00-17:30"')
        try:
            parsed = parse_window(text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        for window in parsed:
            for other_index, other in windows:
                if overlap(window, other):
                    other_key = f"{where}.windows[{other_index}]"
                    raise ConfigError(
                        f"{key}: {text!r} overlaps itself"
                        if other_index == index
                        else f"{key}: {text!r} overlaps {other_key} ({raw_windows[other_index]!r})"
                    )
            windows.append((index, window))
    hours = Hours(
        zone=zone,
        windows=tuple(window for _, window in windows),
        closed_dates=frozenset(_dates(f"{where}.closed_dates", spec.get("closed_dates", []))),
        written=tuple(text.strip() for text in raw_windows),
    )
    return hours, _closed(f"{where}.closed", spec.get("closed"), fallback)


def _dates(where: str, value: Any) -> list[date]:
    if not isinstance(value, list):
        raise ConfigError(f'{where} must be a list of dates like ["2026-12-25"]')
    return [_date(f"{where}[{index}]", item) for index, item in enumerate(value)]


def _date(where: str, value: Any) -> date:
    """Read a TOML date (2026-12-25) or a string holding one ("2026-12-25")."""
    found: date | None = None
    if isinstance(value, date) and not isinstance(value, datetime):
        found = value
    elif isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            found = date.fromisoformat(value)
        except ValueError:
            pass
    if found is None:
        raise ConfigError(f"{where} must be a date like 2026-12-25")
    if found.year not in YEARS:
        raise ConfigError(f"{where} must be in the years {YEARS.start}-{YEARS.stop - 1}")
    return found


def _closed(where: str, spec: Any, fallback: Fallback) -> Closed:
    """Read what a closed group does: a fallback's actions, or "return" (to the AI)."""
    if spec is None:
        return Closed(plan=fallback)
    if isinstance(spec, dict) and spec.get("action") == "return":
        check_table(where, spec, {"action"})
        return Closed(plan=fallback, return_to_ai=True)
    if isinstance(spec, dict) and spec.get("action") not in ("voicemail", "hangup", "redirect"):
        raise ConfigError(f"{where}.action must be voicemail, hangup, redirect or return")
    plan = _fallback(where, spec)
    _check_xml(where, documents.fallback, plan)
    return Closed(plan=plan)


def _action(where: str, spec: Mapping[str, Any], groups: Mapping[str, AgentGroup]) -> Action:
    kind = spec.get("action")
    if kind not in _ACTION_KINDS:
        raise ConfigError(
            f"{where}.action must be {', '.join(_ACTION_KINDS[:-1])} or {_ACTION_KINDS[-1]}"
        )
    misplaced = sorted(_STREAM_KEYS & set(spec)) if kind != "stream" else []
    if misplaced:
        raise ConfigError(f'{where}: {", ".join(misplaced)} only apply to action = "stream"')
    action = Action(
        kind=kind,
        group=spec.get("group"),
        url=spec.get("url"),
        handoff_group=spec.get("handoff_group"),
        text=spec.get("text"),
        voice=spec.get("voice"),
        language=spec.get("language"),
        **(_stream_options(where, spec) if kind == "stream" else {}),
    )
    if kind == "dial" and action.group not in groups:
        raise ConfigError(f"{where}: dial needs group = one of {', '.join(sorted(groups))}")
    if kind in ("redirect", "stream") and not action.url:
        raise ConfigError(f"{where}: {kind} needs url")
    if action.handoff_group is not None and action.handoff_group not in groups:
        raise ConfigError(f"{where}: handoff_group {action.handoff_group!r} is not a group")
    if kind == "speak" and not action.text:
        raise ConfigError(f"{where}: speak needs text")
    if kind == "stream":
        _check_stream(where, action)
    _check_xml(where, _render_action, action)
    return action


def _stream_options(where: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Read a stream action's own keys; what they may hold is checked by `_check_stream`."""
    options: dict[str, Any] = {}
    for key in ("bidirectional", "keep_call_alive"):
        value = spec.get(key, True)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be true or false")
        options[key] = value
    content_type = spec.get("content_type", documents.STREAM_CONTENT_TYPE)
    if content_type not in STREAM_CONTENT_TYPES:
        raise ConfigError(f"{where}.content_type must be one of {', '.join(STREAM_CONTENT_TYPES)}")
    options["content_type"] = content_type
    headers = spec.get("extra_headers", {})
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}.extra_headers must be a table of name = value")
    options["extra_headers"] = tuple(headers.items())
    return options


def _check_stream(where: str, action: Action) -> None:
    """Refuse a stream Plivo would not connect, hold or carry whole, naming the key."""
    _check_stream_url(f"{where}.url", str(action.url))
    # The <Stream> is the whole answer: nothing follows it for the call to do.
    if not action.bidirectional:
        raise ConfigError(
            f"{where}.bidirectional must be true: Plivo holds the call on a <Stream> "
            "(keepCallAlive) only when it is bidirectional, so a one-way stream would hang up"
        )
    if not action.keep_call_alive:
        raise ConfigError(
            f"{where}.keep_call_alive must be true: without it Plivo goes on past the <Stream> "
            "to the end of the answer and hangs up"
        )
    reserved = {*STREAM_CALL_HEADERS, HANDOFF_GROUP_HEADER}
    for name, value in action.extra_headers:
        if not _PLAIN.fullmatch(name):
            raise ConfigError(f"{where}.extra_headers: name {name!r} must be letters and digits")
        if name.lower() in reserved:
            raise ConfigError(
                f"{where}.extra_headers: {name} is set for each call; use another name"
            )
        # The value is never echoed: an operator may put a shared secret there.
        if not isinstance(value, str) or not _PLAIN.fullmatch(value):
            raise ConfigError(f"{where}.extra_headers.{name} must be letters and digits")
    size = len(",".join(f"{k}={v}" for k, v in action.stream_fixed_headers().items()).encode())
    if size > STREAM_FIXED_HEADERS_MAX:
        counted = f" with {HANDOFF_GROUP_HEADER}" if action.handoff_group is not None else ""
        raise ConfigError(
            f"{where}.extra_headers: {size} bytes{counted}, over {STREAM_FIXED_HEADERS_MAX}: "
            f"half of Plivo's {STREAM_EXTRA_HEADERS_MAX} is kept for "
            f"{', '.join(STREAM_CALL_HEADERS)}"
        )


def _check_stream_url(where: str, url: str) -> None:
    """Require wss://, allowing plain ws:// only to this machine, for local development."""
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname or "", parts.port  # .port raises outside 0-65535
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if parts.scheme == "wss":
        return
    if parts.scheme == "ws" and _is_loopback(host):
        return
    raise ConfigError(
        f"{where}: a stream needs wss:// (ws:// only to a loopback address, for local development)"
    )


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _render_action(action: Action) -> None:
    if action.kind == "redirect" and action.url:
        documents.redirect_to(action.url)
    elif action.kind == "speak" and action.text:
        documents.speak_then_hangup(action.text, action.voice, action.language)
    elif action.kind == "stream" and action.url:
        documents.stream_to_ai(
            action.url,
            action.stream_fixed_headers(),
            content_type=action.content_type,
            bidirectional=action.bidirectional,
            keep_call_alive=action.keep_call_alive,
        )


def _match(where: str, spec: Mapping[str, Any]) -> Match:
    types = None
    if "sip_auth_type" in spec:
        types = frozenset(_str_list(f"{where}.sip_auth_type", spec["sip_auth_type"]))
        unknown = types - {*SIP_AUTH_TYPES, AUTH_NONE}
        if unknown:
            raise ConfigError(
                f"{where}.sip_auth_type: unknown {', '.join(sorted(unknown))}; use "
                f"{', '.join(SIP_AUTH_TYPES)} or {AUTH_NONE}"
            )
    networks = None
    if "source_cidr" in spec:
        try:
            networks = tuple(
                ipaddress.ip_network(cidr, strict=False)
                for cidr in _str_list(f"{where}.source_cidr", spec["source_cidr"])
            )
        except ValueError as exc:
            raise ConfigError(f"{where}.source_cidr: {exc}") from None
    return Match(
        sip_auth_types=types,
        sip_users=(
            frozenset(_str_list(f"{where}.sip_user", spec["sip_user"]))
            if "sip_user" in spec
            else None
        ),
        source_networks=networks,
        to=_pattern(f"{where}.to", spec["to"]) if "to" in spec else None,
        from_=_pattern(f"{where}.from", spec["from"]) if "from" in spec else None,
    )


def _quarantine(spec: Any) -> Quarantine:
    spec = check_table("quarantine", spec, _QUARANTINE_KEYS)
    default = Quarantine()
    after = spec.get("after", default.after)
    if isinstance(after, bool) or not isinstance(after, int):
        raise ConfigError("quarantine.after must be a whole number")
    if not 1 <= after <= _MAX_QUARANTINE_AFTER:
        raise ConfigError(f"quarantine.after must be 1-{_MAX_QUARANTINE_AFTER}")
    cool_down = spec.get("cool_down")
    if cool_down is None:
        return Quarantine(after, default.cool_down)
    try:
        span = parse_span(cool_down)
    except ValidationError:
        raise ConfigError(
            'quarantine.cool_down must be a duration like "90s", "15m", "1h" or "1d"'
        ) from None
    return Quarantine(after, span)


def _check_xml(where: str, build: Callable[..., object], *args: Any) -> None:
    """Build the XML a config section will produce, turning a limit breach into ConfigError."""
    try:
        build(*args)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def load_voice_config(path: Path, environ: Mapping[str, str]) -> VoiceConfig:
    """Parse and check the voice config; every problem is a ConfigError naming its key."""
    raw = read_toml(path, "VOICE_CONFIG")
    check_table("VOICE_CONFIG", raw, {"answer", "rules", "groups", "agents", "quarantine"})
    base = path.resolve().parent

    agent_specs = _named_tables("agents", raw.get("agents", {}))
    agents = {}
    for name, spec in agent_specs.items():
        if not _NAME.match(name):
            raise ConfigError(f"agents.{name}: names are letters, digits, _ and - (max 64)")
        agents[name] = _agent(name, spec, environ, base)
        # Checked on its own, so an error names the agent (even one in no group yet).
        _check_xml(f"agents.{name}", documents.agent_user, agents[name])

    group_specs = _named_tables("groups", raw.get("groups", {}))
    groups = {}
    for name, spec in group_specs.items():
        if not _NAME.match(name):
            raise ConfigError(f"groups.{name}: names are letters, digits, _ and - (max 64)")
        group = _group(name, spec, agents)
        for attempt in range(group.attempts()):
            _check_xml(f"groups.{name}", documents.dial_group, group, attempt, _CHECK_URL)
        _check_xml(f"groups.{name}.fallback", documents.fallback, group.fallback)
        groups[name] = group

    answer = check_table("answer", raw.get("answer", {}), _ANSWER_KEYS)
    methods = tuple(m.upper() for m in _str_list("answer.methods", answer.get("methods", "POST")))
    if not set(methods) <= {"GET", "POST"}:
        raise ConfigError("answer.methods must be POST, GET or both")

    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError("rules must be an array of tables ([[rules]])")
    rules = []
    seen: set[str] = set()
    for index, raw_rule in enumerate(rules_raw):
        rule_name = raw_rule.get("name") if isinstance(raw_rule, dict) else None
        where = f"rules[{index}]" + (f" ({rule_name})" if rule_name else "")
        spec = check_table(where, raw_rule, {"name", *_MATCH_KEYS, *_ACTION_KEYS})
        if not isinstance(rule_name, str) or not rule_name or rule_name in seen:
            raise ConfigError(f"{where}: every rule needs a unique name")
        seen.add(rule_name)
        rules.append(Rule(rule_name, _match(where, spec), _action(where, spec, groups)))

    defaults = {}
    for key in ("default", "unauthenticated_sip"):
        spec = check_table(f"answer.{key}", answer.get(key, {"action": "reject"}), _ACTION_KEYS)
        defaults[key] = _action(f"answer.{key}", spec, groups)
    return VoiceConfig(
        answer_methods=methods,
        policy=Policy(tuple(rules), defaults["default"], defaults["unauthenticated_sip"]),
        groups=groups,
        quarantine=_quarantine(raw.get("quarantine", {})),
    )
