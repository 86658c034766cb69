#!/usr/bin/env bash
# Counts the user-space instructions the event loop of PgBouncer and of pgrelay (load balancing off
# and on) executes per transaction, with valgrind's callgrind. Instruction counts do not depend on what else the machine
# runs, so this settles differences of a fraction of a microsecond that timed runs on a shared
# machine cannot (bench/run.sh, bench/profile.sh). It counts user space only: the kernel's part
# (system calls, wakeups) is what bench/profile.sh measures.
#
#   bench/instructions.sh [--help]
#
# For each workload, pool mode and target, the proxy runs under callgrind. After a warm-up run,
# pgbench runs twice with the same clients and different transaction counts (-t TXN and -t 2*TXN
# per client), the counters zeroed before and dumped after each run; the difference of the two
# totals over the difference of the transactions is the cost of one transaction, with the logins
# and everything else that does not grow with the transactions cancelled out. What the proxy does
# per second regardless of load (timers, statistics, the health view) is measured idle first and
# subtracted in proportion to the longer run's extra duration (valgrind stretches time some 30x,
# which would otherwise inflate it). Clients log in with
# trust (user trustuser): a SCRAM login costs some ten million instructions, and PgBouncer's varies
# with its caches, which would drown the difference.
# Writes bench/results/instructions.md (and prints it).
#
# Environment (all optional):
#   WORKLOADS="select-simple select-extended select-prepared tpcb"
#   MODES="session transaction"
#   TARGETS="pgbouncer pgrelay pgrelay-lb"
#   LB_WEIGHTS="1 1 1"    backend weights of pgrelay-lb (primary first); "1 0 0" keeps every read
#                         on the primary, so LB on - LB off is the routing work alone
#   CLIENTS=8 TXN=200     pgbench clients (-j 2) and transactions per client of the shorter run
#   ROUNDS=3              pairs of runs per cell; the table gives the median (how events batch
#                         per wakeup still moves a count by up to 20 % between pairs)
#   TOP=12                functions listed per pgrelay cell of the first workload (self cost)
#   IDLE_SECS=5           seconds of the idle measurement (see below)
#   BENCH_PGPORT          reuse a scripts/cluster.sh cluster (primary port; standbys on +1, +2)
#   BENCH_PGRELAY_BIN BENCH_BUILD_DIR PGBIN BENCH_KEEP_TMP   as in bench/run.sh
# Needs valgrind, pgbouncer and PostgreSQL (installed with apt-get when missing, as root).
# Exit status: 0 when the report was written, 1 on a setup failure, 2 on usage.
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
    echo "instructions.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac
WORKLOADS=${WORKLOADS:-select-simple select-extended select-prepared tpcb}
MODES=${MODES:-session transaction}
TARGETS=${TARGETS:-pgbouncer pgrelay pgrelay-lb}
LB_WEIGHTS=${LB_WEIGHTS:-1 1 1}
CLIENTS=${CLIENTS:-8}
TXN=${TXN:-200}
TOP=${TOP:-12}
IDLE_SECS=${IDLE_SECS:-5}
ROUNDS=${ROUNDS:-3}
BUILD_DIR=${BENCH_BUILD_DIR:-$REPO/build-bench}
for v in CLIENTS TXN TOP IDLE_SECS ROUNDS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "instructions.sh: $v must be a positive integer" >&2 && exit 2; }
done
for w in $WORKLOADS; do
  [[ " select-simple select-extended select-prepared tpcb " == *" $w "* ]] ||
    { echo "instructions.sh: unknown workload '$w'" >&2 && exit 2; }
done
for t in $TARGETS; do
  [[ " pgbouncer pgrelay pgrelay-lb " == *" $t "* ]] || { echo "instructions.sh: unknown target '$t'" >&2 && exit 2; }
done

log() { printf '%s instructions.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "setup failed: $*"
  exit 1
}
if [[ -z "${PGBIN:-}" ]]; then
  PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=60 PGPASSWORD=app
unset PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS 2>/dev/null || true

