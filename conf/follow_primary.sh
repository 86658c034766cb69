#!/usr/bin/env bash
# pgrelay follow_primary_command example (doc/failover.md): re-point one standby at the new primary.
#
#   follow_primary_command = "conf/follow_primary.sh %d %h %p %D %m %H %M %P %r %R %N %S";
#
# Arguments as for failover.sh, with %d/%h/%p/%D the standby to re-point and %m/%H/%r/%R the new
# primary; the PGRELAY_* environment variables carry the same values and are preferred.
#
# Steps, each tried only if the one before did not leave the node streaming from the new primary:
#   1. Running standby: ALTER SYSTEM SET primary_conninfo (same application_name, host/port of the
#      new primary) + pg_reload_conf(). PostgreSQL 13+ restarts the WAL receiver on reload, no
#      restart. With recovery_target_timeline = 'latest' it follows the new timeline when its
#      replay has not passed the fork point. Its replication slot is created on the new primary.
#   2. Local data directory, the node stopped cleanly (or a running old primary, which is stopped
#      with -m fast): start it as a standby (standby.signal) of the new primary.
#   3. Timeline diverged: pg_rewind from the new primary (needs wal_log_hints or data checksums on
#      the node, full_page_writes on the new primary; a CHECKPOINT there first), keeping the
#      node's own configuration files, then start as a standby.
#   4. Last resort: a fresh pg_basebackup -R from the new primary (the old contents are removed).
# Each step waits up to FOLLOW_WAIT seconds (default 15) for a streaming row in the new primary's
# pg_stat_replication. Exit 0 when the standby streams from the new primary, 1 otherwise.
# The standby connects with application_name = $PGRELAY_FAILED_APPLICATION_NAME (its
# backends[].application_name), else the one in its current primary_conninfo, else pgrelay_nodeN.
# Environment: PGBIN, FOLLOW_PGUSER (default postgres, also the replication user),
# FOLLOW_CONNECT_TIMEOUT (default 2), FOLLOW_WAIT (default 15). Passwords: PGPASSWORD / ~/.pgpass.
set -u
umask 077
HERE=$(dirname -- "$(readlink -f -- "$0")")
cd / || exit 1 # runuser'd tools must not inherit a folder their user cannot enter


ID=${PGRELAY_FAILED_NODE_ID-${1-}}
HOST=${PGRELAY_FAILED_HOST-${2-}}
PORT=${PGRELAY_FAILED_PORT-${3-}}
DIR=${PGRELAY_FAILED_DATA_DIR-${4-}}
NEW_ID=${PGRELAY_NEW_MAIN_NODE_ID-${5-}}
NEW_HOST=${PGRELAY_NEW_MAIN_HOST-${6-}}
NEW_PORT=${PGRELAY_NEW_MAIN_PORT-${9-}}

PGUSER_=${FOLLOW_PGUSER:-postgres}
CT=${FOLLOW_CONNECT_TIMEOUT:-2}
WAIT=${FOLLOW_WAIT:-15}

SCRIPT=follow_primary.sh
# shellcheck source=conf/failover_lib.sh
. "$HERE/failover_lib.sh" || exit 1

if [[ "$ID" == "$NEW_ID" ]]; then
  log "node $ID is the new primary: nothing to do"
  exit 0
fi
if [[ -z "$NEW_HOST" || -z "$NEW_PORT" ]]; then
  log "no new primary given"
  exit 1
fi
log "node $ID ($HOST:$PORT) follows the new primary $NEW_ID ($NEW_HOST:$NEW_PORT)"

is_local() { [[ -n "$DIR" && -f "$DIR/PG_VERSION" ]]; }
sql_quote() { printf "%s" "$1" | sed "s/'/''/g"; }

# The standby's application_name and slot: from its settings when it answers, else from the files.
APP="" SLOT=""
if [[ "$(q "$HOST" "$PORT" "select 1")" == "1" ]]; then
  conninfo=$(q "$HOST" "$PORT" "show primary_conninfo")
  SLOT=$(q "$HOST" "$PORT" "show primary_slot_name")
  APP=$(sed -n "s/.*application_name=\([^ ']*\).*/\1/p" <<<"$conninfo")
