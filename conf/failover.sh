#!/usr/bin/env bash
# pgrelay failover_command example (doc/failover.md): promote the most advanced live standby.
#
#   failover_command = "conf/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S";
#
# Arguments (pgpool-II's letters): 1 %d failed node id, 2 %h its host, 3 %p its port, 4 %D its data
# directory, 5 %m new main node id, 6 %H new main host, 7 %M old main node id, 8 %P old primary node
# id, 9 %r new main port, 10 %R new main data directory, 11 %N old primary host, 12 %S old primary
# port. pgrelay also passes every value as a PGRELAY_* environment variable, which this script
# prefers (an empty value would shift the positional arguments), plus PGRELAY_LIVE_STANDBYS
# ("id,host,port,datadir" of each live standby, space-separated) and PGRELAY_FAILOVER_REASON
# (health_check, operator_detach or switchover).
#
# What it does:
#   1. If the failed node was not the primary: nothing (a standby's loss needs no promotion).
#   2. A switchover or an operator's detach: if the old primary still answers and its data
#      directory is local, stop it (-m fast) first, so the standbys receive all of its WAL and it
#      cannot take writes any more. (After failed health checks it is not touched: it may be
#      frozen, and waiting for it would only delay the promotion.)
#   3. Re-read every live standby's pg_last_wal_receive_lsn() / pg_last_wal_replay_lsn() and pick the
#      most advanced (pgrelay's choice %m when none answers).
#   4. Promote it: `pg_ctl promote -w` when its data directory is local, else `SELECT pg_promote()`.
#   5. Exit 0 only if the chosen node answers pg_is_in_recovery() = false.
# Connections use libpq's usual password sources (PGPASSWORD, PGPASSFILE, ~/.pgpass) as
# FAILOVER_PGUSER (default postgres); health_check.password is never handed to scripts. As root,
# pg_ctl runs as the owner of the data directory (runuser); otherwise as the current user.
# Environment: PGBIN (PostgreSQL server binaries; default: the newest /usr/lib/postgresql/*/bin),
# FAILOVER_PGUSER, FAILOVER_PGDATABASE (default postgres), FAILOVER_CONNECT_TIMEOUT (seconds,
# default 2), FAILOVER_PROMOTE_TIMEOUT (seconds, default 60).
set -u
umask 077
HERE=$(dirname -- "$(readlink -f -- "$0")")
cd / || exit 1 # runuser'd tools must not inherit a folder their user cannot enter


FAILED_ID=${PGRELAY_FAILED_NODE_ID-${1-}}
FAILED_HOST=${PGRELAY_FAILED_HOST-${2-}}
FAILED_PORT=${PGRELAY_FAILED_PORT-${3-}}
FAILED_DIR=${PGRELAY_FAILED_DATA_DIR-${4-}}
NEW_ID=${PGRELAY_NEW_MAIN_NODE_ID-${5-}}
NEW_HOST=${PGRELAY_NEW_MAIN_HOST-${6-}}
OLD_PRIMARY_ID=${PGRELAY_OLD_PRIMARY_NODE_ID-${8-}}
NEW_PORT=${PGRELAY_NEW_MAIN_PORT-${9-}}
NEW_DIR=${PGRELAY_NEW_MAIN_DATA_DIR-${10-}}
STANDBYS=${PGRELAY_LIVE_STANDBYS-}
REASON=${PGRELAY_FAILOVER_REASON:-health_check}

PGUSER_=${FAILOVER_PGUSER:-postgres}
PGDB_=${FAILOVER_PGDATABASE:-postgres}
CT=${FAILOVER_CONNECT_TIMEOUT:-2}
PROMOTE_TIMEOUT=${FAILOVER_PROMOTE_TIMEOUT:-60}

SCRIPT=failover.sh
# shellcheck source=conf/failover_lib.sh
. "$HERE/failover_lib.sh" || exit 1

log "failed node $FAILED_ID ($FAILED_HOST:$FAILED_PORT), old primary $OLD_PRIMARY_ID, proposed new main $NEW_ID ($NEW_HOST:$NEW_PORT)"

