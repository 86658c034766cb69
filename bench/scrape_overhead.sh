#!/usr/bin/env bash
# What monitoring costs the data plane: pgbench -S with 1,000 clients through one pgrelay in
# transaction mode (pool 20, as run.sh's many-clients row), with and without a scraper fetching
# /metrics and /cluster every 100 ms (bench/scraper.py), in interleaved rounds of one run (odd
# rounds without the scraper first, even rounds with it first). Prints the TPS of every run, the
# ratio with/without per round and of the medians, and pgrelay's CPU per transaction. Goal: the
# scraper costs under 1% of the TPS. See bench/README.md ("Scrape overhead").
#
#   bench/scrape_overhead.sh [--help]
#
# Environment (all optional):
#   DURATION=15          seconds of pgbench per run besides the connection phase (-T DURATION+CONNECT_S;
#                        its tps excludes the connection phase)
#   ROUNDS=6             rounds; each runs both variants once
#   CLIENTS=1000         pgbench clients (-j 2)
#   POOL_SIZE=20         pgrelay pool_size (transaction mode)
#   INTERVAL_MS=100      the scraper's period (each period: GET /metrics, then GET /cluster)
#   CONNECT_S=25         seconds allowed for pgbench's connection phase (added to -T)
#   SCALE=10             pgbench -i scale factor
#   BENCH_PGPORT=PORT    reuse a running scripts/cluster.sh cluster (primary on 127.0.0.1:PORT)
#   BENCH_BUILD_DIR=DIR  pgrelay release build dir (default build-bench in the repository)
#   BENCH_PGRELAY_BIN=F  use this pgrelay binary as it is instead of building one
#   BENCH_KEEP_TMP=1     keep the temporary folder (config, logs, cluster data)
#   PGBIN=DIR            PostgreSQL binaries (default /usr/lib/postgresql/15/bin, else the newest)
#
# Output: a Markdown table on stdout, also written to bench/results/scrape-overhead.md.
# Exit status: 0 when the benchmark ran, 1 on a setup failure, 2 on usage.
set -Eeuo pipefail
umask 022

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '/^set -E/d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "scrape_overhead.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-6}
CLIENTS=${CLIENTS:-1000}
POOL_SIZE=${POOL_SIZE:-20}
INTERVAL_MS=${INTERVAL_MS:-100}
CONNECT_S=${CONNECT_S:-25}
SCALE=${SCALE:-10}
BENCH_PGPORT=${BENCH_PGPORT:-}
BUILD_DIR=${BENCH_BUILD_DIR:-$REPO/build-bench}
for v in DURATION ROUNDS CLIENTS POOL_SIZE INTERVAL_MS CONNECT_S SCALE; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || {
    echo "scrape_overhead.sh: $v must be a positive integer, got '${!v}'" >&2
    exit 2
  }
done
[[ -z "$BENCH_PGPORT" || "$BENCH_PGPORT" =~ ^[0-9]+$ ]] || {
  echo "scrape_overhead.sh: BENCH_PGPORT must be a port number" >&2
  exit 2
}

T_BUILD=900 T_CLUSTER=300 T_INIT=1200 T_SMOKE=20 T_RUN_EXTRA=90 # seconds; every wait is bounded

log() { printf '%s scrape_overhead: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "setup failed: $*"
  exit 1
}

if [[ -z "${PGBIN:-}" ]]; then
  if [[ -x /usr/lib/postgresql/15/bin/pgbench ]]; then
    PGBIN=/usr/lib/postgresql/15/bin
  else
    PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  fi
fi
[[ -n "$PGBIN" && -x "$PGBIN/pgbench" && -x "$PGBIN/psql" ]] || die "pgbench/psql not found (PGBIN)"
# Debian's python3 (a version manager's shim in PATH would get the scraper's SIGTERM and not pass it on).
PYTHON=/usr/bin/python3
[[ -x "$PYTHON" ]] || PYTHON=$(command -v python3) || die "python3 is needed for bench/scraper.py"

# ------------------------------------------------------------------------------------------------
# Clean-up: everything this script started, also on failure or Ctrl-C.

