"""A copy of the repository as a clone would hold it, for tests that build or run it afresh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from devtools.harness import ROOT


def fresh_copy(target: Path) -> None:
    """Copy what a clone would hold: tracked files plus new, not-ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
