#!/usr/bin/env bash
# Profiles PgBouncer, pgrelay with load balancing off and pgrelay with load balancing on (over the
# cluster's 3 nodes) under the same load: pgbench -S -M simple -c 32 -j 2 (SCRAM), one proxy at a
# time. In a fixed window in the middle of each run it takes a perf profile of the proxy, counts
# its syscalls and context switches, and divides them by the transactions pgbench completed in that
# window. Writes bench/results/profile.md. See bench/README.md.
#
#   bench/profile.sh [--help]
#
# Environment (all optional):
#   PROFILE_MODE=transaction  pool mode of the proxies (session or transaction)
#   DURATION=10               seconds of each pgbench run; the window is centred in it
#   WINDOW=5                  seconds of the measurement window (DURATION must be >= WINDOW + 1)
#   CLIENTS=32                pgbench clients (-j 2)
#   PROFILE_TARGETS="pgbouncer pgrelay pgrelay-lb"   what to profile, in this order
#   SYSCALLS=auto             perf: count syscalls:sys_enter_* tracepoints with perf stat in the same
#                             window as the profile (little overhead); strace: strace -c -f in a
#                             second pgbench run per proxy (ptrace slows the proxy several fold,
#                             which also changes how syscalls batch); auto: perf when it works
#   SCALE=10 POOL_SIZE=40 BENCH_PGPORT BENCH_BUILD_DIR BENCH_PGRELAY_BIN BENCH_KEEP_TMP PGBIN
#                             as in bench/run.sh (BENCH_PGPORT: reuse a scripts/cluster.sh cluster;
#                             its pgbench tables are kept when they exist)
#
# Needs root (it installs linux-perf, strace and pgbouncer with apt-get when missing, and may lower
# kernel.perf_event_paranoid for the duration of the run). Without a working perf it still counts
# syscalls with strace and context switches, and says so in the report.
# Exit status: 0 when the report was written, 1 on a setup failure, 2 on usage.
set -Eeuo pipefail
umask 022

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$REPO/bench/results
case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '/^set -E/d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "profile.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

MODE=${PROFILE_MODE:-transaction}
DURATION=${DURATION:-10}
WINDOW=${WINDOW:-5}
CLIENTS=${CLIENTS:-32}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-40}
PROFILE_TARGETS=${PROFILE_TARGETS:-pgbouncer pgrelay pgrelay-lb}
SYSCALLS=${SYSCALLS:-auto}
BENCH_PGPORT=${BENCH_PGPORT:-}
BUILD_DIR=${BENCH_BUILD_DIR:-$REPO/build-bench}
usage_error() {
  echo "profile.sh: $*" >&2
  exit 2
}
for v in DURATION WINDOW CLIENTS SCALE POOL_SIZE; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || usage_error "$v must be a positive integer, got '${!v}'"
done
((DURATION >= WINDOW + 1)) || usage_error "DURATION ($DURATION) must be at least WINDOW + 1 ($((WINDOW + 1)))"
[[ "$MODE" =~ ^(session|transaction)$ ]] || usage_error "PROFILE_MODE must be session or transaction"
[[ "$SYSCALLS" =~ ^(auto|perf|strace)$ ]] || usage_error "SYSCALLS must be auto, perf or strace"
[[ -z "$BENCH_PGPORT" || "$BENCH_PGPORT" =~ ^[0-9]+$ ]] || usage_error "BENCH_PGPORT must be a port number"
for t in $PROFILE_TARGETS; do
  [[ " pgbouncer pgrelay pgrelay-lb " == *" $t "* ]] || usage_error "unknown target '$t' (pgbouncer pgrelay pgrelay-lb)"
done

log() { printf '%s profile.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '%s profile.sh: setup failed: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}
if [[ -z "${PGBIN:-}" ]]; then
  PGBIN=/usr/lib/postgresql/15/bin
  [[ -x $PGBIN/pgbench ]] || PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
