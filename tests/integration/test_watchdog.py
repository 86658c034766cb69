"""The watchdog: three pgrelay instances in front of one PostgreSQL cluster, etcd as the arbiter
(doc/watchdog.md). Everything runs on loopback: etcd (Debian's etcd-server) on free ports, a
private PostgreSQL cluster per test (failover_helpers.own_cluster), three pgrelays with their HTTP
listeners (the fencing peer check uses them), and controllable TCP relays (watchdog_helpers) to cut
one instance off from the primary or from etcd.

Every failover_command appends one line to a log shared by the three instances: counting its lines
counts the promotions of the whole pgrelay cluster. PGRELAY_WD_ROUNDS (default 3) sets how many
times the kill -9 round runs; bench/watchdog_failover.sh runs it more often and measures.
"""

import json
import os
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import DIRECT, pgrelay_bin
from failover_helpers import cluster_template, own_cluster  # noqa: F401
from failover_load import query, query_dicts, stop_all
from test_failover_e2e import (FAILOVER_SH, e2e_relay, make_table, nodes, port_node,  # noqa: F401
                               reader, wait_for, writer)
from watchdog_helpers import Etcd, TcpRelay, quiet_port, watchdog_settings

pytestmark = [pytest.mark.pgrelay_only,
              pytest.mark.skipif(DIRECT, reason="tests pgrelay's watchdog"),
              pytest.mark.skipif(not os.path.exists("/usr/bin/etcd"),
                                 reason="etcd-server is not installed (scripts/deps.sh)")]

ROUNDS = int(os.environ.get("PGRELAY_WD_ROUNDS", "3"))
TTL_S = int(os.environ.get("PGRELAY_WD_TTL", "3"))  # lease_ttl, seconds
PERIOD_S = 1
CONVERGE_BOUND = 30.0  # s for liveness waits (loaded 2-core CI, ASan build)


@pytest.fixture(scope="module")
def etcd3():
    e = Etcd(3)
    try:
        e.start()
        yield e
    finally:
        e.close()


@pytest.fixture
def etcd1():
    e = Etcd(1)
    try:
        e.start()
        yield e
    finally:
        e.close()


class Group:
    """Three pgrelay instances of one watchdog group; failover.log counts promotions."""

    def __init__(self, e2e_relay, c, tmp_path, endpoints, failover_then=None, per=None, relay=None,
                 **wd):
        self.c = c
        self.log = tmp_path / "failover.log"
        self.log.touch()
        self.prefix = f"/pgrelay/t{uuid.uuid4().hex[:8]}"
        then = (failover_then or "") + f'exec {FAILOVER_SH} "$@" >> {tmp_path}/failover.out 2>&1'
        snippet = f'echo "$PGRELAY_FAILED_NODE_ID" >> {self.log}; {then}'
        self.relays = []
        for i in range(3):
            extra = (per or {}).get(i, {})
            settings = watchdog_settings(c, f"pgrelay-{i}", extra.get("endpoints", endpoints),
                                         self.prefix, quiet_port(), ttl=f"{TTL_S}s",
                                         backend_ports=extra.get("backend_ports"),
                                         **{**wd, **extra.get("watchdog", {})})
            settings.update(relay or {})
            (tmp_path / f"i{i}").mkdir(exist_ok=True)
            health = {"period": f"{PERIOD_S}s", "timeout": "2s", "max_retries": 1}
            self.relays.append(e2e_relay(c, tmp_path / f"i{i}", failover=snippet, follow="",
                                         health=health, **settings))

    def failovers(self):
        return [ln for ln in self.log.read_text().splitlines() if ln.strip()]

    def watchdog(self, i):
        return query_dicts(self.relays[i].port, "show pool_watchdog")

    def leader(self):
        for i, r in enumerate(self.relays):
            try:
                rows = self.watchdog(i)
            except Exception:
                continue
            if rows and rows[0]["status"] == "leader":
                return i
        return None

    def ready(self, alive=(0, 1, 2), primary=0):
        """Every live instance sees the others and one leader, and routes to primary."""
        leaders, own = set(), set()
        for i in alive:
            rows = self.watchdog(i)
            live = [r for r in rows if r["status"] in ("leader", "member")]
            if len(live) != len(alive):
                return False
            leaders |= {r["name"] for r in rows if r["status"] == "leader"}
            if rows[0]["status"] == "leader":
                own.add(rows[0]["name"])
            n = nodes(self.relays[i].port)
            if n[primary]["role"] != "primary" or n[primary]["status"] != "up":
                return False
        return len(leaders) == 1 and leaders == own

    def wait_ready(self, **kw):
        return wait_for(lambda: self.ready(**kw), CONVERGE_BOUND, "the watchdog group to settle")


