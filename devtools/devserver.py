"""`make run` (`python -m devtools.devserver`): start the service locally on its embedded defaults:
gunicorn, and beside it the webhook worker (`flask --app app:create_app worker`).

`python -m devtools.devserver flask ARGS...` runs a Flask CLI command in the same environment
instead (`make sign ARGS=...` uses it to print a request signed with the development token).

SQLite under instance/, the sample voice config, and, for every secret the environment (or .env)
does not provide, a random development value kept in instance/dev-secrets.env. Verification
stays on: only requests signed with the development token are accepted.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from types import FrameType

from dotenv import dotenv_values

from devtools.harness import APP, ROOT, gunicorn_command

INSTANCE = ROOT / "instance"
DEV_SECRETS = INSTANCE / "dev-secrets.env"
SAMPLE_CONFIG = ROOT / "config" / "voice.sample.toml"
SANDBOX_CONFIG = ROOT / "sandbox" / "sample.toml"
SANDBOX_PORT = 5100
DEV_MONITOR_PASSWORD = "MONITOR_DEV_PASSWORD"
WORKER_STOP_TIMEOUT = 30.0  # seconds the webhook worker gets to finish after gunicorn stopped


def _password_variables(config: Path, sandbox: Path) -> list[str]:
    """The environment variables the voice config's agents and the sandbox's PBXs read."""
    agents = tomllib.loads(config.read_text(encoding="utf-8")).get("agents", {})
    names = [spec["password_env"] for spec in agents.values() if "password_env" in spec]
    if sandbox.exists():
        endpoints = tomllib.loads(sandbox.read_text(encoding="utf-8")).get("endpoints", {})
        for spec in endpoints.values():
            name = spec.get("auth", {}).get("password_env")
            if name and name not in names:
                names.append(name)
    return names


def _auth_id() -> str:
    """A development auth ID in Plivo's shape (MA + 18 letters or digits)."""
    return "MADEV" + secrets.token_hex(8).upper()[:15]


def _dev_secrets(needed: list[str]) -> dict[str, str]:
    """Load instance/dev-secrets.env, adding a random value for each variable it lacks."""
    stored = (
        {k: v for k, v in dotenv_values(DEV_SECRETS).items() if v} if DEV_SECRETS.exists() else {}
    )
    missing = [name for name in needed if name not in stored]
    if missing:
        for name in missing:
            # Upper, lower and digits: agent passwords must satisfy Plivo's limits too.
            stored[name] = (
                _auth_id() if name == "PLIVO_AUTH_ID" else "Dev" + secrets.token_urlsafe(24) + "9x"
            )
        INSTANCE.mkdir(exist_ok=True)
        DEV_SECRETS.write_text("".join(f"{k}={v}\n" for k, v in stored.items()), encoding="utf-8")
        DEV_SECRETS.chmod(0o600)
    return stored


def _configured(configured: dict[str, str], name: str) -> bool:
    """Whether `name` or NAME_FILE is set."""
    return bool(configured.get(name) or configured.get(f"{name}_FILE"))


def main(argv: list[str]) -> None:
    port = os.environ.get("PORT", "5000")
    configured = {k: v for k, v in dotenv_values(ROOT / ".env").items() if v} | dict(os.environ)
    voice_config = Path(configured.get("VOICE_CONFIG", str(SAMPLE_CONFIG)))
    sandbox_config = Path(configured.get("SANDBOX_CONFIG", str(SANDBOX_CONFIG)))
    variables = _password_variables(voice_config, sandbox_config)
    needed = [
        name
        for name in ("PLIVO_AUTH_TOKEN", "PLIVO_AUTH_ID", "SECRET_KEY", *variables)
        if not _configured(configured, name)
    ]
    if not _configured(configured, "MONITOR_PASSWORD_HASH"):
        needed.append(DEV_MONITOR_PASSWORD)
    generated = {k: v for k, v in _dev_secrets(needed).items() if k in needed}
    if DEV_MONITOR_PASSWORD in generated:
        from werkzeug.security import generate_password_hash

        password = generated.pop(DEV_MONITOR_PASSWORD)
        generated["MONITOR_PASSWORD_HASH"] = generate_password_hash(password)
        if not argv:
            print(
                f"monitor page: http://127.0.0.1:{port}/monitor (password: "
                f"{DEV_MONITOR_PASSWORD} in {DEV_SECRETS.relative_to(ROOT)})",
                file=sys.stderr,
                flush=True,
            )
    env = {
        "VOICE_CONFIG": str(voice_config),
        "SANDBOX_CONFIG": str(sandbox_config),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        **generated,
        **configured,
        "BIND": f"127.0.0.1:{port}",
    }
    if "PLIVO_AUTH_TOKEN" in generated and not configured.get("PLIVO_API_URL"):
        # A generated token opens no real Plivo account: REST commands go to `make sandbox`.
        env["PLIVO_API_URL"] = f"http://127.0.0.1:{SANDBOX_PORT}"
    if "PLIVO_AUTH_TOKEN" in generated and not argv:
        rule = "!" * 78
        print(
            f"\n{rule}\n"
            "  DEVELOPMENT MODE: PLIVO_AUTH_TOKEN is not set, so a random development token\n"
            f"  was generated in {DEV_SECRETS.relative_to(ROOT)}.\n"
            "  Only requests signed with it are accepted (verification never switches off).\n"
            "  Print a signed test request (a curl command) with:\n"
            "    make sign ARGS='/answer CallUUID=test-1 From=sip:frontdesk@203.0.113.10 \\\n"
            "        SIPAuthType=ip_acl'\n"
            "  REST commands (sipauth, call, handoff) go to the local sandbox:\n"
            f"  run `make sandbox` beside it (http://127.0.0.1:{SANDBOX_PORT}).\n"
            "  For real traffic set PLIVO_AUTH_TOKEN and PUBLIC_BASE_URL (see README).\n"
            f"{rule}\n",
            file=sys.stderr,
            flush=True,
        )
    os.chdir(ROOT)
    bin_dir = Path(sys.executable).parent
    if argv[:1] == ["flask"]:
        flask = str(bin_dir / "flask")
        os.execve(flask, [flask, "--app", "app:create_app", *argv[1:]], env)
    sys.exit(_serve(env, bin_dir))


def _serve(env: dict[str, str], bin_dir: Path) -> int:
    """Run gunicorn and the webhook worker side by side; gunicorn's exit stops the worker.

    SIGTERM and SIGINT are passed on to both. A worker that dies leaves the web server up, with
    a line saying outcome webhooks are not being delivered.
    """
    flask = str(bin_dir / "flask")
    worker = subprocess.Popen([flask, "--app", "app:create_app", "worker"], env=env)
    server = subprocess.Popen(gunicorn_command(APP), env=env)
    stopping = threading.Event()

    def forward(number: int, frame: FrameType | None) -> None:
        stopping.set()
        for child in (server, worker):
            if child.poll() is None:
                child.send_signal(number)

    def watch() -> None:
        code = worker.wait()
        if not stopping.is_set():
            print(
                f"webhook worker exited with {code}: outcome webhooks are not being delivered",
                file=sys.stderr,
                flush=True,
            )

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, forward)
    threading.Thread(target=watch, daemon=True).start()
    code = server.wait()
    stopping.set()
    if worker.poll() is None:
        worker.terminate()  # it finishes the delivery in hand: at most twice its timeout
        try:
            worker.wait(timeout=WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return code


if __name__ == "__main__":
    main(sys.argv[1:])
