"""`make run` on a fresh copy of the repository starts gunicorn and answers."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from dotenv import dotenv_values

from devtools.harness import free_port, start
from sipguard.calls import signature
from sipguard.settings import environ_names
from tests.support.repo import fresh_copy

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_make_run_on_a_fresh_copy_answers_healthz_and_signed_calls(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fresh_copy(repo)
    assert not (repo / "instance").exists()
    port = free_port()
    # No setting from this shell: `make run` must generate its own development secrets.
    settings = set(environ_names())
    env = {k: v for k, v in os.environ.items() if k not in settings}
    # Reuse this suite's virtualenv: the install step itself is what CI's `make test` proves.
    # `-o` keeps make from reinstalling the project from this temporary copy into it (the copy
    # keeps file times, so pyproject.toml may look newer than the venv's stamp).
    venv = Path(sys.executable).parent.parent
    try:
        server = start(
            "make run",
            ["make", "-o", f"{venv}/.installed", "run", f"PORT={port}", f"VENV={venv}"],
            env=env,
            log=tmp_path / "run.log",
            port=port,
            cwd=repo,
            timeout=60,
        )
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        assert b'"database":"ok"' in body

        output = (tmp_path / "run.log").read_text()
        assert "DEVELOPMENT MODE" in output
        dev = dotenv_values(repo / "instance" / "dev-secrets.env")
        token = dev["PLIVO_AUTH_TOKEN"]
        assert token and token not in output

        url = f"http://127.0.0.1:{port}/answer"
        form = {"CallUUID": "make-run-1", "From": "+14155550123", "To": "+14155550100"}
        params = {k: [v] for k, v in form.items()}
        headers = signature.signed_headers(token, "POST", url, params, uuid.uuid4().hex)
        request = urllib.request.Request(
            url, data=urllib.parse.urlencode(form).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert b"<Speak>Sorry" in response.read()  # the sample config's default

        unsigned = urllib.request.Request(
            url, data=urllib.parse.urlencode(form).encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned, timeout=5)
        assert refused.value.code == 403
