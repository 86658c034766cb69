"""Read/write splitting and load balancing: which node runs each statement.

Node ids follow `backends`: node 0 is the primary, nodes 1 and 2 are streaming standbys. Unless a test
says otherwise the primary has weight 0, so a balanced read never lands on it: a read seen on node 0
was sent there on purpose, a write seen on a standby would have failed with SQLSTATE 25006. Where a
statement ran is read from `inet_server_port()` in its result, or, for statements that return
nothing telling, from pg_stat_activity on every node (`Tagged` / `ran_on`, routing_helpers.py).

Tests that need one configuration share a module-wide pgrelay (`split`: weights 0/1/1, session
pooling, defaults otherwise); tests of a particular setting start their own. Both have
load_balance.read_your_writes off: with it on, a
read right after a write may rightly go to the primary until a standby replayed the write, which is
tested on its own in test_routing_lag.py.
"""

import re
import time

import psycopg
import pytest

import pgwire
from conftest import connect, run_client
from routing_helpers import (
    POOL_NODES_COLUMNS, PRIMARY, STANDBYS, ActivityWatch, Tagged, backends_for, explain_route, module_relay,
    node_of, pool_nodes, ran_on, routing_relay, session_nodes, shares, wait_nodes_known, wait_replayed, where,
    where_many)

pytestmark = pytest.mark.pgrelay_only


# ---------------------------------------------------------------------------------------------------------
# Fixtures.

SETUP_SQL = """
drop table if exists rt_items, rt_canary, rt_s.rt_only_in_s cascade;
drop schema if exists rt_s cascade;
create table rt_items (id serial primary key, v text);
insert into rt_items (v) select 'row ' || g from generate_series(1, 10) g;
create table rt_canary (x int);
create sequence if not exists rt_seq;
create schema rt_s;
create table rt_s.rt_only_in_s (x int);
insert into rt_s.rt_only_in_s values (7);
create or replace function rt_volatile() returns int language sql volatile as 'select 1';
create or replace function rt_ro_volatile() returns int language sql volatile as 'select 2';
"""

TEARDOWN_SQL = """
drop table if exists rt_items, rt_canary cascade;
drop schema if exists rt_s cascade;
drop sequence if exists rt_seq;
drop function if exists rt_volatile(), rt_ro_volatile();
"""


@pytest.fixture(scope="module")
def objects(cluster):
    """Tables, a sequence, a schema and functions in database app, replicated to both standbys."""
    with cluster.connect(user="app", password="app") as c:
        c.execute(SETUP_SQL)
    wait_replayed(cluster)
    yield
    with cluster.connect(user="app", password="app") as c:
        c.execute(TEARDOWN_SQL)


@pytest.fixture(scope="module")
def split_relay(cluster, objects, tmp_path_factory):
    with module_relay(cluster, tmp_path_factory.mktemp("split"), weights=(0, 1, 1),
                      load_balance={"read_your_writes": False}) as r:
        yield r


@pytest.fixture
def split(split_relay, request):
    """The module's pgrelay (weights 0/1/1); its log tail goes into this test's failure report."""
    request.node._pgrelays = [split_relay]
    return split_relay


@pytest.fixture
def sconn(split):
    with connect(split.port) as c:
        yield c


def lb_relay(pgrelay, cluster, weights=(0, 1, 1), pool_mode=None, **lb):
    """pgrelay with the given weights and load_balance keys (and pool mode). read_your_writes is off
    unless given: a read right after a write is then decided by the rule under test alone
    (test_routing_lag.py covers read-your-writes)."""
    lb.setdefault("read_your_writes", False)
    kw = {"load_balance": lb}
    if pool_mode:
        kw["pool"] = {"mode": pool_mode}
    return routing_relay(pgrelay, cluster, weights=weights, **kw)


def sqlstate(exc_info):
    return exc_info.value.sqlstate


# ---------------------------------------------------------------------------------------------------------
# The oracle itself, straight against PostgreSQL (runs with PGRELAY_TEST_DIRECT too).


def test_direct_nodes_report_their_port_and_role(cluster):
    """(Talks to PostgreSQL only, so it also runs with PGRELAY_TEST_DIRECT=1.)
    Bug guarded: the tests' oracle is wrong: each node must report its own port through
    inet_server_port() and only the standbys must be in recovery; otherwise every routing assertion
    here means nothing."""
    for n in range(3):
        with cluster.connect(n, user="app", password="app") as c:
            port, rec = c.execute("select inet_server_port(), pg_is_in_recovery()").fetchone()
            assert node_of(cluster, port) == n
            assert rec is (n != PRIMARY)


# ---------------------------------------------------------------------------------------------------------
# Reads go to a standby.

READS = [
    ("plain", "select inet_server_port()"),
    ("upper-case", "SELECT INET_SERVER_PORT()"),
    ("leading-blank-and-comment", "\n  /* not a hint */ select inet_server_port()"),
    ("trailing-semicolon", "select inet_server_port();"),
    ("from-table", "select inet_server_port() from rt_items where id = 1"),
    ("join", "select inet_server_port() from rt_items a join rt_items b using (id) where a.id = 1"),
    ("aggregate", "select inet_server_port() + 0 * count(*) from rt_items"),
    ("subquery", "select inet_server_port() where exists (select 1 from rt_items where id = 2)"),
    ("with", "with x as (select inet_server_port() as p) select p from x"),
    ("with-recursive", "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) "
                       "select inet_server_port() from r limit 1"),
    ("values", "values (inet_server_port())"),
    ("union", "select inet_server_port() union select inet_server_port()"),
    ("stable-function", "select inet_server_port() where now() is not null"),
    ("pg_sleep", "select inet_server_port() from pg_sleep(0)"),
    ("show", "show port"),
    ("current_setting", "select current_setting('port')::int"),
]


@pytest.mark.parametrize("sql", [s for _, s in READS], ids=[i for i, _ in READS])
def test_read_goes_to_standby(sconn, cluster, sql):
    """Bug guarded: a read-only statement (plain SELECT, WITH of reads, VALUES, SHOW, ...) is not
    load balanced: with weight 0 on the primary it must run on a standby."""
    assert where(sconn, cluster, sql) in STANDBYS


def test_recovery_probe_is_balanced(sconn, cluster):
    """Bug guarded: `select inet_server_port(), pg_is_in_recovery()` (the usual 'where am I' probe;
    pg_is_in_recovery is volatile in pg_proc but only reads) is sent to the primary."""
    port, rec = sconn.execute("select inet_server_port(), pg_is_in_recovery()").fetchone()
    assert node_of(cluster, port) in STANDBYS and rec is True


def test_copy_to_stdout_goes_to_standby(sconn, cluster):
    """Bug guarded: COPY ... TO STDOUT (a read) is not balanced, or its CopyOut stream is broken
    when it comes from a standby."""
    with sconn.cursor() as cur:
        with cur.copy("copy (select inet_server_port() from generate_series(1, 3)) to stdout") as cp:
            data = b"".join(bytes(b) for b in cp)
    ports = {int(x) for x in data.decode().split()}
    assert len(ports) == 1 and node_of(cluster, ports.pop()) in STANDBYS


