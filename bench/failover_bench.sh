#!/usr/bin/env bash
# Failover timings of the cluster manager on real clusters (bench/failover_bench.py says what is
# measured and what waits for the data plane).
#   PGRELAY_BIN=build/pgrelay bash bench/failover_bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/failover_bench.py "$@"