[[ -x "$PGBIN/pgbench" && -x "$PGBIN/psql" ]] || die "pgbench/psql not found; set PGBIN or run scripts/deps.sh"
export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)

TMP="" CLUSTER_DIR="" PARANOID_OLD="" POLICY_RC=0
declare -a PIDS=()
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ -n "$CLUSTER_DIR" ]]; then
    log "stopping our cluster"
    timeout -k 10 120 bash "$REPO/scripts/cluster.sh" stop "$CLUSTER_DIR" >/dev/null 2>&1
  fi
  [[ -z "$PARANOID_OLD" ]] || sysctl -q -w kernel.perf_event_paranoid="$PARANOID_OLD" >/dev/null 2>&1
  ((POLICY_RC == 0)) || rm -f /usr/sbin/policy-rc.d
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ -n "${BENCH_KEEP_TMP:-}" ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'printf "%s profile.sh: failed: line %s: %s (status %s)\n" "$(date +%H:%M:%S)" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
trap 'log "interrupted"; exit 130' INT TERM

TMP=$(mktemp -d /tmp/pgrelay-profile.XXXXXX)
chmod 755 "$TMP"
export PGPASSFILE=$TMP/no-pgpass

# Packages (their services must not start: policy-rc.d while apt-get runs).
missing=()
for p in linux-perf strace pgbouncer; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; install them as root"
  log "installing ${missing[*]}"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  timeout 900 apt-get install -y --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1 || {
    timeout 900 apt-get update >>"$TMP/apt.log" 2>&1 || true
    timeout 900 apt-get install -y --no-install-recommends "${missing[@]}" >>"$TMP/apt.log" 2>&1 ||
      die "apt-get install ${missing[*]} failed (log: $TMP/apt.log)"
  }
fi
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(setpriv --reuid=postgres --regid=postgres --clear-groups --)

# pgrelay, release build (as bench/run.sh).
if [[ -n "${BENCH_PGRELAY_BIN:-}" ]]; then
  PGRELAY_BIN=$(realpath -- "$BENCH_PGRELAY_BIN")
else
  log "building pgrelay (release) in $BUILD_DIR"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    timeout 900 meson setup "$BUILD_DIR" "$REPO" -Dbuildtype=release -Db_lto=true -Dunit_tests=disabled >"$TMP/build.log" 2>&1 ||
      die "meson setup failed (log: $TMP/build.log)"
  fi
  timeout 900 ninja -C "$BUILD_DIR" pgrelay >>"$TMP/build.log" 2>&1 || die "building pgrelay failed (log: $TMP/build.log)"
  PGRELAY_BIN=$BUILD_DIR/pgrelay
fi
[[ -x "$PGRELAY_BIN" ]] || die "$PGRELAY_BIN is not an executable"

