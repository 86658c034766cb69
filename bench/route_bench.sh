#!/usr/bin/env bash
# Read/write splitting benchmark: pgbench select-only through pgrelay's splitting port against the same
# workload pinned to the primary, direct PostgreSQL and pgpool-II 4.3 with load balancing, all in one
# run over the same primary and two standbys; the proxies' CPU per transaction; how the reads were
# spread over the nodes; and the classifier's cost per statement with and without its cache
# (bench/classify_bench.sh). See doc/routing-benchmarks.md.
#
#   bench/route_bench.sh [--no-pgpool] [--no-classify] [--help]
#
# Targets (one pgbench run each per workload, back to back):
#   direct          PostgreSQL primary itself
#   pgrelay-primary pgrelay with load_balance.enabled = false (every statement on the primary)
#   pgrelay-split   pgrelay with load balancing on, weights 1/1/1 over the primary and two standbys
#   pgpool          pgpool-II (Debian pgpool2) in streaming-replication mode, load_balance_mode = on,
#                   weights 1/1/1 (installed with apt-get when missing; --no-pgpool leaves it out)
#   baseline        only with BENCH_BASELINE_BIN: another pgrelay binary (e.g. a build from before
#                   read/write splitting) with the primary-only configuration, to show what routing
#                   costs a deployment that does not balance
#
# Environment (all optional):
#   DURATION=10          seconds per pgbench run
#   CLIENTS=16           pgbench clients (-c), with -j 2
#   SCALE=10             pgbench -i scale
#   WORKLOADS="select-simple select-prepared"   subset of: select-simple select-extended select-prepared
#   BENCH_PGRELAY_BIN=F  use this pgrelay binary as it is (default: build a release in BENCH_BUILD_DIR)
#   BENCH_BUILD_DIR=D    default build-bench in the repository
#   BENCH_BASELINE_BIN=F adds the "baseline" target run by this binary (its config has no
#                        load_balance group, so an older pgrelay accepts it)
#   BENCH_KEEP_TMP=1     keep the temporary folder (configs, logs, cluster)
#   PGBIN=DIR            PostgreSQL binaries (default /usr/lib/postgresql/15/bin, else the newest)
#
# Output: a Markdown report on stdout, also written to bench/results/route-latest.md (not tracked).
# Exit status: 0 when the benchmark ran (failed runs say "fail" in their cells), 1 on a setup
# failure, 2 on a usage error.
set -Eeuo pipefail
umask 022

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$REPO/bench/results

WITH_PGPOOL=1
WITH_CLASSIFY=1
usage() { sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '/^set -E/d' -e 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --no-pgpool) WITH_PGPOOL=0 ;;
    --no-classify) WITH_CLASSIFY=0 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "route_bench.sh: unknown argument '$1' (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
SCALE=${SCALE:-10}
ALL_WORKLOADS="select-simple select-extended select-prepared"
WORKLOADS=${WORKLOADS:-select-simple select-prepared}
BUILD_DIR=${BENCH_BUILD_DIR:-$REPO/build-bench}
JOBS=2
for v in DURATION CLIENTS SCALE; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || {
    echo "route_bench.sh: $v must be a positive integer, got '${!v}'" >&2
    exit 2
  }
done
for w in $WORKLOADS; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || {
    echo "route_bench.sh: unknown workload '$w' (known: $ALL_WORKLOADS)" >&2
    exit 2
  }
done

# Timeouts (seconds): every wait is bounded.
T_APT=900 T_BUILD=900 T_CLUSTER=300 T_INIT=600 T_START=20 T_STOP=15 T_SQL=20 T_RUN_EXTRA=60

log() { printf '%s route_bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '%s route_bench: WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '%s route_bench: setup failed: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

if [[ -z "${PGBIN:-}" ]]; then
  if [[ -x /usr/lib/postgresql/15/bin/pgbench ]]; then
    PGBIN=/usr/lib/postgresql/15/bin
  else
    PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
fi
[[ -x "$PGBIN/pgbench" && -x "$PGBIN/psql" ]] || die "pgbench/psql not found (set PGBIN or run scripts/deps.sh)"
export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)

TMP="" CLUSTER_DIR="" POLICY_RC_CREATED=0
declare -a STARTED_PIDS=()
declare -A PID_OF=() PORT_OF=() LOG_OF=() SIG_OF=() USED_PORTS=()

