"""The PgBouncer-compatible console on the virtual database pgbouncer, the statistics behind it, and
the SHOW pool_* commands pgpool2_exporter reads (doc/admin.md)."""

import http.client
import re
import subprocess
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import client_env, connect, free_port

pytestmark = pytest.mark.pgrelay_only

TEXT, INT4, INT8, NUMERIC = 25, 23, 20, 1700

# PgBouncer 1.25 (src/admin.c, src/stats.c): column names and types (s text, i int4, q int8, N numeric).
SOCKET = ("type user database replication state addr port local_addr local_port connect_time request_time "
          "wait wait_us close_needed ptr link remote_pid tls application_name prepared_statements id",
          "ssssssisiTTiiississii")
STAT_NAMES = ("server_assignment_count xact_count query_count received sent xact_time query_time wait_time "
              "client_parse_count server_parse_count bind_count").split()
EXPECTED = {
    "POOLS": ("database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active "
              "sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us "
              "pool_mode load_balance_hosts", "ssiiiiiiiiiiiiiss"),
    "CLIENTS": SOCKET,
    "SERVERS": SOCKET,
    "STATS": ("database " + " ".join("total_" + n for n in STAT_NAMES) + " "
              + " ".join("avg_" + n for n in STAT_NAMES).replace("avg_received", "avg_recv")
              .replace("avg_sent", "avg_sent"), "s" + "N" * 22),
    "STATS_TOTALS": ("database server_assignment_count xact_count query_count bytes_received bytes_sent "
                     "xact_time query_time wait_time client_parse_count server_parse_count bind_count",
                     "s" + "N" * 11),
    "STATS_AVERAGES": ("database server_assignment_count xact_count query_count bytes_received bytes_sent "
                       "xact_time query_time wait_time avg_client_parse_count avg_server_parse_count "
                       "avg_bind_count", "s" + "N" * 11),
    "DATABASES": ("name host port database force_user pool_size min_pool_size reserve_pool_size "
                  "server_lifetime pool_mode load_balance_hosts max_connections current_connections "
                  "max_client_connections current_client_connections paused disabled", "ssissiiiissiiiiii"),
    "USERS": ("name pool_size reserve_pool_size pool_mode max_user_connections current_connections "
              "max_user_client_connections current_client_connections", "ssssiiii"),
    "CONFIG": ("key value default changeable", "ssss"),
    "LISTS": ("list items", "si"),
    "VERSION": ("version", "s"),
}
OIDS = {"s": TEXT, "T": TEXT, "i": INT4, "q": INT8, "N": NUMERIC}

# pgpool2_exporter (pgpool2_exporter.go, metricMaps): the columns it reads per SHOW, and how.
EXPORTER = {
    "pool_nodes": {"label": ["hostname", "port", "role"], "status": ["status"],
                   "number": ["select_cnt", "replication_delay"]},
    "pool_backend_stats": {"label": ["hostname", "port", "role"], "status": ["status"],
                           "number": ["select_cnt", "insert_cnt", "update_cnt", "delete_cnt", "ddl_cnt",
                                      "other_cnt", "panic_cnt", "fatal_cnt", "error_cnt"]},
    "pool_health_check_stats": {"label": ["hostname", "port", "role"], "status": ["status"],
                                "number": ["total_count", "success_count", "fail_count", "skip_count",
                                           "retry_count", "average_retry_count", "max_retry_count",
                                           "max_duration", "min_duration", "average_duration"]},
    "pool_processes": {"label": ["pool_pid", "database", "username"], "status": [], "number": []},
    "pool_pools": {"label": ["pool_pid", "pool_id", "backend_id", "database", "username"], "status": [],
                   "number": []},
    "pool_cache": {"label": [], "status": [],
                   "number": ["num_cache_hits", "num_selects", "cache_hit_ratio", "num_hash_entries",
                              "used_hash_entries", "num_cache_entries", "used_cache_entries_size",
                              "free_cache_entries_size", "fragment_cache_entries_size"]},
}


def console(r, user="postgres", password="postgres"):
    return connect(r.port, user=user, password=password, dbname="pgbouncer")


def rows(c, cmd):
    cur = c.execute(cmd)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def pool_row(c, db="app", user="app"):
    got = [r for r in rows(c, "SHOW POOLS") if r["database"] == db and r["user"] == user]
    return got[0] if got else None


