"""Signals: SIGHUP reload, SIGTERM smart shutdown, SIGINT fast shutdown."""

import re
import signal
import time

import psycopg
import pytest

import pgwire
from conftest import connect

pytestmark = pytest.mark.pgrelay_only


def closed_within(port, seconds):
    """Open a silent connection and return how long the server took to close it (None: not closed)."""
    c = pgwire.Conn(port=port, timeout=seconds + 2)
    t0 = time.monotonic()
    try:
        c.read_all_until_close(timeout=seconds)
        return time.monotonic() - t0
    except pgwire.Timeout:
        return None
    finally:
        c.close()


def test_sighup_applies_changed_settings(pgrelay):
    """Bug guarded: SIGHUP is ignored (or kills the process), so changed settings need a restart."""
    r = pgrelay(authentication_timeout="30s", logging={"level": "log"})
    before = connect(r.port)
    try:
        off = r.log_size()
        r.rewrite(authentication_timeout="1s", logging={"level": "debug"})
        r.reload()
        assert r.wait_log(re.compile("reload", re.I), timeout=5, start=off) is not None, \
            "no log line mentions the reload"
        assert r.alive()
        took = closed_within(r.port, 4)
        assert took is not None and took < 3, "authentication_timeout = 1s not applied after SIGHUP"
        assert before.execute("select 'old session ok'").fetchone() == ("old session ok",)
        with connect(r.port) as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        before.close()


@pytest.mark.parametrize("bad", [
    ("bogus_setting = 1;\n", "unknown key"),
    ("port = ;\n", "syntax error"),
], ids=["unknown-key", "syntax-error"])
def test_sighup_with_broken_config_keeps_old(pgrelay, bad):
    """Bug guarded: a reload of a broken file applies half of it, exits, or fails silently; it must log
    FILE:LINE and keep running with the old configuration."""
    text, _ = bad
    r = pgrelay(authentication_timeout="30s")
    good_lines = r.config_path.read_text().count("\n")
    bad_line = good_lines + 1
    off = r.log_size()
    r.rewrite(extra_text=text, authentication_timeout="1s")
    r.reload()
    pat = re.compile(rf"pgrelay\.conf:{bad_line}\b")
    assert r.wait_log(pat, timeout=5, start=off) is not None, \
        f"no 'pgrelay.conf:{bad_line}' in the log after the broken reload"
    assert r.alive(), "pgrelay exited on a broken reload"
    with connect(r.port) as c:
        assert c.execute("select 1").fetchone() == (1,)
    # The old authentication_timeout (30s) is still in force: a silent client stays open for 2 s.
    assert closed_within(r.port, 2) is None, "part of the broken configuration was applied"
    # Fix the file: the next reload works.
    off = r.log_size()
    r.rewrite(extra_text="")
    r.reload()
    assert r.wait_log(re.compile("reload", re.I), timeout=5, start=off) is not None


def test_sigterm_waits_for_idle_client(pgrelay):
    """Bug guarded: smart shutdown (SIGTERM) keeps accepting new clients, drops existing sessions
    immediately, or never exits after the last client leaves."""
    r = pgrelay(shutdown_timeout="20s")
    c = connect(r.port)
    try:
        r.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert r.alive(), "pgrelay exited although a client is still connected"
        with pytest.raises(psycopg.OperationalError):
            connect(r.port, connect_timeout=3).close()
        assert c.execute("select 'still served'").fetchone() == ("still served",)
    finally:
        c.close()
    code = r.wait(5)
    assert code is not None, "pgrelay did not exit within 5 s after its last client left"
    assert code == 0


def test_sigterm_shutdown_timeout(pgrelay):
    """Bug guarded: a client that never leaves blocks smart shutdown forever (shutdown_timeout ignored)."""
    r = pgrelay(shutdown_timeout="2s")
    c = connect(r.port)
    try:
        t0 = time.monotonic()
        r.signal(signal.SIGTERM)
        code = r.wait(8)
        took = time.monotonic() - t0
        assert code is not None, "pgrelay still running 8 s after SIGTERM with shutdown_timeout = 2s"
        assert code == 0
        assert 1.5 <= took <= 5.0, f"exited after {took:.1f}s"
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 1")
    finally:
        c.close()


def test_sigint_fast_shutdown_with_open_transaction(pgrelay, cluster):
    """Bug guarded: fast shutdown (SIGINT) waits for open transactions, or leaves backends idle in
    transaction behind it."""
    r = pgrelay(shutdown_timeout="30s")
    c = connect(r.port, autocommit=False)
    try:
        c.execute("create temp table t_sigint (i int)")
        c.execute("insert into t_sigint values (1)")
        backend_pid = c.execute("select pg_backend_pid()").fetchone()[0]
        t0 = time.monotonic()
        r.signal(signal.SIGINT)
        code = r.wait(3)
        assert code is not None, "pgrelay did not exit within 3 s of SIGINT"
        assert code == 0
        assert time.monotonic() - t0 < 3
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 1")
    finally:
        c.close()
    with cluster.connect() as d:
        deadline = time.monotonic() + 5
        while d.execute("select count(*) from pg_stat_activity where pid = %s", (backend_pid,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the backend of the interrupted session is still there"
            time.sleep(0.1)
