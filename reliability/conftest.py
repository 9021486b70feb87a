"""The reliability suite (`make reliability`): nothing lost, nothing let in, under abuse and faults.

Every test records its figures with the `figures` fixture; they are printed, one block per test,
as the last lines of the run (attempts, refused, stored, lost, duplicated, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# The unit suite's fixtures (app, client, signed_post, database_url, postgres_url, ...).
pytest_plugins = ["tests.support.fixtures"]

_FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; printed at the end of the run."""
    found: dict[str, Any] = {}
    yield found
    _FIGURES[request.node.nodeid] = found


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print each test's figures as the last lines of the run."""
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for nodeid, found in _FIGURES.items():
        values = "  ".join(f"{key}={value}" for key, value in found.items())
        terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {values}")