def wait_for(pred, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_show_columns_and_types(pgrelay):
    """Bug guarded: a console SHOW differs from PgBouncer 1.25 in a column's name, order or type, so
    pgbouncer_exporter and scripts written for PgBouncer misread it; both protocols answer."""
    r = pgrelay()
    with connect(r.port) as app:
        app.execute("select 1")
        for prepare in (None, 0):  # simple protocol, then Parse/Bind/Describe/Execute
            with psycopg.connect(host="127.0.0.1", port=r.port, user="postgres", password="postgres",
                                 dbname="pgbouncer", autocommit=True, prepare_threshold=prepare) as c:
                for what, (names, types) in EXPECTED.items():
                    for text in (f"SHOW {what}", f"show {what.lower()};"):
                        cur = c.execute(text)
                        assert [d.name for d in cur.description] == names.split(), what
                        assert [d.type_code for d in cur.description] == [OIDS[t] for t in types], what
                        assert cur.statusmessage == "SHOW"
                        cur.fetchall()
                assert c.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer 1.25")
                config = {row["key"]: row["value"] for row in rows(c, "SHOW CONFIG")}
                assert {"port", "pool.mode", "stats_period"} <= config.keys()
                assert float(config["max_client_conn"]) > 0  # pgbouncer_exporter parses it
                lists = {row["list"]: row["items"] for row in rows(c, "SHOW LISTS")}
                assert lists["pools"] >= 1 and lists["used_clients"] >= 2


def test_pools_and_clients_while_transactions_are_open(pgrelay):
    """Bug guarded: SHOW POOLS / CLIENTS / SERVERS disagree with what clients hold: N clients inside
    transactions must show as cl_active with N active servers (transaction mode), and be listed with
    their ids and links."""
    r = pgrelay(pool={"mode": "transaction"}, load_balance={"enabled": False})
    apps = [connect(r.port, autocommit=False) for _ in range(3)]
    try:
        for a in apps:
            a.execute("select 1")  # opens a transaction: the backend stays linked
        with console(r) as c:
            p = pool_row(c)
            assert p["cl_active"] == 3 and p["cl_waiting"] == 0, p
            assert p["sv_active"] == 3 and p["pool_mode"] == "transaction", p
            clients = [x for x in rows(c, "SHOW CLIENTS") if x["database"] == "app"]
            assert len(clients) == 3 and all(x["state"] == "active" and x["link"] for x in clients)
            servers = {x["ptr"]: x for x in rows(c, "SHOW SERVERS") if x["database"] == "app"}
            assert all(servers[x["link"]]["link"] == x["ptr"] for x in clients), (clients, servers)
            for a in apps:
                a.commit()
            p = wait_for(lambda: (lambda q: q if q["sv_active"] == 0 else None)(pool_row(c)), "release")
            assert p["sv_idle"] == 3 and p["cl_active"] == 3
            st = rows(c, "SHOW STATS_TOTALS")[0]
            assert st["database"] == "app" and st["xact_count"] >= 3 and st["query_count"] >= 3
            assert st["bytes_received"] > 0 and st["bytes_sent"] > 0 and st["xact_time"] > 0
    finally:
        for a in apps:
            a.close()


def test_pause_resume_kill_client(pgrelay):
    """Bug guarded: PAUSE does not hold new queries (or never completes), RESUME does not release a
    client blocked by it, KILL_CLIENT does not end the named client."""
    r = pgrelay(pool={"mode": "transaction"}, load_balance={"enabled": False})
    with connect(r.port) as app, connect(r.port) as victim, console(r) as c:
        app.execute("select 1")
        victim.execute("select 1")
        assert c.execute("PAUSE app").statusmessage == "PAUSE"
        assert rows(c, "SHOW DATABASES")[0]["paused"] == 1
        assert pool_row(c)["sv_idle"] == 0  # PAUSE closed the idle connections
        result = {}

        def blocked():
            try:
                result["v"] = app.execute("select 42").fetchone()[0]
            except Exception as e:  # reported below
                result["e"] = e
        t = threading.Thread(target=blocked)
        t.start()
        p = wait_for(lambda: (lambda q: q if q["cl_waiting"] == 1 else None)(pool_row(c)), "a waiting client")
        assert p["maxwait"] >= 0 and not result
        time.sleep(0.3)
        assert "v" not in result
        assert c.execute("RESUME app").statusmessage == "RESUME"
        t.join(10)
        assert result.get("v") == 42, result
        vid = [x["id"] for x in rows(c, "SHOW CLIENTS") if x["database"] == "app"]
        assert len(vid) == 2
        victim_id = max(vid)  # connected second
        assert c.execute(f"KILL_CLIENT {victim_id}").statusmessage == "KILL_CLIENT"
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        assert app.execute("select 2").fetchone() == (2,)
        with pytest.raises(psycopg.errors.ProtocolViolation, match="client not found"):
            c.execute(f"KILL_CLIENT {victim_id}")
        with pytest.raises(psycopg.errors.ProtocolViolation, match="is not paused"):
            c.execute("RESUME app")


def test_reconnect_wait_close_reload_and_errors(pgrelay):
    """Bug guarded: RECONNECT closes a connection in use (or never closes it on release), WAIT_CLOSE
    does not wait for it, RELOAD is not the SIGHUP path, an unknown command is not PgBouncer's 08P01."""
    r = pgrelay(pool={"mode": "transaction"}, load_balance={"enabled": False})
    with connect(r.port, autocommit=False) as app, console(r) as c:
        app.execute("select 1")  # holds its backend inside a transaction
        old = [x for x in rows(c, "SHOW SERVERS") if x["database"] == "app"]
        assert len(old) == 1 and old[0]["close_needed"] == 0
        assert c.execute("RECONNECT app").statusmessage == "RECONNECT"
        now = [x for x in rows(c, "SHOW SERVERS") if x["database"] == "app"]
        assert [x["close_needed"] for x in now] == [1] and now[0]["state"] == "active"
        assert app.execute("select 2").fetchone() == (2,)  # still serves its transaction
        done = {}

        def waiter():
            with console(r) as c2:
                done["tag"] = c2.execute("WAIT_CLOSE app").statusmessage
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        assert not done
        app.commit()
        t.join(10)
        assert done.get("tag") == "WAIT_CLOSE"
        app.execute("select 3")
        app.commit()
        new = [x for x in rows(c, "SHOW SERVERS") if x["database"] == "app"]
        assert len(new) == 1 and new[0]["id"] != old[0]["id"] and new[0]["close_needed"] == 0
        assert c.execute("RELOAD").statusmessage == "RELOAD"
        wait_for(lambda: "reload" in r.log_tail(50).lower(), "the reload in the log")
        for bad in ("SHOW NOTHING", "FROB", "PAUSE a b", "show"):
            with pytest.raises(psycopg.errors.ProtocolViolation, match=r"invalid command '.*', use SHOW HELP;"):
                c.execute(bad)
        assert c.execute("SHOW VERSION").fetchone()  # the session goes on


def test_who_may_use_the_console(pgrelay):
    """Bug guarded: a user in neither admin_users nor stats_users reaches the console, or a stats user
    may run PAUSE/KILL; users still authenticate as usual."""
    r = pgrelay(stats_users="md5user")
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        console(r, user="app", password="app")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed|28P01"):
        console(r, user="postgres", password="wrong")
    with console(r, user="md5user", password="md5pw") as s:
        assert rows(s, "SHOW POOLS") is not None and rows(s, "SHOW STATS") is not None
        for cmd in ("PAUSE", "RESUME", "RECONNECT", "KILL app", "KILL_CLIENT 1", "RELOAD", "SHUTDOWN",
                    "WAIT_CLOSE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="admin access needed"):
                s.execute(cmd)
    assert r.proc.poll() is None


def test_kill_database(pgrelay):
    """Bug guarded: KILL db leaves its clients connected or lets new queries through before RESUME."""
    r = pgrelay(pool={"mode": "transaction"})
    with connect(r.port) as app, console(r) as c:
        app.execute("select 1")
        assert c.execute("KILL app").statusmessage == "KILL"
        with pytest.raises(psycopg.OperationalError):
            app.execute("select 1")
        assert rows(c, "SHOW DATABASES")[0]["paused"] == 1
        c.execute("RESUME app")
    with connect(r.port) as app:
        assert app.execute("select 5").fetchone() == (5,)


def pgbench_args(port, *args):
    return ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app", *args, "app"]


def total_xacts(c):
    return int(rows(c, "SHOW STATS_TOTALS")[0]["xact_count"])


@pytest.mark.deadline(120)
def test_stats_agree_with_pgbench(pgrelay):
    """Bug guarded: SHOW STATS counts transactions wrongly (per message, per query, or not at all):
    over a pgbench -P 1 run the rate from total_xact_count deltas matches pgbench's progress TPS
    within 5% over the same seconds, the whole delta matches pgbench's count, and avg_xact_count
    (stats_period 1s) is of the same order."""
    r = pgrelay(pool={"mode": "transaction"}, stats_period="1s")
    init = subprocess.run(pgbench_args(r.port, "-i", "-s", "1", "-q"), env=client_env("app"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    with console(r) as c:
        before = total_xacts(c)
        t0 = time.monotonic()
        proc = subprocess.Popen(pgbench_args(r.port, "-S", "-c", "4", "-j", "2", "-T", "9", "-P", "1"),
                                env=client_env("app"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            samples, avgs = [], []
            while proc.poll() is None and time.monotonic() - t0 < 30:
                st = rows(c, "SHOW STATS")[0]
                samples.append((time.monotonic() - t0, int(st["total_xact_count"])))
                if 4 < samples[-1][0] < 8:
                    avgs.append(float(st["avg_xact_count"]))
                time.sleep(0.05)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        after = total_xacts(c)
    text = out + err
    processed = int(re.search(r"number of transactions actually processed: (\d+)", text).group(1))
    progress = {round(float(s)): float(tps)
                for s, tps in re.findall(r"progress: ([\d.]+) s, ([\d.]+) tps", text)}
    # pgbench's own statements outside the timed run (its scale query) are a handful.
    assert abs((after - before) - processed) <= 20, (after - before, processed)

    # pgbench's clock starts once its clients are connected, when transactions start to count:
    # the first sample past its scale query (within one sampling step).
    origin = next(t for t, v in samples if v > before + 3)

    def at(ts):  # the console's total ts seconds into pgbench's run, interpolated
        ts += origin
        for (t1, v1), (t2, v2) in zip(samples, samples[1:]):
            if t1 <= ts <= t2:
                return v1 + (v2 - v1) * (ts - t1) / (t2 - t1)
        raise AssertionError(f"no console sample around {ts}s: {samples}")
    window = [s for s in range(3, 8) if s in progress]  # steady seconds, (2, 7] of pgbench's clock
    assert len(window) == 5, text
    pgbench_rate = sum(progress[s] for s in window) / len(window)
    console_rate = (at(7.0) - at(2.0)) / 5.0
    assert abs(console_rate - pgbench_rate) <= 0.05 * pgbench_rate, (console_rate, pgbench_rate)
    assert avgs and max(avgs) > 0.5 * pgbench_rate and min(avgs) < 1.5 * pgbench_rate, (avgs,
                                                                                         pgbench_rate)


def test_pgpool2_exporter_queries(pgrelay):
    """Bug guarded: a SHOW pool_* that pgpool2_exporter scrapes is missing a column it reads, a value
    it converts to a number does not parse, or SHOW POOL_VERSION does not start with a version its
    regexp accepts (it would then skip pool_backend_stats and pool_health_check_stats)."""
    r = pgrelay()
    with connect(r.port) as app:
        app.execute("select 1")
        app.execute("create temp table t(x int)")
        app.execute("insert into t values (1)")
        app.execute("update t set x = 2")
        app.execute("delete from t")
        with pytest.raises(psycopg.errors.DivisionByZero):
            app.execute("select 1/0")
    with connect(r.port, user="postgres", password="postgres", dbname="postgres") as c:
        cur = c.execute("SHOW POOL_VERSION;")
        assert [d.name for d in cur.description] == ["pool_version"]
        v = cur.fetchone()[0]
        m = re.match(r"^((\d+)(\.\d+)(\.\d+)?)", v)
        assert m and tuple(int(x) for x in m.group(1).split(".")) >= (4, 2, 0), v
        for ns, use in EXPORTER.items():
            cur = c.execute(f"SHOW {ns};")
            names = [d.name for d in cur.description]
            for col in use["label"] + use["status"] + use["number"]:
                assert col in names, (ns, col, names)
            got = cur.fetchall()
            assert got or ns in ("pool_pools",), ns
            for row in got:
                d = dict(zip(names, row))
                for col in use["number"]:
                    float(d[col])
                for col in use["status"]:
                    assert d[col] in ("up", "down", "waiting", "unused", "quarantine"), d
        cur = c.execute("SHOW pool_backend_stats")
        names = [d.name for d in cur.description]
        bs = [dict(zip(names, row)) for row in cur.fetchall()]
        assert names == ["node_id", "hostname", "port", "status", "role", "select_cnt", "insert_cnt",
                         "update_cnt", "delete_cnt", "ddl_cnt", "other_cnt", "panic_cnt", "fatal_cnt",
                         "error_cnt"]
        primary = [b for b in bs if b["role"] == "primary"][0]
        for col in ("insert_cnt", "update_cnt", "delete_cnt", "ddl_cnt"):
            assert int(primary[col]) >= 1, (col, primary)
        assert sum(int(b["error_cnt"]) for b in bs) >= 1, bs
        cache = c.execute("SHOW pool_cache").fetchall()
        assert len(cache) == 1


def test_metrics_families(pgrelay):
    """Bug guarded: /metrics lacks the console's statistics (bytes, per-pool transactions and
    queries, waits) that pgbouncer_exporter users chart."""
    port = free_port()
    r = pgrelay(http={"port": port})
    with connect(r.port) as app:
        for _ in range(5):
            app.execute("select 1")
        hc = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        hc.request("GET", "/metrics")
        body = hc.getresponse().read().decode()
        hc.close()
    for fam in ("pgrelay_client_received_bytes_total", "pgrelay_client_sent_bytes_total",
                "pgrelay_client_wait_seconds_bucket", "pgrelay_client_wait_seconds_count",
                "pgrelay_pool_maxwait_seconds"):
        assert re.search(rf"^{fam}(\{{[^}}]*\}})? \d", body, re.M), fam
    m = re.search(r'^pgrelay_pool_transactions_total\{database="app",user="app"\} (\d+)', body, re.M)
    assert m and int(m.group(1)) >= 5, body
    m = re.search(r'^pgrelay_pool_queries_total\{database="app",user="app"\} (\d+)', body, re.M)
    assert m and int(m.group(1)) >= 5
    m = re.search(r"^pgrelay_client_received_bytes_total (\d+)", body, re.M)
    assert int(m.group(1)) > 0


def test_console_bad_input(pgrelay):
    """Bug guarded: pipelined console commands are answered out of order or lost, an over-long
    command or a message the console does not take crashes or hangs it instead of an error."""
    r = pgrelay()
    with pgwire.connect(r.port, user="postgres", password="postgres", database="pgbouncer", timeout=5) as w:
        w.send(pgwire.query("SHOW VERSION") + pgwire.query("nonsense") + pgwire.query("show lists;"))
        first = w.read_cycle(timeout=5)
        assert first.results[0].text_rows()[0][0].startswith("PgBouncer")
        second = w.read_cycle(timeout=5)
        assert second.errors and second.errors[0]["C"] == "08P01"
        third = w.read_cycle(timeout=5)
        assert third.results[0].text_rows()[0][0] == "databases"
        w.send(pgwire.query("SHOW " + "x" * 4500))  # longer than a command may be: an error
        cyc = w.read_cycle(timeout=5)
        assert cyc.errors and cyc.errors[0]["C"] == "08P01"
        w.send(pgwire.query("show " + "y" * 20000))  # longer than a console message may be: closed
        msgs = w.read_all_until_close(timeout=5)
        assert msgs and msgs[-1].type == "E" and pgwire.parse_error_fields(msgs[-1].payload)["C"] == "08P01"
    with pgwire.connect(r.port, user="postgres", password="postgres", database="pgbouncer", timeout=5) as w:
        w.send(pgwire.copy_data(b"x"))
        msgs = w.read_all_until_close(timeout=5)
        assert msgs and pgwire.parse_error_fields(msgs[-1].payload)["C"] == "08P01"
    with pgwire.connect(r.port, user="postgres", password="postgres", database="pgbouncer", timeout=5) as w:
        w.send(pgwire.parse("", "SHOW POOLS") + pgwire.bind("", "") + pgwire.describe("P", "")
               + pgwire.execute() + pgwire.sync() + pgwire.parse("", "FROB") + pgwire.bind("", "")
               + pgwire.execute() + pgwire.sync())
        ok = w.read_cycle(timeout=5)
        assert not ok.errors and ok.results[0].command == "SHOW"
        bad = w.read_cycle(timeout=5)
        assert bad.errors and bad.errors[0]["C"] == "08P01"
    assert r.proc.poll() is None