def write_node(c, port):
    """The node a write through port lands on (a fresh session)."""
    return port_node(c, query(port, "create temp table wd_probe(x int); "
                                    "select inet_server_port()", user="app", password="app")[0][0])


def writes_resumed_elsewhere(c, loop, t, dead=0):
    return next((o for o in loop.all_ops() if o.ok and o.t0 >= t and port_node(c, o.value) != dead),
                None)


def recovery(c, node):
    return c.query(node, "select pg_is_in_recovery()")[0][0]


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.deadline(150)
@pytest.mark.parametrize("rnd", range(ROUNDS))
def test_kill9_primary_one_promotion_one_new_primary(rnd, own_cluster, e2e_relay, tmp_path, etcd3):
    """Bug guarded: with several pgrelay instances, each one runs its own failover_command (two
    promotions, split brain), or the instances send writes to different primaries afterwards."""
    c = own_cluster
    g = Group(e2e_relay, c, tmp_path, etcd3.endpoints)
    g.wait_ready()
    make_table(g.relays[0].port, "wd_kill")
    ws = [writer(r.port, "wd_kill", wid=i, op_timeout=10) for i, r in enumerate(g.relays)]
    for w in ws:
        w.start()
    try:
        for w in ws:
            assert w.wait_ops(5, 15), (w.name, w.all_ops()[-3:], w.login_errors[-3:])
        t_kill = time.monotonic()
        c.kill9(0)
        firsts = [wait_for(lambda w=w: writes_resumed_elsewhere(c, w, t_kill), CONVERGE_BOUND,
                           f"a write through {w.name} on the new primary") for w in ws]
        t_all = max(f.t0 for f in firsts)
        for w in ws:
            assert w.wait_ops(len(w.ok_ops()) + 5, 15)
    finally:
        stop_all(ws)
    took = [f.t1 - t_kill for f in firsts]
    print(f"round {rnd}: kill -9 -> first write per instance "
          + ", ".join(f"{t * 1000:.0f} ms" for t in took)
          + f"; spread {(max(took) - min(took)) * 1000:.0f} ms")
    after = {port_node(c, v) for w in ws for v in w.values(t_all)}
    assert len(after) == 1 and 0 not in after, f"writes after the failover went to {after}"
    new = after.pop()
    # Exactly one promotion in the whole pgrelay cluster, and it stays one.
    time.sleep(2)
    assert len(g.failovers()) == 1, g.failovers()
    assert [recovery(c, n) for n in (1, 2)].count(False) == 1
    assert all(write_node(c, r.port) == new for r in g.relays)
    hist = [e["event"] for r in g.relays for e in query_dicts(r.port, "show pool_failover_history")]
    assert "consensus_reached" in hist and "watchdog_leader" in hist


