"""Helpers shared by the connection-pooling tests (tests/integration/test_pool_*.py).

- `pool_relay(pgrelay, mode, **pool_keys)`: start pgrelay with a `pool = { mode = ...; ... }` group.
- `BackendMonitor`: polls pg_stat_activity on the primary over a direct superuser connection (not
  through pgrelay) and records how many client backends a user / database has, so a test can assert
  the pool never opened more than it may.
- `backend_count`, `wait_backend_count`, `clear_backends`: one-off counts and waits on the primary.
- `run_threads`: run N client functions concurrently with a join deadline; returns their results and
  raises with every exception (and names hung threads) so a failure says which client failed and why.
- `raw_query`: a simple query over pgwire that reports an ErrorResponse and/or the connection closing,
  with the elapsed time (for errors pgrelay sends as FATAL and then closes).

Every network call has a timeout: psycopg connects with connect_timeout (conftest.connect), pgwire reads
have deadlines, thread joins have deadlines. A psycopg query in the main thread is bounded by the per-test
SIGALRM deadline of conftest.py.
"""

import threading
import time

import psycopg

import pgwire

APP_BACKENDS_SQL = ("select count(*) from pg_stat_activity "
                    "where usename = %s and backend_type = 'client backend'")


# Pooling tests watch backends on the primary: they run with read/write splitting off, so that every
# statement of a session lands there (routing has its own tests, test_routing*.py).
PRIMARY_ONLY = {"enabled": False}


def pool_relay(pgrelay, mode="transaction", *, relay_kw=None, **pool_keys):
    """pgrelay with pool.mode = mode and the given pool.* keys (other overrides via relay_kw), all
    statements on the primary (load_balance.enabled = false) unless relay_kw says otherwise."""
    pool = {"mode": mode}
    pool.update(pool_keys)
    kw = {"load_balance": PRIMARY_ONLY}
    kw.update(relay_kw or {})
    return pgrelay(pool=pool, **kw)


def backend_count(cluster, user="app", database=None):
    """Client backends of `user` (optionally in `database`) on the primary, counted directly."""
    with cluster.connect(dbname="postgres") as d:
        if database is None:
            return d.execute(APP_BACKENDS_SQL, (user,)).fetchone()[0]
        return d.execute(APP_BACKENDS_SQL + " and datname = %s", (user, database)).fetchone()[0]


def wait_backend_count(cluster, pred, user="app", database=None, timeout=5.0, interval=0.05):
    """Poll until pred(count) is true; returns (ok, last count, seconds waited)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    with cluster.connect(dbname="postgres") as d:
        while True:
            if database is None:
                n = d.execute(APP_BACKENDS_SQL, (user,)).fetchone()[0]
            else:
                n = d.execute(APP_BACKENDS_SQL + " and datname = %s", (user, database)).fetchone()[0]
            if pred(n):
                return True, n, time.monotonic() - t0
            if time.monotonic() >= deadline:
                return False, n, time.monotonic() - t0
            time.sleep(interval)


def clear_backends(cluster, users=("app", "md5user", "trustuser"), timeout=3.0):
    """Start from a clean primary: wait for client backends of earlier tests' relays to go away, then
    terminate any leftovers (they belong to relays or connections that no longer exist)."""
    deadline = time.monotonic() + timeout
    with cluster.connect(dbname="postgres") as d:
        q = ("select count(*) from pg_stat_activity where usename = any(%s) "
             "and backend_type = 'client backend'")
        while d.execute(q, (list(users),)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        d.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = any(%s) "
                  "and backend_type = 'client backend'", (list(users),))
        deadline = time.monotonic() + 3
        while d.execute(q, (list(users),)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)


class BackendMonitor:
    """Background poller of pg_stat_activity on the primary (direct superuser connection).

    with BackendMonitor(cluster, user="app") as mon: ...load...
    mon.max, mon.samples (list of (t, count))."""

    def __init__(self, cluster, user="app", database=None, interval=0.02, where=None):
        self.cluster = cluster
        self.user = user
        self.database = database
        self.interval = interval
        self.where = where  # extra SQL condition replacing the user/database filter
        self.samples = []
        self.max = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = None

    def _sql(self):
        if self.where is not None:
            return ("select count(*) from pg_stat_activity where backend_type = 'client backend' and ("
                    + self.where + ")"), ()
        if self.database is None:
            return APP_BACKENDS_SQL, (self.user,)
        return APP_BACKENDS_SQL + " and datname = %s", (self.user, self.database)

    def _run(self, conn):
        sql, params = self._sql()
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                n = conn.execute(sql, params).fetchone()[0]
                self.samples.append((round(time.monotonic() - t0, 3), n))
                self.max = max(self.max, n)
                self._stop.wait(self.interval)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            conn.close()

    def __enter__(self):
        conn = self.cluster.connect(dbname="postgres")
        self._thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def summary(self, n=12):
        counts = [c for _, c in self.samples]
        return f"max {self.max} over {len(counts)} samples; last {counts[-n:]}"


class ThreadsFailed(AssertionError):
    pass


def run_threads(fn, n, timeout=30.0, args_for=None):
    """Run fn(i) (or fn(*args_for(i))) in n daemon threads at once (released together by a barrier);
    join with a deadline. Returns the list of results; raises ThreadsFailed naming every failure."""
    results = [None] * n
    errors = {}
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(timeout)
            results[i] = fn(*(args_for(i) if args_for else (i,)))
        except Exception as e:  # noqa: BLE001
            errors[i] = e

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if errors or hung:
        lines = [f"client {i}: {type(e).__name__}: {e}" for i, e in sorted(errors.items())[:10]]
        msg = f"{len(errors)} of {n} clients failed, {len(hung)} still running after {timeout}s"
        if hung:
            msg += f" (hung: {hung[:10]})"
        raise ThreadsFailed(msg + ("\n" + "\n".join(lines) if lines else ""))
    return results


class RawOutcome:
    def __init__(self):
        self.errors = []       # ErrorResponse field dicts
        self.rows = []         # text rows of all results
        self.closed = False    # the server closed the connection
        self.status = None     # ReadyForQuery status if one arrived
        self.elapsed = None

    @property
    def sqlstates(self):
        return [e.get("C") for e in self.errors]

    def __repr__(self):
        return (f"RawOutcome(errors={[(e.get('S'), e.get('C'), e.get('M')) for e in self.errors]}, "
                f"rows={self.rows[:5]}, closed={self.closed}, status={self.status!r}, "
                f"elapsed={self.elapsed and round(self.elapsed, 2)})")


def raw_query(w, sql, timeout=10.0):
    """Send a simple query on a pgwire.Conn and read until ReadyForQuery or the connection closes.
    Never raises for server errors: returns a RawOutcome (pgwire.Timeout propagates)."""
    out = RawOutcome()
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        w.send(pgwire.query(sql))
    except OSError:
        out.closed = True
        out.elapsed = time.monotonic() - t0
        return out
    try:
        while True:
            m = w.read_msg(timeout=max(0.001, deadline - time.monotonic()))
            if m.type == "E":
                out.errors.append(pgwire.parse_error_fields(m.payload))
            elif m.type == "D":
                out.rows.append([None if v is None else v.decode() for v in pgwire.parse_data_row(m.payload)])
            elif m.type == "Z":
                out.status = m.payload.decode()
                break
    except pgwire.Closed:
        out.closed = True
    out.elapsed = time.monotonic() - t0
    return out


def sqlstate_of(exc):
    """SQLSTATE of a psycopg exception (None when libpq saw no ErrorResponse)."""
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate
    return getattr(exc, "sqlstate", None)
