"""conf/haproxy.cfg, as shipped, in front of two pgrelay instances: every address and port of the
file is moved to free loopback ports, nothing else changes. psql through HAProxy's read-write
port reaches the primary, through its read-only port a standby (the runbook's promise), and after
a kill -9 of the primary the read-write port reaches the new one."""

import re
import shutil
import subprocess
import time

import pytest

from conftest import DIRECT, REPO, connect, free_port, wait_port
from failover_helpers import PGBIN, cluster_template, own_cluster, recorder  # noqa: F401

pytestmark = [pytest.mark.pgrelay_only,
              pytest.mark.skipif(DIRECT, reason="needs pgrelay's HTTP health paths"),
              pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")]

HAPROXY_CFG = REPO / "conf" / "haproxy.cfg"


def start_relay(pgrelay, **settings):
    ports = {"rw": free_port(), "ro": free_port(), "http": free_port()}
    r = pgrelay(listeners=[{"port": ports["rw"], "role": "primary"},
                           {"port": ports["ro"], "role": "standby"}],
                http={"port": ports["http"]}, **settings)
    r.role_ports = ports
    return r


def adapt(text, relays, front):
    """The shipped file on loopback: instance a is 192.0.2.11, b is 192.0.2.12."""
    for host, r in zip(("192.0.2.11", "192.0.2.12"), relays):
        p = r.role_ports
        text = text.replace(f"{host}:6432 maxconn 100 check port 9998",
                            f"127.0.0.1:{p['rw']} maxconn 100 check port {p['http']}")
        text = text.replace(f"{host}:6433 maxconn 100 check port 9998",
                            f"127.0.0.1:{p['ro']} maxconn 100 check port {p['http']}")
    text = text.replace("bind *:5000", f"bind 127.0.0.1:{front['rw']}")
    text = text.replace("bind *:5001", f"bind 127.0.0.1:{front['ro']}")
    text = text.replace("bind 127.0.0.1:7000", f"bind 127.0.0.1:{front['stats']}")
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"192\.0\.2\.|:500[01]\b|:7000\b|\b9998\b", live), live
    return text


def in_recovery(port):
    with connect(port, connect_timeout=5) as c:
        return c.execute("select pg_is_in_recovery()").fetchone()[0]


class HAProxy:
    """conf/haproxy.cfg adapted to relays, run in the foreground; stop() in a finally."""

    def __init__(self, relays, tmp_path):
        self.front = front = {"rw": free_port(), "ro": free_port(), "stats": free_port()}
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(adapt(HAPROXY_CFG.read_text(), relays, front))
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(tmp_path / "haproxy.log", "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        assert wait_port(front["rw"], 10, self.proc) and wait_port(front["ro"], 10, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def node_port(port):
    """(pg_is_in_recovery(), the PostgreSQL port) of the node a session through port reaches."""
    with connect(port, connect_timeout=5) as c:
        return tuple(c.execute("select pg_is_in_recovery(), current_setting('port')::int")
                     .fetchone())


def wait_for(fn, want, timeout):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = fn()
            if want(seen):
                return seen
        except Exception as e:  # noqa: BLE001 - refused or cut sessions while things settle
            seen = repr(e)
        time.sleep(0.5)
    raise AssertionError(f"not reached within {timeout}s; last seen {seen}")


@pytest.mark.deadline(180)
def test_haproxy_follows_failover(own_cluster, pgrelay, tmp_path):
    """kill -9 of the primary: port 5000 reaches the new primary once pgrelay promoted it. Only
    instance a runs failover_command (conf/failover.sh); b finds the new primary by its checks."""
    c = own_cluster
    common = dict(
        backends=[{"host": "127.0.0.1", "port": c.ports[i], "weight": 1.0,
                   "data_directory": str(c.data_dirs[i]), "application_name": f"node{i}"}
                  for i in range(3)],
        health_check={"period": "1s", "timeout": "1s", "max_retries": 1, "retry_delay": "500ms",
                      "user": "postgres", "password": "postgres", "database": "postgres"},
        failover_command_timeout="30s", search_primary_node_timeout="30s",
        pool={"query_wait_timeout": "5s"}, logging={"level": "log"},
        env={"PGPASSWORD": "postgres", "PGBIN": str(PGBIN)})
    failover = recorder(tmp_path, "failover", f'exec {REPO / "conf" / "failover.sh"} "$@"')
    relays = [start_relay(pgrelay, failover_command=failover, **common),
              start_relay(pgrelay, **common)]
    hp = HAProxy(relays, tmp_path)
    try:
        wait_for(lambda: node_port(hp.front["rw"]), lambda s: s == (False, c.ports[0]), 30)
        c.kill9(0)
        t0 = time.monotonic()
        # Right after the kill a pooled backend of the old primary may still answer (it notices
        # its postmaster's death a moment later): wait for a primary on another port.
        rec, port = wait_for(lambda: node_port(hp.front["rw"]),
                             lambda s: isinstance(s, tuple) and s[0] is False and s[1] != c.ports[0],
                             60)
        assert port in (c.ports[1], c.ports[2])
        with connect(hp.front["rw"], connect_timeout=5) as s:
            s.execute("create table if not exists haproxy_failover (id int)")
            s.execute("insert into haproxy_failover values (1)")
        print(f"port 5000 reached the new primary {time.monotonic() - t0:.1f}s after kill -9")
    finally:
        hp.stop()


@pytest.mark.deadline(90)
def test_haproxy_routes_by_health_paths(pgrelay, tmp_path):
    relays = [start_relay(pgrelay), start_relay(pgrelay)]
    hp = HAProxy(relays, tmp_path)
    try:
        # Until both pgrelays found the primary, a check may still fail: retry for a while.
        wait_for(lambda: (in_recovery(hp.front["rw"]), in_recovery(hp.front["ro"])),
                 lambda s: s == (False, True), 30)
        for _ in range(4):  # round robin over both instances: always the right role
            assert in_recovery(hp.front["rw"]) is False
            assert in_recovery(hp.front["ro"]) is True
    finally:
        hp.stop()
