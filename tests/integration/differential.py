"""A randomised differential test driver (test_differential.py).

One seeded random sequence of steps is run on two sides: straight on the PostgreSQL primary, and
through pgrelay. Every step runs on side A, then on side B, and both outcomes are normalised and
compared: the rows (or the COPY data), the command tag, the SQLSTATE of an error, the transaction
status after the step (libpq's PQtransactionStatus) and the reported parameters the client sees
(DateStyle, TimeZone, application_name). The first difference ends the run.

Each side has its own schemas (`S` and `S_x`, S from the mode and the seed, different for the two
sides) holding the same tables: `t0`, `t1`, `t2` (one per client connection; a client only reads and
writes its own table, so the sides see the same data whatever node reads go to: a session's reads
see its own writes, read-your-writes, but nobody promises one session sees another's at once) and
`ro` (never written). `S_x` has tables of the same names with other rows, so an unqualified name
tells which search_path is in effect. Statement text is a template: `{s}` is the side's schema,
`{t}` the client's table, `$1..$n` the parameters (psycopg paths turn them into %s).

Generation is deterministic per seed: random.Random(seed) plus the transaction status the direct
side observed (PostgreSQL is deterministic), so the same seed gives the same step list. A step is a
plain dict (see `Step`) so that a failing list can be printed, saved as JSON and replayed.

What the generator makes (Gen.next: weights per kind, adapted to the client's transaction status):
reads (ORDER BY everywhere; a whole-table COPY TO is sorted), parametrised reads, writes (insert with
unique violations, update, delete, upsert, RETURNING, unqualified names), errors (division by zero,
syntax error, undefined table, bad input, unique violation; inside and outside transactions),
BEGIN variants (READ ONLY, REPEATABLE READ, SERIALIZABLE) / COMMIT / ROLLBACK / END / ABORT,
SAVEPOINT / RELEASE / ROLLBACK TO, cursors in transactions (DECLARE [SCROLL] [WITH HOLD], with or
without parameters, FETCH/MOVE in all directions, CLOSE, CLOSE ALL), SET / SET LOCAL / RESET /
set_config() of search_path, statement_timeout, DateStyle, application_name, TimeZone, and SHOW of
them, reads whose result depends on them (timestamptz and date output, current_setting()),
protocol-level named statements (Parse of a reused name, Bind/Execute, Describe, DEALLOCATE), SQL
PREPARE/EXECUTE/DEALLOCATE, COPY TO STDOUT (text, csv) and COPY FROM STDIN (with bad rows and
duplicate keys), multi-statement simple queries (with an error in the middle, with BEGIN/COMMIT).

How a step is sent (`how`):
- `simple`: psycopg without parameters, `prepare=False`: the simple query protocol (one Query
  message, may hold several statements);
- `ext`: psycopg with parameters (unnamed extended protocol), `prepare=False`;
- `prep`: psycopg with `prepare=True` (named statements `_pg3_N`, the same names on every client;
  prepared_max is small, so psycopg also DEALLOCATEs them as it evicts them);
- `auto`: psycopg's prepare threshold (1 here: prepared at the 2nd use);
- `raw`: libpq's PQsendQueryParams through psycopg's non-blocking loop (unnamed Parse/Bind/Execute
  /Sync even without parameters);
- kinds `nprep` / `nexec` / `ndesc`: libpq PQsendPrepare / PQsendQueryPrepared / PQsendDescribePrepared
  with names from a small set (s0..s2) that the sequence reuses;
- kinds `copy_in` / `copy_out`: psycopg's COPY support.
"""

import json
import random
import re

import psycopg
from psycopg import pq
from psycopg.generators import execute as pq_execute

REPORTED = ("DateStyle", "TimeZone", "application_name")

TX_NAMES = {pq.TransactionStatus.IDLE: "IDLE", pq.TransactionStatus.INTRANS: "INTRANS",
            pq.TransactionStatus.INERROR: "INERROR", pq.TransactionStatus.ACTIVE: "ACTIVE",
            pq.TransactionStatus.UNKNOWN: "UNKNOWN"}

