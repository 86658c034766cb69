"""The health probe and health thread against the live cluster, a free port and a frozen socket.

The health module is not wired into pgrelay yet, so these tests drive it through a small C program,
tests/integration/health_probe_main.c, compiled here against the libpgrelay.a next to $PGRELAY_BIN
(with the same sanitizers as that build). Each output line of the driver is one JSON document.
"""

import json
import socket
import subprocess
import threading
import time

import pytest

from conftest import DIRECT, REPO
from driver_build import compile_driver

DRIVER_SRC = REPO / "tests" / "integration" / "health_probe_main.c"
USER, PASSWORD, DB = "postgres", "postgres", "postgres"

pytestmark = pytest.mark.skipif(DIRECT, reason="tests pgrelay's own health module")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    return compile_driver(DRIVER_SRC, tmp_path_factory.mktemp("health") / "health_probe_main")


def probe(driver, port, timeout_ms=3000, host="127.0.0.1", user=USER, password=PASSWORD, db=DB):
    t0 = time.monotonic()
    r = subprocess.run([str(driver), "probe", str(timeout_ms), user, password, db, f"{host}:{port}"],
                       capture_output=True, text=True, timeout=timeout_ms / 1000 + 10)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    # The driver's own clock around health_probe(): process start-up (slow under ASan on a
    # loaded machine) is not the probe's time. The wall clock bounds the whole run loosely.
    assert elapsed < timeout_ms / 1000 + 5
    return doc["observation"], doc["elapsed_ms"] / 1000


