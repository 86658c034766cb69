#!/usr/bin/env bash
# Online recovery times: how long PGRELAY RECOVER NODE n takes to bring the old primary back as an
# up standby after a kill -9 and a failover, with pg_rewind and with pg_basebackup, on a
# `pgbench -i -s 10` data set (about 160 MB). RUNS (default 5) recoveries per method; prints the
# median and the worst of SHOW pool_recovery's elapsed_ms (accepted -> up as a standby), and of the
# first stage alone (the recovery_1st_stage event's duration_ms).
#
#   PGRELAY_BIN=build-dev/pgrelay bash bench/recovery_time.sh [RUNS]
#
# Each run: kill -9 of the current primary (pgrelay fails over with conf/failover.sh, the other
# standby follows with conf/follow_primary.sh), a few seconds of pgbench writes on the new primary,
# then PGRELAY RECOVER NODE <old primary> with conf/recovery_1st_stage.sh forced to one method
# (RECOVERY_METHOD) and conf/remote_start.sh. The cluster comes from scripts/cluster.sh with
# wal_log_hints and full_page_writes on (what pg_rewind needs) on free ports in a temporary folder
# removed at the end (an EXIT trap stops everything this script started).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${1:-5}
BIN=${PGRELAY_BIN:-build/pgrelay}
[[ -x "$BIN" ]] || {
  echo "recovery_time.sh: $BIN not found (build pgrelay or set PGRELAY_BIN)" >&2
  exit 2
}
BIN=$(readlink -f "$BIN")
PGBIN=${PGBIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
export PGBIN PGPASSWORD=postgres

# Four free ports below the kernel's ephemeral range (32768+): a port there may be taken by some
# client's outgoing connection while a killed node is down, and the node could not restart.
BASE=""
for _ in $(seq 50); do
  b=$((20000 + RANDOM % 12000))
  ok=1
  for p in $b $((b + 1)) $((b + 2)) $((b + 3)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ok=0
  done
  ((ok)) && BASE=$b && break
done
[[ -n "$BASE" ]] || { echo "no free ports" >&2; exit 1; }
PORT=$((BASE + 3))

TMP=$(mktemp -d /tmp/pgrelay-recbench-XXXXXX)
chmod 755 "$TMP"
CL=$TMP/cluster
RELAY_PID=""
cleanup() {
  [[ -n "$RELAY_PID" ]] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
  for n in 2 1 0; do
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$CL/node$n" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

say() { echo "recovery_time.sh: $*" >&2; }
AS_PG=()
[[ $(id -u) -eq 0 ]] && AS_PG=(runuser -u postgres --)

PG_EXTRA_SETTINGS=$'wal_log_hints = on\nfull_page_writes = on' bash scripts/cluster.sh start "$CL" "$BASE" >&2
say "pgbench -i -s 10"
"${AS_PG[@]}" "$PGBIN/pgbench" -h 127.0.0.1 -p "$BASE" -U postgres -i -s 10 -q app >/dev/null 2>&1

psql_r() { "$PGBIN/psql" -X -A -t -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "$1"; }
start_relay() { # METHOD
  cat >"$TMP/pgrelay.conf" <<EOF
listen_addresses = "127.0.0.1";
port = $PORT;
backends = (
  { host = "127.0.0.1"; port = $BASE; data_directory = "$CL/node0"; application_name = "node0"; },
  { host = "127.0.0.1"; port = $((BASE + 1)); data_directory = "$CL/node1"; application_name = "node1"; },
  { host = "127.0.0.1"; port = $((BASE + 2)); data_directory = "$CL/node2"; application_name = "node2"; }
);
auth = { users_file = "users.txt"; };
logging = { level = "log"; };
health_check = { period = "1s"; timeout = "2s"; max_retries = 1; retry_delay = "500ms";
                 user = "postgres"; password = "postgres"; database = "postgres"; };
failover_command = "$ROOT/conf/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S";
follow_primary_command = "$ROOT/conf/follow_primary.sh %d %h %p %D %m %H %M %P %r %R %N %S";
recovery_1st_stage_command = "RECOVERY_METHOD=$1 $ROOT/conf/recovery_1st_stage.sh %d %h %p %D %m %H %M %P %r %R %N %S";
recovery_remote_start_command = "$ROOT/conf/remote_start.sh %d %h %p %D %m %H %M %P %r %R %N %S";
recovery_timeout = "10min";
EOF
  printf 'postgres:postgres\n' >"$TMP/users.txt"
  "$BIN" -f "$TMP/pgrelay.conf" >>"$TMP/pgrelay-$1.log" 2>&1 &
  RELAY_PID=$!
  wait_for 30 all_up
}
stop_relay() {
  kill "$RELAY_PID" || true
  wait "$RELAY_PID" 2>/dev/null || true
  RELAY_PID=""
}
wait_for() { # SECONDS PREDICATE
  local end=$((SECONDS + $1))
  until "$2" 2>/dev/null; do
    ((SECONDS < end)) || { say "timed out waiting for $2"; tail -n 30 "$TMP"/pgrelay-*.log >&2; exit 1; }
    sleep 0.2
  done
}
all_up() {
  [[ $(psql_r "show pool_nodes" | awk -F'|' '$4 == "up"' | wc -l) == 3 ]] &&
    [[ $(psql_r "show pool_nodes" | awk -F'|' '$7 == "primary"' | wc -l) == 1 ]]; }
primary() { psql_r "show pool_nodes" | awk -F'|' '$7 == "primary" && $4 == "up" { print $1 }'; }
old_down_new_primary() { [[ -n "$(primary)" && "$(primary)" != "$OLD" ]] &&
  [[ $(psql_r "show pool_nodes" | awk -F'|' '$4 == "up" && $12 == "streaming"' | wc -l) -ge 1 ]]; }
recovery_over() { STAGE=$(psql_r "show pool_recovery" | awk -F'|' '{ print $2 }'); [[ "$STAGE" == "done" || "$STAGE" == "failed" ]]; }
recover_accepted() { psql_r "PGRELAY RECOVER NODE $OLD" >/dev/null 2>&1; }

median_worst() { sort -n | awk '{ a[NR] = $1 } END { m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%d %d\n", m, a[NR] }'; }

declare -A TOTAL FIRST
for method in rewind basebackup; do
  start_relay "$method"
  totals=() firsts=()
  for i in $(seq "$RUNS"); do
    OLD=$(primary)
    pid=$(head -1 "$CL/node$OLD/postmaster.pid")
    kill -9 "$pid"
    wait_for 60 old_down_new_primary
    NEW=$(primary)
    "${AS_PG[@]}" "$PGBIN/pgbench" -h 127.0.0.1 -p $((BASE + NEW)) -U postgres -T 3 -c 2 app >/dev/null 2>&1 || true
    wait_for 30 recover_accepted
    wait_for 600 recovery_over
    if [[ "$STAGE" != "done" ]]; then
      say "run $i ($method): recovery failed: $(psql_r 'show pool_recovery')"
      grep -v DEBUG "$TMP/pgrelay-$method.log" | tail -n 40 >&2
      tail -n 20 "$CL/node$OLD.log" >&2 || true
      exit 1
    fi
    total=$(psql_r "show pool_recovery" | awk -F'|' '{ print $4 }')
    first=$(psql_r "show pool_failover_history" | awk -F'|' -v n="$OLD" '$2 == "recovery_1st_stage" && $3 == n { d = $6; how = $7 } END { print d "|" how }')
    wait_for 60 all_up
    say "$method run $i: node $OLD from node $NEW: ${total} ms (1st stage ${first%%|*} ms: ${first#*|})"
    totals+=("$total")
    firsts+=("${first%%|*}")
  done
  stop_relay
  TOTAL[$method]=$(printf '%s\n' "${totals[@]}" | median_worst)
  FIRST[$method]=$(printf '%s\n' "${firsts[@]}" | median_worst)
done

echo
echo "Online recovery of the old primary after kill -9 (pgbench -i -s 10, $RUNS runs per method)"
echo
echo "| method | recovery median (ms) | recovery worst (ms) | 1st stage median (ms) | 1st stage worst (ms) |"
echo "|---|---|---|---|---|"
for method in rewind basebackup; do
  read -r tm tw <<<"${TOTAL[$method]}"
  read -r fm fw <<<"${FIRST[$method]}"
  name=pg_rewind
  [[ $method == basebackup ]] && name=pg_basebackup
  echo "| $name | $tm | $tw | $fm | $fw |"
done
