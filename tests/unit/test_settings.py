"""Tests for settings.load_settings: every variable, its validation, and that no secret leaks.

Each failure case asserts that the ConfigError message names what the operator has to set, so a
message that stops saying which variable is wrong fails here.
"""

from __future__ import annotations

import dataclasses
import runpy
from datetime import timedelta
from pathlib import Path

import pytest

from sipguard.errors import ConfigError
from sipguard.settings import (
    APP,
    MIN_SECRET_KEY_LENGTH,
    SANDBOX,
    SETTINGS,
    Setting,
    Settings,
    environ_names,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]

# Canary values: distinctive enough that finding them in a message or a repr is proof of a leak.
TOKEN = "Canary-Token-NEW-4f1d8a9e27"
OLD_TOKEN = "Canary-Token-OLD-b3c5e0d711"
MAIN_TOKEN = "Canary-Main-Token-9a8b7c6d5e"
SECRET_KEY = "Canary-Secret-Key-" + "k" * 32
CANARIES = (TOKEN, OLD_TOKEN, MAIN_TOKEN, SECRET_KEY)
BASE_URL = "https://voice.example.test"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment that loads."""
    return {
        "PLIVO_AUTH_TOKEN": TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": BASE_URL,
        "VOICE_CONFIG": str(tmp_path / "voice.toml"),
    }


def load(environ: dict[str, str], instance_path: Path | None = None) -> Settings:
    return load_settings(environ, instance_path or Path("/srv/instance"))


def error(environ: dict[str, str], instance_path: Path | None = None) -> str:
    """Return the ConfigError message `environ` produces, failing if it loads."""
    with pytest.raises(ConfigError) as caught:
        load(environ, instance_path)
    assert caught.value.message == str(caught.value)
    return caught.value.message


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- the minimal environment and defaults ----------------------------------------------------


def test_minimal_environment_loads_with_documented_defaults(env: dict[str, str]) -> None:
    settings = load(env, Path("/srv/instance"))
    assert settings.auth_tokens == (TOKEN,)
    assert settings.secret_key == SECRET_KEY
    assert settings.public_base_url == BASE_URL
    assert settings.voice_config == Path(env["VOICE_CONFIG"])
    assert settings.database_url == "sqlite:////srv/instance/sipguard.db"
    assert settings.trusted_proxy_count == 0
    assert settings.main_auth_tokens == ()
    assert settings.auth_id is None
    assert settings.accept_v2 is False
    assert settings.nonce_ttl == timedelta(minutes=10)
    assert settings.handoff_ttl_seconds == 4 * 3600
    assert settings.max_content_length == 64 * 1024
    assert settings.log_level == "INFO"


def test_database_url_defaults_to_sqlite_under_instance_path(
    env: dict[str, str], tmp_path: Path
) -> None:
    instance = tmp_path / "instance"
    settings = load(env, instance)
    assert settings.database_url == f"sqlite:///{instance / 'sipguard.db'}"
    # An absolute instance path gives SQLAlchemy's absolute form: four slashes.
    assert settings.database_url.startswith("sqlite:////")


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_database_url_falls_back_to_the_default(
    env: dict[str, str], tmp_path: Path, blank: str
) -> None:
    settings = load({**env, "DATABASE_URL": blank}, tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'sipguard.db'}"


def test_database_url_is_used_as_given(env: dict[str, str]) -> None:
    url = "postgresql+psycopg://sipguard@db.internal:5432/sipguard"
    assert load({**env, "DATABASE_URL": f"  {url} "}).database_url == url


def test_plivo_auth_id_is_optional_and_stripped(env: dict[str, str]) -> None:
    assert (
        load({**env, "PLIVO_AUTH_ID": " MAXXXXXXXXXXXXXXXXXX "}).auth_id == "MAXXXXXXXXXXXXXXXXXX"
    )
    assert load({**env, "PLIVO_AUTH_ID": "  "}).auth_id is None


def test_voice_config_becomes_a_path(env: dict[str, str]) -> None:
    settings = load({**env, "VOICE_CONFIG": " config/voice.sample.toml "})
    assert settings.voice_config == Path("config/voice.sample.toml")


# --- required variables -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", ",", " , ,, "], ids=repr)
def test_missing_auth_token_names_the_variable_and_its_file_variant(
    env: dict[str, str], value: str | None
) -> None:
    environ = {k: v for k, v in env.items() if k != "PLIVO_AUTH_TOKEN"}
    if value is not None:
        environ["PLIVO_AUTH_TOKEN"] = value
    message = error(environ)
    assert message.startswith("PLIVO_AUTH_TOKEN is not set")
    assert "PLIVO_AUTH_TOKEN_FILE" in message


@pytest.mark.parametrize("value", [None, "", "  "], ids=repr)
def test_missing_secret_key_names_the_variable(env: dict[str, str], value: str | None) -> None:
    environ = {k: v for k, v in env.items() if k != "SECRET_KEY"}
    if value is not None:
        environ["SECRET_KEY"] = value
    message = error(environ)
    assert "SECRET_KEY must be set" in message
    assert "SECRET_KEY_FILE" in message
    assert str(MIN_SECRET_KEY_LENGTH) in message


def test_secret_key_one_character_short_is_refused_without_echoing_it(
    env: dict[str, str],
) -> None:
    short = "Canary-Short-Key-" + "x" * (MIN_SECRET_KEY_LENGTH - 18)
    assert len(short) == MIN_SECRET_KEY_LENGTH - 1
    message = error({**env, "SECRET_KEY": short})
    assert "SECRET_KEY" in message
    assert f"at least {MIN_SECRET_KEY_LENGTH}" in message
    assert short not in message


def test_secret_key_of_exactly_the_minimum_length_loads(env: dict[str, str]) -> None:
    key = "m" * MIN_SECRET_KEY_LENGTH
    assert load({**env, "SECRET_KEY": key}).secret_key == key


def test_secret_key_length_is_measured_after_stripping(env: dict[str, str]) -> None:
    padded = "  " + "p" * (MIN_SECRET_KEY_LENGTH - 1) + "  "
    assert "SECRET_KEY" in error({**env, "SECRET_KEY": padded})


@pytest.mark.parametrize("proxies", [None, "", "0"], ids=repr)
def test_missing_public_base_url_without_proxies_names_both_ways_out(
    env: dict[str, str], proxies: str | None
) -> None:
    environ = {k: v for k, v in env.items() if k != "PUBLIC_BASE_URL"}
    if proxies is not None:
        environ["TRUSTED_PROXY_COUNT"] = proxies
    message = error(environ)
    assert message.startswith("PUBLIC_BASE_URL is not set")
    assert "TRUSTED_PROXY_COUNT" in message


def test_blank_public_base_url_counts_as_missing(env: dict[str, str]) -> None:
    assert error({**env, "PUBLIC_BASE_URL": "   "}).startswith("PUBLIC_BASE_URL is not set")


def test_public_base_url_may_be_omitted_behind_trusted_proxies(env: dict[str, str]) -> None:
    environ = {k: v for k, v in env.items() if k != "PUBLIC_BASE_URL"}
    settings = load({**environ, "TRUSTED_PROXY_COUNT": "2"})
    assert settings.public_base_url is None
    assert settings.trusted_proxy_count == 2


@pytest.mark.parametrize("value", [None, "", "  "], ids=repr)
def test_missing_voice_config_names_the_variable(env: dict[str, str], value: str | None) -> None:
    environ = {k: v for k, v in env.items() if k != "VOICE_CONFIG"}
    if value is not None:
        environ["VOICE_CONFIG"] = value
    message = error(environ)
    assert message.startswith("VOICE_CONFIG is not set")
    assert "voice.sample.toml" in message


def test_empty_environment_reports_the_auth_token_first() -> None:
    assert error({}).startswith("PLIVO_AUTH_TOKEN is not set")


# --- auth tokens: rotation lists ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TOKEN, (TOKEN,)),
        (f"{TOKEN},{OLD_TOKEN}", (TOKEN, OLD_TOKEN)),
        (f" {TOKEN} , {OLD_TOKEN} ", (TOKEN, OLD_TOKEN)),
        (f",{TOKEN},, ,{OLD_TOKEN},", (TOKEN, OLD_TOKEN)),
        (f"{OLD_TOKEN},{TOKEN}", (OLD_TOKEN, TOKEN)),
    ],
    ids=["single", "two", "spaces", "blanks-dropped", "order-kept"],
)
def test_auth_token_list_keeps_order_newest_first_and_drops_blanks(
    env: dict[str, str], raw: str, expected: tuple[str, ...]
) -> None:
    assert load({**env, "PLIVO_AUTH_TOKEN": raw}).auth_tokens == expected


def test_main_auth_token_list_is_parsed_the_same_way(env: dict[str, str]) -> None:
    settings = load({**env, "PLIVO_MAIN_AUTH_TOKEN": f" {MAIN_TOKEN} ,, {OLD_TOKEN} ,"})
    assert settings.main_auth_tokens == (MAIN_TOKEN, OLD_TOKEN)


def test_blank_main_auth_token_is_no_main_token(env: dict[str, str]) -> None:
    assert load({**env, "PLIVO_MAIN_AUTH_TOKEN": " , "}).main_auth_tokens == ()


def test_secrets_lists_every_token_and_the_secret_key(env: dict[str, str]) -> None:
    settings = load(
        {
            **env,
            "PLIVO_AUTH_TOKEN": f"{TOKEN},{OLD_TOKEN}",
            "PLIVO_MAIN_AUTH_TOKEN": MAIN_TOKEN,
        }
    )
    assert settings.secrets() == (TOKEN, OLD_TOKEN, MAIN_TOKEN, SECRET_KEY)


# --- *_FILE variants --------------------------------------------------------------------------


def test_auth_token_file_is_read_and_split(env: dict[str, str], tmp_path: Path) -> None:
    environ = {k: v for k, v in env.items() if k != "PLIVO_AUTH_TOKEN"}
    path = write(tmp_path / "token", f"\n {TOKEN},{OLD_TOKEN}, \n")
    settings = load({**environ, "PLIVO_AUTH_TOKEN_FILE": path})
    assert settings.auth_tokens == (TOKEN, OLD_TOKEN)


def test_secret_key_file_is_read_and_stripped(env: dict[str, str], tmp_path: Path) -> None:
    environ = {k: v for k, v in env.items() if k != "SECRET_KEY"}
    path = write(tmp_path / "secret_key", SECRET_KEY + "\n")
    assert load({**environ, "SECRET_KEY_FILE": f" {path} "}).secret_key == SECRET_KEY


def test_secret_key_file_too_short_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    environ = {k: v for k, v in env.items() if k != "SECRET_KEY"}
    path = write(tmp_path / "secret_key", "Canary-Short-File-Key\n")
    message = error({**environ, "SECRET_KEY_FILE": path})
    assert "SECRET_KEY" in message
    assert "Canary-Short-File-Key" not in message


def test_main_auth_token_file_is_read(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "main", MAIN_TOKEN + "\n")
    assert load({**env, "PLIVO_MAIN_AUTH_TOKEN_FILE": path}).main_auth_tokens == (MAIN_TOKEN,)


@pytest.mark.parametrize("name", ["PLIVO_AUTH_TOKEN", "SECRET_KEY", "PLIVO_MAIN_AUTH_TOKEN"])
def test_variable_and_its_file_both_set_is_refused(
    env: dict[str, str], tmp_path: Path, name: str
) -> None:
    path = write(tmp_path / "value", SECRET_KEY)
    environ = {**env, name: env.get(name, MAIN_TOKEN), f"{name}_FILE": path}
    message = error(environ)
    assert message == f"set {name} or {name}_FILE, not both"


@pytest.mark.parametrize("name", ["PLIVO_AUTH_TOKEN", "SECRET_KEY", "PLIVO_MAIN_AUTH_TOKEN"])
def test_missing_secret_file_is_refused_naming_the_file_variable(
    env: dict[str, str], tmp_path: Path, name: str
) -> None:
    environ = {k: v for k, v in env.items() if k != name}
    missing = tmp_path / "does-not-exist"
    message = error({**environ, f"{name}_FILE": str(missing)})
    assert message.startswith(f"{name}_FILE: cannot read the file it names (")
    assert str(missing) not in message
    assert "No such file" in message


def test_secret_file_that_is_a_directory_is_a_config_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    environ = {k: v for k, v in env.items() if k != "PLIVO_AUTH_TOKEN"}
    message = error({**environ, "PLIVO_AUTH_TOKEN_FILE": str(tmp_path)})
    assert message.startswith("PLIVO_AUTH_TOKEN_FILE: cannot read")


@pytest.mark.parametrize("name", ["PLIVO_AUTH_TOKEN", "SECRET_KEY", "PLIVO_MAIN_AUTH_TOKEN"])
@pytest.mark.parametrize("content", ["", "  \n\t\n"], ids=["empty", "whitespace"])
def test_empty_secret_file_is_refused(
    env: dict[str, str], tmp_path: Path, name: str, content: str
) -> None:
    environ = {k: v for k, v in env.items() if k != name}
    path = write(tmp_path / "empty", content)
    assert error({**environ, f"{name}_FILE": path}) == f"{name}_FILE: the file it names is empty"


# --- PUBLIC_BASE_URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://voice.example.com", "https://voice.example.com"),
        ("https://voice.example.com/", "https://voice.example.com"),
        ("https://voice.example.com///", "https://voice.example.com"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("https://voice.example.com:8443/", "https://voice.example.com:8443"),
        ("https://voice.example.com/plivo/", "https://voice.example.com/plivo"),
        ("https://[2001:db8::1]:8443/", "https://[2001:db8::1]:8443"),
        ("  https://voice.example.com/  ", "https://voice.example.com"),
    ],
)
def test_public_base_url_is_normalised(env: dict[str, str], raw: str, expected: str) -> None:
    assert load({**env, "PUBLIC_BASE_URL": raw}).public_base_url == expected


@pytest.mark.parametrize(
    "raw",
    [
        "voice.example.com",
        "//voice.example.com",
        "/answer",
        "ftp://voice.example.com",
        "wss://voice.example.com",
        "https://",
        "https:///path",
        "mailto:ops@example.com",
    ],
)
def test_public_base_url_must_be_absolute_http(env: dict[str, str], raw: str) -> None:
    message = error({**env, "PUBLIC_BASE_URL": raw})
    assert message.startswith("PUBLIC_BASE_URL must be an absolute http(s) URL")


@pytest.mark.parametrize(
    "raw",
    [
        "https://voice.example.com/?tenant=acme",
        "https://voice.example.com/#top",
        "https://voice.example.com?x=1#y",
    ],
)
def test_public_base_url_must_not_have_query_or_fragment(env: dict[str, str], raw: str) -> None:
    message = error({**env, "PUBLIC_BASE_URL": raw})
    assert message == "PUBLIC_BASE_URL must not have a query or #fragment"


def test_public_base_url_is_validated_even_behind_proxies(env: dict[str, str]) -> None:
    message = error({**env, "PUBLIC_BASE_URL": "voice.example.com", "TRUSTED_PROXY_COUNT": "1"})
    assert "PUBLIC_BASE_URL" in message


@pytest.mark.parametrize(
    "raw",
    [
        "https://:443",
        "https://voice.example.com:abc",
        "https://voice.example.com:99999",
        "https://voice.example.com/?",
        "https://voice.example.com#",
    ],
)
def test_malformed_public_base_url_is_refused(env: dict[str, str], raw: str) -> None:
    assert "PUBLIC_BASE_URL" in error({**env, "PUBLIC_BASE_URL": raw})


# --- integers, flags, log level ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "expected"),
    [
        ("TRUSTED_PROXY_COUNT", " 3 ", "trusted_proxy_count", 3),
        ("TRUSTED_PROXY_COUNT", "0", "trusted_proxy_count", 0),
        ("NONCE_TTL_SECONDS", "30", "nonce_ttl", timedelta(seconds=30)),
        ("NONCE_TTL_SECONDS", "1", "nonce_ttl", timedelta(seconds=1)),
        ("HANDOFF_TOKEN_TTL_SECONDS", "900", "handoff_ttl_seconds", 900),
        ("HANDOFF_TOKEN_TTL_SECONDS", "1", "handoff_ttl_seconds", 1),
        ("MAX_CONTENT_LENGTH", "1024", "max_content_length", 1024),
        ("MAX_CONTENT_LENGTH", "1048576", "max_content_length", 1048576),
    ],
)
def test_integers_are_parsed(
    env: dict[str, str], name: str, raw: str, attribute: str, expected: object
) -> None:
    assert getattr(load({**env, name: raw}), attribute) == expected


@pytest.mark.parametrize(
    ("name", "attribute", "default"),
    [
        ("TRUSTED_PROXY_COUNT", "trusted_proxy_count", 0),
        ("NONCE_TTL_SECONDS", "nonce_ttl", timedelta(seconds=600)),
        ("HANDOFF_TOKEN_TTL_SECONDS", "handoff_ttl_seconds", 4 * 3600),
        ("MAX_CONTENT_LENGTH", "max_content_length", 64 * 1024),
    ],
)
def test_blank_integer_means_the_default(
    env: dict[str, str], name: str, attribute: str, default: object
) -> None:
    assert getattr(load({**env, name: "  "}), attribute) == default


@pytest.mark.parametrize(
    "name",
    ["TRUSTED_PROXY_COUNT", "NONCE_TTL_SECONDS", "HANDOFF_TOKEN_TTL_SECONDS", "MAX_CONTENT_LENGTH"],
)
@pytest.mark.parametrize("raw", ["two", "1.5", "0x10", "1e3", "--1"])
def test_non_integer_is_refused_naming_variable_and_value(
    env: dict[str, str], name: str, raw: str
) -> None:
    assert error({**env, name: raw}) == f"{name} must be a whole number, got {raw!r}"


@pytest.mark.parametrize(
    ("name", "raw", "minimum"),
    [
        ("TRUSTED_PROXY_COUNT", "-1", 0),
        ("NONCE_TTL_SECONDS", "0", 1),
        ("NONCE_TTL_SECONDS", "-600", 1),
        ("HANDOFF_TOKEN_TTL_SECONDS", "0", 1),
        ("MAX_CONTENT_LENGTH", "1023", 1024),
        ("MAX_CONTENT_LENGTH", "0", 1024),
    ],
)
def test_integer_below_minimum_is_refused(
    env: dict[str, str], name: str, raw: str, minimum: int
) -> None:
    assert error({**env, name: raw}) == f"{name} must be at least {minimum}"


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "On"])
def test_true_flags(env: dict[str, str], raw: str) -> None:
    assert load({**env, "PLIVO_ACCEPT_V2": raw}).accept_v2 is True


@pytest.mark.parametrize("raw", ["", "0", "false", "False", " no ", "OFF"])
def test_false_flags(env: dict[str, str], raw: str) -> None:
    assert load({**env, "PLIVO_ACCEPT_V2": raw}).accept_v2 is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled", "t"])
def test_bad_flag_is_refused_naming_the_variable(env: dict[str, str], raw: str) -> None:
    message = error({**env, "PLIVO_ACCEPT_V2": raw})
    assert message.startswith("PLIVO_ACCEPT_V2 must be true or false")
    assert repr(raw.lower()) in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("debug", "DEBUG"), (" Warning ", "WARNING"), ("ERROR", "ERROR"), ("", "INFO")],
)
def test_log_level(env: dict[str, str], raw: str, expected: str) -> None:
    assert load({**env, "LOG_LEVEL": raw}).log_level == expected


@pytest.mark.parametrize("raw", ["TRACE", "CRITICAL", "verbose", "10"])
def test_bad_log_level_is_refused(env: dict[str, str], raw: str) -> None:
    assert error({**env, "LOG_LEVEL": raw}) == "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"


# --- canaries: no secret in a message or a repr -----------------------------------------------


def _assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text
        assert canary[:16] not in text  # not even a prefix


def test_repr_and_str_of_settings_hide_every_secret(env: dict[str, str]) -> None:
    settings = load(
        {
            **env,
            "PLIVO_AUTH_TOKEN": f"{TOKEN},{OLD_TOKEN}",
            "PLIVO_MAIN_AUTH_TOKEN": MAIN_TOKEN,
        }
    )
    assert set(settings.secrets()) == set(CANARIES)  # the canaries really were loaded
    _assert_no_canary(repr(settings))
    _assert_no_canary(str(settings))
    assert "voice.toml" in repr(settings)  # the repr is not simply empty


def test_repr_hides_secrets_read_from_files(env: dict[str, str], tmp_path: Path) -> None:
    environ = {k: v for k, v in env.items() if k not in ("PLIVO_AUTH_TOKEN", "SECRET_KEY")}
    settings = load(
        {
            **environ,
            "PLIVO_AUTH_TOKEN_FILE": write(tmp_path / "t", f"{TOKEN},{OLD_TOKEN}"),
            "SECRET_KEY_FILE": write(tmp_path / "k", SECRET_KEY),
            "PLIVO_MAIN_AUTH_TOKEN_FILE": write(tmp_path / "m", MAIN_TOKEN),
        }
    )
    assert set(settings.secrets()) == set(CANARIES)
    _assert_no_canary(repr(settings))


def _broken_environments(env: dict[str, str], tmp_path: Path) -> list[dict[str, str]]:
    secret_file = write(tmp_path / "secret", SECRET_KEY)
    everything = {**env, "PLIVO_MAIN_AUTH_TOKEN": MAIN_TOKEN, "PLIVO_AUTH_TOKEN": TOKEN}
    return [
        {**everything, "SECRET_KEY": SECRET_KEY[:20]},
        {**everything, "SECRET_KEY_FILE": secret_file},
        {**everything, "PLIVO_AUTH_TOKEN_FILE": secret_file},
        {**everything, "PLIVO_MAIN_AUTH_TOKEN_FILE": secret_file},
        {**everything, "PUBLIC_BASE_URL": ""},
        {**everything, "PUBLIC_BASE_URL": "https://voice.example.com/?tenant=acme"},
        {**everything, "VOICE_CONFIG": ""},
        {**everything, "TRUSTED_PROXY_COUNT": "many"},
        {**everything, "NONCE_TTL_SECONDS": "0"},
        {**everything, "PLIVO_ACCEPT_V2": "perhaps"},
        {**everything, "LOG_LEVEL": "LOUD"},
        {
            **{k: v for k, v in everything.items() if k != "SECRET_KEY"},
            "SECRET_KEY_FILE": str(tmp_path / "missing"),
        },
    ]


def test_config_errors_never_contain_a_token_or_the_secret_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    environments = _broken_environments(env, tmp_path)
    for environ in environments:
        with pytest.raises(ConfigError) as caught:
            load(environ, tmp_path)
        _assert_no_canary(str(caught.value))
        _assert_no_canary(repr(caught.value))


@pytest.mark.parametrize("name", ["PLIVO_AUTH_TOKEN", "SECRET_KEY", "PLIVO_MAIN_AUTH_TOKEN"])
def test_secret_pasted_into_a_file_variable_is_not_echoed(env: dict[str, str], name: str) -> None:
    environ = {k: v for k, v in env.items() if k != name}
    value = {"PLIVO_AUTH_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY}.get(name, MAIN_TOKEN)
    message = error({**environ, f"{name}_FILE": value})
    assert f"{name}_FILE" in message
    _assert_no_canary(message)


# --- AUTO_MIGRATE: a flag like the others, on by default ---------------------------------------


def test_auto_migrate_is_on_by_default(env: dict[str, str]) -> None:
    assert load(env).auto_migrate is True
    assert load({**env, "AUTO_MIGRATE": "  "}).auto_migrate is True


@pytest.mark.parametrize(("raw", "expected"), [("0", False), (" off ", False), ("No", False)])
def test_auto_migrate_is_parsed_like_the_other_flags(
    env: dict[str, str], raw: str, expected: bool
) -> None:
    assert load({**env, "AUTO_MIGRATE": raw}).auto_migrate is expected
    assert load({**env, "AUTO_MIGRATE": "true"}).auto_migrate is True


@pytest.mark.parametrize("raw", ["maybe", "2", "never"])
def test_bad_auto_migrate_is_refused_like_the_other_flags(env: dict[str, str], raw: str) -> None:
    assert error({**env, "AUTO_MIGRATE": raw}) == f"AUTO_MIGRATE must be true or false, got {raw!r}"


# --- the table ----------------------------------------------------------------------------------


def test_the_table_fills_every_settings_attribute_once() -> None:
    attributes = [s.attribute for s in SETTINGS.values() if s.attribute is not None]
    assert sorted(attributes) == sorted(f.name for f in dataclasses.fields(Settings))
    assert all(s.reader == APP for s in SETTINGS.values() if s.attribute is not None)


def test_every_secret_is_kept_out_of_the_settings_repr() -> None:
    hidden = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    secrets = {s.attribute for s in SETTINGS.values() if s.secret}
    assert secrets <= hidden


def test_environ_names_list_every_variable_and_the_file_variant_of_secrets() -> None:
    names = list(environ_names())
    assert len(names) == len(set(names))
    for setting in SETTINGS.values():
        assert setting.name in names
        assert (f"{setting.name}_FILE" in names) is setting.secret
    assert {"AUTO_MIGRATE", "SANDBOX_CONFIG", "PROMETHEUS_MULTIPROC_DIR"} <= set(names)


SECRETS = [setting for setting in SETTINGS.values() if setting.secret]


@pytest.mark.parametrize("setting", SECRETS, ids=[setting.name for setting in SECRETS])
def test_no_secret_setting_echoes_its_value_in_an_error(setting: Setting) -> None:
    canary = "Canary-Pasted-7c1e"  # too short for every length check, no hash prefix
    for environ in ({f"{setting.name}_FILE": canary}, {setting.name: canary}):
        try:
            setting.read(environ)
        except ConfigError as exc:
            assert setting.name in exc.message
            assert canary not in exc.message
    with pytest.raises(ConfigError):
        setting.read({f"{setting.name}_FILE": canary})


def test_the_sandbox_settings_are_read_through_the_table(tmp_path: Path) -> None:
    assert SETTINGS["SANDBOX_CONFIG"].reader == SANDBOX
    assert SETTINGS["SANDBOX_CONFIG"].read({}) is None
    assert SETTINGS["SANDBOX_CONFIG"].read({"SANDBOX_CONFIG": f" {tmp_path} "}) == tmp_path
    assert SETTINGS["DEMO_KEEP"].read({}) is False
    assert SETTINGS["DEMO_KEEP"].read({"DEMO_KEEP": "1"}) is True
    with pytest.raises(ConfigError, match="DEMO_KEEP must be true or false"):
        SETTINGS["DEMO_KEEP"].read({"DEMO_KEEP": "later"})


def test_gunicorn_conf_defaults_agree_with_the_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in environ_names():
        monkeypatch.delenv(name, raising=False)
    # Set, so that reading the configuration makes no directory of its own.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["bind"] == f"0.0.0.0:{SETTINGS['PORT'].default}"
    assert conf["workers"] == SETTINGS["WEB_CONCURRENCY"].default


def test_gunicorn_conf_reads_its_variables_through_the_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in environ_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("WEB_CONCURRENCY", " 3 ")
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert (conf["bind"], conf["workers"]) == ("0.0.0.0:9123", 3)
    monkeypatch.setenv("BIND", "127.0.0.1:9200")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"] == "127.0.0.1:9200"
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY must be a whole number"):
        runpy.run_path(str(ROOT / "gunicorn.conf.py"))


@pytest.mark.parametrize("raw", ["http://[::1", "https://[not-an-address]/x", "http://[::1]:99999"])
def test_a_malformed_base_url_is_a_config_error_not_a_crash(raw: str) -> None:
    for name in ("PLIVO_API_URL", "PUBLIC_BASE_URL"):
        with pytest.raises(ConfigError, match=f"{name} must be an absolute http"):
            SETTINGS[name].read({name: raw})


def test_a_secret_file_that_is_not_utf8_is_refused_without_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"abc\xff\xfesecret-tail")
    with pytest.raises(ConfigError) as refused:
        SETTINGS["PLIVO_AUTH_TOKEN"].read({"PLIVO_AUTH_TOKEN_FILE": str(path)})
    assert refused.value.message == "PLIVO_AUTH_TOKEN_FILE: the file it names is not UTF-8 text"
    assert "\\xff" not in str(refused.value) and "secret-tail" not in str(refused.value)
