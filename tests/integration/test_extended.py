"""The extended query protocol: prepared statements, binary parameters, pipelines, Describe."""

import re
import struct

import psycopg
import pytest

import pgwire
from conftest import connect, run_client


def test_server_side_prepared_statements(relay):
    """Bug guarded: named prepared statements are lost or mixed up between Parse and later Binds
    (e.g. pgrelay rewrites or drops Parse messages)."""
    with connect(relay.port, prepare_threshold=0) as c:
        for i in range(20):
            row = c.execute("select %s::int * 2, %s::text", (i, f"v{i}"), prepare=True).fetchone()
            assert row == (i * 2, f"v{i}")
        n = c.execute("select count(*) from pg_prepared_statements").fetchone()[0]
        assert n >= 1, "psycopg should have prepared a named statement on the server"


def test_binary_parameters_and_results(relay):
    """Bug guarded: binary-format parameters or results are corrupted (e.g. treated as C strings,
    truncated at a zero byte)."""
    blob = bytes(range(256)) * 4
    with connect(relay.port) as c:
        with c.cursor(binary=True) as cur:
            cur.execute("select %b::int4 + 1, %b::bytea, %b::text, %b::float8", (41, blob, "héllo\u2603", 2.5))
            assert cur.fetchone() == (42, blob, "héllo\u2603", 2.5)


def test_pipeline_many_queries(relay):
    """Bug guarded: pipelined messages sent in one burst are dropped, reordered or deadlock the relay
    (client writes everything before reading anything)."""
    with connect(relay.port) as c:
        with c.pipeline():
            curs = []
            for i in range(2000):
                cur = c.cursor()
                cur.execute("select %s::int, repeat('x', %s)", (i, i % 100))
                curs.append(cur)
        for i, cur in enumerate(curs):
            assert cur.fetchone() == (i, "x" * (i % 100))


def test_pipeline_error_then_recovery(relay):
    """Bug guarded: after an error inside a pipeline the relay loses track of Sync boundaries, so
    the session hangs or later results are attributed to the wrong queries."""
    with connect(relay.port) as c:
        c.execute("create temp table pe (i int)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            with c.pipeline() as p:
                c.execute("insert into pe values (1)")
                p.sync()
                c.execute("select 1/0")
                c.execute("insert into pe values (2)")
        assert c.execute("select count(*) from pe").fetchone()[0] == 1
        with c.pipeline():
            cur = c.execute("select 5")
        assert cur.fetchone() == (5,)

    # The same at the protocol level: two Sync segments, the first with an error in the middle.
    with pgwire.connect(relay.port) as w:
        batch = b"".join([
            pgwire.parse("", "select 1"), pgwire.bind("", ""), pgwire.execute(),
            pgwire.parse("", "select 1/0"), pgwire.bind("", ""), pgwire.execute(),
            pgwire.parse("", "select 3"), pgwire.bind("", ""), pgwire.execute(),
            pgwire.sync(),
            pgwire.parse("", "select 4"), pgwire.bind("", ""), pgwire.execute(),
            pgwire.sync(),
        ])
        w.send(batch)
        first = w.read_cycle()
        types = [m.type for m in first.messages]
        assert types[:4] == ["1", "2", "D", "C"], types
        assert types[-2:] == ["E", "Z"] and types.count("E") == 1, types
        assert first.errors[0]["C"] == "22012"
        second = w.read_cycle()
        assert [m.type for m in second.messages] == ["1", "2", "D", "C", "Z"]
        assert second.results[0].text_rows() == [["4"]]


def test_describe_statement_and_portal(relay):
    """Bug guarded: Describe (statement 'S' / portal 'P') answers are lost or not matched to their
    request (ParameterDescription + RowDescription vs NoData)."""
    with pgwire.connect(relay.port) as w:
        w.send(b"".join([
            pgwire.parse("s1", "select $1::int as a, 'x'::text as b", [23]),
            pgwire.describe("S", "s1"),
            pgwire.bind("p1", "s1", ["7"]),
            pgwire.describe("P", "p1"),
            pgwire.execute("p1"),
            pgwire.parse("s2", "set work_mem = '8MB'"),
            pgwire.describe("S", "s2"),
            pgwire.close("S", "s1"),
            pgwire.sync(),
        ]))
        cyc = w.read_cycle()
        types = [m.type for m in cyc.messages]
        assert types == ["1", "t", "T", "2", "T", "D", "C", "1", "t", "n", "3", "Z"], types
        pd = cyc.messages[1].payload
        assert struct.unpack("!HI", pd) == (1, 23)
        cols = pgwire.parse_row_description(cyc.messages[2].payload)
        assert [c["name"] for c in cols] == ["a", "b"]
        assert [c["type_oid"] for c in cols] == [23, 25]
        assert cyc.results[-1].text_rows() == [["7", "x"]]


def test_execute_with_row_limit_and_portal_suspended(relay):
    """Bug guarded: Execute with max_rows (PortalSuspended 's') is mishandled."""
    with pgwire.connect(relay.port) as w:
        w.send(b"".join([
            pgwire.query("begin"),
        ]))
        w.read_cycle()
        w.send(b"".join([
            pgwire.parse("", "select generate_series(1, 10)"), pgwire.bind("c1", ""),
            pgwire.execute("c1", 4), pgwire.execute("c1", 4), pgwire.execute("c1", 4), pgwire.sync(),
        ]))
        cyc = w.read_cycle()
        types = [m.type for m in cyc.messages]
        assert types == ["1", "2"] + ["D"] * 4 + ["s"] + ["D"] * 4 + ["s"] + ["D"] * 2 + ["C", "Z"], types
        assert cyc.status == "T"
        assert w.simple("commit").results[0].command == "COMMIT"


PGBENCH_SCRIPT = "\\set a random(1, 100000)\nselect :a::int + 1, md5(:a::text);\n"


def _pgbench_failed(out):
    m = re.search(r"number of failed transactions: (\d+)", out)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_pgbench_protocol_modes(relay, tmp_path, mode):
    """Bug guarded: pgbench's extended / prepared protocol loop (Parse/Bind/Execute/Sync per query,
    named statements reused) fails or errors through pgrelay."""
    script = tmp_path / "q.sql"
    script.write_text(PGBENCH_SCRIPT)
    r = run_client(["pgbench", "-n", "-h", "127.0.0.1", "-p", str(relay.port), "-U", "app", "-M", mode,
                    "-c", "4", "-j", "2", "-T", "3", "-f", str(script), "app"], timeout=40)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert _pgbench_failed(out) == 0, out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) > 100, out
