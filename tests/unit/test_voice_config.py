"""Tests for voice_config.load_voice_config: the shipped sample, every refusal, secret handling.

Configs are written into pytest's tmp_path from small TOML templates, so each failure case
differs from a config that loads by exactly one key.
"""

from __future__ import annotations

import ipaddress
import re
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sipguard.calls.agents import Closed, Fallback
from sipguard.calls.documents import stream_headers, stream_to_ai
from sipguard.calls.forms import InboundCall
from sipguard.calls.hours import Status
from sipguard.calls.routing import STREAM_CALL_HEADERS, Action, decide, stream_call_headers
from sipguard.calls.voice_config import STREAM_FIXED_HEADERS_MAX, VoiceConfig, load_voice_config
from sipguard.errors import ConfigError
from sipguard.secret import Secret
from tests.support.config import CANARIES, CAROL_PASSWORD, DATA
from tests.support.signing import inbound

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "voice.sample.toml"
SAMPLE_ENV = {
    "AGENT_ALICE_PASSWORD": "Canary-Sample-Alice-1",
    "AGENT_BOB_PASSWORD": "Canary-Bob-22",
}
PASSWORD = "Canary-Agent-Pw-7Q2x"  # a valid 8-128 character password
ENV = {"AGENT_A_PASSWORD": PASSWORD}
RULE = 'sip_auth_type = "credential"\naction = "dial"\ngroup = "g"'
AGENT = 'uri = "sip:a@pbx.example.test"'
CREDENTIAL_AGENT = AGENT + '\nusername = "a"\npassword_env = "AGENT_A_PASSWORD"'


