"""Online recovery (PGRELAY RECOVER NODE n, SHOW pool_recovery, doc/failover.md "Recovery") against
real PostgreSQL clusters, with the shipped conf/recovery_1st_stage.sh and conf/remote_start.sh.

The destructive tests get a private cluster (a copy of failover_helpers' template started by
scripts/cluster.sh on fresh ports; PG_EXTRA_SETTINGS turns wal_log_hints and full_page_writes on
for the pg_rewind path; without them pg_rewind refuses and the first stage falls back to
pg_basebackup). The refusal and failure tests use the session cluster: their first stage is a stand-in
script and PostgreSQL itself is never touched (a standby is only detached in pgrelay).
Client load comes from failover_load.ClientLoop threads (every login and query has a deadline).
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import pgwire
from conftest import CLUSTER_SH, DIRECT, REPO, free_port_range
from failover_helpers import PGBIN, OwnCluster, as_pg, cluster_template  # noqa: F401
from failover_load import ClientLoop, query, query_dicts, stop_all
from test_pgrelayctl import ctl, ctl_json
from test_failover_e2e import (detach_primary, e2e_relay, history,  # noqa: F401
                               nodes, port_node, readers_on, responsive, wait_all_up, wait_for,
                               writer)

pytestmark = [pytest.mark.pgrelay_only,
              pytest.mark.skipif(DIRECT, reason="tests pgrelay's recovery through its own port")]

ARGS = "%d %h %p %D %m %H %M %P %r %R %N %S"
FIRST_STAGE = f"{REPO / 'conf' / 'recovery_1st_stage.sh'} {ARGS}"
REMOTE_START = f"{REPO / 'conf' / 'remote_start.sh'} {ARGS}"
FOLLOW_SH = REPO / "conf" / "follow_primary.sh"
# pg_rewind needs wal_log_hints (or checksums) on the target and full_page_writes on the source;
# scripts/cluster.sh turns full_page_writes off for speed.
REWIND_SETTINGS = "wal_log_hints = on\nfull_page_writes = on"


# ---------------------------------------------------------------------------------------------------------
# Helpers.


@pytest.fixture
def rec_cluster(cluster_template):
    """Factory: rec_cluster(extra="") -> OwnCluster, a private copy of the template started with
    PG_EXTRA_SETTINGS=extra (scripts/cluster.sh). Stopped (immediate) and removed at teardown."""
    made = []

    def factory(extra=""):
        tmp = Path(tempfile.mkdtemp(prefix="pgrelay-rec-", dir="/tmp"))
        os.chmod(tmp, 0o755)
        d = tmp / "cluster"
        r = subprocess.run(["cp", "-a", str(cluster_template), str(d)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        c = OwnCluster(d, free_port_range(3), owned=True)
        c.frozen = set()
        made.append((tmp, c))
        r = subprocess.run(["bash", str(CLUSTER_SH), "start", str(d), str(c.baseport)], timeout=120,
                           capture_output=True, text=True, env=dict(os.environ, PG_EXTRA_SETTINGS=extra))
        assert r.returncode == 0, r.stdout + r.stderr
        assert c.wait_streaming(0, ["node1", "node2"]), "standbys do not stream"
        return c

    yield factory
    for tmp, c in made:
        for n in (2, 1, 0):
            c.pg_ctl(n, "-m", "immediate", "-w", "-t", "20", "stop")
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


def recovery_row(port):
    rows = query_dicts(port, "show pool_recovery")
    return rows[0] if rows else None


def recover(port, node, user="postgres", password="postgres"):
    """PGRELAY RECOVER NODE node; returns None when accepted, else the PgError."""
    try:
        query(port, f"PGRELAY RECOVER NODE {node}", user=user, password=password)
        return None
    except pgwire.PgError as e:
        return e


def wait_recovery_end(port, timeout, relay=None):
    """Polls SHOW pool_recovery until its stage is done or failed; returns (row, stages seen)."""
    seen = []

    def poll():
        row = recovery_row(port)
        if row and (not seen or seen[-1] != row["stage"]):
            seen.append(row["stage"])
        return row if row and row["stage"] in ("done", "failed") else None

    row = wait_for(poll, timeout, "the end of the recovery", interval=0.1, relay=relay)
    return row, seen


def recovery_events(port, node):
    return [h for h in history(port) if h["event"].startswith("recovery") and h["node_id"] == str(node)]


def kill_primary_and_fail_over(c, r):
    """kill -9 of node 0; returns the new primary once the other standby streams from it again."""
    c.kill9(0)
    n = wait_for(lambda: (lambda n: n[0]["status"] == "down" and any(
        row["role"] == "primary" and row["status"] == "up" for row in n.values()) and n)(nodes(r.port)),
        30, "a new primary after kill -9 of node 0", relay=r)
    new = next(i for i, row in n.items() if row["role"] == "primary")
    other = 3 - new
    wait_for(lambda: (lambda n: n[other]["status"] == "up" and n[other]["replication_state"] == "streaming")(
        nodes(r.port)), 40, f"node{other} streaming from node{new}", relay=r)
    return new


def recover_when_idle(port, node, timeout=15):
    """RECOVER NODE node, retried while 55006 (the failover's follow command may still be ending)."""
    def attempt():
        e = recover(port, node)
        if e is None:
            return True
        assert e.sqlstate == "55006", (e.sqlstate, e.fields.get("M"))
        return False
    wait_for(attempt, timeout, f"RECOVER NODE {node} accepted", interval=0.3)


def recover_under_load(c, r, tmp_path, table):
    """The common body: load, kill -9 of the primary, failover, RECOVER NODE 0 under load.
    Returns (new primary, final pool_recovery row, stages seen, loops, t_recover)."""
    query(r.port, f"drop table if exists {table}; create table {table}(id int primary key, w int, "
                  "at timestamptz default now())", user="app", password="app")
    w = writer(r.port, table, op_timeout=15.0)
    w.start()
    assert w.wait_ops(10, 15), w.all_ops()[-5:]
    new = kill_primary_and_fail_over(c, r)
    other = 3 - new
    rd = readers_on(c, r.port, {other})
    loops = [w, *rd.values()]
    try:
        assert w.wait_ops(len(w.ok_ops()) + 5, 15)
        t_rec = time.monotonic()
        recover_when_idle(r.port, 0)
        # One at a time: a second request while it runs is refused.
        e = recover(r.port, 0)
        assert e is not None and e.sqlstate == "55006", e
        row, seen = wait_recovery_end(r.port, 120, relay=r)
        # Load went on throughout the recovery.
        n_w, n_r = len(w.ok_ops()), len(rd[other].ok_ops())
        assert w.wait_ops(n_w + 5, 10) and rd[other].wait_ops(n_r + 5, 10)
    finally:
        stop_all(loops)
    # Sessions are never interrupted by a recovery: no error, no new login, no hang.
    for lp in loops:
        assert not lp.failed_ops(t_rec), (lp.name, lp.failed_ops(t_rec)[:5])
        assert not [e for e in lp.login_errors if e[0] >= t_rec], lp.login_errors
        assert not lp.timeouts(), lp.timeouts()[:3]
    assert {port_node(c, v) for v in w.values(t_rec)} == {new}
    assert {port_node(c, v) for v in rd[other].values(t_rec)} == {other}
    return new, row, seen, t_rec


def check_recovered(c, r, new, row, seen):
    """Node 0 is an up standby of `new`, streams from it, and gets reads."""
    assert row["stage"] == "done" and row["node_id"] == "0", row
    assert seen[0] in ("queued", "1st_stage", "remote_start", "wait_standby"), seen
    assert set(seen) <= {"queued", "1st_stage", "remote_start", "wait_standby", "attach", "done"}, seen
    n = nodes(r.port)
    assert n[0]["status"] == "up" and n[0]["role"] == "standby" and n[0]["pg_role"] == "standby", n[0]
    assert n[new]["role"] == "primary", n
    assert "node0" in c.streaming_names(new)
    assert c.query(0, "select pg_is_in_recovery()")[0][0] is True
    # Reads reach it: sessions reading from a standby (pgrelay.route = standby) land there too.
    rd0 = readers_on(c, r.port, {0})
    try:
        assert rd0[0].wait_ops(3, 10)
    finally:
        stop_all(rd0.values())
    assert {port_node(c, v) for v in rd0[0].values()} == {0}
    assert not rd0[0].failed_ops()
    ev = [h["event"] for h in recovery_events(r.port, 0)]
    assert ev[:1] == ["recovery_start"] and "recovery_1st_stage" in ev and "recovery_remote_start" in ev \
        and ev[-1] == "recovery_done", ev


def relay_with_recovery(e2e_relay, c, workdir, prefix="", **kw):
    return e2e_relay(c, workdir, recovery_1st_stage_command=prefix + FIRST_STAGE,
                     recovery_remote_start_command=prefix + REMOTE_START, recovery_timeout="90s",
                     load_balance={"delay_threshold": "16MB"}, **kw)


FAKE_SSH = """#!/bin/sh
# Stands in for ssh: logs the call, then runs the command line as the remote user (user@host)
# through a POSIX shell with an empty environment, as sshd would (no PGPASSWORD).
echo "$*" >> "{d}/ssh_calls.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    -o) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
dest=$1; shift
user=${{dest%@*}}
cd /
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin runuser -u "$user" -- sh -c "$*"
"""


def fake_ssh(workdir):
    p = Path(workdir) / "fake_ssh.sh"
    p.write_text(FAKE_SSH.format(d=workdir))
    p.chmod(0o755)
    return p


# ---------------------------------------------------------------------------------------------------------
# Recovery of the old primary after kill -9, under load.


@pytest.mark.deadline(150)
def test_recover_old_primary_with_pg_rewind_under_load(rec_cluster, e2e_relay, tmp_path):
    """Bug guarded: after kill -9 of the primary and a failover, PGRELAY RECOVER NODE 0 does not
    bring the old primary back as a standby of the new primary (pg_rewind path, wal_log_hints on),
    blocks or breaks sessions writing to the new primary or reading from the other standby, is
    accepted twice at once, is refused for the wrong reasons, or leaves the node down / not read
    from once it streams."""
    c = rec_cluster(REWIND_SETTINGS)
    r = relay_with_recovery(e2e_relay, c, tmp_path)
    wait_all_up(r.port)
    # Refusals before anything happens: the primary, an up standby, no such node, not an admin.
    for node, state in ((0, "55000"), (1, "55000"), (7, "22023")):
        e = recover(r.port, node)
        assert e is not None and e.sqlstate == state, (node, e)
    e = recover(r.port, 2, user="app", password="app")
    assert e is not None and e.sqlstate == "42501", e
    assert recovery_row(r.port) is None
    new, row, seen, t_rec = recover_under_load(c, r, tmp_path, "rec_rewind")
    print(f"pg_rewind recovery: {row['elapsed_ms']} ms, stages {seen}, detail {row['detail']!r}")
    check_recovered(c, r, new, row, seen)
    first = [h for h in recovery_events(r.port, 0) if h["event"] == "recovery_1st_stage"][-1]
    assert first["exit_status"] == "0" and "(pg_rewind)" in first["detail"], first
    # The refused second request and the refusals above left no recovery events of their own.
    assert [h["event"] for h in recovery_events(r.port, 0)].count("recovery_start") == 1
    assert responsive(r)


@pytest.mark.deadline(150)
def test_recover_old_primary_with_pg_basebackup_fallback(rec_cluster, e2e_relay, tmp_path):
    """Bug guarded: when pg_rewind cannot run (wal_log_hints off, no checksums) the first stage
    does not fall back to pg_basebackup, the copy loses the node's own settings (port) or its
    application_name (pgrelay never sees it streaming), or sessions break meanwhile. Both scripts
    run the node's commands over ssh here (RECOVERY_SSH=always, a stand-in ssh that runs them as
    postgres with an empty environment): a quoting mistake in the remote command lines breaks it."""
    c = rec_cluster("")
    ssh = fake_ssh(tmp_path)
    r = relay_with_recovery(e2e_relay, c, tmp_path,
                            prefix=f"RECOVERY_SSH=always PGRELAY_SSH={ssh} PGRELAY_SSH_USER=postgres ")
    wait_all_up(r.port)
    new, row, seen, t_rec = recover_under_load(c, r, tmp_path, "rec_bb")
    print(f"pg_basebackup recovery: {row['elapsed_ms']} ms, stages {seen}, detail {row['detail']!r}")
    check_recovered(c, r, new, row, seen)
    first = [h for h in recovery_events(r.port, 0) if h["event"] == "recovery_1st_stage"][-1]
    assert first["exit_status"] == "0" and "(pg_basebackup)" in first["detail"], first
    assert "pg_rewind failed: falling back to pg_basebackup" in r.log_text()
    assert not (c.data_dirs[0].parent / "node0.recovery-old").exists()
    ssh_calls = (tmp_path / "ssh_calls.txt").read_text()
    assert "postgres@127.0.0.1 " in ssh_calls and '/pg_basebackup" -D "$dir"' in ssh_calls \
        and '-w -t "$wait" start' in ssh_calls, ssh_calls[:2000]
    assert responsive(r)


# ---------------------------------------------------------------------------------------------------------
# Failures and refusals (session cluster; a stand-in first stage, PostgreSQL untouched).


STAND_IN = """#!/bin/sh
# A stand-in first stage: records its pid and its child's, then fails, or hangs, or succeeds
# (the node is left as it is: a running standby) when told to.
echo $$ > "{d}/stage.pid"
if [ -f "{d}/ok" ]; then
  echo "copied (stand-in)"
  exit 0
fi
if [ -f "{d}/hang" ]; then
  echo "copying, slowly"
  sleep 60 &
  echo $! > "{d}/child.pid"
  wait
fi
echo "cannot copy: test"
exit 3
"""


def pid_alive(path):
    try:
        os.kill(int(Path(path).read_text().strip()), 0)
        return True
    except (ProcessLookupError, FileNotFoundError, ValueError):
        return False


@pytest.mark.deadline(90)
def test_recovery_failures_and_refusals(cluster, e2e_relay, tmp_path):
    """Bug guarded: a first stage that fails or hangs past recovery_timeout leaves pgrelay
    recovering forever, leaves the command's process group running, attaches the node anyway, or
    loses the reason (history, SHOW pool_recovery); a recovery is accepted for the primary, an up
    node, during a failover or while another one runs; pgrelay stops answering meanwhile."""
    stage = tmp_path / "stage.sh"
    stage.write_text(STAND_IN.format(d=tmp_path))
    stage.chmod(0o755)
    r = e2e_relay(cluster, tmp_path, failover="sleep 3; exit 1", follow="", failover_command_timeout="10s",
                  search_primary_node_timeout="1s", recovery_1st_stage_command=f"{stage} {ARGS}",
                  recovery_timeout="3s")
    wait_all_up(r.port)
    admin = ClientLoop(r.port, lambda n: "show pool_nodes", name="admin", user="postgres",
                       password="postgres", pause=0.1, op_timeout=3.0)
    rd = readers_on(cluster, r.port, {1})
    loops = [admin, *rd.values()]
    admin.start()
    t0 = time.monotonic()
    try:
        # An up standby and the primary are refused (55000), and nothing is recorded; bad
        # syntax is 42601; SHOW pool_recovery needs admin_users or stats_users.
        for node in (0, 2):
            e = recover(r.port, node)
            assert e is not None and e.sqlstate == "55000", (node, e)
        for bad in ("PGRELAY RECOVER NODE", "PGRELAY RECOVER 2", "PGRELAY RECOVER NODE 2 3"):
            with pytest.raises(pgwire.PgError) as e:
                query(r.port, bad)
            assert e.value.sqlstate == "42601", (bad, e.value)
        with pytest.raises(pgwire.PgError) as e:
            query(r.port, "SHOW pool_recovery", user="app", password="app")
        assert e.value.sqlstate == "42501", e.value
        assert recovery_row(r.port) is None
        query(r.port, "PGRELAY DETACH NODE 2")
        wait_for(lambda: nodes(r.port)[2]["status"] == "down", 5, "node2 down")

        # 1. The first stage fails: clean error, node stays down, history says why. Asked with
        # pgrelayctl, which waits for the end like pcp_recovery_node and exits 1.
        out = ctl("recover", "2", port=r.port, timeout=30)
        assert out.returncode == 1 and "node 2: failed" in out.stdout, (out.stdout, out.stderr)
        row, seen = wait_recovery_end(r.port, 10, relay=r)
        assert row["stage"] == "failed" and "exit status 3" in row["detail"] \
            and "cannot copy: test" in row["detail"], row
        ev = recovery_events(r.port, 2)
        st = [h for h in ev if h["event"] == "recovery_1st_stage"][-1]
        assert st["exit_status"] == "3" and st["detail"] == "cannot copy: test", st
        assert str(tmp_path / "stage.sh") + " 2 127.0.0.1 " + str(cluster.ports[2]) in st["command"], st
        assert ev[-1]["event"] == "recovery_failed", ev
        time.sleep(1.5)  # a check or two: it must not be attached behind our back
        assert nodes(r.port)[2]["status"] == "down"

        # 2. The first stage hangs: recovery_timeout (3 s) kills its process group.
        (tmp_path / "hang").write_text("")
        t_hang = time.monotonic()
        assert recover(r.port, 2) is None
        wait_for(lambda: (tmp_path / "child.pid").exists(), 5, "the stand-in's child")
        # While it runs: shown live, and a second recovery is refused (55006).
        row = recovery_row(r.port)
        assert row["stage"] == "1st_stage" and row["node_id"] == "2", row
        wait_for(lambda: recovery_row(r.port)["detail"] == "copying, slowly", 3, "the output line live")
        e = recover(r.port, 2)
        assert e is not None and e.sqlstate == "55006", e
        row, seen = wait_recovery_end(r.port, 15, relay=r)
        took = time.monotonic() - t_hang
        assert row["stage"] == "failed" and "timed out" in row["detail"], row
        assert 2.5 < took < 3 + 2 + 4, took  # recovery_timeout + SIGKILL grace + slack
        st = [h for h in recovery_events(r.port, 2) if h["event"] == "recovery_1st_stage"][-1]
        assert "timed out" in st["detail"] and st["exit_status"] in ("143", "137"), st
        wait_for(lambda: not pid_alive(tmp_path / "child.pid") and not pid_alive(tmp_path / "stage.pid"),
                 5, "the stand-in's process group gone")
        assert nodes(r.port)[2]["status"] == "down"
        (tmp_path / "hang").unlink()

        # 3. During a failover (failover_command sleeps 3 s): refused with 55006.
        detach_primary(r)
        try:
            e = recover(r.port, 2)
            assert e is not None and e.sqlstate == "55006" and "failover" in e.fields.get("M", ""), e
        finally:
            wait_for(lambda: any(h["event"] == "primary_not_found" for h in history(r.port)), 15,
                     "the failover's end", relay=r)
            if nodes(r.port)[0]["status"] == "down":
                query(r.port, "PGRELAY ATTACH NODE 0")
            wait_for(lambda: (lambda n: n[0]["role"] == "primary" and n[0]["status"] == "up")(nodes(r.port)),
                     15, "node 0 primary again", relay=r)

        # 4. A first stage that succeeds, no recovery_remote_start_command (the stage is skipped):
        # node 2 (still a streaming standby) is waited for, attached, and up as a standby.
        (tmp_path / "ok").write_text("")

        def ctl_recover():  # retried while 55006: the failover's follow command may still end
            out, js = ctl_json("recover", "2", port=r.port, timeout=40)
            if js.get("sqlstate") == "55006":
                return None
            return out, js
        out, js = wait_for(ctl_recover, 15, "pgrelayctl recover 2 accepted", interval=0.3)
        assert out.returncode == 0 and js["ok"] is True and js["stage"] == "done", (js, out.stderr)
        row, seen = wait_recovery_end(r.port, 20, relay=r)
        assert row["stage"] == "done" and "up as a standby of primary node 0" in row["detail"], row
        ev = [h["event"] for h in recovery_events(r.port, 2)]
        assert ev[-4:] == ["recovery_start", "recovery_1st_stage", "recovery_standby", "recovery_done"], ev
        n = nodes(r.port)
        assert n[2]["status"] == "up" and n[2]["role"] == "standby", n[2]
        t_end = time.monotonic()
    finally:
        stop_all(loops)
    # Nobody noticed: the admin session and the reader on node1 went on without an error.
    for lp in loops:
        assert not lp.failed_ops(t0) and not lp.timeouts(), (lp.name, lp.failed_ops(t0)[:3])
    assert admin.max_gap(t0, t_end) < 2.5
    assert responsive(r)


# ---------------------------------------------------------------------------------------------------------
# conf/follow_primary.sh: its pg_rewind and pg_basebackup paths (no test reached them before).


def run_follow(c, node, new):
    env = dict(os.environ, PGPASSWORD="postgres", PGBIN=str(PGBIN), FOLLOW_WAIT="20",
               PGRELAY_FAILED_APPLICATION_NAME=f"node{node}")
    args = [str(FOLLOW_SH), str(node), "127.0.0.1", str(c.ports[node]), str(c.data_dirs[node]), str(new),
            "127.0.0.1", "0", "0", str(c.ports[new]), str(c.data_dirs[new]), "127.0.0.1", str(c.ports[0])]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.deadline(120)
def test_follow_primary_rewind_and_basebackup_paths(rec_cluster):
    """Bug guarded: follow_primary.sh's pg_rewind step (a diverged old primary) or its
    pg_basebackup step (a standby whose data pg_rewind cannot use) does not leave the node
    streaming from the new primary with its own port and application_name (pg_rewind and
    pg_basebackup copy the new primary's configuration files)."""
    c = rec_cluster(REWIND_SETTINGS)
    # node0 diverges: it commits a row node1 never gets, then dies; node1 is promoted.
    c.query(1, "alter system set primary_conninfo = ''")
    c.query(1, "select pg_reload_conf()")
    wait_for(lambda: "node1" not in c.streaming_names(0), 10, "node1 no longer streaming")
    c.query(0, "create table diverged(x int); insert into diverged values (1)", dbname="app")
    c.kill9(0)
    assert c.pg_ctl(1, "promote", "-w").returncode == 0
    c.query(1, "create table after_promote(x int)", dbname="app")
    # pg_rewind: node0 is neither running nor shut down cleanly.
    p = run_follow(c, 0, 1)
    assert p.returncode == 0 and "(pg_rewind)" in p.stdout, p.stdout + p.stderr
    assert c.wait_streaming(1, ["node0"])
    assert c.query(0, "select count(*) from pg_tables where tablename in ('diverged', 'after_promote')",
                   dbname="app")[0][0] == 1
    # pg_basebackup: node2 stopped uncleanly without a control file (pg_rewind cannot use it).
    c.pg_ctl(2, "-m", "immediate", "-w", "stop")
    as_pg(["rm", "-f", c.data_dirs[2] / "global" / "pg_control"])
    p = run_follow(c, 2, 1)
    assert p.returncode == 0 and "(pg_basebackup)" in p.stdout, p.stdout + p.stderr
    assert c.wait_streaming(1, ["node0", "node2"])
    assert c.query(2, "show port")[0][0] == str(c.ports[2])


@pytest.mark.deadline(60)
def test_recovery_wait_times_out(cluster, e2e_relay, tmp_path):
    """Bug guarded: a node that never shows up streaming in the primary's pg_stat_replication
    (here: its backends[].application_name names no streaming row) is attached anyway, or the
    recovery waits past recovery_timeout; the reason must say what was waited for."""
    stage = tmp_path / "stage.sh"
    stage.write_text(STAND_IN.format(d=tmp_path))
    stage.chmod(0o755)
    (tmp_path / "ok").write_text("")
    backends = [{"host": "127.0.0.1", "port": cluster.ports[i], "weight": 1.0,
                 "data_directory": str(cluster.data_dirs[i]),
                 "application_name": "not_streaming" if i == 2 else f"node{i}"} for i in range(3)]
    r = e2e_relay(cluster, tmp_path, failover="", follow="", backends=backends,
                  recovery_1st_stage_command=f"{stage} {ARGS}", recovery_timeout="3s")
    wait_all_up(r.port)
    query(r.port, "PGRELAY DETACH NODE 2")
    wait_for(lambda: nodes(r.port)[2]["status"] == "down", 5, "node2 down")
    t0 = time.monotonic()
    assert recover(r.port, 2) is None
    row, seen = wait_recovery_end(r.port, 15, relay=r)
    took = time.monotonic() - t0
    assert row["stage"] == "failed" and "recovery_timeout" in row["detail"] \
        and "wait_standby" in row["detail"] and "not_streaming" in row["detail"], row
    assert "wait_standby" in seen, seen
    assert 2.5 < took < 3 + 4, took
    ev = recovery_events(r.port, 2)
    assert ev[-1]["event"] == "recovery_failed" and "recovery_standby" not in [h["event"] for h in ev], ev
    time.sleep(1.5)
    assert nodes(r.port)[2]["status"] == "down"
    assert responsive(r)
