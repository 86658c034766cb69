"""Malformed or hostile input: the offending connection gets 08P01 (or is closed), everyone else
carries on."""

import os
import random
import socket
import struct
import time
import uuid

import psycopg
import pytest

import pgwire
from conftest import DIRECT, connect


@pytest.fixture
def bystander(relay):
    """A session opened before the attack; it must keep working afterwards."""
    c = connect(relay.port)
    assert c.execute("select 1").fetchone() == (1,)
    yield c
    c.close()


def still_serving(relay, bystander):
    assert bystander.execute("select 'bystander ok'").fetchone() == ("bystander ok",)
    with connect(relay.port) as c:
        assert c.execute("select 1").fetchone() == (1,)
    if relay.proc is not None:
        assert relay.alive(), "pgrelay died"


def outcome(conn, timeout=5):
    """What the server did with a bad connection: ('error', sqlstate, msgs) or ('closed', None, msgs).
    Fails the test if the connection is left hanging open."""
    try:
        msgs = conn.read_all_until_close(timeout=timeout)
    except pgwire.Timeout:
        raise AssertionError("the offending connection was neither answered nor closed") from None
    finally:
        conn.close()
    errors = [m for m in msgs if m.type == "E"]
    if errors:
        return "error", pgwire.parse_error_fields(errors[0].payload)["C"], msgs
    return "closed", None, msgs


def raw(relay):
    return pgwire.Conn(port=relay.port, timeout=5)


def logged_in(relay):
    return pgwire.connect(relay.port, timeout=5)


def assert_rejected(relay, conn, allowed=("08P01",), timeout=5):
    kind, code, msgs = outcome(conn, timeout)
    assert kind == "closed" or code in allowed, f"unexpected answer: {msgs}"
    assert not any(m.type == "Z" for m in msgs), f"ReadyForQuery after bad input: {msgs}"
    return kind, code


# --- startup phase -------------------------------------------------------------------------------------


def test_startup_length_too_small(relay, bystander):
    """Bug guarded: a startup packet length < 8 underflows the length arithmetic."""
    for n in (0, 4, 7):
        c = raw(relay)
        c.send(struct.pack("!I", n) + b"\0" * 8)
        assert_rejected(relay, c)
    still_serving(relay, bystander)


def test_startup_length_too_large(relay, bystander):
    """Bug guarded: a huge startup length makes pgrelay allocate or wait for megabytes."""
    for n in (10_100, 100_000_000, 0xFFFFFFFF):
        c = raw(relay)
        c.send(struct.pack("!II", n, pgwire.PROTOCOL_3_0) + b"user\0app\0")
        assert_rejected(relay, c)
    still_serving(relay, bystander)


def test_truncated_startup_then_close(relay, bystander):
    """Bug guarded: a client that announces a startup packet and disconnects half-way leaks state or
    crashes the reader."""
    for cut in (1, 3, 7, 20):
        c = raw(relay)
        c.send(pgwire.startup_packet("app", "app")[:cut])
        time.sleep(0.05)
        c.close()
    c = raw(relay)
    c.send(pgwire.startup_packet("app", "app")[:15])
    c.abort()
    still_serving(relay, bystander)


def test_startup_without_terminator(relay, bystander):
    """Bug guarded: a startup packet whose key/value list lacks its NUL terminators is read past its end."""
    body = struct.pack("!I", pgwire.PROTOCOL_3_0) + b"user\0app\0database\0ap"
    c = raw(relay)
    c.send(struct.pack("!I", len(body) + 4) + body)
    assert_rejected(relay, c, allowed=("08P01", "28000"))
    still_serving(relay, bystander)


def test_unsupported_protocol_version(relay, bystander):
    """Bug guarded: protocol 2.0 startup is treated as 3.0 or left unanswered."""
    c = raw(relay)
    c.send(pgwire.startup_packet("app", "app", protocol=2 << 16))
    kind, code, msgs = outcome(c)
    if DIRECT and kind == "closed":
        pass  # PostgreSQL answers a 2.0 client in the 2.0 format, which pgwire does not parse
    else:
        assert kind == "error" and code in ("0A000", "08P01"), msgs
    still_serving(relay, bystander)


def test_ssl_request_answered_n_then_startup(relay, bystander):
    """Bug guarded: SSLRequest is not answered 'N', or the plain startup that follows fails."""
    c = raw(relay)
    c.send(pgwire.ssl_request())
    assert c.read_bytes(1, timeout=5) == b"N"
    c.login("app", "app", "app")
    assert c.scalar("select 'after ssl request'") == "after ssl request"
    c.terminate()
    with connect(relay.port, sslmode="prefer") as p:
        assert p.execute("select 1").fetchone() == (1,)
    still_serving(relay, bystander)


