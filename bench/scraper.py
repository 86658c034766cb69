#!/usr/bin/env python3
"""Scrapes pgrelay's HTTP listener like a monitoring stack would, for bench/scrape_overhead.sh:
GET /metrics and GET /cluster every INTERVAL ms on one kept-alive connection (reconnecting when
the server closes it), until SIGTERM or --seconds; --interval-ms 0 scrapes back to back. Prints one
line: GETs answered 200 (scrapes), failures, bytes, seconds, GETs per second and its own CPU
seconds (the scraper shares the machine with the benchmark).

  bench/scraper.py --port 9998 [--interval-ms 100] [--seconds 0 (until SIGTERM)]
                   [--paths /metrics,/cluster]
"""
import argparse
import http.client
import os
import signal
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--interval-ms", type=int, default=100)  # 0: back to back
ap.add_argument("--seconds", type=float, default=0)
ap.add_argument("--paths", default="/metrics,/cluster")  # fetched in this order each period
a = ap.parse_args()

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

conn = None
ok = fail = nbytes = 0
t_end = time.monotonic() + a.seconds if a.seconds > 0 else None
t_start = next_t = time.monotonic()
while not stop and (t_end is None or time.monotonic() < t_end):
    for path in a.paths.split(","):
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            nbytes += len(body)
            if resp.status == 200:
                ok += 1
            else:
                fail += 1
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            fail += 1
            if conn is not None:
                conn.close()
            conn = None
    next_t += a.interval_ms / 1000.0
    delay = next_t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        next_t = time.monotonic()  # late (a loaded machine): do not burst to catch up
cpu = os.times()
elapsed = time.monotonic() - t_start
print(f"scrapes={ok} failures={fail} bytes={nbytes} seconds={elapsed:.1f} "
      f"per_s={ok / max(elapsed, 1e-9):.1f} cpu_s={cpu.user + cpu.system:.2f}")
sys.exit(0)
