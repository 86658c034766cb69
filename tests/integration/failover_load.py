"""Client load for the end-to-end failover tests (test_failover_e2e.py) and bench/failover_bench.py.

Every client is a thread running one statement again and again through a proxy's port with the raw
protocol client (pgwire.py), so that every login and every query has its own deadline: a client
never waits longer than `op_timeout` for an answer, whatever the proxy does. Each attempt is
recorded as an `Op` (start, end, ok, first column of the answer or the error). A failed attempt
closes the session; the next attempt logs in again (`sessions` counts logins), unless the loop
was made with `reconnect=False`.

Figures computed from the records (all times are time.monotonic()):
  first_ok_after(t)   the first successful attempt that *started* at or after t
  max_gap(t0, t1)     the longest time without a successful answer within [t0, t1]
"""

import threading
import time

import pgwire


class Op:
    __slots__ = ("t0", "t1", "ok", "value", "error", "key")

    def __init__(self, t0, t1, ok, value=None, error=None, key=None):
        self.t0, self.t1, self.ok, self.value, self.error, self.key = t0, t1, ok, value, error, key

    def __repr__(self):
        what = self.value if self.ok else self.error
        return f"Op({self.t0:.3f}..{self.t1:.3f} {'ok' if self.ok else 'FAIL'} {what})"


def error_text(e):
    if isinstance(e, pgwire.PgError):
        return f"{e.sqlstate}: {e.fields.get('M', '')}"
    if isinstance(e, pgwire.Timeout):
        return "timeout"
    if isinstance(e, pgwire.Closed):
        return "closed"
    return f"{type(e).__name__}: {e}"


def simple_value(conn, sql, timeout):
    """Runs sql (simple protocol) and returns the first column of the last row, or None. Raises
    PgError for an ErrorResponse, also when the server closes the connection right after it
    (the error is what the client sees first), Timeout or Closed otherwise."""
    deadline = time.monotonic() + timeout
    conn.send(pgwire.query(sql))
    error, value = None, None
    while True:
        try:
            m = conn.read_msg(timeout=max(0.001, deadline - time.monotonic()))
        except pgwire.Closed:
            if error is not None:
                raise pgwire.PgError(error) from None
            raise
        if m.type == "E":
            error = error or pgwire.parse_error_fields(m.payload)
        elif m.type == "D":
            value = pgwire.parse_data_row(m.payload)[0]
            value = None if value is None else value.decode()
        elif m.type == "Z":
            if error is not None:
                raise pgwire.PgError(error)
            return value