def test_gssenc_request_answered_n(relay, bystander):
    """Bug guarded: GSSENCRequest is not answered 'N' (libpq with gssencmode=prefer would hang)."""
    c = raw(relay)
    c.send(pgwire.gssenc_request())
    answer = c.read_bytes(1, timeout=5)
    if DIRECT and answer == b"G":
        pytest.skip("this PostgreSQL supports GSS encryption")
    assert answer == b"N"
    c.login("app", "app", "app")
    assert c.scalar("select 1") == "1"
    c.terminate()
    still_serving(relay, bystander)


def test_bytes_after_ssl_request_in_same_write(relay, bystander):
    """Bug guarded: plain-text bytes pipelined right behind an SSLRequest are processed (the
    CVE-2021-23214 class of injection); they must make the server drop the connection."""
    c = raw(relay)
    c.send(pgwire.ssl_request() + pgwire.startup_packet("trustuser", "app"))
    try:
        msgs = c.read_all_until_close(timeout=5)
    except pgwire.Timeout:
        raise AssertionError("connection left open after data injected behind SSLRequest") from None
    finally:
        c.close()
    # The answer may start with the 'N' byte; nothing after it may be an authentication success.
    data = b"".join(m.type.encode() + m.payload for m in msgs)
    assert b"R\x00\x00\x00\x00" not in data
    assert not any(m.type in ("Z", "K") for m in msgs), msgs
    still_serving(relay, bystander)


# --- after authentication ------------------------------------------------------------------------------


def test_message_length_below_four(relay, bystander):
    """Bug guarded: a message length < 4 underflows (payload length -1...-4)."""
    for n in (0, 3):
        c = logged_in(relay)
        c.send(b"Q" + struct.pack("!I", n) + b"select 1\0")
        assert_rejected(relay, c)
    still_serving(relay, bystander)


@pytest.mark.pgrelay_only
def test_message_above_max_message_size(pgrelay):
    """Bug guarded: max_message_size is not enforced, so one client can make pgrelay buffer gigabytes."""
    r = pgrelay(max_message_size="1MB")
    with connect(r.port) as by:
        c = logged_in(r)
        c.send(b"Q" + struct.pack("!I", 2 * 1024 * 1024) + b"select '" + b"x" * 65536)
        kind, code, msgs = outcome(c)
        assert kind == "closed" or code == "08P01", msgs
        # A message just under the limit still works.
        with connect(r.port) as ok:
            n = ok.execute("select length(%s)", ("y" * 900_000,)).fetchone()[0]
            assert n == 900_000
        still_serving(r, by)


def test_unknown_message_type(relay, bystander):
    """Bug guarded: an unknown message type byte is forwarded or ignored instead of rejected with 08P01."""
    c = logged_in(relay)
    c.send(pgwire.msg("z", b"hello"))
    kind, code, msgs = outcome(c)
    assert kind == "error" and code == "08P01", msgs
    still_serving(relay, bystander)


def test_truncated_message_then_disconnect(relay, bystander):
    """Bug guarded: a message cut short by a disconnect leaves a half-forwarded message in the backend
    (which is then reused) or crashes the reader."""
    for abrupt in (False, True):
        c = logged_in(relay)
        c.send(b"Q" + struct.pack("!I", 100) + b"sel")
        time.sleep(0.1)
        c.abort() if abrupt else c.close()
    still_serving(relay, bystander)


def test_garbage_after_authentication(relay, bystander):
    """Bug guarded: random bytes after login crash the frame parser or are passed to the backend."""
    rnd = random.Random(20240601)
    for _ in range(5):
        c = logged_in(relay)
        junk = b"\xff\xfe" + bytes(rnd.randrange(256) for _ in range(4094))
        try:
            c.send(junk)
        except OSError:
            pass
        kind, code, msgs = outcome(c)
        assert kind == "closed" or code == "08P01", msgs
    still_serving(relay, bystander)


def test_abrupt_disconnect_releases_row_lock(relay, bystander):
    """Bug guarded: when a client vanishes mid-transaction the backend connection is kept (or returned
    to a pool) with the transaction still open, holding its row locks."""
    table = "lock_" + uuid.uuid4().hex[:8]
    bystander.execute(f"create table {table} (id int primary key, v int)")
    bystander.execute(f"insert into {table} values (1, 0)")
    try:
        c = logged_in(relay)
        cyc = c.simple(f"begin; update {table} set v = 1 where id = 1")
        assert not cyc.errors and cyc.status == "T"
        c.abort()
        t0 = time.monotonic()
        with connect(relay.port) as other:
            other.execute("set lock_timeout = '5s'")
            other.execute(f"update {table} set v = 2 where id = 1")
            assert other.execute(f"select v from {table} where id = 1").fetchone() == (2,)
        assert time.monotonic() - t0 < 5
    finally:
        bystander.execute(f"drop table if exists {table}")
    still_serving(relay, bystander)
