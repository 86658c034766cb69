"""Failover end to end: real PostgreSQL clusters, real clients, everything through pgrelay's port.

Each destructive test gets a private cluster (failover_helpers.own_cluster: a copy of a template
made by scripts/cluster.sh, on fresh free ports) and a pgrelay whose failover_command and
follow_primary_command are the repository's conf/failover.sh and conf/follow_primary.sh, wrapped
by a recorder that notes their arguments (failover_helpers.recorder). Client load comes from
failover_load.ClientLoop threads: every login and query has its own deadline, so a hang shows as a
timeout in the records, never as a stuck test.

Bounds are generous (a loaded 2-core CI machine, ASan build); the figures are measured by
bench/failover_bench.sh, not here.
"""

import signal
import time

import pytest

import pgwire
from conftest import DIRECT, REPO
from failover_helpers import (PGBIN, calls, cluster_template, own_cluster,  # noqa: F401
                              recorder)
from failover_load import ClientLoop, query, query_dicts, run_simple, stop_all

pytestmark = [pytest.mark.pgrelay_only,
              pytest.mark.skipif(DIRECT, reason="tests pgrelay's failover through its own port")]

FAILOVER_SH = REPO / "conf" / "failover.sh"
FOLLOW_SH = REPO / "conf" / "follow_primary.sh"

WRITE_RESUME_BOUND = 10.0  # s from the primary's loss to the first accepted write (measured: < 1 s)
READ_GAP_BOUND = 3.0       # s without an answer on a session reading a surviving standby
SYNC_WRITERS = 3


# ---------------------------------------------------------------------------------------------------------
# Set-up helpers.


def relay_for(pgrelay, c, workdir, failover=None, follow=None, health=None, **overrides):
    """A pgrelay in front of the private cluster c. failover/follow: a shell snippet run by the
    recorder (default: exec the repository's script); "" leaves the command unset."""
    if failover is None:
        failover = f'exec {FAILOVER_SH} "$@"'
    if follow is None:
        follow = f'exec {FOLLOW_SH} "$@"'
    settings = dict(
        backends=[{"host": "127.0.0.1", "port": c.ports[i], "weight": 1.0,
                   "data_directory": str(c.data_dirs[i]), "application_name": f"node{i}"}
                  for i in range(3)],
        health_check={"period": "1s", "timeout": "1s", "max_retries": 1, "retry_delay": "500ms",
                      "user": "postgres", "password": "postgres", "database": "postgres",
                      **(health or {})},
        failover_command=recorder(workdir, "failover", failover) if failover != "" else None,
        follow_primary_command=recorder(workdir, "follow", follow) if follow != "" else None,
        failover_command_timeout="30s",
        search_primary_node_timeout="20s",
        pool={"query_wait_timeout": "15s"},
        logging={"level": "log"},
    )
    settings.update(overrides)
    # The scripts use libpq's password sources; pgrelay never hands them health_check.password.
    return pgrelay(env={"PGPASSWORD": "postgres", "PGBIN": str(PGBIN)}, **settings)


def responsive(r, timeout=3.0):
    try:
        query(r.port, "show pool_version", timeout=timeout)
        return True
    except (OSError, pgwire.PgError, pgwire.Timeout, pgwire.Closed):
        return False


@pytest.fixture
def e2e_relay(pgrelay):
    """Factory: e2e_relay(cluster, workdir, **relay_for options) -> Relay. At teardown (before
    the pgrelay fixture's own checks), a pgrelay that no longer answers is killed with SIGKILL,
    so that a wedged process neither eats the CPU of the next tests nor adds a teardown error to
    the test's own failure. Tests assert responsive(r) themselves."""
    started = []

    def factory(c, workdir, **kw):
        r = relay_for(pgrelay, c, workdir, **kw)
        started.append(r)
        return r

    yield factory
    for r in started:
        if r.alive() and not responsive(r):
            print(f"pgrelay on port {r.port} did not answer within 3 s: killed")
            r.kill()
            r.expected_exit = -signal.SIGKILL


def nodes(port):
    """SHOW pool_nodes through port: {node_id: row dict}."""
    return {int(r["node_id"]): r for r in query_dicts(port, "show pool_nodes")}


def history(port):
    return query_dicts(port, "show pool_failover_history")


