#!/usr/bin/python3
"""Memory of idle clients: VmRSS of a proxy before and after N idle, logged-in trust connections.

    bench/idle_clients.py --port PORT --pid PID [--clients 1000] [--user trustuser] [--database app]

Logs 20 clients in and out first (pool, welcome and allocator warmed up, as in
tests/integration/test_pool_memory.py), reads VmRSS of PID from /proc/PID/status, opens N
connections and logs each in (startup packet, trust, up to ReadyForQuery; they then stay idle), waits
0.5 s, reads VmRSS again and closes them. Prints one line of key=value pairs on stdout:

    before_kb=.. after_kb=.. clients=N ok=.. errors=.. closed=.. hung=.. login_s=..

Exit status 0 when all N logged in, 1 otherwise (the line is printed either way), 2 on usage.
The raw protocol client is tests/integration/pgwire.py (no libpq needed).
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import pgwire  # noqa: E402


def vmrss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--user", default="trustuser")
    ap.add_argument("--database", default="app")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds for all logins")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.clients + 64
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
        except (ValueError, OSError):
            pass

    warm = pgwire.mass_login(a.port, 20, a.user, a.database, deadline_s=20)
    warm_ok = len(warm.ok)
    warm.close_all()
    time.sleep(0.3)
    before = vmrss_kb(a.pid)
    res = pgwire.mass_login(a.port, a.clients, a.user, a.database, deadline_s=a.deadline)
    try:
        time.sleep(0.5)
        after = vmrss_kb(a.pid)
    finally:
        res_ok = len(res.ok)
        res.close_all()
    errs = sorted({str(e[1]) for e in res.errors})[:3]
    print(f"before_kb={before} after_kb={after} clients={a.clients} ok={res_ok} errors={len(res.errors)} "
          f"closed={len(res.closed)} hung={len(res.hung)} login_s={res.elapsed:.2f} warmup_ok={warm_ok}"
          + (f" first_errors={','.join(errs).replace(' ', '_')}" if errs else ""))
    return 0 if res_ok == a.clients else 1


if __name__ == "__main__":
    sys.exit(main())