def test_explain_of_read_goes_to_standby(sconn, cluster):
    """Bug guarded: EXPLAIN / EXPLAIN ANALYZE of a read is sent to the primary."""
    for sql in ("explain select * from rt_items where id = 1", "explain analyze select count(*) from rt_items"):
        t = Tagged("explain-read")
        sconn.execute(t(sql)).fetchall()
        nodes = ran_on(cluster, t.tag)
        assert len(nodes) == 1 and nodes <= set(STANDBYS), f"{sql!r} ran on {nodes}"


# ---------------------------------------------------------------------------------------------------------
# Writes and anything not provably read-only go to the primary (inet_server_port() in the result).

WRITES = [
    ("insert", "insert into rt_items (v) values ('w') returning inet_server_port()"),
    ("update", "update rt_items set v = v where id = 1 returning inet_server_port()"),
    ("data-modifying-with", "with w as (insert into rt_items (v) values ('cte') returning id) "
                            "select inet_server_port() from w"),
    ("for-update", "select inet_server_port() from rt_items where id = 1 for update"),
    ("for-no-key-update", "select inet_server_port() from rt_items where id = 1 for no key update"),
    ("for-share", "select inet_server_port() from rt_items where id = 1 for share"),
    ("for-key-share", "select inet_server_port() from rt_items where id = 1 for key share"),
    ("for-update-in-subquery", "select inet_server_port() from (select * from rt_items where id = 1 for update) s"),
    ("nextval", "select inet_server_port(), nextval('rt_seq')"),
    ("setval", "select inet_server_port(), setval('rt_seq', 100)"),
    ("random", "select inet_server_port(), random()"),
    ("clock_timestamp", "select inet_server_port(), clock_timestamp()"),
    ("user-volatile-function", "select inet_server_port(), rt_volatile()"),
    ("txid_current", "select inet_server_port(), txid_current()"),
    ("advisory-lock", "select inet_server_port(), pg_advisory_xact_lock(4242)"),
    ("set_config", "select inet_server_port(), set_config('rt.x', '1', false)"),
    ("pg_notify", "select inet_server_port(), pg_notify('rt_chan', 'x')"),
    ("large-object-write", "select inet_server_port(), lo_unlink(lo_from_bytea(0, 'abc'))"),
    ("function-in-where", "select inet_server_port() where random() >= 0"),
]


@pytest.mark.parametrize("sql", [s for _, s in WRITES], ids=[i for i, _ in WRITES])
def test_write_goes_to_primary(sconn, cluster, sql):
    """Bug guarded: a write, a row lock or a call of a writing / volatile function is sent to a
    standby (SQLSTATE 25006 'cannot execute ... in a read-only transaction', or a wrong result)."""
    assert where(sconn, cluster, sql) == PRIMARY


def test_delete_goes_to_primary(sconn, cluster):
    """Bug guarded: DELETE is sent to a standby."""
    (rid,) = sconn.execute("insert into rt_items (v) values ('to delete') returning id").fetchone()
    assert where(sconn, cluster, f"delete from rt_items where id = {rid} returning inet_server_port()") == PRIMARY


# Statements without a telling result: found in pg_stat_activity. Each entry: (id, sql, expected error
# SQLSTATE or None, clean-up statement or None).
PRIMARY_ONLY = [
    ("merge", "merge into rt_items t using (select 1 as id) s on t.id = s.id "
              "when matched then update set v = t.v when not matched then insert (v) values ('m')", None, None),
    ("create-table", "create table rt_ddl_tmp (a int)", None, "drop table rt_ddl_tmp"),
    ("select-into", "select 1 as a into rt_into_tmp", None, "drop table rt_into_tmp"),
    ("create-table-as", "create table rt_ctas_tmp as select 1 as a", None, "drop table rt_ctas_tmp"),
    ("explain-of-insert", "explain insert into rt_items (v) values ('x')", None, None),
    ("explain-analyze-of-insert", "explain analyze insert into rt_items (v) values ('x')", None, None),
    ("truncate", "truncate rt_canary", None, None),
    ("vacuum", "vacuum rt_canary", None, None),
    ("analyze", "analyze rt_canary", None, None),
    ("do-block", "do $$ begin perform 1; end $$", None, None),
    ("listen", "listen rt_chan_x", None, "unlisten rt_chan_x"),
    ("unlisten", "unlisten rt_chan_x", None, None),
    ("notify", "notify rt_chan_x", None, None),
    ("grant", "grant select on rt_canary to public", None, None),
    ("parse-error", "selec inet_server_port()", "42601", None),
    ("multi-statement", "select 1; select 2", None, None),
]


@pytest.mark.parametrize("sql,err,cleanup", [e[1:] for e in PRIMARY_ONLY], ids=[e[0] for e in PRIMARY_ONLY])
def test_statement_runs_on_primary_only(sconn, cluster, sql, err, cleanup):
    """Bug guarded: DDL, MERGE, SELECT INTO, EXPLAIN of a write, maintenance, LISTEN/NOTIFY, a
    statement the parser rejects or a multi-statement string is sent to a standby (or to several
    nodes)."""
    t = Tagged("primary-only")
    tagged_sql = t(sql)
    if ";" in sql:  # a multi-statement string: the tag goes on the first statement
        first, rest = sql.split(";", 1)
        tagged_sql = t(first) + ";" + rest
    if err:
        with pytest.raises(psycopg.Error) as ei:
            sconn.execute(tagged_sql)
        assert sqlstate(ei) == err
    else:
        sconn.execute(tagged_sql)
    assert ran_on(cluster, t.tag) == {PRIMARY}
    if cleanup:
        sconn.execute(cleanup)


def test_multi_statement_string_runs_on_primary(sconn, cluster):
    """Bug guarded: a multi-statement simple query is split across nodes or sent to a standby
    (pgpool-II's rule: the whole string goes to the primary)."""
    cur = sconn.execute("select inet_server_port(); select inet_server_port() + 0")
    ports = [cur.fetchone()[0]]
    assert cur.nextset()
    ports.append(cur.fetchone()[0])
    assert [node_of(cluster, p) for p in ports] == [PRIMARY, PRIMARY]


def test_multi_statement_string_via_psql(split, cluster):
    """Bug guarded: psql -c with two statements (one Query message) gets results from different nodes."""
    r = run_client(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(split.port), "-U", "app", "-d", "app",
                    "-c", "select inet_server_port(); select inet_server_port() + 0"], timeout=30)
    assert r.returncode == 0, r.stderr
    assert [node_of(cluster, p) for p in r.stdout.split()] == [PRIMARY, PRIMARY], r.stdout


def test_copy_from_stdin_goes_to_primary(sconn, cluster):
    """Bug guarded: COPY FROM STDIN is sent to a standby, or its CopyIn exchange breaks."""
    with sconn.cursor() as cur:
        with cur.copy("copy rt_canary (x) from stdin") as cp:
            for i in range(5):
                cp.write_row((1000 + i,))
    with cluster.connect(user="app", password="app") as d:
        n = d.execute("select count(*) from rt_canary where x between 1000 and 1004").fetchone()[0]
    assert n == 5


