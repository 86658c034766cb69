"""Replication lag and routing: read-your-writes, delay_threshold, delay_threshold_by_time,
prefer_lower_delay_standby.

Standbys are made to lag with recovery_min_apply_delay (ALTER SYSTEM + pg_reload_conf on the standby):
they receive WAL at once but apply each commit only after the delay, so a row committed on the primary
is missing on them for that long. These tests run on a cluster of their own (`lag_cluster`, started
once for the module on free ports), so the shared session cluster never lags for other tests; the
delay is reset in a finally all the same, and each test waits until the standbys caught up.
"""

import contextlib
import itertools
import threading
import time

import pytest

from conftest import connect
from routing_helpers import (
    PRIMARY, STANDBYS, backends_for, delayed, node_of, private_cluster, session_nodes, wait_nodes_known,
    wait_pool_delay, wait_replayed, where)

pytestmark = pytest.mark.pgrelay_only

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def lag_cluster():
    with private_cluster() as c:
        with c.connect(user="app", password="app") as d:
            d.execute("create table rt_lag (id bigint primary key, v text)")
        wait_replayed(c)
        yield c


def lag_relay(pgrelay, lag_cluster, weights=(0, 1, 1), pool_mode=None, **lb):
    kw = {"load_balance": lb} if lb else {}
    if pool_mode:
        kw["pool"] = {"mode": pool_mode}
    r = pgrelay(backends=backends_for(lag_cluster, weights), **kw)
    wait_nodes_known(r)
    return r


def next_id():
    return int(time.time() * 1000) * 1000 + next(_ids) % 1000


@contextlib.contextmanager
def background_writes(cluster, interval=0.1):
    """Commit a small insert on the primary every interval seconds (direct connection) while the block
    runs: keeps WAL and commit timestamps flowing, so lag grows on a delayed standby and a healthy one
    stays visibly fresh."""
    stop = threading.Event()
    errors = []

    def run():
        try:
            with cluster.connect(user="app", password="app") as d:
                while not stop.is_set():
                    d.execute("insert into rt_lag (id, v) values (%s, 'bg')", (next_id(),))
                    stop.wait(interval)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)
    assert not errors, errors


def make_byte_lag(cluster):
    """With a standby delaying its commits: one small committed transaction (replay stops before
    its commit record), then about 300 kB of WAL in a second one that the standby receives but does
    not replay. Its lag in bytes then stays far above 64kB, while a healthy standby's is 0 once
    replayed (no steady writer whose in-flight WAL could make it look behind)."""
    with cluster.connect(user="app", password="app") as p:
        p.execute("insert into rt_lag (id, v) values (%s, 'stop here')", (next_id(),))
        p.execute("insert into rt_lag (id, v) select %s + g, repeat('x', 100) from generate_series(1, 2000) g",
                  (next_id() * 10,))


def wait_avoided(relay, cluster, node, streak=10, timeout=20.0):
    """Open sessions until `streak` consecutive ones read somewhere else than node (pgrelay noticed the
    lag); False if that did not happen before the timeout."""
    deadline = time.monotonic() + timeout
    run = 0
    while time.monotonic() < deadline:
        with connect(relay.port) as c:
            run = run + 1 if where(c, cluster) != node else 0
        if run >= streak:
            return True
        time.sleep(0.05)
    return False


