"""Role-pinned listeners: extra ports whose sessions go to one role.

    listeners = ( { port = P1; role = "primary"; }, { port = P2; role = "standby"; },
                  { port = P3; role = "auto"; } );

P1 sends every statement to the primary, P2 every session to a standby (a write gets PostgreSQL's own
read-only error, SQLSTATE 25006), P3 and the main port split reads and writes. The weights are 1/1/1,
so on a splitting port some reads land on the primary: a pinned port must not follow the weights.
"""

import psycopg
import pytest

from conftest import connect, free_port, wait_port
from routing_helpers import PRIMARY, STANDBYS, module_relay, session_nodes, wait_replayed, where

pytestmark = pytest.mark.pgrelay_only

SESSIONS = 30


@pytest.fixture(scope="module")
def ports():
    chosen = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    return dict(zip(("primary", "standby", "auto"), sorted(chosen)))


@pytest.fixture(scope="module")
def table(cluster):
    with cluster.connect(user="app", password="app") as c:
        c.execute("drop table if exists rt_listener_t; create table rt_listener_t (x int)")
    wait_replayed(cluster)
    yield "rt_listener_t"
    with cluster.connect(user="app", password="app") as c:
        c.execute("drop table if exists rt_listener_t")


@pytest.fixture(scope="module")
def pinned_relay(cluster, ports, table, tmp_path_factory):
    listeners = [{"port": p, "role": role} for role, p in ports.items()]
    with module_relay(cluster, tmp_path_factory.mktemp("listeners"), weights=(1, 1, 1),
                      listeners=listeners) as r:
        for p in ports.values():
            assert wait_port(p, 10, r.proc), f"pgrelay does not listen on listener port {p}"
        yield r


@pytest.fixture
def relay_ports(pinned_relay, ports, request):
    request.node._pgrelays = [pinned_relay]
    return dict(ports, main=pinned_relay.port)


def test_primary_listener_sends_every_statement_to_primary(relay_ports, cluster):
    """Bug guarded: a role = "primary" listener balances reads like the main port."""
    counts = session_nodes(relay_ports["primary"], cluster, SESSIONS)
    assert counts == {PRIMARY: SESSIONS}, counts
    with connect(relay_ports["primary"]) as c:
        for _ in range(10):
            assert where(c, cluster) == PRIMARY
        assert where(c, cluster, "select inet_server_port(), now()") == PRIMARY
        c.execute("begin read only")
        assert where(c, cluster) == PRIMARY
        c.execute("commit")


def test_primary_listener_takes_writes(relay_ports, cluster):
    """Bug guarded: writes fail or get lost on the primary-pinned port."""
    with connect(relay_ports["primary"]) as c:
        c.execute("create temp table rt_l (x int)")
        assert where(c, cluster, "insert into rt_l values (1) returning inet_server_port()") == PRIMARY
        assert c.execute("select count(*) from rt_l").fetchone()[0] == 1


def test_standby_listener_sends_every_session_to_a_standby(relay_ports, cluster):
    """Bug guarded: a role = "standby" listener sends sessions to the primary (whose weight is 1
    here), or a session hops between nodes."""
    counts = session_nodes(relay_ports["standby"], cluster, SESSIONS)
    assert counts[PRIMARY] == 0 and sum(counts.values()) == SESSIONS, counts
    with connect(relay_ports["standby"]) as c:
        nodes = {where(c, cluster) for _ in range(10)}
        nodes.add(where(c, cluster, "select inet_server_port(), random()"))
        assert len(nodes) == 1 and nodes <= set(STANDBYS), nodes


def test_standby_listener_write_gets_read_only_error(relay_ports, cluster):
    """Bug guarded: a write on the standby-pinned port is quietly sent to the primary, or fails with
    something else than PostgreSQL's read-only error; the session must stay usable."""
    with connect(relay_ports["standby"]) as c:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("insert into rt_listener_t values (1)")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("create table rt_listener_w (x int)")
        assert where(c, cluster) in STANDBYS


@pytest.mark.parametrize("which", ["main", "auto"])
def test_splitting_ports_balance_reads_and_send_writes_to_primary(relay_ports, cluster, which):
    """Bug guarded: with role listeners configured the main port (or a role = "auto" listener) stops
    splitting: reads must spread over the nodes by weight, writes go to the primary."""
    counts = session_nodes(relay_ports[which], cluster, SESSIONS)
    assert len(counts) >= 2 and sum(counts.values()) == SESSIONS, counts
    with connect(relay_ports[which]) as c:
        assert where(c, cluster, "select inet_server_port(), txid_current()") == PRIMARY