def run_thread(driver, targets, run_ms, period_ms, timeout_ms, max_retries, retry_delay_ms,
               on_line=None):
    """Runs the health thread; returns (snapshots, stop_ms). on_line(snapshot) may act mid-run."""
    args = [str(driver), "thread", str(run_ms), str(period_ms), str(timeout_ms), str(max_retries),
            str(retry_delay_ms), USER, PASSWORD, DB, *[f"{h}:{p}" for h, p in targets]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    snaps = []
    try:
        for line in proc.stdout:
            snaps.append(json.loads(line))
            if on_line is not None:
                on_line(snaps[-1])
        proc.wait(timeout=run_ms / 1000 + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "runtime error" not in err and "Sanitizer" not in err, err
    stop_ms = int(err.split("stop_ms=")[1].split()[0])
    return snaps, stop_ms


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class FrozenServer:
    """Accepts TCP connections and never answers (a frozen primary); keeps them open."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                continue

    def close(self):
        self.stopping = True
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def frozen():
    f = FrozenServer()
    yield f
    f.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_replication(cluster, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cluster.connect(dbname="postgres") as c:
            names = {r[0] for r in c.execute(
                "select application_name from pg_stat_replication where state = 'streaming'")}
        if {"node1", "node2"} <= names:
            return
        time.sleep(0.2)
    pytest.fail("standbys node1/node2 are not streaming")


def test_probe_primary(driver, cluster):
    """Bug guarded: the primary is misreported (in recovery, no WAL position, no standbys), or the
    standbys' pg_stat_replication rows are lost or mangled on the way out of the single query."""
    wait_replication(cluster)
    o, _ = probe(driver, cluster.ports[0])
    assert o["reachable"] is True and o["status"] == "ok", o
    assert o["in_recovery"] is False
    assert o["current_lsn"] is not None and lsn(o["current_lsn"]) > 0
    assert o["replay_lsn"] is None and o["receive_lsn"] is None
    assert o["replay_delay_s"] is None
    assert o["error"] == ""
    rows = {r["application_name"]: r for r in o["replicas"]}
    assert {"node1", "node2"} <= set(rows), o["replicas"]
    for name in ("node1", "node2"):
        assert rows[name]["state"] == "streaming"
        assert rows[name]["sync_state"] in ("async", "sync", "potential", "quorum")
        assert rows[name]["replay_lsn"] is not None
        assert lsn(rows[name]["replay_lsn"]) <= lsn(o["current_lsn"])
    assert o["replicas_truncated"] is False
    assert 0 <= o["latency_ms"] < 3000


@pytest.mark.parametrize("node", [1, 2])
def test_probe_standby(driver, cluster, node):
    """Bug guarded: pg_current_wal_lsn() raises on a standby and the whole probe fails, or the
    replay position is not reported."""
    wait_replication(cluster)
    with cluster.connect(dbname="postgres") as c:
        # A commit for the standby to replay, so the replay delay is known. Such a commit
        # (no other WAL) is flushed lazily: take the insert position, not the write position.
        c.execute("select txid_current()")
        primary_lsn = lsn(c.execute("select pg_current_wal_insert_lsn()::text").fetchone()[0])
        c.execute("select pg_switch_wal()")
    deadline = time.monotonic() + 15
    while True:
        o, _ = probe(driver, cluster.ports[node])
        assert o["reachable"] is True and o["status"] == "ok", o
        caught_up = lsn(o["replay_lsn"]) >= primary_lsn and o["replay_delay_s"] is not None
        if caught_up or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert o["in_recovery"] is True
    assert o["current_lsn"] is None
    assert lsn(o["replay_lsn"]) >= primary_lsn
    assert o["receive_lsn"] is not None and lsn(o["receive_lsn"]) >= lsn(o["replay_lsn"]) - 0
    assert o["replay_delay_s"] is not None and o["replay_delay_s"] >= 0
    assert o["replicas"] == []


def test_probe_free_port_fails_fast(driver):
    """Bug guarded: a refused connection is only reported when the timeout expires."""
    o, elapsed = probe(driver, free_port(), timeout_ms=5000)
    assert o["reachable"] is False and o["status"] == "connect_failed", o
    assert o["error"] != ""
    assert elapsed < 1.0


def test_probe_frozen_server_bounded(driver, frozen):
    """Bug guarded: the probe blocks past its deadline against a host that accepts TCP and never
    answers (a frozen primary): libpq's own connect_timeout is not used and would not be enough."""
    o, elapsed = probe(driver, frozen.port, timeout_ms=1000)
    assert o["status"] == "timeout" and o["timed_out_connecting"] is True, o
    assert 0.95 <= elapsed < 1.0 + 0.5
    assert 950 <= o["latency_ms"] < 1300
    assert len(frozen.conns) >= 1, "the probe never reached the frozen server"


def test_probe_wrong_password(driver, cluster):
    """Bug guarded: an authentication failure hangs or leaks the password into the error text."""
    o, elapsed = probe(driver, cluster.ports[0], password="not-the-password-42")
    assert o["status"] == "connect_failed", o
    assert "password" in o["error"]
    assert "not-the-password-42" not in o["error"]
    assert elapsed < 3.0


@pytest.mark.deadline(60)
def test_thread_cluster_with_dead_nodes(driver, cluster, frozen):
    """Bug guarded: a frozen or refusing node delays the observation of the healthy ones (nodes
    probed one after the other), the failure is declared before 1 + max_retries attempts, or the
    retry waits for the frozen first attempt to time out."""
    wait_replication(cluster)
    dead = free_port()
    targets = [("127.0.0.1", p) for p in cluster.ports] + [("127.0.0.1", frozen.port),
                                                             ("127.0.0.1", dead)]
    snaps, stop_ms = run_thread(driver, targets, run_ms=5500, period_ms=500, timeout_ms=2000,
                                max_retries=1, retry_delay_ms=200)
    assert snaps[0]["seq"] == 1 and all(n["obs"] is None for n in snaps[0]["nodes"])
    # Each cluster node's first answer was published as soon as its own probe ended (started at
    # once, not queued behind another node) and long before the frozen node's first attempt timed
    # out. Timings are relative to each probe's own latency so a loaded machine does not matter.
    for i in range(3):
        first = next(s for s in snaps if s["nodes"][i]["obs"])
        obs = first["nodes"][i]["obs"]
        assert obs["reachable"] is True, obs
        assert obs["in_recovery"] is (i != 0)
        assert first["t_ms"] - obs["latency_ms"] < 300, first
        assert first["t_ms"] < 2000 and first["nodes"][3]["obs"] is None, first
    # The refused node: failed after 1 + 1 attempts, i.e. about one retry delay.
    first_dead = next(s for s in snaps if s["nodes"][4]["failed"])
    assert 150 <= first_dead["t_ms"] < 1500, first_dead
    assert first_dead["nodes"][4]["consecutive_failures"] == 2
    # The frozen node: timeout + retry delay (the retry started 200 ms after the first attempt,
    # without waiting for it to time out), not timeout + retry delay + timeout.
    first_frozen = next(s for s in snaps if s["nodes"][3]["failed"])
    assert 2150 <= first_frozen["t_ms"] < 2900, first_frozen
    assert first_frozen["nodes"][3]["obs"]["status"] == "timeout"
    last = snaps[-1]
    for n in last["nodes"][:3]:
        assert n["failed"] is False and n["consecutive_failures"] == 0
        assert n["total_count"] >= 6 and n["fail_count"] == 0
        assert n["obs"]["connection_reused"] is True  # the persistent connection is kept
    assert stop_ms < 1000


@pytest.mark.deadline(60)
def test_thread_reconnects_after_backend_killed(driver, cluster):
    """Bug guarded: the kept connection dies (pg_terminate_backend, server restart, idle timeout)
    and the next probe reports the node failed instead of reconnecting within its deadline."""
    killed = []

    def on_line(s):
        n = s["nodes"][0]
        if not killed and n["obs"] and n["obs"]["reachable"] and n["success_count"] >= 2:
            with cluster.connect(dbname="postgres") as c:
                r = c.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                              "where application_name = 'pgrelay health check' "
                              "and pid <> pg_backend_pid()").fetchone()[0]
            killed.append((s["t_ms"], r))

    snaps, _ = run_thread(driver, [("127.0.0.1", cluster.ports[0])], run_ms=2500, period_ms=200,
                          timeout_ms=1000, max_retries=0, retry_delay_ms=100, on_line=on_line)
    assert killed and killed[0][1] >= 1, killed
    after = [s for s in snaps if s["t_ms"] > killed[0][0] and s["nodes"][0]["obs"]]
    assert len(after) >= 3
    for s in after:
        n = s["nodes"][0]
        assert n["obs"]["reachable"] is True, n["obs"]
        assert n["fail_count"] == 0 and n["failed"] is False
    assert any(s["nodes"][0]["obs"]["connection_reused"] is False for s in after), \
        "no fresh connection after the kill"
