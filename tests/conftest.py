"""The suites' fixtures live in tests/support/fixtures.py (reliability/ loads the same plugin);
the helpers they use are modules of tests/support/."""

pytest_plugins = ["tests.support.fixtures"]
