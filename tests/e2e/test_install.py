"""`pip install` of the project into a fresh virtualenv gives a working `sipguard` command.

The wheel is built from a fresh copy of the repository without build isolation and installed
with --no-index --no-deps into a new virtualenv whose only extra path is this suite's
site-packages (the project's dependencies, already installed): nothing is downloaded, and the
project's own code there comes from the wheel, never from the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import free_port, start
from tests.support.config import AUTH_ID, CANARIES, DATA, SECRET_KEY, TOKEN
from tests.support.repo import fresh_copy

pytestmark = pytest.mark.slow

STEP_TIMEOUT = 180  # seconds for one build or install step
COMMAND_TIMEOUT = 60
START_TIMEOUT = 60


def _run(
    argv: list[str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the project's wheel; return its bin directory."""
    work = tmp_path_factory.mktemp("install")
    source, wheels, target = work / "source", work / "wheels", work / "venv"
    fresh_copy(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    offline = ["--no-index", "--no-deps", "--no-build-isolation"]
    _run([*pip, "wheel", *offline, "--wheel-dir", str(wheels), str(source)], timeout=STEP_TIMEOUT)
    [wheel] = wheels.glob("plivo_sip_guard-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(target)], timeout=STEP_TIMEOUT)
    python = target / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        timeout=COMMAND_TIMEOUT,
    ).stdout.strip()
    # The dependencies only: a .pth line adds the directory, its own .pth files (the editable
    # install of the repository) are not run.
    (Path(purelib) / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([*pip, "--python", str(python), "install", *offline, str(wheel)], timeout=STEP_TIMEOUT)
    return target / "bin"


def sipguard(
    bin_dir: Path, cwd: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the installed `sipguard ARGS` with exactly `env` (and PATH) in `cwd`."""
    return subprocess.run(
        [str(bin_dir / "sipguard"), *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@pytest.fixture
def sandbox(venv: Path, tmp_path: Path) -> Iterator[str]:
    """`sipguard sandbox serve` from the installed package, on its default (packaged) world."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        "VOICE_CONFIG": str(DATA / "voice.toml"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sipguard.db'}",
        "SANDBOX_ALICE_PBX_PASSWORD": "Sandbox-Alice-Pw-42",
        **CANARIES,
    }
    port = free_port()
    argv = [str(venv / "sipguard"), "sandbox", "serve", "--port", str(port)]
    log = tmp_path / "sandbox.log"
    server = start(
        "sandbox",
        argv,
        env=env,
        log=log,
        port=port,
        health_path="/sandbox/healthz",
        cwd=tmp_path,
        timeout=START_TIMEOUT,
    )
    try:
        yield server.base
    finally:
        server.stop()


def test_the_installed_code_is_the_wheels(venv: Path, tmp_path: Path) -> None:
    script = "import app, sandbox, sipguard, webhooks; print(sipguard.__file__, sandbox.__file__)"
    done = _run([str(venv / "python"), "-c", script], cwd=tmp_path, timeout=COMMAND_TIMEOUT)
    for path in done.stdout.split():
        assert Path(path).is_relative_to(venv.parent), path


def test_nothing_set_is_one_line_and_exit_2(venv: Path, tmp_path: Path) -> None:
    done = sipguard(venv, tmp_path, {}, "sipauth", "credential", "list")
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("error: PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN are not set")
    assert done.stderr.count("\n") == 1


def test_the_account_alone_reaches_the_sandbox(venv: Path, tmp_path: Path, sandbox: str) -> None:
    """The packaged sandbox serves; PLIVO_AUTH_ID/TOKEN/API_URL are all `sipauth` needs."""
    account = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": TOKEN, "PLIVO_API_URL": sandbox}
    assert sipguard(venv, tmp_path, account, "sipauth", "credential", "list").stdout == "(none)\n"
    created = sipguard(
        venv, tmp_path, account, "sipauth", "credential", "create", "pbx-trunk", "--generate"
    )
    assert created.returncode == 0, created.stderr
    listed = sipguard(venv, tmp_path, account, "sipauth", "credential", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"username": "pbx-trunk"' in listed.stdout
    calls = sipguard(venv, tmp_path, account, "sandbox", "calls")
    assert (calls.returncode, calls.stdout) == (0, "(none)\n"), calls.stderr
