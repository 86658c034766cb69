"""Helpers shared by the read/write splitting tests (test_routing.py, test_routing_lag.py,
test_listeners.py).

Where did a statement run?
- `PROBE` (`select inet_server_port()`) returns the port of the node that ran it; `node_of()` maps a
  port to a node id (node ids follow the order of `backends`; conftest writes the cluster's nodes in
  order, so node 0 is the primary and nodes 1 and 2 are the standbys). Statements that write carry
  `inet_server_port()` in a RETURNING list or next to the function under test.
- `Tagged` / `ran_on()`: for a statement that returns nothing telling (EXPLAIN, a parse error, DDL),
  append a unique comment and look it up in pg_stat_activity.query on every node over direct
  superuser connections: a backend keeps showing its last statement while it is idle.

Starting a splitting pgrelay:
- `backends_for(cluster, weights)`: the `backends` list with per-node weights.
- `routing_relay(pgrelay, cluster, weights=(0, 1, 1), **groups)`: pgrelay with those backends and
  the given groups (`load_balance={...}`, `pool={...}`, `listeners=[...]`), waiting until its health
  check knows every node (`wait_nodes_known`).

Admin SQL: `pool_nodes(conn)` (SHOW pool_nodes as a list of dicts), `explain_route(conn, sql)`.

Replication: `wait_replayed(cluster)` waits until both standbys replayed the primary's current WAL
position; `apply_delay(cluster, node, delay)` sets recovery_min_apply_delay on a standby (ALTER
SYSTEM + reload) and returns a callable that resets it; `private_cluster()` starts a cluster of
our own on free ports (for tests that make standbys lag).

Every network call has a deadline: psycopg connects with connect_timeout, polls are bounded.
"""

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from conftest import CLUSTER_SH, DIRECT, Cluster, connect, free_port_range

PROBE = "select inet_server_port()"
PRIMARY = 0
STANDBYS = (1, 2)

POOL_NODES_COLUMNS = ["node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role", "pg_role",
                      "select_cnt", "load_balance_node", "replication_delay", "replication_state",
                      "replication_sync_state", "last_status_change"]

_tag_counter = itertools.count(1)


# ---------------------------------------------------------------------------------------------------------
# Where a statement ran.


def node_of(cluster, port):
    """Node id of a backend port (as returned by inet_server_port())."""
    port = int(port)
    if port not in cluster.ports:
        raise AssertionError(f"port {port} is not a node of the cluster {cluster.ports}")
    return cluster.ports.index(port)


def where(conn, cluster, sql=PROBE, params=None, **kw):
    """Run sql (its first column is a port) and return the node id that ran it."""
    row = conn.execute(sql, params, **kw).fetchone()
    return node_of(cluster, row[0])


def where_many(conn, cluster, n, sql=PROBE):
    """Counter of node ids over n runs of sql on one connection."""
    return Counter(where(conn, cluster, sql) for _ in range(n))


class Tagged:
    """A unique marker appended to a statement as a comment, to find it in pg_stat_activity."""

    def __init__(self, name="stmt"):
        self.tag = f"rt-{name}-{os.getpid()}-{next(_tag_counter)}-{time.monotonic_ns() % 10**9}"

    def __call__(self, sql):
        return f"{sql} /* {self.tag} */"


def ran_on(cluster, tag, nodes=(0, 1, 2)):
    """Set of node ids on which some client backend's current or last statement contains tag."""
    found = set()
    for n in nodes:
        with cluster.connect(n, dbname="postgres") as d:
            hit = d.execute("select count(*) from pg_stat_activity where pid <> pg_backend_pid() "
                            "and strpos(query, %s) > 0", (tag,)).fetchone()[0]
        if hit:
            found.add(n)
    return found


