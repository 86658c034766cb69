"""pgrelayctl, the pcp replacement: every subcommand, its JSON, its exit codes (doc/admin.md).

Exit codes: 0 success, 1 refused or failed (an ErrorResponse), 2 usage or connection errors.
Read-only and reversible commands run against the session cluster; `promote` (destructive) gets a
private cluster; `stop` gets pgrelays of its own.
"""

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import connect, pgrelay_bin
from failover_helpers import calls, cluster_template, own_cluster, recorder  # noqa: F401
from test_failover_e2e import e2e_relay, nodes, wait_all_up, wait_for  # noqa: F401

pytestmark = pytest.mark.pgrelay_only

NODE_COLUMNS = ["node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role", "pg_role",
                "select_cnt", "load_balance_node", "replication_delay", "replication_state",
                "replication_sync_state", "last_status_change"]


def ctl_bin():
    p = os.environ.get("PGRELAYCTL_BIN")
    return os.path.abspath(p) if p else str(pgrelay_bin().parent / "pgrelayctl")


@pytest.fixture(autouse=True)
def need_binary():
    if not os.path.exists(ctl_bin()):
        pytest.skip(f"{ctl_bin()} not built")


def ctl(*args, port=None, user="postgres", password="postgres", env=None, timeout=20):
    """Runs pgrelayctl; stdin is /dev/null, so a password prompt would fail, never hang."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        e["PGPASSWORD"] = password
    e.update(env or {})
    opts = ["-h", "127.0.0.1"]
    if port is not None:
        opts += ["-p", str(port)]
    if user is not None:
        opts += ["-U", user]
    return subprocess.run([ctl_bin(), *opts, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=e)


def ctl_json(*args, **kw):
    r = ctl("--json", *args, **kw)
    try:
        return r, json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pgrelayctl --json {args} printed no JSON (exit {r.returncode}): "
                    f"{r.stdout!r} {r.stderr!r}")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------------------
# No server needed.


def test_help_is_a_man_page():
    """Bug guarded: --help lacks a section, exits non-zero, or a command's --help connects."""
    r = subprocess.run([ctl_bin(), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES"):
        assert f"\n{section}\n" in "\n" + r.stdout, section
    for cmd in ("nodes", "node", "attach", "detach", "promote", "recover", "watchdog", "reload", "stop",
                "show"):
        assert f"\n    {cmd}" in r.stdout, cmd
        # Port 1: nothing listens; a command's --help must not even try to connect.
        h = ctl("-p", "1", cmd, "--help")
        assert h.returncode == 0 and "SYNOPSIS" in h.stdout and cmd in h.stdout, (cmd, h.stdout, h.stderr)
    assert "--switchover" in ctl("promote", "--help").stdout


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["node"], ["node", "x"], ["node", "1", "2"], ["attach"], ["detach", "-1"],
    ["promote", "1", "--bogus"], ["stop", "slow"], ["stop", "fast", "now"], ["show"],
    ["show", "nodes;drop"], ["nodes", "extra"], ["--bogus-option", "nodes"], ["-t", "0", "nodes"],
])
def test_bad_usage_exits_2(args):
    """Bug guarded: bad usage is sent to the server (or reported as a refusal, exit 1)."""
    r = subprocess.run([ctl_bin(), "-p", "1", *args], capture_output=True, text=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
    assert "Usage" in r.stderr or "usage" in r.stderr, r.stderr


def test_connection_refused_exits_2():
    """Bug guarded: a connection error is reported as a refusal (exit 1) or hangs; its JSON is not
    valid (libpq's message has newlines and tabs)."""
    port = closed_port()
    r = ctl("nodes", port=port)
    assert r.returncode == 2 and "could not connect" in r.stderr, r
    r, j = ctl_json("nodes", port=port)
    assert r.returncode == 2 and j["ok"] is False and j["sqlstate"] is None and j["error"], j


# ---------------------------------------------------------------------------------------------------------
# Against the session cluster.


@pytest.fixture
def ctl_relay(pgrelay):
    return pgrelay(admin_users="postgres", stats_users="")


def test_nodes_and_node(ctl_relay):
    """Bug guarded: nodes/node print other columns than SHOW pool_nodes, the JSON is not an array
    of objects with string values, or an unknown node is not an error."""
    port = ctl_relay.port
    r = ctl("nodes", port=port)
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0]
    assert [c.strip() for c in header.split("|")] == NODE_COLUMNS, header
    assert "(3 rows)" in r.stdout
    r, j = ctl_json("nodes", port=port)
    assert r.returncode == 0 and isinstance(j, list) and len(j) == 3, j
    assert all(list(row) == NODE_COLUMNS for row in j), j
    assert [row["node_id"] for row in j] == ["0", "1", "2"] and j[0]["role"] == "primary", j
    assert all(isinstance(v, str) for row in j for v in row.values()), j
    # SHOW pool_nodes is open to every user.
    assert ctl("nodes", port=port, user="app", password="app").returncode == 0
    r = ctl("node", "1", port=port)
    assert r.returncode == 0 and any(line.split(":")[0].strip() == "node_id" and line.split(":")[1].strip() == "1"
                                     for line in r.stdout.splitlines()), r.stdout
    r, j = ctl_json("node", "1", port=port)
    assert r.returncode == 0 and isinstance(j, dict) and j["node_id"] == "1" and j["role"] == "standby", j
    r, j = ctl_json("node", "7", port=port)
    assert r.returncode == 1 and j["ok"] is False and "no such node" in j["error"], (r, j)


