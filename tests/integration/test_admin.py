"""The SQL admin interface (doc/admin.md): answered by pgrelay, over both protocols, in order."""

import struct

import psycopg
import pytest

import pgwire
from conftest import connect

pytestmark = pytest.mark.pgrelay_only

POOL_NODES_COLUMNS = ["node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role", "pg_role",
                      "select_cnt", "load_balance_node", "replication_delay", "replication_state",
                      "replication_sync_state", "last_status_change"]


def test_show_pool_nodes_simple_and_extended(relay, cluster):
    """Bug guarded: SHOW pool_nodes only works over the simple protocol (JDBC and prepared psycopg use
    the extended one and got PostgreSQL's 'unrecognized configuration parameter'), or its columns
    differ from the contract."""
    for threshold in (None, 0):
        with psycopg.connect(host="127.0.0.1", port=relay.port, user="app", password="app", dbname="app",
                             prepare_threshold=threshold) as c:
            for _ in range(3):  # the third run of a prepared statement is a Bind only
                cur = c.execute("show pool_nodes")
                assert [d.name for d in cur.description] == POOL_NODES_COLUMNS
                rows = cur.fetchall()
                assert [int(r[2]) for r in rows] == list(cluster.ports)
                assert rows[0][6] == "primary" and {r[6] for r in rows[1:]} == {"standby"}
                assert sum(r[9] == "true" for r in rows) == 1, rows
            assert c.execute("select 7").fetchone() == (7,)


def test_admin_units_in_a_pipeline_stay_in_order(relay):
    """Bug guarded: an admin answer overtakes the answers of statements sent before it, or a pipelined
    ordinary statement after it is lost."""
    with pgwire.connect(relay.port, timeout=5) as w:
        w.send(pgwire.query("select 1") + pgwire.query("show pool_version") + pgwire.query("select 2"))
        got = []
        for _ in range(3):
            cyc = w.read_cycle(timeout=5)
            assert not cyc.errors, cyc.errors
            got.append(cyc.results[0].text_rows()[0][0])
        assert got[0] == "1" and got[1].startswith("4.4.0 (pgrelay ") and got[2] == "2"
        w.send(pgwire.parse("", "select 3") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync()
               + pgwire.parse("", "show pool_version") + pgwire.bind("", "") + pgwire.describe("P", "")
               + pgwire.execute() + pgwire.sync()
               + pgwire.parse("", "select 4") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        vals = []
        for _ in range(3):
            cyc = w.read_cycle(timeout=5)
            assert not cyc.errors, cyc.errors
            vals.append(cyc.results[0].text_rows()[0][0])
        assert vals[0] == "3" and vals[1].startswith("4.4.0 (pgrelay ") and vals[2] == "4"


def test_explain_route_and_errors(relay):
    """Bug guarded: EXPLAIN ROUTE misreports a class, or a malformed admin statement reaches PostgreSQL
    or ends the session."""
    with connect(relay.port) as c:
        assert c.execute("pgrelay explain route select * from t for update").fetchone()[:2] == \
            ("primary", "FOR UPDATE")
        assert c.execute("PGRELAY EXPLAIN ROUTE select 1").fetchone()[0] == "standby"
        assert c.execute("PGRELAY EXPLAIN ROUTE set search_path = x").fetchone()[0] == "all"
        # A leading comment does not hide a PGRELAY command from the classifier.
        assert c.execute("/* tool */ -- x\n pgrelay explain route select 1").fetchone()[0] == "standby"
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("show pool_nothing")
        c.rollback()
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("pgrelay frobnicate")
        c.rollback()
        assert c.execute("select 'still here'").fetchone() == ("still here",)


def test_node_commands_need_admin_user(relay):
    """Bug guarded: any user can detach nodes."""
    with connect(relay.port) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("PGRELAY DETACH NODE 1")


def test_show_pools_processes_backend_stats(relay):
    """Bug guarded: the other SHOW commands fail or return nothing while sessions are open."""
    with connect(relay.port) as app, connect(relay.port, user="postgres", password="postgres",
                                             dbname="postgres") as c:
        app.execute("select 1")
        c.execute("select 1")
        assert c.execute("show pool_processes").fetchall()
        assert c.execute("show pool_pools").fetchall()
        stats = c.execute("show pool_backend_stats").fetchall()
        assert len(stats) == 3
        hc = c.execute("show pool_health_check_stats").fetchall()
        assert len(hc) == 3 and all(int(r[6]) >= 1 for r in hc), hc  # total_count
        assert c.execute("show pool_failover_history").fetchall()[0][1] == "primary_found"


def test_backend_stats_count_a_parse_by_its_parse_tree(relay):
    """Bug guarded: an extended-protocol write behind a comment counted as other_cnt (its Parse was
    counted by its first keyword while a Query was counted by its parse tree)."""
    def primary_counts(c):
        cur = c.execute("show pool_backend_stats")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, row)) for row in cur.fetchall()]
        return [r for r in rows if r["role"] == "primary"][0]

    with connect(relay.port) as app, connect(relay.port, user="postgres", password="postgres",
                                             dbname="postgres") as c:
        app.execute("create table if not exists stats_parse_t (a int)")
        app.commit()
        before = primary_counts(c)
        app.execute("/* tagged */ insert into stats_parse_t values (%s)", (1,))
        app.execute("-- tagged\n update stats_parse_t set a = %s", (2,))
        app.commit()
        after = primary_counts(c)
        assert int(after["insert_cnt"]) == int(before["insert_cnt"]) + 1, (before, after)
        assert int(after["update_cnt"]) == int(before["update_cnt"]) + 1, (before, after)
        app.execute("drop table stats_parse_t")
        app.commit()


