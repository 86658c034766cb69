"""Query cancellation through the pool, in session and transaction mode: the CancelRequest carries
pgrelay's BackendKeyData and must reach the backend currently running that client's query -- and no
other."""

import os
import signal
import threading
import time

import psycopg
import pytest

from conftest import connect
from pool_helpers import pool_relay


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_long_query(pgrelay, mode):
    """Bug guarded: with pooling, a cancel of pg_sleep(10) goes nowhere (pgrelay's key not mapped to the
    backend now serving the client, e.g. the one it got for this transaction) or to the wrong backend,
    so the query runs for 10 s or a bystander's query is cancelled."""
    r = pool_relay(pgrelay, mode, pool_size=2)
    bystander_result = {}
    with connect(r.port) as warm:  # the pool has a connection already (other than the victim's)
        warm.execute("select 1")
    with connect(r.port) as victim, connect(r.port) as bystander:
        victim.execute("select 1")

        def run_bystander():
            try:
                bystander_result["row"] = bystander.execute("select pg_sleep(1.5), 'done'").fetchone()
            except Exception as e:  # noqa: BLE001
                bystander_result["error"] = e

        t = threading.Thread(target=run_bystander, daemon=True)
        t.start()
        timer = threading.Timer(0.5, victim.cancel)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as ei:
                victim.execute("select pg_sleep(10)")
        finally:
            timer.cancel()
        elapsed = time.monotonic() - t0
        assert ei.value.sqlstate == "57014"
        assert elapsed < 2.0, f"cancel took {elapsed:.2f}s"
        t.join(5)
        assert "error" not in bystander_result, f"bystander's query was hit: {bystander_result['error']!r}"
        assert bystander_result.get("row", (None, None))[1] == "done"
        # The victim's session goes on, in and outside transactions.
        assert victim.execute("select 1").fetchone() == (1,)
        with victim.transaction():
            assert victim.execute("select 2").fetchone() == (2,)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_inside_transaction(pgrelay, mode):
    """Bug guarded: a cancel inside an explicit transaction leaves pgrelay's view of the transaction
    wrong (backend released while the client is in a failed transaction, or kept forever)."""
    r = pool_relay(pgrelay, mode, pool_size=1, query_wait_timeout="5s")
    with connect(r.port) as c:
        c.execute("begin")
        timer = threading.Timer(0.4, c.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("select pg_sleep(10)")
        finally:
            timer.cancel()
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("select 1")
        c.execute("rollback")
        assert c.execute("select 3").fetchone() == (3,)
    with connect(r.port) as c2:  # the single pooled backend is usable by the next client
        t0 = time.monotonic()
        assert c2.execute("select now() = statement_timestamp()").fetchone() == (True,)
        assert time.monotonic() - t0 < 1.0


def _send_cancel(port, pid, key):
    import socket

    import pgwire
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(pgwire.cancel_request(pid, key))
        s.settimeout(5)
        try:
            s.recv(100)
        except (socket.timeout, ConnectionResetError):
            pass


@pytest.mark.pgrelay_only
def test_stale_cancel_does_not_hit_next_user_of_backend(pgrelay):
    """Bug guarded: in transaction mode a CancelRequest from a client that is idle (its earlier query
    finished and its backend went back to the pool) is forwarded to the backend it used last, which
    now runs another client's query -- that query is cancelled."""
    import pgwire
    r = pool_relay(pgrelay, "transaction", pool_size=1)
    with pgwire.connect(r.port, timeout=5) as a, connect(r.port) as b:
        pid_a = a.scalar("select pg_backend_pid()")
        result = {}

        def run_b():
            try:
                result["row"] = b.execute("select pg_backend_pid(), pg_sleep(1.2), 'done'").fetchone()
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=run_b, daemon=True)
        t.start()
        time.sleep(0.4)
        _send_cancel(r.port, *a.backend_key)
        t.join(5)
        assert "error" not in result, f"B's query was cancelled by idle client A's CancelRequest: {result['error']!r}"
        assert result["row"][2] == "done"
        assert str(result["row"][0]) == pid_a, "B did not run on A's former backend (pool_size = 1?)"
        assert a.scalar("select 1") == "1"


def _vanish(conn):
    """The client's machine is gone: its socket shut down under it, no Terminate sent."""
    import os
    import socket
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        s.shutdown(socket.SHUT_RDWR)
    finally:
        s.close()


def _running(cluster, node, tag):
    with cluster.connect(node, dbname="postgres") as d:
        return d.execute("select count(*) from pg_stat_activity where state = 'active' "
                         "and pid <> pg_backend_pid() and strpos(query, %s) > 0", (tag,)).fetchone()[0]


def _start_and_vanish(port, sql, cluster, node, tag):
    """Runs sql (tagged) from a client that vanishes once it runs on node."""
    c = connect(port)
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(psycopg.Error, c.execute, sql)),
                         daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not _running(cluster, node, tag):
        assert time.monotonic() < deadline, f"{tag} never ran on node {node}"
        time.sleep(0.05)
    _vanish(c)
    t.join(10)
    c.close()


