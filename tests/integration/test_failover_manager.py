"""The cluster manager (src/failover) against real PostgreSQL clusters, without the data plane.

Driven through tests/integration/cluster_main.c (see failover_helpers.py): every new view and
history event is one JSON line; attach/detach/promote/report go to its stdin. Destructive tests get
a private cluster each (own_cluster); the others use the session cluster and only change the
manager's own state (their failover commands are recorders that touch nothing).
"""

import time

import pytest

from conftest import DIRECT, REPO
from failover_helpers import (all_up, calls, cluster_driver, cluster_template, manager,  # noqa: F401
                              manager_config, own_cluster, recorder)

pytestmark = pytest.mark.skipif(DIRECT, reason="tests pgrelay's own cluster manager")

FAILOVER_SH = REPO / "conf" / "failover.sh"
FOLLOW_SH = REPO / "conf" / "follow_primary.sh"


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def real_scripts(workdir):
    return dict(
        failover_command=recorder(workdir, "failover", f'exec {FAILOVER_SH} "$@"'),
        follow_primary_command=recorder(workdir, "follow", f'exec {FOLLOW_SH} "$@"'),
    )


@pytest.mark.deadline(120)
def test_kill9_primary_promotes_most_advanced_standby(own_cluster, manager, tmp_path):
    """Bug guarded: a dead primary is not failed over, the failover command gets wrong values, a
    less advanced standby is promoted (lost transactions), the remaining standby keeps streaming
    from nothing, or the old primary is used again when it comes back."""
    c = own_cluster
    m = manager(c, workdir=tmp_path, **real_scripts(tmp_path))
    m.wait_view(all_up, 15, "discovery: node 0 primary, all up")
    # node1 stops receiving WAL; later writes reach node2 only: node2 is the most advanced.
    c.query(1, "alter system set primary_conninfo = "
            "'host=127.0.0.1 port=1 user=postgres application_name=node1'")
    c.query(1, "select pg_reload_conf()")
    deadline = time.monotonic() + 10
    while "node1" in c.streaming_names(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    c.query(0, "create table t(x int); insert into t select generate_series(1, 1000)", dbname="app")
    target = lsn(c.query(0, "select pg_current_wal_lsn()::text")[0][0])
    m.wait_view(lambda v: v["nodes"][2]["receive_lsn"] and lsn(v["nodes"][2]["receive_lsn"]) >= target,
                10, "node2 caught up in the view")
    t_kill, mk = time.monotonic(), m.mark()
    c.kill9(0)
    m.send("report 0")  # what the data plane does when its backend sockets break
    v = m.wait_view(lambda v: v["primary"] in (1, 2) and not v["failing_over"], 20,
                    "a new primary", since=mk)
    took = v["t"] - t_kill
    print(f"kill -9 to new primary in the view: {took * 1000:.0f} ms")
    assert v["primary"] == 2, v
    assert v["nodes"][0]["status"] == "down"
    assert took < 5, f"failover took {took:.2f}s"
    fo = [x for x in calls(tmp_path) if x[0] == "failover"]
    assert len(fo) == 1, fo
    args, env = fo[0][1], fo[0][2]
    # %d %h %p %D %m %H %M %P %r %R %N %S
    assert args == ["0", "127.0.0.1", str(c.ports[0]), str(c.data_dirs[0]), "2", "127.0.0.1", "0",
                    "0", str(c.ports[2]), str(c.data_dirs[2]), "127.0.0.1", str(c.ports[0])], args
    assert env["PGRELAY_FAILED_NODE_ID"] == "0" and env["PGRELAY_NEW_MAIN_NODE_ID"] == "2"
    assert env["PGRELAY_NEW_MAIN_DATA_DIR"] == str(c.data_dirs[2])
    assert env["PGRELAY_OLD_PRIMARY_PORT"] == str(c.ports[0])
    assert env["PGRELAY_FAILOVER_REASON"] == "health_check"
    ev = m.wait_event("failover", 5)
    assert ev["exit_status"] == 0 and ev["node"] == 0 and "promoted node 2" in ev["detail"], ev
    assert c.query(2, "select count(*) from t", dbname="app")[0][0] == 1000
    # follow_primary for node1 only (node0 is down), and node1 streams from node2 afterwards.
    fol = m.wait_event("follow_primary", 40)
    assert fol["node"] == 1 and fol["exit_status"] == 0, fol
    assert [x[1][0] for x in calls(tmp_path) if x[0] == "follow"] == ["1"]
    assert c.wait_streaming(2, ["node1"]), "node1 does not stream from node2"
    m.wait_view(lambda v: v["nodes"][1]["status"] == "up" and v["nodes"][1]["role"] == "standby"
                and v["nodes"][1]["replication_state"] == "streaming", 15, "node1 up, streaming")
    # The old primary comes back as a primary: never used, marked down with a reason.
    mk = m.mark()
    c.start_node(0)
    v = m.wait_view(lambda v: "false primary" in v["nodes"][0]["reason"], 15, "old primary flagged",
                    since=mk)
    assert v["primary"] == 2 and v["nodes"][0]["status"] == "down" and v["nodes"][0]["pg_role"] == "primary"
    m.wait_event("false_primary", 10)  # its JSON line may follow the view's


@pytest.mark.deadline(90)
def test_frozen_primary_fails_over_in_time(own_cluster, manager, tmp_path):
    """Bug guarded: a primary that accepts TCP and never answers (SIGSTOP) stalls the checks or the
    manager, or is detected only after much more than its timeout."""
    c = own_cluster
    m = manager(c, workdir=tmp_path, **real_scripts(tmp_path),
                health_check={"period": "1s", "timeout": "1s", "max_retries": 0})
    m.wait_view(all_up, 15, "discovery")
    t0, mk = time.monotonic(), m.mark()
    c.freeze(0)
    v = m.wait_view(lambda v: v["primary"] in (1, 2), 15, "a new primary", since=mk)
    took = v["t"] - t0
    print(f"SIGSTOP to new primary in the view: {took * 1000:.0f} ms")
    # timeout (1 s) + up to one period before the check + promotion (~2.4 s measured); slack for
    # a loaded 2-core CI machine under ASan
    assert took < 1 + 3, f"took {took:.2f}s"
    # The manager kept publishing while node0 hung (LSN samples of the new primary).
    n = len(m.views())
    m.wait(lambda m: len(m.views()) > n + 3, 5, "views keep coming")
    c.thaw(0)
    m.wait_view(lambda v: "false primary" in v["nodes"][0]["reason"], 15, "thawed old primary flagged")


@pytest.mark.deadline(120)
def test_switchover_promote(own_cluster, manager, tmp_path):
    """Bug guarded: PROMOTE NODE does not switch over cleanly: the old primary keeps running as a
    second primary, the other nodes do not follow, or a write is lost."""
    c = own_cluster
    m = manager(c, workdir=tmp_path, **real_scripts(tmp_path))
    m.wait_view(all_up, 15, "discovery")
    c.query(0, "create table s(x int); insert into s values (1)", dbname="app")
    r = m.send("promote 2 planned switchover")
    assert r["ok"], r
    v = m.wait_view(lambda v: v["primary"] == 2, 30, "node2 primary")
    fo = [x for x in calls(tmp_path) if x[0] == "failover"][0]
    assert fo[1][0] == "0" and fo[1][4] == "2" and fo[2]["PGRELAY_FAILOVER_REASON"] == "switchover"
    # Both others follow node2, the old primary included; all end up attached standbys.
    v = m.wait_view(lambda v: v["primary"] == 2 and v["nodes"][0]["status"] == "up"
                    and v["nodes"][1]["status"] == "up" and v["nodes"][0]["role"] == "standby", 60,
                    "old primary re-attached as a standby")
    # The command records its call as it runs: wait for both (a loaded machine is slow).
    deadline = time.monotonic() + 30
    while sorted(x[1][0] for x in calls(tmp_path) if x[0] == "follow") != ["0", "1"]:
        assert time.monotonic() < deadline, [x for x in calls(tmp_path) if x[0] == "follow"]
        time.sleep(0.2)
    assert c.wait_streaming(2, ["node0", "node1"])
    assert c.query(0, "select pg_is_in_recovery()")[0][0] is True
    assert c.query(2, "select count(*) from s", dbname="app")[0][0] == 1
    assert [e["event"] for e in m.events()][:1] == ["primary_found"]
    assert m.events("promote")


@pytest.mark.deadline(90)
def test_standby_loss_auto_failback_and_false_primary(own_cluster, manager, tmp_path):
    """Bug guarded: losing a standby triggers a failover, a restarted standby never comes back with
    auto_failback, or a standby promoted by hand beside the primary (split brain) is used."""
    c = own_cluster
    m = manager(c, workdir=tmp_path, failover_command=recorder(tmp_path, "failover"),
                failback_command=recorder(tmp_path, "failback"), auto_failback=True,
                auto_failback_interval="1s")
    m.wait_view(all_up, 15, "discovery")
    mk = m.mark()
    c.kill9(2)
    v = m.wait_view(lambda v: v["nodes"][2]["status"] == "down", 10, "node2 down", since=mk)
    assert v["primary"] == 0 and not m.events("failover")
    mk = m.mark()
    c.start_node(2)
    assert c.wait_streaming(0, ["node2"])
    m.wait_view(lambda v: v["nodes"][2]["status"] == "up", 15, "node2 auto-attached", since=mk)
    ev = m.wait_event("failback", 10, lambda e: e["command"])
    assert ev["node"] == 2 and ev["exit_status"] == 0, ev
    assert [x[1][0] for x in calls(tmp_path) if x[0] == "failback"] == ["2"]
    # Split brain: node1 promoted by hand while node0 runs: node0 keeps the standbys -> node1 false.
    c.pg_ctl(1, "promote", "-w")
    v = m.wait_view(lambda v: v["nodes"][1]["status"] == "down", 10, "node1 detached as false primary")
    assert v["primary"] == 0 and "false primary" in v["nodes"][1]["reason"]
    m.wait_event("false_primary", 10)
    assert not m.events("failover")
    time.sleep(3)  # never auto-attached: it is a former primary now
    assert m.view()["nodes"][1]["status"] == "down"


@pytest.mark.deadline(60)
def test_terminate_backend_does_not_fail_over(cluster, manager, tmp_path):
    """Bug guarded: a single pg_terminate_backend (the data plane sees a broken socket and reports
    it) is taken for a dead primary."""
    m = manager(cluster, workdir=tmp_path, failover_command=recorder(tmp_path, "failover"))
    m.wait_view(all_up, 15, "discovery")
    for _ in range(3):
        with cluster.connect(dbname="postgres") as conn:
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                         "where application_name = 'pgrelay health check' and pid <> pg_backend_pid()")
        m.send("report 0")
        time.sleep(0.5)
    time.sleep(1.5)
    v = m.view()
    assert all_up(v), v
    assert not m.events("failover") and not m.events("detach") and calls(tmp_path) == []


