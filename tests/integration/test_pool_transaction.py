"""Transaction pooling (pool.mode = "transaction"): a backend connection is lent to a client for one
transaction and goes back to the pool when ReadyForQuery reports idle."""

import threading
import time
import uuid

import psycopg
import pytest
from psycopg.pq import TransactionStatus

import pgwire
from conftest import connect
from pool_helpers import BackendMonitor, clear_backends, pool_relay, run_threads


def backend_pid(c):
    return c.execute("select pg_backend_pid()").fetchone()[0]


@pytest.mark.pgrelay_only
@pytest.mark.deadline(90)
def test_many_clients_share_two_backends(pgrelay, cluster):
    """Bug guarded: transaction mode does not multiplex: each client keeps (or opens) its own backend,
    so 20 clients open 20 connections instead of sharing pool_size = 2, or some clients fail / get
    another client's results while they share."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    n_clients, n_queries = 20, 50
    conns = [connect(r.port) for _ in range(n_clients)]
    try:
        def client(i):
            c = conns[i]
            pids = set()
            for j in range(n_queries):
                row = c.execute("select %s::int, %s::text, pg_backend_pid()", (i * 1000 + j, f"c{i}")).fetchone()
                assert row[:2] == (i * 1000 + j, f"c{i}"), f"client {i} query {j} got {row}"
                pids.add(row[2])
            return pids

        with BackendMonitor(cluster, user="app") as mon:
            results = run_threads(client, n_clients, timeout=60)
        assert mon.error is None, mon.error
        all_pids = set().union(*results)
        assert mon.max <= 2, f"primary had {mon.max} backends for 'app' with pool_size = 2 ({mon.summary()})"
        assert mon.max >= 1, "monitor never saw a backend (monitor broken?)"
        assert len(all_pids) <= 2, f"clients ran on {len(all_pids)} distinct backends: {sorted(all_pids)}"
    finally:
        for c in conns:
            c.close()


def test_transaction_runs_on_one_backend(pgrelay):
    """Bug guarded: statements of one explicit transaction (BEGIN..COMMIT) are spread over several
    pooled backends, so the transaction is not atomic and sees no own writes."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    table = "pool_txn_" + uuid.uuid4().hex[:8]
    with connect(r.port) as setup:
        setup.execute(f"create table {table} (client int, n int)")
    try:
        def client(i):
            with connect(r.port) as c:
                for k in range(10):
                    with c.transaction():
                        p1 = backend_pid(c)
                        c.execute(f"insert into {table} values (%s, %s)", (i, k))
                        time.sleep(0.01)
                        p2 = backend_pid(c)
                        seen = c.execute(f"select count(*) from {table} where client = %s", (i,)).fetchone()[0]
                        p3 = backend_pid(c)
                        assert p1 == p2 == p3, f"client {i} txn {k}: statements ran on backends {p1}, {p2}, {p3}"
                        assert seen == k + 1, f"client {i} txn {k}: sees {seen} own rows, expected {k + 1}"
                    # and the same with plain BEGIN/COMMIT text in autocommit mode
                    c.execute("begin")
                    q1 = backend_pid(c)
                    time.sleep(0.005)
                    q2 = backend_pid(c)
                    c.execute("commit")
                    assert q1 == q2, f"client {i}: BEGIN..COMMIT ran on {q1} and {q2}"
            return True

        run_threads(client, 5, timeout=40)
        with connect(r.port) as c:
            assert c.execute(f"select count(*) from {table}").fetchone()[0] == 50
    finally:
        with connect(r.port) as c:
            c.execute(f"drop table if exists {table}")