# ---------------------------------------------------------------------------------------------------------
# Schema set-up (run directly on the primary, as user app).

ROWS = 12


def setup_sql(s, nclients=3):
    out = [f"drop schema if exists {s} cascade;", f"drop schema if exists {s}_x cascade;",
           f"create schema {s};", f"create schema {s}_x;"]
    for k in range(nclients):
        for sch, mul in ((s, 1), (s + "_x", 100)):
            out.append(f"create table {sch}.t{k} (id int primary key, v int not null, note text);")
            out.append(f"insert into {sch}.t{k} select g, g * {mul}, 'n' || g from generate_series(1, {ROWS}) g;")
    out.append(f"create table {s}.ro (a int, b text);")
    out.append(f"insert into {s}.ro select g, md5(g::text) from generate_series(1, 20) g;")
    return "\n".join(out)


def teardown_sql(s):
    return f"drop schema if exists {s} cascade; drop schema if exists {s}_x cascade;"


# ---------------------------------------------------------------------------------------------------------
# Steps.

def Step(client, kind, sql=None, params=None, how="simple", **extra):
    d = {"c": client, "kind": kind, "how": how}
    if sql is not None:
        d["sql"] = sql
    if params:
        d["params"] = list(params)
    d.update(extra)
    return d


def fmt_step(i, st):
    extra = {k: v for k, v in st.items() if k not in ("c", "kind", "how", "sql", "params")}
    s = f"  [{i}] c{st['c']} {st['kind']}/{st['how']}"
    if "sql" in st:
        s += f" {st['sql']!r}"
    if st.get("params"):
        s += f" params={st['params']}"
    if extra:
        s += f" {extra}"
    return s


def render(sql, schema, client):
    return sql.replace("{s}", schema).replace("{t}", f"t{client}")


_DOLLAR = re.compile(r"\$\d+")


def to_psycopg(sql):
    return _DOLLAR.sub("%s", sql.replace("%", "%%"))


