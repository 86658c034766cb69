"""Protocol-level (named) prepared statements in transaction mode: a client's statement must work on
whichever pooled backend its next transaction lands on, and clients choosing the same name for different
queries must never see each other's statement."""

import re
import time

import pytest

import pgwire
from conftest import DIRECT, connect, run_client
from pool_helpers import pool_relay, run_threads

QUERIES = [
    ("select %s::int + 1", lambda i, k: (i * 100 + k,), lambda i, k: (i * 100 + k + 1,)),
    ("select %s::text || '-x'", lambda i, k: (f"c{i}k{k}",), lambda i, k: (f"c{i}k{k}-x",)),
    ("select %s::int * 2, %s::int", lambda i, k: (k, i), lambda i, k: (k * 2, i)),
]


@pytest.mark.deadline(60)
def test_psycopg_server_side_prepared_many_clients(pgrelay):
    """Bug guarded: with psycopg's server-side prepared statements (prepare_threshold=0, names _pg3_0,
    _pg3_1, ... chosen per connection, so every client uses the same names for different queries in a
    different order) over pool_size = 2, Bind reaches a backend where the name is missing ('prepared
    statement "_pg3_0" does not exist'), already taken ('already exists') or means another client's
    query (wrong results)."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)

    def client(i):
        order = QUERIES[i % 3:] + QUERIES[:i % 3]  # _pg3_0 is a different query on different clients
        with connect(r.port, prepare_threshold=0) as c:
            for k in range(30):
                for sql, args, expect in order:
                    row = c.execute(sql, args(i, k)).fetchone()
                    assert row == expect(i, k), f"client {i} iteration {k}: {sql} gave {row}, expected {expect(i, k)}"
                if k % 10 == 9:  # also inside explicit transactions
                    with c.transaction():
                        for sql, args, expect in order:
                            assert c.execute(sql, args(i, k)).fetchone() == expect(i, k)
        return True

    run_threads(client, 10, timeout=50)


def ext(w, name, sql=None, params=(), timeout=5):
    """[Parse name sql] Bind Execute Sync on the unnamed portal; returns the Cycle."""
    data = pgwire.parse(name, sql) if sql is not None else b""
    data += pgwire.bind("", name, params) + pgwire.execute() + pgwire.sync()
    w.send(data)
    return w.read_cycle(timeout=timeout)


def ext_value(w, name, sql=None, params=()):
    cyc = ext(w, name, sql, params)
    assert not cyc.errors, f"statement {name!r}: {cyc.errors}"
    return cyc.results[0].text_rows()[0][0]


def describe_stmt(w, name):
    w.send(pgwire.describe("S", name) + pgwire.sync())
    cyc = w.read_cycle(timeout=5)
    assert not cyc.errors, f"Describe {name!r}: {cyc.errors}"
    t = [m for m in cyc.messages if m.type == "T"]
    assert t, f"no RowDescription for {name!r}: {cyc.messages}"
    return [col["name"] for col in pgwire.parse_row_description(t[0].payload)]


@pytest.mark.parametrize("pool_size", [1, 2])
def test_same_statement_name_different_queries(pgrelay, pool_size):
    """Bug guarded: two clients prepare the same statement name ("s1") for different queries on a small
    pool; pgrelay forwards the second Parse to a backend that already has the first client's "s1"
    ('already exists'), or a Bind/Describe of "s1" runs the other client's query."""
    r = pool_relay(pgrelay, "transaction", pool_size=pool_size)
    clients = [pgwire.connect(r.port, timeout=5) for _ in range(3)]
    try:
        for n, w in enumerate(clients, start=1):
            assert ext_value(w, "s1", f"select {n} as col{n}") == str(n)
        for rnd in range(8):
            for n, w in enumerate(clients, start=1):
                assert ext_value(w, "s1") == str(n), f"round {rnd}: client {n} ran someone else's s1"
                if rnd % 2:
                    assert describe_stmt(w, "s1") == [f"col{n}"], f"round {rnd}: Describe s1 of client {n}"
            # one client at a time inside an explicit transaction (the pool may be a single backend)
            for n, w in enumerate(clients, start=1):
                assert w.simple("begin").status == "T"
                assert ext_value(w, "s1") == str(n)
                assert ext_value(w, "s1") == str(n)
                assert w.simple("commit").status == "I"
    finally:
        for w in clients:
            w.terminate()