def voice_toml(
    *,
    top: str = "",
    answer: str = 'methods = ["POST"]',
    default: str = '{ action = "reject" }',
    unauthenticated_sip: str = '{ action = "reject" }',
    rules: str | None = None,
    rule: str = RULE,
    group: str = 'strategy = "simultaneous"\nagents = ["a"]',
    fallback: str = 'action = "hangup"',
    agent: str = AGENT,
    extra: str = "",
) -> str:
    """A small valid config; each keyword replaces one section's body."""
    if rules is None:
        rules = f'[[rules]]\nname = "r1"\n{rule}\n'
    return (
        f"{top}\n"
        f"[answer]\n{answer}\ndefault = {default}\nunauthenticated_sip = {unauthenticated_sip}\n\n"
        f"{rules}\n"
        f"[groups.g]\n{group}\n[groups.g.fallback]\n{fallback}\n\n"
        f"[agents.a]\n{agent}\n\n"
        f"{extra}\n"
    )


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> VoiceConfig:
    path = tmp_path / "voice.toml"
    path.write_text(text, encoding="utf-8")
    return load_voice_config(path, ENV if environ is None else environ)


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """Return the ConfigError message for `text`, failing if it loads."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return caught.value.message


def test_template_loads(tmp_path: Path) -> None:
    """The template every failure case starts from is itself valid."""
    config = load(tmp_path, voice_toml())
    assert [rule.name for rule in config.policy.rules] == ["r1"]
    assert list(config.groups) == ["g"]


# --- the shipped sample and the suite's data config -----------------------------------------


def test_sample_config_loads(tmp_path: Path) -> None:
    config = load_voice_config(SAMPLE, SAMPLE_ENV)
    assert config.answer_methods == ("POST",)
    assert [rule.name for rule in config.policy.rules] == ["contact-centre-pbx", "ai-first"]
    pbx, ai = config.policy.rules
    assert pbx.match.sip_auth_types == frozenset({"ip_acl_and_credential"})
    assert pbx.match.sip_users == frozenset({"frontdesk"})
    assert pbx.match.source_networks == (
        ipaddress.ip_network("203.0.113.0/24"),
        ipaddress.ip_network("2001:db8:100::/48"),
    )
    assert pbx.action == Action("dial", group="support")
    assert ai.match.sip_auth_types == frozenset({"ip_acl", "credential", "ip_acl_and_credential"})
    assert ai.action.kind == "redirect"
    assert ai.action.handoff_group == "support"
    assert config.policy.unauthenticated_sip == Action("reject")
    assert config.policy.default.kind == "speak"
    support = config.groups["support"]
    assert support.strategy == "sequential"
    assert [agent.name for agent in support.agents] == ["alice", "bob"]
    assert support.timeout == 20
    assert support.fallback.kind == "voicemail"
    assert support.fallback.max_length == 120
    assert [agent.password for agent in support.agents] == [
        Secret(SAMPLE_ENV["AGENT_ALICE_PASSWORD"]),
        Secret(SAMPLE_ENV["AGENT_BOB_PASSWORD"]),
    ]


@pytest.mark.parametrize("missing", ["AGENT_ALICE_PASSWORD", "AGENT_BOB_PASSWORD"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_sample_config_without_a_password_names_the_variable(missing: str, how: str) -> None:
    environ = {k: v for k, v in SAMPLE_ENV.items() if k != missing}
    if how == "empty":
        environ[missing] = ""
    with pytest.raises(ConfigError) as caught:
        load_voice_config(SAMPLE, environ)
    agent = "alice" if "ALICE" in missing else "bob"
    assert caught.value.message == f"agents.{agent}: environment variable {missing} is not set"


def test_sample_documents_every_key_the_loader_accepts() -> None:
    """Every key the loader knows is mentioned in the sample (commented or not)."""
    from sipguard.calls import voice_config

    text = SAMPLE.read_text(encoding="utf-8")
    known = (
        voice_config._ACTION_KEYS
        | voice_config._MATCH_KEYS
        | voice_config._GROUP_KEYS
        | voice_config._FALLBACK_KEYS
        | voice_config._HOURS_KEYS
        | voice_config._AGENT_KEYS
        | voice_config._ANSWER_KEYS
    )
    undocumented = sorted(key for key in known if not re.search(rf"\b{key}\b", text))
    assert undocumented == [], f"not in voice.sample.toml: {undocumented}"


def test_suite_data_config_loads_with_passwords_from_env_and_file() -> None:
    config = load_voice_config(DATA / "voice.toml", CANARIES)
    assert [rule.name for rule in config.policy.rules] == [
        "pbx-both",
        "night-desk",
        "day-desk",
        "legacy-trunk",
        "ai-first",
    ]
    oncall = {agent.name: agent for agent in config.groups["oncall"].agents}
    assert oncall["carol"].password == Secret(CAROL_PASSWORD)
    assert oncall["dave"].username is None
    assert oncall["dave"].password is None
    assert set(config.secrets()) == {*CANARIES.values(), CAROL_PASSWORD}


def test_loaded_policy_routes_as_written() -> None:
    """The parsed rules, not just their shape: a PBX call dials support, a stray SIP call hangs."""
    policy = load_voice_config(DATA / "voice.toml", CANARIES).policy
    pbx = InboundCall.from_form(
        inbound(
            SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk", SIPSourceIP="203.0.113.9"
        )
    )
    assert decide(pbx, policy).rule == "pbx-both"
    legacy = InboundCall.from_form(inbound(From="sip:old@legacy.example.net"))
    assert decide(legacy, policy).rule == "legacy-trunk"
    stray = InboundCall.from_form(inbound())
    assert decide(stray, policy).rule == "unauthenticated-sip"


# --- plaintext passwords and password sources ---------------------------------------------------


@pytest.mark.parametrize(
    "agent",
    [
        AGENT + f'\nusername = "a"\npassword = "{PASSWORD}"',
        AGENT + f'\npassword = "{PASSWORD}"',
        CREDENTIAL_AGENT + f'\npassword = "{PASSWORD}"',
        AGENT + f'\nusername = "a"\npassword = "{PASSWORD}"\ntypo_key = 1',
    ],
    ids=["with-username", "alone", "with-password_env", "with-unknown-key"],
)
def test_plaintext_password_is_refused_without_echoing_it(tmp_path: Path, agent: str) -> None:
    message = error(tmp_path, voice_toml(agent=agent))
    assert message.startswith("agents.a: a plaintext password in VOICE_CONFIG is refused")
    assert "password_env" in message
    assert "password_file" in message
    assert PASSWORD not in message


def test_plaintext_password_on_an_agent_in_no_group_is_refused(tmp_path: Path) -> None:
    extra = f'[agents.spare]\nuri = "sip:s@x.test"\nusername = "s"\npassword = "{PASSWORD}"'
    message = error(tmp_path, voice_toml(extra=extra))
    assert message.startswith("agents.spare: a plaintext password")
    assert PASSWORD not in message


def test_password_env_is_read(tmp_path: Path) -> None:
    config = load(tmp_path, voice_toml(agent=CREDENTIAL_AGENT))
    (agent,) = config.groups["g"].agents
    assert agent.username == "a"
    assert agent.password == Secret(PASSWORD)
    assert agent.password.reveal() == PASSWORD


def test_password_env_naming_an_unset_variable_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(agent=CREDENTIAL_AGENT), environ={})
    assert message == "agents.a: environment variable AGENT_A_PASSWORD is not set"


def test_password_file_is_relative_to_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc" / "sipguard"
    (config_dir / "secrets").mkdir(parents=True)
    (config_dir / "secrets" / "a.pw").write_text(f"  {PASSWORD}\n", encoding="utf-8")
    path = config_dir / "voice.toml"
    agent = AGENT + '\nusername = "a"\npassword_file = "secrets/a.pw"'
    path.write_text(voice_toml(agent=agent), encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a cwd-relative lookup would find nothing here
    config = load_voice_config(Path("..") / "etc" / "sipguard" / "voice.toml", {})
    assert config.groups["g"].agents[0].password == Secret(PASSWORD)


def test_password_file_may_be_absolute(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.pw"
    secret.write_text(PASSWORD, encoding="utf-8")
    agent = AGENT + f'\nusername = "a"\npassword_file = "{secret}"'
    (sub := tmp_path / "conf").mkdir()
    config = load(sub, voice_toml(agent=agent), environ={})
    assert config.groups["g"].agents[0].password == Secret(PASSWORD)


def test_missing_password_file_is_refused_naming_agent_and_path(tmp_path: Path) -> None:
    agent = AGENT + '\nusername = "a"\npassword_file = "nope.pw"'
    message = error(tmp_path, voice_toml(agent=agent))
    assert message.startswith(f"agents.a: cannot read password_file {tmp_path / 'nope.pw'}")


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blank.pw").write_text(" \n", encoding="utf-8")
    agent = AGENT + '\nusername = "a"\npassword_file = "blank.pw"'
    message = error(tmp_path, voice_toml(agent=agent))
    assert message == f"agents.a: password_file {tmp_path / 'blank.pw'} is empty"


def test_password_env_and_password_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.pw").write_text(PASSWORD, encoding="utf-8")
    agent = CREDENTIAL_AGENT + '\npassword_file = "a.pw"'
    message = error(tmp_path, voice_toml(agent=agent))
    assert message == "agents.a: set password_env or password_file, not both"


def test_username_without_password_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(agent=AGENT + '\nusername = "a"'))
    assert message.startswith("agents.a: username is set")
    assert "password_env or password_file" in message


@pytest.mark.parametrize(
    "source",
    ['password_env = "AGENT_A_PASSWORD"', 'password_file = "a.pw"'],
    ids=["password_env", "password_file"],
)
def test_password_without_username_is_refused(tmp_path: Path, source: str) -> None:
    (tmp_path / "a.pw").write_text(PASSWORD, encoding="utf-8")
    message = error(tmp_path, voice_toml(agent=f"{AGENT}\n{source}"))
    assert message == "agents.a: a password is set without a username"


def test_agent_without_credentials_has_none(tmp_path: Path) -> None:
    (agent,) = load(tmp_path, voice_toml()).groups["g"].agents
    assert agent.username is None
    assert agent.password is None


def test_agent_without_uri_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(agent='username = "a"'))
    assert message == "agents.a: uri (sip:user@host) is required"


# --- Plivo's <User> limits, checked at load time --------------------------------------------


@pytest.mark.parametrize("length", [7, 129])
def test_password_outside_plivo_limits_is_refused_without_echoing_it(
    tmp_path: Path, length: int
) -> None:
    password = ("Canary9x" * 20)[:length]
    message = error(tmp_path, voice_toml(agent=CREDENTIAL_AGENT), {"AGENT_A_PASSWORD": password})
    assert message.startswith("agents.a: User.sipAuthPassword")
    assert "8-128" in message
    assert password not in message


@pytest.mark.parametrize("length", [8, 128])
def test_password_at_plivo_limits_loads(tmp_path: Path, length: int) -> None:
    password = ("Canary9x" * 20)[:length]
    config = load(tmp_path, voice_toml(agent=CREDENTIAL_AGENT), {"AGENT_A_PASSWORD": password})
    assert config.secrets() == (password,)


@pytest.mark.parametrize(
    ("headers", "culprit"),
    [
        ('{ ABCDEFGHIJKLMNOPQRSTUVWXY = "x" }', "over 24 characters"),
        ('{ PlivoX = "x" }', "prefix Plivo reserves"),
        ('{ plivoteam = "x" }', "prefix Plivo reserves"),
        ('{ Team = "tier 2" }', "letters, digits and %"),
        ('{ "X-Team" = "x" }', "letters and digits only"),
        (f'{{ Team = "{"v" * 121}" }}', "over 120 characters"),
    ],
    ids=["name-25-chars", "PlivoX", "plivo-lowercase", "value-space", "name-dash", "value-121"],
)
def test_sip_headers_breaking_plivo_limits_are_refused(
    tmp_path: Path, headers: str, culprit: str
) -> None:
    message = error(tmp_path, voice_toml(agent=f"{AGENT}\nsip_headers = {headers}"))
    assert message.startswith("agents.a: User.sipHeaders")
    assert culprit in message


def test_sip_headers_at_plivo_limits_load(tmp_path: Path) -> None:
    name, value = "A" * 24, "v%" * 60
    config = load(tmp_path, voice_toml(agent=f'{AGENT}\nsip_headers = {{ {name} = "{value}" }}'))
    assert config.groups["g"].agents[0].sip_headers == {name: value}


def test_sip_headers_must_be_a_table(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(agent=f'{AGENT}\nsip_headers = "Team=x"'))
    assert message == "agents.a.sip_headers must be a table of name = value"


@pytest.mark.parametrize(
    ("agent", "environ"),
    [
        (f'{AGENT}\nsip_headers = {{ PlivoX = "x" }}', ENV),
        (CREDENTIAL_AGENT, {"AGENT_A_PASSWORD": "Short7x"}),
    ],
    ids=["sip_headers", "password"],
)
def test_user_limit_errors_name_the_agent(
    tmp_path: Path, agent: str, environ: dict[str, str]
) -> None:
    assert "agents.a" in error(tmp_path, voice_toml(agent=agent), environ)


@pytest.mark.parametrize(
    "spare",
    [
        'uri = "not-a-sip-uri"',
        'uri = "sip:s@x.test"\nusername = "s"\npassword_env = "SHORT"',
        'uri = "sip:s@x.test"\nsip_headers = { PlivoX = "x" }',
    ],
    ids=["uri", "password", "sip_headers"],
)
def test_agent_in_no_group_is_still_checked(tmp_path: Path, spare: str) -> None:
    error(tmp_path, voice_toml(extra=f"[agents.spare]\n{spare}"), {**ENV, "SHORT": "Short7x"})


# --- unknown keys at every level --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "where", "key"),
    [
        ({"top": "colour = 1"}, "VOICE_CONFIG", "colour"),
        ({"answer": 'methods = ["POST"]\nmethod = "GET"'}, "answer", "method"),
        ({"default": '{ action = "reject", reson = "busy" }'}, "answer.default", "reson"),
        (
            {"unauthenticated_sip": '{ action = "reject", txt = "x" }'},
            "answer.unauthenticated_sip",
            "txt",
        ),
        ({"rule": RULE + '\nsip_auth_types = "credential"'}, "rules[0] (r1)", "sip_auth_types"),
        ({"rule": RULE + '\nsource_ip = "10.0.0.0/8"'}, "rules[0] (r1)", "source_ip"),
        ({"group": 'agents = ["a"]\nring_timeout = 5'}, "groups.g", "ring_timeout"),
        (
            {"fallback": 'action = "hangup"\ntext = "Bye."\nmaxlength = 9'},
            "groups.g.fallback",
            "maxlength",
        ),
        ({"agent": AGENT + '\nuser = "a"'}, "agents.a", "user"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unknown_key_is_refused_naming_it_and_where(
    tmp_path: Path, overrides: dict[str, str], where: str, key: str
) -> None:
    message = error(tmp_path, voice_toml(**overrides))
    assert message == f"{where}: unknown key(s) {key}"


def test_several_unknown_keys_are_all_named(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(agent=AGENT + "\nzeta = 1\nalpha = 2"))
    assert message == "agents.a: unknown key(s) alpha, zeta"


@pytest.mark.parametrize("section", ["agents", "groups"])
def test_array_of_tables_where_a_table_belongs_is_a_config_error(
    tmp_path: Path, section: str
) -> None:
    message = error(tmp_path, f'[[{section}]]\nuri = "sip:a@x.test"\n')
    assert message == f"{section} must be named tables like [{section}.NAME], not [[{section}]]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('agents = "alice"', "agents must be named tables like [agents.NAME], not [[agents]]"),
        ('groups = "support"', "groups must be named tables like [groups.NAME], not [[groups]]"),
        ('answer = "POST"', "answer must be a table"),
        ("[rules]\nname = 'x'", "rules must be an array of tables ([[rules]])"),
        ("rules = [1]", "rules[0] must be a table"),
        ('[groups]\ng = "x"', "groups.g must be a table"),
    ],
)
def test_sections_of_the_wrong_shape_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text + "\n") == expected


def test_toml_syntax_error_names_voice_config(tmp_path: Path) -> None:
    message = error(tmp_path, "[answer\nmethods = POST\n")
    assert message.startswith(f"VOICE_CONFIG {tmp_path / 'voice.toml'}:")


def test_missing_config_file_names_voice_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_voice_config(tmp_path / "absent.toml", {})
    assert caught.value.message.startswith(f"VOICE_CONFIG: cannot read {tmp_path / 'absent.toml'}")


@pytest.mark.parametrize("section", ["agents", "groups"])
@pytest.mark.parametrize("name", ["has space", "dot.ted", "x" * 65])
def test_bad_agent_and_group_names_are_refused(tmp_path: Path, section: str, name: str) -> None:
    body = (
        'uri = "sip:a@x.test"'
        if section == "agents"
        else 'agents = []\nfallback = {action="hangup"}'
    )
    message = error(tmp_path, f'[{section}."{name}"]\n{body}\n')
    assert message == f"{section}.{name}: names are letters, digits, _ and - (max 64)"


# --- rules and actions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"rule": 'action = "dial"\ngroup = "nosuch"'},
            "rules[0] (r1): dial needs group = one of g",
        ),
        ({"rule": 'action = "dial"'}, "rules[0] (r1): dial needs group = one of g"),
        (
            {"rule": 'action = "redirect"\nurl = "https://ai.test/a"\nhandoff_group = "nosuch"'},
            "rules[0] (r1): handoff_group 'nosuch' is not a group",
        ),
        ({"rule": 'action = "redirect"'}, "rules[0] (r1): redirect needs url"),
        ({"rule": 'action = "redirect"\nhandoff_group = "g"'}, "rules[0] (r1): redirect needs url"),
        ({"rule": 'action = "speak"'}, "rules[0] (r1): speak needs text"),
        ({"rule": 'action = "speak"\ntext = ""'}, "rules[0] (r1): speak needs text"),
        (
            {"rule": 'action = "forward"'},
            "rules[0] (r1).action must be dial, redirect, speak, reject or stream",
        ),
        ({"rule": 'sip_auth_type = "credential"'}, "rules[0] (r1).action must be dial, redirect"),
        ({"default": '{ action = "speak" }'}, "answer.default: speak needs text"),
        ({"default": '{ action = "dial", group = "x" }'}, "answer.default: dial needs group"),
        (
            {"unauthenticated_sip": '{ action = "redirect" }'},
            "answer.unauthenticated_sip: redirect",
        ),
        ({"unauthenticated_sip": '{ action = "drop" }'}, "answer.unauthenticated_sip.action must"),
    ],
)
def test_incomplete_actions_are_refused(
    tmp_path: Path, overrides: dict[str, str], expected: str
) -> None:
    assert error(tmp_path, voice_toml(**overrides)).startswith(expected)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('action = "redirect"\nurl = "ftp://ai.test/a"', "rules[0] (r1): Redirect"),
        ('action = "redirect"\nurl = "ai.test/answer"', "rules[0] (r1): Redirect"),
        ('action = "speak"\ntext = "hi"\nvoice = "ROBOT"', "rules[0] (r1): Speak.voice"),
    ],
)
def test_actions_are_checked_against_plivo_xml_limits(
    tmp_path: Path, rule: str, expected: str
) -> None:
    assert error(tmp_path, voice_toml(rule=rule)).startswith(expected)


@pytest.mark.parametrize("value", ['"digest"', '"IP_ACL"', '["credential", "ip-acl"]', '""', "3"])
def test_bad_sip_auth_type_is_refused(tmp_path: Path, value: str) -> None:
    message = error(tmp_path, voice_toml(rule=f'sip_auth_type = {value}\naction = "reject"'))
    assert message.startswith("rules[0] (r1).sip_auth_type")


def test_bad_sip_auth_type_message_names_the_value_and_the_choices(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(rule='sip_auth_type = "digest"\naction = "reject"'))
    assert message == (
        "rules[0] (r1).sip_auth_type: unknown digest; use "
        "ip_acl, credential, ip_acl_and_credential or none"
    )


@pytest.mark.parametrize(
    "value",
    ['"ip_acl"', '"credential"', '"ip_acl_and_credential"', '"none"', '["none", "ip_acl"]'],
)
def test_every_documented_sip_auth_type_loads(tmp_path: Path, value: str) -> None:
    config = load(tmp_path, voice_toml(rule=f'sip_auth_type = {value}\naction = "reject"'))
    expected = {value.strip('"')} if value.startswith('"') else {"none", "ip_acl"}
    assert config.policy.rules[0].match.sip_auth_types == frozenset(expected)


@pytest.mark.parametrize(
    "cidr",
    ['"203.0.113.0/33"', '"not-a-network"', '"2001:db8::/129"', '["10.0.0.0/8", "300.1.1.1"]'],
)
def test_bad_source_cidr_is_refused(tmp_path: Path, cidr: str) -> None:
    message = error(tmp_path, voice_toml(rule=f'source_cidr = {cidr}\naction = "reject"'))
    assert message.startswith("rules[0] (r1).source_cidr: ")


def test_source_cidr_with_host_bits_is_taken_as_its_network(tmp_path: Path) -> None:
    config = load(tmp_path, voice_toml(rule='source_cidr = "203.0.113.77/24"\naction = "reject"'))
    networks = config.policy.rules[0].match.source_networks
    assert networks == (ipaddress.ip_network("203.0.113.0/24"),)


@pytest.mark.parametrize("key", ["to", "from"])
@pytest.mark.parametrize("pattern", ["'('", "'[a-'", "'*sip'"])
def test_bad_regex_is_refused_naming_the_key(tmp_path: Path, key: str, pattern: str) -> None:
    message = error(tmp_path, voice_toml(rule=f'{key} = {pattern}\naction = "reject"'))
    assert message.startswith(f"rules[0] (r1).{key}: invalid regular expression")


def test_regex_must_be_a_string(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(rule='to = ["a"]\naction = "reject"'))
    assert message == "rules[0] (r1).to must be a regular expression string"


def test_duplicate_rule_name_is_refused(tmp_path: Path) -> None:
    rules = '[[rules]]\nname = "r1"\naction = "reject"\n[[rules]]\nname = "r1"\naction = "reject"\n'
    assert (
        error(tmp_path, voice_toml(rules=rules)) == "rules[1] (r1): every rule needs a unique name"
    )


@pytest.mark.parametrize("name", [None, '""', "7"], ids=["missing", "empty", "number"])
def test_missing_rule_name_is_refused(tmp_path: Path, name: str | None) -> None:
    line = f"name = {name}\n" if name is not None else ""
    rules = f'[[rules]]\nname = "r0"\naction = "reject"\n[[rules]]\n{line}action = "reject"\n'
    message = error(tmp_path, voice_toml(rules=rules))
    assert message.startswith("rules[1]")
    assert message.endswith(": every rule needs a unique name")


def test_rules_keep_file_order_and_parse_every_condition(tmp_path: Path) -> None:
    rules = (
        '[[rules]]\nname = "z-first"\nsip_user = "frontdesk"\nto = "\\\\+1.*"\n'
        'from = "sip:.*"\nsource_cidr = "2001:db8::/32"\naction = "dial"\ngroup = "g"\n'
        '[[rules]]\nname = "a-second"\naction = "speak"\ntext = "Hello"\n'
    )
    config = load(tmp_path, voice_toml(rules=rules))
    first, second = config.policy.rules
    assert [first.name, second.name] == ["z-first", "a-second"]
    assert first.match.sip_auth_types is None
    assert first.match.sip_users == frozenset({"frontdesk"})
    assert first.match.to is not None and first.match.to.pattern == "\\+1.*"
    assert first.match.from_ is not None and first.match.from_.pattern == "sip:.*"
    assert first.match.source_networks == (ipaddress.ip_network("2001:db8::/32"),)
    assert second.action == Action("speak", text="Hello")


def test_answer_defaults_to_reject_both_ways(tmp_path: Path) -> None:
    text = '[groups.g]\nagents = ["a"]\n[groups.g.fallback]\naction = "hangup"\n'
    text += f"[agents.a]\n{AGENT}\n"
    config = load(tmp_path, text)
    assert config.answer_methods == ("POST",)
    assert config.policy.rules == ()
    assert config.policy.default == Action("reject")
    assert config.policy.unauthenticated_sip == Action("reject")


# --- stream actions -----------------------------------------------------------------------------

WSS = "wss://ai.test/plivo/stream"
STREAM = f'action = "stream"\nurl = "{WSS}"'


def stream_action(tmp_path: Path, rule: str) -> Action:
    return load(tmp_path, voice_toml(rule=rule)).policy.rules[0].action


def test_stream_action_loads_with_plivo_friendly_defaults(tmp_path: Path) -> None:
    assert stream_action(tmp_path, STREAM) == Action(
        "stream",
        url=WSS,
        bidirectional=True,
        keep_call_alive=True,
        content_type="audio/x-mulaw;rate=8000",
        extra_headers=(),
    )


def test_stream_action_reads_every_key(tmp_path: Path) -> None:
    rule = (
        STREAM + '\nhandoff_group = "g"\ncontent_type = "audio/x-l16;rate=16000"\n'
        'bidirectional = true\nkeep_call_alive = true\nextra_headers = { tenant = "acme", v = "2" }'
    )
    action = stream_action(tmp_path, rule)
    assert action.handoff_group == "g"
    assert action.content_type == "audio/x-l16;rate=16000"
    assert action.extra_headers == (("tenant", "acme"), ("v", "2"))
    assert action.stream_fixed_headers() == {"tenant": "acme", "v": "2", "handoffgroup": "g"}


@pytest.mark.parametrize(
    "content_type", ["audio/x-l16;rate=8000", "audio/x-l16;rate=16000", "audio/x-mulaw;rate=8000"]
)
def test_each_of_plivos_content_types_loads(tmp_path: Path, content_type: str) -> None:
    action = stream_action(tmp_path, STREAM + f'\ncontent_type = "{content_type}"')
    assert action.content_type == content_type


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8765/ws",
        "ws://127.9.9.9/ws",
        "ws://[::1]:8765/ws",
        "ws://localhost:8765/ws",
        "wss://ai.test:443/plivo/stream?tenant=acme",
        "wss://203.0.113.5/ws",
    ],
)
def test_stream_url_is_wss_or_plain_ws_to_this_machine(tmp_path: Path, url: str) -> None:
    assert stream_action(tmp_path, f'action = "stream"\nurl = "{url}"').url == url


@pytest.mark.parametrize(
    "url",
    [
        "ws://ai.test/plivo/stream",
        "ws://203.0.113.5/ws",
        "ws://localhost.ai.test/ws",
        "https://ai.test/plivo/stream",
        "http://127.0.0.1/ws",
        "ai.test/plivo/stream",
    ],
)
def test_stream_url_of_another_scheme_or_plain_ws_elsewhere_is_refused(
    tmp_path: Path, url: str
) -> None:
    message = error(tmp_path, voice_toml(rule=f'action = "stream"\nurl = "{url}"'))
    assert message == (
        "rules[0] (r1).url: a stream needs wss:// (ws:// only to a loopback address, "
        "for local development)"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://", "rules[0] (r1): Stream: must be an absolute ws:// or wss:// URL"),
        ("wss://ai.test/a b", "rules[0] (r1): Stream: must be an absolute ws:// or wss:// URL"),
        ("wss://user@ai.test/ws", "rules[0] (r1): Stream: must be an absolute ws:// or wss://"),
        ("wss://ai.test:99999/ws", "rules[0] (r1).url: Port out of range"),
        ("WSS://ai.test/ws", "rules[0] (r1): Stream: must be an absolute ws:// or wss:// URL"),
    ],
)
def test_stream_url_of_a_bad_form_is_refused(tmp_path: Path, url: str, expected: str) -> None:
    message = error(tmp_path, voice_toml(rule=f'action = "stream"\nurl = "{url}"'))
    assert message.startswith(expected)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('action = "stream"', "rules[0] (r1): stream needs url"),
        ('action = "stream"\nurl = ""', "rules[0] (r1): stream needs url"),
        (
            STREAM + '\nhandoff_group = "nosuch"',
            "rules[0] (r1): handoff_group 'nosuch' is not a group",
        ),
        (
            STREAM + '\ncontent_type = "audio/wav"',
            "rules[0] (r1).content_type must be one of audio/x-l16;rate=8000, "
            "audio/x-l16;rate=16000, audio/x-mulaw;rate=8000",
        ),
        (STREAM + '\nbidirectional = "true"', "rules[0] (r1).bidirectional must be true or false"),
        (STREAM + "\nkeep_call_alive = 1", "rules[0] (r1).keep_call_alive must be true or false"),
        (
            STREAM + "\nbidirectional = false",
            "rules[0] (r1).bidirectional must be true: Plivo holds the call",
        ),
        (
            STREAM + "\nkeep_call_alive = false",
            "rules[0] (r1).keep_call_alive must be true: without it Plivo goes on past",
        ),
        (
            STREAM + '\nextra_headers = "tenant=acme"',
            "rules[0] (r1).extra_headers must be a table of name = value",
        ),
    ],
)
def test_bad_stream_options_are_refused(tmp_path: Path, rule: str, expected: str) -> None:
    assert error(tmp_path, voice_toml(rule=rule)).startswith(expected)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ('{ "user-id" = "1" }', "rules[0] (r1).extra_headers: name 'user-id' must be letters"),
        ('{ "" = "1" }', "rules[0] (r1).extra_headers: name '' must be letters and digits"),
        ('{ "é" = "1" }', "rules[0] (r1).extra_headers: name 'é' must be letters and digits"),
        ('{ tenant = "ac-me" }', "rules[0] (r1).extra_headers.tenant must be letters and digits"),
        ('{ tenant = "" }', "rules[0] (r1).extra_headers.tenant must be letters and digits"),
        ('{ tenant = "acme\\n" }', "rules[0] (r1).extra_headers.tenant must be letters"),
        ('{ "acme\\n" = "1" }', "rules[0] (r1).extra_headers: name 'acme\\n' must be letters"),
        ("{ tenant = 42 }", "rules[0] (r1).extra_headers.tenant must be letters and digits"),
        ("{ tenant = { a = 1 } }", "rules[0] (r1).extra_headers.tenant must be letters"),
    ],
)
def test_fixed_extra_headers_are_letters_and_digits(
    tmp_path: Path, headers: str, expected: str
) -> None:
    message = error(tmp_path, voice_toml(rule=f"{STREAM}\nextra_headers = {headers}"))
    assert message.startswith(expected)
    assert "ac-me" not in message  # a value is never echoed: it may be a shared secret


@pytest.mark.parametrize("name", [*STREAM_CALL_HEADERS, "handoffgroup", "From", "SIPAuthUser"])
def test_fixed_extra_headers_cannot_take_a_per_call_name(tmp_path: Path, name: str) -> None:
    message = error(tmp_path, voice_toml(rule=f'{STREAM}\nextra_headers = {{ {name} = "x" }}'))
    assert message == f"rules[0] (r1).extra_headers: {name} is set for each call; use another name"


def test_fixed_extra_headers_may_fill_half_of_plivos_512_bytes(tmp_path: Path) -> None:
    assert STREAM_FIXED_HEADERS_MAX == 256
    fits = "v" * (STREAM_FIXED_HEADERS_MAX - len("k="))
    action = stream_action(tmp_path, f'{STREAM}\nextra_headers = {{ k = "{fits}" }}')
    assert len(f"k={fits}") == 256 and action.extra_headers == (("k", fits),)
    message = error(tmp_path, voice_toml(rule=f'{STREAM}\nextra_headers = {{ k = "{fits}v" }}'))
    assert message == (
        "rules[0] (r1).extra_headers: 257 bytes, over 256: half of Plivo's "
        "512 is kept for from, to, sipauthtype, sipauthuser, sipsourceip"
    )


def test_the_handoff_group_header_counts_against_the_fixed_half(tmp_path: Path) -> None:
    room = STREAM_FIXED_HEADERS_MAX - len("k=") - len(",handoffgroup=g")
    rule = f'{STREAM}\nhandoff_group = "g"\nextra_headers = {{ k = "{"v" * room}" }}'
    assert stream_action(tmp_path, rule).stream_fixed_headers()["handoffgroup"] == "g"
    over = f'{STREAM}\nhandoff_group = "g"\nextra_headers = {{ k = "{"v" * (room + 1)}" }}'
    assert error(tmp_path, voice_toml(rule=over)).startswith(
        "rules[0] (r1).extra_headers: 257 bytes with handoffgroup, over 256"
    )


def test_the_fixed_half_counts_values_as_sent(tmp_path: Path) -> None:
    """A value starting with x is sent hex-encoded (so the AI decodes every header one way)."""
    raw = "x" + "v" * (STREAM_FIXED_HEADERS_MAX - len("k=") - 1)  # 256 bytes as written
    message = error(tmp_path, voice_toml(rule=f'{STREAM}\nextra_headers = {{ k = "{raw}" }}'))
    assert message.startswith(f"rules[0] (r1).extra_headers: {len('k=x') + 2 * len(raw)} bytes")


def test_the_fixed_half_leaves_room_for_a_typical_sip_calls_headers(tmp_path: Path) -> None:
    """The rule's purpose: beside the largest fixed headers, a PBX call's five values all fit."""
    fits = "v" * (STREAM_FIXED_HEADERS_MAX - len("k="))
    action = stream_action(tmp_path, f'{STREAM}\nextra_headers = {{ k = "{fits}" }}')
    call = InboundCall.from_form(
        inbound(
            SIPAuthType="ip_acl_and_credential",
            SIPAuthUser="frontdesk",
            SIPSourceIP="203.0.113.10",
        )
    )
    headers, dropped = stream_headers(action.stream_fixed_headers(), stream_call_headers(call))
    assert dropped == ()
    assert list(headers) == ["k", *STREAM_CALL_HEADERS]
    stream_to_ai(WSS, headers)  # and Plivo's 512 bytes still hold


@pytest.mark.parametrize(
    "key",
    [
        'content_type = "audio/x-mulaw;rate=8000"',
        "bidirectional = true",
        "keep_call_alive = true",
        'extra_headers = { tenant = "acme" }',
    ],
)
@pytest.mark.parametrize(
    "action", ['action = "redirect"\nurl = "https://ai.test/a"', 'action = "reject"']
)
def test_stream_keys_on_another_action_are_refused(tmp_path: Path, key: str, action: str) -> None:
    message = error(tmp_path, voice_toml(rule=f"{action}\n{key}"))
    name = key.split(" ", 1)[0]
    assert message == f'rules[0] (r1): {name} only apply to action = "stream"'


@pytest.mark.parametrize("section", ["default", "unauthenticated_sip"])
def test_answer_defaults_may_stream_too(tmp_path: Path, section: str) -> None:
    config = load(tmp_path, voice_toml(**{section: f'{{ action = "stream", url = "{WSS}" }}'}))
    assert getattr(config.policy, section) == Action("stream", url=WSS)


def test_the_sample_stream_example_loads_uncommented() -> None:
    """The sample's commented "ai-stream" rule is a working rule once uncommented."""
    text = SAMPLE.read_text(encoding="utf-8")
    start = text.index('# [[rules]]\n# name = "ai-stream"')
    block = text[start : text.index("\n\n", start)]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = load_voice_config_text(text.replace(block, uncommented))
    (stream,) = [rule for rule in config.policy.rules if rule.name == "ai-stream"]
    assert stream.action.kind == "stream"
    assert stream.action.url == "wss://ai-agent.example.com/plivo/stream"
    assert stream.action.stream_fixed_headers() == {"tenant": "acme", "handoffgroup": "support"}