def test_parse_error_is_answered_and_session_goes_on(sconn, cluster):
    """Bug guarded: a statement the classifier cannot parse breaks the session or is answered by
    pgrelay instead of PostgreSQL (the client must get PostgreSQL's 42601 with its position)."""
    with pytest.raises(psycopg.errors.SyntaxError) as ei:
        sconn.execute("select from where")
    assert ei.value.diag.statement_position is not None
    assert where(sconn, cluster) in STANDBYS


def test_lock_in_transaction_goes_to_primary(sconn, cluster):
    """Bug guarded: LOCK TABLE is sent to a standby (25006 for strong lock modes) or the transaction's
    later reads leave the node that holds the lock."""
    sconn.execute("begin")
    sconn.execute("lock table rt_canary in access exclusive mode")
    assert where(sconn, cluster) == PRIMARY
    sconn.execute("commit")


def test_large_objects_stay_on_primary(sconn, cluster):
    """Bug guarded: large-object calls are balanced: lo_from_bytea on a standby fails ('cannot assign
    OIDs during recovery') and lo_get may not see a fresh object there."""
    port, oid = sconn.execute("select inet_server_port(), lo_from_bytea(0, 'payload')").fetchone()
    assert node_of(cluster, port) == PRIMARY
    assert sconn.execute(f"select lo_get({oid})").fetchone()[0] == b"payload"
    sconn.execute(f"select lo_unlink({oid})")


def test_serializable_transaction_reads_from_primary(sconn, cluster):
    """Bug guarded: a SERIALIZABLE transaction reads on a standby (PostgreSQL refuses serializable
    mode in a hot standby, SQLSTATE 0A000)."""
    sconn.execute("begin isolation level serializable")
    assert where(sconn, cluster) == PRIMARY
    sconn.execute("commit")
    sconn.execute("start transaction isolation level serializable, read only")
    assert where(sconn, cluster) == PRIMARY
    sconn.execute("commit")


def test_session_characteristics_serializable_reads_from_primary(sconn, cluster):
    """Bug guarded: after SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE
    reads still go to a standby, which refuses them (0A000)."""
    sconn.execute("set session characteristics as transaction isolation level serializable")
    assert where(sconn, cluster) == PRIMARY


def test_default_transaction_isolation_serializable_reads_from_primary(sconn, cluster):
    """Bug guarded: SET default_transaction_isolation = 'serializable' reaches the standby and the
    next balanced read fails there with 0A000 'cannot use serializable mode in a hot standby'."""
    sconn.execute("set default_transaction_isolation = 'serializable'")
    assert where(sconn, cluster) == PRIMARY


def test_two_phase_commit_commands_go_to_primary(sconn):
    """Bug guarded: COMMIT PREPARED / ROLLBACK PREPARED are sent to a standby (25006 'cannot execute
    COMMIT PREPARED during recovery' instead of the primary's answer)."""
    for cmd in ("commit prepared 'rt_no_such_gid'", "rollback prepared 'rt_no_such_gid'"):
        with pytest.raises(psycopg.Error) as ei:
            sconn.execute(cmd)
        assert sqlstate(ei) == "42704", f"{cmd}: {ei.value}"


def test_prepare_transaction_after_reads_fails_cleanly(sconn, cluster):
    """Bug guarded: PREPARE TRANSACTION in a transaction that read on a standby goes to the standby
    (25006), or its error leaves the standby's part of the transaction open so the session is stuck.
    The test cluster has max_prepared_transactions = 0, so the primary's answer is 55000."""
    sconn.execute("begin")
    assert where(sconn, cluster) in STANDBYS
    with pytest.raises(psycopg.Error) as ei:
        sconn.execute("prepare transaction 'rt_gid'")
    assert sqlstate(ei) == "55000", str(ei.value)
    sconn.execute("rollback")
    assert sconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    where(sconn, cluster)  # answered (pgrelay may keep the session on the primary after 2PC)


def test_notification_reaches_a_balancing_session(split, cluster):
    """Bug guarded: LISTEN goes to a standby ('cannot execute LISTEN during recovery'), or a
    notification from the primary's backend is lost for a session that balanced its reads before
    (it has links to a standby and the primary)."""
    got = []
    with connect(split.port) as a, connect(split.port) as b:
        a.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        assert where(a, cluster) in STANDBYS
        a.execute("listen rt_chan")
        b.execute("notify rt_chan, 'hello'")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            where(a, cluster)
            time.sleep(0.05)
        assert got == [("rt_chan", "hello")]


def test_function_lists_override_builtin_rules(pgrelay, cluster, objects):
    """Bug guarded: load_balance.read_only_function_list / write_function_list are ignored: a volatile
    function declared read-only must be balanced, a harmless built-in declared writing must go to the
    primary."""
    r = lb_relay(pgrelay, cluster, read_only_function_list="rt_ro_volatile",
                 write_function_list="upper")
    with connect(r.port) as c:
        assert where(c, cluster, "select inet_server_port(), rt_ro_volatile()") in STANDBYS
        assert where(c, cluster, "select inet_server_port(), rt_volatile()") == PRIMARY
        assert where(c, cluster, "select inet_server_port(), upper('a')") == PRIMARY
        assert where(c, cluster, "select inet_server_port(), lower('a')") in STANDBYS


# ---------------------------------------------------------------------------------------------------------
# Load balancing by weight.

SESSIONS = 300
TOLERANCE = 0.1  # absolute share; binomial sd at 300 sessions is <= 0.029


@pytest.mark.deadline(90)
def test_session_weights_0_1_3(pgrelay, cluster):
    """Bug guarded: backend weights are ignored or misread: with weights 0/1/3 the standbys must get
    about 25% / 75% of 300 sessions' reads and the primary none."""
    r = lb_relay(pgrelay, cluster, weights=(0, 1, 3))
    counts = session_nodes(r.port, cluster, SESSIONS)
    got = shares(counts, SESSIONS)
    assert counts[PRIMARY] == 0, got
    assert abs(counts[1] / SESSIONS - 0.25) <= TOLERANCE, got
    assert abs(counts[2] / SESSIONS - 0.75) <= TOLERANCE, got


@pytest.mark.deadline(90)
def test_primary_weight_takes_reads_in_proportion(pgrelay, cluster):
    """Bug guarded: the primary's weight is not part of the read balance (pgpool-II counts it): with
    weights 2/1/1 it must serve about half of 300 sessions' reads."""
    r = lb_relay(pgrelay, cluster, weights=(2, 1, 1))
    counts = session_nodes(r.port, cluster, SESSIONS)
    got = shares(counts, SESSIONS)
    for node, want in ((0, 0.5), (1, 0.25), (2, 0.25)):
        assert abs(counts[node] / SESSIONS - want) <= TOLERANCE, got


def test_session_keeps_one_read_node(pgrelay, cluster):
    """Bug guarded: without statement_level the read node changes within a session."""
    r = lb_relay(pgrelay, cluster, weights=(1, 1, 1))
    for _ in range(5):
        with connect(r.port) as c:
            counts = where_many(c, cluster, 20)
            assert len(counts) == 1, counts


