"""The bench's CPU accounting counts a server's own processes, and only theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import cpu

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc")

# Spins 0.3 s of CPU in a child (a "worker") each time a line arrives, then says so.
_SERVER = """
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", '''
import sys, time
for line in sys.stdin:
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    print("done", flush=True)
'''], stdin=subprocess.PIPE, stdout=sys.stdout, text=True)
for line in sys.stdin:
    worker.stdin.write(line)
    worker.stdin.flush()
"""


def test_a_server_s_workers_are_its_cpu_and_the_rest_is_not() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        server.stdin.write("warm\n")
        server.stdin.flush()
        assert server.stdout.readline() == "done\n"  # the worker exists before the first sample
        before = cpu.sample(server.pid)
        server.stdin.write("go\n")
        server.stdin.flush()
        assert server.stdout.readline() == "done\n"
        after = cpu.sample(server.pid)
        use = cpu.use(before, after, requests=3)
    finally:
        server.kill()
        server.wait()
    assert use is not None
    assert 80 <= use.server_ms <= 200  # 0.3 s over 3 requests, give or take the clock's ticks
    assert use.database_ms < use.server_ms
    assert use.machine_ms > 0
    assert 0 <= use.steal <= 1


def test_nothing_to_say_without_both_samples_or_a_request() -> None:
    now = cpu.sample(1)
    assert cpu.use(None, now, 10) is None
    assert cpu.use(now, now, 0) is None