def load_voice_config_text(text: str) -> VoiceConfig:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "voice.toml"
        path.write_text(text, encoding="utf-8")
        return load_voice_config(path, SAMPLE_ENV)


# --- groups -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ['"round-robin"', '"Sequential"', "1"])
def test_bad_strategy_is_refused(tmp_path: Path, strategy: str) -> None:
    message = error(tmp_path, voice_toml(group=f'strategy = {strategy}\nagents = ["a"]'))
    assert message == "groups.g.strategy must be simultaneous or sequential"


def test_strategy_defaults_to_simultaneous(tmp_path: Path) -> None:
    config = load(tmp_path, voice_toml(group='agents = ["a"]'))
    assert config.groups["g"].strategy == "simultaneous"


def test_missing_fallback_is_refused(tmp_path: Path) -> None:
    text = voice_toml().replace('[groups.g.fallback]\naction = "hangup"\n', "")
    assert error(tmp_path, text) == (
        "groups.g: fallback is required (voicemail, hangup or redirect)"
    )


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        ('action = "voice-mail"', "groups.g.fallback.action must be voicemail, hangup or redirect"),
        ('text = "Bye"', "groups.g.fallback.action must be"),
        ('action = "redirect"', "groups.g.fallback: a redirect fallback needs url"),
        ('action = "redirect"\nurl = "ai.test/after"', "groups.g.fallback: Redirect"),
        ('action = "voicemail"\nmax_length = 0', "groups.g.fallback: Record.maxLength"),
    ],
)
def test_bad_fallback_is_refused(tmp_path: Path, fallback: str, expected: str) -> None:
    assert error(tmp_path, voice_toml(fallback=fallback)).startswith(expected)


