# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
STAMP := $(VENV)/.installed

.PHONY: run sandbox demo flask sign test lint typecheck pytest clean browser prometheus sip reliability bench

# (Re)build the virtualenv whenever a requirements file changes.
# The project itself is installed editable, so `sipguard`, gunicorn and the tests import it
# from any directory without path tricks.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Start the service on its embedded defaults: SQLite under instance/, generated
# development secrets (instance/dev-secrets.env), the sample voice config.
run: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m devtools.devserver

# The local Plivo stand-in on port 5100, for the `make run` app: its REST API (sipguard sipauth,
# call, handoff), inbound calls (sipguard sandbox call) and simulated agents. See README, Sandbox.
sandbox: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m devtools.devserver flask sandbox serve

# Start the app and the sandbox on free ports, set up SIP auth with `sipguard sipauth setup`, play
# three scenarios (a handoff, a call without SIP auth, a lockout), print timelines and the
# auth-failure report; exit 0 only if every check held.
demo: $(STAMP)
	$(BIN)/python -m devtools.demo

# Any Flask CLI command in `make run`'s environment (its dev secrets, PLIVO_API_URL = the sandbox):
# make flask ARGS='sandbox call --from-ip 198.51.100.7 --request-uri sip:APP_ID@app.plivo.com'
flask: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m devtools.devserver flask $(ARGS)

# Print a curl command for a callback signed like Plivo would, with the same settings
# as `make run`: make sign ARGS='/answer CallUUID=test-1 SIPAuthType=ip_acl'
sign: $(STAMP)
	PORT=$(PORT) $(BIN)/python -m devtools.devserver flask sign-request $(ARGS)

# Lint, type-check and run the whole suite. REQUIRE_POSTGRES=1 turns a missing
# PostgreSQL into failures instead of skips (CI sets it).
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The reliability suite: generated abuse in-process, then real gunicorn on real PostgreSQL with a
# worker killed and the database cut. Prints its figures last. About two minutes on an idle
# 2-core machine (longer when other work shares it).
reliability: $(STAMP)
	REQUIRE_POSTGRES=1 $(BIN)/python -m pytest reliability -q -p no:cacheprovider $(PYTEST_ARGS)

# Debian's chromium and chromedriver for the /monitor browser test (skipped without them,
# unless REQUIRE_BROWSER=1). Needs root or sudo; nothing is downloaded by the test tools.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }

# Debian's prometheus and promtool for the alerting-rule tests (skipped without them, unless
# REQUIRE_PROMETHEUS=1). The tests run the binary themselves on a loopback port; the daemon the
# package may start (a machine with a running init) is stopped, so nothing is left on :9090.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus \
	    || exit 1; \
	  $$SUDO systemctl stop prometheus.service 2>/dev/null || $$SUDO service prometheus stop 2>/dev/null; \
	  pid=$$(cat /run/prometheus/prometheus.pid 2>/dev/null || pgrep -u prometheus -x prometheus || true); \
	  [ -z "$$pid" ] || $$SUDO kill $$pid; }

# Debian's SIPp (sip-tester) and Kamailio for the tests against real SIP peers (skipped without
# them, unless REQUIRE_SIP=1). The tests run both themselves on 127.0.0.x ports with a generated
# configuration; the kamailio daemon the package may start (a machine with a running init) is
# stopped, so nothing is left on :5060.
sip:
	@command -v sipp >/dev/null && command -v kamailio >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends sip-tester kamailio \
	    || exit 1; \
	  $$SUDO systemctl stop kamailio.service 2>/dev/null || $$SUDO service kamailio stop 2>/dev/null || true; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Throughput and latency of the app against a bare Flask app and the plivo SDK's way, side by
# side under gunicorn on loopback (about 2 minutes; wrk is installed when missing), plus in-process
# ratios; see bench/README.md. Needs PostgreSQL on 127.0.0.1:5432 like the suite does.
bench: $(STAMP)
	$(BIN)/python -m bench.run
