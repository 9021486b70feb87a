"""Drive a server with pre-signed requests: wrk + bench/signed.lua, or a Python fallback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import SignedRequest

LUA_SCRIPT = Path(__file__).resolve().parent / "signed.lua"
RESULT_MARK = "BENCH_RESULT "


@dataclass(frozen=True)
class LoadResult:
    """What one timed run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    last_bad_status: int
    socket_errors: int
    reused: bool  # the run needed more signed requests than it had, so some nonces repeated

    @property
    def rate(self) -> float:
        """Return completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk() -> str | None:
    """Return wrk's path, installing Debian's package first when missing and apt is usable."""
    found = shutil.which("wrk")
    if found or not shutil.which("apt-get"):
        return found
    if os.geteuid() != 0:
        print("wrk is missing and apt-get needs root: using the Python load generator")
        return None
    print("wrk is missing: apt-get install -y wrk ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}")
            return None
    return shutil.which("wrk")


def run_wrk(
    wrk: str,
    url: str,
    requests_file: Path,
    *,
    seconds: float,
    connections: int,
    threads: int,
    track: list[subprocess.Popen[str]],
) -> LoadResult:
    """Run wrk against `url` replaying `requests_file` for `seconds`; parse its result line."""
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(requests_file),
        str(threads),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    track.append(proc)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        track.remove(proc)
    line = next((x for x in out.splitlines() if x.startswith(RESULT_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out[-2000:]}")
    data = json.loads(line.removeprefix(RESULT_MARK))
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=int(data["non2xx"]),
        last_bad_status=int(data["last_bad_status"]),
        socket_errors=sum(
            int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        reused=int(data["wrapped"]) > 0,
    )


def _raw(request: SignedRequest, host: str) -> bytes:
    head = [f"POST {request.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in request.headers().items()]
    body = request.body.encode()
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _status(sock: socket.socket) -> int:
    """Read a whole Connection: close response; return its status code."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    first = b"".join(chunks).split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


def run_python(
    port: int, requests: list[SignedRequest], *, seconds: float, connections: int
) -> LoadResult:
    """Closed-loop fallback: `connections` threads, one request per connection, no reuse."""
    host = f"127.0.0.1:{port}"
    payloads = [_raw(r, host) for r in requests]
    latencies: list[float] = []
    bad: list[int] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    reused = [False]

    def worker(k: int) -> None:
        mine = payloads[k::connections]
        index, local_lat, local_bad, local_err = 0, [], [], 0
        while time.perf_counter() < deadline:
            if index >= len(mine):
                index, reused[0] = 0, True
            started = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(mine[index])
                    status = _status(sock)
            except OSError:
                local_err += 1
                continue
            finally:
                index += 1
            local_lat.append(time.perf_counter() - started)
            if not 200 <= status <= 299:
                local_bad.append(status)
        with lock:
            latencies.extend(local_lat)
            bad.extend(local_bad)
            errors[0] += local_err

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0
        )

    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        non2xx=len(bad),
        last_bad_status=bad[-1] if bad else 0,
        socket_errors=errors[0],
        reused=reused[0],
    )