# ------------------------------------------------------------------------------------------------
# Processes.

# Pids of the descendants of PID, one per line.
descendants() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " "); ppid[pid] = f[2] }
    END { for (p in ppid) { q = ppid[p]; d = 0
            while (q != "" && q != 0 && q != root && d < 64) { q = ppid[q]; d++ }
            if (q == root && p != root) print p } }'
}

# CPU ticks (utime + stime) of PID and its descendants, plus PID's reaped children.
proc_ticks() {
  [[ -r /proc/$1/stat ]] || {
    echo ""
    return 0
  }
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; rest = $0; sub(/^.*\) /, "", rest); n = split(rest, f, " "); if (n < 15) next
      ppid[pid] = f[2]; t[pid] = f[12] + f[13]; if (pid == root) ct = f[14] + f[15] }
    END { if (!(root in t)) { print ""; exit }
          total = t[root] + ct
          for (p in t) { if (p == root) continue; q = ppid[p]; d = 0
            while (q != "" && q != 0 && q != root && d < 64) { q = ppid[q]; d++ }
            if (q == root) total += t[p] }
          print total }'
}

stop_pid() {
  local pid=$1 i kids
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -"${SIG_OF[$pid]:-TERM}" "$pid" 2>/dev/null || true
  for ((i = 0; i < T_STOP * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  for i in $kids; do
    if kill -0 "$i" 2>/dev/null; then kill -KILL "$i" 2>/dev/null || true; fi
  done
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  set +e
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  if [[ -n "$CLUSTER_DIR" ]]; then
    timeout -k 10 120 bash "$REPO/scripts/cluster.sh" stop "$CLUSTER_DIR" >/dev/null 2>&1 ||
      warn "cluster.sh stop failed; data left in $CLUSTER_DIR"
  fi
  ((POLICY_RC_CREATED)) && rm -f /usr/sbin/policy-rc.d
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ -n "${BENCH_KEEP_TMP:-}" ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT TERM

port_in_use() {
  [[ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]] && return 0
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}
# pick_ports N: the first of N consecutive free loopback ports, in PORT_PICKED.
pick_ports() {
  local n=$1 tries base i ok
  for ((tries = 0; tries < 300; tries++)); do
    base=$((20000 + RANDOM % 9000))
    ok=1
    for ((i = 0; i < n; i++)); do
      if [[ -n "${USED_PORTS[$((base + i))]:-}" ]] || port_in_use $((base + i)); then
        ok=0
        break
      fi
    done
    if ((ok)); then
      for ((i = 0; i < n; i++)); do USED_PORTS[$((base + i))]=1; done
      PORT_PICKED=$base
      return 0
    fi
  done
  die "no $n free consecutive ports found"
}

wait_port() { # PORT PID
  local deadline=$((SECONDS + T_START))
  while ((SECONDS < deadline)); do
    kill -0 "$2" 2>/dev/null || return 1
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# start_instance NAME PORT COMMAND [SIGNAL]: runs COMMAND (a bash string) logging to logs/NAME.log.
start_instance() {
  local name=$1 port=$2 cmd=$3 sig=${4:-TERM} pid
  LOG_OF[$name]=$TMP/logs/$name.log
  bash -c "exec $cmd" >>"${LOG_OF[$name]}" 2>&1 </dev/null &
  pid=$!
  STARTED_PIDS+=("$pid")
  SIG_OF[$pid]=$sig
  PID_OF[$name]=$pid
  PORT_OF[$name]=$port
  if ! wait_port "$port" "$pid"; then
    warn "$name did not accept connections on port $port; log tail:"
    tail -n 20 "${LOG_OF[$name]}" >&2 || true
    stop_pid "$pid"
    unset 'PID_OF[$name]'
    return 1
  fi
}

psql_at() { # PORT USER PASSWORD DB SQL
  PGPASSWORD=$3 timeout "$T_SQL" "$PGBIN/psql" -X -q -At -F '|' -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" \
    -U "$2" -d "$4" -c "$5"
}

# ------------------------------------------------------------------------------------------------
# Setup.

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/pgrelay-route-bench.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/logs" "$TMP/pgrelay" "$TMP/pgpool"
export PGPASSFILE=$TMP/no-pgpass
log "temporary folder $TMP"

if ((WITH_PGPOOL)) && ! command -v pgpool >/dev/null; then
  [[ $(id -u) -eq 0 ]] || die "pgpool2 is missing; install it as root (apt-get install -y pgpool2) or use --no-pgpool"
  log "installing pgpool2"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then # keep the package's own service from starting
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  DEBIAN_FRONTEND=noninteractive timeout "$T_APT" apt-get install -y --no-install-recommends pgpool2 \
    >"$TMP/apt.log" 2>&1 || {
    tail -n 20 "$TMP/apt.log" >&2
    die "apt-get install pgpool2 failed"
  }
  ((POLICY_RC_CREATED)) && rm -f /usr/sbin/policy-rc.d && POLICY_RC_CREATED=0
fi
if [[ $(id -u) -eq 0 ]]; then
  AS_PG="setpriv --reuid=postgres --regid=postgres --clear-groups --"
  chown postgres: "$TMP/pgpool"
else
  AS_PG=""
fi

if [[ -n "${BENCH_PGRELAY_BIN:-}" ]]; then
  PGRELAY_BIN=$(realpath -- "$BENCH_PGRELAY_BIN")
  [[ -x "$PGRELAY_BIN" ]] || die "BENCH_PGRELAY_BIN=$BENCH_PGRELAY_BIN is not an executable"
else
  log "building pgrelay (release) in $BUILD_DIR"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    timeout "$T_BUILD" meson setup "$BUILD_DIR" "$REPO" -Dbuildtype=release -Db_lto=true -Dunit_tests=disabled \
      >"$TMP/build.log" 2>&1 || {
      tail -n 30 "$TMP/build.log" >&2
      die "meson setup failed"
    }
  fi
  timeout "$T_BUILD" ninja -C "$BUILD_DIR" pgrelay >>"$TMP/build.log" 2>&1 || {
    tail -n 30 "$TMP/build.log" >&2
    die "building pgrelay failed"
  }
  PGRELAY_BIN=$BUILD_DIR/pgrelay
fi

pick_ports 3
BASE=$PORT_PICKED
CLUSTER_DIR=$TMP/cluster
NODE_PORTS=("$BASE" $((BASE + 1)) $((BASE + 2)))
log "starting a primary and two standbys on ports ${NODE_PORTS[*]}"
PGBIN=$PGBIN timeout -k 10 "$T_CLUSTER" bash "$REPO/scripts/cluster.sh" start "$CLUSTER_DIR" "$BASE" \
  >"$TMP/cluster.log" 2>&1 || {
  tail -n 30 "$TMP/cluster.log" >&2
  CLUSTER_DIR="" # nothing to stop reliably
  die "scripts/cluster.sh start failed"
}

log "pgbench -i -s $SCALE on the primary"
PGPASSWORD=app timeout -k 10 "$T_INIT" "$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$BASE" -U app app \
  >"$TMP/init.log" 2>&1 || {
  tail -n 20 "$TMP/init.log" >&2
  die "pgbench -i failed"
}
psql_at "$BASE" postgres postgres postgres "CHECKPOINT" >/dev/null || true
LSN=$(psql_at "$BASE" postgres postgres postgres "SELECT pg_current_wal_lsn()")
for p in "${NODE_PORTS[@]:1}"; do
  deadline=$((SECONDS + 120))
  until [[ "$(psql_at "$p" postgres postgres postgres "SELECT pg_last_wal_replay_lsn() >= '$LSN'")" == t ]]; do
    ((SECONDS < deadline)) || die "standby on port $p did not replay the pgbench tables"
    sleep 0.2
  done
done

# pgrelay instances: same backends, session pooling, pool large enough for every client.
printf 'app:app\npostgres:postgres\n' >"$TMP/pgrelay/users.txt"
write_pgrelay_conf() { # FILE PORT LB_ENABLED ("" for no load_balance group)
  {
    echo "# written by bench/route_bench.sh"
    echo 'listen_addresses = "127.0.0.1";'
    echo "port = $2;"
    echo "backends = ("
    echo "  { host = \"127.0.0.1\"; port = ${NODE_PORTS[0]}; weight = 1.0; },"
    echo "  { host = \"127.0.0.1\"; port = ${NODE_PORTS[1]}; weight = 1.0; },"
    echo "  { host = \"127.0.0.1\"; port = ${NODE_PORTS[2]}; weight = 1.0; }"
    echo ");"
    echo 'auth = { users_file = "users.txt"; };'
    echo 'logging = { level = "warning"; };'
    echo "pool = { mode = \"session\"; pool_size = $((CLIENTS + 8)); };"
    echo 'health_check = { period = "1s"; user = "postgres"; password = "postgres"; database = "postgres"; };'
    [[ -z "$3" ]] || echo "load_balance = { enabled = $3; };"
  } >"$1"
}
for t in pgrelay-split pgrelay-primary; do
  pick_ports 1
  lb=true
  [[ $t == pgrelay-primary ]] && lb=false
  write_pgrelay_conf "$TMP/pgrelay/$t.conf" "$PORT_PICKED" "$lb"
  out=$("$PGRELAY_BIN" -t -f "$TMP/pgrelay/$t.conf" 2>&1) || die "pgrelay rejects $t.conf: $out"
  start_instance "$t" "$PORT_PICKED" "'$PGRELAY_BIN' -f '$TMP/pgrelay/$t.conf'" || die "$t did not start"
done

if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
  BASELINE_BIN=$(realpath -- "$BENCH_BASELINE_BIN")
  [[ -x "$BASELINE_BIN" ]] || die "BENCH_BASELINE_BIN=$BENCH_BASELINE_BIN is not an executable"
  pick_ports 1
  write_pgrelay_conf "$TMP/pgrelay/baseline.conf" "$PORT_PICKED" ""
  start_instance baseline "$PORT_PICKED" "'$BASELINE_BIN' -f '$TMP/pgrelay/baseline.conf'" ||
    die "the baseline pgrelay did not start"
fi

# pgpool-II: streaming replication, load balancing on, no health check; pool_passwd in plain text.
if ((WITH_PGPOOL)); then
  d=$TMP/pgpool
  pick_ports 1
  pp=$PORT_PICKED
  pick_ports 1
  pcp=$PORT_PICKED
  {
    echo "# written by bench/route_bench.sh"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $pp"
    echo "unix_socket_directories = '$d'"
    echo "pcp_listen_addresses = ''"
    echo "pcp_port = $pcp"
    echo "pcp_socket_dir = '$d'"
    echo "backend_clustering_mode = 'streaming_replication'"
    for i in 0 1 2; do
      echo "backend_hostname$i = '127.0.0.1'"
      echo "backend_port$i = ${NODE_PORTS[$i]}"
      echo "backend_weight$i = 1"
      echo "backend_flag$i = 'ALLOW_TO_FAILOVER'"
    done
    echo "enable_pool_hba = on"
    echo "pool_passwd = '$d/pool_passwd'"
    echo "num_init_children = $((CLIENTS + 4))"
    echo "max_pool = 1"
    echo "reserved_connections = 0"
    echo "child_life_time = 0"
    echo "child_max_connections = 0"
    echo "connection_life_time = 0"
    echo "client_idle_limit = 0"
    echo "connection_cache = on"
    echo "load_balance_mode = on"
    echo "statement_level_load_balance = off"
    echo "sr_check_period = 0"
    echo "sr_check_user = 'postgres'"
    echo "sr_check_password = 'postgres'"
    echo "health_check_period = 0"
    echo "failover_on_backend_error = off"
    echo "use_watchdog = off"
    echo "memory_cache_enabled = off"
    echo "log_destination = 'stderr'"
    echo "log_min_messages = warning"
    echo "log_connections = off"
    echo "logdir = '$d'"
    echo "pid_file_name = '$d/pgpool.pid'"
  } >"$d/pgpool.conf"
  printf 'app:TEXTapp\npostgres:TEXTpostgres\n' >"$d/pool_passwd"
  printf 'host all all 127.0.0.1/32 scram-sha-256\n' >"$d/pool_hba.conf"
  : >"$d/pcp.conf"
  chmod 600 "$d/pool_passwd"
  [[ -z "$AS_PG" ]] || chown postgres: "$d"/*
  start_instance pgpool "$pp" "$AS_PG pgpool -n -f '$d/pgpool.conf' -F '$d/pcp.conf' -a '$d/pool_hba.conf'" INT ||
    {
      warn "pgpool-II did not start; its cells will say fail"
      WITH_PGPOOL=0
    }
fi

TARGETS=(direct)
[[ -z "${BENCH_BASELINE_BIN:-}" ]] || TARGETS+=(baseline)
TARGETS+=(pgrelay-primary pgrelay-split)
((WITH_PGPOOL)) && TARGETS+=(pgpool)
PORT_OF[direct]=$BASE
sleep 2 # two health-check periods: pgrelay knows the roles

for t in "${TARGETS[@]}"; do
  v=$(psql_at "${PORT_OF[$t]}" app app app "SELECT count(*) FROM pgbench_branches" 2>&1) || true
  [[ "$v" == "$SCALE" ]] || warn "$t: smoke query failed: $v"
done

# select_cnt per node from SHOW pool_nodes (pgrelay and pgpool-II), "a|b|c"; "" when unavailable.
select_counts() { # PORT
  psql_at "$1" app app app "SHOW pool_nodes" 2>/dev/null | awk -F'|' '{ printf "%s%s", (NR > 1 ? "|" : ""), $9 }' ||
    true
}

# ------------------------------------------------------------------------------------------------
# Runs.

declare -A WL=(
  [select-simple]="-S -M simple|select-only -M simple"
  [select-extended]="-S -M extended|select-only -M extended"
  [select-prepared]="-S -M prepared|select-only -M prepared"
)
declare -A TPS=() CPU=() STATUS=() SPREAD=()

log "warm-up (direct, 3 s)"
PGPASSWORD=app timeout 60 "$PGBIN/pgbench" -h 127.0.0.1 -p "$BASE" -U app -n -S -c 4 -j "$JOBS" -T 3 app \
  >"$TMP/logs/warmup.out" 2>&1 || warn "warm-up failed"

run_one() { # WORKLOAD TARGET
  local wl=$1 t=$2 key="$1|$2" opts label out rc=0 t0="" t1="" c0="" c1="" tps txn
  IFS='|' read -r opts label <<<"${WL[$wl]}"
  out=$TMP/logs/$wl-$t.out
  if [[ $t != direct ]]; then
    if [[ -z "${PID_OF[$t]:-}" ]] || ! kill -0 "${PID_OF[$t]}" 2>/dev/null; then
      STATUS[$key]=fail
      log "$label via $t: fail (not running)"
      return 0
    fi
    c0=$(select_counts "${PORT_OF[$t]}")
    t0=$(proc_ticks "${PID_OF[$t]}")
  fi
  # shellcheck disable=SC2086
  PGPASSWORD=app timeout -k 10 $((DURATION + T_RUN_EXTRA)) "$PGBIN/pgbench" -h 127.0.0.1 -p "${PORT_OF[$t]}" \
    -U app -n -c "$CLIENTS" -j "$JOBS" -T "$DURATION" $opts app >"$out" 2>&1 || rc=$?
  if [[ $t != direct ]]; then
    t1=$(proc_ticks "${PID_OF[$t]}")
    c1=$(select_counts "${PORT_OF[$t]}")
  fi
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1)
  txn=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n 1)
  if ((rc != 0)) || [[ -z "$tps" || -z "$txn" || "$txn" == 0 ]]; then
    STATUS[$key]=fail
    warn "$label via $t failed (pgbench exit $rc): $(grep -m 3 -E 'error|ERROR|FATAL|abort' "$out" | tr '\n' ' ')"
    return 0
  fi
  STATUS[$key]=ok
  TPS[$key]=$tps
  CPU[$key]=n/a
  if [[ -n "$t0" && -n "$t1" ]]; then
    CPU[$key]=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v n="$txn" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
  fi
  SPREAD[$key]="—"
  if [[ -n "$c0" && -n "$c1" ]]; then
    SPREAD[$key]=$(awk -v a="$c0" -v b="$c1" 'BEGIN {
      n = split(a, x, "|"); split(b, y, "|"); s = 0
      for (i = 1; i <= n; i++) { d[i] = y[i] - x[i]; s += d[i] }
      if (s <= 0) { printf "no reads counted"; exit }
      for (i = 1; i <= n; i++) printf "%s%d%%", (i > 1 ? " / " : ""), 100 * d[i] / s + 0.5 }')
  fi
  log "$label via $t: $(printf '%.0f' "$tps") tps, CPU/txn ${CPU[$key]} µs, reads per node ${SPREAD[$key]}"
}

for wl in $WORKLOADS; do
  for t in "${TARGETS[@]}"; do run_one "$wl" "$t"; done
done

# ------------------------------------------------------------------------------------------------
# Report.

cell_tps() { if [[ "${STATUS[$1]:-}" == ok ]]; then printf '%.0f' "${TPS[$1]}"; else printf '%s' "${STATUS[$1]:-n/a}"; fi; }
ratio() { # KEY_A KEY_B
  if [[ "${STATUS[$1]:-}" == ok && "${STATUS[$2]:-}" == ok ]]; then
    awk -v a="${TPS[$1]}" -v b="${TPS[$2]}" 'BEGIN { printf "%.2f", a / b }'
  else printf '—'; fi
}

classify_md=""
if ((WITH_CLASSIFY)); then
  log "classifier cost (bench/classify_bench.sh)"
  classify_md=$(timeout 900 bash "$REPO/bench/classify_bench.sh" 2>&1) || classify_md="classify_bench.sh failed:
$classify_md"
fi

report() {
  local wl label opts
  echo "| workload | direct tps | pgrelay primary-only tps | pgrelay split tps | pgpool-II LB tps | split / direct | split / primary-only | split / pgpool-II | pgrelay primary-only µs CPU/txn | pgrelay split µs CPU/txn | pgpool-II µs CPU/txn | reads per node 0/1/2 (pgrelay split) | reads per node 0/1/2 (pgpool-II) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
  for wl in $WORKLOADS; do
    IFS='|' read -r opts label <<<"${WL[$wl]}"
    echo "| $label | $(cell_tps "$wl|direct") | $(cell_tps "$wl|pgrelay-primary") | $(cell_tps "$wl|pgrelay-split") | $(cell_tps "$wl|pgpool") | $(ratio "$wl|pgrelay-split" "$wl|direct") | $(ratio "$wl|pgrelay-split" "$wl|pgrelay-primary") | $(ratio "$wl|pgrelay-split" "$wl|pgpool") | ${CPU[$wl|pgrelay-primary]:-n/a} | ${CPU[$wl|pgrelay-split]:-n/a} | ${CPU[$wl|pgpool]:-n/a} | ${SPREAD[$wl|pgrelay-split]:-—} | ${SPREAD[$wl|pgpool]:-—} |"
  done
  if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
    echo
    echo "Baseline ($BENCH_BASELINE_BIN, primary-only configuration) against pgrelay primary-only (load_balance.enabled = false):"
    echo
    echo "| workload | baseline tps | pgrelay primary-only tps | primary-only / baseline | baseline µs CPU/txn | pgrelay primary-only µs CPU/txn |"
    echo "|---|---:|---:|---:|---:|---:|"
    for wl in $WORKLOADS; do
      IFS='|' read -r opts label <<<"${WL[$wl]}"
      echo "| $label | $(cell_tps "$wl|baseline") | $(cell_tps "$wl|pgrelay-primary") | $(ratio "$wl|pgrelay-primary" "$wl|baseline") | ${CPU[$wl|baseline]:-n/a} | ${CPU[$wl|pgrelay-primary]:-n/a} |"
    done
  fi
  if [[ -n "$classify_md" ]]; then
    echo
    echo "Classification cost per statement (bench/classify_bench.sh: parse only, classify without the cache, classify with a cache hit):"
    echo
    echo "$classify_md"
  fi
}

PG_VERSION=$("$PGBIN/pgbench" --version | awk '{print $3}')
POOL_VERSION=""
((WITH_PGPOOL)) && POOL_VERSION=$(pgpool --version 2>&1 | head -n 1 | awk '{print $3}')
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
[[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n 1)" ]] && GIT_REV+=" (uncommitted changes)"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
REPORT=$(report)
mkdir -p "$RESULTS_DIR"
{
  echo "# pgrelay routing benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "pgrelay $GIT_REV, PostgreSQL $PG_VERSION${POOL_VERSION:+, pgpool-II $POOL_VERSION}; $(nproc) cores, $(uname -r);"
  echo "pgbench -s $SCALE, -c $CLIENTS -j $JOBS, ${DURATION}s per run, session pooling, weights 1/1/1; one run, targets back to back per workload;"
  echo "load average $LOAD_START at the start, $LOAD_END at the end (other work on the machine competes with the runs)."
  echo
  echo "$REPORT"
} >"$RESULTS_DIR/route-latest.md"
echo
echo "$REPORT"
echo
log "written to bench/results/route-latest.md"
exit 0