TMP="" CLUSTER_DIR="" PROXY_PID=""
PROXY_AS=() # callgrind_control runs as the proxy's user (vgdb cannot reach another user's process)
stop_proxy() {
  [[ -n "$PROXY_PID" ]] || return 0
  kill -INT "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_proxy
  [[ -z "$CLUSTER_DIR" ]] || timeout -k 10 120 bash "$REPO/scripts/cluster.sh" stop "$CLUSTER_DIR" >/dev/null 2>&1
  if [[ -n "$TMP" && -d "$TMP" && -z "${BENCH_KEEP_TMP:-}" ]]; then rm -rf -- "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "failed: line $LINENO: $BASH_COMMAND (status $?)"' ERR
trap 'log "interrupted"; exit 130' INT TERM
TMP=$(mktemp -d /tmp/pgrelay-instr.XXXXXX)
chmod 777 "$TMP"

missing=()
for p in valgrind pgbouncer; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; install them as root"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends "${missing[@]}" \
    >"$TMP/apt.log" 2>&1 || die "apt-get install failed (log: $TMP/apt.log)"
fi
[[ -x "$PGBIN/pgbench" ]] || die "pgbench not found; set PGBIN or run scripts/deps.sh"
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(setpriv --reuid=postgres --regid=postgres --clear-groups --)

if [[ -n "${BENCH_PGRELAY_BIN:-}" ]]; then
  PGRELAY_BIN=$(realpath -- "$BENCH_PGRELAY_BIN")
else
  log "building pgrelay (release) in $BUILD_DIR"
  [[ -f "$BUILD_DIR/build.ninja" ]] ||
    timeout 900 meson setup "$BUILD_DIR" "$REPO" -Dbuildtype=release -Db_lto=true -Dunit_tests=disabled >"$TMP/build.log" 2>&1 ||
    die "meson setup failed (log: $TMP/build.log)"
  timeout 900 ninja -C "$BUILD_DIR" pgrelay >>"$TMP/build.log" 2>&1 || die "build failed (log: $TMP/build.log)"
  PGRELAY_BIN=$BUILD_DIR/pgrelay
fi

if [[ -n "${BENCH_PGPORT:-}" ]]; then
  PRIMARY_PORT=$BENCH_PGPORT
else
  PRIMARY_PORT=$((20000 + RANDOM % 9000))
  CLUSTER_DIR=$TMP/cluster
  log "starting a cluster on ports $PRIMARY_PORT-$((PRIMARY_PORT + 2))"
  PGBIN=$PGBIN timeout -k 10 300 bash "$REPO/scripts/cluster.sh" start "$CLUSTER_DIR" "$PRIMARY_PORT" \
    >"$TMP/cluster.log" 2>&1 || die "scripts/cluster.sh start failed (log: $TMP/cluster.log)"
fi
if ! timeout 20 "$PGBIN/psql" -X -qAt -h 127.0.0.1 -p "$PRIMARY_PORT" -U app -d app \
  -c 'SELECT 1 FROM pgbench_branches LIMIT 1' >/dev/null 2>&1; then
  log "pgbench -i -s 10"
  timeout -k 10 1200 "$PGBIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app >"$TMP/init.log" 2>&1 ||
    die "pgbench -i failed (log: $TMP/init.log)"
fi
timeout 20 "$PGBIN/psql" -X -qAt -h 127.0.0.1 -p "$PRIMARY_PORT" -U app -d app -c 'GRANT SELECT, INSERT, UPDATE
  ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO trustuser' >/dev/null 2>&1 ||
  die "granting the pgbench tables to trustuser failed"

printf 'app:app\npostgres:postgres\n' >"$TMP/users.txt"
printf '"trustuser" ""\n' >"$TMP/userlist.txt"
printf 'host all trustuser 127.0.0.1/32 trust\n' >"$TMP/hba.conf"
# Below the kernel's ephemeral range (32768-60999), so no client connection holds it.
PROXY_PORT=""
for _ in $(seq 300); do
  p=$((20000 + RANDOM % 9000))
  if [[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]]; then
    PROXY_PORT=$p
    break
  fi
done
[[ -n "$PROXY_PORT" ]] || die "no free port found"
# Health checks once an hour: their cost is per second, not per transaction, and the two pgbench
# runs of a cell last different times.
write_pgrelay_conf() { # MODE LB(true|false)
  local i w b="" sep="" weights
  read -r -a weights <<<"$LB_WEIGHTS"
  for i in 0 1 2; do
    w=${weights[$i]:-1}
    [[ "$2" == true ]] || w=1
    b+="$sep{ host = \"127.0.0.1\"; port = $((PRIMARY_PORT + i)); weight = $w; }" sep=", "
  done
  cat >"$TMP/pgrelay.conf" <<EOF
listen_addresses = "127.0.0.1";
port = $PROXY_PORT;
backends = ( $b );
auth = { users_file = "$TMP/users.txt"; hba_file = "$TMP/hba.conf"; };
logging = { level = "warning"; };
pool = { mode = "$1"; pool_size = 40; max_client_conn = 1000; };
health_check = { user = "postgres"; password = "postgres"; database = "postgres"; period = "1h"; timeout = "30s"; };
load_balance = { enabled = $2; };
EOF
}
write_pgbouncer_conf() { # MODE
  cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PROXY_PORT
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = $1
default_pool_size = 40
max_client_conn = 1000
logfile =
pidfile =
log_connections = 0
log_disconnections = 0
EOF
}
start_proxy() { # TARGET MODE
  local cg=(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$TMP/cg.%p")
  case "$1" in
    pgbouncer)
      write_pgbouncer_conf "$2"
      PROXY_AS=("${AS_PG[@]}")
      "${AS_PG[@]}" "${cg[@]}" /usr/sbin/pgbouncer "$TMP/pgbouncer.ini" >"$TMP/proxy.log" 2>&1 &
      ;;
    pgrelay | pgrelay-lb)
      write_pgrelay_conf "$2" "$([[ $1 == pgrelay-lb ]] && echo true || echo false)"
      PROXY_AS=()
      "${cg[@]}" "$PGRELAY_BIN" -f "$TMP/pgrelay.conf" >"$TMP/proxy.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  for _ in $(seq 300); do
    timeout 60 "$PGBIN/psql" -X -qAt -h 127.0.0.1 -p "$PROXY_PORT" -U trustuser -d app -c 'SELECT 1' >/dev/null 2>&1 &&
      return 0
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.3
  done
  die "$1 did not answer (log: $TMP/proxy.log)"
}
pgbench_args() { # WORKLOAD
  case "$1" in
    select-simple) echo "-S -M simple" ;;
    select-extended) echo "-S -M extended" ;;
    select-prepared) echo "-S -M prepared" ;;
    tpcb) echo "-b tpcb-like -M simple" ;;
  esac
}
PART=0
# Runs pgbench with N transactions per client (or, for WORKLOAD idle, sleeps N seconds) between a
# zero and a dump of the counters; sets RES_LOOP to the instructions of the event loop's thread
# (pgrelay's worker, PgBouncer's only thread) and RES_SECS to the seconds between zero and dump.
# pgrelay's other threads (health checks, the cluster state) work per second, not per
# transaction, and so does the loop when it takes in a new cluster view (worker_cluster_async_cb,
# some ten times a second with load balancing on, for the standbys' replay positions): those
# instructions are left out.
counted_run() { # WORKLOAD N
  timeout 60 "${PROXY_AS[@]}" callgrind_control -z "$PROXY_PID" >/dev/null 2>&1 || die "callgrind_control -z failed"
  local t0
  t0=$(date +%s.%N)
  if [[ "$1" == idle ]]; then
    sleep "$2"
  else
    # shellcheck disable=SC2046 # pgbench_args is a list of options
    timeout -k 10 900 "$PGBIN/pgbench" -n $(pgbench_args "$1") -c "$CLIENTS" -j 2 -t "$2" \
      -h 127.0.0.1 -p "$PROXY_PORT" -U trustuser app >"$TMP/pgbench.log" 2>&1 || die "pgbench failed (log: $TMP/pgbench.log)"
    grep -q "actually processed: $((CLIENTS * $2))/" "$TMP/pgbench.log" || die "pgbench lost transactions ($TMP/pgbench.log)"
  fi
  RES_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
  timeout 60 "${PROXY_AS[@]}" callgrind_control -d "$PROXY_PID" >/dev/null 2>&1 || die "callgrind_control -d failed"
  PART=$((PART + 1))
  local f=$TMP/cg.$PROXY_PID.$PART-01 views
  views=$(callgrind_annotate --threshold=100 --inclusive=yes "$f" 2>/dev/null |
    awk '/:worker_cluster_async_cb / && !n++ { gsub(",", "", $1); print $1 }')
  RES_LOOP=$(($(awk '/^summary:/ { print $2 }' "$f") - ${views:-0}))
}
label() {
  case "$1" in
    pgbouncer) echo PgBouncer ;;
    pgrelay) echo "pgrelay LB off" ;;
    pgrelay-lb) echo "pgrelay LB on ($LB_WEIGHTS)" ;;
  esac
}

