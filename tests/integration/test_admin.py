"""The SQL admin interface (doc/admin.md): answered by pgrelay, over both protocols, in order."""

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
        assert got[0] == "1" and got[1].startswith("pgrelay ") and got[2] == "2"
        w.send(pgwire.parse("", "select 3") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync()
               + pgwire.parse("", "show pool_version") + pgwire.bind("", "") + pgwire.describe("P", "")
               + pgwire.execute() + pgwire.sync()
               + pgwire.parse("", "select 4") + pgwire.bind("", "") + pgwire.execute() + pgwire.sync())
        vals = []
        for _ in range(3):
            cyc = w.read_cycle(timeout=5)
            assert not cyc.errors, cyc.errors
            vals.append(cyc.results[0].text_rows()[0][0])
        assert vals[0] == "3" and vals[1].startswith("pgrelay ") and vals[2] == "4"


def test_explain_route_and_errors(relay):
    """Bug guarded: EXPLAIN ROUTE misreports a class, or a malformed admin statement reaches PostgreSQL
    or ends the session."""
    with connect(relay.port) as c:
        assert c.execute("pgrelay explain route select * from t for update").fetchone()[:2] == \
            ("primary", "FOR UPDATE")
        assert c.execute("PGRELAY EXPLAIN ROUTE select 1").fetchone()[0] == "standby"
        assert c.execute("PGRELAY EXPLAIN ROUTE set search_path = x").fetchone()[0] == "all"
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
    with connect(relay.port) as c:
        c.execute("select 1")
        assert c.execute("show pool_processes").fetchall()
        assert c.execute("show pool_pools").fetchall()
        stats = c.execute("show pool_backend_stats").fetchall()
        assert len(stats) == 3
        hc = c.execute("show pool_health_check_stats").fetchall()
        assert len(hc) == 3 and all(int(r[6]) >= 1 for r in hc), hc  # total_count
        assert c.execute("show pool_failover_history").fetchall()[0][1] == "primary_found"
