"""SIP/HTTP digest auth (sandbox/digest.py): RFC worked examples, requests as oracle, refusals."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from requests.auth import HTTPDigestAuth

from sandbox.digest import (
    NONCE_TTL,
    Authorization,
    Challenge,
    DigestError,
    Nonces,
    answer,
    ha1,
    parse_params,
    response,
    verify,
)

# --- RFC 2617 §3.5 -------------------------------------------------------------------------------

RFC2617_REALM = "testrealm@host.com"
RFC2617_NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
RFC2617_OPAQUE = "5ccc069c403ebaf9f0171e9517f40e41"
RFC2617_RESPONSE = "6629fae49393a05397450978507c4ef1"
# The Authorization header of §3.5, with its line folds replaced by one space each.
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
    'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# --- RFC 7616 §3.9.1 -----------------------------------------------------------------------------

RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def test_rfc2617_example_via_answer() -> None:
    challenge = Challenge(
        realm=RFC2617_REALM, nonce=RFC2617_NONCE, algorithm="MD5", qop="auth", opaque=RFC2617_OPAQUE
    )
    auth = answer(
        challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", cnonce="0a4f113b", nc=1
    )
    assert auth.response == RFC2617_RESPONSE
    assert auth.nc == "00000001"
    assert auth.cnonce == "0a4f113b"
    assert auth.qop == "auth"
    assert auth.opaque == RFC2617_OPAQUE
    assert verify(auth, ha1("Mufasa", RFC2617_REALM, "Circle Of Life"), "GET")


def test_rfc2617_example_via_response() -> None:
    key = ha1("Mufasa", RFC2617_REALM, "Circle Of Life")
    # MD5("Mufasa:testrealm@host.com:Circle Of Life"), the example's well-known HA1
    assert key == "939e7578ed9e3c518a452acee763bce9"
    got = response(
        key, "GET", "/dir/index.html", RFC2617_NONCE, qop="auth", nc="00000001", cnonce="0a4f113b"
    )
    assert got == RFC2617_RESPONSE


def test_rfc2617_authorization_header_parses_and_verifies() -> None:
    auth = Authorization.parse(RFC2617_AUTHORIZATION)
    assert auth == Authorization(
        username="Mufasa",
        realm=RFC2617_REALM,
        nonce=RFC2617_NONCE,
        uri="/dir/index.html",
        response=RFC2617_RESPONSE,
        algorithm="MD5",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
        opaque=RFC2617_OPAQUE,
    )
    assert verify(auth, ha1("Mufasa", RFC2617_REALM, "Circle Of Life"), "GET")
    assert not verify(auth, ha1("Mufasa", RFC2617_REALM, "Circle of Life"), "GET")


def test_rfc2617_challenge_header_parses() -> None:
    challenge = Challenge.parse(
        f'Digest realm="{RFC2617_REALM}", qop="auth,auth-int", nonce="{RFC2617_NONCE}", '
        f'opaque="{RFC2617_OPAQUE}"'
    )
    assert challenge == Challenge(
        realm=RFC2617_REALM, nonce=RFC2617_NONCE, algorithm="MD5", qop="auth", opaque=RFC2617_OPAQUE
    )


@pytest.mark.parametrize("algorithm", sorted(RFC7616_RESPONSES))
def test_rfc7616_example_via_answer(algorithm: str) -> None:
    challenge = Challenge(
        realm=RFC7616_REALM,
        nonce=RFC7616_NONCE,
        algorithm=algorithm,
        qop="auth",
        opaque=RFC7616_OPAQUE,
    )
    auth = answer(
        challenge, "Mufasa", "Circle of Life", "GET", "/dir/index.html", cnonce=RFC7616_CNONCE
    )
    assert auth.response == RFC7616_RESPONSES[algorithm]
    assert auth.algorithm == algorithm
    assert auth.nc == "00000001"
    assert verify(auth, ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm), "GET")
    # The header it renders carries the same answer.
    assert verify(
        Authorization.parse(auth.header()),
        ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm),
        "GET",
    )


@pytest.mark.parametrize("algorithm", sorted(RFC7616_RESPONSES))
def test_rfc7616_example_via_response(algorithm: str) -> None:
    key = ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm)
    got = response(
        key,
        "GET",
        "/dir/index.html",
        RFC7616_NONCE,
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert got == RFC7616_RESPONSES[algorithm]


def test_ha1_uses_the_named_hash() -> None:
    text = b"Mufasa:http-auth@example.org:Circle of Life"
    md5, sha256 = hashlib.md5(text).hexdigest(), hashlib.sha256(text).hexdigest()
    assert ha1("Mufasa", RFC7616_REALM, "Circle of Life") == md5
    assert ha1("Mufasa", RFC7616_REALM, "Circle of Life", "SHA-256") == sha256
    # Algorithm names are case-insensitive and -sess shares the base hash's HA1.
    assert ha1("Mufasa", RFC7616_REALM, "Circle of Life", "sha-256-sess") == sha256
    assert ha1("Mufasa", RFC7616_REALM, "Circle of Life", "MD5-sess") == md5
    with pytest.raises(DigestError):
        ha1("Mufasa", RFC7616_REALM, "Circle of Life", "SHA-512")


def test_md5_sess_matches_the_rfc2617_formula() -> None:
    """HA1 for -sess is H(H(user:realm:pw):nonce:cnonce) (RFC 2617 §3.2.2.2), computed by hand."""
    base = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    session = hashlib.md5(f"{base}:{RFC2617_NONCE}:0a4f113b".encode()).hexdigest()
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    expected = hashlib.md5(
        f"{session}:{RFC2617_NONCE}:00000001:0a4f113b:auth:{ha2}".encode()
    ).hexdigest()
    challenge = Challenge(realm=RFC2617_REALM, nonce=RFC2617_NONCE, algorithm="MD5-sess")
    auth = answer(
        challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    assert auth.response == expected
    assert verify(auth, base, "GET")


def test_sha256_sess_without_qop_sends_its_cnonce() -> None:
    """-sess mixes the cnonce into HA1 even without qop, so the answer must carry it."""
    base = hashlib.sha256(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    session = hashlib.sha256(f"{base}:{RFC2617_NONCE}:abc".encode()).hexdigest()
    ha2 = hashlib.sha256(b"INVITE:sip:1@x").hexdigest()
    expected = hashlib.sha256(f"{session}:{RFC2617_NONCE}:{ha2}".encode()).hexdigest()
    challenge = Challenge(
        realm=RFC2617_REALM, nonce=RFC2617_NONCE, algorithm="SHA-256-sess", qop=None
    )
    auth = answer(challenge, "Mufasa", "Circle Of Life", "INVITE", "sip:1@x", cnonce="abc")
    assert auth.response == expected
    assert auth.cnonce == "abc" and auth.qop is None and auth.nc is None
    parsed = Authorization.parse(auth.header())
    assert parsed.cnonce == "abc"
    assert verify(parsed, base, "INVITE")
    assert not verify(replace(parsed, cnonce="abd"), base, "INVITE")


def test_no_qop_matches_the_rfc2069_formula() -> None:
    base = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:app.plivo.com").hexdigest()
    expected = hashlib.md5(f"{base}:{RFC2617_NONCE}:{ha2}".encode()).hexdigest()
    challenge = Challenge(realm=RFC2617_REALM, nonce=RFC2617_NONCE, qop=None)
    auth = answer(challenge, "Mufasa", "Circle Of Life", "REGISTER", "sip:app.plivo.com")
    assert auth.response == expected
    assert auth.qop is None and auth.nc is None and auth.cnonce is None
    assert "qop" not in parse_params(auth.header())
    assert verify(auth, base, "REGISTER")


def test_answer_formats_nc_as_eight_hex_digits() -> None:
    challenge = Challenge(realm=RFC2617_REALM, nonce=RFC2617_NONCE)
    first = answer(challenge, "u", "p", "INVITE", "sip:1@x", cnonce="c", nc=1)
    later = answer(challenge, "u", "p", "INVITE", "sip:1@x", cnonce="c", nc=255)
    assert later.nc == "000000ff"
    assert later.response != first.response
    assert verify(later, ha1("u", RFC2617_REALM, "p"), "INVITE")


def test_answer_picks_a_fresh_cnonce_when_none_is_given() -> None:
    challenge = Challenge(realm=RFC2617_REALM, nonce=RFC2617_NONCE)
    one = answer(challenge, "u", "p", "INVITE", "sip:1@x")
    two = answer(challenge, "u", "p", "INVITE", "sip:1@x")
    assert one.cnonce and two.cnonce and one.cnonce != two.cnonce
    assert verify(one, ha1("u", RFC2617_REALM, "p"), "INVITE")


# --- requests' HTTPDigestAuth as an independent oracle -------------------------------------------

# requests writes these inside quotes without escaping, so they cannot hold '"' or '\'.
_unquotable = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters='"\\'),
    max_size=20,
)
_path_segment = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=0, max_size=12
)


def _requests_header(username, password, chal, method, url, nc):
    """Return the Authorization header requests' HTTPDigestAuth builds for `chal`."""
    client = HTTPDigestAuth(username, password)
    client.init_per_thread_state()
    client._thread_local.chal = chal
    # requests counts up from the last nonce it answered: arrange for it to send `nc`.
    client._thread_local.last_nonce = chal["nonce"]
    client._thread_local.nonce_count = nc - 1
    header = client.build_digest_header(method, url)
    assert header is not None
    return header