port_free() { [[ -z "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]]; }
pick_port() { # N -> first of N free consecutive ports
  local base i ok tries
  for ((tries = 0; tries < 300; tries++)); do
    base=$((20000 + RANDOM % 9000)) ok=1
    for ((i = 0; i < $1; i++)); do port_free $((base + i)) || ok=0; done
    ((ok)) && echo "$base" && return 0
  done
  die "no free port found"
}

# The cluster: reused (BENCH_PGPORT) or our own, with its pgbench tables.
if [[ -n "$BENCH_PGPORT" ]]; then
  PRIMARY_PORT=$BENCH_PGPORT
  timeout 15 "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PRIMARY_PORT" -t 10 || die "nothing on 127.0.0.1:$PRIMARY_PORT"
  BACKEND_PORTS=("$PRIMARY_PORT")
  for p in $((PRIMARY_PORT + 1)) $((PRIMARY_PORT + 2)); do
    if timeout 5 "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$p" -t 3; then BACKEND_PORTS+=("$p"); fi
  done
else
  PRIMARY_PORT=$(pick_port 3)
  CLUSTER_DIR=$TMP/cluster
  log "starting a cluster on ports $PRIMARY_PORT-$((PRIMARY_PORT + 2))"
  PGBIN=$PGBIN timeout -k 10 300 bash "$REPO/scripts/cluster.sh" start "$CLUSTER_DIR" "$PRIMARY_PORT" >"$TMP/cluster.log" 2>&1 ||
    die "scripts/cluster.sh start failed (log: $TMP/cluster.log)"
  BACKEND_PORTS=("$PRIMARY_PORT" $((PRIMARY_PORT + 1)) $((PRIMARY_PORT + 2)))
fi
q() { # SQL, as app on the primary
  PGPASSWORD=app timeout 20 "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$PRIMARY_PORT" -U app -d app -c "$1"
}
branches=$(q 'SELECT count(*) FROM pgbench_branches' 2>/dev/null || true)
if [[ "$branches" =~ ^[1-9][0-9]*$ ]]; then
  SCALE=$branches
  log "reusing the pgbench tables (scale $SCALE)"
else
  log "pgbench -i -s $SCALE"
  PGPASSWORD=app timeout -k 10 1200 "$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app \
    >"$TMP/init.log" 2>&1 || die "pgbench -i failed (log: $TMP/init.log)"
fi

# perf: the default event, else cpu-clock (no hardware counters in most VMs), else after
# kernel.perf_event_paranoid=-1 (restored on exit). PERF_OK=0: no profile, said in the report.
PERF_OK=0 PERF_EV=() NOTES=()
perf_probe() { timeout 30 perf record "$@" -g -o "$TMP/probe.data" -- sleep 0.2 >"$TMP/probe.log" 2>&1; }
try_perf() {
  if perf_probe; then
    PERF_OK=1
  elif perf_probe -e cpu-clock; then
    PERF_OK=1 PERF_EV=(-e cpu-clock)
  fi
}
command -v perf >/dev/null && try_perf
if ((!PERF_OK)) && command -v perf >/dev/null; then
  old=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo "")
  if [[ -n "$old" && "$old" != -1 ]] && sysctl -q -w kernel.perf_event_paranoid=-1 >/dev/null 2>&1; then
    PARANOID_OLD=$old
    NOTES+=("kernel.perf_event_paranoid was lowered from $old to -1 for the run.")
    try_perf
  fi
fi
if ((PERF_OK)); then
  PERF_EVENT=$(perf evlist -i "$TMP/probe.data" 2>/dev/null | awk 'NR == 1')
else
  NOTES+=("perf could not record in this machine ($(tail -n 1 "$TMP/probe.log" 2>/dev/null)): no profile.")
fi
if [[ "$SYSCALLS" == auto ]]; then
  SYSCALLS=strace
  if ((PERF_OK)) && timeout 30 perf stat -x, -e 'syscalls:sys_enter_read' -- true >/dev/null 2>&1; then SYSCALLS=perf; fi
fi
PROFILE_DESC="none (perf cannot record here)"
((PERF_OK == 0)) || PROFILE_DESC="perf record -g (event ${PERF_EVENT:-?}) -p PID over the window, self time (--no-children)"
log "profile: $PROFILE_DESC; syscalls: $SYSCALLS"

# The proxies' configurations (as bench/run.sh writes them, SCRAM only).
mkdir -p "$TMP/conf"
printf 'app:app\npostgres:postgres\n' >"$TMP/conf/users.txt"
printf '"app" "app"\n' >"$TMP/conf/userlist.txt"
write_pgrelay_conf() { # FILE PORT LB(true|false)
  local p sep="" b=""
  for p in "${BACKEND_PORTS[@]}"; do
    b+="$sep{ host = \"127.0.0.1\"; port = $p; weight = 1.0; }" sep=", "
  done
  cat >"$1" <<EOF
listen_addresses = "127.0.0.1";
port = $2;
backends = ( $b );
auth = { users_file = "users.txt"; };
logging = { level = "warning"; };
pool = { mode = "$MODE"; pool_size = $POOL_SIZE; max_client_conn = 20000; };
health_check = { user = "postgres"; password = "postgres"; database = "postgres"; };
load_balance = { enabled = $3; };
EOF
}
write_pgbouncer_conf() { # FILE PORT
  cat >"$1" <<EOF
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/conf/userlist.txt
pool_mode = $MODE
default_pool_size = $POOL_SIZE
max_client_conn = 20000
logfile =
pidfile =
log_connections = 0
log_disconnections = 0
EOF
}
wait_ready() { # PID PORT: the proxy answers a query within 20 s
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$1" 2>/dev/null || return 1
    PGPASSWORD=app timeout 5 "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$2" -U app -d app -c 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
lb_ready() { # PORT: SHOW pool_nodes has every node up and a standby, within 20 s
  local i
  for ((i = 0; i < 100; i++)); do
    PGPASSWORD=app timeout 5 "$PGBIN/psql" -X -At -F'|' -h 127.0.0.1 -p "$1" -U app -d app -c 'SHOW pool_nodes' 2>/dev/null |
      awk -F'|' 'NF > 7 { n++; if ($4 == "up" && $7 == "standby") s++; if ($4 != "up") bad++ } END { exit !(n && s && !bad) }' && return 0
    sleep 0.2
  done
  return 1
}

ctx_switches() { # PID -> "voluntary nonvoluntary", summed over its threads
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 } END { print v + 0, n + 0 }'
}
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# Transactions pgbench completed between epoch times A and B, from its --progress-timestamp lines
# (each covers the second before its time stamp); a part of the run without a line (its last
# fraction of a second) counts at the run's tps, time outside the run counts nothing.
window_txn() { # PGBENCH_OUTPUT A B
  awk -v a="$2" -v b="$3" -v d="$DURATION" '
    /^progress: / { tps[$2] = $4 + 0; if (first == "" || $2 + 0 < first) first = $2 + 0 }
    /^tps = / { all = $3 + 0 }
    function ov(lo, hi) { lo = lo > a ? lo : a; hi = hi < b ? hi : b; return hi > lo ? hi - lo : 0 }
    END {
      if (first == "") { print 0; exit }
      for (t in tps) { o = ov(t - 1, t + 0); s += tps[t] * o; covered += o }
      s += all * (ov(first - 1, first - 1 + d) - covered)
      printf "%.0f", s
    }' "$1"
}
# Sends CMD to the perf processes whose control fifos are PREFIX.ctl / PREFIX.ack, waiting for each
# one's ack (at most 30 s: perf stat opens some hundred tracepoints per thread first).
perf_ctl() { # CMD PREFIX...
  local cmd=$1 f
  shift
  for f in "$@"; do
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 30 bash -c 'echo "$1" >"$2.ctl" && head -c 4 "$2.ack" >/dev/null' _ "$cmd" "$f" || return 1
  done
}

declare -A TPS=() TXN=() CPU=() CTXV=() CTXN=() STATE=()
label() {
  case "$1" in
    pgbouncer) echo PgBouncer ;;
    pgrelay) echo "pgrelay LB off" ;;
    pgrelay-lb) echo "pgrelay LB on" ;;
  esac
}