@pytest.mark.deadline(90)
def test_statement_level_balances_each_statement(pgrelay, cluster):
    """Bug guarded: load_balance.statement_level is ignored: with weights 0/1/1 the 300 reads of one
    session must be spread over both standbys, about half each."""
    r = lb_relay(pgrelay, cluster, weights=(0, 1, 1), statement_level=True)
    with connect(r.port) as c:
        counts = where_many(c, cluster, SESSIONS)
    got = shares(counts, SESSIONS)
    assert counts[PRIMARY] == 0, got
    assert abs(counts[1] / SESSIONS - 0.5) <= TOLERANCE, got


def test_load_balancing_disabled_reads_from_primary(pgrelay, cluster):
    """Bug guarded: load_balance.enabled = false still sends reads to standbys."""
    r = lb_relay(pgrelay, cluster, weights=(0, 1, 1), enabled=False)
    counts = session_nodes(r.port, cluster, 20)
    assert counts == {PRIMARY: 20}, counts


# ---------------------------------------------------------------------------------------------------------
# Transactions: disable_load_balance_on_write. read_your_writes is off in these tests so that reads
# after a committed write are decided by this setting alone.


def txn_relay(pgrelay, cluster, on_write=None):
    lb = {"read_your_writes": False}
    if on_write is not None:
        lb["disable_load_balance_on_write"] = on_write
    return routing_relay(pgrelay, cluster, weights=(0, 1, 1), load_balance=lb)


def insert_where(c, cluster):
    return where(c, cluster, "insert into rt_items (v) values ('txn') returning inet_server_port()")


def test_transaction_reads_move_to_primary_after_first_write(pgrelay, cluster, objects):
    """Bug guarded (default "transaction"): reads after a write in the same transaction run on a
    standby and miss the transaction's own writes; or reads before the write, or in the next
    transaction, are no longer balanced."""
    r = txn_relay(pgrelay, cluster)
    with connect(r.port) as c:
        read_node = where(c, cluster)
        c.execute("begin")
        assert where(c, cluster) == read_node
        (rid,) = c.execute("insert into rt_items (v) values ('mine') returning id").fetchone()
        assert where(c, cluster) == PRIMARY
        assert c.execute("select v from rt_items where id = %s", (rid,)).fetchone() == ("mine",)
        c.execute("commit")
        c.execute("begin")
        assert where(c, cluster) == read_node
        c.execute("commit")
        assert where(c, cluster) == read_node


def test_on_write_off_keeps_balancing(pgrelay, cluster, objects):
    """Bug guarded: disable_load_balance_on_write = "off" still moves reads after a write to the
    primary."""
    r = txn_relay(pgrelay, cluster, "off")
    with connect(r.port) as c:
        read_node = where(c, cluster)
        c.execute("begin")
        assert insert_where(c, cluster) == PRIMARY
        assert where(c, cluster) == read_node
        c.execute("commit")


def test_on_write_trans_transaction_later_transactions_read_from_primary(pgrelay, cluster, objects):
    """Bug guarded: disable_load_balance_on_write = "trans_transaction": after a transaction wrote,
    later transactions of the session must read from the primary too."""
    r = txn_relay(pgrelay, cluster, "trans_transaction")
    with connect(r.port) as c:
        c.execute("begin")
        assert where(c, cluster) in STANDBYS
        assert insert_where(c, cluster) == PRIMARY
        assert where(c, cluster) == PRIMARY
        c.execute("commit")
        c.execute("begin")
        assert where(c, cluster) == PRIMARY
        c.execute("commit")
    with connect(r.port) as c:  # a new session starts balanced again
        c.execute("begin")
        assert where(c, cluster) in STANDBYS
        c.execute("commit")


def test_on_write_always_rest_of_session_reads_from_primary(pgrelay, cluster, objects):
    """Bug guarded: disable_load_balance_on_write = "always": after a write, every later read of the
    session, in or out of transactions, must go to the primary."""
    r = txn_relay(pgrelay, cluster, "always")
    with connect(r.port) as c:
        assert where(c, cluster) in STANDBYS
        assert insert_where(c, cluster) == PRIMARY
        assert where(c, cluster) == PRIMARY
        c.execute("begin")
        assert where(c, cluster) == PRIMARY
        c.execute("commit")
        assert where(c, cluster) == PRIMARY


def test_begin_read_only_stays_on_standby(sconn, cluster):
    """Bug guarded: BEGIN READ ONLY is treated as a write transaction and sent to the primary."""
    sconn.execute("begin read only")
    assert where(sconn, cluster) in STANDBYS
    assert where(sconn, cluster, "select inet_server_port() from rt_items where id = 1") in STANDBYS
    sconn.execute("commit")


def test_savepoints_reach_every_backend(sconn, cluster):
    """Bug guarded: SAVEPOINT / ROLLBACK TO / RELEASE reach only one of the backends a transaction
    uses, so the other fails with 3B001 'savepoint does not exist'; or ROLLBACK TO does not undo the
    write on the primary."""
    sconn.execute("begin")
    sconn.execute("savepoint a")
    assert where(sconn, cluster) in STANDBYS
    sconn.execute("rollback to savepoint a")
    (rid,) = sconn.execute("insert into rt_items (v) values ('undone') returning id").fetchone()
    sconn.execute("savepoint b")
    assert where(sconn, cluster) == PRIMARY
    sconn.execute("rollback to savepoint a")
    sconn.execute("release savepoint a")
    sconn.execute("commit")
    with cluster.connect(user="app", password="app") as d:
        assert d.execute("select count(*) from rt_items where id = %s", (rid,)).fetchone()[0] == 0


def test_savepoint_before_standby_joins_the_transaction(pgrelay, cluster, objects):
    """Bug guarded (disable_load_balance_on_write = "off"): a savepoint made while only the primary
    took part is missing on the standby that joins later, so ROLLBACK TO fails there (3B001)."""
    r = txn_relay(pgrelay, cluster, "off")
    with connect(r.port) as c:
        c.execute("begin")
        assert insert_where(c, cluster) == PRIMARY
        c.execute("savepoint s1")
        assert where(c, cluster) in STANDBYS
        c.execute("rollback to savepoint s1")
        c.execute("release savepoint s1")
        c.execute("commit")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_error_in_transaction_on_standby_then_rollback(sconn, cluster):
    """Bug guarded: after an error in a transaction on the standby the session's transaction state is
    out of sync between nodes, so ROLLBACK or the next statement fails."""
    sconn.execute("begin")
    assert where(sconn, cluster) in STANDBYS
    with pytest.raises(psycopg.errors.DivisionByZero):
        sconn.execute("select 1 / 0")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        sconn.execute("select 1")
    sconn.execute("rollback")
    assert where(sconn, cluster) in STANDBYS
    assert where(sconn, cluster, "insert into rt_items (v) values ('after') returning inet_server_port()") == PRIMARY


# ---------------------------------------------------------------------------------------------------------
# Session state reaches every backend the session uses.


