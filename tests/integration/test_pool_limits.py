"""Pool limits: max_client_conn, pool_size with the wait queue and query_wait_timeout,
max_db_connections, max_user_connections, and failing fast when the node is down.

Errors pgrelay itself raises are FATAL ErrorResponses: 53300 (too many connections / query_wait_timeout)
and 08006 (node unreachable)."""

import threading
import time

import pytest

import pgwire
from conftest import connect, free_port
from pool_helpers import BackendMonitor, clear_backends, pool_relay, raw_query, run_threads

pytestmark = pytest.mark.pgrelay_only


def _hold(port, seconds, started, done, errors):
    """Client A: begin; select pg_sleep(seconds); commit, holding one pooled backend meanwhile."""
    try:
        with connect(port) as a:
            a.execute("begin")
            a.execute("select 1")
            started.set()
            a.execute("select pg_sleep(%s)", (seconds,))
            a.execute("commit")
    except Exception as e:  # noqa: BLE001
        errors.append(e)
        started.set()
    finally:
        done.set()


def test_max_client_conn_transaction_mode(pgrelay):
    """Bug guarded: in transaction mode (clients hold no backend) max_client_conn is not enforced, or the
    extra client is refused late / without SQLSTATE 53300, or freed slots are not given back."""
    r = pool_relay(pgrelay, "transaction", pool_size=2, max_client_conn=5)
    conns = [pgwire.connect(r.port, timeout=5) for _ in range(5)]
    try:
        for w in conns:
            assert w.scalar("select 1") == "1"
        c = pgwire.Conn(port=r.port, timeout=5)
        t0 = time.monotonic()
        try:
            with pytest.raises(pgwire.PgError) as ei:
                c.login("app", "app", "app", timeout=5)
        finally:
            c.close()
        assert ei.value.sqlstate == "53300", ei.value
        assert ei.value.fields.get("S") == "FATAL", ei.value.fields
        assert time.monotonic() - t0 < 1.0, "the 6th client must be refused at once"
        conns.pop().terminate()
        deadline = time.monotonic() + 3
        while True:
            try:
                conns.append(pgwire.connect(r.port, timeout=5))
                break
            except pgwire.PgError as e:
                assert e.sqlstate == "53300"
                assert time.monotonic() < deadline, "freed client slot not reusable within 3 s"
                time.sleep(0.1)
        assert conns[-1].scalar("select 2") == "2"
    finally:
        for w in conns:
            w.close()


@pytest.mark.deadline(30)
def test_query_wait_timeout(pgrelay):
    """Bug guarded: a client waiting for a pooled connection waits forever (query_wait_timeout ignored),
    fails at once instead of waiting, gets the wrong SQLSTATE, or the pool stays blocked after the
    holder finished."""
    r = pool_relay(pgrelay, "transaction", pool_size=1, query_wait_timeout="1s")
    started, done, errors = threading.Event(), threading.Event(), []
    t = threading.Thread(target=_hold, args=(r.port, 3, started, done, errors), daemon=True)
    t.start()
    assert started.wait(5) and not errors, errors
    time.sleep(0.2)  # A is inside pg_sleep(3) holding the only backend
    b = pgwire.connect(r.port, timeout=5)
    try:
        out = raw_query(b, "select 1", timeout=6)
        assert out.errors, f"B got no error while the only backend was busy for 3 s: {out}"
        e = out.errors[0]
        assert e.get("C") == "53300", out
        assert "query_wait_timeout" in e.get("M", ""), out
        assert e.get("S") == "FATAL", out
        assert 0.7 <= out.elapsed <= 2.2, f"error after {out.elapsed:.2f}s with query_wait_timeout = 1s"
        if not out.closed:
            try:
                b.read_all_until_close(timeout=2)
            except pgwire.Timeout:
                raise AssertionError("connection not closed after the FATAL error") from None
    finally:
        b.close()
    assert done.wait(6) and not errors, f"holder A failed: {errors}"
    # The pool is free again: B-like clients succeed.
    for _ in range(3):
        with pgwire.connect(r.port, timeout=5) as c:
            out = raw_query(c, "select 3", timeout=3)
            assert not out.errors and out.rows == [["3"]], out