class Gen:
    """Step generator. `next(status)` returns the next step for a client given that client's
    transaction status on the direct side."""

    SETTINGS = {
        "search_path": ["{s}", "{s}_x, {s}", "public", "{s}, public", '"$user", public'],
        "statement_timeout": ["0", "'5s'", "'1min'", "30000"],  # no short ones: a loaded machine
        # makes a trivial statement overrun 50 ms now and then, straight on PostgreSQL too
        "DateStyle": ["'ISO, MDY'", "'SQL, DMY'", "'German'", "'Postgres, YMD'"],
        "application_name": ["'dif_a'", "'dif b'", "''"],
        "TimeZone": ["'UTC'", "'Asia/Tokyo'", "'America/New_York'", "'Europe/Paris'"],
    }

    READS = [
        "select id, v, note from {s}.{t} order by id",
        "select count(*), coalesce(sum(v), 0), max(id) from {s}.{t}",
        "select id, v from {t} order by id limit 5",
        "select a, b from {s}.ro where a <= 5 order by a",
        "select '2024-03-04 05:06:07+00'::timestamptz::text, '2024-03-04'::date::text, "
        "'2024-03-04 05:06:07'::timestamp::text",
        "select current_setting('application_name'), current_setting('statement_timeout'), "
        "current_setting('search_path'), current_schemas(false)::text",
        "select now()::date = current_date, pg_is_in_recovery() and false",
        "with x as (select v from {s}.{t} where id <= 6) select sum(v) from x",
    ]
    PREADS = [
        ("select v, note from {s}.{t} where id = $1", 1),
        ("select id, v from {s}.{t} where id > $1 and id < $2 order by id", 2),
        ("select count(*) from {s}.{t} where v > $1", 1),
        ("select $1::int + 1, $2::text", 2),
    ]
    WRITES = [
        ("insert into {s}.{t} (id, v, note) values ($1, $2, 'w')", 2),
        ("update {s}.{t} set v = v + $1 where id = $2", 2),
        ("delete from {s}.{t} where id = $1", 1),
        ("insert into {s}.{t} (id, v) values ($1, $2) on conflict (id) do update set v = excluded.v "
         "returning id, v", 2),
        ("update {s}.{t} set v = v + 1 where id = $1 returning id, v", 1),
        ("insert into {t} (id, v) values ($1, $2)", 2),
    ]
    ERRORS = [
        "select 1/0",
        "selec 1",
        "select * from {s}.nosuch",
        "select 'x'::int",
        "select 1/(v - v) from {s}.{t} where id = 3",
        "insert into {s}.{t} (id, v) values (1, 1)",
        "insert into {s}.{t} (id, v) values (1/0, 1)",
    ]

    def __init__(self, seed, nclients, exclude=()):
        self.exclude = set(exclude)
        self.r = random.Random(seed)
        self.n = nclients
        self.cur_client = 0
        self.cursors = [set() for _ in range(nclients)]
        self.savepoints = [[] for _ in range(nclients)]
        self.nprepared = [{} for _ in range(nclients)]  # name -> parameter count (as far as we know)

    def val(self, nparams):
        r = self.r
        return [r.randint(1, ROWS + 6) if i == 0 else r.randint(-5, 40) for i in range(nparams)]

    def _how(self, options):
        kept = [h for h in options if h not in self.exclude] or [options[0]]
        return self.r.choice(kept)

    def how_p(self):
        return self._how(["ext", "ext", "prep", "auto", "raw"])

    def how_np(self):
        return self._how(["simple", "simple", "simple", "raw", "prep", "auto"])

    def pick_client(self):
        if self.n > 1 and self.r.random() < 0.3:
            self.cur_client = self.r.randrange(self.n)
        return self.cur_client

    def next(self, statuses):
        c = self.pick_client()
        st = statuses[c]
        r = self.r
        if st == "IDLE":
            self.cursors[c].clear()
            self.savepoints[c].clear()
        in_tx = st != "IDLE"
        if st == "INERROR" and r.random() < 0.6:
            if self.savepoints[c] and r.random() < 0.5:
                return Step(c, "sql", f"rollback to savepoint {r.choice(self.savepoints[c])}", how=self.how_np())
            return Step(c, "sql", r.choice(["rollback", "commit", "abort"]), how=self.how_np())
        table = [
            ("read", 20), ("pread", 12), ("write", 14), ("error", 5), ("begin", 0 if in_tx else 8),
            ("end", 8 if in_tx else 1), ("savepoint", 6 if in_tx else 1), ("cursor", 10 if in_tx else 1),
            ("set", 7), ("show", 4), ("nprep", 6), ("sqlprep", 1), ("copy_out", 3), ("copy_in", 3),
            ("multi", 2), ("reset", 1),
        ]
        kinds, weights = zip(*[(k, 0 if k in self.exclude else w) for k, w in table])
        kind = r.choices(kinds, weights)[0]
        return getattr(self, "g_" + kind)(c, in_tx)

    # generators per kind
    def g_read(self, c, in_tx):
        return Step(c, "sql", self.r.choice(self.READS), how=self.how_np())

    def g_pread(self, c, in_tx):
        sql, n = self.r.choice(self.PREADS)
        return Step(c, "sql", sql, self.val(n), how=self.how_p())

    def g_write(self, c, in_tx):
        sql, n = self.r.choice(self.WRITES)
        return Step(c, "sql", sql, self.val(n), how=self.how_p())

    def g_error(self, c, in_tx):
        return Step(c, "sql", self.r.choice(self.ERRORS), how=self.how_np())

    def g_begin(self, c, in_tx):
        return Step(c, "sql", self.r.choices(
            ["begin", "start transaction", "begin isolation level repeatable read", "begin read only",
             "begin isolation level serializable"], [10, 3, 2, 1, 1])[0], how=self.how_np())

    def g_end(self, c, in_tx):
        return Step(c, "sql", self.r.choice(["commit", "rollback", "end", "commit"]), how=self.how_np())

    def g_savepoint(self, c, in_tx):
        r = self.r
        sps = self.savepoints[c]
        op = r.choice(["savepoint", "savepoint", "release", "rollback_to", "rollback_to"])
        if op == "savepoint" or not sps:
            name = f"sp{r.randrange(3)}"
            sps.append(name)
            return Step(c, "sql", f"savepoint {name}", how=self.how_np())
        name = r.choice(sps)
        if op == "release":
            return Step(c, "sql", f"release savepoint {name}", how=self.how_np())
        return Step(c, "sql", f"rollback to savepoint {name}", how=self.how_np())

    def g_cursor(self, c, in_tx):
        r = self.r
        cur = self.cursors[c]
        op = r.choice(["declare", "fetch", "fetch", "fetch", "move", "close"]) if cur else "declare"
        if op == "declare":
            name = f"cu{r.randrange(2)}"
            cur.add(name)
            scroll = r.choice(["", "scroll ", "no scroll "])
            hold = " with hold" if r.random() < 0.1 else ""
            if r.random() < 0.5:
                return Step(c, "sql", f"declare {name} {scroll}cursor{hold} for select id, v from {{s}}.{{t}} "
                                      f"order by id", how=self.how_np())
            return Step(c, "sql", f"declare {name} {scroll}cursor{hold} for select id, v from {{s}}.{{t}} "
                                  f"where id > $1 order by id", [r.randint(0, 5)], how=r.choice(["ext", "raw"]))
        name = r.choice(sorted(cur))
        if op == "fetch":
            what = r.choice(["2", "1", "all", "next", "prior", "first", "absolute 3", "forward 3", "backward 1"])
            return Step(c, "sql", f"fetch {what} from {name}", how=self.how_np())
        if op == "move":
            return Step(c, "sql", f"move {r.choice(['1', 'forward 2', 'last'])} in {name}", how=self.how_np())
        cur.discard(name)
        if r.random() < 0.15:
            cur.clear()
            return Step(c, "sql", "close all", how=self.how_np())
        return Step(c, "sql", f"close {name}", how=self.how_np())

    def setting_names(self):
        return [n for n in sorted(self.SETTINGS) if n not in self.exclude] or sorted(self.SETTINGS)

    def g_set(self, c, in_tx):
        r = self.r
        name = r.choice(self.setting_names())
        value = r.choice(self.SETTINGS[name])
        local = "local " if in_tx and r.random() < 0.3 else ""
        if r.random() < 0.1 and not local:
            v = value.strip("'") if value.startswith("'") else value
            return Step(c, "sql", f"select set_config('{name}', '{v}', false)", how=self.how_np())
        return Step(c, "sql", f"set {local}{name} to {value}", how=self.how_np())

    def g_show(self, c, in_tx):
        return Step(c, "sql", "show " + self.r.choice(self.setting_names()), how=self.how_np())

    def g_reset(self, c, in_tx):
        name = self.r.choice(self.setting_names())
        return Step(c, "sql", f"reset {name}", how=self.how_np())

    def g_nprep(self, c, in_tx):
        r = self.r
        known = self.nprepared[c]
        op = r.choice(["nprep", "nexec", "nexec", "nexec", "ndesc", "dealloc"])
        if not known or r.random() < 0.1:
            name = f"s{r.randrange(3)}"
            if not known:
                op = "nprep"
        else:
            name = r.choice(sorted(known))
        if op == "nprep":
            pool = self.PREADS + self.WRITES[:5]
            sql, n = r.choice(pool)
            known.setdefault(name, n)  # a second Parse of a name fails (42P05)
            return Step(c, "nprep", sql, how="raw", name=name)
        if op == "nexec":
            return Step(c, "nexec", None, self.val(known.get(name, 1)), how="raw", name=name)
        if op == "ndesc":
            return Step(c, "ndesc", None, how="raw", name=name)
        known.pop(name, None)
        return Step(c, "sql", f"deallocate {name}", how=self.how_np())

    def g_sqlprep(self, c, in_tx):
        r = self.r
        name = f"q{r.randrange(2)}"
        op = r.choice(["prepare", "execute", "execute", "deallocate"])
        if op == "prepare":
            return Step(c, "sql", f"prepare {name}(int) as select id, v from {{s}}.{{t}} where id <= $1 order by id",
                        how="simple")
        if op == "execute":
            return Step(c, "sql", f"execute {name}({r.randint(0, 5)})", how=self.how_np())
        return Step(c, "sql", f"deallocate {name}", how="simple")

    def g_copy_out(self, c, in_tx):
        return Step(c, "copy_out", self.r.choice([
            "copy (select id, v, note from {s}.{t} order by id) to stdout",
            "copy {s}.{t} to stdout",
            "copy (select a, b from {s}.ro order by a limit 5) to stdout with (format csv, header)",
        ]), how="copy")

    def g_copy_in(self, c, in_tx):
        r = self.r
        rows = []
        for _ in range(r.randint(1, 3)):
            if r.random() < 0.1:
                rows.append([r.randint(1, 40), "x", "bad"])
            else:
                rows.append([r.randint(1, 40), r.randint(0, 99), r.choice(["c", None, "tab\there"])])
        return Step(c, "copy_in", "copy {s}.{t} (id, v, note) from stdin", how="copy", rows=rows)

    def g_multi(self, c, in_tx):
        r = self.r
        i = r.randint(1, 30)
        return Step(c, "sql", r.choice([
            f"insert into {{s}}.{{t}} (id, v) values ({i}, 7); select count(*) from {{s}}.{{t}}",
            f"begin; update {{s}}.{{t}} set v = v * 2 where id = {i}; commit",
            "select 1; select 1/0; select 2",
            f"update {{s}}.{{t}} set v = 0 where id = {i}; select v from {{s}}.{{t}} where id = {i}",
        ]), how="simple")