def test_multi_statement_query_keeps_its_backend(pgrelay):
    """Bug guarded: a simple Query holding several statements with a transaction inside
    ('begin; ...; commit') is released between statements (RFQ only comes at the end)."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    with pgwire.connect(r.port) as w, connect(r.port) as noise:
        stop = threading.Event()

        def make_noise():
            while not stop.is_set():
                noise.execute("select pg_sleep(0.005)")

        t = threading.Thread(target=make_noise, daemon=True)
        t.start()
        try:
            for _ in range(20):
                cyc = w.simple("select pg_backend_pid(); select pg_sleep(0.01); select pg_backend_pid()")
                assert not cyc.errors, cyc.errors
                pids = [cyc.results[0].text_rows()[0][0], cyc.results[2].text_rows()[0][0]]
                assert pids[0] == pids[1], f"one Query message ran on backends {pids}"
                assert cyc.status == "I"
        finally:
            stop.set()
            t.join(5)


@pytest.mark.parametrize("how", ["error", "open", "rst_open"])
def test_dirty_disconnect_leaves_nothing(pgrelay, cluster, how):
    """Bug guarded: a client that disconnects inside a transaction (failed: 'error'; open with a row
    lock: 'open'; open and the socket reset: 'rst_open') hands the backend back still inside that
    transaction: the next client gets 'current transaction is aborted' (25P02), runs inside somebody
    else's transaction, or waits on the leftover row lock."""
    table = "pool_dirty_" + uuid.uuid4().hex[:8]
    with cluster.connect(user="app", password="app") as d:
        d.execute(f"create table {table} (id int primary key, v int not null)")
        d.execute(f"insert into {table} values (1, 0)")
    r = pool_relay(pgrelay, "transaction", pool_size=1)
    try:
        w = pgwire.connect(r.port)
        try:
            assert w.simple("begin").status == "T"
            if how == "error":
                cyc = w.simple("select 1/0")
                assert cyc.errors and cyc.errors[0]["C"] == "22012" and cyc.status == "E"
            else:
                cyc = w.simple(f"update {table} set v = v + 100 where id = 1")
                assert not cyc.errors and cyc.status == "T"
        finally:
            if how.startswith("rst"):
                w.abort()
            else:
                w.terminate()
        with connect(r.port) as c2:
            for k in range(3):
                assert c2.info.transaction_status == TransactionStatus.IDLE
                try:
                    fresh = c2.execute("select now() = statement_timestamp()").fetchone()[0]
                except psycopg.errors.InFailedSqlTransaction:
                    raise AssertionError("next client got the failed transaction of the previous one") from None
                assert fresh, "next client runs inside the previous client's transaction"
            try:  # SET LOCAL: no session state (a plain SET lock_timeout would pin the client)
                c2.execute(f"begin; set local lock_timeout = '2s'; update {table} set v = v + 1 where id = 1; commit")
            except psycopg.errors.LockNotAvailable:
                raise AssertionError("row lock of the disconnected client still held after 2 s") from None
            assert c2.execute(f"select v from {table} where id = 1").fetchone()[0] == 1
            assert c2.info.transaction_status == TransactionStatus.IDLE
    finally:
        with cluster.connect(user="app", password="app") as d:
            d.execute(f"drop table if exists {table}")


@pytest.mark.pgrelay_only
def test_idle_clients_hold_no_backend(pgrelay, cluster):
    """Bug guarded: in transaction mode a logged-in idle client still holds a backend connection (it
    was not released at ReadyForQuery 'I'), so pool_size idle clients starve everyone else."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, "transaction", pool_size=1, query_wait_timeout="3s")
    idle = [connect(r.port) for _ in range(3)]
    try:
        for c in idle:
            c.execute("select 1")  # each used the backend once, then went idle
        t0 = time.monotonic()
        with connect(r.port) as c:
            assert c.execute("select 2").fetchone() == (2,)
        assert time.monotonic() - t0 < 1.0, "a new client had to wait although every other client is idle"
    finally:
        for c in idle:
            c.close()


def test_pipelined_syncs(pgrelay):
    """Bug guarded: the backend is released at the first ReadyForQuery 'I' although the client pipelined
    more extended-protocol batches (several Syncs in one write): the rest runs on another backend or is
    answered out of order / lost."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    with pgwire.connect(r.port, timeout=5) as w, connect(r.port) as noise:
        stop = threading.Event()

        def make_noise():
            while not stop.is_set():
                noise.execute("select pg_sleep(0.002)")

        t = threading.Thread(target=make_noise, daemon=True)
        t.start()
        try:
            for rnd in range(20):
                data = b""
                for k in range(4):
                    data += (pgwire.parse("", f"select {rnd * 10 + k}, pg_sleep(0.001)") + pgwire.bind("", "")
                             + pgwire.execute() + pgwire.sync())
                w.send(data)
                cyc = w.read_cycle(timeout=5, until_ready=4)
                assert not cyc.errors, cyc.errors
                vals = [res.text_rows()[0][0] for res in cyc.results]
                assert vals == [str(rnd * 10 + k) for k in range(4)], f"round {rnd}: {vals}"
                assert [m.type for m in cyc.messages].count("Z") == 4
        finally:
            stop.set()
            t.join(5)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_gone_mid_query(pgrelay, mode):
    """Bug guarded: a client that disconnects while its query runs gets its backend put back into the
    pool still busy (session mode: the reset query queued behind it): the next client waits for the
    old query, or receives its results."""
    r = pool_relay(pgrelay, mode, pool_size=1, query_wait_timeout="5s")
    w = pgwire.connect(r.port, timeout=5)
    w.send(pgwire.query("select pg_sleep(5), 'stale'"))
    time.sleep(0.3)
    w.abort()
    time.sleep(0.1)
    t0 = time.monotonic()
    with connect(r.port) as c:
        assert c.execute("select 'fresh'").fetchone() == ("fresh",)
        assert c.info.transaction_status == TransactionStatus.IDLE
    assert time.monotonic() - t0 < 2.0, "next client waited for the departed client's query"