def test_set_search_path_reaches_standby_and_primary(sconn, cluster):
    """Bug guarded: SET search_path reaches only the primary, so a balanced read of an unqualified
    name fails on the standby (42P01) or reads another schema's table."""
    sconn.execute("set search_path = rt_s, public")
    port, sp = sconn.execute("select inet_server_port(), current_setting('search_path')").fetchone()
    assert node_of(cluster, port) in STANDBYS and sp == "rt_s, public"
    port, x = sconn.execute("select inet_server_port(), x from rt_only_in_s").fetchone()
    assert node_of(cluster, port) in STANDBYS and x == 7
    port, = sconn.execute("insert into rt_only_in_s values (8) returning inet_server_port()").fetchone()
    assert node_of(cluster, port) == PRIMARY
    sconn.execute("delete from rt_s.rt_only_in_s where x = 8")


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_set_application_name_and_statement_timeout_reach_standby(pgrelay, cluster, objects, pool_mode):
    """Bug guarded: SET application_name / statement_timeout reach only the node that ran the SET:
    the standby keeps the old values (and a long read is not cancelled), or the primary does."""
    r = lb_relay(pgrelay, cluster, pool_mode=pool_mode)
    with connect(r.port) as c:
        c.execute("set application_name = 'rt_app'")
        c.execute("set statement_timeout = '300ms'")
        row = c.execute("select inet_server_port(), current_setting('application_name'), "
                        "current_setting('statement_timeout')").fetchone()
        assert node_of(cluster, row[0]) in STANDBYS and row[1:] == ("rt_app", "300ms"), row
        row = c.execute("insert into rt_items (v) values ('x') returning inet_server_port(), "
                        "current_setting('application_name'), current_setting('statement_timeout')").fetchone()
        assert node_of(cluster, row[0]) == PRIMARY and row[1:] == ("rt_app", "300ms"), row
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select inet_server_port() from pg_sleep(5)")
        assert time.monotonic() - t0 < 4
        assert where(c, cluster) in STANDBYS


def test_discard_all_resets_standby_state(sconn, cluster):
    """Bug guarded: DISCARD ALL reaches only one node, or pgrelay keeps replaying the old tracked
    setting to the standby afterwards; the session must go on balancing."""
    base = sconn.execute("select current_setting('application_name')").fetchone()[0]
    sconn.execute("set application_name = 'rt_before_reset'")
    port, name = sconn.execute("select inet_server_port(), current_setting('application_name')").fetchone()
    assert node_of(cluster, port) in STANDBYS and name == "rt_before_reset"
    sconn.execute("discard all")
    port, name = sconn.execute("select inet_server_port(), current_setting('application_name')").fetchone()
    assert node_of(cluster, port) in STANDBYS and name == base
    row = sconn.execute("/*+ pgrelay: primary */ select inet_server_port(), "
                        "current_setting('application_name')").fetchone()
    assert node_of(cluster, row[0]) == PRIMARY and row[1] == base, row


@pytest.mark.parametrize("reset", ["reset all", "reset application_name"])
def test_reset_reaches_every_node(sconn, cluster, reset):
    """Bug guarded: RESET / RESET ALL reset the setting on one node only: a read on another node (the
    standby, or the primary through a hint) still sees the old value."""
    base = sconn.execute("select current_setting('application_name')").fetchone()[0]
    sconn.execute("set application_name = 'rt_before_reset'")
    assert where(sconn, cluster) in STANDBYS
    sconn.execute(reset)
    for sql in ("select inet_server_port(), current_setting('application_name')",
                "/*+ pgrelay: standby */ select inet_server_port(), current_setting('application_name')",
                "/*+ pgrelay: primary */ select inet_server_port(), current_setting('application_name')"):
        row = sconn.execute(sql).fetchone()
        assert row[1] == base, (sql, row)


def test_sql_prepare_execute_deallocate(sconn, cluster):
    """Bug guarded: an SQL-level PREPARE exists on one node only, so EXECUTE fails where it is sent
    (26000), EXECUTE of a prepared write runs on a standby, or DEALLOCATE leaves it behind somewhere.
    (Where EXECUTE of a read runs is pgrelay's choice: it may keep such a session on the primary.)"""
    sconn.execute("prepare rt_r as select inet_server_port()")
    sconn.execute("prepare rt_w as insert into rt_items (v) values ('p') returning inet_server_port()")
    for _ in range(3):
        where(sconn, cluster, "execute rt_r")
        assert where(sconn, cluster, "execute rt_w") == PRIMARY
    sconn.execute("deallocate rt_r")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        sconn.execute("execute rt_r")
    sconn.execute("deallocate all")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        sconn.execute("execute rt_w")


def test_cursor_fetch_follows_declare(sconn, cluster):
    """Bug guarded: FETCH / CLOSE of a cursor go to another node than its DECLARE (34000 'cursor
    does not exist')."""
    sconn.execute("begin")
    sconn.execute("declare rt_c cursor for select inet_server_port() from generate_series(1, 4)")
    ports = [sconn.execute("fetch 1 from rt_c").fetchone()[0] for _ in range(3)]
    sconn.execute("move 1 in rt_c")
    sconn.execute("close rt_c")
    sconn.execute("commit")
    assert len(set(ports)) == 1 and node_of(cluster, ports[0]) in STANDBYS


# ---------------------------------------------------------------------------------------------------------
# Extended protocol.


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_extended_protocol_reads_and_writes(pgrelay, cluster, objects, pool_mode):
    """Bug guarded: statements with parameters (Parse/Bind/Execute) are not routed: reads stay on the
    primary or writes reach a standby."""
    r = lb_relay(pgrelay, cluster, pool_mode=pool_mode)
    with connect(r.port) as c:
        for i in range(5):
            assert where(c, cluster, "select inet_server_port() + 0 * %s::int", (i,)) in STANDBYS
            assert where(c, cluster, "insert into rt_items (v) values (%s) returning inet_server_port()",
                         (f"e{i}",)) == PRIMARY
            assert where(c, cluster, "select inet_server_port(), nextval(%s)", ("rt_seq",)) == PRIMARY


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_prepared_statements_alternate_reads_and_writes(pgrelay, cluster, objects, pool_mode):
    """Bug guarded: a named prepared statement (psycopg prepare=True) is parsed on one node and bound
    on another ('prepared statement "_pg3_0" does not exist', 26000) when reads and writes alternate."""
    r = lb_relay(pgrelay, cluster, pool_mode=pool_mode)
    with connect(r.port, prepare_threshold=0) as c:
        for i in range(15):
            assert where(c, cluster, "select inet_server_port() + 0 * %s::int", (i,), prepare=True) in STANDBYS
            assert where(c, cluster, "update rt_items set v = %s where id = 2 returning inet_server_port()",
                         (f"p{i}",), prepare=True) == PRIMARY
            c.execute("begin")
            assert where(c, cluster, "select inet_server_port() + 0 * %s::int", (i,), prepare=True) in STANDBYS
            assert where(c, cluster, "update rt_items set v = %s where id = 2 returning inet_server_port()",
                         (f"q{i}",), prepare=True) == PRIMARY
            assert where(c, cluster, "select inet_server_port() + 0 * %s::int", (i,), prepare=True) == PRIMARY
            c.execute("commit")


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_prepared_begin_starts_transaction_on_read_node(pgrelay, cluster, objects, pool_mode):
    """Bug guarded: a re-executed prepared BEGIN (a Bind of a statement parsed earlier, as psycopg
    with prepare_threshold=0 or pgbench -M prepared send it) is routed like session state to the
    active link, so after one write transaction every later transaction starts on the primary and
    its reads are no longer balanced."""
    r = lb_relay(pgrelay, cluster, pool_mode=pool_mode)
    with connect(r.port, prepare_threshold=0) as c:
        for i in range(3):
            c.execute("begin")
            assert where(c, cluster) in STANDBYS, f"transaction {i}: read before the first write"
            assert insert_where(c, cluster) == PRIMARY
            c.execute("commit")