@settings(max_examples=300, deadline=None)
@given(
    username=_unquotable,
    password=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
    realm=_unquotable,
    nonce=_unquotable.filter(bool),
    opaque=st.none() | _unquotable.filter(bool),
    algorithm=st.sampled_from([None, "MD5", "md5", "MD5-SESS", "MD5-sess", "SHA-256"]),
    qop=st.sampled_from([None, "auth", "auth,auth-int"]),
    method=st.sampled_from(["GET", "POST", "INVITE", "REGISTER"]),
    segments=st.lists(_path_segment, max_size=3),
    query=st.none() | st.text(alphabet="abc=&xyz0123", min_size=1, max_size=10),
    nc=st.integers(min_value=1, max_value=0xFFFFFFFF),
)
def test_requests_digest_answers_verify(
    username, password, realm, nonce, opaque, algorithm, qop, method, segments, query, nc
) -> None:
    # requests sends no cnonce without qop, yet mixes one into the MD5-sess HA1: unverifiable.
    assume(qop or not (algorithm or "").upper().endswith("-SESS"))
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    url = "http://example.org" + path + (f"?{query}" if query else "")
    uri = path + (f"?{query}" if query else "")
    chal = {"realm": realm, "nonce": nonce}
    if algorithm is not None:
        chal["algorithm"] = algorithm
    if qop is not None:
        chal["qop"] = qop
    if opaque is not None:
        chal["opaque"] = opaque

    header = _requests_header(username, password, chal, method, url, nc)
    auth = Authorization.parse(header)

    assert auth.username == username
    assert auth.realm == realm
    assert auth.nonce == nonce
    assert auth.uri == uri
    assert auth.opaque == opaque
    assert auth.algorithm == (algorithm or "MD5")
    if qop:
        assert auth.qop == "auth" and auth.nc == f"{nc:08x}" and auth.cnonce
    else:
        assert auth.qop is None and auth.nc is None and auth.cnonce is None

    stored = ha1(username, realm, password, algorithm or "MD5")
    assert verify(auth, stored, method)
    assert not verify(auth, ha1(username, realm, password + "x", algorithm or "MD5"), method)
    assert not verify(auth, stored, method + "X")

    # Our client side, given requests' cnonce and nc, says exactly what requests said.
    challenge = Challenge.parse(
        Challenge(
            realm=realm,
            nonce=nonce,
            algorithm=algorithm or "MD5",
            qop="auth" if qop else None,
            opaque=opaque,
        ).header()
    )
    ours = answer(challenge, username, password, method, uri, cnonce=auth.cnonce or "", nc=nc)
    assert ours.response == auth.response