@pytest.mark.parametrize("strategy", ["simultaneous", "sequential"])
def test_group_without_agents_is_refused(tmp_path: Path, strategy: str) -> None:
    # A sequential group renders no <Dial> at load time, so only an explicit check catches it
    # (AgentGroup.agents_for(0) would raise IndexError when the group is dialled).
    message = error(tmp_path, voice_toml(group=f'strategy = "{strategy}"\nagents = []'))
    assert message == "groups.g.agents must not be empty"


def test_group_naming_an_unknown_agent_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, voice_toml(group='agents = ["a", "nobody", "ghost"]'))
    assert message == "groups.g.agents: no agent named nobody, ghost"


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ('agents = ["a"]\ntimeout = 0', "groups.g: Dial.timeout"),
        ('agents = ["a"]\ncaller_name = "' + "n" * 51 + '"', "groups.g: Dial.callerName"),
        ('agents = ["a"]\nconfirm_key = "10"', "groups.g: Dial.confirmKey"),
        ('agents = "a, b"', "groups.g.agents: no agent named a, b"),
        ("agents = [1]", "groups.g.agents must be a string or a list of strings"),
    ],
)
def test_group_dial_options_are_checked_at_load_time(
    tmp_path: Path, group: str, expected: str
) -> None:
    assert error(tmp_path, voice_toml(group=group)).startswith(expected)


