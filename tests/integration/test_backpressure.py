"""A client that stops reading must not make pgrelay buffer the whole result."""

import time

import pgwire
from conftest import DIRECT, connect


def test_slow_reader_is_backpressured(relay, cluster):
    """Bug guarded: pgrelay keeps reading from the backend while the client does not read, buffering
    the whole 200 MB result in memory (and delaying other sessions)."""
    with connect(relay.port) as other:
        for _ in range(20):
            other.execute("select 1")
        base = None if DIRECT else relay.rss_kb()
        peak = base
        slow = pgwire.Conn(port=relay.port, timeout=10, rcvbuf=4096)
        slow.login("app", "app", "app")
        slow.send(pgwire.query("select repeat('x', 1000000) from generate_series(1, 200) /* backpressure */"))
        try:
            t_end = time.monotonic() + 5
            worst = 0.0
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                assert other.execute("select 1").fetchone() == (1,)
                worst = max(worst, time.monotonic() - t0)
                if base is not None:
                    peak = max(peak, relay.rss_kb())
                time.sleep(0.1)
            assert worst < 1.0, f"select 1 took {worst:.2f}s while another client was not reading"
            if base is not None:
                grown_mb = (peak - base) / 1024
                assert grown_mb < 16, f"RSS grew by {grown_mb:.1f} MB while the client was not reading"
        finally:
            slow.abort()
        # The abandoned query's backend must not keep running (pgrelay closes or cancels it).
        with cluster.connect() as d:
            deadline = time.monotonic() + 10
            q = ("select count(*) from pg_stat_activity where query like '%/* backpressure */%' "
                 "and pid <> pg_backend_pid()")
            while d.execute(q).fetchone()[0]:
                assert time.monotonic() < deadline, "backend of the vanished slow reader still running"
                time.sleep(0.2)
        assert other.execute("select 2").fetchone() == (2,)