def run_pipeline(port, statements):
    """Send Parse/Bind/Execute for each statement and one Sync; return the first column of each result
    (None for an error) and the errors."""
    with pgwire.connect(port) as w:
        parts = []
        for sql in statements:
            parts += [pgwire.parse("", sql), pgwire.bind("", ""), pgwire.execute()]
        w.send(b"".join(parts) + pgwire.sync())
        cyc = w.read_cycle(timeout=10)
        vals = [int(res.text_rows()[0][0]) if res.rows else None for res in cyc.results]
        return vals, cyc.errors


def test_pipeline_with_a_write_is_not_split(split, cluster):
    """Bug guarded: one Sync-delimited pipeline (read, write, read) is split across nodes: the reads
    run on a standby outside the write's transaction, or the write reaches the standby."""
    vals, errors = run_pipeline(split.port, [
        "select inet_server_port()",
        "insert into rt_items (v) values ('pipe') returning inet_server_port()",
        "select inet_server_port()",
    ])
    assert not errors, errors
    assert [node_of(cluster, v) for v in vals] == [PRIMARY] * 3


def test_read_only_pipeline_stays_on_one_standby(split, cluster):
    """Bug guarded: a pipeline of reads is split across nodes or not balanced."""
    vals, errors = run_pipeline(split.port, ["select inet_server_port()"] * 5)
    assert not errors, errors
    assert len(set(vals)) == 1 and node_of(cluster, vals[0]) in STANDBYS


def test_psycopg_pipeline_mode_mixed(sconn, cluster):
    """Bug guarded: psycopg's pipeline mode (several Parse/Bind/Execute, one Sync) with a write in the
    middle fails or splits."""
    with sconn.pipeline():
        curs = [sconn.execute("select inet_server_port() + 0 * %s::int", (1,)),
                sconn.execute("insert into rt_items (v) values (%s) returning inet_server_port()", ("pp",)),
                sconn.execute("select inet_server_port() + 0 * %s::int", (2,))]
    nodes = [node_of(cluster, cur.fetchone()[0]) for cur in curs]
    assert nodes == [PRIMARY] * 3, nodes
    assert where(sconn, cluster) in STANDBYS


# ---------------------------------------------------------------------------------------------------------
# The classification cache is keyed by normalised text (constants replaced, comments dropped): the
# scan must lex like PostgreSQL, or a read is mistaken for several statements (sent to the primary)
# or a statement after a literal disappears from view.

TRICKY_READS = [
    ("semicolon-in-string", "select inet_server_port() where 'a;b' <> ''"),
    ("doubled-quote", "select inet_server_port() where 'it''s; delete' <> ''"),
    ("e-string-escaped-quote", "select inet_server_port() where E'\\';' <> ''"),
    ("dollar-quote", "select inet_server_port() where $t$ ; delete from rt_items; $t$ <> ''"),
    ("empty-dollar-tag", "select inet_server_port() where $$'$$ <> ''"),
    ("nested-comment", "select inet_server_port() /* a /* nested */ ; delete from rt_items */"),
    ("line-comment", "select inet_server_port() -- ; delete from rt_items"),
    ("quoted-identifier-with-quote", "select inet_server_port() as \"q'uote\""),
    ("identifiers-with-dollar", "select inet_server_port() as a$b$, 1 as c$b$"),
    ("unicode-escapes", "select inet_server_port() where U&'d\\0061t' <> '' and U&'d!0061t' UESCAPE '!' <> ''"),
    ("numbers", "select inet_server_port() where 1.5e3 > 0 and .5 > 0 and 0.5e-3 < 1"),
    ("bit-strings", "select inet_server_port() where B'101' <> B'0' and X'1F' <> X'00'"),
]


@pytest.mark.parametrize("sql", [s for _, s in TRICKY_READS], ids=[i for i, _ in TRICKY_READS])
def test_tricky_read_goes_to_standby(sconn, cluster, sql):
    """Bug guarded: the statement scanner of the classification cache (or the classifier) lexes a
    literal, comment or identifier differently from PostgreSQL, so a single read is taken for
    several statements or a syntax error and sent to the primary."""
    assert where(sconn, cluster, sql) in STANDBYS


TRICKY_MULTI = [
    ("identifiers-with-dollar", "select 1 as a$q$; insert into rt_items (v) values ('w1'); "
                                "select inet_server_port() as b$q$"),
    ("quote-in-comment", "select 'a' /* ' */; insert into rt_items (v) values ('w2'); select inet_server_port()"),
    ("quote-in-dollar-string", "select $$ ' $$; insert into rt_items (v) values ('w3'); select inet_server_port()"),
    ("e-string-then-write", "select E'\\''; insert into rt_items (v) values ('w4'); select inet_server_port()"),
]


@pytest.mark.parametrize("sql", [s for _, s in TRICKY_MULTI], ids=[i for i, _ in TRICKY_MULTI])
def test_tricky_multi_statement_with_write_goes_to_primary(sconn, cluster, sql):
    """Bug guarded: a write that follows a literal or identifier the scanner misreads is hidden
    inside a "string", the text is cached as one read and sent to a standby (25006)."""
    cur = sconn.execute(sql)
    while cur.nextset():
        pass
    assert node_of(cluster, cur.fetchone()[0]) == PRIMARY


def test_pattern_list_sees_each_statements_constants(pgrelay, cluster):
    """Bug guarded: primary_routing_query_pattern_list is matched against the cached, normalised
    text (constants replaced), so two statements of one shape share the first one's verdict."""
    r = lb_relay(pgrelay, cluster, primary_routing_query_pattern_list=".*'rt_urgent'.*")
    with connect(r.port) as c:
        for _ in range(2):
            assert where(c, cluster, "select inet_server_port() where 'rt_normal' <> ''") in STANDBYS
            assert where(c, cluster, "select inet_server_port() where 'rt_urgent' <> ''") == PRIMARY


