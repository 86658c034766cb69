"""Session pooling (pool.mode = "session", the default): a client keeps one backend connection until it
disconnects; then pgrelay runs pool.reset_query_list ("ABORT; DISCARD ALL") and parks the connection for
the next client of the same (database, user, startup options other than application_name)."""

import time
import uuid

import psycopg
import pytest
from psycopg.pq import TransactionStatus

import pgwire
from conftest import DIRECT, connect
from pool_helpers import PRIMARY_ONLY, clear_backends

# pgrelay resets a released connection asynchronously; give it this long before the next client comes.
PARK_DELAY = 0.3


def backend_pid(c):
    return c.execute("select pg_backend_pid()").fetchone()[0]


@pytest.fixture
def lock_table(cluster):
    name = "pool_lock_" + uuid.uuid4().hex[:8]
    with cluster.connect(user="app", password="app") as d:
        d.execute(f"create table {name} (id int primary key, v int not null)")
        d.execute(f"insert into {name} values (1, 0)")
    yield name
    with cluster.connect(user="app", password="app") as d:
        d.execute(f"drop table if exists {name}")


@pytest.mark.pgrelay_only
def test_session_backend_reused(pgrelay, cluster):
    """Bug guarded: backend connections are not pooled in session mode: every client logs in anew (or
    the released connection is closed instead of parked), so two sequential clients get different
    backends."""
    clear_backends(cluster)
    r = pgrelay(pool={"mode": "session"}, load_balance=PRIMARY_ONLY)
    with connect(r.port) as c1:
        pid1 = backend_pid(c1)
    time.sleep(PARK_DELAY)
    with connect(r.port) as c2:
        pid2 = backend_pid(c2)
    assert pid1 == pid2, f"second client got backend {pid2}, not the parked {pid1}"
    # And a third one, with another application_name (not part of the pool key).
    time.sleep(PARK_DELAY)
    with connect(r.port, application_name="pool_third") as c3:
        assert backend_pid(c3) == pid1, "application_name must not be part of the pool key"
        assert c3.execute("show application_name").fetchone()[0] == "pool_third", (
            "a reused backend must carry the new client's application_name")


@pytest.mark.pgrelay_only
def test_session_default_mode_is_session(pgrelay):
    """Bug guarded: with no pool group at all, pgrelay does not pool (or pools per transaction)."""
    r = pgrelay(load_balance=PRIMARY_ONLY)
    with connect(r.port) as c1:
        pid1 = backend_pid(c1)
        c1.execute("set work_mem = '5MB'")
        for _ in range(5):  # session mode: every statement on the same backend, settings kept
            assert backend_pid(c1) == pid1
        assert c1.execute("show work_mem").fetchone()[0] == "5MB"
    time.sleep(PARK_DELAY)
    with connect(r.port) as c2:
        assert backend_pid(c2) == pid1, "default mode must park and reuse the connection"


@pytest.mark.pgrelay_only
def test_session_startup_options_are_part_of_pool_key(pgrelay, cluster):
    """Bug guarded: a client with different startup options (here -c statement_timeout) gets a backend
    that was logged in with other options, so it silently runs with someone else's settings."""
    r = pgrelay(pool={"mode": "session"}, load_balance=PRIMARY_ONLY)
    with connect(r.port, options="-c statement_timeout=4321") as c1:
        pid1 = backend_pid(c1)
        assert c1.execute("show statement_timeout").fetchone()[0] == "4321ms"
    time.sleep(PARK_DELAY)
    with connect(r.port) as c2:
        assert c2.execute("show statement_timeout").fetchone()[0] == "0", (
            "client without options got a backend started with -c statement_timeout=4321")
        assert backend_pid(c2) != pid1
    time.sleep(PARK_DELAY)
    with connect(r.port, options="-c statement_timeout=4321") as c3:
        assert backend_pid(c3) == pid1, "a client with the same options should reuse the parked backend"
        assert c3.execute("show statement_timeout").fetchone()[0] == "4321ms", (
            "DISCARD ALL must keep the startup options of the connection")


