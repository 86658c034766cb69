#!/usr/bin/env bash
# Failover figures through the proxy's port, pgrelay and (when installed) pgpool-II in one run:
# kill -9 of the primary under load with synchronous replication (first write, read gap on the
# surviving standby, sessions dropped, acknowledged writes lost) and a frozen (SIGSTOP) primary.
# bench/failover_bench.py says exactly what is measured; bench/README.md how to read it.
#   PGRELAY_BIN=build/pgrelay bash bench/failover_bench.sh [RUNS] [--no-pgpool] [--manager-only]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/failover_bench.py "$@"
