"""COPY in both directions through pgrelay."""

import hashlib
import uuid

import psycopg
import pytest

from conftest import connect


@pytest.fixture
def table(relay):
    name = "copy_" + uuid.uuid4().hex[:10]
    with connect(relay.port) as c:
        c.execute(f"create table {name} (id int primary key, payload text)")
    yield name
    with connect(relay.port) as c:
        c.execute(f"drop table if exists {name}")


def test_copy_from_stdin_100k_rows(relay, table):
    """Bug guarded: CopyData streams from the client are truncated, reordered or stall when they are
    larger than pgrelay's buffers."""
    with connect(relay.port) as c:
        with c.cursor() as cur:
            with cur.copy(f"copy {table} (id, payload) from stdin") as cp:
                for i in range(100_000):
                    cp.write_row((i, f"row-{i}"))
            assert cur.rowcount == 100_000
        n, s = c.execute(f"select count(*), sum(id) from {table}").fetchone()
        assert n == 100_000 and s == sum(range(100_000))
        assert c.execute(f"select payload from {table} where id = 99999").fetchone() == ("row-99999",)


def test_copy_to_stdout(relay):
    """Bug guarded: CopyOutResponse / CopyData / CopyDone from the server are not relayed completely."""
    with connect(relay.port) as c:
        with c.cursor() as cur:
            h = hashlib.md5()
            rows = 0
            with cur.copy("copy (select g, md5(g::text) from generate_series(1, 100000) g) to stdout") as cp:
                for block in cp:
                    h.update(bytes(block))
                    rows += bytes(block).count(b"\n")
        assert rows == 100_000
        expected = hashlib.md5("".join(f"{g}\t{hashlib.md5(str(g).encode()).hexdigest()}\n"
                                       for g in range(1, 100_001)).encode()).hexdigest()
        assert h.hexdigest() == expected
        assert c.execute("select 1").fetchone() == (1,)


def test_copy_error_mid_stream(relay, table):
    """Bug guarded: an ErrorResponse that arrives while the client is still sending CopyData leaves
    the session stuck in copy mode (or pgrelay keeps forwarding CopyData into an idle backend)."""
    with connect(relay.port) as c:
        with c.cursor() as cur:
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                with cur.copy(f"copy {table} (id, payload) from stdin") as cp:
                    for i in range(60_000):
                        cp.write(f"{i if i != 30_000 else 'notanint'}\tp{i}\n".encode())
        assert c.execute(f"select count(*) from {table}").fetchone() == (0,)
        assert c.execute("select 1").fetchone() == (1,)


def test_copy_fail_from_client(relay, table):
    """Bug guarded: a CopyFail from the client is not forwarded, so the backend waits forever."""
    with connect(relay.port) as c:
        with c.cursor() as cur:
            with pytest.raises((psycopg.errors.QueryCanceled, RuntimeError)):
                with cur.copy(f"copy {table} (id, payload) from stdin") as cp:
                    cp.write_row((1, "a"))
                    raise RuntimeError("client gives up")
        assert c.execute(f"select count(*) from {table}").fetchone() == (0,)
        assert c.execute("select 1").fetchone() == (1,)


def test_copy_row_larger_than_1mb(relay, table):
    """Bug guarded: a single CopyData / DataRow message larger than the I/O buffer is cut or makes
    pgrelay drop the connection."""
    big = ("0123456789abcdef" * 200_000)[:3_000_000]
    with connect(relay.port) as c:
        with c.cursor() as cur:
            with cur.copy(f"copy {table} (id, payload) from stdin") as cp:
                cp.write_row((1, big))
                cp.write_row((2, "small"))
        out = bytearray()
        with c.cursor() as cur:
            with cur.copy(f"copy (select payload from {table} where id = 1) to stdout") as cp:
                for block in cp:
                    out += bytes(block)
        assert bytes(out) == big.encode() + b"\n"
        assert c.execute(f"select length(payload) from {table} where id = 1").fetchone() == (3_000_000,)
        assert c.execute(f"select payload from {table} where id = 1").fetchone()[0] == big
