"""Kamailio for the tests (devtools/sip_peers.py runs it): skipped without the program, or
failed when REQUIRE_SIP=1."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from devtools import sip_peers
from tests.support.tools import require_programs


def kamailio(directory: Path, **options: Any) -> AbstractContextManager[sip_peers.Pbx]:
    """Run Kamailio as an agent's PBX (devtools.sip_peers.kamailio's options) for a test."""
    program = require_programs("REQUIRE_SIP", "kamailio", install="make sip")["kamailio"]
    return sip_peers.kamailio(directory, program=program, **options)
