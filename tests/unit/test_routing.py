"""Tests for routing: Match conditions, first-match-wins rules, and the SIP-auth defaults.

Calls are parsed from real answer_url forms (`inbound(...)` from conftest) with
InboundCall.from_form, so the tests cover what Plivo actually sends, not hand-built dataclasses.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.calls.causes import AUTH_NONE, SIP_AUTH_TYPES
from sipguard.calls.forms import InboundCall
from sipguard.calls.routing import (
    AUTH_NOT_RUNNING,
    STREAM_CALL_HEADERS,
    Action,
    Decision,
    Match,
    Policy,
    Rule,
    decide,
    stream_call_headers,
)
from tests.support.signing import inbound

PBX_IP = "203.0.113.10"
PHONE_FROM = "+14155550123"
PHONE_TO = "+14155550100"
NET_V4 = ipaddress.ip_network("203.0.113.0/24")
NET_V6 = ipaddress.ip_network("2001:db8:100::/48")

DIAL = Action("dial", group="support")
AI = Action(
    "redirect", url="https://ai.example.test/answer?token=Canary-Url-Token", handoff_group="support"
)
SPEAK = Action("speak", text="Sorry, wrong number.")
REJECT = Action("reject")
STREAM = Action(
    "stream",
    url="wss://ai.example.test/stream?token=Canary-Url-Token",
    handoff_group="after-hours",
    extra_headers=(("tenant", "acme"),),
)
UNAUTH = Action("speak", text="SIP auth is not running.")  # distinct from every rule action


def call(**fields: str) -> InboundCall:
    """Parse an answer form: by default an unauthenticated SIP call (From/To are sip: URIs)."""
    return InboundCall.from_form(inbound(**fields))


def sip_call(auth: str = "ip_acl_and_credential", **fields: str) -> InboundCall:
    """An authenticated SIP call as Plivo reports it: SIPAuthType, SIPSourceIP, maybe a user."""
    form = {"SIPAuthType": auth, "SIPSourceIP": PBX_IP}
    if auth in ("credential", "ip_acl_and_credential"):
        form["SIPAuthUser"] = "frontdesk"
    return call(**{**form, **fields})


def phone_call(**fields: str) -> InboundCall:
    """A PSTN call to a Plivo number: phone numbers, no SIP fields at all."""
    return call(**{"From": PHONE_FROM, "To": PHONE_TO, **fields})


def policy(*rules: Rule) -> Policy:
    return Policy(rules=rules, default=SPEAK, unauthenticated_sip=UNAUTH)


def rule(name: str, action: Action = DIAL, **conditions: object) -> Rule:
    return Rule(name, Match(**conditions), action)  # type: ignore[arg-type]


# --- the calls themselves ---------------------------------------------------------------------


def test_fixtures_are_the_calls_they_claim_to_be() -> None:
    """Guard the helpers: if one stops producing its kind of call, other tests prove nothing."""
    unauthenticated = call()
    assert unauthenticated.is_sip and unauthenticated.sip_auth_type is None
    authenticated = sip_call("credential")
    assert authenticated.is_sip and authenticated.sip_auth_type == "credential"
    assert authenticated.sip_auth_user == "frontdesk"
    assert authenticated.sip_source_ip == ipaddress.ip_address(PBX_IP)
    phone = phone_call()
    assert not phone.is_sip
    assert (phone.sip_auth_type, phone.sip_auth_user, phone.sip_source_ip) == (None, None, None)


# --- rule order -------------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    rules = (rule("first", DIAL), rule("second", AI))
    assert decide(sip_call(), policy(*rules)) == Decision(DIAL, "first", "rule first", False)
    swapped = decide(sip_call(), policy(*reversed(rules)))
    assert (swapped.action, swapped.rule) == (AI, "second")


def test_rules_that_do_not_match_are_skipped_in_order() -> None:
    rules = (
        rule("users-only", DIAL, sip_users=frozenset({"night"})),
        rule("wrong-net", REJECT, source_networks=(NET_V6,)),
        rule("credential", AI, sip_auth_types=frozenset({"ip_acl_and_credential"})),
        rule("catch-all", SPEAK),
    )
    decision = decide(sip_call(), policy(*rules))
    assert (decision.action, decision.rule, decision.reason) == (
        AI,
        "credential",
        "rule credential",
    )


def test_no_rule_matched_gives_the_default() -> None:
    rules = (rule("night", DIAL, sip_users=frozenset({"night"})),)
    decision = decide(sip_call(), policy(*rules))
    assert decision == Decision(SPEAK, "default", "no rule matched", False)


def test_empty_policy_uses_reject_defaults() -> None:
    bare = Policy(rules=())
    assert decide(sip_call(), bare).action == Action("reject")
    assert decide(call(), bare).action == Action("reject")


# --- sip_auth_type --------------------------------------------------------------------------


@pytest.mark.parametrize("auth", SIP_AUTH_TYPES)
def test_sip_auth_type_matches_only_its_own_value(auth: str) -> None:
    match = Match(sip_auth_types=frozenset({auth}))
    assert match.matches(sip_call(auth))
    for other in SIP_AUTH_TYPES:
        if other != auth:
            assert not match.matches(sip_call(other)), other
    assert not match.matches(call())  # unauthenticated SIP
    assert not match.matches(phone_call())


def test_sip_auth_type_list_matches_any_listed_value() -> None:
    match = Match(sip_auth_types=frozenset({"ip_acl", "credential"}))
    assert match.matches(sip_call("ip_acl"))
    assert match.matches(sip_call("credential"))
    assert not match.matches(sip_call("ip_acl_and_credential"))


def test_sip_auth_type_value_is_compared_exactly() -> None:
    match = Match(sip_auth_types=frozenset({"ip_acl"}))
    assert not match.matches(sip_call("IP_ACL"))
    assert not match.matches(sip_call("ip_acl "))


def test_none_matches_an_unauthenticated_sip_call_only_among_sip_calls() -> None:
    match = Match(sip_auth_types=frozenset({AUTH_NONE}))
    assert match.matches(call())
    assert match.matches(call(SIPSourceIP=PBX_IP))
    for auth in SIP_AUTH_TYPES:
        assert not match.matches(sip_call(auth)), auth


def test_none_also_covers_a_phone_call_since_no_sip_auth_ran() -> None:
    # Documented in voice.sample.toml: "none" means no SIP auth ran, which is true of PSTN calls.
    assert Match(sip_auth_types=frozenset({AUTH_NONE})).matches(phone_call())


def test_none_with_other_types_matches_both() -> None:
    match = Match(sip_auth_types=frozenset({AUTH_NONE, "ip_acl"}))
    assert match.matches(call())
    assert match.matches(sip_call("ip_acl"))
    assert not match.matches(sip_call("credential"))


@pytest.mark.parametrize("auth", SIP_AUTH_TYPES)
def test_default_matches_every_authenticated_sip_call(auth: str) -> None:
    assert Match().matches(sip_call(auth))


@pytest.mark.parametrize("auth", ["digest", "IP_ACL", "none"])
def test_default_does_not_match_a_sip_auth_type_it_does_not_know(auth: str) -> None:
    # routing.Match: "a type Plivo may add later matches no rule until the config names it"
    assert not Match().matches(sip_call(auth))
    assert Match(sip_auth_types=frozenset({auth})).matches(sip_call(auth))


def test_default_matches_a_phone_call() -> None:
    assert Match().matches(phone_call())
    assert Match().matches(phone_call(From="anonymous", To=PHONE_TO))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"From": PHONE_FROM},  # To is still sip:
        {"To": PHONE_TO},  # From is still sip:
        {"From": "SIP:frontdesk@203.0.113.10", "To": PHONE_TO},
        {"From": PHONE_FROM, "To": "sips:123@app.plivo.com"},
        {"From": PHONE_FROM, "To": PHONE_TO, "SIPSourceIP": PBX_IP},
        {"From": PHONE_FROM, "To": PHONE_TO, "SIPSourceIP": "not-an-ip"},
        {"SIPAuthType": "", "SIPAuthUser": "", "SIPSourceIP": PBX_IP},
    ],
    ids=[
        "sip-both",
        "sip-to",
        "sip-from",
        "SIP-uppercase",
        "sips-to",
        "source-ip-only",
        "bad-source-ip-only",
        "blank-auth-fields",
    ],
)
def test_default_never_matches_an_unauthenticated_sip_call(fields: dict[str, str]) -> None:
    unauthenticated = call(**fields)
    assert unauthenticated.is_sip
    assert not Match().matches(unauthenticated)
    # ...even when every other condition would hold
    permissive = Match(to=re.compile(".*"), from_=re.compile(".*"))
    assert not permissive.matches(unauthenticated)


# --- auth not running -----------------------------------------------------------------------


def test_unauthenticated_sip_call_goes_to_unauthenticated_sip_action() -> None:
    rules = (
        rule("any-authenticated", DIAL),
        rule("ip-acl", AI, sip_auth_types=frozenset({"ip_acl"})),
        rule("from-anyone", REJECT, from_=re.compile(".*")),
    )
    decision = decide(call(), policy(*rules))
    assert (decision.action, decision.rule, decision.auth_not_running) == (
        UNAUTH,
        "unauthenticated-sip",
        True,
    )


def test_unauthenticated_sip_call_reason_is_auth_not_running() -> None:
    decision = decide(call(), policy(rule("any-authenticated", DIAL)))
    assert decision.reason == AUTH_NOT_RUNNING
    assert "sip:{app_id}@app.plivo.com" in decision.reason


def test_unauthenticated_sip_call_taken_by_a_none_rule_keeps_the_flag() -> None:
    rules = (
        rule("authenticated", DIAL),
        rule("legacy", SPEAK, sip_auth_types=frozenset({AUTH_NONE})),
    )
    decision = decide(call(), policy(*rules))
    assert (decision.action, decision.rule, decision.reason) == (SPEAK, "legacy", "rule legacy")
    assert decision.auth_not_running is True


def test_phone_call_is_not_auth_not_running() -> None:
    unmatched = decide(
        phone_call(), policy(rule("ip-acl", DIAL, sip_auth_types=frozenset({"ip_acl"})))
    )
    assert unmatched == Decision(SPEAK, "default", "no rule matched", False)
    matched = decide(phone_call(), policy(rule("any", AI)))
    assert (matched.rule, matched.auth_not_running) == ("any", False)


@pytest.mark.parametrize("auth", SIP_AUTH_TYPES)
def test_authenticated_sip_call_is_not_auth_not_running(auth: str) -> None:
    unmatched = decide(sip_call(auth), policy(rule("nobody", DIAL, sip_users=frozenset({"x"}))))
    assert unmatched == Decision(SPEAK, "default", "no rule matched", False)
    assert decide(sip_call(auth), policy(rule("any", DIAL))).auth_not_running is False


# --- sip_user -------------------------------------------------------------------------------


def test_sip_user_matches_exactly_and_case_sensitively() -> None:
    match = Match(sip_users=frozenset({"frontdesk", "night"}))
    assert match.matches(sip_call("credential", SIPAuthUser="frontdesk"))
    assert match.matches(sip_call("credential", SIPAuthUser="night"))
    for other in ("FrontDesk", "FRONTDESK", "frontdesk2", "front", " frontdesk", "frontdesk "):
        assert not match.matches(sip_call("credential", SIPAuthUser=other)), other


def test_sip_user_rule_never_matches_a_call_without_a_user() -> None:
    match = Match(sip_users=frozenset({"frontdesk"}))
    assert not match.matches(sip_call("ip_acl"))  # IP ACL reports no SIPAuthUser
    assert not match.matches(phone_call())
    assert not match.matches(sip_call("credential", SIPAuthUser=""))


# --- source_cidr ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "inside"),
    [
        ("203.0.113.0", True),  # network address
        ("203.0.113.1", True),
        ("203.0.113.10", True),
        ("203.0.113.255", True),  # broadcast address
        ("203.0.112.255", False),  # one below
        ("203.0.114.0", False),  # one above
        ("198.51.100.10", False),
        (" 203.0.113.10 ", True),  # padded, as a proxy might forward it
        ("::ffff:203.0.113.5", True),  # IPv4-mapped IPv6
        ("::ffff:203.0.114.5", False),
        ("::ffff:cb00:7105", True),  # the same mapped address in hex
    ],
)
def test_ipv4_network_boundaries(source: str, inside: bool) -> None:
    match = Match(source_networks=(NET_V4,))
    assert match.matches(sip_call(SIPSourceIP=source)) is inside


@pytest.mark.parametrize(
    ("source", "inside"),
    [
        ("2001:db8:100::", True),
        ("2001:db8:100::1", True),
        ("2001:db8:100:ffff:ffff:ffff:ffff:ffff", True),
        ("2001:DB8:100::abcd", True),
        ("2001:db8:ff:ffff:ffff:ffff:ffff:ffff", False),
        ("2001:db8:101::", False),
        ("2001:db8::1", False),
        ("203.0.113.10", False),  # an IPv4 address is not in an IPv6 network
    ],
)
def test_ipv6_network_membership(source: str, inside: bool) -> None:
    assert Match(source_networks=(NET_V6,)).matches(sip_call(SIPSourceIP=source)) is inside


def test_any_listed_network_will_do() -> None:
    match = Match(source_networks=(NET_V4, NET_V6))
    assert match.matches(sip_call(SIPSourceIP="203.0.113.77"))
    assert match.matches(sip_call(SIPSourceIP="2001:db8:100::77"))
    assert not match.matches(sip_call(SIPSourceIP="192.0.2.1"))


def test_ipv6_address_against_an_ipv4_network_is_simply_no_match() -> None:
    assert not Match(source_networks=(NET_V4,)).matches(sip_call(SIPSourceIP="2001:db8:100::1"))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"SIPSourceIP": ""},
        {"SIPSourceIP": "203.0.113.300"},
        {"SIPSourceIP": "203.0.113.10:5060"},
        {"SIPSourceIP": "203.0.113.0/24"},
        {"SIPSourceIP": "pbx.example.test"},
        {"SIPSourceIP": "2001:db8:100::1::2"},
        {"SIPSourceIP": "unknown"},
    ],
    ids=["missing", "empty", "octet-300", "with-port", "cidr", "hostname", "bad-ipv6", "word"],
)
def test_missing_or_malformed_source_ip_never_matches_a_cidr_rule(fields: dict[str, str]) -> None:
    parsed = call(SIPAuthType="ip_acl", **fields)
    assert parsed.sip_source_ip is None
    everything = Match(
        source_networks=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    )
    assert not everything.matches(parsed)
    assert everything.matches(sip_call("ip_acl"))  # the rule itself does match a good address


def test_cidr_rule_never_matches_a_phone_call() -> None:
    everything = Match(
        source_networks=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    )
    assert not everything.matches(phone_call())


# --- To / From patterns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+14155550100", True),
        ("+14155559999", True),
        ("+141555501000", False),  # an extra digit at the end
        ("0+14155550100", False),  # something before
        ("+1415555010", False),  # one digit short
        ("+14155550100\n", False),  # fullmatch, not match-with-$
    ],
)
def test_to_pattern_must_match_the_whole_value(value: str, expected: bool) -> None:
    match = Match(to=re.compile(r"\+1415555\d{4}"))
    assert match.matches(phone_call(To=value)) is expected


def test_from_pattern_must_match_the_whole_value() -> None:
    match = Match(from_=re.compile(r"sip:.*@legacy\.example\.net"))
    assert match.matches(sip_call(From="sip:old@legacy.example.net"))
    assert not match.matches(sip_call(From="sip:old@legacy.example.net.evil.test"))
    assert not match.matches(sip_call(From="xsip:old@legacy.example.net"))
    assert not match.matches(sip_call(From="sip:old@legacyXexample.net"))


def test_pattern_without_anchors_is_still_whole_value() -> None:
    match = Match(from_=re.compile("frontdesk"))
    assert not match.matches(sip_call())  # From is sip:frontdesk@203.0.113.10
    assert Match(from_=re.compile(".*frontdesk.*")).matches(sip_call())


def test_missing_to_or_from_only_matches_a_pattern_that_accepts_empty() -> None:
    no_from = phone_call(From="")
    assert no_from.from_ is None
    assert not Match(from_=re.compile(r"\+.*")).matches(no_from)
    assert Match(from_=re.compile(r"(\+.*)?")).matches(no_from)
    no_to = phone_call(To="")
    assert not Match(to=re.compile(".+")).matches(no_to)


def test_patterns_are_case_sensitive_unless_compiled_otherwise() -> None:
    lowered = sip_call(From="sip:frontdesk@PBX.example.test")
    assert not Match(from_=re.compile(r"sip:frontdesk@pbx\.example\.test")).matches(lowered)
    insensitive = re.compile(r"sip:frontdesk@pbx\.example\.test", re.IGNORECASE)
    assert Match(from_=insensitive).matches(lowered)


# --- conditions are ANDed -------------------------------------------------------------------

EVERY_CONDITION = Match(
    sip_auth_types=frozenset({"ip_acl_and_credential"}),
    sip_users=frozenset({"frontdesk"}),
    source_networks=(NET_V4,),
    to=re.compile(r"sip:\d+@app\.plivo\.com"),
    from_=re.compile(r"sip:frontdesk@.*"),
)


def test_every_condition_holding_matches() -> None:
    assert EVERY_CONDITION.matches(sip_call())


@pytest.mark.parametrize(
    "broken",
    [
        {"SIPAuthType": "credential"},
        {"SIPAuthUser": "night"},
        {"SIPSourceIP": "198.51.100.10"},
        {"To": "+14155550100"},
        {"From": "sip:night@203.0.113.10"},
    ],
    ids=["sip_auth_type", "sip_user", "source_cidr", "to", "from"],
)
def test_one_failing_condition_fails_the_rule(broken: dict[str, str]) -> None:
    assert not EVERY_CONDITION.matches(sip_call(**broken))


def test_and_across_rules_falls_through_to_the_next_rule() -> None:
    rules = (
        Rule("strict", EVERY_CONDITION, DIAL),
        rule("loose", AI, sip_auth_types=frozenset({"ip_acl_and_credential"})),
    )
    assert decide(sip_call(), policy(*rules)).rule == "strict"
    assert decide(sip_call(SIPSourceIP="198.51.100.10"), policy(*rules)).rule == "loose"


# --- Action.describe ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "label"),
    [
        (Action("dial", group="support"), "dial:support"),
        (Action("dial", group="oncall"), "dial:oncall"),
        (AI, "redirect:handoff=support"),
        (
            Action("redirect", url="https://ai.example.test/answer?token=Canary-Url-Token"),
            "redirect",
        ),
        (Action("speak", text="Hello"), "speak"),
        (Action("reject"), "reject"),
        (STREAM, "stream"),
        (Action("stream", url="wss://ai.example.test/stream?token=Canary-Url-Token"), "stream"),
    ],
)
def test_describe_labels(action: Action, label: str) -> None:
    assert action.describe() == label
    assert "Canary-Url-Token" not in action.describe()
    assert "https://" not in action.describe()
    assert "wss://" not in action.describe()


# --- stream actions -------------------------------------------------------------------------


def test_a_rule_may_stream_the_call_to_the_ai() -> None:
    decision = decide(sip_call("ip_acl"), policy(rule("ai-stream", STREAM)))
    assert decision == Decision(STREAM, "ai-stream", "rule ai-stream", False)


def test_a_stream_defaults_to_a_bidirectional_kept_alive_mulaw_stream() -> None:
    bare = Action("stream", url="wss://ai.example.test/stream")
    assert (bare.bidirectional, bare.keep_call_alive) == (True, True)
    assert bare.content_type == "audio/x-mulaw;rate=8000"
    assert bare.stream_fixed_headers() == {}


def test_stream_fixed_headers_end_with_the_encoded_handoff_group() -> None:
    # "after-hours" holds a "-", outside extraHeaders' letters and digits, so it is hex.
    assert STREAM.stream_fixed_headers() == {
        "tenant": "acme",
        "handoffgroup": "x" + b"after-hours".hex(),
    }
    plain = Action("stream", url="wss://ai.example.test/s", handoff_group="support")
    assert plain.stream_fixed_headers() == {"handoffgroup": "support"}


def test_a_fixed_value_starting_with_x_is_encoded_so_it_reads_back_as_itself() -> None:
    action = Action("stream", url="wss://ai.example.test/s", extra_headers=(("site", "xenon"),))
    encoded = action.stream_fixed_headers()["site"]
    assert encoded == "x" + b"xenon".hex()
    assert bytes.fromhex(encoded[1:]).decode() == "xenon"


def test_stream_call_headers_carry_what_the_answer_request_said() -> None:
    found = stream_call_headers(sip_call("credential", From="sip:frontdesk@pbx.example.test"))
    assert tuple(found) == STREAM_CALL_HEADERS
    assert found == {
        "from": "sip:frontdesk@pbx.example.test",
        "to": inbound()["To"],
        "sipauthtype": "credential",
        "sipauthuser": "frontdesk",
        "sipsourceip": PBX_IP,
    }


def test_stream_call_headers_of_a_phone_call_have_no_sip_auth_values() -> None:
    found = stream_call_headers(phone_call())
    assert found == {
        "from": PHONE_FROM,
        "to": PHONE_TO,
        "sipauthtype": None,
        "sipauthuser": None,
        "sipsourceip": None,
    }


# --- property: CIDR membership agrees with ipaddress ----------------------------------------


@st.composite
def address_and_network(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]:
    network = ipaddress.ip_network(
        (draw(st.ip_addresses(v=4)), draw(st.integers(min_value=0, max_value=32))), strict=False
    )
    assert isinstance(network, ipaddress.IPv4Network)
    if draw(st.booleans()):  # half the time, pick an address inside, so both outcomes occur
        offset = draw(st.integers(min_value=0, max_value=network.num_addresses - 1))
        return network.network_address + offset, network
    address = draw(st.ip_addresses(v=4))
    assert isinstance(address, ipaddress.IPv4Address)
    return address, network


@given(
    pair=address_and_network(),
    auth=st.sampled_from(SIP_AUTH_TYPES),
    mapped=st.booleans(),
)
def test_cidr_match_agrees_with_ipaddress(
    pair: tuple[ipaddress.IPv4Address, ipaddress.IPv4Network], auth: str, mapped: bool
) -> None:
    address, network = pair
    source = f"::ffff:{address}" if mapped else str(address)
    incoming = call(SIPAuthType=auth, SIPSourceIP=source)
    expected = ipaddress.ip_address(str(address)) in network
    assert Match(source_networks=(network,)).matches(incoming) is expected