def test_requests_oracle_disagrees_on_a_wrong_password() -> None:
    """The oracle test is not vacuous: a different password gives a different response."""
    chal = {"realm": RFC7616_REALM, "nonce": RFC7616_NONCE, "qop": "auth", "algorithm": "SHA-256"}
    header = _requests_header("Mufasa", "Circle of Life", chal, "GET", "http://h/dir/index.html", 1)
    auth = Authorization.parse(header)
    assert verify(auth, ha1("Mufasa", RFC7616_REALM, "Circle of Life", "SHA-256"), "GET")
    assert not verify(auth, ha1("Mufasa", RFC7616_REALM, "Circle Of Life", "SHA-256"), "GET")
    assert not verify(auth, ha1("Mufasa", RFC7616_REALM, "Circle of Life", "MD5"), "GET")


# --- header round trips and real-world headers ---------------------------------------------------

_any_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20)
_nasty_text = st.one_of(
    _any_text,
    st.text(alphabet='ab, "\\=;\t', max_size=20),
    st.sampled_from(['"', "\\", '\\"', ","]),
)
_hex = st.text(alphabet="0123456789abcdef", min_size=32, max_size=64)
_algorithms = st.sampled_from(["MD5", "md5", "MD5-sess", "SHA-256", "SHA-256-sess", "sha-256"])