def test_wait_queue_serves_waiting_client(pgrelay):
    """Bug guarded: a client that has to wait for the only pooled connection is refused or never
    woken when the connection comes back (lost wakeup)."""
    r = pool_relay(pgrelay, "transaction", pool_size=1, query_wait_timeout="5s")
    for _ in range(2):
        started, done, errors = threading.Event(), threading.Event(), []
        t = threading.Thread(target=_hold, args=(r.port, 0.5, started, done, errors), daemon=True)
        t.start()
        assert started.wait(5) and not errors, errors
        with pgwire.connect(r.port, timeout=5) as b:
            out = raw_query(b, "select 4", timeout=4)
            assert not out.errors and out.rows == [["4"]], out
            assert out.elapsed >= 0.25, (
                f"B's query finished after {out.elapsed:.2f}s although A held the only backend ~0.5 s "
                "(pool_size = 1 not enforced?)")
            assert out.elapsed < 2.0, f"B waited {out.elapsed:.2f}s for a backend freed after 0.5 s"
        assert done.wait(5) and not errors, errors
        t.join(5)


def _cap_holds_for_new_pool(r, cluster, mon, first, second):
    """Deterministic part of the cap tests: two clients of pool `first` hold the 2 allowed backends in
    open transactions; then the very first client of pool `second` logs in and queries (its pool has
    no backend yet, so its login needs one). It must wait -- not open a third backend -- and get in once
    the first pool's transactions end (pgrelay has to close an idle backend of the first pool)."""
    holders = [connect(r.port, **first) for _ in range(2)]
    try:
        for h in holders:
            h.execute("begin")
            h.execute("select 1")
        result = {}

        def newcomer():
            t0 = time.monotonic()
            try:
                with connect(r.port, connect_timeout=10, **second) as c:
                    result["row"] = c.execute("select 'in'").fetchone()
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            result["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=newcomer, daemon=True)
        t.start()
        time.sleep(0.8)
        over = mon.max
        for h in holders:
            h.execute("commit")
        t.join(10)
        assert over <= 2, (f"first login of a new pool opened a backend beyond the cap while the other "
                           f"pool held it ({mon.summary()})")
        assert not t.is_alive(), "client of the second pool still waiting 10 s after the cap was freed"
        assert "error" not in result, f"client of the second pool failed: {result['error']!r}"
        assert result["row"] == ("in",)
    finally:
        for h in holders:
            h.close()


@pytest.mark.deadline(60)
def test_max_db_connections(pgrelay, cluster):
    """Bug guarded: max_db_connections is not applied across the pools of one database (users app and
    md5user on database app) -- e.g. the first backend login of a new pool (the one that fetches the
    welcome) bypasses the cap --, so the database gets more backends than allowed; or clients of the
    capped database fail / deadlock instead of waiting their turn."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, "transaction", pool_size=10, max_db_connections=2, query_wait_timeout="10s")
    creds = [("app", "app")] * 5 + [("md5user", "md5pw")] * 5

    def client(i):
        user, pw = creds[i]
        with connect(r.port, user=user, password=pw, dbname="app") as c:
            for k in range(10):
                assert c.execute("select %s::int, pg_sleep(0.02)", (k,)).fetchone()[0] == k
        return True

    with BackendMonitor(cluster, where="datname = 'app' and usename in ('app', 'md5user')") as mon:
        _cap_holds_for_new_pool(r, cluster, mon, dict(user="app", password="app"),
                                dict(user="md5user", password="md5pw"))
        run_threads(client, len(creds), timeout=40)
    assert mon.error is None, mon.error
    assert mon.max <= 2, f"database app had {mon.max} backends with max_db_connections = 2 ({mon.summary()})"


@pytest.mark.deadline(60)
def test_max_user_connections(pgrelay, cluster):
    """Bug guarded: max_user_connections is not applied across the pools of one user (databases app
    and postgres) -- e.g. the first backend login of a new pool bypasses the cap --, or a user's clients
    deadlock when the cap is held by idle connections of the user's other pool (those must be closed
    to make room)."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, "transaction", pool_size=10, max_user_connections=2, query_wait_timeout="10s")
    dbs = ["app"] * 5 + ["postgres"] * 5

    def client(i):
        with connect(r.port, dbname=dbs[i]) as c:
            for k in range(10):
                assert c.execute("select %s::int, pg_sleep(0.02)", (k,)).fetchone()[0] == k
        return True

    with BackendMonitor(cluster, user="app") as mon:
        _cap_holds_for_new_pool(r, cluster, mon, dict(dbname="app"), dict(dbname="postgres"))
        run_threads(client, len(dbs), timeout=40)
        # Then only the first database: its clients must get in although idle connections of the
        # other database may hold the cap.
        run_threads(client, 3, timeout=15)
    assert mon.error is None, mon.error
    assert mon.max <= 2, f"user app had {mon.max} backends with max_user_connections = 2 ({mon.summary()})"


