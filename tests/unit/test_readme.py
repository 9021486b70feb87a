"""The README's Configure table documents exactly the settings the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from sipguard.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def _configure_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configure\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)`", section, re.MULTILINE))


def test_the_configure_table_lists_every_setting_and_no_other() -> None:
    documented = _configure_table()
    assert len(documented) > 20
    assert documented == set(SETTINGS)