# --- answer.methods ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        ('"POST"', ("POST",)),
        ('"GET"', ("GET",)),
        ('["POST"]', ("POST",)),
        ('["GET", "POST"]', ("GET", "POST")),
        ('["post", "get"]', ("POST", "GET")),
    ],
)
def test_answer_methods_accepts_post_and_get(
    tmp_path: Path, methods: str, expected: tuple[str, ...]
) -> None:
    assert load(tmp_path, voice_toml(answer=f"methods = {methods}")).answer_methods == expected


@pytest.mark.parametrize("methods", ['"PUT"', '["POST", "PUT"]', '"DELETE"', '"HEAD"'])
def test_answer_methods_refuses_anything_else(tmp_path: Path, methods: str) -> None:
    message = error(tmp_path, voice_toml(answer=f"methods = {methods}"))
    assert message == "answer.methods must be POST, GET or both"


def test_answer_methods_empty_list_is_refused(tmp_path: Path) -> None:
    # answer_methods=() would make webhooks.views answer every answer_url request with 405.
    message = error(tmp_path, voice_toml(answer="methods = []"))
    assert message == "answer.methods must not be empty"


# --- secrets --------------------------------------------------------------------------------


def test_agent_passwords_are_secrets_that_never_show_themselves() -> None:
    config = load_voice_config(DATA / "voice.toml", CANARIES)
    passwords = [
        agent.password
        for group in config.groups.values()
        for agent in group.agents
        if agent.password is not None
    ]
    assert passwords and all(isinstance(p, Secret) for p in passwords)
    views = [repr(config), str(config), repr(config.groups), repr(config.policy)]
    views += [f"{p}" for p in passwords] + [repr(p) for p in passwords]
    for text in views:
        for canary in (*CANARIES.values(), CAROL_PASSWORD):
            assert canary not in text
    assert repr(passwords[0]) == "Secret('***')"