@given(
    realm=_nasty_text,
    nonce=_nasty_text.filter(bool),
    algorithm=_algorithms,
    qop=st.sampled_from(["auth", None]),
    opaque=st.none() | _nasty_text,
    stale=st.booleans(),
)
def test_challenge_round_trip(realm, nonce, algorithm, qop, opaque, stale) -> None:
    challenge = Challenge(
        realm=realm, nonce=nonce, algorithm=algorithm, qop=qop, opaque=opaque, stale=stale
    )
    assert Challenge.parse(challenge.header()) == challenge


@given(
    username=_nasty_text,
    realm=_nasty_text,
    nonce=_nasty_text,
    uri=_nasty_text,
    digest=_hex,
    algorithm=_algorithms,
    with_qop=st.booleans(),
    nc=st.integers(min_value=1, max_value=0xFFFFFFFF),
    cnonce=_nasty_text.filter(bool),
    opaque=st.none() | _nasty_text,
)
def test_authorization_round_trip(
    username, realm, nonce, uri, digest, algorithm, with_qop, nc, cnonce, opaque
) -> None:
    auth = Authorization(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=digest,
        algorithm=algorithm,
        qop="auth" if with_qop else None,
        nc=f"{nc:08x}" if with_qop else None,
        # -sess keys HA1 with the cnonce, so it is sent with or without qop.
        cnonce=cnonce if with_qop or algorithm.upper().endswith("-SESS") else None,
        opaque=opaque,
    )
    assert Authorization.parse(auth.header()) == auth


@given(
    username=_nasty_text,
    password=_nasty_text,
    realm=_nasty_text,
    nonce=_nasty_text.filter(bool),
    uri=_nasty_text,
    algorithm=_algorithms,
    qop=st.sampled_from(["auth", None]),
    cnonce=_nasty_text.filter(bool),
)
def test_answer_survives_its_header(
    username, password, realm, nonce, uri, algorithm, qop, cnonce
) -> None:
    challenge = Challenge.parse(
        Challenge(realm=realm, nonce=nonce, algorithm=algorithm, qop=qop).header()
    )
    auth = answer(challenge, username, password, "INVITE", uri, cnonce=cnonce)
    parsed = Authorization.parse(auth.header())
    assert parsed == auth
    assert verify(parsed, ha1(username, realm, password, algorithm), "INVITE")