@pytest.mark.deadline(150)
def test_leader_killed_during_failover(own_cluster, e2e_relay, tmp_path, etcd3):
    """Bug guarded: the leader dies while its failover_command runs, and the next leader runs the
    command again (a second promotion) or never publishes the new primary."""
    c = own_cluster
    # The script is slow to promote: the leader is killed while it runs. Its output goes to a
    # file, so it survives its parent (own process group, no broken pipe).
    vip = tmp_path / "vip.log"
    hooks = {i: {"watchdog": {"if_up_cmd": f"echo up {i} $_IP_$ >> {vip}",
                              "arping_cmd": f"echo arping {i} $_IP_$ >> {vip}",
                              "if_down_cmd": f"echo down {i} $_IP_$ >> {vip}"}} for i in range(3)}
    g = Group(e2e_relay, c, tmp_path, etcd3.endpoints, failover_then="sleep 2; ", per=hooks,
              delegate_ip="10.9.9.9")
    g.wait_ready()
    lead = g.leader()
    assert lead is not None
    c.kill9(0)
    wait_for(lambda: g.failovers(), CONVERGE_BOUND, "the failover command to start")
    g.relays[lead].kill()
    g.relays[lead].expected_exit = -9
    others = [i for i in range(3) if i != lead]
    new = wait_for(lambda: (lambda s: len(s) == 1 and 0 not in s and s.pop())(
        {write_node(c, g.relays[i].port) for i in others}), CONVERGE_BOUND,
        "writes through the surviving instances on one new primary")
    wait_for(lambda: g.leader() in others, CONVERGE_BOUND, "a new leader")
    time.sleep(TTL_S)
    assert len(g.failovers()) == 1, g.failovers()
    assert [recovery(c, n) for n in (1, 2)].count(False) == 1
    assert all(write_node(c, g.relays[i].port) == new for i in others)
    # The virtual IP: brought up (and announced) by the first leader, then by its successor.
    ups = [ln.split() for ln in vip.read_text().splitlines()]
    new_lead = g.leader()
    assert ups == [["up", str(lead), "10.9.9.9"], ["arping", str(lead), "10.9.9.9"],
                   ["up", str(new_lead), "10.9.9.9"], ["arping", str(new_lead), "10.9.9.9"]], ups


@pytest.mark.deadline(150)
def test_leader_and_its_command_killed_before_promotion(own_cluster, e2e_relay, tmp_path, etcd3):
    """Bug guarded: the leader dies during a failover together with its failover_command (its host
    lost, or a service manager that kills the whole unit) before anything was promoted; the next
    leader only searched, and the cluster stayed without a primary until an operator stepped in.
    The next leader now runs the command again once failover_command_timeout has passed since it
    took over, promoting the node the first leader announced: one promotion in all."""
    c = own_cluster
    g = Group(e2e_relay, c, tmp_path, etcd3.endpoints, failover_then="sleep 4; ",
              relay={"failover_command_timeout": "5s"})
    g.wait_ready()
    lead = g.leader()
    assert lead is not None
    t_kill = time.monotonic()
    c.kill9(0)
    wait_for(lambda: g.failovers(), CONVERGE_BOUND, "the failover command to start")
    g.relays[lead].kill()
    g.relays[lead].expected_exit = -9
    subprocess.run(["pkill", "-9", "-f", f"{tmp_path}/i{lead}/failover.sh"], check=False)
    others = [i for i in range(3) if i != lead]
    new = wait_for(lambda: (lambda s: len(s) == 1 and 0 not in s and s.pop())(
        {write_node(c, g.relays[i].port) for i in others}), CONVERGE_BOUND + 20,
        "writes through the surviving instances on one new primary")
    print(f"leader and its command killed: writes on node {new} after {time.monotonic() - t_kill:.1f} s")
    time.sleep(TTL_S)
    assert len(g.failovers()) == 2, g.failovers()  # the killed run, and the one re-run
    assert [recovery(c, n) for n in (1, 2)].count(False) == 1
    new_lead = g.leader()
    assert new_lead in others
    hist = [e["event"] for e in query_dicts(g.relays[new_lead].port, "show pool_failover_history")]
    assert "failover_inherited" in hist and "failover_rerun" in hist, hist