def test_secrets_lists_every_agent_password_once_per_group_member(tmp_path: Path) -> None:
    text = voice_toml(agent=CREDENTIAL_AGENT) + (
        '[agents.b]\nuri = "sip:b@x.test"\nusername = "b"\npassword_env = "B_PW"\n'
        '[agents.c]\nuri = "sip:c@x.test"\n'
        '[groups.h]\nagents = ["b", "c"]\n[groups.h.fallback]\naction = "hangup"\n'
    )
    config = load(tmp_path, text, {**ENV, "B_PW": "Canary-B-Password"})
    assert config.secrets() == (PASSWORD, "Canary-B-Password")


def test_config_errors_do_not_contain_any_configured_password(tmp_path: Path) -> None:
    """A late error (after passwords were read) must not drag them into its message."""
    text = voice_toml(agent=CREDENTIAL_AGENT, rule='action = "dial"\ngroup = "missing"')
    message = error(tmp_path, text)
    assert "dial needs group" in message
    assert PASSWORD not in message


# --- business hours -----------------------------------------------------------------------------

HOURS = 'zone = "America/New_York"\nwindows = ["mon-fri 09:00-17:30"]'


def hours_toml(body: str = HOURS) -> str:
    return voice_toml(extra=f"[groups.g.hours]\n{body}\n")