def test_quoted_values_are_unescaped() -> None:
    header = r'Digest realm="a \"quoted\" realm, with \\ and comma", nonce="n\,x"'
    assert parse_params(header) == {
        "realm": 'a "quoted" realm, with \\ and comma',
        "nonce": "n,x",
    }


def test_header_escapes_quotes_and_backslashes() -> None:
    header = Challenge(realm='say "hi" \\o/', nonce="n").header()
    assert 'realm="say \\"hi\\" \\\\o/"' in header


def test_plivo_style_challenge() -> None:
    challenge = Challenge.parse(
        'Digest realm="app.plivo.com", nonce="abc", algorithm=MD5, qop="auth"'
    )
    assert challenge == Challenge(realm="app.plivo.com", nonce="abc", algorithm="MD5", qop="auth")


def test_challenge_keys_and_scheme_are_case_insensitive() -> None:
    challenge = Challenge.parse('digest REALM="r", Nonce="n", Algorithm="SHA-256", QOP="auth"')
    assert challenge == Challenge(realm="r", nonce="n", algorithm="SHA-256", qop="auth")
    assert Challenge.parse('DIGEST realm="r",nonce="n"').nonce == "n"


def test_challenge_without_qop_or_algorithm() -> None:
    """RFC 2069-style challenges (many PBXs send these) default to MD5 and no qop."""
    challenge = Challenge.parse('Digest realm="asterisk",nonce="5f6c1a2b"')
    assert challenge == Challenge(realm="asterisk", nonce="5f6c1a2b", algorithm="MD5", qop=None)


def test_challenge_stale_and_opaque() -> None:
    challenge = Challenge.parse('Digest realm="r", nonce="n", opaque="o", stale=TRUE')
    assert challenge.stale is True and challenge.opaque == "o"
    assert Challenge.parse('Digest realm="r", nonce="n", stale=false').stale is False
    assert "stale" not in parse_params(Challenge(realm="r", nonce="n").header())


def test_challenge_header_renders_qop_quoted_and_algorithm_bare() -> None:
    params = Challenge(realm="r", nonce="n", algorithm="SHA-256").header()
    assert params.startswith("Digest ")
    assert "algorithm=SHA-256" in params
    assert 'qop="auth"' in params


def test_sip_authorization_without_spaces() -> None:
    digest = "0123456789abcdef0123456789abcdef"
    auth = Authorization.parse(
        f'Digest username="bob",realm="x",nonce="n",uri="sip:1@app.plivo.com",response="{digest}"'
    )
    assert auth == Authorization(
        username="bob", realm="x", nonce="n", uri="sip:1@app.plivo.com", response=digest
    )


def test_authorization_response_is_read_case_insensitively() -> None:
    challenge = Challenge(realm="x", nonce="n")
    auth = answer(challenge, "bob", "pw", "INVITE", "sip:1@app.plivo.com", cnonce="c")
    shouted = auth.header().replace(auth.response, auth.response.upper())
    assert auth.response.upper() in shouted
    parsed = Authorization.parse(shouted)
    assert parsed.response == auth.response
    assert verify(parsed, ha1("bob", "x", "pw"), "INVITE")


def test_authorization_with_sip_uri_and_bare_tokens() -> None:
    challenge = Challenge(realm="app.plivo.com", nonce="abc", opaque="op")
    auth = answer(challenge, "alice", "s3cret", "INVITE", "sip:+14155550100@app.plivo.com")
    header = auth.header()
    assert "qop=auth" in header and f"nc={auth.nc}" in header and "algorithm=MD5" in header
    assert 'uri="sip:+14155550100@app.plivo.com"' in header
    assert verify(Authorization.parse(header), ha1("alice", "app.plivo.com", "s3cret"), "INVITE")


