"""Outside programs a test needs: found on PATH, or the test is skipped (failed under REQUIRE_*)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_programs(flag: str, *names: str, install: str) -> dict[str, str]:
    """Return each program's path; skip without one, or fail when the `flag` variable is 1.

    CI sets the flag, so a missing program fails the suite there instead of skipping quietly.
    """
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = f"{' and '.join(missing)} not installed: `{install}` installs them"
        if os.environ.get(flag) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return {name: path for name, path in found.items() if path is not None}
