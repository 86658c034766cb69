#!/usr/bin/env bash
# pgrelay recovery_remote_start_command example (doc/failover.md "Recovery"): start the recovered
# node's PostgreSQL, for PGRELAY RECOVER NODE n after conf/recovery_1st_stage.sh.
#
#   recovery_remote_start_command = "conf/remote_start.sh %d %h %p %D %m %H %M %P %r %R %N %S";
#
# Arguments as for recovery_1st_stage.sh (1 %d the node, 2 %h its host, 3 %p its port, 4 %D its
# data directory; the rest unused); the PGRELAY_* environment variables are preferred. Runs
# `pg_ctl start -w` on the node's machine (locally, or over ssh: conf/recovery_lib.sh) as the data
# directory's owner, then waits until the node accepts connections. A node already running is
# left alone. Server log: REMOTE_START_LOG (default DIR.log when its folder is writable, else
# DIR/pg_ctl_start.log). Exit 0 when the node accepts connections within REMOTE_START_WAIT
# seconds (default 60, at most what is left of recovery_timeout).
# Environment: PGBIN, REMOTE_START_LOG, REMOTE_START_WAIT, the ssh settings of recovery_lib.sh.
# shellcheck disable=SC2016 # the snippets run on the node, expanded there
set -u
umask 077
HERE=$(dirname -- "$(readlink -f -- "$0")")
cd / || exit 1 # runuser'd tools must not inherit a folder their user cannot enter

SCRIPT=remote_start.sh
# shellcheck source=conf/recovery_lib.sh
. "$HERE/recovery_lib.sh" || exit 1

WAIT=${REMOTE_START_WAIT:-60}
if [[ -n "${PGRELAY_RECOVERY_TIMEOUT_MS:-}" ]] && ((PGRELAY_RECOVERY_TIMEOUT_MS / 1000 < WAIT)); then
  WAIT=$((PGRELAY_RECOVERY_TIMEOUT_MS / 1000))
  ((WAIT >= 1)) || WAIT=1
fi

START='
dir=$1 bin=$2 log=$3 wait=$4
if "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then echo "already running"; exit 0; fi
if [ -z "$log" ]; then
  log="$dir.log"
  touch "$log" 2>/dev/null || log="$dir/pg_ctl_start.log"
fi
end=$(( $(date +%s) + wait ))
while :; do
  "$bin/pg_ctl" -D "$dir" -l "$log" -w -t "$wait" start >&2 && exit 0
  # A postmaster killed with -9 leaves children holding its shared memory a moment.
  [ "$(date +%s)" -lt "$end" ] || break
  sleep 1
done
tail -n 5 "$log" >&2
exit 1'
log "starting node $ID ($HOST:$PORT, $DIR)"
if ! on_node sh -c "$START" _ "$DIR" "$NODE_PGBIN" "${REMOTE_START_LOG:-}" "$WAIT" >&2; then
  log "node $ID did not start"
  exit 1
fi
deadline=$((SECONDS + WAIT))
until [[ "$(q "$HOST" "$PORT" "select 1")" == "1" ]]; do
  if ((SECONDS >= deadline)); then
    log "node $ID ($HOST:$PORT) does not accept connections after ${WAIT}s"
    exit 1
  fi
  sleep 0.3
done
echo "node $ID started ($HOST:$PORT, in recovery: $(q "$HOST" "$PORT" "select pg_is_in_recovery()"))"
exit 0