def wait_for(pred, timeout, what, interval=0.1, relay=None):
    """Polls pred() (exceptions count as false) until it returns something truthy. On timeout the
    failure says whether pgrelay (relay) still answers."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            r = pred()
            if r:
                return r
        except (OSError, pgwire.PgError, pgwire.Timeout, pgwire.Closed) as e:
            last = e
        if time.monotonic() >= deadline:
            state = ""
            if relay is not None:
                state = ("; pgrelay still answers" if responsive(relay) else
                         "; pgrelay does NOT answer any more (SHOW pool_version, 3 s)")
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last}){state}",
                        pytrace=False)
        time.sleep(interval)


def wait_all_up(port, primary=0, timeout=20):
    return wait_for(lambda: (lambda n: n[primary]["role"] == "primary"
                             and all(r["status"] == "up" for r in n.values()) and n)(nodes(port)),
                    timeout, f"node {primary} primary and every node up")


def port_node(c, port_text):
    """Node id of a backend port reported by inet_server_port()."""
    return c.ports.index(int(port_text))


def make_table(port, name):
    query(port, f"drop table if exists {name}; create table {name}(id int primary key, w int, "
                f"at timestamptz default now())", user="app", password="app")


def writer(port, table, wid=0, **kw):
    return ClientLoop(port, lambda n: f"insert into {table}(id, w) values ({wid * 1_000_000 + n}, {wid}) "
                                      f"returning inet_server_port()", name=f"writer{wid}", **kw)


def reader(port, name="reader", **kw):
    """A session that reads from a standby (SET pgrelay.route = standby) and says which node answered."""
    return ClientLoop(port, lambda n: "select inet_server_port()", name=name,
                      setup=["SET pgrelay.route = standby"], **kw)


def readers_on(c, port, want, max_sessions=24, **kw):
    """Opens reader sessions until every node in `want` has one; returns {node: loop} (the others
    are stopped). The read node is chosen by weight at a session's first read."""
    got, spare = {}, []
    for i in range(max_sessions):
        lp = reader(port, name=f"reader{i}", **kw)
        lp.start()
        assert lp.wait_ops(1, 10), f"reader {i} got no answer: {lp.all_ops()[-3:]} {lp.login_errors[-3:]}"
        node = port_node(c, lp.ok_ops()[0].value)
        if node in want and node not in got:
            got[node] = lp
        else:
            spare.append(lp)
        if set(want) <= set(got):
            break
    stop_all(spare)
    assert set(want) <= set(got), f"no reader session landed on {set(want) - set(got)}"
    return got