def test_session_state_discarded_between_clients(pgrelay, cluster):
    """Bug guarded: the reset query is not run (or not completely) before a parked connection is
    handed to the next client: a temp table, SET work_mem, a SQL prepared statement, LISTEN and a
    session advisory lock of the first client leak into the second client's session."""
    r = pgrelay(pool={"mode": "session"}, load_balance=PRIMARY_ONLY)
    with cluster.connect(dbname="postgres") as d:
        default_work_mem = d.execute("show work_mem").fetchone()[0]
    with connect(r.port) as c1:
        pid1 = backend_pid(c1)
        c1.execute("create temp table pool_sess_tmp (x int)")
        c1.execute("insert into pool_sess_tmp values (1)")
        c1.execute("set work_mem = '7MB'")
        c1.execute("prepare pool_sess_q as select 42")
        c1.execute("listen pool_sess_chan")
        c1.execute("select pg_advisory_lock(4242)")
    time.sleep(PARK_DELAY)
    with connect(r.port) as c2:
        if not DIRECT:
            assert backend_pid(c2) == pid1, "the parked backend was not reused (test would prove nothing)"
        assert c2.execute("select to_regclass('pg_temp.pool_sess_tmp') is null").fetchone()[0], \
            "temp table of the previous client is still there (DISCARD ALL not run)"
        wm = c2.execute("show work_mem").fetchone()[0]
        assert wm == default_work_mem, f"work_mem {wm} leaked from the previous client (default {default_work_mem})"
        assert c2.execute("select count(*) from pg_prepared_statements where name = 'pool_sess_q'").fetchone()[0] == 0
        assert c2.execute("select count(*) from pg_listening_channels()").fetchone()[0] == 0
        assert c2.execute("select pg_try_advisory_lock(4242)").fetchone()[0], \
            "advisory lock of the previous client still held"
        c2.execute("select pg_advisory_unlock(4242)")


@pytest.mark.parametrize("how", ["terminate", "rst"])
def test_session_disconnect_in_open_transaction(pgrelay, cluster, lock_table, how):
    """Bug guarded: a client that disconnects inside an open transaction (holding a row lock) leaves the
    transaction open on the parked backend: the lock stays held, and the next client that gets the
    connection finds itself inside the old transaction (ABORT missing from the reset)."""
    r = pgrelay(pool={"mode": "session"}, load_balance=PRIMARY_ONLY)
    w = pgwire.connect(r.port)
    try:
        cyc = w.simple("begin")
        assert not cyc.errors and cyc.status == "T"
        cyc = w.simple(f"update {lock_table} set v = v + 100 where id = 1")
        assert not cyc.errors and cyc.status == "T", cyc
        pid1 = w.scalar("select pg_backend_pid()")
    finally:
        if how == "rst":
            w.abort()
        else:
            w.terminate()
    time.sleep(PARK_DELAY)
    with connect(r.port) as c2:
        assert c2.info.transaction_status == TransactionStatus.IDLE
        same = str(backend_pid(c2)) == pid1
        assert c2.execute("select now() = statement_timestamp()").fetchone()[0], (
            f"next client (same backend: {same}) is inside the previous client's transaction")
        c2.execute("set lock_timeout = '2s'")
        t0 = time.monotonic()
        try:
            c2.execute(f"update {lock_table} set v = v + 1 where id = 1")
        except psycopg.errors.LockNotAvailable:
            raise AssertionError("row lock of the disconnected client still held after 2 s") from None
        assert time.monotonic() - t0 < 2.0
        v = c2.execute(f"select v from {lock_table} where id = 1").fetchone()[0]
        assert v == 1, f"v = {v}: the disconnected client's update was committed instead of rolled back"
        assert c2.info.transaction_status == TransactionStatus.IDLE