def test_a_group_without_hours_is_always_open(tmp_path: Path) -> None:
    group = load(tmp_path, voice_toml()).groups["g"]
    assert group.hours is None and group.closed is None
    assert group.status(datetime(2026, 12, 25, 3, tzinfo=UTC)) == Status(True, None)


def test_hours_load_with_the_fallback_as_closed_action_by_default(tmp_path: Path) -> None:
    group = load(tmp_path, hours_toml()).groups["g"]
    assert group.hours is not None
    assert group.hours.zone == ZoneInfo("America/New_York")
    assert len(group.hours.windows) == 5
    assert group.closed == Closed(plan=group.fallback)
    assert group.status(datetime(2026, 12, 2, 14, tzinfo=UTC)) == Status(
        True, datetime(2026, 12, 2, 22, 30, tzinfo=UTC)
    )


def test_closed_dates_as_toml_dates_or_strings(tmp_path: Path) -> None:
    body = HOURS + '\nclosed_dates = [2026-12-25, "2026-12-26"]'
    group = load(tmp_path, hours_toml(body)).groups["g"]
    assert group.hours is not None
    assert group.hours.closed_dates == {date(2026, 12, 25), date(2026, 12, 26)}


def test_closed_actions(tmp_path: Path) -> None:
    speak = HOURS + '\nclosed = { action = "hangup", text = "We are closed." }'
    group = load(tmp_path, hours_toml(speak)).groups["g"]
    assert group.closed == Closed(plan=Fallback("hangup", text="We are closed."))
    back = load(tmp_path, hours_toml(HOURS + '\nclosed = { action = "return" }')).groups["g"]
    assert back.closed == Closed(plan=back.fallback, return_to_ai=True)
    elsewhere = HOURS + '\nclosed = { action = "redirect", url = "https://x.example.test/" }'
    assert load(tmp_path, hours_toml(elsewhere)).groups["g"].closed == Closed(
        plan=Fallback("redirect", url="https://x.example.test/")
    )