def test_folded_header_with_newlines_between_params() -> None:
    header = (
        'Digest username="Mufasa",\r\n realm="testrealm@host.com",\r\n\t'
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",\r\n qop=auth,'
        ' nc=00000001, cnonce="0a4f113b",\r\n response="6629fae49393a05397450978507c4ef1"'
    )
    auth = Authorization.parse(header)
    assert verify(auth, ha1("Mufasa", RFC2617_REALM, "Circle Of Life"), "GET")


@pytest.mark.parametrize("separator", ["\t", "\r\n ", "\n\t"])
def test_scheme_may_be_followed_by_any_linear_white_space(separator: str) -> None:
    # RFC 3261 §25.1: credentials = "Digest" LWS digest-response, LWS = [*WSP CRLF] 1*WSP.
    # RFC 2617 §3.5 prints its challenge exactly so: "Digest" then a line fold.
    challenge = Challenge.parse(f'Digest{separator}realm="r", nonce="n"')
    assert challenge == Challenge(realm="r", nonce="n", qop=None)


# --- refusals -------------------------------------------------------------------------------------


@pytest.fixture
def good():
    challenge = Challenge(realm="app.plivo.com", nonce="nonce-1", opaque="o")
    auth = answer(challenge, "alice", "s3cret", "INVITE", "sip:1@app.plivo.com", cnonce="cn", nc=3)
    stored = ha1("alice", "app.plivo.com", "s3cret")
    assert verify(auth, stored, "INVITE")
    return auth, stored


def test_wrong_password_is_refused(good) -> None:
    auth, _ = good
    assert not verify(auth, ha1("alice", "app.plivo.com", "s3cret!"), "INVITE")
    assert not verify(auth, ha1("alice", "other.realm", "s3cret"), "INVITE")
    assert not verify(auth, ha1("mallory", "app.plivo.com", "s3cret"), "INVITE")


def test_wrong_method_is_refused(good) -> None:
    auth, stored = good
    assert not verify(auth, stored, "REGISTER")
    assert not verify(auth, stored, "invite")


@pytest.mark.parametrize(
    "change",
    [
        {"uri": "sip:2@app.plivo.com"},
        {"nonce": "nonce-2"},
        {"nc": "00000004"},
        {"cnonce": "cm"},
        {"qop": None, "nc": None, "cnonce": None},
        {"algorithm": "SHA-256"},
        {"algorithm": "MD5-sess"},
    ],
    ids=lambda c: ",".join(c),
)
def test_changed_fields_are_refused(good, change) -> None:
    auth, stored = good
    assert not verify(replace(auth, **change), stored, "INVITE")


@given(position=st.integers(min_value=0, max_value=31), delta=st.integers(1, 15))
def test_tampered_response_is_refused(position, delta) -> None:
    challenge = Challenge(realm="r", nonce="n")
    auth = answer(challenge, "u", "p", "INVITE", "sip:1@x", cnonce="c")
    digits = list(auth.response)
    digits[position] = f"{(int(digits[position], 16) + delta) % 16:x}"
    tampered = replace(auth, response="".join(digits))
    assert tampered.response != auth.response
    assert not verify(tampered, ha1("u", "r", "p"), "INVITE")


def test_truncated_or_empty_response_is_refused(good) -> None:
    auth, stored = good
    assert not verify(replace(auth, response=auth.response[:-1]), stored, "INVITE")
    assert not verify(replace(auth, response=""), stored, "INVITE")