# One pgbench run against PORT with KIND of measurement (profile: perf record + perf stat syscalls +
# context switches + CPU; strace: strace -c) in the window [ (DURATION - WINDOW) / 2, + WINDOW ].
measure() { # TARGET PID PORT KIND
  local t=$1 pid=$2 port=$3 kind=$4 out=$TMP/$1-$4.pgbench bpid w0 w1 c0 c1 k0 k1 perfs=() ctls=() p n tps v0 v1 n0 n1
  if [[ "$kind" == profile ]]; then
    # perf record and perf stat attach now with their events disabled, and are switched on and
    # off through their control fifos exactly at the window's ends.
    if ((PERF_OK)); then
      mkfifo "$TMP/$t.rec.ctl" "$TMP/$t.rec.ack"
      perf record -D -1 --control "fifo:$TMP/$t.rec.ctl,$TMP/$t.rec.ack" "${PERF_EV[@]}" -g -p "$pid" \
        -o "$TMP/$t.perf.data" >"$TMP/$t.perf.log" 2>&1 &
      perfs+=($!) ctls+=("$TMP/$t.rec")
    fi
    if [[ "$SYSCALLS" == perf ]]; then
      mkfifo "$TMP/$t.stat.ctl" "$TMP/$t.stat.ack"
      perf stat -D -1 --control "fifo:$TMP/$t.stat.ctl,$TMP/$t.stat.ack" -x, -o "$TMP/$t.perfstat" \
        -e 'syscalls:sys_enter_*' -p "$pid" >"$TMP/$t.perfstat.log" 2>&1 &
      perfs+=($!) ctls+=("$TMP/$t.stat")
    fi
    if ! perf_ctl ping "${ctls[@]}"; then
      NOTES+=("$(label "$t"): perf did not answer on its control fifo; no profile or syscall counts")
      for p in "${perfs[@]}"; do stop_pid "$p"; done
      perfs=() ctls=()
      rm -f "$TMP/$t.perf.data" "$TMP/$t.perfstat"
    fi
  fi
  PGPASSWORD=app timeout -k 5 $((DURATION + 60)) "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U app -n -S -M simple \
    -c "$CLIENTS" -j 2 -T "$DURATION" -P 1 --progress-timestamp app >"$out" 2>&1 &
  bpid=$!
  sleep "$(awk -v d="$DURATION" -v w="$WINDOW" 'BEGIN { print (d - w) / 2 }')"
  if [[ "$kind" == strace ]]; then
    strace -c -f -p "$pid" -o "$TMP/$t.strace" 2>"$TMP/$t.strace.log" &
    p=$!
    # The window starts once strace reports the process attached (its threads follow at once).
    for ((n = 0; n < 250; n++)); do
      grep -qs 'attached' "$TMP/$t.strace.log" && break
      sleep 0.02
    done
    w0=$EPOCHREALTIME
    sleep "$WINDOW"
    kill -INT "$p" 2>/dev/null || true
    w1=$EPOCHREALTIME
    wait "$p" || true
  else
    perf_ctl enable "${ctls[@]}" || NOTES+=("$(label "$t"): enabling perf failed")
    w0=$EPOCHREALTIME c0=$(ctx_switches "$pid") k0=$(cpu_ticks "$pid")
    sleep "$WINDOW"
    w1=$EPOCHREALTIME c1=$(ctx_switches "$pid") k1=$(cpu_ticks "$pid")
    perf_ctl disable "${ctls[@]}" || true
    for p in "${perfs[@]}"; do
      kill -INT "$p" 2>/dev/null || true
      wait "$p" || true
    done
  fi
  wait "$bpid" || log "$t: pgbench exited with status $? ($(tail -n 1 "$out"))"
  n=$(window_txn "$out" "$w0" "$w1")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | awk 'NR == 1')
  if [[ -z "$tps" || "${n:-0}" -le 0 ]]; then
    if [[ "$kind" == strace ]]; then
      NOTES+=("$(label "$t"): the strace run failed: $(tail -n 2 "$out" | tr '\n' ' ')")
    else
      STATE[$t]="pgbench failed: $(tail -n 2 "$out" | tr '\n' ' ')"
    fi
    return 0
  fi
  if [[ "$kind" == strace ]]; then
    # "% time seconds usecs/call calls [errors] syscall" rows of strace -c.
    awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { printf "%s %.3f\n", $NF, $4 / n }' "$TMP/$t.strace" >"$TMP/$t.sys"
    TXN[$t,strace]=$n
    TPS[$t,strace]=$tps
  else
    TPS[$t]=$tps
    TXN[$t]=$n
    read -r v0 n0 <<<"$c0"
    read -r v1 n1 <<<"$c1"
    CTXV[$t]=$(awk -v a="$v0" -v b="$v1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')
    CTXN[$t]=$(awk -v a="$n0" -v b="$n1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')
    CPU[$t]=$(awk -v a="$k0" -v b="$k1" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
    if [[ "$SYSCALLS" == perf ]]; then
      awk -F, -v n="$n" '$1 ~ /^[0-9]+$/ && $1 > 0 { s = $3; sub(/^syscalls:sys_enter_/, "", s); printf "%s %.3f\n", s, $1 / n }' \
        "$TMP/$t.perfstat" >"$TMP/$t.sys"
    fi
  fi
  STATE[$t]=ok
}

profile_target() { # TARGET
  local t=$1 port pid conf
  port=$(pick_port 1)
  case "$t" in
    pgbouncer)
      conf=$TMP/conf/pgbouncer.ini
      write_pgbouncer_conf "$conf" "$port"
      [[ ${#AS_PG[@]} -eq 0 ]] || chown -R postgres: "$TMP/conf"
      setsid "${AS_PG[@]}" pgbouncer "$conf" >"$TMP/$t.log" 2>&1 </dev/null &
      ;;
    pgrelay | pgrelay-lb)
      if [[ "$t" == pgrelay-lb ]] && ((${#BACKEND_PORTS[@]} < 2)); then
        STATE[$t]="n/a: no standby answered on 127.0.0.1:$((PRIMARY_PORT + 1)) or :$((PRIMARY_PORT + 2))"
        return 0
      fi
      conf=$TMP/conf/$t.conf
      write_pgrelay_conf "$conf" "$port" "$([[ "$t" == pgrelay-lb ]] && echo true || echo false)"
      setsid "$PGRELAY_BIN" -f "$conf" >"$TMP/$t.log" 2>&1 </dev/null &
      ;;
  esac
  pid=$!
  PIDS+=("$pid")
  if ! wait_ready "$pid" "$port"; then
    STATE[$t]="did not start: $(tail -n 2 "$TMP/$t.log" | tr '\n' ' ')"
    stop_pid "$pid"
    return 0
  fi
  if [[ "$t" == pgrelay-lb ]] && ! lb_ready "$port"; then
    STATE[$t]="n/a: pgrelay saw no standby up (SHOW pool_nodes)"
    stop_pid "$pid"
    return 0
  fi
  log "$(label "$t"): pgbench -S -M simple -c $CLIENTS -j 2 -T $DURATION, $WINDOW s window"
  measure "$t" "$pid" "$port" profile
  if [[ "$SYSCALLS" == strace && "${STATE[$t]}" == ok ]]; then
    log "$(label "$t"): second run under strace -c"
    measure "$t" "$pid" "$port" strace
  fi
  if ((PERF_OK)) && [[ -s "$TMP/$t.perf.data" ]]; then
    mkdir -p "$RESULTS_DIR/profile"
    perf report -i "$TMP/$t.perf.data" --no-children --stdio --percent-limit 1.5 >"$RESULTS_DIR/profile/perf-$t.txt" 2>/dev/null || true
    # Self time by function: "PCT<TAB>[.] or [k]<TAB>SYMBOL<TAB>BINARY" lines, largest first.
    perf report -i "$TMP/$t.perf.data" --no-children --stdio --sort dso,sym -g none 2>/dev/null |
      awk '/^ +[0-9.]+%/ { p = $1; d = $2; k = $3; $1 = $2 = $3 = ""; sub(/^ +/, ""); sub(/%$/, "", p); print p "\t" k "\t" $0 "\t" d }' \
        >"$TMP/$t.syms"
    awk -F'\t' '$2 == "[.]" && ++n <= 15' "$TMP/$t.syms" >"$TMP/$t.top"
    awk -F'\t' '$2 == "[k]" && $1 >= 1.5 { printf "%s`%s` %s %%", sep, $3, $1; sep = ", " }' "$TMP/$t.syms" >"$TMP/$t.kernel"
    perf report -i "$TMP/$t.perf.data" --no-children --stdio --sort dso -g none 2>/dev/null |
      awk '/^ +[0-9.]+%/ && ++n <= 4 { printf "%s%s %s", sep, $2, $1; sep = ", " }' >"$TMP/$t.dso"
  fi
  log "$(label "$t"): ${STATE[$t]}${TPS[$t]:+, $(printf '%.0f' "${TPS[$t]}") tps, ${TXN[$t]:-?} txn in the window, CPU ${CPU[$t]:-?} µs/txn}"
  stop_pid "$pid"
}

rm -f "$RESULTS_DIR"/profile/perf-*.txt
for t in $PROFILE_TARGETS; do profile_target "$t"; done

# ------------------------------------------------------------------------------------------------
# The report.
TGTS=()
for t in $PROFILE_TARGETS; do TGTS+=("$t"); done
row() { # LABEL ARRAY-NAME
  local -n arr=$2
  local r="| $1 |" t
  for t in "${TGTS[@]}"; do
    if [[ "${STATE[$t]:-}" == ok ]]; then r+=" ${arr[$t]:-—} |"; else r+=" n/a |"; fi
  done
  echo "$r"
}
hdr() {
  local h="| $1 |" s="|---|" t
  for t in "${TGTS[@]}"; do h+=" $(label "$t") |" s+="---:|"; done
  printf '%s\n%s\n' "$h" "$s"
}
declare -A TPSR=() CTXT=() SYST=() TXNW=()
# shellcheck disable=SC2034 # read through row()'s nameref
for t in "${TGTS[@]}"; do
  [[ "${STATE[$t]:-}" == ok ]] || continue
  TPSR[$t]=$(printf '%.0f' "${TPS[$t]}")
  TXNW[$t]=${TXN[$t]}
  [[ -z "${TXN[$t,strace]:-}" ]] || TXNW[$t]+=" (strace run: ${TXN[$t,strace]} at $(printf '%.0f' "${TPS[$t,strace]}") tps)"
  CTXT[$t]=$(awk -v a="${CTXV[$t]}" -v b="${CTXN[$t]}" 'BEGIN { printf "%.2f", a + b }')
  [[ ! -s "$TMP/$t.sys" ]] || SYST[$t]=$(awk '{ s += $2 } END { printf "%.2f", s }' "$TMP/$t.sys")
done
PG_VERSION=$("$PGBIN/pgbench" --version | awk '{ print $3 }')
BOUNCER_VERSION=$(pgbouncer --version 2>/dev/null | awk 'NR == 1 { print $2 }')
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
[[ -z "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]] || GIT_REV+=" (uncommitted changes)"
case "$SYSCALLS" in
  perf) SYS_DESC="perf stat -e 'syscalls:sys_enter_*' -p PID over the window" ;;
  strace) SYS_DESC="strace -c -f -p PID for $WINDOW s in a second pgbench run (ptrace slows the proxy: compare with care)" ;;
esac
{
  echo "# Proxy profile, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "pgrelay $GIT_REV (release build), PgBouncer $BOUNCER_VERSION, PostgreSQL $PG_VERSION; $(nproc) cores, $(uname -r)."
  echo "Pool mode $MODE, pool size $POOL_SIZE, SCRAM; \`pgbench -S -M simple -c $CLIENTS -j 2 -T $DURATION\` (scale $SCALE) against one"
  echo "proxy at a time; pgrelay LB on balances over ${#BACKEND_PORTS[@]} node(s), LB off sends everything to the primary."
  echo "Window: $WINDOW s from $(awk -v d="$DURATION" -v w="$WINDOW" 'BEGIN { print (d - w) / 2 }') s into each run; per-transaction figures divide by the"
  echo "transactions pgbench completed in the window (its \`-P 1 --progress-timestamp\` lines). Syscalls: $SYS_DESC."
  echo "Profile: $PROFILE_DESC."
  echo
  echo "## Per transaction"
  echo
  hdr ""
  row "pgbench tps (whole run)" TPSR
  row "transactions in the window" TXNW
  row "proxy CPU µs/txn (utime + stime)" CPU
  row "context switches/txn, voluntary" CTXV
  row "context switches/txn, non-voluntary" CTXN
  row "context switches/txn, total" CTXT
  row "syscalls/txn, total" SYST
  echo
  echo "## Syscalls per transaction"
  echo
  hdr syscall
  # Union of the syscalls, largest first; rows under 0.01 per transaction everywhere are left out.
  for t in "${TGTS[@]}"; do [[ ! -s "$TMP/$t.sys" ]] || awk -v t="$t" '{ print t, $1, $2 }' "$TMP/$t.sys"; done |
    awk '$3 > m[$2] { m[$2] = $3 } END { for (s in m) if (m[s] >= 0.01) print m[s], s }' | sort -rn | while read -r _ s; do
      r="| $s |"
      for t in "${TGTS[@]}"; do
        r+=" $(awk -v s="$s" '$1 == s { printf "%.2f", $2; f = 1 } END { if (!f) printf "—" }' "$TMP/$t.sys" 2>/dev/null || echo —) |"
      done
      echo "$r"
    done
  echo
  echo "## User-space functions (perf, self time in % of all the proxy's samples, top 15)"
  echo
  if ((PERF_OK)) && compgen -G "$TMP/*.top" >/dev/null; then
    h="| # |" s="|---:|"
    for t in "${TGTS[@]}"; do h+=" $(label "$t") | % |" s+="---|---:|"; done
    printf '%s\n%s\n' "$h" "$s"
    for ((i = 1; i <= 15; i++)); do
      r="| $i |" any=0
      for t in "${TGTS[@]}"; do
        line=$(sed -n "${i}p" "$TMP/$t.top" 2>/dev/null || true)
        if [[ -n "$line" ]]; then
          IFS=$'\t' read -r pct _ sym dso <<<"$line"
          # shellcheck disable=SC2016 # backquotes are Markdown
          r+=" \`$sym\` ($dso) | $pct |" any=1
        else
          r+=" | |"
        fi
      done
      ((any)) && echo "$r"
    done
    echo
    for t in "${TGTS[@]}"; do
      [[ ! -s "$TMP/$t.dso" ]] || echo "- $(label "$t"), by binary: $(cat "$TMP/$t.dso"); kernel functions at ≥ 1.5 %: $(cat "$TMP/$t.kernel" 2>/dev/null || true)."
    done
    if grep -qs 'irq_enable' "$TMP"/*.kernel; then
      echo "- Kernel samples pile up on *irq_enable here: in this paravirtualised guest the timer interrupt is taken"
      echo "  where the kernel re-enables interrupts, so the kernel's share is right but its split by function is"
      echo "  blurred; the call graphs in perf-*.txt show the callers (context switches, syscall exits)."
    fi
    echo "- Full reports (\`perf report --no-children --stdio --percent-limit 1.5\`, with call graphs): bench/results/profile/perf-*.txt."
    [[ ! -s "$TMP/pgbouncer.top" ]] ||
      echo "- PgBouncer's Debian binary is stripped: its own functions show as addresses (libc, libevent and the kernel resolve)."
    echo "- pgrelay's release build has no frame pointers: call graphs are partial; self time is exact."
  elif ((PERF_OK)); then
    echo "No profile (no proxy ran)."
  else
    echo "No profile: ${NOTES[*]}"
  fi
  notes=()
  for t in "${TGTS[@]}"; do
    [[ "${STATE[$t]:-}" == ok ]] || notes+=("- $(label "$t"): ${STATE[$t]:-not run}")
  done
  for n in "${NOTES[@]}"; do notes+=("- $n"); done
  if ((${#notes[@]})); then
    echo
    echo "Notes:"
    printf '%s\n' "${notes[@]}"
  fi
} >"$TMP/profile.md"
mkdir -p "$RESULTS_DIR"
cp -f "$TMP/profile.md" "$RESULTS_DIR/profile.md"
cat "$TMP/profile.md"
log "written to bench/results/profile.md"