def stop_node_lag(c, node):
    """Makes a standby stop receiving WAL (points it at a closed port): the other one is then the
    most advanced."""
    c.query(node, "alter system set primary_conninfo = "
                  f"'host=127.0.0.1 port=1 user=postgres application_name=node{node}'")
    c.query(node, "select pg_reload_conf()")
    deadline = time.monotonic() + 10
    while f"node{node}" in c.streaming_names(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"node{node}" not in c.streaming_names(0)


def failover_calls(workdir):
    return [x for x in calls(workdir) if x[0] == "failover"]


def summary(label, loops, t_event):
    """A line per loop for the test output (-s): sessions, failures since the event."""
    for lp in loops:
        fails = lp.failed_ops(t_event)
        print(f"{label} {lp.name}: sessions {lp.sessions}, ok {len(lp.ok_ops())}, "
              f"failed since event {len(fails)} {[f.error for f in fails[:3]]}")


def first_write_elsewhere(c, loop, t, dead=0):
    """The first write accepted after t by a node other than `dead`. (Right after kill -9 of a
    postmaster its backends live on for a few ms and may still commit: such a write is not the
    failover's doing.)"""
    return next((o for o in loop.all_ops() if o.ok and o.t0 >= t and port_node(c, o.value) != dead), None)


def pgwire_error(e):
    return f"{e.sqlstate}: {e.fields.get('M', '')}" if isinstance(e, pgwire.PgError) else type(e).__name__


def no_timeouts(loops):
    """Every request got an answer (a row or an error) before the client's own deadline."""
    for lp in loops:
        hung = [o for o in lp.all_ops() if not o.ok and o.error == "timeout"]
        hung += [e for e in lp.login_errors if e[1] == "timeout"]
        assert not hung, f"{lp.name}: no answer within {lp.op_timeout}s: {hung[:3]}"


# ---------------------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.deadline(150)
def test_kill9_primary_under_load_and_returning_old_primary(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: after kill -9 of the primary under load, writes do not resume through the same
    port (held forever, sent to the dead node, or the new primary never used), the failover script
    gets wrong arguments or a less advanced standby is promoted, sessions reading a surviving
    standby are dropped or stall, a session whose link to the old primary was idle is dropped or
    told about its backend's end, SHOW pool_nodes keeps the old picture, or the old primary, restarted as a primary, gets writes
    again (before or after an ATTACH)."""
    c = own_cluster
    r = e2e_relay(c, tmp_path)
    wait_all_up(r.port)
    # node1 stops receiving WAL: later writes reach node2 only, so node2 is the most advanced.
    stop_node_lag(c, 1)
    make_table(r.port, "fo_kill")
    rd = readers_on(c, r.port, {1, 2})
    # A session that wrote and then sits idle through the failover.
    idle = pgwire.connect(r.port, user="app", password="app", database="app", timeout=10)
    idle.scalar("insert into fo_kill(id, w) values (-1, 9) returning inet_server_port()")
    w = writer(r.port, "fo_kill")
    w.start()
    assert w.wait_ops(20, 15), w.all_ops()[-5:]
    loops = [w, *rd.values()]
    t_kill = time.monotonic()
    c.kill9(0)
    try:
        first = wait_for(lambda: first_write_elsewhere(c, w, t_kill), WRITE_RESUME_BOUND + 5,
                         "a write accepted by another node after the kill", relay=r)
        assert w.wait_ops(len(w.ok_ops()) + 20, 10)
        t_end = time.monotonic()
    finally:
        stop_all(loops)
    summary("kill -9", loops, t_kill)
    took = first.t1 - t_kill
    print(f"kill -9 -> first write through pgrelay {took * 1000:.0f} ms; read gaps "
          + ", ".join(f"node{n} {lp.max_gap(t_kill - 0.5, t_end) * 1000:.0f} ms" for n, lp in rd.items()))
    assert took < WRITE_RESUME_BOUND, f"writes resumed only after {took:.2f}s"
    # Writes after the first one on the new primary all went there, through the same port; the
    # writer lost at most the session that had a write in flight on the dead node.
    assert {port_node(c, v) for v in w.values(first.t0)} == {2}
    assert w.sessions <= 2 and all(f.error.startswith(("57P01", "08006")) for f in w.failed_ops()), \
        w.failed_ops()
    no_timeouts(loops)
    # The readers were never dropped, and their reads kept flowing.
    for n, lp in rd.items():
        assert lp.sessions == 1 and not lp.failed_ops(), (n, lp.failed_ops()[:5])
        # The session on node1 stays there; the one on node2 moves to node1 when node2 becomes
        # the primary (it asked for a standby), without an error.
        assert {port_node(c, v) for v in lp.values()} <= {n, 1}
        assert {port_node(c, v) for v in lp.values()[-5:]} == {1}
        gap = lp.max_gap(t_kill - 0.5, t_end)
        assert gap < READ_GAP_BOUND, f"reader on node{n}: no answer for {gap:.2f}s"
    # The idle session goes on, on the new primary, without an error (its old backend's goodbye,
    # FATAL 57P01 "unexpected postmaster exit", is not relayed).
    names, rows = run_simple(idle, "insert into fo_kill(id, w) values (-2, 9) returning inet_server_port()", 10)
    assert port_node(c, rows[0][0]) == 2
    idle.terminate()
    # The script ran once, with the right arguments; node2 (most advanced) was promoted.
    fo = failover_calls(tmp_path)
    assert len(fo) == 1, fo
    args, env = fo[0][1], fo[0][2]
    # %d %h %p %D %m %H %M %P %r %R %N %S
    assert args == ["0", "127.0.0.1", str(c.ports[0]), str(c.data_dirs[0]), "2", "127.0.0.1", "0",
                    "0", str(c.ports[2]), str(c.data_dirs[2]), "127.0.0.1", str(c.ports[0])], args
    assert env["PGRELAY_FAILOVER_REASON"] == "health_check"
    hist = history(r.port)
    ev = [h for h in hist if h["event"] == "failover" and h["exit_status"] != ""]
    assert ev and ev[-1]["exit_status"] == "0" and "promoted node 2" in ev[-1]["detail"], hist
    n = nodes(r.port)
    assert n[2]["role"] == "primary" and n[2]["status"] == "up", n
    assert n[0]["status"] == "down", n
    # node1 follows node2 (follow_primary.sh) and is an up standby again.
    wait_for(lambda: (lambda n: n[1]["status"] == "up" and n[1]["role"] == "standby"
                      and n[1]["replication_state"] == "streaming")(nodes(r.port)), 40,
             "node1 streaming from node2")

    # The old primary comes back as a primary: never used for writes, down until ATTACH, and
    # still not used after an ATTACH (it is a false primary).
    w2 = writer(r.port, "fo_kill", wid=1)
    w2.start()
    try:
        c.start_node(0)
        wait_for(lambda: any(h["event"] == "false_primary" and h["node_id"] == "0" for h in history(r.port)),
                 15, "false_primary event for node 0")
        time.sleep(1.5)
        assert nodes(r.port)[0]["status"] == "down"
        query(r.port, "PGRELAY ATTACH NODE 0")
        wait_for(lambda: any(h["event"] == "attach" and h["node_id"] == "0" for h in history(r.port)), 5,
                 "attach event")
        time.sleep(2.5)
        assert w2.wait_ops(len(w2.ok_ops()) + 10, 10)
    finally:
        stop_all([w2])
    n = nodes(r.port)
    assert n[0]["status"] == "down" and n[2]["role"] == "primary", n
    assert not w2.failed_ops(), w2.failed_ops()[:5]
    assert {port_node(c, v) for v in w2.values()} == {2}
    # Nothing written after the restart reached node 0.
    assert c.query(0, "select count(*) from fo_kill where w = 1", dbname="app")[0][0] == 0
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(120)
def test_sync_replication_no_acknowledged_write_lost(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: with synchronous replication a write acknowledged to the client before or
    during the primary's loss is missing on the new primary (a less advanced standby promoted, or
    an acknowledgement pgrelay made up)."""
    c = own_cluster
    c.query(0, "alter system set synchronous_standby_names = 'ANY 1 (*)'")
    c.query(0, "select pg_reload_conf()")
    wait_for(lambda: {x[0] for x in c.query(0, "select sync_state from pg_stat_replication")} == {"quorum"},
             10, "both standbys in the quorum")
    r = e2e_relay(c, tmp_path)
    wait_all_up(r.port)
    make_table(r.port, "fo_sync")
    # Writers as fast as they go: commits are in flight at the kill.
    ws = [writer(r.port, "fo_sync", wid=i, pause=0) for i in range(SYNC_WRITERS)]
    for w in ws:
        w.start()
    for w in ws:
        assert w.wait_ops(30, 15), w.all_ops()[-5:]
    t_kill = time.monotonic()
    c.kill9(0)
    try:
        firsts = [wait_for(lambda w=w: first_write_elsewhere(c, w, t_kill), WRITE_RESUME_BOUND + 5,
                           f"{w.name}: a write after the kill", relay=r) for w in ws]
        for w in ws:
            assert w.wait_ops(len(w.ok_ops()) + 10, 10)
    finally:
        stop_all(ws)
    summary("sync", ws, t_kill)
    new = int(next(i for i, row in nodes(r.port).items() if row["role"] == "primary"))
    assert new in (1, 2)
    acked = {int(o.key) + w_i * 1_000_000 for w_i, w in enumerate(ws) for o in w.ok_ops()}
    around = sum(1 for w in ws for o in w.ok_ops() if t_kill - 1 <= o.t1 <= t_kill + 0.05)
    present = {int(x[0]) for x in query(r.port, "/*+ pgrelay: primary */ select id from fo_sync",
                                        user="app", password="app", timeout=10)}
    lost = sorted(acked - present)
    print(f"sync: {len(acked)} acknowledged writes ({around} in the last second before the kill), "
          f"new primary node{new}, lost {len(lost)}, "
          f"first write after {min(f.t1 for f in firsts) - t_kill:.3f}s")
    assert not lost, f"acknowledged writes missing on the new primary: {lost[:20]}"
    no_timeouts(ws)
    assert max(f.t1 for f in firsts) - t_kill < WRITE_RESUME_BOUND
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(90)
def test_standby_loss(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: kill -9 of a standby triggers a failover, stalls or drops sessions that do not
    use it, keeps routing reads to it, or SHOW pool_nodes does not show it down."""
    c = own_cluster
    r = e2e_relay(c, tmp_path)
    wait_all_up(r.port)
    make_table(r.port, "fo_standby")
    rd = readers_on(c, r.port, {1, 2})
    w = writer(r.port, "fo_standby")
    w.start()
    assert w.wait_ops(10, 15)
    loops = [w, *rd.values()]
    t_kill = time.monotonic()
    c.kill9(2)
    try:
        wait_for(lambda: nodes(r.port)[2]["status"] == "down", 10, "node2 down")
        t_down = time.monotonic() - t_kill
        # The reader that was on node2 reads from node1 now (moved, or logged in again).
        wait_for(lambda: rd[2].ok_ops() and port_node(c, rd[2].ok_ops()[-1].value) == 1, 10,
                 "the node2 reader served by node1")
        n_w = len(w.ok_ops())
        assert w.wait_ops(n_w + 20, 10)
        t_end = time.monotonic()
    finally:
        stop_all(loops)
    summary("standby loss", loops, t_kill)
    print(f"standby kill -9 -> node2 down in SHOW pool_nodes after {t_down * 1000:.0f} ms")
    no_timeouts(loops)
    # Sessions that did not use node2 never noticed.
    assert w.sessions == 1 and not w.failed_ops(), w.failed_ops()[:5]
    assert {port_node(c, v) for v in w.values()} == {0}
    assert w.max_gap(t_kill, t_end) < READ_GAP_BOUND
    assert rd[1].sessions == 1 and not rd[1].failed_ops(), rd[1].failed_ops()[:5]
    assert rd[1].max_gap(t_kill, t_end) < READ_GAP_BOUND
    # The node2 reader had its request in flight or not: dropped with 57P01/08006, or went on.
    assert all(f.error.startswith(("57P01", "08006")) for f in rd[2].failed_ops()), rd[2].failed_ops()
    n = nodes(r.port)
    assert n[0]["role"] == "primary" and n[0]["status"] == "up" and n[1]["status"] == "up", n
    assert n[2]["status"] == "down", n
    assert not failover_calls(tmp_path), failover_calls(tmp_path)
    # New sessions never land on node2.
    for lp in [reader(r.port, name=f"new{i}", pause=0) for i in range(4)]:
        lp.start()
        assert lp.wait_ops(3, 10)
        stop_all([lp])
        assert {port_node(c, v) for v in lp.values()} == {1}
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(120)
def test_frozen_primary(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: a primary that hangs (SIGSTOP: accepts TCP, never answers) is not failed over
    within its health_check.timeout plus a little, requests sent to it hang the clients past their
    own deadlines instead of getting an error when the node is detached, pgrelay itself (admin
    statements, reads on standbys) stalls behind it, or it is used again once it wakes up."""
    c = own_cluster
    r = e2e_relay(c, tmp_path, health={"timeout": "1s", "max_retries": 0})
    wait_all_up(r.port)
    make_table(r.port, "fo_frozen")
    rd = readers_on(c, r.port, {1, 2})
    w = writer(r.port, "fo_frozen", op_timeout=8.0)
    admin = ClientLoop(r.port, lambda n: "show pool_nodes", name="admin", user="postgres",
                       password="postgres", pause=0.1, op_timeout=3.0)
    loops = [w, admin, *rd.values()]
    for lp in (w, admin):
        lp.start()
    assert w.wait_ops(10, 15) and admin.wait_ops(2, 10)
    t_stop = time.monotonic()
    c.freeze(0)
    try:
        first = wait_for(lambda: first_write_elsewhere(c, w, t_stop), 20, "a write after the freeze",
                         relay=r)
        assert w.wait_ops(len(w.ok_ops()) + 10, 10)
        t_end = time.monotonic()
    finally:
        stop_all(loops)
    summary("SIGSTOP", loops, t_stop)
    took = first.t1 - t_stop
    new = port_node(c, first.value)
    survivor = 3 - new
    print(f"SIGSTOP -> first write on node{new} {took * 1000:.0f} ms; read gap on node{survivor} "
          f"{rd[survivor].max_gap(t_stop, t_end) * 1000:.0f} ms; admin gap "
          f"{admin.max_gap(t_stop, t_end) * 1000:.0f} ms")
    # timeout 1 s + up to one period before the check + the promotion (~2.4 s measured on the
    # manager alone); slack for a loaded 2-core machine under ASan.
    assert took < 1 + 6, f"writes resumed only after {took:.2f}s"
    # Nobody waited past their own deadline: the write stuck on the frozen node got an error
    # when the node was detached.
    no_timeouts(loops)
    assert all(f.error.startswith(("57P01", "08006")) for f in w.failed_ops()), w.failed_ops()
    assert not admin.failed_ops() and admin.max_gap(t_stop, t_end) < 2.5
    assert rd[survivor].sessions == 1 and not rd[survivor].failed_ops()
    assert rd[survivor].max_gap(t_stop, t_end) < READ_GAP_BOUND
    n = nodes(r.port)
    assert n[0]["status"] == "down" and n[new]["role"] == "primary", n
    # It wakes up (still a primary): never used again.
    c.thaw(0)
    wait_for(lambda: any(h["event"] == "false_primary" and h["node_id"] == "0" for h in history(r.port)),
             15, "false_primary event for the thawed node 0")
    assert port_node(c, query(r.port, "insert into fo_frozen(id, w) values (-1, 1) returning inet_server_port()",
                              user="app", password="app")[0][0]) == new
    assert nodes(r.port)[0]["status"] == "down"
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(120)
@pytest.mark.parametrize("mode", ["fails", "times_out"])
def test_failover_script_fails_then_operator_promotes(own_cluster, e2e_relay, tmp_path, mode):
    """Bug guarded: a failover_command that exits 1 or hangs past failover_command_timeout crashes
    or hangs pgrelay, stops it answering (admin, reads on standbys), loses the exit status in SHOW
    pool_failover_history, lets a write hang once the failover is over without a primary, or a
    standby promoted by hand is never found as the primary (writes never come back)."""
    c = own_cluster
    script = "echo 'cannot promote: test'; exit 1" if mode == "fails" else "sleep 30 & sleep 30; exit 0"
    r = e2e_relay(c, tmp_path, failover=script, failover_command_timeout="1s",
                  search_primary_node_timeout="2s")
    wait_all_up(r.port)
    make_table(r.port, "fo_script")
    rd = readers_on(c, r.port, {1, 2})
    admin = ClientLoop(r.port, lambda n: "show pool_nodes", name="admin", user="postgres",
                       password="postgres", pause=0.1, op_timeout=3.0)
    admin.start()
    loops = [admin, *rd.values()]
    t_kill = time.monotonic()
    c.kill9(0)
    try:
        ev = wait_for(lambda: [h for h in history(r.port) if h["event"] == "failover" and h["exit_status"]],
                      10, "the failover command's end in the history", relay=r)[-1]
        if mode == "fails":
            assert ev["exit_status"] == "1" and ev["detail"] == "cannot promote: test", ev
        else:
            assert ev["exit_status"] == str(128 + signal.SIGTERM) and "timed out" in ev["detail"], ev
            assert 900 <= int(ev["duration_ms"]) < 4000, ev
        wait_for(lambda: any(h["event"] == "primary_not_found" for h in history(r.port)), 10,
                 "primary_not_found", relay=r)
        # No primary and no failover under way: a write fails at once (08006), it does not hang.
        n = nodes(r.port)
        assert n[0]["status"] == "down" and all(row["role"] != "primary" for row in n.values()), n
        t0 = time.monotonic()
        with pytest.raises((pgwire.PgError, pgwire.Timeout)) as e:
            query(r.port, "insert into fo_script(id, w) values (1, 0)", user="app", password="app", timeout=10)
        refused = time.monotonic() - t0
        assert isinstance(e.value, pgwire.PgError) and e.value.sqlstate == "08006", pgwire_error(e.value)
        assert refused < 2.0, refused
        # The operator promotes node1 by hand: found as the primary, writes work again.
        t_promote = time.monotonic()
        c.pg_ctl(1, "promote", "-w")
        wait_for(lambda: nodes(r.port)[1]["role"] == "primary", 15, "node1 found as the primary", relay=r)
        found = time.monotonic() - t_promote
        v = query(r.port, "insert into fo_script(id, w) values (2, 0) returning inet_server_port()",
                  user="app", password="app", timeout=10)
        assert port_node(c, v[0][0]) == 1
        t_end = time.monotonic()
    finally:
        stop_all(loops)
    print(f"{mode}: write without a primary refused in {refused:.2f}s; primary found {found:.2f}s "
          f"after the manual promotion")
    summary(mode, loops, t_kill)
    no_timeouts(loops)
    assert not admin.failed_ops() and admin.max_gap(t_kill, t_end) < 2.5
    # Reads on the standbys went on all along (node1's reader moves when node1 becomes primary).
    for n, lp in rd.items():
        assert lp.sessions == 1 and not lp.failed_ops(), (n, lp.failed_ops()[:5])
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(150)
def test_operator_detach_attach_promote(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: PGRELAY DETACH/ATTACH/PROMOTE NODE through SQL do not work, are allowed to a
    user outside admin_users, a detached standby keeps getting reads, or a switchover does not
    move writes to the promoted node through the same port (or loses the old primary)."""
    c = own_cluster
    r = e2e_relay(c, tmp_path)
    wait_all_up(r.port)
    make_table(r.port, "fo_admin")
    for cmd in ("DETACH NODE 1", "ATTACH NODE 1", "PROMOTE NODE 1"):
        with pytest.raises(pgwire.PgError) as e:
            query(r.port, f"PGRELAY {cmd}", user="app", password="app")
        assert e.value.sqlstate == "42501", (cmd, e.value)
    assert not any(h["event"] in ("detach", "promote", "attach") for h in history(r.port))
    rd = readers_on(c, r.port, {1, 2})
    w = writer(r.port, "fo_admin")
    w.start()
    loops = [w, *rd.values()]
    try:
        # DETACH a standby: down, no reads any more; the other sessions do not notice.
        query(r.port, "PGRELAY DETACH NODE 2")
        wait_for(lambda: nodes(r.port)[2]["status"] == "down", 5, "node2 down")
        wait_for(lambda: port_node(c, rd[2].ok_ops()[-1].value) == 1, 10, "node2 reader on node1")
        t_det = time.monotonic()
        time.sleep(1)
        assert {port_node(c, v) for v in rd[2].values(t_det)} == {1}
        assert w.sessions == 1 and rd[1].sessions == 1 and not w.failed_ops() and not rd[1].failed_ops()
        # ATTACH it again: up after a check, reads may go there again.
        query(r.port, "PGRELAY ATTACH NODE 2")
        wait_for(lambda: nodes(r.port)[2]["status"] == "up", 10, "node2 up again")
        # PROMOTE node1 SWITCHOVER: writes move there through the same port, the others follow.
        t_sw = time.monotonic()
        query(r.port, "PGRELAY PROMOTE NODE 1 SWITCHOVER")
        first = wait_for(lambda: first_write_elsewhere(c, w, t_sw), WRITE_RESUME_BOUND + 10,
                         "a write on the promoted node", relay=r)
        took = first.t1 - t_sw
        assert w.wait_ops(len(w.ok_ops()) + 10, 10)
    finally:
        stop_all(loops)
    summary("switchover", loops, t_sw)
    print(f"PROMOTE NODE 1 -> first write on node1 {took * 1000:.0f} ms")
    no_timeouts(loops)
    assert port_node(c, first.value) == 1 and took < WRITE_RESUME_BOUND
    assert {port_node(c, v) for v in w.values(first.t0)} == {1}
    # Readers went through the switchover without an error (node1's moves to node2: it asked
    # for a standby).
    for n, lp in rd.items():
        assert lp.sessions == 1 and not lp.failed_ops(), (n, lp.failed_ops()[:5])
        assert port_node(c, lp.values()[-1]) == 2
    fo = failover_calls(tmp_path)
    assert len(fo) == 1 and fo[0][1][0] == "0" and fo[0][1][4] == "1", fo
    assert fo[0][2]["PGRELAY_FAILOVER_REASON"] == "switchover"
    # The old primary follows node1 and comes back as an up standby.
    wait_for(lambda: (lambda n: n[0]["status"] == "up" and n[0]["role"] == "standby"
                      and n[1]["role"] == "primary" and n[2]["status"] == "up")(nodes(r.port)), 60,
             "old primary back as a standby of node1")
    hist = [h["event"] for h in history(r.port)]
    assert "promote" in hist and "detach" in hist and "attach" in hist, hist
    assert responsive(r), "pgrelay no longer answers"


# ---------------------------------------------------------------------------------------------------------
# Waiting for a primary. Non-destructive: the session cluster, whose primary pgrelay detaches
# (PGRELAY DETACH NODE 0) while a recorder stands in for the failover command (it sleeps, then
# fails: nothing is promoted) and attaches again; PostgreSQL itself is not touched.


def detach_primary(r):
    query(r.port, "PGRELAY DETACH NODE 0")
    wait_for(lambda: all(row["role"] != "primary" for row in nodes(r.port).values()), 5,
             "no primary (node 0 detached)", relay=r)


def attach_primary(r):
    if responsive(r):
        if nodes(r.port)[0]["status"] == "down":
            query(r.port, "PGRELAY ATTACH NODE 0")
        wait_all_up(r.port)


@pytest.mark.deadline(60)
def test_write_waits_query_wait_timeout_during_failover_then_fails_at_once(cluster, e2e_relay, tmp_path):
    """Bug guarded: while a failover runs, a write waits past pool.query_wait_timeout (the wait
    starting over at every new cluster view, ~every 100 ms) instead of failing with 08006 when it
    expires; once the failover is over without a primary, a write hangs instead of failing at once."""
    r = e2e_relay(cluster, tmp_path, failover="sleep 4; exit 1", follow="", failover_command_timeout="10s",
                  search_primary_node_timeout="1s", pool={"query_wait_timeout": "1500ms"})
    wait_all_up(r.port)
    make_table(r.port, "fo_wait")
    detach_primary(r)
    try:
        # The failover command runs (4 s): the write waits query_wait_timeout, then 08006.
        t0 = time.monotonic()
        with pytest.raises((pgwire.PgError, pgwire.Timeout)) as e:
            query(r.port, "insert into fo_wait(id, w) values (1, 0)", user="app", password="app", timeout=10)
        waited = time.monotonic() - t0
        print(f"write during the failover: {pgwire_error(e.value)} after {waited:.2f}s")
        assert isinstance(e.value, pgwire.PgError) and e.value.sqlstate == "08006", pgwire_error(e.value)
        assert 1.2 < waited < 1.5 + 2, waited
        assert not any(h["event"] in ("failover", "primary_not_found") for h in history(r.port)), \
            f"the failover was over already: {history(r.port)}"
        # Reads still work meanwhile.
        assert query(r.port, "select 1", user="app", password="app") == [["1"]]
        # The failover ends without a primary: a write fails at once.
        wait_for(lambda: any(h["event"] == "primary_not_found" for h in history(r.port)), 10,
                 "primary_not_found", relay=r)
        t0 = time.monotonic()
        with pytest.raises((pgwire.PgError, pgwire.Timeout)) as e:
            query(r.port, "insert into fo_wait(id, w) values (2, 0)", user="app", password="app", timeout=10)
        waited = time.monotonic() - t0
        print(f"write after the failover, no primary: {pgwire_error(e.value)} after {waited:.2f}s")
        assert isinstance(e.value, pgwire.PgError) and e.value.sqlstate == "08006", pgwire_error(e.value)
        assert waited < 1.0, waited
    finally:
        attach_primary(r)
    query(r.port, "drop table fo_wait", user="app", password="app")
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(60)
def test_clients_waiting_for_a_primary_do_not_wedge_pgrelay(cluster, e2e_relay, tmp_path):
    """Bug guarded: with several clients waiting for a primary, a new cluster view (they come every
    ~100 ms) makes the worker wake them over and over in one loop: pgrelay spins, answers nobody
    (not even SHOW), ignores SIGTERM, and the clients are never served when the primary returns."""
    r = e2e_relay(cluster, tmp_path, failover="sleep 3; exit 1", follow="", failover_command_timeout="10s",
                  search_primary_node_timeout="10s", pool={"query_wait_timeout": "20s"})
    wait_all_up(r.port)
    make_table(r.port, "fo_wait3")
    detach_primary(r)
    ws = [writer(r.port, "fo_wait3", wid=i, op_timeout=15.0, pause=0.05) for i in range(3)]
    try:
        for w in ws:
            w.start()
        time.sleep(1.0)  # several views go by while the three writes wait
        assert responsive(r), "pgrelay stopped answering while 3 clients waited for a primary"
        assert not any(w.all_ops() for w in ws), "a write was answered without a primary"
        # node 0 comes back: the search after the (failing) command finds it, the writes go there.
        t_attach = time.monotonic()
        query(r.port, "PGRELAY ATTACH NODE 0")
        for w in ws:
            wait_for(lambda w=w: w.ok_ops(), 10, f"{w.name} served once node 0 is back", relay=r)
        print(f"3 waiting writes served {max(w.ok_ops()[0].t1 for w in ws) - t_attach:.2f}s after ATTACH")
    finally:
        stop_all(ws)
        attach_primary(r)
    no_timeouts(ws)
    assert all(not w.failed_ops() for w in ws), [w.failed_ops()[:2] for w in ws]
    assert all(port_node(cluster, w.ok_ops()[0].value) == 0 for w in ws)
    query(r.port, "drop table fo_wait3", user="app", password="app")
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(60)
def test_idle_link_lost_session_goes_on_without_error(cluster, e2e_relay, tmp_path):
    """Bug guarded: when the backend behind a session's idle link says goodbye (FATAL 57P01 from
    pg_terminate_backend, a fast shutdown, or a backend orphaned by kill -9 of its postmaster) and
    closes, the session goes on elsewhere (doc/routing.md) but pgrelay relays that FATAL to the
    client: the client's next statement then fails with it although it ran (a write reported as
    failed, then retried: a duplicate)."""
    r = e2e_relay(cluster, tmp_path, failover="", follow="")
    wait_all_up(r.port)
    make_table(r.port, "fo_idle")
    conn = pgwire.connect(r.port, user="app", password="app", database="app", timeout=10)
    try:
        assert port_node(cluster, conn.scalar("insert into fo_idle(id, w) values (1, 0) "
                                              "returning inet_server_port()")) == 0
        pid = conn.scalar("/*+ pgrelay: primary */ select pg_backend_pid()")
        with cluster.connect(0, dbname="postgres") as d:
            d.execute(f"select pg_terminate_backend({pid})")
        time.sleep(0.5)  # the backend's FATAL and EOF reach pgrelay while the link is idle
        conn.send(pgwire.query("insert into fo_idle(id, w) values (2, 0) returning inet_server_port()"))
        cyc = conn.read_cycle(10)
        with cluster.connect(0) as d:
            ran = d.execute("select count(*) from fo_idle where id = 2").fetchone()[0]
        assert ran == 1, "the INSERT did not run"
        assert not cyc.errors, f"the client was told {[e.get('C') + ' ' + e.get('M', '') for e in cyc.errors]} " \
                               "although its INSERT ran"
        assert conn.scalar("select 1") == "1"
    finally:
        conn.terminate()
    assert nodes(r.port)[0]["status"] == "up"
    query(r.port, "drop table fo_idle", user="app", password="app")
    assert responsive(r), "pgrelay no longer answers"


def relay_reading_on_node2(cluster, e2e_relay, tmp_path, **settings):
    """A pgrelay whose reads go to node 2 only (the other nodes have no weight), all nodes up."""
    backends = [{"host": "127.0.0.1", "port": cluster.ports[i], "weight": 1.0 if i == 2 else 0.0,
                 "application_name": f"node{i}"} for i in range(3)]
    r = e2e_relay(cluster, tmp_path, failover="", follow="", backends=backends, **settings)
    wait_all_up(r.port)
    return r


def session_ended_57p01(conn, t0, why):
    """Reads conn until pgrelay closes it; asserts one 57P01 whose message has why. Seconds since t0."""
    msgs = conn.read_all_until_close(timeout=20)
    took = time.monotonic() - t0
    errors = [pgwire.parse_error_fields(m.payload) for m in msgs if m.type == "E"]
    assert [e["C"] for e in errors] == ["57P01"], errors
    assert why in errors[0]["M"], errors
    return took


def read_on_node2(port, cluster):
    """A session whose reads go to node 2 (the only standby with a weight)."""
    conn = pgwire.connect(port, user="app", password="app", database="app", timeout=10)
    assert port_node(cluster, conn.scalar("select inet_server_port()")) == 2
    return conn


@pytest.mark.deadline(90)
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_detach_lets_reads_in_flight_finish(cluster, e2e_relay, tmp_path, mode):
    """Bug guarded: PGRELAY DETACH NODE of a standby that still answers cut the statements running
    there: their clients got 57P01 in the middle of a read (and a session that could have moved on
    ended). The read now finishes and the session goes on elsewhere; a read that outlasts
    shutdown_timeout is still ended (57P01, and cancelled on the standby)."""
    r = relay_reading_on_node2(cluster, e2e_relay, tmp_path, shutdown_timeout="3s",
                               pool={"mode": mode, "query_wait_timeout": "15s"})
    conn = read_on_node2(r.port, cluster)
    try:
        conn.send(pgwire.query("select inet_server_port() from pg_sleep(1.5)"))
        time.sleep(0.4)  # the read runs on node 2
        query(r.port, "PGRELAY DETACH NODE 2")
        assert nodes(r.port)[2]["status"] == "down"
        cyc = conn.read_cycle(10)
        assert not cyc.errors, cyc.errors
        assert port_node(cluster, cyc.results[0].text_rows()[0][0]) == 2
        # The same session goes on, elsewhere.
        assert port_node(cluster, conn.scalar("select inet_server_port()")) != 2
        assert conn.scalar("select 1") == "1"
    finally:
        conn.terminate()
    # A read that does not end within shutdown_timeout is ended, and cancelled on the standby.
    query(r.port, "PGRELAY ATTACH NODE 2")
    wait_all_up(r.port)
    conn = read_on_node2(r.port, cluster)
    try:
        conn.send(pgwire.query("select pg_sleep(60) /* drained */"))
        time.sleep(0.4)
        t0 = time.monotonic()
        query(r.port, "PGRELAY DETACH NODE 2")
        took = session_ended_57p01(conn, t0, "shutdown_timeout")
        print(f"{mode}: a long read on a detached standby ended after {took:.2f}s")
        assert 2.5 < took < 6, took
    finally:
        conn.terminate()

    def still_running():
        with cluster.connect(2, dbname="postgres") as d:
            return d.execute("select count(*) from pg_stat_activity "
                             "where query like '%drained */'").fetchone()[0]
    wait_for(lambda: still_running() == 0, 5, "the long read cancelled on node 2", relay=r)
    query(r.port, "PGRELAY ATTACH NODE 2")
    wait_all_up(r.port)
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(90)
def test_drain_ends_when_the_detached_standby_stops_answering(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: a standby detached while a read ran there, then frozen (SIGSTOP), kept that
    read's client waiting until shutdown_timeout (60 s here): the drain must end, with 57P01, as
    soon as the node stops answering health checks."""
    c = own_cluster
    r = relay_reading_on_node2(c, e2e_relay, tmp_path, shutdown_timeout="60s")
    conn = read_on_node2(r.port, c)
    try:
        conn.send(pgwire.query("select pg_sleep(20)"))
        time.sleep(0.4)
        query(r.port, "PGRELAY DETACH NODE 2")
        time.sleep(0.5)
        t0 = time.monotonic()
        c.freeze(2)
        took = session_ended_57p01(conn, t0, "stopped answering")
        print(f"a drained read on a frozen standby ended {took:.2f}s after the freeze")
        assert took < 10, took
    finally:
        conn.terminate()
        c.thaw(2)
    assert responsive(r), "pgrelay no longer answers"


@pytest.mark.deadline(60)
def test_answer_then_goodbye_in_one_read_reaches_the_client(cluster, e2e_relay, tmp_path):
    """Bug guarded: a backend answers a statement and is terminated right after (pg_terminate_backend,
    a fast shutdown, a dying primary's orphaned backend): when the answer and the FATAL + EOF arrive
    in one read, pgrelay treats the link as idle and drops it with the answer unsent; the client
    waits forever for the answer of a statement that ran."""
    r = e2e_relay(cluster, tmp_path, failover="", follow="")
    wait_all_up(r.port)
    make_table(r.port, "fo_race")
    ws = [writer(r.port, "fo_race", wid=i, pause=0, op_timeout=3.0) for i in range(2)]
    for w in ws:
        w.start()
    terminated = 0
    try:
        with cluster.connect(0) as d:
            t_end = time.monotonic() + 6
            while time.monotonic() < t_end:
                terminated += len(d.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where datname = 'app' "
                    "and usename = 'app' and backend_type = 'client backend' and pid <> pg_backend_pid()").fetchall())
                time.sleep(0.15)
    finally:
        stop_all(ws)
    hung = [(w.name, o) for w in ws for o in w.failed_ops() if o.error == "timeout"]
    with cluster.connect(0) as d:
        ran = {x[0] for x in d.execute("select id from fo_race").fetchall()}
    hung_ran = sum(1 for name, o in hung if int(name[-1]) * 1_000_000 + o.key in ran)
    print(f"{terminated} backends terminated; {sum(len(w.ok_ops()) for w in ws)} INSERTs answered; "
          f"{len(hung)} never answered within 3 s ({hung_ran} of them ran)")
    assert terminated >= 10
    assert not hung, f"{len(hung)} statements never answered ({hung_ran} of them ran): {hung[:3]}"
    # Every other failure is the session's own end, told with 57P01.
    assert all(o.error.startswith("57P01") for w in ws for o in w.failed_ops()), \
        [o.error for w in ws for o in w.failed_ops()][:5]
    query(r.port, "drop table fo_race", user="app", password="app")
    assert responsive(r), "pgrelay no longer answers"
