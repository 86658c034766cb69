"""Connecting through pgrelay and running simple queries."""

import psycopg

import pgwire
from conftest import connect, run_client


def test_psql_select_one(relay):
    """Bug guarded: pgrelay cannot serve the most basic libpq client (psql with a password)."""
    r = run_client(["psql", "-X", "-h", "127.0.0.1", "-p", str(relay.port), "-U", "app", "-d", "app",
                    "-At", "-c", "select 1"], password="app", timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_psycopg_reaches_primary(pgrelay, cluster):
    """Bug guarded: with load balancing off, a session is routed to a standby (or nowhere) instead of
    the primary."""
    relay = pgrelay(load_balance={"enabled": False})
    with connect(relay.port) as c:
        assert c.execute("select 1").fetchone() == (1,)
        assert c.execute("select inet_server_port()").fetchone()[0] == cluster.primary_port
        assert c.execute("select pg_is_in_recovery()").fetchone()[0] is False
        assert c.execute("select current_user, current_database()").fetchone() == ("app", "app")


def test_multi_statement_simple_query(relay):
    """Bug guarded: only the first result set of a multi-statement Query is relayed, or the
    ReadyForQuery arrives before the later results."""
    with pgwire.connect(relay.port) as c:
        cyc = c.simple("select 1; select 2, 3; select 'x' union all select 'y'")
        assert cyc.errors == []
        assert [r.text_rows() for r in cyc.results] == [[["1"]], [["2", "3"]], [["x"], ["y"]]]
        assert [r.command for r in cyc.results] == ["SELECT 1", "SELECT 1", "SELECT 2"]
        assert cyc.status == "I"
        assert [m.type for m in cyc.messages].count("Z") == 1


def test_error_inside_multi_statement(relay):
    """Bug guarded: an error in the middle of a multi-statement string leaves the session out of sync
    (statements after the error run, or ReadyForQuery is lost)."""
    with pgwire.connect(relay.port) as c:
        cyc = c.simple("select 1; select 1/0; select 3")
        assert cyc.results[0].text_rows() == [["1"]]
        assert len(cyc.errors) == 1 and cyc.errors[0]["C"] == "22012"
        assert len(cyc.results) == 2, "statements after the error must not run"
        assert cyc.status == "I"
        assert c.scalar("select 42") == "42"
    with connect(relay.port) as c:
        with c.cursor() as cur:
            try:
                cur.execute("select 1; select 1/0; select 3")
                raise AssertionError("the division by zero was not reported")
            except psycopg.errors.DivisionByZero:
                pass
        assert c.execute("select 7").fetchone() == (7,)


def test_parameter_status_reaches_client(relay, cluster):
    """Bug guarded: the client does not get the server's ParameterStatus messages (server_version,
    client_encoding, ...), so drivers misbehave (e.g. standard_conforming_strings unknown)."""
    with pgwire.connect(relay.port) as c:
        for k in ("server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
                  "integer_datetimes", "standard_conforming_strings", "is_superuser", "session_authorization"):
            assert k in c.params, f"missing ParameterStatus {k}: got {sorted(c.params)}"
        assert c.params["session_authorization"] == "app"
        assert c.params["is_superuser"] == "off"
        assert c.params["server_version"] == c.scalar("show server_version")
        assert c.backend_key is not None, "no BackendKeyData"
    with connect(relay.port) as c:
        with cluster.connect() as direct:
            assert c.info.parameter_status("server_version") == direct.info.parameter_status("server_version")
        # A SET that reports a parameter change must reach the client too.
        c.execute("set application_name = 'changed-by-set'")
        assert c.info.parameter_status("application_name") == "changed-by-set"


def test_application_name_reaches_backend(pgrelay, cluster):
    """Bug guarded: startup parameters from the client (application_name) are not passed to the
    backend, so pg_stat_activity shows the wrong name (checked on the primary: splitting off)."""
    relay = pgrelay(load_balance={"enabled": False})
    with connect(relay.port, application_name="it-appname-4711") as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
        with cluster.connect() as direct:
            rows = direct.execute("select pid from pg_stat_activity where application_name = %s",
                                  ("it-appname-4711",)).fetchall()
        assert (pid,) in rows, rows
        assert c.execute("show application_name").fetchone()[0] == "it-appname-4711"


def test_each_client_keeps_its_application_name_in_a_shared_pool(pgrelay):
    """Clients of one pool whose application_name equals the one the pool adopted share the pool's
    copy instead of keeping their own. Bug guarded: a client then reads another client's name, or
    a freed one once the client whose login made the pool has gone. Transaction mode over one
    backend, so every statement is a hand-over that syncs the name."""
    relay = pgrelay(pool={"mode": "transaction", "pool_size": 1}, load_balance={"enabled": False})
    first = connect(relay.port, application_name="it-shared-name")
    same = connect(relay.port, application_name="it-shared-name")
    other = connect(relay.port, application_name="it-other-name")
    none = connect(relay.port)
    try:
        for c, want in ((first, "it-shared-name"), (same, "it-shared-name"), (other, "it-other-name")):
            assert c.info.parameter_status("application_name") == want
            assert c.execute("show application_name").fetchone()[0] == want
        first.close()  # its login made the pool; the pool's copy stays
        for _ in range(3):
            assert same.execute("show application_name").fetchone()[0] == "it-shared-name"
            assert other.execute("show application_name").fetchone()[0] == "it-other-name"
            assert none.execute("show application_name").fetchone()[0] == ""
        late = connect(relay.port, application_name="it-shared-name")
        with late:
            assert late.execute("show application_name").fetchone()[0] == "it-shared-name"
    finally:
        for c in (first, same, other, none):
            c.close()


def test_startup_options_reach_backend(relay):
    """Bug guarded: other startup parameters (options=-c ..., DateStyle) are dropped on the way."""
    with pgwire.connect(relay.port, options="-c work_mem=7777kB", DateStyle="German") as c:
        assert c.scalar("show work_mem") == "7777kB"
        assert c.scalar("show datestyle").startswith("German")