class ClientLoop(threading.Thread):
    """Runs `sql(n)` (n = 0, 1, 2, ...) in a loop through `port` until stop().

    setup: statements run after each login (e.g. "SET pgrelay.route = standby").
    op_timeout: the client's own deadline for one login or one query, in seconds.
    """

    registry = []  # every loop made in this process, in order (tests look at theirs)

    def __init__(self, port, sql, name="loop", user="app", password="app", database="app",
                 setup=(), op_timeout=5.0, pause=0.02, reconnect=True, retry_pause=0.05):
        super().__init__(name=name, daemon=True)
        ClientLoop.registry.append(self)
        self.port, self.sql, self.user, self.password, self.database = port, sql, user, password, database
        self.setup = list(setup)
        self.op_timeout, self.pause, self.reconnect, self.retry_pause = op_timeout, pause, reconnect, retry_pause
        self.ops = []
        self.sessions = 0       # successful logins (the first one included)
        self.login_errors = []  # (t, error text)
        self.conn = None
        self.dead = False       # reconnect=False and the session ended
        self._stop_ev = threading.Event()
        self._lock = threading.Lock()

    # -- control ------------------------------------------------------------------------------------

    def stop(self, join_timeout=None):
        self._stop_ev.set()
        self.join(join_timeout if join_timeout is not None else self.op_timeout * 2 + 2)
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    def wait_ops(self, n, timeout):
        """Waits until at least n successful attempts were recorded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.ok_ops()) >= n:
                return True
            time.sleep(0.02)
        return False

    # -- the loop -----------------------------------------------------------------------------------

    def _login(self):
        t0 = time.monotonic()
        try:
            c = pgwire.connect(self.port, user=self.user, password=self.password, database=self.database,
                               timeout=self.op_timeout)
            for s in self.setup:
                cyc = c.simple(s, timeout=self.op_timeout)
                if cyc.errors:
                    c.close()
                    raise pgwire.PgError(cyc.errors[0])
        except (OSError, pgwire.PgError, pgwire.Timeout, pgwire.Closed) as e:
            self.login_errors.append((t0, error_text(e)))
            return None
        self.sessions += 1
        return c

    def run(self):
        n = 0
        while not self._stop_ev.is_set():
            if self.conn is None:
                if self.dead:
                    break
                self.conn = self._login()
                if self.conn is None:
                    if not self.reconnect and self.sessions:
                        self.dead = True
                        break
                    self._stop_ev.wait(self.retry_pause)
                    continue
            key = n
            n += 1
            t0 = time.monotonic()
            try:
                value = simple_value(self.conn, self.sql(key), self.op_timeout)
                op = Op(t0, time.monotonic(), True, value=value, key=key)
            except (OSError, pgwire.PgError, pgwire.Timeout, pgwire.Closed) as e:
                op = Op(t0, time.monotonic(), False, error=error_text(e), key=key)
                self.conn.close()
                self.conn = None
                if not self.reconnect:
                    self.dead = True
            with self._lock:
                self.ops.append(op)
            self._stop_ev.wait(self.pause if op.ok else self.retry_pause)

    # -- figures ------------------------------------------------------------------------------------

    def all_ops(self):
        with self._lock:
            return list(self.ops)

    def ok_ops(self):
        return [o for o in self.all_ops() if o.ok]

    def failed_ops(self, since=0.0):
        return [o for o in self.all_ops() if not o.ok and o.t1 >= since]

    def first_ok_after(self, t):
        return next((o for o in self.all_ops() if o.ok and o.t0 >= t), None)

    def last_ok_before(self, t):
        oks = [o for o in self.all_ops() if o.ok and o.t1 <= t]
        return oks[-1] if oks else None

    def max_gap(self, t0, t1):
        """Longest stretch in [t0, t1] without a successful answer (t1 capped at now)."""
        t1 = min(t1, time.monotonic())
        prev, gap = t0, 0.0
        for o in self.ok_ops():
            if o.t1 < t0:
                continue
            if o.t1 > t1:
                break
            gap = max(gap, o.t1 - prev)
            prev = o.t1
        return max(gap, t1 - prev)

    def timeouts(self):
        """Logins and requests that got no answer before the deadline: [(start, what)]."""
        out = [(o.t0, f"request {o.key}") for o in self.all_ops() if not o.ok and o.error == "timeout"]
        return out + [(t, "login") for t, e in self.login_errors if e == "timeout"]

    def values(self, since=0.0):
        return [o.value for o in self.ok_ops() if o.t0 >= since]


def stop_all(loops):
    for lp in loops:
        lp._stop_ev.set()
    for lp in loops:
        lp.stop()


def run_simple(conn, sql, timeout):
    """Runs sql (simple protocol): (column names, rows as lists of str) of the last result set.
    Raises PgError for an ErrorResponse, also when the server closes the connection right after
    it (what a client sees first), Timeout or Closed otherwise."""
    deadline = time.monotonic() + timeout
    conn.send(pgwire.query(sql))
    error, names, rows = None, [], []
    while True:
        try:
            m = conn.read_msg(timeout=max(0.001, deadline - time.monotonic()))
        except pgwire.Closed:
            if error is not None:
                raise pgwire.PgError(error) from None
            raise
        if m.type == "E":
            error = error or pgwire.parse_error_fields(m.payload)
        elif m.type == "T":
            names, rows = [c["name"] for c in pgwire.parse_row_description(m.payload)], []
        elif m.type == "D":
            rows.append([None if v is None else v.decode() for v in pgwire.parse_data_row(m.payload)])
        elif m.type == "Z":
            if error is not None:
                raise pgwire.PgError(error)
            return names, rows


def query(port, sql, user="postgres", password="postgres", database="app", timeout=5.0):
    """One statement through port in a fresh session; rows as lists of str. Raises PgError."""
    with pgwire.connect(port, user=user, password=password, database=database, timeout=timeout) as c:
        return run_simple(c, sql, timeout)[1]


def query_dicts(port, sql, user="postgres", password="postgres", database="app", timeout=5.0):
    """Like query(), rows as dicts by column name."""
    with pgwire.connect(port, user=user, password=password, database=database, timeout=timeout) as c:
        names, rows = run_simple(c, sql, timeout)
        return [dict(zip(names, row)) for row in rows]
