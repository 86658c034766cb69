"""Failover figures through the proxy's port: pgrelay, and pgpool-II in the same run when present.

Each run takes a fresh copy of one template cluster (scripts/cluster.sh: a primary, two streaming
standbys) per scenario, starts the proxy in front of it with a 1 s health check and the repository's
conf/failover.sh and conf/follow_primary.sh, puts client load on it (tests/integration/
failover_load.py: every login and query with its own deadline) and breaks the primary:

  kill     synchronous replication (synchronous_standby_names = 'ANY 1 (*)' on the primary), one
           writer (autocommit INSERTs, one every 10 ms) and reader sessions until each standby
           serves one; kill -9 of the primary's postmaster.
             write gap  kill -> the first INSERT accepted by another node, through the proxy
             read gap   the longest time without an answer on the reader session(s) of the
                        standby that was not promoted, from the kill to 2 s after the first write
             dropped    reader sessions that got an error or were closed
             lost       INSERTs acknowledged to the client that the new primary does not have
  frozen   asynchronous replication, one writer whose requests have an 8 s deadline; SIGSTOP of
           the primary's postmaster and all its children (health_check timeout 1 s, no retry).
             frozen     SIGSTOP -> the first INSERT accepted by another node (capped)

The proxies: backend weights 0/1/1 (reads go to the standbys only), health checks every 1 s with a
1 s timeout (no retry for the frozen scenario, one for kill), failover on backend errors. pgpool-II
(streaming-replication mode, load balancing on, pool_passwd in clear text, run as the postgres
user) uses the same scripts with its own placeholders; they fall back to the positional arguments
when the PGRELAY_* variables are missing.

Usage: bench/failover_bench.sh [RUNS] [--no-pgpool] [--manager-only]
  RUNS            runs per proxy and scenario (default 5)
  --no-pgpool     pgrelay only
  --manager-only  the older measurement of the cluster manager alone (tests/integration/
                  cluster_main.c), no data plane; see bench/README.md
Environment: PGRELAY_BIN (default build/pgrelay), FROZEN_CAP (s, default 60), BENCH_KEEP_TMP=1 keeps
the work folder (proxy logs, configs).
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psycopg  # noqa: E402
import pytest  # noqa: E402  (the helpers call pytest.fail/skip)

import failover_helpers as fh  # noqa: E402
from conftest import free_port, render_config, wait_port  # noqa: E402
from failover_load import ClientLoop, stop_all  # noqa: E402

FAILOVER_SH = REPO / "conf" / "failover.sh"
FOLLOW_SH = REPO / "conf" / "follow_primary.sh"
PLACEHOLDERS = "%d %h %p %D %m %H %M %P %r %R %N %S"
FROZEN_CAP = float(os.environ.get("FROZEN_CAP", "60"))
KILL_CAP = 30.0


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Clusters (the fixtures of failover_helpers, used as plain generators).


class Clusters:
    def __init__(self):
        self.tgen = fh.cluster_template.__wrapped__()
        self.template = next(self.tgen)

    def new(self):
        gen = fh.own_cluster.__wrapped__(self.template, None)
        return gen, next(gen)

    @staticmethod
    def drop(gen):
        try:
            next(gen)
        except StopIteration:
            pass

    def close(self):
        self.drop(self.tgen)


# ---------------------------------------------------------------------------------------------------------
# Proxies.


class Pgrelay:
    name = "pgrelay"

    def __init__(self, binary):
        self.binary = binary

    def start(self, c, workdir, frozen):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "backends": [{"host": "127.0.0.1", "port": c.ports[i], "weight": 0.0 if i == 0 else 1.0,
                          "data_directory": str(c.data_dirs[i]), "application_name": f"node{i}"}
                         for i in range(3)],
            "auth": {"users_file": "users.txt"},
            "logging": {"level": "log"},
            "health_check": {"period": "1s", "timeout": "1s", "max_retries": 0 if frozen else 1,
                             "retry_delay": "500ms", "user": "postgres", "password": "postgres",
                             "database": "postgres"},
            "failover_command": f"{FAILOVER_SH} {PLACEHOLDERS}",
            "follow_primary_command": f"{FOLLOW_SH} {PLACEHOLDERS}",
            "failover_command_timeout": "60s",
            "search_primary_node_timeout": "30s",
            "pool": {"query_wait_timeout": "30s"},
        }
        (self.dir / "pgrelay.conf").write_text(render_config(settings))
        (self.dir / "users.txt").write_text("app:app\npostgres:postgres\n")
        env = dict(os.environ, PGPASSWORD="postgres", PGBIN=str(fh.PGBIN))
        self.log = open(self.dir / "pgrelay.log", "ab")
        self.proc = subprocess.Popen([str(self.binary), "-f", "pgrelay.conf"], cwd=self.dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if not wait_port(self.port, 15, self.proc):
            raise RuntimeError(f"pgrelay did not start; see {self.dir / 'pgrelay.log'}")
        return self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                log(f"  pgrelay did not stop within 10 s of SIGTERM: killed (see {self.dir})")
        self.log.close()


class Pgpool:
    name = "pgpool-II"

    @staticmethod
    def available():
        return shutil.which("pgpool") or Path("/usr/sbin/pgpool").exists()

    def start(self, c, workdir, frozen):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port, pcp = free_port(), free_port()
        d = self.dir
        lines = [
            "listen_addresses = '127.0.0.1'", f"port = {self.port}", f"unix_socket_directories = '{d}'",
            "pcp_listen_addresses = ''", f"pcp_port = {pcp}", f"pcp_socket_dir = '{d}'",
            "backend_clustering_mode = 'streaming_replication'",
        ]
        for i in range(3):
            lines += [f"backend_hostname{i} = '127.0.0.1'", f"backend_port{i} = {c.ports[i]}",
                      f"backend_weight{i} = {0 if i == 0 else 1}",
                      f"backend_data_directory{i} = '{c.data_dirs[i]}'",
                      f"backend_flag{i} = 'ALLOW_TO_FAILOVER'", f"backend_application_name{i} = 'node{i}'"]
        lines += [
            "enable_pool_hba = on", f"pool_passwd = '{d}/pool_passwd'",
            "num_init_children = 32", "max_pool = 1", "reserved_connections = 0",
            "child_life_time = 0", "child_max_connections = 0", "connection_life_time = 0",
            "client_idle_limit = 0", "connection_cache = on",
            "load_balance_mode = on", "statement_level_load_balance = off",
            "sr_check_period = 1", "sr_check_user = 'postgres'", "sr_check_password = 'postgres'",
            "sr_check_database = 'postgres'",
            "health_check_period = 1", "health_check_timeout = 1",
            f"health_check_max_retries = {0 if frozen else 1}", "health_check_retry_delay = 1",
            "health_check_user = 'postgres'", "health_check_password = 'postgres'",
            "health_check_database = 'postgres'", "connect_timeout = 2000",
            "failover_on_backend_error = on",
            f"failover_command = '{FAILOVER_SH} {PLACEHOLDERS}'",
            f"follow_primary_command = '{FOLLOW_SH} {PLACEHOLDERS}'",
            "search_primary_node_timeout = 30", "auto_failback = off", "detach_false_primary = off",
            "use_watchdog = off", "memory_cache_enabled = off",
            "log_destination = 'stderr'", "log_min_messages = warning", "log_connections = off",
            f"logdir = '{d}'", f"pid_file_name = '{d}/pgpool.pid'",
        ]
        (d / "pgpool.conf").write_text("\n".join(lines) + "\n")
        (d / "pool_passwd").write_text("app:TEXTapp\npostgres:TEXTpostgres\n")
        (d / "pool_hba.conf").write_text("host all all 127.0.0.1/32 scram-sha-256\n")
        (d / "pcp.conf").write_text("")
        os.chmod(d / "pool_passwd", 0o600)
        if fh.AS_PG:
            subprocess.run(["chown", "-R", "postgres:", str(d)], check=True)
        cmd = fh.AS_PG + ["env", "PGPASSWORD=postgres", f"PGBIN={fh.PGBIN}", "pgpool", "-n",
                          "-f", f"{d}/pgpool.conf", "-F", f"{d}/pcp.conf", "-a", f"{d}/pool_hba.conf"]
        self.log = open(d / "pgpool.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd="/", stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(self.port, 20, self.proc):
            raise RuntimeError(f"pgpool did not start; see {d / 'pgpool.log'}")
        return self.port

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown of pgpool and its children
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log(f"  pgpool did not stop within 15 s: killed (see {self.dir})")
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


# ---------------------------------------------------------------------------------------------------------
# Scenarios.


def port_node(c, value):
    try:
        return c.ports.index(int(value))
    except (TypeError, ValueError):
        return -1


def writer(port, table, **kw):
    return ClientLoop(port, lambda n: f"insert into {table}(id) values ({n}) returning inet_server_port()",
                      name="writer", **kw)


def first_elsewhere(c, loop, t, dead=0):
    return next((o for o in loop.all_ops() if o.ok and o.t0 >= t and port_node(c, o.value) != dead), None)


def wait_until(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pred()
        if r:
            return r
        time.sleep(step)
    return None


def open_readers(c, port, want=(1, 2), max_sessions=24):
    """Reader sessions (select inet_server_port(), every 20 ms) until each node in want serves one."""
    got, spare = {}, []
    for i in range(max_sessions):
        lp = ClientLoop(port, lambda n: "select inet_server_port()", name=f"reader{i}", op_timeout=8.0)
        lp.start()
        if not lp.wait_ops(1, 15):
            spare.append(lp)
            continue
        n = port_node(c, lp.ok_ops()[0].value)
        if n in want and n not in got:
            got[n] = lp
        else:
            spare.append(lp)
        if all(x in got for x in want):
            break
    stop_all(spare)
    return got


def primary_of(c):
    for i in (1, 2):
        try:
            if c.query(i, "select not pg_is_in_recovery()")[0][0]:
                return i
        except Exception:
            pass
    return -1


def setup_cluster(clusters, sync):
    gen, c = clusters.new()
    if sync:
        c.query(0, "alter system set synchronous_standby_names = 'ANY 1 (*)'")
        c.query(0, "select pg_reload_conf()")
        wait_until(lambda: {x[0] for x in c.query(0, "select sync_state from pg_stat_replication")} == {"quorum"},
                   10, 0.1)
    c.query(0, "create table fo_bench(id int primary key, at timestamptz default now())", dbname="app")
    c.query(0, "grant all on fo_bench to app", dbname="app")
    return gen, c


def warm_up(c, proxy, port):
    """The proxy serves reads from the standbys and writes on the primary."""
    w = writer(port, "fo_bench", pause=0.05)
    w.start()
    ok = w.wait_ops(3, 20)
    stop_all([w])
    if not ok:
        raise RuntimeError(f"{proxy.name} does not serve writes: {w.all_ops()[-3:]} {w.login_errors[-3:]}")
    with psycopg.connect(host="127.0.0.1", port=c.ports[0], user="postgres", password="postgres",
                         dbname="app", autocommit=True) as d:
        d.execute("truncate fo_bench")


def run_kill(clusters, proxy, workdir):
    gen, c = setup_cluster(clusters, sync=True)
    try:
        port = proxy.start(c, workdir, frozen=False)
        try:
            warm_up(c, proxy, port)
            time.sleep(1.5)  # the proxy has seen the standbys (pgpool-II's sr_check, pgrelay's polls)
            readers = open_readers(c, port)
            w = writer(port, "fo_bench", pause=0.01, op_timeout=8.0)
            w.start()
            w.wait_ops(50, 15)
            loops = [w, *readers.values()]
            t_kill = time.monotonic()
            c.kill9(0)
            first = wait_until(lambda: first_elsewhere(c, w, t_kill), KILL_CAP)
            if first:
                time.sleep(2)
            t_end = time.monotonic()
            stop_all(loops)
            new = primary_of(c)
            survivor = {1: 2, 2: 1}.get(new)
            acked = {o.key for o in w.ok_ops()}
            try:
                with psycopg.connect(host="127.0.0.1", port=c.ports[new], user="postgres", password="postgres",
                                     dbname="app", autocommit=True, connect_timeout=5) as d:
                    present = {r[0] for r in d.execute("select id from fo_bench").fetchall()}
                lost = len(acked - present)
            except Exception:
                lost = None
            res = {
                "write_gap": first.t1 - t_kill if first else None,
                "read_gap": readers[survivor].max_gap(t_kill, t_end) if survivor in readers else None,
                "readers": len(readers),
                "readers_dropped": sum(1 for lp in readers.values() if lp.failed_ops() or lp.sessions > 1),
                "survivor_dropped": bool(survivor in readers and (readers[survivor].failed_ops()
                                                                   or readers[survivor].sessions > 1)),
                "writer_errors": len(w.failed_ops(t_kill)),
                "acked": len(acked), "lost": lost, "new": new,
            }
            if survivor in readers and readers[survivor].dead:
                res["read_gap"] = None
            return res
        finally:
            proxy.stop()
    finally:
        Clusters.drop(gen)


def run_frozen(clusters, proxy, workdir):
    gen, c = setup_cluster(clusters, sync=False)
    try:
        port = proxy.start(c, workdir, frozen=True)
        try:
            warm_up(c, proxy, port)
            time.sleep(1.5)
            w = writer(port, "fo_bench", pause=0.01, op_timeout=8.0)
            w.start()
            w.wait_ops(20, 15)
            t0 = time.monotonic()
            c.freeze(0)
            first = wait_until(lambda: first_elsewhere(c, w, t0), FROZEN_CAP)
            stop_all([w])
            fails = w.failed_ops(t0)
            return {
                "frozen": first.t1 - t0 if first else None,
                "client_timeouts": sum(1 for o in fails if o.error == "timeout")
                + sum(1 for t, e in w.login_errors if t >= t0 and e == "timeout"),
                "errors": sorted({o.error.split(":")[0] for o in fails if o.error != "timeout"}),
            }
        finally:
            proxy.stop()
            # own_cluster's teardown thaws (SIGCONT) and stops the frozen node
    finally:
        Clusters.drop(gen)


# ---------------------------------------------------------------------------------------------------------
# Report.


def ms(x):
    return "—" if x is None else f"{x * 1000:.0f}"


def med_max(xs, cap=None):
    got = [x for x in xs if x is not None]
    if not got:
        return "none" if cap is None else f"none within {cap:.0f} s"
    s = f"{statistics.median(got) * 1000:.0f} / {max(got) * 1000:.0f}"
    if len(got) < len(xs):
        s += f" ({len(xs) - len(got)} of {len(xs)} never{'' if cap is None else f' within {cap:.0f} s'})"
    return s


def ratio(a, b):
    a = [x for x in a if x is not None]
    b = [x for x in b if x is not None]
    if not a or not b or statistics.median(a) == 0:
        return "—"
    return f"{statistics.median(b) / statistics.median(a):.1f}x"


def report(results, runs):
    names = list(results)
    log()
    log(f"## Failover through the proxy, {runs} runs each (median / max, ms)")
    log()
    log("| figure | " + " | ".join(names) + (" | pgpool-II / pgrelay |" if len(names) > 1 else " |"))
    log("|---|" + "---|" * len(names) + ("---|" if len(names) > 1 else ""))

    def row(label, f, rat=None):
        cells = [f(results[n]) for n in names]
        extra = ""
        if len(names) > 1:
            extra = f" {rat(results[names[0]], results[names[1]]) if rat else ''} |"
        log(f"| {label} | " + " | ".join(cells) + " |" + extra)

    def col(r, key, sc="kill"):
        return [x[key] for x in r[sc]]

    row("kill -9 of the primary → first write accepted (sync rep.)",
        lambda r: med_max(col(r, "write_gap")), lambda a, b: ratio(col(a, "write_gap"), col(b, "write_gap")))
    row("longest read gap, session on the surviving standby",
        lambda r: med_max(col(r, "read_gap")), lambda a, b: ratio(col(a, "read_gap"), col(b, "read_gap")))
    row("reader sessions dropped (of those open)",
        lambda r: f"{sum(col(r, 'readers_dropped'))} of {sum(col(r, 'readers'))}")
    row("surviving-standby reader dropped (runs)", lambda r: f"{sum(col(r, 'survivor_dropped'))} of {len(r['kill'])}")
    row("writer requests failed after the kill (total)", lambda r: str(sum(col(r, "writer_errors"))))
    row("acknowledged writes lost, sync mode (of acknowledged)",
        lambda r: f"{sum(x for x in col(r, 'lost') if x is not None)} of {sum(col(r, 'acked'))}"
        + (" (some runs not checked)" if None in col(r, "lost") else ""))
    row("SIGSTOP of the primary → first write accepted",
        lambda r: med_max(col(r, "frozen", "frozen"), FROZEN_CAP),
        lambda a, b: ratio(col(a, "frozen", "frozen"), col(b, "frozen", "frozen")))
    row("writer logins and requests that hit the client's 8 s deadline (frozen, total)",
        lambda r: str(sum(col(r, "client_timeouts", "frozen"))))
    log()


KILL_FAILED = {"write_gap": None, "read_gap": None, "readers": 0, "readers_dropped": 0,
               "survivor_dropped": False, "writer_errors": 0, "acked": 0, "lost": None, "new": -1}
FROZEN_FAILED = {"frozen": None, "client_timeouts": 0, "errors": []}


def guarded(scenario, failed, *args):
    """Runs one scenario; a set-up failure is logged and counted as a run without figures."""
    try:
        return scenario(*args)
    except (Exception, pytest.fail.Exception) as e:  # one broken run must not lose the others
        log(f"  {scenario.__name__} failed: {type(e).__name__}: {e}")
        return dict(failed, error=str(e))


def main(argv):
    runs, with_pgpool, manager_only = 5, True, False
    for a in argv:
        if a == "--no-pgpool":
            with_pgpool = False
        elif a == "--manager-only":
            manager_only = True
        elif a.isdigit():
            runs = int(a)
        else:
            print(__doc__)
            return 2
    if manager_only:
        return manager_main(runs)
    binary = Path(os.environ.get("PGRELAY_BIN", REPO / "build" / "pgrelay"))
    binary = binary if binary.is_absolute() else REPO / binary
    if not binary.exists():
        print(f"pgrelay binary {binary} not found (set PGRELAY_BIN)")
        return 1
    proxies = [Pgrelay(binary)]
    if with_pgpool:
        if Pgpool.available():
            proxies.append(Pgpool())
        else:
            log("pgpool not found: pgrelay only")
    tmp = Path(tempfile.mkdtemp(prefix="pgrelay-fobench-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    log(f"pgrelay {binary}, {runs} runs; work folder {tmp}")
    t_start = time.monotonic()
    clusters = Clusters()
    results = {p.name: {"kill": [], "frozen": []} for p in proxies}
    try:
        for i in range(runs):
            for p in proxies:  # interleaved, so that noise hits both
                k = guarded(run_kill, KILL_FAILED, clusters, p, tmp / f"{p.name}-kill{i}")
                results[p.name]["kill"].append(k)
                log(f"run {i + 1} {p.name:9} kill -9: first write {ms(k['write_gap'])} ms, read gap on the "
                    f"surviving standby {ms(k['read_gap'])} ms, readers dropped {k['readers_dropped']}/{k['readers']}, "
                    f"writer errors {k['writer_errors']}, lost {k['lost']} of {k['acked']} acknowledged "
                    f"(new primary node{k['new']})")
                f = guarded(run_frozen, FROZEN_FAILED, clusters, p, tmp / f"{p.name}-frozen{i}")
                results[p.name]["frozen"].append(f)
                log(f"run {i + 1} {p.name:9} SIGSTOP: first write {ms(f['frozen'])} ms, client deadlines hit "
                    "(logins + requests) "
                    f"{f['client_timeouts']}, errors {f['errors']}")
        report(results, runs)
        log(f"({time.monotonic() - t_start:.0f} s; machine: {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at the end)")
    finally:
        clusters.close()
        if not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    lost = sum(x["lost"] or 0 for x in results["pgrelay"]["kill"])
    return 1 if lost else 0


# ---------------------------------------------------------------------------------------------------------
# --manager-only: the cluster manager alone (tests/integration/cluster_main.c), no data plane.
# "First write" is an INSERT sent straight to the node the manager's view names as the new primary.


def manager_first_write(m, c, t0, deadline=20):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        v = m.view()
        p = v["primary"] if v else -1
        if p in (1, 2):
            try:
                with psycopg.connect(host="127.0.0.1", port=c.ports[p], user="postgres",
                                     password="postgres", dbname="app", connect_timeout=2,
                                     autocommit=True) as conn:
                    conn.execute("insert into bench values (1)")
                return time.monotonic() - t0
            except psycopg.Error:
                pass
        time.sleep(0.005)
    return float("nan")


def manager_one_run(driver, clusters, work, frozen=False):
    gen, c = clusters.new()
    work.mkdir(parents=True, exist_ok=True)
    try:
        hc = {"period": "1s", "timeout": "1s", "max_retries": 0} if frozen else {}
        m = fh.Manager(driver, work, fh.manager_config(
            c, failover_command=fh.recorder(work, "failover", f'exec {FAILOVER_SH} "$@"'), health_check=hc))
        m.wait_view(fh.all_up, 15, "discovery")
        c.query(0, "create table bench(x int)", dbname="app")
        mk = m.mark()
        t0 = time.monotonic()
        if frozen:
            c.freeze(0)
        else:
            c.kill9(0)
            m.send("report 0")  # what the data plane does when its backend sockets break
        w = manager_first_write(m, c, t0)
        v = m.wait_view(lambda v: v["primary"] in (1, 2), 20, "new primary", since=mk)
        m.stop()
        return v["t"] - t0, w
    finally:
        Clusters.drop(gen)


def manager_main(runs):
    from driver_build import compile_driver
    tmp = Path(tempfile.mkdtemp(prefix="pgrelay-fobench-"))
    driver = compile_driver(fh.DRIVER_SRC, tmp / "cluster_main")
    clusters = Clusters()
    try:
        view_t, write_t = [], []
        for i in range(runs):
            v, w = manager_one_run(driver, clusters, tmp / f"kill{i}")
            view_t.append(v)
            write_t.append(w)
            log(f"run {i + 1}: kill -9 -> new primary in the view {v * 1000:.0f} ms, first write {w * 1000:.0f} ms")
        fv, fw = manager_one_run(driver, clusters, tmp / "frozen", frozen=True)
        log()
        log(f"manager only: kill -9 -> first write (median of {runs}): {statistics.median(write_t) * 1000:.0f} ms "
            f"(new primary in the view: {statistics.median(view_t) * 1000:.0f} ms)")
        log(f"manager only: SIGSTOP (timeout 1s, max_retries 0) -> new primary {fv * 1000:.0f} ms, "
            f"first write {fw * 1000:.0f} ms")
    finally:
        clusters.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
