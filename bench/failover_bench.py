"""Failover timings of the cluster manager (src/failover) on real clusters, without the data plane.

Until the data plane follows the manager's views, "first write" means: the first successful INSERT
sent straight to the node the manager's view names as the new primary (a client that follows the
view). Each run uses a fresh copy of one template cluster (tests/integration/failover_helpers.py).
Usage: PGRELAY_BIN=build/pgrelay python3 bench/failover_bench.py [RUNS]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psycopg  # noqa: E402
import pytest  # noqa: E402,F401  (the helpers call pytest.fail/skip)

import failover_helpers as fh  # noqa: E402
from driver_build import compile_driver  # noqa: E402

FAILOVER = f'exec {REPO}/conf/failover.sh "$@"'


def own_cluster(template):
    gen = fh.own_cluster.__wrapped__(template, None)
    return gen, next(gen)


def first_write(m, c, t0, deadline=20):
    """Seconds from t0 to the first INSERT accepted by the primary the latest view names."""
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


def one_run(driver, template, work, frozen=False):
    gen, c = own_cluster(template)
    work.mkdir(parents=True, exist_ok=True)
    try:
        hc = {"period": "1s", "timeout": "1s", "max_retries": 0} if frozen else {}
        m = fh.Manager(driver, work, fh.manager_config(
            c, failover_command=fh.recorder(work, "failover", FAILOVER), health_check=hc))
        m.wait_view(fh.all_up, 15, "discovery")
        c.query(0, "create table bench(x int)", dbname="app")
        mk = m.mark()
        t0 = time.monotonic()
        if frozen:
            c.freeze(0)
        else:
            c.kill9(0)
            m.send("report 0")  # the data plane's report of its broken backend sockets
        w = first_write(m, c, t0)
        v = m.wait_view(lambda v: v["primary"] in (1, 2), 20, "new primary", since=mk)
        m.stop()
        return v["t"] - t0, w
    finally:
        try:
            next(gen)
        except StopIteration:
            pass


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tmp = Path(tempfile.mkdtemp(prefix="pgrelay-fobench-"))
    driver = compile_driver(fh.DRIVER_SRC, tmp / "cluster_main")
    tgen = fh.cluster_template.__wrapped__()
    template = next(tgen)
    try:
        view_t, write_t = [], []
        for i in range(runs):
            v, w = one_run(driver, template, tmp / f"kill{i}")
            view_t.append(v)
            write_t.append(w)
            print(f"run {i + 1}: kill -9 -> new primary in the view {v * 1000:.0f} ms, "
                  f"first write {w * 1000:.0f} ms", flush=True)
        fv, fw = one_run(driver, template, tmp / "frozen", frozen=True)
        print()
        print(f"kill -9 of the primary -> first successful write (median of {runs}): "
              f"{statistics.median(write_t) * 1000:.0f} ms  (new primary in the view: "
              f"{statistics.median(view_t) * 1000:.0f} ms)")
        print(f"frozen primary (SIGSTOP; timeout 1s, max_retries 0, period 1s) -> new primary: "
              f"{fv * 1000:.0f} ms, first write {fw * 1000:.0f} ms")
        print("longest read gap from a surviving standby, writes lost in sync mode: need the data "
              "plane (not measured)")
    finally:
        try:
            next(tgen)
        except StopIteration:
            pass


if __name__ == "__main__":
    os.environ.setdefault("PGRELAY_BIN", str(REPO / "build" / "pgrelay"))
    main()