def test_hint_and_plain_comment_of_one_shape(sconn, cluster):
    """Bug guarded: comments are dropped from the cache key together with a leading hint, so a
    hinted statement and the same statement with an ordinary comment share a route."""
    for _ in range(2):
        assert where(sconn, cluster, "/* pgrelay: primary */ select inet_server_port()") in STANDBYS
        assert where(sconn, cluster, "/*+ pgrelay: primary */ select inet_server_port()") == PRIMARY
        assert where(sconn, cluster, "select inet_server_port(), random()") == PRIMARY
        assert where(sconn, cluster, "/*+ pgrelay: standby */ select inet_server_port(), random()") in STANDBYS


# ---------------------------------------------------------------------------------------------------------
# Redirect lists, routing patterns, hints.


def test_database_redirect_preference_list(pgrelay, cluster, objects):
    """Bug guarded: database_redirect_preference_list is ignored: with weights 3/1/1 (the primary
    would serve 60% of reads) "app:standby" keeps every app session off the primary and
    "postgres:primary" keeps every postgres session on it."""
    r = lb_relay(pgrelay, cluster, weights=(3, 1, 1),
                 database_redirect_preference_list="app:standby,postgres:primary")
    app = session_nodes(r.port, cluster, 30)
    assert app[PRIMARY] == 0, app
    pg = session_nodes(r.port, cluster, 30, dbname="postgres")
    assert pg == {PRIMARY: 30}, pg


def test_app_name_redirect_preference_list(pgrelay, cluster):
    """Bug guarded: app_name_redirect_preference_list (node id with a weight) is ignored; other
    application names must still be balanced."""
    r = lb_relay(pgrelay, cluster, weights=(1, 1, 1), app_name_redirect_preference_list="rt_report.*:2(1.0)")
    rep = session_nodes(r.port, cluster, 20, application_name="rt_reporting")
    assert rep == {2: 20}, rep
    other = session_nodes(r.port, cluster, 30, application_name="rt_web")
    assert len(other) >= 2, other


def test_user_redirect_takes_precedence_over_app_name(pgrelay, cluster):
    """Bug guarded: user_redirect_preference_list is ignored, or loses against the application_name
    list (it takes precedence)."""
    r = lb_relay(pgrelay, cluster, weights=(1, 1, 1), user_redirect_preference_list="md5user:1",
                 app_name_redirect_preference_list="rt_reporting:2")
    got = session_nodes(r.port, cluster, 20, user="md5user", password="md5pw", application_name="rt_reporting")
    assert got == {1: 20}, got
    got = session_nodes(r.port, cluster, 10, application_name="rt_reporting")
    assert got == {2: 10}, got


def test_primary_routing_query_pattern_list(pgrelay, cluster):
    """Bug guarded: primary_routing_query_pattern_list is ignored, case-sensitive, or applies only its
    first pattern; reads that match no pattern must stay balanced."""
    r = lb_relay(pgrelay, cluster, primary_routing_query_pattern_list="select .*from pg_class.*;.*rt_pin_me.*")
    with connect(r.port) as c:
        assert where(c, cluster, "select inet_server_port() from pg_class limit 1") == PRIMARY
        assert where(c, cluster, "SELECT inet_server_port() FROM PG_CLASS LIMIT 1") == PRIMARY
        assert where(c, cluster, "select inet_server_port() as rt_pin_me") == PRIMARY
        assert where(c, cluster, "select inet_server_port() from pg_namespace limit 1") in STANDBYS


HINTS = [
    ("primary", "/*+ pgrelay: primary */ select inet_server_port()", {PRIMARY}),
    ("primary-spaced-upper", "  /*+  PGRELAY:PRIMARY  */select inet_server_port()", {PRIMARY}),
    ("standby-on-volatile", "/*+ pgrelay: standby */ select inet_server_port(), random()", set(STANDBYS)),
    ("not-leading-is-a-comment", "select /*+ pgrelay: primary */ inet_server_port()", set(STANDBYS)),
]


@pytest.mark.parametrize("sql,nodes", [(s, n) for _, s, n in HINTS], ids=[i for i, _, _ in HINTS])
def test_hint_comment(sconn, cluster, sql, nodes):
    """Bug guarded: a leading /*+ pgrelay: primary|standby */ hint is ignored, or one that is not
    leading is honoured."""
    assert where(sconn, cluster, sql) in nodes


def test_set_pgrelay_route_forces_the_session(sconn, cluster):
    """Bug guarded: SET pgrelay.route = primary|standby|auto is ignored or forwarded to PostgreSQL
    (where it would become a placeholder setting); auto must restore normal routing."""
    sconn.execute("set pgrelay.route = primary")
    assert where_many(sconn, cluster, 5) == {PRIMARY: 5}
    assert sconn.execute("select current_setting('pgrelay.route', true)").fetchone()[0] in (None, "")
    sconn.execute("set pgrelay.route = standby")
    assert where(sconn, cluster, "select inet_server_port(), random()") in STANDBYS
    sconn.execute("set pgrelay.route = auto")
    assert where(sconn, cluster, "select inet_server_port(), random()") == PRIMARY
    assert where(sconn, cluster) in STANDBYS
    # SET SESSION, and comments before the words: the classifier says it is pgrelay's (a fuzz
    # finding: the old first-word matcher let "SET SESSION pgrelay.route" through to PostgreSQL).
    sconn.execute("set session pgrelay.route = primary")
    assert where_many(sconn, cluster, 3) == {PRIMARY: 3}
    sconn.execute("/* app */ SET -- x\n SESSION pgrelay.route TO auto")
    assert where(sconn, cluster) in STANDBYS
    for n in range(3):  # never reached a node
        with cluster.connect(n, dbname="postgres") as d:
            hit = d.execute("select count(*) from pg_stat_activity where query ilike '%%pgrelay.route%%' "
                            "and query not ilike '%%current_setting%%' and pid <> pg_backend_pid()").fetchone()[0]
            assert hit == 0, f"node {n} saw SET pgrelay.route"


# ---------------------------------------------------------------------------------------------------------
# Admin SQL: SHOW pool_nodes, PGRELAY EXPLAIN ROUTE.


def test_show_pool_nodes_columns_and_values(pgrelay, cluster):
    """Bug guarded: SHOW pool_nodes has other columns than pgpool-II's, wrong roles or ports, or
    unnormalised weights."""
    r = lb_relay(pgrelay, cluster, weights=(0, 1, 3))
    with connect(r.port) as c:
        cur = c.execute("show pool_nodes")
        assert [d.name for d in cur.description] == POOL_NODES_COLUMNS
        rows = [dict(zip(POOL_NODES_COLUMNS, row)) for row in cur.fetchall()]
    assert [x["node_id"] for x in rows] == ["0", "1", "2"]
    assert [x["port"] for x in rows] == [str(p) for p in cluster.ports]
    assert [x["hostname"] for x in rows] == ["127.0.0.1"] * 3
    assert [x["status"] for x in rows] == ["up"] * 3
    assert [x["pg_status"] for x in rows] == ["up"] * 3
    assert [x["role"] for x in rows] == ["primary", "standby", "standby"]
    assert [x["pg_role"] for x in rows] == ["primary", "standby", "standby"]
    assert [x["lb_weight"] for x in rows] == ["0.000000", "0.250000", "0.750000"]
    assert rows[0]["replication_delay"] == "0"
    for x in rows:
        assert all(isinstance(v, str) or v is None for v in x.values()), x
        assert re.fullmatch(r"\d+", x["select_cnt"]), x
        assert x["load_balance_node"] in ("true", "false"), x
        assert re.fullmatch(r"\d+", x["replication_delay"]), x
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", x["last_status_change"]), x