@pytest.mark.deadline(120)
def test_instance_cut_off_from_primary_causes_no_failover(own_cluster, e2e_relay, tmp_path, etcd3):
    """Bug guarded: one pgrelay that alone loses the primary (a network cut between them) fails it
    over, or sends its writers to a standby."""
    c = own_cluster
    cut = TcpRelay(c.ports[0])
    try:
        ports = [cut.port, c.ports[1], c.ports[2]]
        g = Group(e2e_relay, c, tmp_path, etcd3.endpoints, per={2: {"backend_ports": ports}})
        g.wait_ready()
        make_table(g.relays[0].port, "wd_cut")
        w_cut = writer(g.relays[2].port, "wd_cut", wid=2, op_timeout=5)
        w_ok = writer(g.relays[0].port, "wd_cut", wid=0, op_timeout=5)
        for w in (w_cut, w_ok):
            w.start()
            assert w.wait_ops(5, 15), w.all_ops()[-3:]
        t_cut = time.monotonic()
        cut.blackhole()
        wait_for(lambda: nodes(g.relays[2].port)[0]["status"] != "up", CONVERGE_BOUND,
                 "the cut-off instance to stop using node 0")
        time.sleep(3 * PERIOD_S + TTL_S)
        assert g.failovers() == []
        assert {port_node(c, v) for v in w_cut.values(t_cut)} <= {0}, "writes went to a standby"
        assert {port_node(c, v) for v in w_ok.values(t_cut)} == {0}
        assert w_ok.max_gap(t_cut, time.monotonic()) < CONVERGE_BOUND
        hist = [e["event"] for e in query_dicts(g.relays[2].port, "show pool_failover_history")]
        assert "consensus_not_reached" in hist
        t_heal = time.monotonic()
        cut.heal()
        wait_for(lambda: any(port_node(c, v) == 0 for v in w_cut.values(t_heal)), CONVERGE_BOUND,
                 "writes through the cut-off instance again after the cut healed")
        stop_all([w_cut, w_ok])
        assert g.failovers() == []
    finally:
        cut.close()


@pytest.mark.deadline(120)
def test_instance_cut_off_from_etcd_is_fenced_and_rejoins(own_cluster, e2e_relay, tmp_path, etcd3):
    """Bug guarded: an instance that lost etcd (and so the others' decisions) keeps sending writes
    to a primary the others may have failed over, hangs its clients, or never rejoins."""
    c = own_cluster
    cut = TcpRelay(etcd3.client_ports[0])
    try:
        g = Group(e2e_relay, c, tmp_path, etcd3.endpoints,
                  per={2: {"endpoints": [f"http://127.0.0.1:{cut.port}"]}})
        g.wait_ready()
        make_table(g.relays[0].port, "wd_fence")
        w_cut = writer(g.relays[2].port, "wd_fence", wid=2, op_timeout=5)
        w_ok = writer(g.relays[0].port, "wd_fence", wid=0, op_timeout=5)
        rd = reader(g.relays[2].port, op_timeout=5)
        loops = [w_cut, w_ok, rd]
        for lp in loops:
            lp.start()
            assert lp.wait_ops(3, 15), lp.all_ops()[-3:]
        t_cut = time.monotonic()
        cut.blackhole()
        fenced = wait_for(lambda: next((o for o in w_cut.all_ops() if o.t0 >= t_cut and not o.ok
                                        and o.error.startswith("25006")), None),
                          TTL_S + PERIOD_S + 10, "writes through the cut-off instance refused (25006)")
        print(f"cut from etcd -> first 25006 after {(fenced.t1 - t_cut) * 1000:.0f} ms: {fenced.error}")
        assert "watchdog" in fenced.error
        t_fenced = time.monotonic()
        time.sleep(2)
        assert not [o for o in w_cut.all_ops() if o.ok and o.t0 >= t_fenced]
        assert rd.max_gap(t_cut, time.monotonic()) < 5, "reads through the fenced instance stopped"
        assert w_ok.max_gap(t_cut, time.monotonic()) < 5, "the other instances stopped writing"
        assert g.watchdog(2)[0]["status"] == "fenced"
        t_heal = time.monotonic()
        cut.heal()
        wait_for(lambda: w_cut.first_ok_after(t_heal), CONVERGE_BOUND,
                 "writes through the instance again once it reaches etcd")
        stop_all(loops)
        no_hang = [o for lp in loops for o in lp.all_ops() if o.error == "timeout"]
        assert not no_hang, no_hang[:3]
        assert g.failovers() == []
        events = [e["event"] for e in query_dicts(g.relays[2].port, "show pool_failover_history")]
        assert "watchdog_fenced" in events and "watchdog_unfenced" in events
    finally:
        cut.close()