def test_copy_in_transaction_mode(pgrelay):
    """Bug guarded: during COPY FROM STDIN / TO STDOUT (no ReadyForQuery until the end) the backend is
    released or shared with another client, so the COPY stream is cut or mixed with another client's
    traffic."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    table = "pool_copy_" + uuid.uuid4().hex[:8]
    with connect(r.port) as c, connect(r.port) as noise:
        c.execute(f"create table {table} (i int, t text)")
        stop = threading.Event()

        def make_noise():
            while not stop.is_set():
                noise.execute("select pg_sleep(0.002)")

        t = threading.Thread(target=make_noise, daemon=True)
        t.start()
        try:
            for rnd in range(3):
                with c.cursor() as cur:
                    with cur.copy(f"copy {table} from stdin") as cp:
                        for i in range(5000):
                            cp.write_row((rnd * 5000 + i, f"row {i}"))
                with c.cursor() as cur:
                    n = 0
                    with cur.copy(f"copy (select i from {table} order by i) to stdout") as cp:
                        for _ in cp.rows():
                            n += 1
                assert n == (rnd + 1) * 5000
            assert c.execute(f"select count(*), sum(i) from {table}").fetchone() == (15000, sum(range(15000)))
        finally:
            stop.set()
            t.join(5)
            c.execute(f"drop table if exists {table}")


def _noise_thread(port, stop):
    def run():
        with connect(port) as n:
            while not stop.is_set():
                n.execute("select pg_sleep(0.002)")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_extended_protocol_without_sync_keeps_backend(pgrelay):
    """Bug guarded: the backend is released (or the client's messages routed to another backend) before
    the client's Sync: a client that sends Parse/Bind/Execute + Flush, reads the result and only later
    sends Sync finds its unnamed statement / portal and implicit transaction on another backend."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    stop = threading.Event()
    t = _noise_thread(r.port, stop)
    try:
        with pgwire.connect(r.port, timeout=5) as w:
            for rnd in range(10):
                w.send(pgwire.parse("", "select pg_backend_pid()") + pgwire.bind("", "") + pgwire.execute()
                       + pgwire.flush())
                got = []
                while True:
                    m = w.read_msg(timeout=5)
                    assert m.type != "E", pgwire.parse_error_fields(m.payload)
                    if m.type == "D":
                        got.append(pgwire.parse_data_row(m.payload)[0].decode())
                    if m.type == "C":
                        break
                time.sleep(0.02)
                # the unnamed statement is still there: bind it again before the Sync
                w.send(pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
                cyc = w.read_cycle(timeout=5)
                assert not cyc.errors, f"round {rnd}: {cyc.errors}"
                assert cyc.results[0].text_rows()[0][0] == got[0], f"round {rnd}: Sync-less part ran elsewhere"
    finally:
        stop.set()
        t.join(5)


def test_portal_across_syncs_in_transaction(pgrelay):
    """Bug guarded: the backend is released at ReadyForQuery 'T' (inside BEGIN), so a named portal
    fetched in steps across Syncs (as JDBC's fetchSize does) disappears or continues on another
    backend."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    stop = threading.Event()
    t = _noise_thread(r.port, stop)
    try:
        with pgwire.connect(r.port, timeout=5) as w:
            for rnd in range(3):
                assert w.simple("begin").status == "T"
                w.send(pgwire.parse("", "select generate_series(1, 10)") + pgwire.bind("p1", "")
                       + pgwire.execute("p1", 3) + pgwire.sync())
                vals = []

                def rows(cyc):  # DataRows (read_cycle does not close a result at PortalSuspended)
                    return [int(pgwire.parse_data_row(m.payload)[0]) for m in cyc.messages if m.type == "D"]

                for _ in range(4):
                    cyc = w.read_cycle(timeout=5)
                    assert not cyc.errors, f"round {rnd}: {cyc.errors}"
                    assert cyc.status == "T"
                    vals += rows(cyc)
                    time.sleep(0.02)
                    w.send(pgwire.execute("p1", 3) + pgwire.sync())
                cyc = w.read_cycle(timeout=5)
                assert not cyc.errors, f"round {rnd}: {cyc.errors}"
                vals += rows(cyc)
                assert vals == list(range(1, 11)), f"round {rnd}: {vals}"
                assert w.simple("commit").status == "I"
    finally:
        stop.set()
        t.join(5)


@pytest.mark.pgrelay_only
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_killed_pooled_backends_are_replaced(pgrelay, cluster, mode):
    """Bug guarded: pooled backend connections that die while parked (here pg_terminate_backend) stay in
    the pool, and the next client (transaction mode: the next query of an idle client) gets
    'server closed the connection' instead of a fresh backend."""
    clear_backends(cluster)
    r = pool_relay(pgrelay, mode, pool_size=2)
    with connect(r.port) as c:
        c.execute("select 1")
        if mode == "transaction":
            idle = c
        else:
            idle = None
    time.sleep(0.3)  # parked (session) / released (transaction)
    with cluster.connect(dbname="postgres") as d:
        n = d.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                      "where usename = 'app' and backend_type = 'client backend'").fetchone()[0]
    assert n >= 1, "no pooled backend to kill"
    time.sleep(0.3)
    if idle is None:
        with connect(r.port) as c2:
            assert c2.execute("select 'fresh'").fetchone() == ("fresh",)
    with connect(r.port) as c3:
        for _ in range(3):
            assert c3.execute("select 'fresh'").fetchone() == ("fresh",)