def test_show_pool_nodes_replication_state(pgrelay, cluster):
    """Bug guarded: with each standby's application_name configured, SHOW pool_nodes does not report
    its pg_stat_replication state and sync state (pgpool-II prints streaming / async)."""
    r = pgrelay(backends=backends_for(cluster, (0, 1, 1), app_names=True))
    rows = wait_nodes_known(r)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with connect(r.port) as c:
            rows = pool_nodes(c)
        if all(x["replication_state"] == "streaming" for x in rows[1:]):
            break
        time.sleep(0.2)
    assert [(x["replication_state"], x["replication_sync_state"]) for x in rows] == \
        [("", ""), ("streaming", "async"), ("streaming", "async")], rows


def test_show_pool_nodes_select_cnt_and_load_balance_node(pgrelay, cluster, objects):
    """Bug guarded: select_cnt does not count reads as they are routed (live), counts writes, or
    load_balance_node does not name this session's read node."""
    r = lb_relay(pgrelay, cluster, weights=(0, 1, 1))
    with connect(r.port) as c:
        node = where(c, cluster)
        before = pool_nodes(c)
        for _ in range(7):
            where(c, cluster)
        for _ in range(3):
            where(c, cluster, "insert into rt_items (v) values ('cnt') returning inet_server_port()")
        after = pool_nodes(c)
    delta = [int(a["select_cnt"]) - int(b["select_cnt"]) for a, b in zip(after, before)]
    assert delta[node] >= 7 and delta[PRIMARY] == 0, delta
    assert delta[3 - node] == 0, delta
    assert [x["load_balance_node"] for x in after] == ["true" if i == node else "false" for i in range(3)]


def test_show_pool_nodes_with_psql(split):
    """Bug guarded: the admin answer breaks a real client (psql's aligned/unaligned output)."""
    r = run_client(["psql", "-X", "-A", "-h", "127.0.0.1", "-p", str(split.port), "-U", "app", "-d", "app",
                    "-c", "show pool_nodes"], timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "|".join(POOL_NODES_COLUMNS)
    assert lines[-1] == "(3 rows)"


EXPLAIN_ROUTE = [
    # (id, statement, node_class, rule or None, object or None)
    ("select", "select 1", "standby", "read-only select", ""),
    ("for-update", "select * from rt_items for update", "primary", "FOR UPDATE", None),
    ("insert", "insert into rt_items (v) values ('x')", "primary", "write statement", None),
    ("nextval", "select nextval('rt_seq')", "primary", "sequence function", "nextval"),
    ("random", "select random()", "primary", ("volatile function", "unknown function"), "random"),
    ("data-modifying-with", "with w as (delete from rt_items returning 1) select 1", "primary",
     "data-modifying WITH", None),
    ("select-into", "select 1 into rt_x", "primary", "SELECT INTO", None),
    ("lock", "lock table rt_items", "primary", "LOCK", None),
    ("copy-to-stdout", "copy rt_items to stdout", "standby", "COPY TO STDOUT", None),
    ("show", "show search_path", "standby", "SHOW", None),
    ("set", "set search_path = public", "all", "SET", None),
    ("begin", "begin", "all", "BEGIN", None),
    ("fetch", "fetch 1 from rt_cur", "follow", None, "rt_cur"),
    ("hint-primary", "/*+ pgrelay: primary */ select 1", "primary", "hint", None),
    ("parse-error", "selec 1", "primary", "parse error", None),
    ("multi-statement", "select 1; select 2", "primary", "multi-statement", None),
]


@pytest.mark.parametrize("sql,node_class,rule,obj", [e[1:] for e in EXPLAIN_ROUTE],
                         ids=[e[0] for e in EXPLAIN_ROUTE])
def test_explain_route(sconn, sql, node_class, rule, obj):
    """Bug guarded: PGRELAY EXPLAIN ROUTE does not report the classifier's decision (node class,
    rule name, object) for a statement."""
    cols, rows = explain_route(sconn, sql)
    assert cols == ["node_class", "rule", "object"]
    assert len(rows) == 1, rows
    got_class, got_rule, got_obj = rows[0]
    assert got_class == node_class, rows[0]
    if isinstance(rule, tuple):  # without a catalog lookup random() is an "unknown function"
        assert got_rule in rule, rows[0]
    elif rule is not None:
        assert got_rule == rule, rows[0]
    if obj is not None:
        assert (got_obj or "") == obj, rows[0]


def test_explain_route_does_not_execute(sconn, cluster):
    """Bug guarded: PGRELAY EXPLAIN ROUTE runs the statement it explains."""
    cols, rows = explain_route(sconn, "drop table rt_canary")
    assert rows[0][0] == "primary"
    with cluster.connect(user="app", password="app") as d:
        assert d.execute("select to_regclass('rt_canary') is not null").fetchone()[0]


# ---------------------------------------------------------------------------------------------------------
# pgbench: no read-only errors through the splitting port.


def pgbench(port, *args, timeout=90):
    r = run_client(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app", *args, "app"], timeout=timeout)
    return r, r.stdout + r.stderr


@pytest.fixture(scope="module")
def pgbench_tables(cluster):
    r = run_client(["pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(cluster.primary_port),
                    "-U", "app", "app"], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_replayed(cluster)


@pytest.mark.deadline(120)
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_pgbench_mixed_has_no_read_only_errors(pgrelay, cluster, pgbench_tables, pool_mode):
    """Bug guarded: a write (or a read after a write in the same transaction) reaches a standby:
    'cannot execute UPDATE in a read-only transaction' under pgbench tpcb-like mixed with select-only,
    in -M simple, extended and prepared. The standbys must also have served some of the reads.
    read_your_writes is off: with it, a session that wrote reads from the primary until a standby
    replayed the write, which leaves few reads (and few chances to fail) to the standbys."""
    r = lb_relay(pgrelay, cluster, weights=(1, 1, 1), pool_mode=pool_mode)
    with ActivityWatch(cluster, STANDBYS, "usename = 'app' and query like '%pgbench_accounts%'") as watch:
        for proto in ("simple", "extended", "prepared"):
            res, out = pgbench(r.port, "-n", "-b", "tpcb-like@1", "-b", "select-only@2", "-M", proto,
                               "-c", "4", "-j", "2", "-T", "3")
            assert "read-only transaction" not in out, out
            assert res.returncode == 0, out
            m = re.search(r"number of failed transactions: (\d+)", out)
            assert m and int(m.group(1)) == 0, out
            m = re.search(r"number of transactions actually processed: (\d+)", out)
            assert m and int(m.group(1)) >= 20, out
    assert watch.error is None, watch.error
    assert any(watch.max.values()), f"no standby ran a pgbench read ({watch.max})"