TMP=$(mktemp -d /tmp/pgrelay-scrape.XXXXXX)
chmod 755 "$TMP"
export PGPASSFILE=$TMP/no-pgpass
RELAY_PID="" SCRAPER_PID="" OWN_CLUSTER=0
cleanup() {
  local rc=$?
  [[ -z "$SCRAPER_PID" ]] || kill "$SCRAPER_PID" 2>/dev/null || true
  if [[ -n "$RELAY_PID" ]] && kill -0 "$RELAY_PID" 2>/dev/null; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$RELAY_PID" 2>/dev/null || true
  fi
  if ((OWN_CLUSTER)); then
    timeout 120 bash "$REPO/scripts/cluster.sh" stop "$TMP/cluster" >/dev/null 2>&1 || true
  fi
  if [[ -n "${BENCH_KEEP_TMP:-}" ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= CLIENTS + 200)) || die "open-files limit $(ulimit -n) is below CLIENTS + 200"

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT PID: until 127.0.0.1:PORT accepts while PID lives (20 s)
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# ------------------------------------------------------------------------------------------------
# Build, cluster, pgbench -i.

if [[ -n "${BENCH_PGRELAY_BIN:-}" ]]; then
  PGRELAY_BIN=$(realpath -- "$BENCH_PGRELAY_BIN")
  [[ -x "$PGRELAY_BIN" ]] || die "BENCH_PGRELAY_BIN=$BENCH_PGRELAY_BIN is not an executable"
else
  log "building pgrelay (release) in $BUILD_DIR"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    timeout "$T_BUILD" meson setup "$BUILD_DIR" "$REPO" -Dbuildtype=release -Db_lto=true -Dunit_tests=disabled \
      >"$TMP/build.log" 2>&1 || { tail -n 30 "$TMP/build.log" >&2; die "meson setup failed"; }
  fi
  timeout "$T_BUILD" ninja -C "$BUILD_DIR" pgrelay >>"$TMP/build.log" 2>&1 ||
    { tail -n 30 "$TMP/build.log" >&2; die "building pgrelay failed"; }
  PGRELAY_BIN=$BUILD_DIR/pgrelay
fi

if [[ -n "$BENCH_PGPORT" ]]; then
  PRIMARY_PORT=$BENCH_PGPORT
  BACKEND_PORTS=("$PRIMARY_PORT")
  for p in $((PRIMARY_PORT + 1)) $((PRIMARY_PORT + 2)); do
    if timeout 5 "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$p" -t 3; then BACKEND_PORTS+=("$p"); fi
  done
else
  base=$((20000 + RANDOM % 9000))
  log "starting a cluster in $TMP/cluster on ports $base-$((base + 2))"
  OWN_CLUSTER=1
  PGBIN=$PGBIN timeout -k 10 "$T_CLUSTER" bash "$REPO/scripts/cluster.sh" start "$TMP/cluster" "$base" \
    >"$TMP/cluster.log" 2>&1 || { tail -n 30 "$TMP/cluster.log" >&2; die "scripts/cluster.sh start failed"; }
  PRIMARY_PORT=$base
  BACKEND_PORTS=("$base" $((base + 1)) $((base + 2)))
fi
log "pgbench -i -s $SCALE"
PGPASSWORD=app timeout -k 10 "$T_INIT" "$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 \
  -p "$PRIMARY_PORT" -U app app >"$TMP/init.log" 2>&1 || { tail -n 20 "$TMP/init.log" >&2; die "pgbench -i failed"; }

# ------------------------------------------------------------------------------------------------
# One pgrelay, as run.sh's many-clients instance, plus the HTTP listener.

RELAY_PORT=$(free_port)
HTTP_PORT=$(free_port)
mkdir -p "$TMP/pgrelay"
printf 'app:app\npostgres:postgres\n' >"$TMP/pgrelay/users.txt"
{
  echo "# written by bench/scrape_overhead.sh"
  echo 'listen_addresses = "127.0.0.1";'
  echo "port = $RELAY_PORT;"
  printf 'backends = ( '
  i=0
  for p in "${BACKEND_PORTS[@]}"; do
    flag=DISALLOW_TO_FAILOVER
    ((i == 0)) && flag="ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER"
    ((i == 0)) || printf ', '
    printf '{ host = "127.0.0.1"; port = %d; weight = 1.0; flag = "%s"; }' "$p" "$flag"
    i=$((i + 1))
  done
  printf ' );\n'
  echo 'auth = { users_file = "users.txt"; };'
  echo 'logging = { level = "warning"; };'
  echo "pool = { mode = \"transaction\"; pool_size = $POOL_SIZE; max_client_conn = 20000; };"
  echo 'health_check = { user = "postgres"; password = "postgres"; database = "postgres"; timeout = "10s"; };'
  echo 'load_balance = { enabled = false; };'
  echo "http = { port = $HTTP_PORT; listen_addresses = \"127.0.0.1\"; };"
} >"$TMP/pgrelay/pgrelay.conf"
(cd "$TMP/pgrelay" && exec "$PGRELAY_BIN" -f "$TMP/pgrelay/pgrelay.conf" >"$TMP/pgrelay.log" 2>&1 </dev/null) &
RELAY_PID=$!
wait_port "$RELAY_PORT" "$RELAY_PID" || { tail -n 20 "$TMP/pgrelay.log" >&2; die "pgrelay did not start"; }
wait_port "$HTTP_PORT" "$RELAY_PID" || die "pgrelay's HTTP listener did not start"
if ! out=$(PGPASSWORD=app timeout "$T_SMOKE" "$PGBIN/psql" -X -At -h 127.0.0.1 -p "$RELAY_PORT" -U app -d app \
  -c 'SELECT count(*) FROM pgbench_branches' 2>&1) || [[ "$out" != "$SCALE" ]]; then
  die "smoke query: $out"
fi
"$PYTHON" "$REPO/bench/scraper.py" --port "$HTTP_PORT" --seconds 1 >"$TMP/scraper-smoke.txt" ||
  die "the scraper failed"
grep -q ' failures=0 ' "$TMP/scraper-smoke.txt" || die "scraper smoke: $(cat "$TMP/scraper-smoke.txt")"
body_bytes() { # PATH: size of one answer's body
  "$PYTHON" -c 'import sys, urllib.request as u; print(len(u.urlopen(sys.argv[1], timeout=5).read()))' \
    "http://127.0.0.1:$HTTP_PORT$1" 2>/dev/null || echo "?"
}
METRICS_BYTES=$(body_bytes /metrics)
CLUSTER_BYTES=$(body_bytes /cluster)

# ------------------------------------------------------------------------------------------------
# The runs.

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime, clock ticks
HZ=$(getconf CLK_TCK)

# Until the pgbench under `timeout` pid TPID has CLIENTS sockets open, at most LIMIT seconds.
wait_connected() { # TPID CLIENTS LIMIT
  local tp=$1 fds=$(($2 + 3)) limit=$3 start=$SECONDS pb="" n
  while kill -0 "$tp" 2>/dev/null && ((SECONDS - start <= limit)); do
    [[ -n "$pb" ]] || pb=$(awk '{ print $1 }' "/proc/$tp/task/$tp/children" 2>/dev/null || true)
    if [[ -n "$pb" ]]; then
      n=$(find "/proc/$pb/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      ((n >= fds)) && return 0
    fi
    sleep 0.2
  done
  return 1
}

declare -A TPS CPU SCRAPES LOADCPU
run_one() { # VARIANT(off|on) ROUND
  local v=$1 r=$2 outf=$TMP/run-$2-$1.out bpid t0 t1 t0w t1w tps n sline="" rc=0
  SCRAPER_PID=""
  if [[ "$v" == on ]]; then
    "$PYTHON" "$REPO/bench/scraper.py" --port "$HTTP_PORT" --interval-ms "$INTERVAL_MS" \
      >"$TMP/scraper-$r.txt" 2>&1 &
    SCRAPER_PID=$!
  fi
  PGPASSWORD=app timeout -k 10 $((DURATION + CONNECT_S + T_RUN_EXTRA)) "$PGBIN/pgbench" -h 127.0.0.1 \
    -p "$RELAY_PORT" -U app -n -S -M simple -c "$CLIENTS" -j 2 -T $((DURATION + CONNECT_S)) app \
    >"$outf" 2>&1 &
  bpid=$!
  wait_connected "$bpid" "$CLIENTS" "$CONNECT_S" || log "round $r $v: not all clients connected in ${CONNECT_S}s"
  t0=$(ticks "$RELAY_PID")
  t0w=$SECONDS
  wait "$bpid" || rc=$?
  t1=$(ticks "$RELAY_PID")
  t1w=$SECONDS
  if [[ -n "$SCRAPER_PID" ]]; then
    kill -TERM "$SCRAPER_PID" 2>/dev/null || true
    wait "$SCRAPER_PID" || true
    SCRAPER_PID=""
    sline=$(tail -n 1 "$TMP/scraper-$r.txt")
  fi
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$outf" | head -n 1)
  n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$outf")
  if ((rc != 0)) || [[ -z "$tps" || -z "$n" ]]; then
    log "round $r $v: pgbench failed (exit $rc):"
    tail -n 5 "$outf" >&2
    TPS[$r,$v]=fail
    return 0
  fi
  TPS[$r,$v]=$tps
  # pgrelay CPU per 1000 transactions, over the window after the connection phase (approximate:
  # the transaction count covers the whole run).
  CPU[$r,$v]=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
  # pgrelay's CPU per second of the measured window (ms/s), for the estimate from idle scraping.
  LOADCPU[$r,$v]=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s=$((t1w - t0w)) 'BEGIN { if (s > 0) printf "%.0f", d / hz * 1000 / s; else print "n/a" }')
  SCRAPES[$r,$v]=$sline
  log "round $r/$ROUNDS scraper $v: tps $tps, pgrelay ${CPU[$r,$v]} ms CPU per 1000 txn ${sline:+($sline)}"
}

log "$ROUNDS rounds of ${DURATION}s (+ up to ${CONNECT_S}s connecting), $CLIENTS clients, pool $POOL_SIZE"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="off on"; else order="on off"; fi
  for v in $order; do run_one "$v" "$r"; done
done

# What one GET costs pgrelay, apart from the noise of the load: the scraper back to back for 5 s
# per path, with no client connected and then with CLIENTS idle clients connected (pgbench, each
# client sleeping 10 s between SELECTs), pgrelay's CPU over those 5 s, minus its CPU over 5 s without
# scraping in the same state, over the GETs answered. Compared with pgrelay's CPU per second under
# the load, it estimates the share of pgrelay's work the scraper adds.
declare -A US_PER_GET
idle_cost() { # STATE: measures US_PER_GET[STATE,/metrics] and US_PER_GET[STATE,/cluster]
  local state=$1 t0 t1 base path line gets
  t0=$(ticks "$RELAY_PID")
  sleep 5
  t1=$(ticks "$RELAY_PID")
  base=$((t1 - t0))
  for path in /metrics /cluster; do
    t0=$(ticks "$RELAY_PID")
    "$PYTHON" "$REPO/bench/scraper.py" --port "$HTTP_PORT" --interval-ms 0 --seconds 5 --paths "$path" \
      >"$TMP/scraper-idle.txt" 2>&1 || true
    t1=$(ticks "$RELAY_PID")
    line=$(tail -n 1 "$TMP/scraper-idle.txt")
    gets=$(sed -n 's/^scrapes=\([0-9]*\) .*/\1/p' <<<"$line")
    US_PER_GET[$state,$path]=$(awk -v d=$((t1 - t0 - base)) -v hz="$HZ" -v n="${gets:-0}" \
      'BEGIN { if (n > 0) printf "%.0f", (d < 0 ? 0 : d) / hz * 1e6 / n; else print "n/a" }')
    log "idle cost ($state), $path: $line; pgrelay ${US_PER_GET[$state,$path]} us CPU per GET"
  done
}
idle_cost "no clients"
# Idle clients: each sleeps 10 s between SELECTs (100 transactions a second in all), so pgbench
# opens every connection first and then hardly works.
printf '\\sleep 10 s\nSELECT 1;\n' >"$TMP/idle.sql"
PGPASSWORD=app timeout -k 10 $((CONNECT_S + 60 + T_RUN_EXTRA)) "$PGBIN/pgbench" -h 127.0.0.1 \
  -p "$RELAY_PORT" -U app -n -f "$TMP/idle.sql" -c "$CLIENTS" -j 2 -T $((CONNECT_S + 60)) app \
  >"$TMP/idle-clients.out" 2>&1 &
idle_bpid=$!
if wait_connected "$idle_bpid" "$CLIENTS" "$CONNECT_S"; then
  idle_cost "$CLIENTS clients"
else
  log "idle clients: not all $CLIENTS connected in ${CONNECT_S}s; that measurement is skipped"
fi
kill "$idle_bpid" 2>/dev/null || true
wait "$idle_bpid" 2>/dev/null || true

# ------------------------------------------------------------------------------------------------
# Report.

median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{ a[NR] = $1 } END {
  if (NR == 0) { print "n/a"; exit } if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.4f", a / b; else print "n/a" }'; }
pct() { awk -v x="$1" 'BEGIN { if (x == "n/a") print "n/a"; else printf "%+.2f%%", (x - 1) * 100 }'; }

mkdir -p "$REPO/bench/results"
{
  echo "## Scrape overhead: pgbench -S -M simple, $CLIENTS clients, transaction pool $POOL_SIZE"
  echo
  echo "$(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ); pgbench -T $((DURATION + CONNECT_S)) per run (tps excludes the"
  echo "connection phase), -j 2; scraper: GET /metrics ($METRICS_BYTES bytes) + GET /cluster ($CLUSTER_BYTES bytes) every ${INTERVAL_MS} ms, kept-alive."
  echo
  echo "| round | order | tps without | tps with | with / without | pgrelay CPU ms/1000 txn without | with | scraper |"
  echo "|---|---|---|---|---|---|---|---|"
  offs="" ons="" ratios=""
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order="without first"; else order="with first"; fi
    rr=$(ratio "${TPS[$r,on]}" "${TPS[$r,off]}")
    offs+=" ${TPS[$r,off]}" ons+=" ${TPS[$r,on]}" ratios+=" $rr"
    echo "| $r | $order | ${TPS[$r,off]} | ${TPS[$r,on]} | $rr ($(pct "$rr")) | ${CPU[$r,off]:-n/a} | ${CPU[$r,on]:-n/a} | ${SCRAPES[$r,on]:-} |"
  done
  moff=$(echo "$offs" | median)
  mon=$(echo "$ons" | median)
  mr=$(ratio "$mon" "$moff")
  echo
  echo "Median tps without the scraper $moff, with it $mon: ratio **$mr** ($(pct "$mr")); median of the"
  echo "per-round ratios $(echo "$ratios" | median). Goal: the scraper costs under 1% (ratio > 0.99)."
  loads=""
  for ((r = 1; r <= ROUNDS; r++)); do loads+=" ${LOADCPU[$r,off]:-}"; done
  mload=$(echo "$loads" | median)
  echo
  echo "pgrelay's CPU per GET, measured apart from the load (back to back for 5 s, minus pgrelay's"
  echo "CPU without scraping in the same state):"
  echo
  echo "| state | /metrics | /cluster | at 2 GETs every ${INTERVAL_MS} ms | share of pgrelay's median ${mload} ms/s under load |"
  echo "|---|---|---|---|---|"
  for state in "no clients" "$CLIENTS clients"; do
    awk -v st="$state" -v m="${US_PER_GET[$state,/metrics]:-n/a}" -v c="${US_PER_GET[$state,/cluster]:-n/a}" \
      -v iv="$INTERVAL_MS" -v load="$mload" 'BEGIN {
      if (m == "n/a" || c == "n/a") { printf "| %s | %s | %s | n/a | n/a |\n", st, m, c; exit }
      per_s = (m + c) * (1000 / iv) / 1000
      share = (load == "n/a" || load + 0 == 0) ? "n/a" : sprintf("%.2f%%", per_s / load * 100)
      printf "| %s | %s us | %s us | %.2f ms/s | %s |\n", st, m, c, per_s, share }'
  done
} | tee "$REPO/bench/results/scrape-overhead.md"
