"""Pool timeouts: client_idle_timeout, idle_transaction_timeout, server_idle_timeout, server_lifetime
and min_pool_size."""

import time
import uuid

import pytest

import pgwire
from conftest import connect
from pool_helpers import clear_backends, pool_relay, raw_query, wait_backend_count

pytestmark = pytest.mark.pgrelay_only


def wait_closed(w, timeout):
    """Seconds until the server closes w (reading whatever it sends); raises AssertionError on timeout."""
    t0 = time.monotonic()
    try:
        msgs = w.read_all_until_close(timeout=timeout)
    except pgwire.Timeout:
        raise AssertionError(f"connection still open after {timeout}s") from None
    for m in msgs:
        assert m.type in ("E", "N", "S"), f"unexpected message before close: {m!r}"
    return time.monotonic() - t0, msgs


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_idle_timeout(pgrelay, mode):
    """Bug guarded: client_idle_timeout is ignored (idle clients stay forever), counts from login
    instead of from the last activity (so a busy client is cut off), or also fires inside a running
    query."""
    r = pool_relay(pgrelay, mode, client_idle_timeout="1s")
    # A busy client (a query every 0.3 s for 2.5 s) and one long query are not idle.
    with pgwire.connect(r.port, timeout=5) as busy:
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            assert busy.scalar("select 1") == "1"
            time.sleep(0.3)
        out = raw_query(busy, "select pg_sleep(1.6)", timeout=5)
        assert not out.errors and not out.closed, f"a client running a 1.6 s query was cut off: {out}"
    # An idle one is closed after about 1 s.
    w = pgwire.connect(r.port, timeout=5)
    try:
        assert w.scalar("select 1") == "1"
        elapsed, msgs = wait_closed(w, 4)
        assert 0.7 <= elapsed <= 2.5, f"idle client closed after {elapsed:.2f}s with client_idle_timeout = 1s"
        out = raw_query(w, "select 1", timeout=2)
        assert out.closed and not out.rows, f"query after the idle timeout: {out}"
    finally:
        w.close()
    with connect(r.port) as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_idle_transaction_timeout(pgrelay, cluster, mode):
    """Bug guarded: idle_transaction_timeout is ignored (a client idle inside BEGIN keeps its backend and
    row locks forever), its transaction is committed or left open on the pooled backend when the client
    is cut off, or clients idle outside a transaction are cut off too."""
    table = "pool_idle_tx_" + uuid.uuid4().hex[:8]
    with cluster.connect(user="app", password="app") as d:
        d.execute(f"create table {table} (id int primary key, v int not null)")
        d.execute(f"insert into {table} values (1, 0)")
    try:
        r = pool_relay(pgrelay, mode, idle_transaction_timeout="1s", pool_size=2)
        with pgwire.connect(r.port, timeout=5) as outside:  # idle outside a transaction: left alone
            outside.scalar("select 1")
            w = pgwire.connect(r.port, timeout=5)
            try:
                assert w.simple("begin").status == "T"
                cyc = w.simple(f"update {table} set v = 100 where id = 1")
                assert not cyc.errors and cyc.status == "T"
                elapsed, msgs = wait_closed(w, 4)
                assert 0.7 <= elapsed <= 2.5, f"idle-in-transaction client closed after {elapsed:.2f}s"
            finally:
                w.close()
            time.sleep(0.3)
            assert outside.scalar("select 2") == "2", "a client idle outside a transaction was cut off"
        with cluster.connect(user="app", password="app") as d:
            d.execute("set lock_timeout = '2s'")
            d.execute(f"update {table} set v = v + 1 where id = 1")  # lock released
            assert d.execute(f"select v from {table} where id = 1").fetchone()[0] == 1, \
                "the cut-off client's transaction was committed, not rolled back"
            stuck = d.execute("select count(*) from pg_stat_activity where usename = 'app' "
                              "and state like 'idle in transaction%'").fetchone()[0]
            assert stuck == 0, f"{stuck} backend(s) still idle in transaction"
    finally:
        with cluster.connect(user="app", password="app") as d:
            d.execute(f"drop table if exists {table}")


def _open_backends(port, n):
    """n clients in concurrent transactions, so the pool opens n backends; then all commit."""
    conns = [connect(port) for _ in range(n)]
    try:
        for c in conns:
            c.execute("begin")
            c.execute("select 1")
        for c in conns:
            c.execute("commit")
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("key", ["server_idle_timeout", "server_lifetime"])
def test_pooled_connections_expire(pgrelay, cluster, key):
    """Bug guarded: server_idle_timeout / server_lifetime are ignored, so pooled backend connections stay
    open forever (the count in pg_stat_activity never drops), or the pool cannot open new ones after
    expiring the old."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, "transaction", pool_size=5, **{key: "1s"})
    _open_backends(r.port, 4)
    ok, n, _ = wait_backend_count(cluster, lambda n: n >= 3, timeout=1.0)
    assert ok, f"expected ~4 pooled backends after 4 concurrent transactions, saw {n}"
    ok, n, waited = wait_backend_count(cluster, lambda n: n == 0, timeout=4.0)
    assert ok, f"{n} pooled backend(s) still open {waited:.1f}s after they went idle with {key} = 1s"
    assert waited <= 3.0, f"pooled backends closed only after {waited:.1f}s with {key} = 1s"
    with connect(r.port) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_server_lifetime_rotates_busy_connection(pgrelay, cluster):
    """Bug guarded: server_lifetime only applies to connections that sit idle, so a connection in
    constant use lives forever (it must be closed when released once it is older than the lifetime)."""
    r = pool_relay(pgrelay, "transaction", pool_size=1, server_lifetime="1s")
    pids = []
    with connect(r.port) as c:
        t_end = time.monotonic() + 3.2
        while time.monotonic() < t_end:
            pids.append(c.execute("select pg_backend_pid()").fetchone()[0])
            time.sleep(0.1)
    distinct = list(dict.fromkeys(pids))
    assert len(distinct) >= 2, f"one backend ({distinct}) served 3 s of queries with server_lifetime = 1s"


def test_min_pool_size(pgrelay, cluster):
    """Bug guarded: min_pool_size is ignored (only the one backend the client used stays open), or the
    pool overshoots it."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, "transaction", pool_size=5, min_pool_size=3)
    with connect(r.port) as c:
        assert c.execute("select 1").fetchone() == (1,)
        ok, n, waited = wait_backend_count(cluster, lambda n: n >= 3, timeout=3.0)
        assert ok, f"{n} backend(s) open 3 s after a login with min_pool_size = 3"
    time.sleep(1.0)
    ok, n, _ = wait_backend_count(cluster, lambda n: n == 3, timeout=1.0)
    assert ok, f"{n} backend(s) kept open with min_pool_size = 3 and no client"