def test_show(ctl_relay):
    """Bug guarded: show WHAT does not map to SHOW pool_WHAT, an unknown SHOW is not exit 1 with
    the server's SQLSTATE (its message has quotes: the JSON must escape them), or a non-admin gets
    the statistics."""
    port = ctl_relay.port
    for what, col in (("version", "pool_version"), ("pool_version", "pool_version"),
                      ("health_check_stats", "retry_count"), ("pools", "pool_pid"),
                      ("processes", "client_id"), ("backend_stats", "select_cnt"),
                      ("failover_history", "event")):
        r, j = ctl_json("show", what, port=port)
        assert r.returncode == 0 and isinstance(j, list), (what, r.stderr)
        if j:
            assert col in j[0], (what, j[0])
        assert ctl("show", what, port=port).returncode == 0
    assert len(ctl_json("show", "health_check_stats", port=port)[1]) == 3
    r, j = ctl_json("show", "no_such_thing", port=port)
    assert r.returncode == 1 and j == {"ok": False, "sqlstate": "42704",
                                       "error": 'unrecognized configuration parameter "pool_no_such_thing"'}, j
    assert "42704" in r.stderr
    r, j = ctl_json("show", "pools", port=port, user="app", password="app")
    assert r.returncode == 1 and j["sqlstate"] == "42501", j


def test_non_admin_is_refused_with_exit_1(ctl_relay):
    """Bug guarded: a user outside admin_users may attach/detach/promote/reload/stop, or the
    refusal exits 0 or 2."""
    port = ctl_relay.port
    for args in (["attach", "1"], ["detach", "1"], ["promote", "1"], ["promote", "1", "--switchover"],
                 ["reload"], ["stop"], ["stop", "fast"], ["recover", "1"]):
        r, j = ctl_json(*args, port=port, user="app", password="app")
        assert r.returncode == 1 and j["ok"] is False and j["sqlstate"] in ("42501", "42601"), (args, j)
        if args[0] != "recover":  # may be an unknown command where online recovery is not built
            assert j["sqlstate"] == "42501", (args, j)
    assert ctl_relay.alive()
    assert [r["status"] for r in nodes(port).values()] == ["up", "up", "up"]


def test_detach_attach_reload(ctl_relay):
    """Bug guarded: detach/attach through pgrelayctl do not act, print no status, or their JSON is
    not {"ok":true,"status":...}; reload does not reload; a refused detach exits 0."""
    r = ctl_relay
    port = r.port
    p, j = ctl_json("detach", "2", port=port)
    assert p.returncode == 0 and j["ok"] is True and j["status"] == "PGRELAY DETACH", j
    assert "node 2" in j.get("message", ""), j
    wait_for(lambda: nodes(port)[2]["status"] == "down", 5, "node2 down")
    p, j = ctl_json("detach", "2", port=port)  # already down: refused
    assert p.returncode == 1 and j["ok"] is False and j["sqlstate"] == "55000", j
    p = ctl("attach", "2", port=port)
    assert p.returncode == 0 and p.stdout.startswith("PGRELAY ATTACH"), p.stdout
    wait_for(lambda: nodes(port)[2]["status"] == "up", 10, "node2 up again")
    p, j = ctl_json("detach", "9", port=port)
    assert p.returncode == 1 and j["sqlstate"] == "22023", j
    # reload: the same as SIGHUP.
    off = r.log_size()
    p, j = ctl_json("reload", port=port)
    assert p.returncode == 0 and j["ok"] is True and j["status"] == "PGRELAY RELOAD", j
    assert r.wait_log("reload: configuration", timeout=10, start=off) is not None
    assert r.alive()