@pytest.mark.parametrize("algorithm", ["SHA-512", "SHA", "SHA-512-256-sess", "", "bogus"])
def test_verify_with_an_unknown_algorithm_is_false_not_an_error(good, algorithm) -> None:
    auth, stored = good
    assert verify(replace(auth, algorithm=algorithm), stored, "INVITE") is False
    parsed = Authorization.parse(replace(auth, algorithm=algorithm).header())
    assert verify(parsed, stored, "INVITE") is False


@pytest.mark.parametrize(
    "header",
    [
        'Basic realm="r", nonce="n"',
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Digest",
        "Digest   ",
        "",
        'Digest realm="r"',  # no nonce
        'Digest realm="r", nonce=""',  # empty nonce
        'Digest nonce="n"',  # no realm
        'Digest realm="r", nonce="n", nonce="m"',  # duplicate
        'Digest realm="r", Nonce="n", nonce="n"',  # duplicate, differing only in case
        'Digest realm="r", nonce="n", algorithm=SHA-512',
        'Digest realm="r", nonce="n", algorithm="SHA"',
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Digest realm="r", nonce="n", qop="auth-conf,auth-int"',
        'Digest realm="r" nonce="n"',  # missing comma
        'Digest realm="r, nonce="n"',  # unterminated quote
        'Digest realm="r\\", nonce="n"',  # escaped closing quote
        'Digest realm="r"x, nonce="n"',
        'Digest realm=r n, nonce="n"',
        'Digest =r, nonce="n"',
        'Digest realm="r",, nonce="n"',
    ],
)
def test_malformed_challenges_are_refused(header) -> None:
    with pytest.raises(DigestError):
        Challenge.parse(header)


_FIELDS = 'username="u", realm="r", nonce="n", uri="sip:1@x", response="00ff"'


@pytest.mark.parametrize(
    "header",
    [
        'Basic username="u", realm="r", nonce="n", uri="sip:1@x", response="00ff"',
        'Digest username="u", realm="r", uri="sip:1@x", response="00ff"',  # no nonce
        'Digest realm="r", nonce="n", uri="sip:1@x", response="00ff"',  # no username
        'Digest username="u", realm="r", nonce="n", response="00ff"',  # no uri
        'Digest username="u", realm="r", nonce="n", uri="sip:1@x"',  # no response
        f'Digest {_FIELDS}, username="v"',  # duplicate
        f'Digest {_FIELDS}, qop=auth, cnonce="c"',  # qop without nc
        f"Digest {_FIELDS}, qop=auth, nc=00000001",  # qop without cnonce
        f'Digest {_FIELDS}, qop=auth, nc=, cnonce="c"',  # empty nc
        f'Digest {_FIELDS}, qop=auth-int, nc=00000001, cnonce="c"',
        f'Digest {_FIELDS}, qop="auth,auth-int", nc=00000001, cnonce="c"',
        f"Digest {_FIELDS} qop=auth",  # missing comma
    ],
)
def test_malformed_authorizations_are_refused(header) -> None:
    with pytest.raises(DigestError):
        Authorization.parse(header)


def test_digest_error_is_a_value_error() -> None:
    assert issubclass(DigestError, ValueError)


# --- nonces ---------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
URI = "sip:1@app.plivo.com"


def _counter():
    count = iter(range(1_000_000))
    return lambda: f"nonce-{next(count)}"


def test_nonce_redeems_once_only() -> None:
    nonces = Nonces()
    nonce = nonces.issue("app.plivo.com", URI, T0)
    assert nonce
    assert nonces.redeem(nonce, URI, T0 + timedelta(seconds=1))
    assert not nonces.redeem(nonce, URI, T0 + timedelta(seconds=2))


def test_nonces_are_distinct_by_default() -> None:
    nonces = Nonces()
    issued = {nonces.issue("r", URI, T0) for _ in range(50)}
    assert len(issued) == 50
    assert all(nonces.redeem(n, URI, T0) for n in issued)


