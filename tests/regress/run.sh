#!/usr/bin/env bash
# PostgreSQL 15's regression suite (parallel_schedule) through pgrelay, with load balancing on over a
# primary and two streaming standbys, in session and in transaction pool mode, and directly against the
# primary (which proves the suite can pass and fail on its own). doc/testing.md explains it.
#
#   bash tests/regress/run.sh [BUILD_DIR] [MODE...]
#     BUILD_DIR  folder with the pgrelay binary (default build-test; $PGRELAY_BIN overrides the binary)
#     MODE       direct, session, transaction (default: all three, in that order)
#
# Environment:
#   PGRELAY_REGRESS_CACHE     source cache (default /var/cache/pgrelay-regress), see tests/regress/fetch.sh
#   PGRELAY_REGRESS_OUT       results (default /tmp/pgrelay-regress-results): MODE/pg_regress.log,
#                             MODE/regression.diffs, MODE/results/, MODE/pgrelay.log; replaced at every run
#   PGRELAY_REGRESS_MAX_CONN  pg_regress --max-connections (default 6: 2 cores)
#   PGRELAY_REGRESS_TIMEOUT   seconds one mode may take before pg_regress is killed (default 1500)
#   PGRELAY_REGRESS_WEIGHTS   backend weights "w0 w1 w2" (default "1 1 1": reads on all three nodes)
#   PGRELAY_REGRESS_TESTS     run only these tests (space-separated; test_setup is prepended), not the schedule
#   PGRELAY_REGRESS_SCHEDULE  a schedule file of your own instead of the suite's parallel_schedule
#   PGRELAY_REGRESS_LOG_ALL=1 log_statement = all on every node (MODE/nodeN.log show which node ran what)
#   PGRELAY_KEEP_TMP=1        keep the clusters' folder (data directories)
#
# Prints `regress MODE: N passed, M failed (names)` per mode (also into $PGRELAY_REGRESS_OUT/summary.txt).
# A failure that tests/regress/expected_failures_MODE.txt does not list (lines `name # reason`) makes the
# whole mode run once more on a fresh cluster; exit status 1 when such a test fails in both runs (one
# that passes the second time is named as flaky), or when pgrelay exits badly or reports a sanitizer
# error; 2 on a setup error.
set -uo pipefail
umask 022
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO" || exit 2