W = "groups.g.hours"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'windows = ["mon 09:00-17:00"]',
            f'{W}.zone is required: an IANA time zone like "Europe/London"',
        ),
        (
            'zone = "Mars/Olympus"\nwindows = ["mon 09:00-17:00"]',
            f"{W}.zone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            'zone = "../../etc/passwd"\nwindows = ["mon 09:00-17:00"]',
            f"{W}.zone: '../../etc/passwd' is not an IANA time zone",
        ),
        ('zone = "UTC"', f'{W}.windows is required, e.g. ["mon-fri 09:00-17:30"]'),
        ('zone = "UTC"\nwindows = []', f'{W}.windows must be a list like ["mon-fri 09:00-17:30"]'),
        (
            'zone = "UTC"\nwindows = "mon 09:00-17:00"',
            f'{W}.windows must be a list like ["mon-fri 09:00-17:30"]',
        ),
        (
            'zone = "UTC"\nwindows = ["mon 09:00-17:00", 9]',
            f'{W}.windows[1] must be a string like "mon-fri 09:00-17:30"',
        ),
        (
            'zone = "UTC"\nwindows = ["mon 09:00-17:00", "tue 9-17"]',
            f"{W}.windows[1]: 'tue 9-17' is not like \"mon-fri 09:00-17:30\"",
        ),
        (
            'zone = "UTC"\nwindows = ["mon 09:00-17:00", "sat 10:00-14:00", "tue 12:00-12:00"]',
            f"{W}.windows[2]: 'tue 12:00-12:00' is empty: it starts and ends at the same time",
        ),
        (
            'zone = "UTC"\nwindows = ["mon-fri 09:00-17:30", "wed 17:00-19:00"]',
            f"{W}.windows[1]: 'wed 17:00-19:00' overlaps {W}.windows[0] ('mon-fri 09:00-17:30')",
        ),
        (
            'zone = "UTC"\nwindows = ["sat 10:00-14:00", "fri 22:00-02:00", "sat 01:00-03:00"]',
            f"{W}.windows[2]: 'sat 01:00-03:00' overlaps {W}.windows[1] ('fri 22:00-02:00')",
        ),
        (
            'zone = "UTC"\nwindows = ["mon 00:00-08:00", "sun 20:00-01:00"]',
            f"{W}.windows[1]: 'sun 20:00-01:00' overlaps {W}.windows[0] ('mon 00:00-08:00')",
        ),
        (
            'zone = "UTC"\nwindows = ["sat 10:00-14:00", "mon,tue,mon 09:00-10:00"]',
            f"{W}.windows[1]: 'mon,tue,mon 09:00-10:00' overlaps itself",
        ),
        (
            HOURS + '\nclosed_dates = ["2026-12-25", "2026-02-30"]',
            f"{W}.closed_dates[1] must be a date like 2026-12-25",
        ),
        (
            HOURS + '\nclosed_dates = ["2026-12-25", "20261226"]',
            f"{W}.closed_dates[1] must be a date like 2026-12-25",
        ),
        (
            HOURS + '\nclosed_dates = ["2026-12-25", 9999-12-31]',
            f"{W}.closed_dates[1] must be in the years 1970-2999",
        ),
        (
            HOURS + "\nclosed_dates = [2026-12-25T10:00:00]",
            f"{W}.closed_dates[0] must be a date like 2026-12-25",
        ),
        (
            HOURS + '\nclosed_dates = "2026-12-25"',
            f'{W}.closed_dates must be a list of dates like ["2026-12-25"]',
        ),
        (HOURS + '\nopen = "always"', f"{W}: unknown key(s) open"),
        (
            HOURS + '\nclosed = { action = "return", text = "Bye" }',
            f"{W}.closed: unknown key(s) text",
        ),
        (
            HOURS + '\nclosed = { action = "dial" }',
            f"{W}.closed.action must be voicemail, hangup, redirect or return",
        ),
        (
            HOURS + '\nclosed = { action = "redirect" }',
            f"{W}.closed: a redirect fallback needs url",
        ),
        (HOURS + '\nclosed = { action = "hangup", txt = "x" }', f"{W}.closed: unknown key(s) txt"),
        (HOURS + '\nclosed = "voicemail"', f"{W}.closed must be a table"),
    ],
)
def test_bad_hours_are_refused_naming_the_key(tmp_path: Path, body: str, message: str) -> None:
    assert error(tmp_path, hours_toml(body)) == message


def test_hours_must_be_a_table(tmp_path: Path) -> None:
    text = voice_toml(group='strategy = "simultaneous"\nagents = ["a"]\nhours = "9-5"')
    assert error(tmp_path, text) == "groups.g.hours must be a table"


def test_a_closed_message_plivo_would_refuse_is_refused(tmp_path: Path) -> None:
    body = HOURS + '\nclosed = { action = "hangup", text = "x", voice = "ROBOT" }'
    assert error(tmp_path, hours_toml(body)).startswith(f"{W}.closed: ")


def test_the_sample_hours_example_loads_uncommented() -> None:
    """The sample's commented hours table works once uncommented, and the demo's groups stay
    without hours (always open whenever the demo runs)."""
    text = SAMPLE.read_text(encoding="utf-8")
    assert all(
        group.hours is None for group in load_voice_config(SAMPLE, SAMPLE_ENV).groups.values()
    )
    start = text.index("# [groups.support.hours]")
    block = text[start : text.index("\n\n", start)]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    group = load_voice_config_text(text.replace(block, uncommented)).groups["support"]
    assert group.hours is not None and len(group.hours.windows) == 7
    assert group.hours.closed_dates == {date(2026, 12, 25), date(2026, 12, 26)}
    assert group.closed is not None and group.closed.plan.kind == "voicemail"


# -- [quarantine] -------------------------------------------------------------------------------


def test_quarantine_defaults_to_three_failures_and_fifteen_minutes(tmp_path: Path) -> None:
    quarantine = load(tmp_path, voice_toml()).quarantine
    assert (quarantine.after, quarantine.cool_down) == (3, timedelta(minutes=15))


def test_quarantine_reads_after_and_cool_down(tmp_path: Path) -> None:
    text = voice_toml(top='[quarantine]\nafter = 5\ncool_down = "1h"')
    quarantine = load(tmp_path, text).quarantine
    assert (quarantine.after, quarantine.cool_down) == (5, timedelta(hours=1))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("after = 0", "quarantine.after must be 1-100"),
        ("after = 101", "quarantine.after must be 1-100"),
        ('after = "3"', "quarantine.after must be a whole number"),
        ("after = true", "quarantine.after must be a whole number"),
        ('cool_down = "15"', "quarantine.cool_down must be a duration"),
        ('cool_down = "0m"', "quarantine.cool_down must be a duration"),
        ("cool_down = 900", "quarantine.cool_down must be a duration"),
        ("after = 3\nforever = true", "quarantine: unknown key(s) forever"),
    ],
)
def test_a_bad_quarantine_is_refused_naming_the_key(
    tmp_path: Path, body: str, message: str
) -> None:
    assert message in error(tmp_path, voice_toml(top=f"[quarantine]\n{body}"))


def test_agent_names_lists_each_grouped_agent_once(tmp_path: Path) -> None:
    config = load_voice_config(SAMPLE, SAMPLE_ENV)
    names = config.agent_names()
    assert len(names) == len(set(names))
    assert set(names) == {agent.name for g in config.groups.values() for agent in g.agents}