elif is_local; then
  conf=$(cat "$DIR"/postgresql.auto.conf "$DIR"/*.conf 2>/dev/null || true)
  APP=$(sed -n "s/^primary_conninfo.*application_name=\([^ ']*\).*/\1/p" <<<"$conf" | tail -n 1)
  SLOT=$(sed -n "s/^primary_slot_name *= *'\([^']*\)'.*/\1/p" <<<"$conf" | tail -n 1)
fi
# pgrelay finds a standby in pg_stat_replication by its backends[].application_name: use it.
APP=${PGRELAY_FAILED_APPLICATION_NAME:-${APP:-pgrelay_node$ID}}
CONNINFO="host=$NEW_HOST port=$NEW_PORT user=$PGUSER_ application_name=$APP"
log "application_name '$APP', slot '${SLOT:-none}'"

if [[ -n "$SLOT" ]]; then
  q "$NEW_HOST" "$NEW_PORT" "select pg_create_physical_replication_slot('$(sql_quote "$SLOT")') where not exists (select 1 from pg_replication_slots where slot_name = '$(sql_quote "$SLOT")')" >/dev/null ||
    log "could not create slot $SLOT on the new primary"
fi

streaming() {
  local deadline=$((SECONDS + WAIT))
  while ((SECONDS < deadline)); do
    [[ "$(q "$NEW_HOST" "$NEW_PORT" "select count(*) from pg_stat_replication where application_name = '$(sql_quote "$APP")' and state = 'streaming'")" -ge 1 ]] 2>/dev/null && return 0
    sleep 0.3
  done
  return 1
}

write_standby_conf() {
  as_owner "$DIR" touch "$DIR/standby.signal" &&
    as_owner "$DIR" sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' "$DIR/postgresql.auto.conf" &&
    {
      echo "primary_conninfo = '$(sql_quote "$CONNINFO")'"
      [[ -n "$SLOT" ]] && echo "primary_slot_name = '$(sql_quote "$SLOT")'"
      true
    } | as_owner "$DIR" tee -a "$DIR/postgresql.auto.conf" >/dev/null
}
pgctl() { as_owner "$DIR" timeout 60 "$PGBIN/pg_ctl" -D "$DIR" "$@" >&2; }
start_standby() {
  write_standby_conf && pgctl -l "$DIR.follow.log" -w -t 30 start && streaming
}

# 1. A running standby: point it at the new primary and reload.
if [[ "$(q "$HOST" "$PORT" "select pg_is_in_recovery()")" == "t" ]]; then
  q "$HOST" "$PORT" "alter system set primary_conninfo = '$(sql_quote "$CONNINFO")'" >/dev/null &&
    q "$HOST" "$PORT" "select pg_reload_conf()" >/dev/null
  if streaming; then
    log "node $ID streams from node $NEW_ID"
    echo "node $ID follows node $NEW_ID (reload)"
    exit 0
  fi
  log "node $ID does not stream from the new primary after a reload (timeline diverged?)"
fi

if ! is_local; then
  log "data directory '$DIR' is not local: cannot rewind or re-clone here"
  exit 1
fi

# 2. Stopped cleanly (or a running old primary, stopped now): start it as a standby.
pgctl -m fast -w -t 30 stop 2>/dev/null || true
if pgctl status >/dev/null 2>&1; then
  log "node $ID is still running; giving up"
  exit 1
fi
state=$(as_owner "$DIR" "$PGBIN/pg_controldata" "$DIR" 2>/dev/null | sed -n 's/^Database cluster state: *//p')
if [[ "$state" == "shut down" || "$state" == "shut down in recovery" ]]; then
  log "node $ID was shut down cleanly: starting it as a standby"
  if start_standby; then
    echo "node $ID follows node $NEW_ID (restart)"
    exit 0
  fi
  pgctl -m fast -w -t 30 stop 2>/dev/null || true
fi

# 3. pg_rewind. A freshly promoted primary shows its new timeline in its control file only after
# a checkpoint (else pg_rewind sees "the same timeline" and rewinds nothing). pg_rewind copies the
# new primary's configuration files: the node's own (port, ...) are put back.
log "pg_rewind of node $ID from node $NEW_ID"
q "$NEW_HOST" "$NEW_PORT" "checkpoint" >/dev/null || log "checkpoint on node $NEW_ID failed (continuing)"
keep=$(mktemp -d) || exit 1
cp -p "$DIR"/*.conf "$keep"/ 2>/dev/null
if as_owner "$DIR" timeout 300 "$PGBIN/pg_rewind" --target-pgdata="$DIR" \
  --source-server="host=$NEW_HOST port=$NEW_PORT user=$PGUSER_ dbname=postgres" >&2 &&
  cp -p "$keep"/*.conf "$DIR"/ && start_standby; then
  rm -rf "$keep"
  echo "node $ID follows node $NEW_ID (pg_rewind)"
  exit 0
fi
rm -rf "$keep"
pgctl -m fast -w -t 30 stop 2>/dev/null || true

# 4. pg_basebackup.
log "pg_basebackup of node $ID from node $NEW_ID (replaces its data directory)"
keep=$(mktemp -d) || exit 1
cp -p "$DIR"/postgresql.conf "$DIR"/pg_hba.conf "$DIR"/pg_ident.conf "$keep"/ 2>/dev/null
cp -p "$DIR"/*.conf "$keep"/ 2>/dev/null
find "$DIR" -mindepth 1 -delete
if as_owner "$DIR" timeout 600 "$PGBIN/pg_basebackup" -D "$DIR" -X stream -c fast \
  -d "host=$NEW_HOST port=$NEW_PORT user=$PGUSER_ application_name=$APP" >&2; then
  for f in "$keep"/*.conf; do
    [[ "$(basename "$f")" == postgresql.auto.conf ]] && continue
    cp -p "$f" "$DIR"/
  done
  rm -rf "$keep"
  if start_standby; then
    echo "node $ID follows node $NEW_ID (pg_basebackup)"
    exit 0
  fi
fi
rm -rf "$keep"
log "node $ID could not be made to follow node $NEW_ID"
exit 1