def wait_reads_on(relay, cluster, node, timeout=20.0):
    """Open sessions until one reads from node; False if none did before the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect(relay.port) as c:
            if where(c, cluster) == node:
                return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------------------
# The lag is real (PostgreSQL only; also runs with PGRELAY_TEST_DIRECT=1).


def test_direct_standby_read_misses_under_apply_delay(lag_cluster):
    """(Checks the test setup, not pgrelay.) Bug guarded: recovery_min_apply_delay does not make the
    standby lag, so the read-your-writes tests below would pass without pgrelay doing anything."""
    with delayed(lag_cluster, [1], "3s"):
        rid = next_id()
        with lag_cluster.connect(user="app", password="app") as p:
            p.execute("insert into rt_lag (id, v) values (%s, 'direct')", (rid,))
        with lag_cluster.connect(1, user="app", password="app") as s:
            assert s.execute("select count(*) from rt_lag where id = %s", (rid,)).fetchone()[0] == 0


# ---------------------------------------------------------------------------------------------------------
# Read-your-writes.


@pytest.mark.deadline(90)
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_read_your_writes_sees_every_row(pgrelay, lag_cluster, pool_mode):
    """Bug guarded: after a session commits a write, its next read goes to a standby that has not
    replayed it yet and misses the row (here both standbys apply commits 3 s late; a direct read of a
    standby right after the write misses it). Every insert-then-select-by-id through pgrelay must see
    its row: autocommit, explicit transactions, statements with parameters and prepared statements
    (re-executed with a Bind alone, which pgrelay must also count as a write)."""
    r = lag_relay(pgrelay, lag_cluster, pool_mode=pool_mode)
    misses, direct_misses, n = [], 0, 24
    with delayed(lag_cluster, STANDBYS, "3s"), connect(r.port) as c, \
            lag_cluster.connect(1, user="app", password="app") as standby:
        for i in range(n):
            rid = next_id()
            kind = ("autocommit", "transaction", "extended", "prepared")[i % 4]
            if kind == "autocommit":
                c.execute(f"insert into rt_lag (id, v) values ({rid}, 'ryw')")
                row = c.execute(f"select v, inet_server_port() from rt_lag where id = {rid}").fetchone()
            elif kind == "transaction":
                c.execute("begin")
                c.execute(f"insert into rt_lag (id, v) values ({rid}, 'ryw')")
                c.execute("commit")
                row = c.execute(f"select v, inet_server_port() from rt_lag where id = {rid}").fetchone()
            else:  # extended protocol; "prepared": named statements, re-executed by a Bind alone
                prep = kind == "prepared"
                c.execute("insert into rt_lag (id, v) values (%s, 'ryw')", (rid,), prepare=prep)
                row = c.execute("select v, inet_server_port() from rt_lag where id = %s", (rid,),
                                prepare=prep).fetchone()
            if row is None:
                misses.append((i, kind))
            if standby.execute("select count(*) from rt_lag where id = %s", (rid,)).fetchone()[0] == 0:
                direct_misses += 1
    assert direct_misses >= n // 2, f"the standby was not lagging ({direct_misses} direct misses of {n})"
    assert misses == [], f"{len(misses)} of {n} reads through pgrelay missed the row just written: {misses}"


@pytest.mark.deadline(90)
def test_read_your_writes_returns_to_standby_after_replay(pgrelay, lag_cluster):
    """Bug guarded: after a write, read-your-writes pins the session to the primary for good instead
    of only until a standby replayed past the write."""
    r = lag_relay(pgrelay, lag_cluster)
    with delayed(lag_cluster, STANDBYS, "2s"), connect(r.port) as c:
        assert where(c, lag_cluster) in STANDBYS
        rid = next_id()
        c.execute(f"insert into rt_lag (id, v) values ({rid}, 'back')")
        row = c.execute(f"select inet_server_port(), v from rt_lag where id = {rid}").fetchone()
        assert row is not None and node_of(lag_cluster, row[0]) == PRIMARY, row
        deadline = time.monotonic() + 25
        while True:
            row = c.execute(f"select inet_server_port(), v from rt_lag where id = {rid}").fetchone()
            assert row is not None, "a read missed the session's own write"
            if node_of(lag_cluster, row[0]) in STANDBYS:
                break
            assert time.monotonic() < deadline, "reads never went back to a standby after it replayed the write"
            time.sleep(0.2)


def test_without_read_your_writes_reads_can_miss(pgrelay, lag_cluster):
    """Control for the test above: with load_balance.read_your_writes = false the same loop does read
    from the lagging standbys and misses rows (so the zero misses above are pgrelay's doing)."""
    r = lag_relay(pgrelay, lag_cluster, read_your_writes=False)
    misses = 0
    with delayed(lag_cluster, STANDBYS, "3s"), connect(r.port) as c:
        for _ in range(5):
            rid = next_id()
            c.execute(f"insert into rt_lag (id, v) values ({rid}, 'stale')")
            if c.execute(f"select v from rt_lag where id = {rid}").fetchone() is None:
                misses += 1
    assert misses > 0


# ---------------------------------------------------------------------------------------------------------
# Lagging standbys get no reads.


@pytest.mark.deadline(90)
def test_delay_threshold_bytes_avoids_lagging_standby(pgrelay, lag_cluster):
    """Bug guarded: load_balance.delay_threshold is ignored: a standby more than 64kB behind keeps
    getting reads; SHOW pool_nodes does not show its replication_delay in bytes."""
    r = lag_relay(pgrelay, lag_cluster, delay_threshold="64kB")
    with delayed(lag_cluster, [1], "60s"):
        make_byte_lag(lag_cluster)
        wait_replayed(lag_cluster, [2])
        shown = wait_pool_delay(r, 1, lambda d: d > 64 * 1024)
        assert shown is not False, "SHOW pool_nodes never showed node 1 more than 64kB behind"
        assert wait_pool_delay(r, 2, lambda d: d < 64 * 1024) is not False, "node 2 still shown behind"
        assert wait_avoided(r, lag_cluster, 1), "reads kept going to the lagging standby"
        assert wait_reads_on(r, lag_cluster, 2), "the fresh standby never got reads"
        counts = session_nodes(r.port, lag_cluster, 30)
        assert counts == {2: 30}, counts


@pytest.mark.deadline(90)
def test_delay_threshold_by_time_avoids_lagging_standby(pgrelay, lag_cluster):
    """Bug guarded: load_balance.delay_threshold_by_time is ignored: a standby applying commits 60 s
    late keeps getting reads with a 1 s limit. (Writes go on, so the fresh standby stays fresh by any
    measure; it must take reads, the primary may take some when node 2 is momentarily late.)"""
    r = lag_relay(pgrelay, lag_cluster, delay_threshold_by_time="1s")
    with delayed(lag_cluster, [1], "60s"), background_writes(lag_cluster):
        assert wait_avoided(r, lag_cluster, 1), "reads kept going to the lagging standby"
        assert wait_reads_on(r, lag_cluster, 2), "the fresh standby never got reads"
        counts = session_nodes(r.port, lag_cluster, 30)
        assert counts[1] == 0 and counts[2] > 0, counts


@pytest.mark.deadline(60)
def test_delay_threshold_by_time_keeps_idle_standbys(pgrelay, lag_cluster):
    """Bug guarded: with delay_threshold_by_time, standbys of an idle primary count as lagging (a
    delay measured as now() - pg_last_xact_replay_timestamp() grows while nothing is written), so a
    read-mostly system sends every read to the primary although the standbys replayed everything."""
    r = lag_relay(pgrelay, lag_cluster, delay_threshold_by_time="1s")
    with lag_cluster.connect(user="app", password="app") as p:
        p.execute("insert into rt_lag (id, v) values (%s, 'last write')", (next_id(),))
    wait_replayed(lag_cluster)
    time.sleep(3)  # nothing written for three times the threshold (and several health checks)
    counts = session_nodes(r.port, lag_cluster, 20)
    assert counts[PRIMARY] == 0, f"caught-up standbys of an idle primary were treated as lagging: {counts}"


def session_on_node(relay, cluster, node, tries=40):
    """A session (left open) whose read node is `node`; None if none came up in `tries` sessions."""
    for _ in range(tries):
        c = connect(relay.port)
        if where(c, cluster) == node:
            return c
        c.close()
    return None


@pytest.mark.deadline(90)
@pytest.mark.parametrize("prefer", [True, False], ids=["prefer_lower_delay_standby", "default"])
def test_read_node_that_starts_lagging(pgrelay, lag_cluster, prefer):
    """Bug guarded: a session whose read node falls more than delay_threshold behind keeps reading
    from it; it must read from the primary, or with prefer_lower_delay_standby = true from the least
    lagging standby (pgpool-II's meaning; node 2 here, although its weight is lower)."""
    r = lag_relay(pgrelay, lag_cluster, weights=(0, 3, 1), delay_threshold="64kB",
                  prefer_lower_delay_standby=prefer)
    c = session_on_node(r, lag_cluster, 1)
    assert c is not None, "no session chose node 1 (weight 3 of 4)"
    want = 2 if prefer else PRIMARY
    with c, delayed(lag_cluster, [1], "60s"):
        make_byte_lag(lag_cluster)
        wait_replayed(lag_cluster, [2])
        assert wait_pool_delay(r, 1, lambda d: d > 64 * 1024) is not False, "pgrelay never saw node 1 lagging"
        assert wait_pool_delay(r, 2, lambda d: d < 64 * 1024) is not False, "node 2 still shown behind"
        deadline = time.monotonic() + 15
        seen = []
        while time.monotonic() < deadline:
            seen.append(where(c, lag_cluster))
            if seen[-1] == want:
                break
            time.sleep(0.1)
        assert seen[-1] == want, f"the session's reads went to {seen[-10:]}"
        nodes = [where(c, lag_cluster) for _ in range(10)]
        assert nodes == [want] * 10, nodes