@pytest.mark.deadline(30)
def test_node_down_fails_fast(pgrelay, cluster):
    """Bug guarded: when the primary's port refuses connections (and no failover is under way), a
    client waits for the whole query_wait_timeout (10 s here) or hangs instead of getting 08006 at
    once."""
    dead = free_port()
    backends = [{"host": "127.0.0.1", "port": dead, "weight": 1.0, "data_directory": str(cluster.data_dirs[0])}]
    backends += [{"host": "127.0.0.1", "port": cluster.ports[i], "weight": 1.0,
                  "data_directory": str(cluster.data_dirs[i])} for i in (1, 2)]
    # Splitting off: the statement needs the primary (reads would go to the standbys).
    r = pgrelay(backends=backends, pool={"mode": "transaction", "pool_size": 2, "query_wait_timeout": "10s"},
                load_balance={"enabled": False})
    for attempt in range(2):
        t0 = time.monotonic()
        w = pgwire.Conn(port=r.port, timeout=5)
        try:
            try:
                w.login("app", "app", "app", timeout=5)
            except pgwire.PgError as e:  # no backend welcome known yet: refused at login
                elapsed = time.monotonic() - t0
                assert e.sqlstate == "08006", f"attempt {attempt}: login failed with {e}"
                assert e.fields.get("S") == "FATAL", e.fields
                assert elapsed < 2.0, f"attempt {attempt}: login error after {elapsed:.2f}s"
                continue
            except pgwire.Timeout:
                raise AssertionError(f"attempt {attempt}: login hung for 5 s with the node down") from None
            out = raw_query(w, "select 1", timeout=5)
            elapsed = time.monotonic() - t0
            assert out.errors, f"attempt {attempt}: no error with the node down: {out}"
            assert out.errors[0].get("C") == "08006", out
            assert elapsed < 2.0, f"attempt {attempt}: error after {elapsed:.2f}s, not at once"
        finally:
            w.close()
        time.sleep(0.2)


def test_session_mode_wait_for_pool(pgrelay):
    """Bug guarded: in session mode a client that cannot get a backend (pool_size reached by connected
    clients) waits forever, or is refused at once; after the holder leaves, its backend is not handed
    on."""
    r = pool_relay(pgrelay, "session", pool_size=1, query_wait_timeout="1s")
    with pgwire.connect(r.port, timeout=5) as a:
        assert a.scalar("select 1") == "1"  # a holds the only backend for its whole session
        with pgwire.connect(r.port, timeout=5) as b:
            out = raw_query(b, "select 1", timeout=5)
            assert out.errors and out.errors[0].get("C") == "53300", out
            assert 0.7 <= out.elapsed <= 2.2, out
    with pgwire.connect(r.port, timeout=5) as c:
        out = raw_query(c, "select 5", timeout=3)
        assert not out.errors and out.rows == [["5"]], out
