"""CancelRequest handling."""

import random
import socket
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import connect


def send_cancel(port, pid, key):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(pgwire.cancel_request(pid, key))
        s.settimeout(5)
        try:
            return s.recv(100)  # the server just closes
        except (socket.timeout, ConnectionResetError):
            return None


def test_cancel_running_query(relay):
    """Bug guarded: a CancelRequest carrying pgrelay's BackendKeyData is not forwarded to the right
    backend, so the query runs to the end."""
    with connect(relay.port) as c:
        timer = threading.Timer(0.5, c.cancel)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as ei:
                c.execute("select pg_sleep(30)")
        finally:
            timer.cancel()
        elapsed = time.monotonic() - t0
        assert ei.value.sqlstate == "57014"
        assert elapsed < 2.5, f"cancel took {elapsed:.1f}s"
        assert c.execute("select 1").fetchone() == (1,)


def test_cancel_raw_key(relay):
    """Bug guarded: the BackendKeyData given to the client does not identify its session."""
    with pgwire.connect(relay.port) as w:
        pid, key = w.backend_key
        w.send(pgwire.query("select pg_sleep(30)"))
        time.sleep(0.3)
        send_cancel(relay.port, pid, key)
        cyc = w.read_cycle(timeout=3)
        assert cyc.errors and cyc.errors[0]["C"] == "57014"
        assert w.scalar("select 2") == "2"


def test_bogus_cancel_does_nothing(relay):
    """Bug guarded: a CancelRequest with an unknown or wrong key cancels someone else's query (or
    crashes the relay)."""
    with connect(relay.port) as victim:
        real_pid = victim.info.backend_pid
        result = {}

        def run():
            try:
                result["row"] = victim.execute("select pg_sleep(1.5), 'done'").fetchone()
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)
        rnd = random.Random(1234)
        send_cancel(relay.port, rnd.randrange(1, 2**31), rnd.randrange(-2**31, 2**31))
        send_cancel(relay.port, real_pid, rnd.randrange(-2**31, 2**31))
        send_cancel(relay.port, 0, 0)
        t.join(10)
        assert not t.is_alive()
        assert "error" not in result, result.get("error")
        assert result["row"][1] == "done"
    with connect(relay.port) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_cancel_without_request_in_flight_is_not_forwarded(pgrelay):
    """Bug guarded (issue 9, security review; PgBouncer PR #717): a cancel was forwarded whenever its
    target had a linked backend, with or without a request in flight, and was not checked again once
    the connection to the backend was up; in transaction mode that backend may by then run another
    client's query, which the cancel then kills. Now a cancel goes only to the backend still linked
    to the target and running one of its requests, checked again just before it is written."""
    r = pgrelay()
    with pgwire.connect(r.port, timeout=5) as w:
        pid, key = w.backend_key
        assert w.simple("begin").status == "T"  # a linked backend, nothing in flight
        start = r.log_size()
        send_cancel(r.port, pid, key)
        assert r.wait_log("not forwarded", timeout=5, start=start), r.log_tail()
        assert "forwarding cancel" not in r.log_text()[start:]
        assert w.scalar("select 3") == "3"
        assert w.simple("commit").status == "I"
        # The same key still cancels a running request.
        w.send(pgwire.query("select pg_sleep(30)"))
        time.sleep(0.3)
        start = r.log_size()
        send_cancel(r.port, pid, key)
        cyc = w.read_cycle(timeout=5)
        assert cyc.errors and cyc.errors[0]["C"] == "57014"
        assert "forwarding cancel" in r.log_text()[start:]