BUILD_DIR=build-test
if (($#)) && [[ "$1" != direct && "$1" != session && "$1" != transaction ]]; then
  BUILD_DIR=$1
  shift
fi
MODES=("$@")
((${#MODES[@]})) || MODES=(direct session transaction)
for m in "${MODES[@]}"; do
  case "$m" in direct | session | transaction) ;; *)
    echo "run.sh: unknown mode '$m' (direct, session, transaction)" >&2
    exit 2
    ;;
  esac
done

PGVER=15
PGBIN=/usr/lib/postgresql/$PGVER/bin
export PGBIN
OUT=${PGRELAY_REGRESS_OUT:-/tmp/pgrelay-regress-results}
MAX_CONN=${PGRELAY_REGRESS_MAX_CONN:-6}
MODE_TIMEOUT=${PGRELAY_REGRESS_TIMEOUT:-1500}
read -r -a WEIGHTS <<<"${PGRELAY_REGRESS_WEIGHTS:-1 1 1}"
RELAY_BIN=${PGRELAY_BIN:-$BUILD_DIR/pgrelay}
[[ "$RELAY_BIN" = /* ]] || RELAY_BIN=$REPO/$RELAY_BIN

log() { echo "regress: $*"; }
die() {
  echo "regress: error: $*" >&2
  exit 2
}

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get for the suite; PostgreSQL runs as the postgres user)"
needs_relay=0
for m in "${MODES[@]}"; do [[ $m == direct ]] || needs_relay=1; done
if ((needs_relay)) && [[ ! -x "$RELAY_BIN" ]]; then
  die "pgrelay binary $RELAY_BIN not found (build it: meson setup $BUILD_DIR && ninja -C $BUILD_DIR)"
fi

# 1. The suite, from Debian's source package (cached).
SRC=$(bash "$HERE/fetch.sh") || die "fetching the suite failed (tests/regress/fetch.sh)"
R=$SRC/src/test/regress
PG_REGRESS=$R/pg_regress.bin
[[ -x "$PG_REGRESS" && -f "$R/regress.so" ]] || die "suite in $SRC is incomplete"
if [[ -n "${PGRELAY_REGRESS_TESTS:-}" ]]; then
  # A subset, run one after the other after test_setup (which creates the tables most tests read).
  read -r -a ALL_TESTS <<<"$PGRELAY_REGRESS_TESTS"
  [[ ${ALL_TESTS[0]} == test_setup ]] || ALL_TESTS=(test_setup "${ALL_TESTS[@]}")
  SCHEDULE_ARGS=("${ALL_TESTS[@]}")
else
  SCHEDULE=${PGRELAY_REGRESS_SCHEDULE:-$R/parallel_schedule}
  [[ "$SCHEDULE" = /* ]] || SCHEDULE=$REPO/$SCHEDULE
  mapfile -t ALL_TESTS < <(sed -n 's/^test:[[:space:]]*//p' "$SCHEDULE" | tr -s ' \t' '\n' | sed '/^$/d')
  SCHEDULE_ARGS=(--schedule="$SCHEDULE")
fi
log "suite: $SRC (${#ALL_TESTS[@]} tests), pgrelay: $RELAY_BIN"

# 2. Work folders. Results are kept in $OUT; the clusters live in a temporary folder.
rm -rf -- "$OUT"
mkdir -p -- "$OUT"
chown postgres: -- "$OUT"
WORK=$(mktemp -d /tmp/pgrelay-regress.XXXXXX)
chmod 755 -- "$WORK"
CLUSTER=""
RELAY_PID=""

stop_relay() {
  [[ -n "$RELAY_PID" ]] || return 0
  if kill -0 "$RELAY_PID" 2>/dev/null; then
    kill -TERM "$RELAY_PID" 2>/dev/null
    for _ in $(seq 1 100); do
      kill -0 "$RELAY_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$RELAY_PID" 2>/dev/null; then
      echo "regress: pgrelay (pid $RELAY_PID) did not exit within 10 s of SIGTERM; killing it" >&2
      kill -KILL "$RELAY_PID" 2>/dev/null
    fi
  fi
  wait "$RELAY_PID" 2>/dev/null
  RELAY_RC=$?
  RELAY_PID=""
}
stop_cluster() {
  [[ -n "$CLUSTER" ]] || return 0
  bash scripts/cluster.sh stop "$CLUSTER" >/dev/null 2>&1 || true
  cp -f -- "$CLUSTER"/node?.log "$OUT/$(basename "$CLUSTER")/" 2>/dev/null || true
  CLUSTER=""
}
# shellcheck disable=SC2317  # run from the EXIT trap
cleanup() {
  stop_relay
  stop_cluster
  if [[ -z "${PGRELAY_KEEP_TMP:-}" ]]; then rm -rf -- "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Four consecutive free loopback ports (three nodes + pgrelay), probed like conftest.py does.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_ports() {
  local base i ok
  for _ in $(seq 1 200); do
    # Below Linux's ephemeral range (32768+): a port some client socket holds cannot be bound.
    base=$((21000 + RANDOM % 9000))
    ok=1
    for i in 0 1 2 3; do port_free $((base + i)) || ok=0; done
    if ((ok)); then
      echo "$base"
      return 0
    fi
  done
  return 1
}

psql_direct() { # PORT DB SQL...
  local port=$1 db=$2
  shift 2
  PGPASSWORD=postgres PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# The database pg_regress would create (pg_regress.c create_database), made on the primary: through
# pgrelay pg_regress runs with --use-existing.
create_regression_db() {
  local p=$1
  psql_direct "$p" postgres -c 'DROP DATABASE IF EXISTS regression' \
    -c 'CREATE DATABASE regression TEMPLATE=template0' \
    -c "ALTER DATABASE regression SET lc_messages TO 'C'; ALTER DATABASE regression SET lc_monetary TO 'C';
        ALTER DATABASE regression SET lc_numeric TO 'C'; ALTER DATABASE regression SET lc_time TO 'C';
        ALTER DATABASE regression SET bytea_output TO 'hex';
        ALTER DATABASE regression SET timezone_abbreviations TO 'Default';" >/dev/null
}

# Wait until both standbys replayed the primary's current WAL position.
wait_replayed() {
  local base=$1 lsn n deadline=$((SECONDS + 60))
  lsn=$(psql_direct "$base" postgres -c 'select pg_current_wal_lsn()') || return 1
  for n in 1 2; do
    until [[ $(psql_direct $((base + n)) postgres -c "select pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null) == t ]]; do
      ((SECONDS < deadline)) || return 1
      sleep 0.2
    done
  done
}

start_relay() { # MODE BASEPORT DIR
  local mode=$1 base=$2 dir=$3 rport=$(($2 + 3)) i w
  mkdir -p -- "$dir"
  {
    echo "# written by tests/regress/run.sh ($mode mode)"
    echo "listen_addresses = \"127.0.0.1\";"
    echo "port = $rport;"
    echo "authentication_timeout = \"30s\";"
    echo "shutdown_timeout = \"5s\";"
    echo "backends = ("
    for i in 0 1 2; do
      w=${WEIGHTS[$i]:-1}
      [[ $w == *.* ]] || w=$w.0
      echo "  { host = \"127.0.0.1\"; port = $((base + i)); weight = $w;" \
        "data_directory = \"$CLUSTER/node$i\"; application_name = \"node$i\"; }$( ((i < 2)) && echo ,)"
    done
    echo ");"
    echo "auth = { users_file = \"users.txt\"; hba_file = \"hba.conf\"; };"
    echo "logging = { level = \"log\"; };"
    # Session mode runs with pgpool-II's connection_cache = false: PostgreSQL's suite expects every
    # \c to start a new backend (loaded libraries, the temp schema and per-backend statistics
    # survive any reset). Transaction mode shares backends by design (doc/testing.md).
    if [[ $mode == session ]]; then
      echo "pool = { mode = \"$mode\"; pool_size = 20; connection_cache = false; };"
    else
      echo "pool = { mode = \"$mode\"; pool_size = 20; };"
    fi
    echo "health_check = { period = \"1s\"; timeout = \"2s\"; max_retries = 2; retry_delay = \"500ms\";"
    echo "  user = \"postgres\"; password = \"postgres\"; database = \"postgres\"; };"
    echo "load_balance = { enabled = true; };"
  } >"$dir/pgrelay.conf"
  # Clients are trusted (pg_regress's psql has no password); pgrelay logs into the nodes as postgres.
  echo "postgres:postgres" >"$dir/users.txt"
  echo "host all all 127.0.0.1/32 trust" >"$dir/hba.conf"
  (cd "$dir" && exec "$RELAY_BIN" -f pgrelay.conf) >"$dir/pgrelay.log" 2>&1 &
  RELAY_PID=$!
  local deadline=$((SECONDS + 20)) up
  while :; do
    kill -0 "$RELAY_PID" 2>/dev/null || {
      tail -n 20 "$dir/pgrelay.log" >&2
      return 1
    }
    up=$("$PGBIN/psql" -X -At -h 127.0.0.1 -p "$rport" -U postgres -d postgres -c 'show pool_nodes' 2>/dev/null |
      awk -F'|' '$4 == "up" && ($7 == "primary" || $7 == "standby")' | wc -l)
    ((up == 3)) && return 0
    if ((SECONDS >= deadline)); then
      echo "regress: pgrelay on port $rport does not show 3 nodes up after 20 s" >&2
      tail -n 20 "$dir/pgrelay.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

# Names listed in an exclusion file (first word of each non-comment line).
excluded() { [[ -f "$1" ]] && sed -e 's/#.*//' "$1" | awk 'NF {print $1}'; }

declare -A SUMMARY
overall=0

suite_once() { # MODE RESULTS_DIR: runs the suite once; sets RUN_FAILED (names), RUN_SECS, RUN_BAD
  local mode=$1 mdir=$2 base port rc t0
  mkdir -p -- "$mdir"
  chown postgres: -- "$mdir"
  local attempt
  for attempt in 1 2; do
    base=$(pick_ports) || die "no four free consecutive ports found"
    CLUSTER=$WORK/$(basename "$mdir")
    rm -rf -- "$CLUSTER"
    log "[$mode] cluster: primary 127.0.0.1:$base, standbys :$((base + 1)) :$((base + 2))"
    if ! bash scripts/cluster.sh start "$CLUSTER" "$base" >"$mdir/cluster.log" 2>&1; then
      cat "$mdir/cluster.log" >&2
      bash scripts/cluster.sh stop "$CLUSTER" >/dev/null 2>&1 || true
      ((attempt == 1)) || die "[$mode] scripts/cluster.sh start failed"
      log "[$mode] cluster did not start (a port taken meanwhile?); again on other ports"
      continue
    fi
    if [[ -n "${PGRELAY_REGRESS_LOG_ALL:-}" ]]; then
      for i in 0 1 2; do
        psql_direct $((base + i)) postgres -c "ALTER SYSTEM SET log_statement = 'all'" -c 'SELECT pg_reload_conf()' >/dev/null
      done
    fi
    create_regression_db "$base" || die "[$mode] creating database regression on the primary failed"
    wait_replayed "$base" && break
    # Seen when a standby's WAL was recycled before it first connected to its slot (the slots of
    # scripts/cluster.sh do not reserve WAL before that): a fresh cluster, once.
    grep -h "has already been removed" "$CLUSTER"/node?.log | tail -n 1 >&2
    stop_cluster
    ((attempt == 1)) || die "[$mode] standbys did not replay the new database within 60 s (see $mdir/node*.log)"
    log "[$mode] standbys do not stream; creating the cluster again"
  done
  port=$base
  if [[ $mode != direct ]]; then
    port=$((base + 3))
    start_relay "$mode" "$base" "$mdir" || die "[$mode] pgrelay did not start"
    log "[$mode] pgrelay pid $RELAY_PID on 127.0.0.1:$port, pool.mode=$mode, load balancing on, weights ${WEIGHTS[*]}"
  fi

  t0=$SECONDS
  # As postgres: the suite's server-side COPY writes into the output folder, and tests run as superuser.
  timeout -k 10 "$MODE_TIMEOUT" runuser -u postgres -- env PGPASSWORD=postgres \
    "$PG_REGRESS" --use-existing --dbname=regression --host=127.0.0.1 --port="$port" --user=postgres \
    --bindir="$PGBIN" --inputdir="$R" --outputdir="$mdir" --dlpath="$R" \
    --max-connections="$MAX_CONN" "${SCHEDULE_ARGS[@]}" >"$mdir/pg_regress.log" 2>&1
  rc=$?
  RUN_SECS=$((SECONDS - t0))
  ((rc == 124 || rc == 137)) && echo "regress: [$mode] pg_regress killed after ${MODE_TIMEOUT}s" >>"$mdir/pg_regress.log"

  if [[ $mode != direct ]]; then
    stop_relay
  fi
  stop_cluster

  RUN_BAD=0
  if [[ $mode != direct ]] && ((RELAY_RC != 0)); then
    echo "regress $mode: pgrelay exited with status $RELAY_RC (see $mdir/pgrelay.log)"
    RUN_BAD=1
  fi
  if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$mdir/pgrelay.log" 2>/dev/null; then
    echo "regress $mode: sanitizer report in $mdir/pgrelay.log"
    RUN_BAD=1
  fi
  # Results: every test of the schedule is either reported "ok" or counts as failed.
  local -A status=()
  local name st t
  while read -r name st; do status[$name]=$st; done < <(sed -nE \
    's/^(test +| +)?([A-Za-z0-9_.]+) +\.\.\. +(ok|FAILED|failed).*/\2 \3/p' "$mdir/pg_regress.log")
  RUN_FAILED=()
  for t in "${ALL_TESTS[@]}"; do
    [[ ${status[$t]:-} == ok ]] || RUN_FAILED+=("$t")
  done
  return 0
}

# Failures not in the exclusion list, among the names given.
unlisted() { # MODE NAME...
  local mode=$1 allowed t
  shift
  allowed=" $(excluded "$HERE/expected_failures_$mode.txt" | tr '\n' ' ') "
  for t in "$@"; do [[ $allowed == *" $t "* ]] || echo "$t"; done
}

# Runs a mode's suite; a failure that the exclusion list does not name gets the whole suite run a
# second time (fresh cluster and pgrelay): only a test that fails in both runs fails the mode.
# One that fails once is reported as flaky, by name, with both runs' diffs kept.
run_mode() {
  local mode=$1 t
  suite_once "$mode" "$OUT/$mode"
  local bad=$RUN_BAD secs=$RUN_SECS failed=("${RUN_FAILED[@]}") unexpected=() flaky=()
  mapfile -t unexpected < <(unlisted "$mode" "${failed[@]}")
  if ((${#unexpected[@]})) && [[ $mode != direct ]]; then
    echo "regress $mode: not in expected_failures_$mode.txt: ${unexpected[*]}; running the suite again"
    suite_once "$mode" "$OUT/$mode-again"
    bad=$((bad | RUN_BAD))
    local again=" ${RUN_FAILED[*]} " still=()
    for t in "${unexpected[@]}"; do
      if [[ $again == *" $t "* ]]; then still+=("$t"); else flaky+=("$t"); fi
    done
    unexpected=("${still[@]}")
  fi

  local line="regress $mode: $((${#ALL_TESTS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  if ((${#failed[@]} > 30)); then
    line+=" (${failed[*]:0:30} ...)"
  elif ((${#failed[@]})); then
    line+=" (${failed[*]})"
  fi
  line+=" [${secs}s]"
  ((${#flaky[@]})) && line+="; unlisted but passed when run again (flaky): ${flaky[*]}"
  if ((${#unexpected[@]})); then
    line+="; FAILED twice, not in expected_failures_$mode.txt: ${unexpected[*]} (diffs: $OUT/$mode/regression.diffs)"
    overall=1
  fi
  ((bad)) && line+="; pgrelay exited badly or reported a sanitizer error" && overall=1
  SUMMARY[$mode]=$line
  echo "$line"
  local allowed fixed=()
  allowed=$(excluded "$HERE/expected_failures_$mode.txt" | tr '\n' ' ')
  for t in $allowed; do [[ " ${failed[*]} " == *" $t "* ]] || fixed+=("$t"); done
  ((${#fixed[@]})) && echo "regress $mode: listed in expected_failures_$mode.txt but passed: ${fixed[*]}"
  return 0
}

for m in "${MODES[@]}"; do run_mode "$m"; done

echo
echo "=== PostgreSQL $PGVER regression suite ($(basename "$SRC")), results in $OUT ==="
for m in "${MODES[@]}"; do echo "${SUMMARY[$m]}"; done | tee "$OUT/summary.txt"
exit $overall