@pytest.mark.deadline(90)
def test_failover_command_fails_or_times_out(cluster, manager, tmp_path):
    """Bug guarded: a failing or hanging failover script crashes or hangs the manager, stops the
    checks of the other nodes, or is not killed with its children at failover_command_timeout."""
    m = manager(cluster, workdir=tmp_path, failover_command_timeout="1s",
                search_primary_node_timeout="2s",
                failover_command=recorder(tmp_path, "failover", "sleep 30 & sleep 30; exit 0"))
    m.wait_view(all_up, 15, "discovery")
    t0 = time.monotonic()
    r = m.send("detach 0 maintenance test")
    assert r["ok"], r
    ev = m.wait_event("failover", 8, lambda e: e["exit_status"] != -1)
    took = time.monotonic() - t0
    assert ev["exit_status"] == 128 + 15 and "timed out" in ev["detail"], ev
    assert 0.9 <= ev["duration_ms"] / 1000 < 2.5 and took < 4, (ev, took)
    # Checks kept running during the command: node1's counters moved.
    counts = [v["nodes"][1]["total_count"] for v in m.views() if t0 <= v["t"] <= t0 + took]
    assert counts and counts[-1] > counts[0], counts
    # No primary appears (node0 is detached): the search ends at its timeout.
    m.wait_event("primary_not_found", 6)
    assert m.view()["primary"] == -1 and not m.view()["failing_over"]
    # Attach: waiting -> up after a check; it is the only node not in recovery -> primary again.
    mk = m.mark()
    assert m.send("attach 0 back")["ok"]
    m.wait_view(lambda v: v["primary"] == 0 and v["nodes"][0]["status"] == "up", 10,
                "node0 primary again", since=mk)