def test_nonce_is_not_good_for_another_uri() -> None:
    nonces = Nonces()
    nonce = nonces.issue("r", URI, T0)
    assert not nonces.redeem(nonce, "sip:2@app.plivo.com", T0)
    # A failed attempt spends it too: no second guess on the same nonce.
    assert not nonces.redeem(nonce, URI, T0)


def test_nonce_expires_at_exactly_ttl() -> None:
    nonces = Nonces(_counter())
    at_limit = nonces.issue("r", URI, T0)
    just_before = nonces.issue("r", URI, T0)
    assert at_limit != just_before
    assert not nonces.redeem(at_limit, URI, T0 + NONCE_TTL)
    assert nonces.redeem(just_before, URI, T0 + NONCE_TTL - timedelta(microseconds=1))


def test_nonce_long_expired_is_refused() -> None:
    nonces = Nonces()
    nonce = nonces.issue("r", URI, T0)
    assert not nonces.redeem(nonce, URI, T0 + NONCE_TTL + timedelta(hours=1))


def test_nonce_ttl_is_the_sip_transaction_timeout() -> None:
    assert NONCE_TTL == timedelta(seconds=32)


def test_unknown_nonce_is_refused() -> None:
    nonces = Nonces()
    nonces.issue("r", URI, T0)
    assert not nonces.redeem("never-issued", URI, T0)
    assert not nonces.redeem("", URI, T0)


def test_expired_nonces_are_dropped_on_the_next_issue() -> None:
    """Observed through redeem with a clock set back: a dropped nonce is unknown even then."""
    nonces = Nonces(_counter())
    old = nonces.issue("r", URI, T0)
    young = nonces.issue("r", URI, T0 + timedelta(seconds=1))
    nonces.issue("r", URI, T0 + NONCE_TTL)  # `old` expires exactly now, `young` not yet
    assert not nonces.redeem(old, URI, T0)
    assert nonces.redeem(young, URI, T0 + timedelta(seconds=1))


def test_live_nonces_survive_the_next_issue() -> None:
    nonces = Nonces(_counter())
    first = nonces.issue("r", URI, T0)
    nonces.issue("r", URI, T0 + NONCE_TTL - timedelta(microseconds=1))
    assert nonces.redeem(first, URI, T0 + NONCE_TTL - timedelta(microseconds=1))


def test_without_a_new_issue_an_expired_nonce_is_still_refused() -> None:
    nonces = Nonces(_counter())
    nonce = nonces.issue("r", URI, T0)
    assert not nonces.redeem(nonce, URI, T0 + NONCE_TTL)
    # It was spent by that attempt, so setting the clock back does not revive it.
    assert not nonces.redeem(nonce, URI, T0)


def test_full_server_flow() -> None:
    """Challenge with a fresh nonce, answer as the client, verify and redeem as the server."""
    nonces = Nonces()
    realm = "app.plivo.com"
    stored = ha1("alice", realm, "s3cret")
    nonce = nonces.issue(realm, URI, T0)
    header = Challenge(realm=realm, nonce=nonce).header()
    auth = Authorization.parse(
        answer(Challenge.parse(header), "alice", "s3cret", "INVITE", URI).header()
    )
    assert verify(auth, stored, "INVITE")
    assert nonces.redeem(auth.nonce, auth.uri, T0 + timedelta(seconds=5))
    # A replay of the same header is refused by the nonce store even though the digest is valid.
    assert verify(auth, stored, "INVITE")
    assert not nonces.redeem(auth.nonce, auth.uri, T0 + timedelta(seconds=6))


def test_a_sess_answer_without_cnonce_is_refused() -> None:
    """-sess keys HA1 with the cnonce; an answer without one cannot be checked, so it is refused."""
    header = (
        'Digest username="u", realm="r", nonce="n", uri="sip:1@app.plivo.com", '
        'response="00112233445566778899aabbccddeeff", algorithm=MD5-sess'
    )
    with pytest.raises(DigestError, match="cnonce"):
        Authorization.parse(header)