def test_close_and_reprepare_with_other_text(pgrelay):
    """Bug guarded: after the client closes "s1" (Close 'S') and prepares it again with other text,
    pgrelay still binds the old statement on some backend (stale per-backend cache), or a Bind of the
    closed name silently runs the old query instead of failing like PostgreSQL (26000)."""
    r = pool_relay(pgrelay, "transaction", pool_size=1)
    with pgwire.connect(r.port, timeout=5) as a, pgwire.connect(r.port, timeout=5) as b:
        assert ext_value(a, "s1", "select 1 as a") == "1"
        assert ext_value(b, "s1", "select 2 as b") == "2"
        assert ext_value(a, "s1") == "1"
        a.send(pgwire.close("S", "s1") + pgwire.sync())
        cyc = a.read_cycle(timeout=5)
        assert not cyc.errors and "3" in [m.type for m in cyc.messages], cyc.messages
        cyc = ext(a, "s1")  # closed: PostgreSQL says 26000 prepared statement "s1" does not exist
        assert cyc.errors and cyc.errors[0]["C"] == "26000", f"Bind of a closed statement: {cyc.results}"
        assert cyc.status == "I"
        assert ext_value(b, "s1") == "2", "closing A's s1 must not touch B's s1"
        assert ext_value(a, "s1", "select 10 as a10") == "10"
        for _ in range(3):
            assert ext_value(a, "s1") == "10"
            assert ext_value(b, "s1") == "2"
        assert describe_stmt(a, "s1") == ["a10"]
        # Close + Parse in one pipeline, then Bind
        a.send(pgwire.close("S", "s1") + pgwire.parse("s1", "select $1::int * 3 as t", [23])
               + pgwire.bind("", "s1", ["7"]) + pgwire.execute() + pgwire.sync())
        cyc = a.read_cycle(timeout=5)
        assert not cyc.errors and cyc.results[0].text_rows() == [["21"]], cyc.results
        assert ext_value(a, "s1", params=["5"]) == "15"
        assert ext_value(b, "s1") == "2"