@pytest.mark.deadline(60)
def test_failover_command_exit_status_and_manual_detach_attach(cluster, manager, tmp_path):
    """Bug guarded: a failing script's exit status or output is lost, DETACH/ATTACH of a standby
    misbehave, or an impossible command is accepted."""
    m = manager(cluster, workdir=tmp_path, search_primary_node_timeout="1s",
                failover_command=recorder(tmp_path, "failover", "echo 'cannot promote: test'; exit 3"))
    m.wait_view(all_up, 15, "discovery")
    assert m.send("detach 1 disk check")["ok"]
    v = m.wait_view(lambda v: v["nodes"][1]["status"] == "down", 5, "node1 down")
    assert "disk check" in v["nodes"][1]["reason"] and v["primary"] == 0
    assert not m.send("detach 1")["ok"]  # already down
    assert not m.send("attach 2")["ok"]  # already up
    assert not m.send("promote 7")["ok"]  # no such node
    mk = m.mark()
    assert m.send("attach 1 done")["ok"]
    m.wait_view(lambda v: v["nodes"][1]["status"] == "up", 10, "node1 up again", since=mk)
    assert [e["event"] for e in m.events() if e["node"] == 1][-2:] == ["detach", "attach"]
    assert m.send("detach 0")["ok"]
    ev = m.wait_event("failover", 10, lambda e: e["exit_status"] != -1)
    assert ev["exit_status"] == 3 and ev["detail"] == "cannot promote: test", ev
    m.wait_event("primary_not_found", 6)
    mk = m.mark()
    assert m.send("attach 0")["ok"]
    m.wait_view(lambda v: v["primary"] == 0 and all(n["status"] == "up" for n in v["nodes"]), 10,
                "all up again", since=mk)


def test_checks_disabled_static_view(cluster_driver, manager, cluster, tmp_path):
    """Bug guarded: with health checks off the view waits for checks that never come, or ignores
    ALWAYS_PRIMARY."""
    m = manager(cluster, workdir=tmp_path / "a", health_check={"period": "0"})
    v = m.wait_view(lambda v: True, 5)
    assert v["seq"] == 1 and v["primary"] == 0 and not v["checks_enabled"]
    assert [n["status"] for n in v["nodes"]] == ["up"] * 3
    assert [n["role"] for n in v["nodes"]] == ["primary", "standby", "standby"]
    backends = manager_config(cluster)["backends"]
    backends[1]["flag"] = "ALWAYS_PRIMARY"
    m2 = manager(cluster, workdir=tmp_path / "b", health_check={"period": "0"}, backends=backends)
    v = m2.wait_view(lambda v: True, 5)
    assert v["primary"] == 1 and v["nodes"][1]["role"] == "primary" and v["nodes"][0]["role"] == "standby"