@pytest.mark.deadline(120)
def test_etcd_wholly_down_writes_go_on_and_instances_rejoin(own_cluster, e2e_relay, tmp_path, etcd1):
    """Bug guarded: an etcd outage fences every instance (the whole proxy stops taking writes)
    although nobody can fail over, or the instances do not rejoin when etcd is back."""
    c = own_cluster
    g = Group(e2e_relay, c, tmp_path, etcd1.endpoints)
    g.wait_ready()
    make_table(g.relays[0].port, "wd_down")
    ws = [writer(r.port, "wd_down", wid=i, op_timeout=5) for i, r in enumerate(g.relays)]
    for w in ws:
        w.start()
        assert w.wait_ops(3, 15)
    t_down = time.monotonic()
    etcd1.stop()
    time.sleep(TTL_S + 3)
    for i in range(3):
        assert g.watchdog(i)[0]["status"] == "lost", g.watchdog(i)
    t_check = time.monotonic()
    time.sleep(1.5)
    for w in ws:
        assert w.max_gap(t_down, time.monotonic()) < 3, (w.name, w.failed_ops(t_down)[:3])
        assert {port_node(c, v) for v in w.values(t_check)} == {0}
    etcd1.start()
    g.wait_ready()
    stop_all(ws)
    assert g.failovers() == []
    # The watchdog's state over HTTP: /cluster's "watchdog" object and the /metrics gauges.
    lead = g.leader()
    http = g.relays[lead].settings["http"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/cluster", timeout=5) as resp:
        wd = json.load(resp)["watchdog"]
    assert wd["is_leader"] and wd["status"] == "leader" and not wd["fenced"]
    assert sorted(m["name"] for m in wd["members"] if m["live"]) == [f"pgrelay-{i}" for i in range(3)]
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "pgrelay_watchdog_leader 1" in text and "pgrelay_watchdog_fenced 0" in text
    assert "pgrelay_watchdog_members 3" in text


def test_watchdog_config_errors(tmp_path):
    """Bug guarded: a watchdog without etcd endpoints, or asking to fail over without quorum,
    starts anyway (and then never elects a leader, or promotes twice)."""
    (tmp_path / "users.txt").write_text("app:app\n")
    base = ('backends = ( { host = "127.0.0.1"; port = 5432; } );\n'
            'auth = { users_file = "users.txt"; };\n')
    cases = {
        "watchdog = { enabled = true; };": "watchdog.endpoints",
        'watchdog = { enabled = true; endpoints = ( "http://127.0.0.1:2379" ); '
        "failover_when_quorum_exists = false; };": "failover_when_quorum_exists",
        'watchdog = { enabled = true; endpoints = ( "127.0.0.1:2379" ); };': "not an http",
        'watchdog = { enabled = true; endpoints = ( "http://127.0.0.1:2379" ); mode = "x"; };':
            "watchdog.mode",
    }
    for text, want in cases.items():
        f = tmp_path / "pgrelay.conf"
        f.write_text(base + text + "\n")
        r = subprocess.run([str(pgrelay_bin()), "-t", "-f", str(f)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and want in r.stdout + r.stderr, (text, r.stdout, r.stderr)
    f.write_text(base + 'watchdog = { enabled = true; endpoints = ( "http://127.0.0.1:2379" ); };\n')
    r = subprocess.run([str(pgrelay_bin()), "-t", "-f", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.deadline(150)
def test_observe_mode_follows_an_outside_promotion(own_cluster, e2e_relay, tmp_path, etcd3):
    """Bug guarded: in observe mode pgrelay runs its own promotion, or does not follow the one an
    outside HA manager (here: the test, with pg_ctl promote) made."""
    c = own_cluster
    g = Group(e2e_relay, c, tmp_path, etcd3.endpoints, mode="observe")
    g.wait_ready()
    c.kill9(0)
    wait_for(lambda: all(nodes(r.port)[0]["status"] == "down" for r in g.relays), CONVERGE_BOUND,
             "node 0 detached by every instance")
    r = c.pg_ctl(1, "promote", "-w", "-t", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    c.query(2, f"alter system set primary_conninfo = 'host=127.0.0.1 port={c.ports[1]} "
               f"user=postgres password=postgres application_name=node2'")
    c.query(2, "select pg_reload_conf()")
    wait_for(lambda: all(write_node(c, r.port) == 1 for r in g.relays), CONVERGE_BOUND,
             "writes through every instance on node 1")
    time.sleep(1)
    assert g.failovers() == []
