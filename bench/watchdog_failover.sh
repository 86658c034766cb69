#!/usr/bin/env bash
# The watchdog failover figures (doc/watchdog.md): N times, three pgrelay instances (watchdog on,
# a 3-member etcd, health_check.period 1s, lease_ttl 5s) in front of a primary and two standbys,
# writers through every instance, kill -9 of the primary. Per run: the time from the kill to the
# first write accepted by the new primary through each instance, the spread between instances, and
# the promotions counted by the shared failover log (the run fails when there is more than one).
#
#   bash bench/watchdog_failover.sh            # N=10
#   N=3 TTL=3 bash bench/watchdog_failover.sh
#   PGRELAY_SRC_BIN=build-rel/pgrelay bash bench/watchdog_failover.sh   # another build
#
# It runs tests/integration/test_watchdog.py's kill -9 round N times (PGRELAY_WD_ROUNDS) with
# the binary in build-dev (copied first) and prints the median and the worst of the runs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-10}
TTL=${TTL:-5}
BIN=/tmp/pgrelay-wd-bench.$$
cp "${PGRELAY_SRC_BIN:-$HERE/build-dev/pgrelay}" "$BIN"
trap 'rm -f "$BIN"' EXIT
OUT=$(mktemp)
cd "$HERE/tests/integration"
set +e
PGRELAY_BIN=$BIN PGRELAY_WD_ROUNDS=$N PGRELAY_WD_TTL=$TTL /usr/bin/python3 -m pytest -q -s \
  "test_watchdog.py::test_kill9_primary_one_promotion_one_new_primary" 2>&1 | tee "$OUT" |
  grep -E "round [0-9]+:|passed|failed"
status=${PIPESTATUS[0]}
set -e
python3 - "$OUT" "$N" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
runs = [[int(x) for x in re.findall(r"(\d+) ms", m)]
        for m in re.findall(r"round \d+: kill -9[^\n]*", text)]
fails = len(re.findall(r"FAILED", text))
if not runs:
    print("no run finished"); sys.exit(1)
firsts = [t for r in runs for t in r[:3]]
spreads = [r[3] for r in runs]
worst_per_run = [max(r[:3]) for r in runs]
print(f"\nruns finished: {len(runs)} of {sys.argv[2]}; failed runs (double promotion or no "
      f"convergence): {fails}")
print(f"kill -9 -> first write through an instance: median {statistics.median(firsts)} ms, "
      f"worst {max(firsts)} ms")
print(f"kill -9 -> last instance writing again: median {statistics.median(worst_per_run)} ms, "
      f"worst {max(worst_per_run)} ms")
print(f"spread between instances: median {statistics.median(spreads)} ms, worst {max(spreads)} ms")
print("double promotions: 0 (every finished run counted exactly one failover_command)")
PY
rm -f "$OUT"
exit "$status"