def test_watchdog_and_recover_print_what_the_server_says(ctl_relay):
    """Bug guarded: watchdog/recover hide the server's answer: rows print as rows, an "unknown
    command" (a build without the feature) or a refusal is printed with exit 1."""
    port = ctl_relay.port
    r, j = ctl_json("watchdog", port=port)
    if r.returncode == 0:
        assert isinstance(j, list), j
    else:
        assert r.returncode == 1 and j["ok"] is False and j["sqlstate"], (r, j)
        assert j["error"] in r.stderr
    # Node 9 does not exist: refused either way, and nothing is recovered.
    r, j = ctl_json("recover", "9", port=port)
    assert r.returncode == 1 and j["ok"] is False and j["sqlstate"], (r, j)


def test_password_sources_and_no_prompt(ctl_relay, tmp_path):
    """Bug guarded: the connection prompts for a password (hangs a script) instead of failing
    with exit 2, or PGPASSFILE / ~/.pgpass are not used."""
    port = ctl_relay.port
    r = ctl("nodes", port=port, password=None, timeout=15)
    assert r.returncode == 2 and "password" in r.stderr.lower(), r
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{port}:*:postgres:postgres\n")
    passfile.chmod(0o600)
    r = ctl("nodes", port=port, password=None, env={"PGPASSFILE": str(passfile)})
    assert r.returncode == 0, r.stderr
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(f"127.0.0.1:{port}:*:postgres:postgres\n")
    (home / ".pgpass").chmod(0o600)
    r = ctl("nodes", port=port, password=None, env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    r = ctl("nodes", port=port, password="wrong")
    assert r.returncode == 2, r


@pytest.mark.parametrize("mode", ["smart", "fast"])
def test_stop(pgrelay, mode):
    """Bug guarded: stop does not shut pgrelay down (or not in the asked mode), or reports an
    error for the connection the shutdown closes."""
    r = pgrelay()
    idle = connect(r.port, user="app", password="app", dbname="app")
    try:
        idle.execute("select 1")
        args = ["stop"] if mode == "smart" else ["stop", "fast"]
        p, j = ctl_json(*args, port=r.port)
        assert p.returncode == 0 and j == {"ok": True, "status": "PGRELAY STOP",
                                           "message": f"{mode} shutdown requested"}, (p, j)
        if mode == "smart":
            # Smart waits for the idle session (up to shutdown_timeout, 3 s here).
            time.sleep(0.5)
            assert r.alive(), "smart shutdown did not wait for the idle client"
            assert r.wait_log("smart shutdown", timeout=5) is not None
        code = r.wait(15)
        assert code == 0, code
    finally:
        try:
            idle.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------------------
# promote: a private cluster.


@pytest.mark.deadline(150)
def test_promote_without_and_with_switchover(own_cluster, e2e_relay, tmp_path):
    """Bug guarded: `promote N` without --switchover runs follow_primary_command for the other
    nodes (pcp_promote_node without -s leaves them alone), its JSON/exit code are wrong, or
    `promote N --switchover` of a down node is not refused with exit 1."""
    c = own_cluster
    r = e2e_relay(c, tmp_path)
    wait_all_up(r.port)
    p, j = ctl_json("promote", "1", port=r.port)
    assert p.returncode == 0 and j["ok"] is True and j["status"] == "PGRELAY PROMOTE", j
    assert "do not follow" in j["message"], j
    wait_for(lambda: nodes(r.port)[1]["role"] == "primary", 30, "node1 primary", relay=r)
    time.sleep(2)  # a follow command would have started by now
    fo = [x for x in calls(tmp_path) if x[0] == "failover"]
    assert len(fo) == 1 and fo[0][1][0] == "0" and fo[0][1][4] == "1", fo
    assert not [x for x in calls(tmp_path) if x[0] == "follow"], calls(tmp_path)
    n = nodes(r.port)
    assert n[0]["status"] == "down" and n[1]["role"] == "primary", n
    # The old primary is down: promoting it back is refused (exit 1), with or without --switchover.
    for args in (["promote", "0", "--switchover"], ["promote", "0"]):
        p, j = ctl_json(*args, port=r.port)
        assert p.returncode == 1 and j["ok"] is False and j["sqlstate"] == "55000", (args, j)