@pytest.fixture(scope="module")
def pgbench_db(cluster):
    r = run_client(["pgbench", "-h", "127.0.0.1", "-p", str(cluster.primary_port), "-U", "app",
                    "-i", "-s", "1", "-q", "app"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return True


@pytest.mark.deadline(60)
@pytest.mark.parametrize("protocol", ["prepared", "extended"])
def test_pgbench_transaction_mode(pgrelay, pgbench_db, protocol):
    """Bug guarded: pgbench's tpcb-like transactions (-M prepared: named statements P1..P7 per
    connection, identical names and texts on every client; -M extended: unnamed statements) fail in
    transaction mode over pool_size = 3 with 8 clients ('prepared statement does not exist', protocol
    desync, aborted transactions)."""
    r = pool_relay(pgrelay, "transaction", pool_size=3)
    res = run_client(["pgbench", "-h", "127.0.0.1", "-p", str(r.port), "-U", "app", "-n", "-M", protocol,
                      "-c", "8", "-j", "2", "-T", "5", "app"], timeout=25)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    assert m and int(m.group(1)) == 0, out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) >= 100, out


def test_more_statements_than_a_backend_keeps(pgrelay):
    """Bug guarded: a client with more named statements than pgrelay keeps prepared per backend
    connection (it closes the least recently used ones) gets 'prepared statement does not exist' or
    another statement's result when an evicted one is used again, in particular when a second client
    shares the backend in between."""
    r = pool_relay(pgrelay, "transaction", pool_size=1)
    n = 300
    with pgwire.connect(r.port, timeout=10) as a, pgwire.connect(r.port, timeout=10) as b:
        a.send(b"".join(pgwire.parse(f"q{i}", f"select {i} as v{i}") for i in range(n)) + pgwire.sync())
        cyc = a.read_cycle(timeout=10)
        assert not cyc.errors, cyc.errors[:3]
        assert ext_value(b, "q0", "select 'b0'") == "b0"
        for rnd in range(2):
            order = list(range(n)) if rnd == 0 else list(reversed(range(n)))
            a.send(b"".join(pgwire.bind("", f"q{i}") + pgwire.execute() for i in order) + pgwire.sync())
            cyc = a.read_cycle(timeout=10)
            assert not cyc.errors, f"round {rnd}: {cyc.errors[:3]}"
            got = [res.text_rows()[0][0] for res in cyc.results]
            assert got == [str(i) for i in order], f"round {rnd}: first mismatches " + str(
                [(i, g) for i, g in zip(order, got) if str(i) != g][:5])
            assert ext_value(b, "q0") == "b0"
        # one at a time, each in its own transaction, interleaved with b
        for i in (0, 299, 1, 150, 298):
            assert ext_value(a, f"q{i}") == str(i)
            assert ext_value(b, "q0") == "b0"


def test_pipelined_error_then_next_batch(pgrelay):
    """Bug guarded: after an error inside a pipelined extended-protocol batch (the server skips to Sync),
    pgrelay's request tracking gets out of step: the next batch's answers are dropped, duplicated or
    attributed to the wrong request, or the backend is released too early / never."""
    r = pool_relay(pgrelay, "transaction", pool_size=1)
    with pgwire.connect(r.port, timeout=5) as w, pgwire.connect(r.port, timeout=5) as other:
        assert ext_value(w, "good", "select 'good'") == "good"
        for rnd in range(5):
            data = (pgwire.parse("", "select 1/0") + pgwire.bind("", "") + pgwire.execute()
                    + pgwire.bind("", "good") + pgwire.execute() + pgwire.sync()  # skipped after the error
                    + pgwire.bind("", "good") + pgwire.execute() + pgwire.sync()
                    + pgwire.bind("", "nonexistent") + pgwire.execute() + pgwire.sync()
                    + pgwire.parse("", f"select {rnd}") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
            w.send(data)
            cyc = w.read_cycle(timeout=5, until_ready=4)
            codes = [e["C"] for e in cyc.errors]
            assert codes == ["22012", "26000"], f"round {rnd}: errors {codes}"
            rows = [res.text_rows()[0][0] for res in cyc.results if res.error is None and res.rows]
            assert rows == ["good", str(rnd)], f"round {rnd}: rows {rows}"
            assert cyc.status == "I"
            assert other.scalar("select 'other'") == "other"


@pytest.mark.parametrize("how", ["session", "transaction_after_pinned_client"])
def test_statements_after_reset(pgrelay, how):
    """Bug guarded: when a backend is reset with DISCARD ALL (session mode after a client leaves, or
    transaction mode after a pinned client leaves) every prepared statement on it is gone, but pgrelay
    still believes it holds the departed client's statements: the next client with the same statement
    name and text gets only a Bind and fails with 'prepared statement "_pg3_0" does not exist'."""
    mode = "session" if how == "session" else "transaction"
    r = pool_relay(pgrelay, mode, pool_size=1)
    pids = set()
    for k in range(3):
        with connect(r.port, prepare_threshold=0) as c:
            if how != "session":
                c.execute("set work_mem = '5MB'")  # pins the client; its backend is reset after it
            pids.add(c.execute("select pg_backend_pid()").fetchone()[0])
            for j in range(3):
                assert c.execute("select %s::int + 100", (j,)).fetchone() == (j + 100,), f"client {k}"
        with pgwire.connect(r.port, timeout=5) as w:  # also the same name by hand: s1, other text each time
            assert ext_value(w, "s1", f"select {k} + 1000") == str(k + 1000)
        time.sleep(0.2)
    if how == "session" and not DIRECT:
        assert len(pids) == 1, f"backends {pids}: the parked connection was not reused (test proved nothing)"


def test_psycopg_pipeline_mode(pgrelay):
    """Bug guarded: libpq pipeline mode (many extended-protocol queries in flight, Syncs interleaved,
    server-side prepared statements) from several clients over pool_size = 2 loses or misorders results,
    or runs into 'prepared statement does not exist'."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)

    def client(i):
        with connect(r.port, prepare_threshold=0) as c:
            for rnd in range(5):
                with c.pipeline() as p:
                    curs = [c.execute("select %s::int * 3, %s::text", (i * 1000 + rnd * 100 + k, f"c{i}"))
                            for k in range(40)]
                    p.sync()
                    with c.transaction():
                        tx = [c.execute("select %s::int + 1", (k,)) for k in range(10)]
                got = [cur.fetchone() for cur in curs]
                assert got == [((i * 1000 + rnd * 100 + k) * 3, f"c{i}") for k in range(40)], f"client {i}"
                assert [cur.fetchone()[0] for cur in tx] == [k + 1 for k in range(10)]
        return True

    run_threads(client, 6, timeout=40)
