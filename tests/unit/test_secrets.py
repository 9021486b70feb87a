"""Agent passwords and tokens appear only inside the Dial XML sent to Plivo, nowhere else."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import MetaData, select

from app import create_app
from sipguard.errors import ConfigError
from sipguard.logs import REDACTED, RedactingFilter
from tests.support.config import ALL_CANARIES, MAIN_TOKEN, SECRET_KEY, TOKEN
from tests.support.signing import inbound, make_signed_post

SECRETS = (*ALL_CANARIES, TOKEN, MAIN_TOKEN, SECRET_KEY)


def _dump_database(app) -> str:
    store = app.extensions["sipguard"].store
    tables = MetaData()
    tables.reflect(store.engine)
    with store.engine.connect() as conn:
        return "\n".join(
            repr(row) for table in tables.sorted_tables for row in conn.execute(select(table))
        )


@pytest.fixture
def traffic(app, app_logs, break_database):
    """Drive every route and failure path once; return the responses."""
    post = make_signed_post(app.test_client())
    client = app.test_client()
    responses = [
        post("/answer", inbound(SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk")),
        post(
            "/answer",
            inbound(
                SIPAuthType="ip_acl_and_credential",
                SIPAuthUser="frontdesk",
                SIPSourceIP="203.0.113.7",
            ),
        ),
        post("/answer", inbound(SIPAuthType="credential", SIPAuthUser="night")),
        post("/answer", inbound(SIPAuthType="ip_acl")),
        post("/answer", inbound()),
        post("/dial-action?group=support&attempt=0", inbound(DialHangupCause="sip_auth_failed")),
        post("/dial-action?group=support&attempt=1", inbound(DialStatus="timeout")),
        post("/dial-action?group=oncall&attempt=0", inbound(DialHangupCause="4250")),
        post("/dial-action?group=nobody&attempt=0", inbound()),
        post("/handoff/support?token=bad", inbound()),
        post("/hangup", inbound(HangupCauseName="sip_auth_failed", HangupCauseCode="4240")),
        post("/hangup", {"From": "x"}),
        post("/answer", inbound(), token="forged"),
        client.post("/answer", data=inbound()),
        client.get("/healthz"),
    ]
    with break_database(app):
        responses.append(post("/hangup", inbound()))
        responses.append(post("/answer", inbound(SIPAuthType="credential", SIPAuthUser="night")))
    return responses


def test_no_secret_in_logs_rows_or_non_xml_responses(app, app_logs, capfd, traffic) -> None:
    stderr = capfd.readouterr().err
    database = _dump_database(app)
    non_xml = [r.get_data(as_text=True) for r in traffic if r.mimetype != "application/xml"]
    assert non_xml, "the traffic must include error responses"
    assert "sip_auth_failed" in database  # the rows really are there
    for secret in SECRETS:
        assert secret not in app_logs.text, "secret in a log record"
        assert secret not in stderr, "secret on stderr"
        assert secret not in database, "secret in a stored row"
        for body in non_xml:
            assert secret not in body, "secret in a non-XML response"


def test_responses_with_credentials_are_never_cached(traffic) -> None:
    carrying = [r for r in traffic if b"sipAuthPassword" in r.data]
    assert len(carrying) >= 3
    for response in carrying:
        assert response.headers["Cache-Control"] == "no-store"


def test_config_errors_do_not_echo_secrets(app_config, tmp_path) -> None:
    (tmp_path / "voice.toml").write_text(
        '[agents.a]\nuri = "sip:a@b.example"\nusername = "a"\npassword = "Plaintext-Canary-1"\n'
    )
    with pytest.raises(ConfigError) as error:
        create_app({**app_config, "VOICE_CONFIG": str(tmp_path / "voice.toml")})
    assert "Plaintext-Canary-1" not in str(error.value)
    assert "password_env" in str(error.value)


def test_redacting_filter_is_a_second_line_of_defence() -> None:
    record = logging.LogRecord(
        "sipguard",
        logging.INFO,
        __file__,
        1,
        "leak %s and %s?token=abc.def",
        ("Secret-1", "x"),
        None,
    )
    redactor = RedactingFilter(["Secret-1", "ab"])  # too short to redact safely: ignored
    assert redactor.filter(record)
    assert record.getMessage() == f"leak {REDACTED} and x?token={REDACTED}"


def test_redacting_filter_covers_tracebacks() -> None:
    try:
        raise ValueError("boom Secret-2")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "sipguard", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    RedactingFilter(["Secret-2"]).filter(record)
    assert "Secret-2" not in (record.exc_text or "")
    assert REDACTED in (record.exc_text or "")


def test_secret_objects_do_not_reveal_themselves(app) -> None:
    groups = app.extensions["sipguard"].voice.groups
    text = repr(groups) + str(groups)
    for secret in ALL_CANARIES:
        assert secret not in text
    assert "Secret('***')" in text
    assert TOKEN not in repr(app.extensions["sipguard"].settings)