class ActivityWatch:
    """Background poll of pg_stat_activity on some nodes (direct superuser connections) while a load
    runs: `max[node]` is the most client backends matching `condition` (an SQL boolean over
    pg_stat_activity) seen at once. For loads whose backends are reset afterwards (the pool's
    DISCARD ALL overwrites pg_stat_activity.query), so a look after the run would see nothing."""

    def __init__(self, cluster, nodes, condition, interval=0.05):
        self.cluster = cluster
        self.nodes = tuple(nodes)
        self.sql = ("select count(*) from pg_stat_activity where backend_type = 'client backend' "
                    "and pid <> pg_backend_pid() and (" + condition + ")")
        self.interval = interval
        self.max = {n: 0 for n in self.nodes}
        self.error = None
        self._stop = threading.Event()
        self._thread = None

    def _run(self, conns):
        try:
            while not self._stop.is_set():
                for n, c in conns.items():
                    self.max[n] = max(self.max[n], c.execute(self.sql).fetchone()[0])
                self._stop.wait(self.interval)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            for c in conns.values():
                c.close()

    def __enter__(self):
        conns = {n: self.cluster.connect(n, dbname="postgres") for n in self.nodes}
        self._thread = threading.Thread(target=self._run, args=(conns,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


# ---------------------------------------------------------------------------------------------------------
# Starting pgrelay with weights and routing groups.


def backends_for(cluster, weights=(1, 1, 1), app_names=False):
    """The `backends` list for cluster with per-node weights; app_names also sets each standby's
    application_name as scripts/cluster.sh names it in primary_conninfo (node1, node2), which lets
    pgrelay find it in pg_stat_replication."""
    out = [{"host": "127.0.0.1", "port": cluster.ports[i], "weight": float(w),
            "data_directory": str(cluster.data_dirs[i])} for i, w in enumerate(weights)]
    if app_names:
        for i in STANDBYS:
            out[i]["application_name"] = f"node{i}"
    return out


def routing_relay(pgrelay, cluster, weights=(0, 1, 1), wait=True, **overrides):
    """pgrelay over `cluster` with node weights `weights` and the given config groups. With
    weight 0 on the primary (the default here) every read that may be balanced goes to a standby,
    so a read seen on node 0 was routed there on purpose."""
    r = pgrelay(backends=backends_for(cluster, weights), **overrides)
    if wait:
        wait_nodes_known(r)
    return r


@contextlib.contextmanager
def module_relay(cluster, workdir, weights=(0, 1, 1), **overrides):
    """A pgrelay shared by the tests of one module (the `pgrelay` factory is per test): same config
    writing and start as the factory, and the same teardown checks (exit status, sanitizer
    reports), reported as an error of the module's last test."""
    import pytest

    from conftest import USERS, Relay, default_settings, free_port, merge, pgrelay_bin
    if DIRECT:
        pytest.skip("needs pgrelay itself")
    if not pgrelay_bin().exists():
        if os.environ.get("PGRELAY_BIN"):
            pytest.fail(f"PGRELAY_BIN={pgrelay_bin()} does not exist", pytrace=False)
        pytest.skip(f"pgrelay binary {pgrelay_bin()} not built")
    settings = merge(default_settings(cluster, free_port()), overrides)
    settings["backends"] = backends_for(cluster, weights)
    r = Relay(workdir, settings, dict(USERS), None, None, None, None)
    r.start()
    try:
        wait_nodes_known(r)
        yield r
    finally:
        problems = r.shutdown_and_check()
        if problems:
            pytest.fail("\n".join(problems) + f"\n--- pgrelay log tail ({r.log_path}) ---\n{r.log_tail(40)}",
                        pytrace=False)


def pool_nodes(conn):
    """SHOW pool_nodes as a list of dicts (column name -> text value)."""
    cur = conn.execute("show pool_nodes")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def explain_route(conn, sql):
    """PGRELAY EXPLAIN ROUTE sql -> (column names, rows)."""
    cur = conn.execute("pgrelay explain route " + sql)
    return [d.name for d in cur.description], cur.fetchall()


def wait_nodes_known(relay, timeout=10.0, user="app", password="app"):
    """Wait until SHOW pool_nodes reports every node up with a known role (the health check ran).
    Without SHOW pool_nodes (an older pgrelay, or DIRECT mode), wait out two health-check periods
    instead. Returns the last pool_nodes rows ([] when unavailable)."""
    if getattr(relay, "proc", None) is None:  # DirectRelay
        return []
    deadline = time.monotonic() + timeout
    rows = []
    while True:
        try:
            with connect(relay.port, user=user, password=password) as c:
                rows = pool_nodes(c)
        except psycopg.Error:
            time.sleep(2.2)  # SHOW pool_nodes unsupported: two 1 s health-check periods
            return []
        if rows and all(r.get("status") == "up" and r.get("role") in ("primary", "standby") for r in rows):
            return rows
        if time.monotonic() >= deadline:
            return rows
        time.sleep(0.1)


def session_nodes(port, cluster, n, threads=4, sql=PROBE, **connkw):
    """Open n sessions (threads at a time), run sql once in each; Counter of the node ids."""
    lock = threading.Lock()
    counts = Counter()

    def one(_):
        with connect(port, **connkw) as c:
            node = where(c, cluster, sql)
        with lock:
            counts[node] += 1

    with ThreadPoolExecutor(max_workers=threads) as ex:
        list(ex.map(one, range(n)))  # re-raises the first failure
    return counts


def shares(counts, n):
    return {k: round(v / n, 3) for k, v in sorted(counts.items())}


# ---------------------------------------------------------------------------------------------------------
# Replication.


def wait_replayed(cluster, nodes=STANDBYS, timeout=20.0):
    """Wait until each standby in nodes replayed the primary's current WAL position."""
    with cluster.connect(0, dbname="postgres") as p:
        lsn = p.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    for n in nodes:
        with cluster.connect(n, dbname="postgres") as s:
            while True:
                ok = s.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
                if ok:
                    break
                if time.monotonic() >= deadline:
                    raise AssertionError(f"node {n} did not replay {lsn} within {timeout}s")
                time.sleep(0.05)


def apply_delay(cluster, node, delay):
    """Set recovery_min_apply_delay on a standby (ALTER SYSTEM + reload, effective at once) and
    return a function that resets it. Call the reset in a finally."""
    with cluster.connect(node, dbname="postgres") as s:
        s.execute(f"alter system set recovery_min_apply_delay = '{delay}'")
        s.execute("select pg_reload_conf()")
        deadline = time.monotonic() + 5
        while s.execute("show recovery_min_apply_delay").fetchone()[0] in ("0", "0ms") and \
                time.monotonic() < deadline:
            time.sleep(0.05)

    def reset():
        with cluster.connect(node, dbname="postgres") as s2:
            s2.execute("alter system reset recovery_min_apply_delay")
            s2.execute("select pg_reload_conf()")

    return reset


@contextlib.contextmanager
def delayed(cluster, nodes, delay):
    """recovery_min_apply_delay = delay on the given standbys for the block; reset afterwards and
    wait until they caught up again."""
    resets = []
    try:
        for n in nodes:
            resets.append(apply_delay(cluster, n, delay))
        yield
    finally:
        for r in resets:
            r()
        wait_replayed(cluster, nodes, timeout=30)


@contextlib.contextmanager
def private_cluster():
    """A primary and two standbys of our own (scripts/cluster.sh) on free ports, stopped and removed
    afterwards. For tests that make standbys lag: the shared session cluster stays untouched."""
    tmp = tempfile.mkdtemp(prefix="pgrelay-rt-", dir="/tmp")
    os.chmod(tmp, 0o755)
    base = free_port_range(3)
    c = Cluster(Path(tmp) / "cluster", base, owned=True)
    try:
        r = subprocess.run(["bash", str(CLUSTER_SH), "start", str(c.dir), str(base)], timeout=180,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/cluster.sh start failed:\n{r.stdout}")
        yield c
    finally:
        c.stop()
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


def wait_pool_delay(relay, node, pred, timeout=15.0):
    """Poll SHOW pool_nodes until pred(replication_delay of node as int) holds. Returns True when
    it did, False on timeout, None when pgrelay has no SHOW pool_nodes (then it waited a few
    health-check periods)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(relay.port) as c:
                rows = pool_nodes(c)
        except psycopg.Error:
            time.sleep(3.5)
            return None
        try:
            if pred(int(float(rows[node]["replication_delay"]))):
                return True
        except (ValueError, TypeError, KeyError, IndexError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