RESTRICTED_SHOWS = ["pool_health_check_stats", "pool_failover_history", "pool_pools", "pool_processes",
                    "pool_backend_stats", "pool_cache"]


def test_show_commands_need_admin_or_stats_users(pgrelay, tmp_path):
    """Bug guarded (issue 9, security review): every SHOW pool_* was open to every user, showing other
    sessions' users and databases and the expanded failover command lines (SHOW pool_failover_history).
    pool_nodes and pool_version stay open, as in pgpool-II; the rest need admin_users or stats_users."""
    r = pgrelay(failover_command=f"echo secret-in-command %d >> {tmp_path}/fo.log")
    with connect(r.port) as c:  # "app": in neither list
        for name in ("pool_nodes", "pool_version"):
            assert c.execute(f"show {name}").fetchall()
        for name in RESTRICTED_SHOWS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                c.execute(f"SHOW {name}")
            c.rollback()
        # Over the extended protocol too (a prepared statement is answered by the same code).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("show pool_pools", prepare=True)
        c.rollback()
        assert c.execute("select 'still here'").fetchone() == ("still here",)
    with connect(r.port, user="postgres", password="postgres", dbname="postgres") as c:  # admin_users
        for name in RESTRICTED_SHOWS:
            c.execute(f"show {name}").fetchall()
    # stats_users may read every SHOW but still not run node commands.
    r2 = pgrelay(stats_users="md5user, app")
    with connect(r2.port) as c:
        for name in RESTRICTED_SHOWS:
            c.execute(f"show {name}").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("PGRELAY DETACH NODE 1")


def test_unterminated_query_is_refused(relay):
    """Bug guarded (issue 9, security review): a Query body without its terminating NUL ("SHOW pool_x"
    sent raw) made the admin error's %.60s read past the message and echo stale bytes of the buffer
    (an earlier statement of this or another session). Query and Parse bodies that are not exactly
    NUL-terminated get 08P01 "invalid message format", as PostgreSQL answers them."""
    marker = "STALE-" + "s" * 80
    with pgwire.connect(relay.port, timeout=5) as w:
        # Leave the marker in the read buffer, then overwrite only its start with the bad message.
        assert w.scalar(f"select '{marker}'") == marker
        body = b"SHOW pool_x"
        w.send(b"Q" + struct.pack("!I", 4 + len(body)) + body)
        msgs = w.read_all_until_close(timeout=5)
    errors = [pgwire.parse_error_fields(m.payload) for m in msgs if m.type == "E"]
    assert errors, msgs
    assert errors[0]["C"] == "08P01" and "invalid message format" in errors[0]["M"], errors
    assert not any("STALE" in e.get("M", "") for e in errors), errors
    # A Query with an embedded NUL, and a Parse whose parameter count overruns its body.
    for bad in (pgwire.msg("Q", b"select 1\0junk\0"),
                pgwire.msg("P", b"s1\0select 1\0" + struct.pack("!h", 3) + struct.pack("!i", 23))):
        with pgwire.connect(relay.port, timeout=5) as w:
            w.send(bad + pgwire.bind("", "s1") + pgwire.execute() + pgwire.sync())
            msgs = w.read_all_until_close(timeout=5)
        codes = [pgwire.parse_error_fields(m.payload)["C"] for m in msgs if m.type == "E"]
        assert codes == ["08P01"], (bad, msgs)
    with pgwire.connect(relay.port, timeout=5) as w:
        assert w.scalar("select 42") == "42"