# ---------------------------------------------------------------------------------------------------------
# Running a step on one side.


class Fatal(Exception):
    """The connection is gone (or some non-SQL failure): the run cannot go on."""


def _norm(v, schema):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v).decode("utf-8", "replace")
    s = v if isinstance(v, str) else repr(v)
    return s.replace(schema, "S")


def _res_outcome(res, schema):
    """A libpq PGresult -> comparable tuple."""
    st = res.status
    if st == pq.ExecStatus.FATAL_ERROR:
        code = res.error_field(pq.DiagnosticField.SQLSTATE)
        return ("error", code.decode() if code else None)
    rows = None
    if st == pq.ExecStatus.TUPLES_OK:
        rows = [tuple(_norm(res.get_value(i, j), schema) for j in range(res.nfields)) for i in range(res.ntuples)]
    tag = (res.command_status or b"").decode()
    return ("ok", tag, rows, res.nfields if st in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK) else None)


class Side:
    def __init__(self, name, connect, schema, nclients, prepared_max=4):
        self.name = name
        self.schema = schema
        self.conns = []
        for _ in range(nclients):
            c = connect()
            c.prepare_threshold = 1  # 'auto' prepares at the 2nd use
            c.prepared_max = prepared_max  # small: psycopg evicts (DEALLOCATE) its statements often
            self.conns.append(c)

    def close(self):
        for c in self.conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def status(self, k):
        return TX_NAMES[self.conns[k].info.transaction_status]

    def run(self, st):
        conn = self.conns[st["c"]]
        if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
            raise Fatal(f"{self.name}: connection closed before the step")
        try:
            out = self._run(conn, st)
        except psycopg.Error as e:
            if e.sqlstate is None or conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
                raise Fatal(f"{self.name}: {type(e).__name__}: {e}") from e
            out = ("error", e.sqlstate)
        if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
            raise Fatal(f"{self.name}: connection lost during the step (outcome so far {out})")
        params = tuple(_norm(conn.info.parameter_status(p), self.schema) for p in REPORTED)
        return {"out": out, "tx": TX_NAMES[conn.info.transaction_status], "params": params}

    def _raw(self, conn, send):
        pg = conn.pgconn
        send(pg)
        results = conn.wait(pq_execute(pg))
        return tuple(_res_outcome(r, self.schema) for r in results)

    def _run(self, conn, st):
        k = st["c"]
        kind, how = st["kind"], st["how"]
        sql = render(st["sql"], self.schema, k).encode() if st.get("sql") else None
        params = st.get("params") or []
        bparams = [str(p).encode() for p in params]
        if kind == "nprep":
            return self._raw(conn, lambda pg: pg.send_prepare(st["name"].encode(), sql))
        if kind == "nexec":
            return self._raw(conn, lambda pg: pg.send_query_prepared(st["name"].encode(), bparams))
        if kind == "ndesc":
            return self._raw(conn, lambda pg: pg.send_describe_prepared(st["name"].encode()))
        if kind == "copy_out":
            cur = conn.cursor()
            with cur.copy(sql.decode()) as cp:
                data = b"".join(bytes(b) for b in cp)
            lines = data.decode().replace(self.schema, "S").split("\n")
            if " to stdout" in st["sql"] and st["sql"].startswith("copy {s}"):
                lines.sort()  # a whole table: no order
            return ("copy", cur.statusmessage, lines)
        if kind == "copy_in":
            cur = conn.cursor()
            with cur.copy(sql.decode()) as cp:
                for row in st["rows"]:
                    cp.write_row(row)
            return ("copy", cur.statusmessage, cur.rowcount)
        if how == "raw":
            return self._raw(conn, lambda pg: pg.send_query_params(sql, bparams))
        cur = conn.cursor()
        text = sql.decode()
        if how == "simple":
            cur.execute(text, prepare=False)
        else:
            prepare = {"ext": False, "prep": True, "auto": None}[how]
            cur.execute(to_psycopg(text), params, prepare=prepare)
        out = []
        while True:
            rows = None
            if cur.description is not None:
                rows = [tuple(_norm(v, self.schema) for v in row) for row in cur.fetchall()]
            out.append(("ok", cur.statusmessage, rows))
            if not cur.nextset():
                break
        return tuple(out)