if [[ "$FAILED_ID" != "$OLD_PRIMARY_ID" ]]; then
  log "node $FAILED_ID was not the primary: nothing to promote"
  exit 0
fi

is_local_datadir() { [[ -n "$1" && -f "$1/PG_VERSION" ]]; }

# LSN text X/Y -> decimal (bash arithmetic is 64-bit).
lsn_num() {
  local hi=${1%/*} lo=${1#*/}
  [[ "$1" == */* && "$hi" =~ ^[0-9A-Fa-f]+$ && "$lo" =~ ^[0-9A-Fa-f]+$ ]] || {
    echo -1
    return
  }
  echo $(((16#$hi << 32) | 16#$lo))
}

# 2. A still running old primary (switchover, operator detach) is stopped cleanly first.
if [[ "$REASON" != "health_check" && -n "$FAILED_HOST" ]] && is_local_datadir "$FAILED_DIR" &&
  [[ "$(q "$FAILED_HOST" "$FAILED_PORT" "select pg_is_in_recovery()")" == "f" ]]; then
  log "old primary $FAILED_ID still answers: stopping it (-m fast) before the promotion"
  as_owner "$FAILED_DIR" timeout 30 "$PGBIN/pg_ctl" -D "$FAILED_DIR" -m fast -w -t 25 stop >&2 ||
    log "could not stop the old primary (continuing)"
fi

# 3. The most advanced live standby (receive LSN, then replay LSN).
best_id=$NEW_ID best_host=$NEW_HOST best_port=$NEW_PORT best_dir=$NEW_DIR
best_recv=-1 best_replay=-1
if [[ -z "$STANDBYS" && -n "$NEW_HOST" ]]; then
  STANDBYS="$NEW_ID,$NEW_HOST,$NEW_PORT,$NEW_DIR"
fi
if [[ "$REASON" == "switchover" ]]; then
  STANDBYS="$NEW_ID,$NEW_HOST,$NEW_PORT,$NEW_DIR" # the operator chose the node: promote it
fi
for s in $STANDBYS; do
  IFS=, read -r id host port dir <<<"$s"
  row=$(q "$host" "$port" "select pg_is_in_recovery(), coalesce(pg_last_wal_receive_lsn()::text, ''), coalesce(pg_last_wal_replay_lsn()::text, '')") || {
    log "standby $id ($host:$port) does not answer: skipped"
    continue
  }
  IFS='|' read -r rec recv replay <<<"$row"
  if [[ "$rec" != "t" ]]; then
    log "node $id ($host:$port) is not in recovery: skipped"
    continue
  fi
  r=$(lsn_num "${recv:-0/0}") p=$(lsn_num "${replay:-0/0}")
  log "standby $id ($host:$port): receive $recv, replay $replay"
  # Ties go to pgrelay's choice, %m.
  if ((r > best_recv || (r == best_recv && p > best_replay) ||
    (r == best_recv && p == best_replay && id == NEW_ID))); then
    best_id=$id best_host=$host best_port=$port best_dir=$dir best_recv=$r best_replay=$p
  fi
done
if [[ -z "$best_host" || "$best_id" == "-1" ]]; then
  log "no standby to promote"
  exit 1
fi
[[ "$best_id" != "$NEW_ID" ]] && log "node $best_id is more advanced than the proposed node $NEW_ID"

# 4. Promote.
log "promoting node $best_id ($best_host:$best_port)"
if is_local_datadir "$best_dir"; then
  as_owner "$best_dir" timeout $((PROMOTE_TIMEOUT + 5)) "$PGBIN/pg_ctl" -D "$best_dir" -w \
    -t "$PROMOTE_TIMEOUT" promote >&2 || log "pg_ctl promote failed"
else
  q "$best_host" "$best_port" "select pg_promote(true, $PROMOTE_TIMEOUT)" >/dev/null ||
    log "pg_promote() failed"
fi

# 5. Verify.
if [[ "$(q "$best_host" "$best_port" "select pg_is_in_recovery()")" == "f" ]]; then
  log "node $best_id is the new primary"
  echo "promoted node $best_id"
  exit 0
fi
log "node $best_id is still in recovery after the promotion"
exit 1
