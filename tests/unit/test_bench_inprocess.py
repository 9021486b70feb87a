"""The in-process bench's requests are the real thing: every route answers 2xx and stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from bench import inprocess
from sipguard.store import call_events, handoffs, hangups


def test_every_route_answers_and_stores(tmp_path: Path) -> None:
    bench = inprocess.Workbench(tmp_path)
    try:
        with inprocess.plivo_transfer():
            for route in inprocess.ROUTES:
                for environ in bench.requests(route, 2):
                    inprocess.call(bench.app_for(route), environ)  # raises on a non-2xx

        def count(table: Table) -> int:
            return int(
                bench.store.query(select(func.count().label("n")).select_from(table))[0]["n"]
            )

        assert count(call_events) == 4  # two answers, two dial actions
        assert count(hangups) == 2
        assert count(handoffs) == 2
    finally:
        bench.close()


def test_a_refused_request_fails_the_bench(tmp_path: Path) -> None:
    bench = inprocess.Workbench(tmp_path)
    try:
        environ = bench.requests("answer", 1)[0]
        replay = dict(environ)
        inprocess.call(bench.app, environ)
        replay["wsgi.input"] = type(environ["wsgi.input"])(b"")
        with pytest.raises(RuntimeError, match="answered 4"):
            inprocess.call(bench.app, replay)
    finally:
        bench.close()