@pytest.mark.pgrelay_only
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_vanished_client_read_on_standby_is_cancelled(pgrelay, cluster, mode):
    """Bug guarded: a client that vanishes while its long read runs on a standby leaves the statement
    running there (PostgreSQL only notices a lost client when it writes): it holds a snapshot and a
    core, and delays replay (max_standby_streaming_delay) for every other reader of that standby."""
    from routing_helpers import routing_relay
    r = routing_relay(pgrelay, cluster, weights=(0, 1, 0), pool={"mode": mode},
                      load_balance={"enabled": True})
    tag = f"vanish-read-{mode}"
    _start_and_vanish(r.port, f"select pg_sleep(60) /* {tag} */", cluster, 1, tag)
    deadline = time.monotonic() + 10
    while _running(cluster, 1, tag):
        assert time.monotonic() < deadline, "the abandoned read still runs on the standby"
        time.sleep(0.1)
    r.wait_log("cancelling the abandoned request")
    with connect(r.port) as c:  # the pool goes on
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.pgrelay_only
def test_vanished_client_write_on_primary_is_left_to_finish(pgrelay, cluster):
    """Bug guarded: cancelling what a vanished client left on the primary would undo a write that
    PostgreSQL, reached directly, commits (it finishes the statement before noticing the client is
    gone); only reads on standbys and failed transactions are cancelled."""
    from routing_helpers import routing_relay
    r = routing_relay(pgrelay, cluster, weights=(0, 1, 0), pool={"mode": "session"},
                      load_balance={"enabled": True})
    with cluster.connect(0) as d:
        d.execute("drop table if exists vanish_w")
        d.execute("create table vanish_w (id int)")
        d.execute("grant all on vanish_w to app")
    tag = "vanish-write"
    _start_and_vanish(r.port, f"insert into vanish_w select 1 from pg_sleep(1.5) /* {tag} */", cluster, 0, tag)
    deadline = time.monotonic() + 10
    while _running(cluster, 0, tag):
        assert time.monotonic() < deadline, "the write never finished"
        time.sleep(0.1)
    with cluster.connect(0) as d:
        assert d.execute("select count(*) from vanish_w").fetchone()[0] == 1
        d.execute("drop table vanish_w")
    assert "cancelling the abandoned request" not in r.log_text()


def postmaster_pid(cluster, node=0):
    return int((cluster.data_dirs[node] / "postmaster.pid").read_text().split("\n", 1)[0])


def test_late_cancel_never_hits_the_next_clients_query(pgrelay, cluster):
    """Bug guarded (the second race of PgBouncer's PR #717): PostgreSQL signals a backend only after
    it has read a CancelRequest; pgrelay wrote the request and handed the backend, whose statement had
    just ended, to the next waiting client at once, so the late signal cancelled that other client's
    query. The backend now stays with its client until PostgreSQL closed the cancel connection. Made
    deterministic by stopping the primary's postmaster (SIGSTOP) while the cancel is on its way:
    one backend in the pool, health checks off."""
    r = pool_relay(pgrelay, "transaction", pool_size=1, relay_kw={"health_check": {"period": "0"}})
    pm = postmaster_pid(cluster)
    with connect(r.port) as a, connect(r.port) as b:
        a.execute("select 1")  # the pool's one backend exists, and b is logged in
        b.execute("select 1")
        result = {}

        def run_b():
            try:
                result["row"] = b.execute("select pg_sleep(1), 'b done'").fetchone()
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        ta = threading.Thread(target=lambda: result.setdefault("a", a.execute("select pg_sleep(1), 'a done'").fetchone()),
                              daemon=True)
        ta.start()
        time.sleep(0.3)  # a's statement runs
        os.kill(pm, signal.SIGSTOP)
        # a's cancel reaches pgrelay, which connects and writes; the postmaster does not read it yet.
        # libpq's cancel returns when the connection that carried it closes, which pgrelay does once
        # PostgreSQL closed the forwarded one (as PostgreSQL itself would): after the SIGCONT.
        tc = threading.Thread(target=a.cancel, daemon=True)
        try:
            tc.start()
            time.sleep(0.3)
            tb = threading.Thread(target=run_b, daemon=True)
            tb.start()  # b waits for the pool's one backend
            ta.join(5)
            assert "a" not in result or result["a"][1] == "a done", result
            time.sleep(0.5)  # without the hold, b's statement now runs on that backend
        finally:
            os.kill(pm, signal.SIGCONT)
        tc.join(10)
        assert not tc.is_alive(), "the cancel did not return once PostgreSQL handled it"
        tb.join(10)
        assert "error" not in result, f"b's query was hit by a's cancel: {result.get('error')!r}"
        assert result.get("row") and result["row"][1] == "b done", result
        assert b.execute("select 2").fetchone() == (2,)