declare -A LOOP=() SPREAD=()
PROFILES="" IDLE_RATES=""
FIRST_WORKLOAD=${WORKLOADS%% *}
for mode in $MODES; do
  for t in $TARGETS; do
    if [[ $t == pgbouncer && $mode == transaction && " $WORKLOADS " == *" select-prepared "* ]]; then
      log "note: PgBouncer 1.18 refuses prepared statements in transaction mode (no figure)"
    fi
    log "$t, $mode mode: starting under callgrind"
    start_proxy "$t" "$mode"
    PART=0
    counted_run idle "$IDLE_SECS"
    IDLE_LOOP=$(awk -v i="$RES_LOOP" -v s="$RES_SECS" 'BEGIN { printf "%.0f", i / s }')
    log "$t idle: $IDLE_LOOP instructions per second"
    IDLE_RATES+="$(label "$t") [$mode] $IDLE_LOOP/s; "
    for w in $WORKLOADS; do
      [[ ! ($t == pgbouncer && $mode == transaction && $w == select-prepared) ]] || continue
      counted_run "$w" 20 # warm-up: pools filled, statements cached
      per=()
      for ((round = 0; round < ROUNDS; round++)); do
        counted_run "$w" "$TXN"
        l1=$RES_LOOP s1=$RES_SECS
        counted_run "$w" $((2 * TXN))
        l2=$RES_LOOP s2=$RES_SECS
        n=$((CLIENTS * TXN))
        # What the loop does per second whatever the load (timers) leaks into the difference
        # in proportion to the longer run's extra time: subtracted.
        per+=("$(awk -v d=$((l2 - l1)) -v r="$IDLE_LOOP" -v t="$s1" -v u="$s2" -v n=$n \
          'BEGIN { printf "%.0f", (d - r * (u - t)) / n }')")
      done
      LOOP[$w/$mode/$t]=$(printf '%s\n' "${per[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
      SPREAD[$w/$mode/$t]="${per[*]}"
      log "$w $mode $t: ${LOOP[$w/$mode/$t]} instructions per transaction (rounds: ${SPREAD[$w/$mode/$t]})"
      if [[ $w == "$FIRST_WORKLOAD" && $t != pgbouncer ]]; then
        PROFILES+=$'\n'"#### $(label "$t"), $w, $mode mode: top $TOP functions by self cost (the longer run)"$'\n\n```\n'
        PROFILES+=$(callgrind_annotate --threshold=100 "$TMP/cg.$PROXY_PID.$PART-01" 2>/dev/null |
          awk '/^-+$/ { d++; next } d >= 6 && NF && $NF ~ /^\[/' | grep -v -E "\(100\.0%\)" |
          head -n "$TOP" || true)
        PROFILES+=$'\n```\n'
      fi
    done
    stop_proxy
  done
done

BOTH=0
[[ " $TARGETS " != *" pgrelay "* || " $TARGETS " != *" pgrelay-lb "* ]] || BOTH=1
OUT=$REPO/bench/results/instructions.md
mkdir -p "$REPO/bench/results"
{
  echo "# User-space instructions per transaction (callgrind)"
  echo
  echo "$(date -u +%Y-%m-%d), pgrelay $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'),"
  echo "PgBouncer $(/usr/sbin/pgbouncer --version 2>/dev/null | head -n 1 | awk '{ print $NF }'), pgbench -c $CLIENTS -j 2,"
  echo "trust, pool size 40; (instructions of -t $((2 * TXN)) minus those of -t $TXN) / $((CLIENTS * TXN)),"
  echo "median of $ROUNDS such pairs (each cell's rounds are listed under the table)."
  echo "The event loop's thread, user space only (no kernel work); idle rates subtracted:"
  echo "$IDLE_RATES"
  echo
  printf '| workload [mode] |'
  for t in $TARGETS; do printf ' %s |' "$(label "$t")"; done
  ((!BOTH)) || printf ' LB on - LB off |'
  printf '\n|---|'
  for _ in $TARGETS; do printf -- '---:|'; done
  ((!BOTH)) || printf -- '---:|'
  printf '\n'
  for w in $WORKLOADS; do
    for mode in $MODES; do
      printf '| %s [%s] |' "$w" "$mode"
      for t in $TARGETS; do
        k=$w/$mode/$t
        if [[ -n "${LOOP[$k]:-}" ]]; then printf ' %s |' "${LOOP[$k]}"; else printf ' — |'; fi
      done
      if ((BOTH)) && [[ -n "${LOOP[$w/$mode/pgrelay]:-}" && -n "${LOOP[$w/$mode/pgrelay-lb]:-}" ]]; then
        printf ' %+d |' $((${LOOP[$w/$mode/pgrelay-lb]} - ${LOOP[$w/$mode/pgrelay]}))
      elif ((BOTH)); then
        printf ' — |'
      fi
      printf '\n'
    done
  done
  echo
  echo "Rounds per cell:"
  for w in $WORKLOADS; do
    for mode in $MODES; do
      for t in $TARGETS; do
        [[ -z "${SPREAD[$w/$mode/$t]:-}" ]] || echo "- $w [$mode] $(label "$t"): ${SPREAD[$w/$mode/$t]}"
      done
    done
  done
  printf '%s\n' "$PROFILES"
} >"$OUT"
cat "$OUT"