def run_sequence(direct, relay, steps=None, gen=None, nsteps=300, on_step=None):
    """Run steps (or nsteps generated by gen) on both sides. Returns (done_steps, mismatch or None);
    a mismatch is (index, direct result, relay result)."""
    done = []
    statuses = [direct.status(k) for k in range(len(direct.conns))]
    # reported parameters before anything runs
    for k in range(len(direct.conns)):
        a = tuple(_norm(direct.conns[k].info.parameter_status(p), direct.schema) for p in REPORTED)
        b = tuple(_norm(relay.conns[k].info.parameter_status(p), relay.schema) for p in REPORTED)
        if a != b:
            return done, (-1, {"params at login": a}, {"params at login": b})
    total = len(steps) if steps is not None else nsteps
    for i in range(total):
        st = steps[i] if steps is not None else gen.next(statuses)
        done.append(st)
        try:
            a = direct.run(st)
        except Fatal as e:
            raise AssertionError(f"the direct side failed at step {i} (a bug of the test): {e}") from e
        try:
            b = relay.run(st)
        except Fatal as e:
            b = {"fatal": str(e)}
        statuses[st["c"]] = a["tx"]
        if a != b:
            return done, (i, a, b)
        if on_step:
            on_step(i, st)
    return done, None


def describe_mismatch(seed, mode, done, mismatch, limit=400):
    i, a, b = mismatch
    lines = [f"differential mismatch: mode={mode} seed={seed} step={i}",
             f"  direct: {a}", f"  pgrelay: {b}",
             "Add the seed to tests/integration/differential_seeds.txt. Steps up to the mismatch:"]
    shown = done if len(done) <= limit else done[-limit:]
    off = len(done) - len(shown)
    lines += [fmt_step(off + j, s) for j, s in enumerate(shown)]
    lines.append("As JSON (PGRELAY_DIFF_REPLAY=file runs it): " + json.dumps(done))
    return "\n".join(lines)
