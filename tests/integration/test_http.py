"""The HTTP listener (doc/http.md): health paths, /node/N, /cluster, /metrics, bounds and the allow
list, against the session cluster (primary node 0, standbys 1 and 2). Every socket has a deadline."""

import http.client
import json
import socket
import time

import pytest

from conftest import DIRECT, connect, free_port
from failover_helpers import PGBIN, as_pg

pytestmark = [pytest.mark.pgrelay_only,
              pytest.mark.skipif(DIRECT, reason="tests pgrelay's own HTTP listener")]

TIMEOUT = 5


def http_relay(pgrelay, **http):
    port = free_port()
    settings = {"port": port, "idle_timeout": "2s", **http}
    r = pgrelay(http=settings)
    r.http_port = port
    wait_settled(r)
    return r


def get(r, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=TIMEOUT)
    try:
        c.request(method, path)
        resp = c.getresponse()
        return resp.status, resp.read().decode(), dict(resp.getheaders())
    finally:
        c.close()


def wait_settled(r, timeout=20):
    """Until the primary and both standbys are up in pgrelay's view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st, body, _ = get(r, "/cluster")
            if st == 200:
                v = json.loads(body)
                if v["primary"] == 0 and all(n["status"] == "up" for n in v["nodes"]):
                    return v
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the cluster did not settle in pgrelay's view")


@pytest.fixture
def hr(pgrelay):
    return http_relay(pgrelay)


def test_health_paths(hr):
    for path in ("/primary", "/read-write", "/master", "/replica", "/read-only", "/health",
                 "/liveness", "/readiness", "/role", "/node/0", "/replica?lag=16MB",
                 "/replica?lag=1000000", "/replica?lag=10min"):
        st, body, hdr = get(hr, path)
        assert st == 200, (path, st, body)
        assert json.loads(body)["status"] == 200
    assert get(hr, "/node/1")[0] == 206
    assert get(hr, "/node/2")[0] == 206
    assert get(hr, "/node/3")[0] == 503
    assert get(hr, "/node/99999")[0] == 404
    assert get(hr, "/node/x")[0] == 404
    assert get(hr, "/nope")[0] == 404


def test_head_options_and_methods(hr):
    st, body, hdr = get(hr, "/primary", "HEAD")
    assert st == 200 and body == ""
    st, body, hdr = get(hr, "/node/1", "OPTIONS")
    assert st == 206 and body == "" and "GET" in hdr["Allow"]
    for m in ("POST", "PUT", "DELETE"):
        st, body, hdr = get(hr, "/primary", m)
        assert st == 405, m


def test_lag_parsing(hr):
    for bad in ("", "abc", "-1", "16XB", "1.5s", "99999999999999999999999"):
        st, body, _ = get(hr, "/replica?lag=" + bad)
        assert st == 400, (bad, st, body)
    # With no writes going on, every standby is at 0 bytes of lag.
    assert get(hr, "/replica?lag=0")[0] == 200


def test_cluster_json(hr):
    st, body, hdr = get(hr, "/cluster")
    assert st == 200 and hdr["Content-Type"].startswith("application/json")
    v = json.loads(body)
    assert v["primary"] == 0
    assert [n["node_id"] for n in v["nodes"]] == [0, 1, 2]
    assert [n["role"] for n in v["nodes"]] == ["primary", "standby", "standby"]
    for n in v["nodes"]:
        assert set(n) >= {"node_id", "host", "port", "status", "role", "replication_delay_bytes",
                          "replication_delay_seconds", "select_cnt"}
    assert isinstance(v["failovers"], list)
    assert "postgres" not in body  # no password, no user name of health checks


def test_standby_stopped(hr, cluster):
    """Node 2 stopped: /node/2 is 503 within a few health-check periods, /replica is still 200
    (node 1), /cluster says down; restored afterwards."""
    stop = as_pg([PGBIN / "pg_ctl", "-D", cluster.data_dirs[2], "-m", "fast", "-w", "stop"])
    assert stop.returncode == 0, stop.stderr
    try:
        deadline = time.monotonic() + 20
        while get(hr, "/node/2")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert get(hr, "/node/2")[0] == 503
        assert get(hr, "/replica")[0] == 200
        assert get(hr, "/role")[0] == 200
        v = json.loads(get(hr, "/cluster")[1])
        assert v["nodes"][2]["status"] == "down"
    finally:
        r = as_pg([PGBIN / "pg_ctl", "-D", cluster.data_dirs[2], "-l",
                   cluster.dir / "node2.log", "-w", "-t", "30", "start"])
        assert r.returncode == 0, r.stderr


def scrape(r):
    from prometheus_client.parser import text_string_to_metric_families
    st, body, hdr = get(r, "/metrics")
    assert st == 200, body
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    return fams, body


def sample(fams, fam, name, **labels):
    for s in fams[fam].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((name, labels))


def test_metrics(hr):
    with connect(hr.port) as c:
        for _ in range(20):
            c.execute("select 1").fetchall()
        with c.transaction():
            c.execute("select 2").fetchall()
            c.execute("select 3").fetchall()
        fams, body = scrape(hr)
        # The parser drops _total from counter family names.
        for f in ("pgrelay_up", "pgrelay_node_up", "pgrelay_node_replication_delay_bytes",
                  "pgrelay_node_selects", "pgrelay_pool_clients", "pgrelay_pool_servers",
                  "pgrelay_transactions", "pgrelay_queries", "pgrelay_query_duration_seconds",
                  "pgrelay_failovers", "pgrelay_health_checks", "process_open_fds",
                  "process_resident_memory_bytes", "pgrelay_uptime_seconds",
                  "pgrelay_node_writes", "pgrelay_clients", "pgrelay_servers",
                  "process_start_time_seconds", "process_max_fds"):
            assert f in fams, f
        assert fams["pgrelay_query_duration_seconds"].type == "histogram"
        assert sample(fams, "pgrelay_pool_clients", "pgrelay_pool_clients", database="app",
                      user="app", state="active") >= 1
        assert sample(fams, "pgrelay_node_up", "pgrelay_node_up", node_id="0", role="primary") == 1
    # Node numbers match SHOW pool_nodes taken at the same time: a scrape between two SHOWs that
    # agree (SHOW is answered by pgrelay itself and routes nothing; a health check may republish
    # the view in between, then the pair is taken again).
    rows, fams2 = nodes_and_scrape(hr)
    assert sum(int(row["select_cnt"]) for row in rows) >= 20
    assert len(fams2["pgrelay_node_up"].samples) == len(rows) == 3
    for row in rows:
        node = row["node_id"]
        up = sample(fams2, "pgrelay_node_up", "pgrelay_node_up", node_id=node)
        assert up == (1 if row["status"] == "up" else 0), row
        assert sample(fams2, "pgrelay_node_up", "pgrelay_node_up", node_id=node,
                      host=row["hostname"], port=row["port"], role=row["role"]) == up
        assert int(row["select_cnt"]) == sample(
            fams2, "pgrelay_node_selects", "pgrelay_node_selects_total", node_id=node)
        if row["replication_delay"].isdigit():
            assert int(row["replication_delay"]) == sample(
                fams2, "pgrelay_node_replication_delay_bytes",
                "pgrelay_node_replication_delay_bytes", node_id=node)
    # Counters never go down between scrapes, and the traffic above moved them.
    for fam, name in (("pgrelay_queries", "pgrelay_queries_total"),
                      ("pgrelay_transactions", "pgrelay_transactions_total"),
                      ("pgrelay_query_duration_seconds", "pgrelay_query_duration_seconds_count")):
        assert sample(fams2, fam, name) >= sample(fams, fam, name) >= 20, name
    # A histogram's buckets are cumulative and end at _count.
    b = [s.value for s in fams2["pgrelay_query_duration_seconds"].samples
         if s.name.endswith("_bucket")]
    assert b == sorted(b) and b[-1] == sample(fams2, "pgrelay_query_duration_seconds",
                                              "pgrelay_query_duration_seconds_count")


NODE_COLUMNS = ("node_id", "hostname", "port", "status", "role", "select_cnt", "replication_delay")


def nodes_and_scrape(r, tries=5):
    """(SHOW pool_nodes rows as dicts of NODE_COLUMNS, scrape) with the scrape taken between two
    identical SHOWs."""
    with connect(r.port) as c:
        def show():
            cur = c.execute("show pool_nodes")
            cols = [d.name for d in cur.description]
            return [{k: str(row[cols.index(k)]) for k in NODE_COLUMNS} for row in cur.fetchall()]
        for _ in range(tries):
            before = show()
            fams, _ = scrape(r)
            if show() == before:
                return before, fams
    raise AssertionError("SHOW pool_nodes kept changing around the scrape")


def test_promtool(hr):
    """promtool check metrics (Debian's prometheus, scripts/deps.sh) reads the exposition on stdin
    and reports format errors and lint problems (names, units, HELP); any report fails the test,
    after traffic so that every family has samples (the pools, the histogram)."""
    import shutil
    import subprocess
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/deps.sh installs Debian's prometheus package"
    with connect(hr.port) as c:
        c.execute("select 1").fetchall()
        body = get(hr, "/metrics")[1]
    r = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_allow_list(pgrelay):
    r = http_relay_unsettled(pgrelay, allow=["10.0.0.0/8"])
    assert get(r, "/metrics")[0] == 403
    assert get(r, "/cluster")[0] == 403
    assert get(r, "/health")[0] == 200


def http_relay_unsettled(pgrelay, **http):
    port = free_port()
    r = pgrelay(http={"port": port, "idle_timeout": "2s", **http})
    r.http_port = port
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if get(r, "/health")[0] == 200:
                return r
        except OSError:
            time.sleep(0.1)
    raise AssertionError("HTTP listener did not come up")


def raw(r, data, timeout=TIMEOUT):
    """Sends data, returns everything the server wrote until it closed (or the deadline)."""
    s = socket.create_connection(("127.0.0.1", r.http_port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except socket.timeout:
        return out + b"<timeout>"
    finally:
        s.close()


def test_oversized_headers(hr):
    out = raw(hr, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 "), out[:100]


def test_pipelined_and_garbage(hr):
    two = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /node/1 HTTP/1.1\r\nHost: x\r\n\r\n"
    out = raw(hr, two + b"\x00\x01garbage\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 ") == 1 and out.count(b"HTTP/1.1 206 ") == 1, out
    assert b"HTTP/1.1 400 " in out and b"<timeout>" not in out
    out = raw(hr, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


def test_slow_client_closed(hr):
    """A request never finished is closed after http.idle_timeout (2s here)."""
    s = socket.create_connection(("127.0.0.1", hr.http_port), timeout=10)
    try:
        t0 = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\nHost")
        for _ in range(20):  # keep dripping: the deadline must not move
            try:
                s.sendall(b"x")
            except OSError:
                break
            time.sleep(0.2)
        assert s.recv(100) == b""
        assert 1.5 < time.monotonic() - t0 < 6
    finally:
        s.close()


@pytest.mark.deadline(120)
def test_idle_flood_data_plane_unaffected(pgrelay):
    r = http_relay_unsettled(pgrelay, max_connections=256, idle_timeout="30s")
    socks = []
    try:
        for _ in range(500):
            try:
                socks.append(socket.create_connection(("127.0.0.1", r.http_port), timeout=5))
            except OSError:
                break
        assert len(socks) == 500  # accepted by the kernel; pgrelay closes those beyond 256
        t0 = time.monotonic()
        with connect(r.port) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        assert time.monotonic() - t0 < 3
        # The extra ones were closed at once; the limit keeps the health paths answering again
        # as soon as connections are freed.
        closed = 0
        for s in socks:
            s.settimeout(0.01)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                closed += 1
        assert closed >= 500 - 256
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if get(r, "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    assert get(r, "/health")[0] == 200


def test_keepalive_bounded(hr):
    c = http.client.HTTPConnection("127.0.0.1", hr.http_port, timeout=TIMEOUT)
    try:
        for i in range(5):
            c.request("GET", "/health")
            resp = c.getresponse()
            resp.read()
            assert resp.status == 200
            assert resp.getheader("Connection") == "keep-alive"
    finally:
        c.close()
