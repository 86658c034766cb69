"""Login timeouts, slow and idle client floods, client limits and descriptor exhaustion."""

import resource
import socket
import time

import pytest

import pgwire
from conftest import connect

TRUST_HBA = "host all trustuser 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"


def timed_select_one(port):
    t0 = time.monotonic()
    with connect(port) as c:
        assert c.execute("select 1").fetchone() == (1,)
    return time.monotonic() - t0


@pytest.mark.pgrelay_only
def test_authentication_timeout_closes_silent_client(pgrelay):
    """Bug guarded: a client that connects and sends nothing keeps its slot forever (no login timer)."""
    r = pgrelay(authentication_timeout="1s")
    cases = {
        "silent": b"",
        "half a startup packet": pgwire.startup_packet("app", "app")[:10],
    }
    for name, data in cases.items():
        c = pgwire.Conn(port=r.port, timeout=10)
        if data:
            c.send(data)
        t0 = time.monotonic()
        try:
            msgs = c.read_all_until_close(timeout=5)
        except pgwire.Timeout:
            raise AssertionError(f"{name}: not closed within 5 s with authentication_timeout=1s") from None
        finally:
            c.close()
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed <= 3.0, f"{name}: closed after {elapsed:.2f}s"
        for m in msgs:
            assert m.type == "E" and pgwire.parse_error_fields(m.payload)["C"] in ("08P01", "57P05", "08006"), msgs
    # A client stuck in the middle of SCRAM (never answers the challenge) is closed too.
    c = pgwire.Conn(port=r.port, timeout=10)
    c.send(pgwire.startup_packet("app", "app"))
    assert c.read_msg().type == "R"
    t0 = time.monotonic()
    try:
        c.read_all_until_close(timeout=5)
    except pgwire.Timeout:
        raise AssertionError("client stuck in authentication was not closed") from None
    finally:
        c.close()
    assert time.monotonic() - t0 <= 3.0
    assert timed_select_one(r.port) < 1.0


@pytest.mark.deadline(90)
def test_slow_startup_flood_does_not_block_others(pgrelay):
    """Bug guarded: slow-loris clients (one byte per second) occupy the accept/login path, so a normal
    client cannot get in."""
    r = pgrelay(authentication_timeout="30s")
    pkt = pgwire.startup_packet("app", "app")
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
            s.setblocking(False)
            socks.append(s)
        for second in range(6):
            t_round = time.monotonic()
            for s in socks:
                try:
                    s.send(pkt[second:second + 1])
                except (BlockingIOError, OSError):
                    pass
            elapsed = timed_select_one(r.port)
            assert elapsed < 1.0, f"select 1 took {elapsed:.2f}s during the slow flood (round {second})"
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t_round)))
    finally:
        for s in socks:
            s.close()
    assert timed_select_one(r.port) < 1.0


def _raise_nofile(need):
    """Raise this process's descriptor limit (pgrelay inherits it); root may raise the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return soft, hard
        except (ValueError, OSError):
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} and cannot be raised")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    return soft, hard


@pytest.mark.pgrelay_only
@pytest.mark.deadline(180)
def test_ten_thousand_idle_clients(pgrelay, cluster):
    """Bug guarded: every idle client pins a backend connection (or pgrelay's per-client cost is too
    high), so 10,000 idle logged-in clients exhaust the server or starve a new client."""
    n = 10_000
    old = _raise_nofile(n + 2000)
    try:
        r = pgrelay(hba=TRUST_HBA, pool={"max_client_conn": 20000}, authentication_timeout="60s")
        with connect(r.port, user="trustuser", password="") as warm:  # let pgrelay learn the parameters
            warm.execute("select 1")
        res = pgwire.mass_login(r.port, n, "trustuser", "app", deadline_s=60)
        try:
            assert not res.errors and not res.closed and not res.hung, (
                f"{len(res.ok)} logged in, errors {res.errors[:5]} (of {len(res.errors)}), "
                f"closed {len(res.closed)}, hung {len(res.hung)} after {res.elapsed:.1f}s")
            with cluster.connect(dbname="postgres") as d:  # superuser: reserved slots
                n_backends = d.execute("select count(*) from pg_stat_activity where usename = 'trustuser'").fetchone()[0]
            assert n_backends < 100, f"{n_backends} backend connections held for {n} idle clients"
            for _ in range(3):
                elapsed = timed_select_one(r.port)
                assert elapsed < 1.0, f"select 1 took {elapsed:.2f}s with {n} idle clients"
        finally:
            res.close_all()
        assert timed_select_one(r.port) < 1.0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
        cluster.wait_settled()


@pytest.mark.pgrelay_only
def test_max_client_conn(pgrelay):
    """Bug guarded: max_client_conn is not enforced (or enforced late, after a backend was opened), or
    slots of disconnected clients are never given back."""
    r = pgrelay(pool={"max_client_conn": 50})
    conns = [pgwire.connect(r.port) for _ in range(50)]
    try:
        t0 = time.monotonic()
        c = pgwire.Conn(port=r.port, timeout=5)
        try:
            with pytest.raises(pgwire.PgError) as ei:
                c.login("app", "app", "app")
        finally:
            c.close()
        assert ei.value.sqlstate == "53300", ei.value
        assert time.monotonic() - t0 < 1.0, "the 51st client must be refused right away"
        for w in conns[:5]:
            w.terminate()
        del conns[:5]
        deadline = time.monotonic() + 3
        got_in = 0
        while got_in < 5 and time.monotonic() < deadline:
            try:
                conns.append(pgwire.connect(r.port))
                got_in += 1
            except pgwire.PgError as e:
                assert e.sqlstate == "53300"
                time.sleep(0.1)
        assert got_in == 5, f"only {got_in} of 5 freed slots could be reused"
        for w in conns[-5:]:
            assert w.scalar("select 1") == "1"
    finally:
        for w in conns:
            w.close()


@pytest.mark.pgrelay_only
@pytest.mark.deadline(90)
def test_descriptor_exhaustion(pgrelay, cluster):
    """Bug guarded: when accept() fails with EMFILE pgrelay spins, crashes, or leaves the extra
    clients hanging in the listen backlog instead of refusing them; after they go, it recovers."""
    cluster.wait_settled()
    r = pgrelay(prlimit_nofile=256, hba=TRUST_HBA, pool={"max_client_conn": 10000})
    res = pgwire.mass_login(r.port, 300, "trustuser", "app", deadline_s=20, in_flight=300)
    try:
        assert not res.hung, (f"{len(res.hung)} connections hung (ok {len(res.ok)}, errors {len(res.errors)}, "
                              f"closed {len(res.closed)})")
        assert len(res.ok) >= 50, f"only {len(res.ok)} logged in with 256 descriptors"
        assert len(res.ok) < 300, "300 clients cannot all fit in 256 descriptors"
        assert r.alive()
    finally:
        res.close_all()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert timed_select_one(r.port) < 1.0
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
