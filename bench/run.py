"""`make bench`: run `.venv/bin/python -m bench.run [--help]` from the repository root."""

from __future__ import annotations

import sys

from bench.scenarios import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
