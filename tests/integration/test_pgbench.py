"""pgbench through pgrelay: initialisation (COPY, DDL, VACUUM) and short runs."""

import re

import pytest

from conftest import run_client


def pgbench(port, *args, timeout=60):
    r = run_client(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app", *args, "app"], timeout=timeout)
    return r, r.stdout + r.stderr


def assert_no_failures(r, out, min_tx=50):
    assert r.returncode == 0, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    assert m and int(m.group(1)) == 0, out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) >= min_tx, out


@pytest.mark.deadline(120)
def test_pgbench_init_and_runs(relay):
    """Bug guarded: real client workloads fail through pgrelay: pgbench -i (COPY + DDL + VACUUM),
    select-only and tpcb-like runs with 8 concurrent clients, and connect-per-transaction (-C)."""
    r, out = pgbench(relay.port, "-i", "-s", "1", "-q")
    assert r.returncode == 0, out
    r, out = pgbench(relay.port, "-S", "-c", "8", "-j", "2", "-T", "5")
    assert_no_failures(r, out)
    r, out = pgbench(relay.port, "-n", "-c", "8", "-j", "2", "-T", "5")
    assert_no_failures(r, out)
    r, out = pgbench(relay.port, "-n", "-S", "-C", "-c", "4", "-j", "2", "-T", "3")
    assert_no_failures(r, out, min_tx=20)
