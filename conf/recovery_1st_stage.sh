#!/usr/bin/env bash
# pgrelay recovery_1st_stage_command example (doc/failover.md "Recovery"): make a down node a
# standby of the current primary, for PGRELAY RECOVER NODE n.
#
#   recovery_1st_stage_command = "conf/recovery_1st_stage.sh %d %h %p %D %m %H %M %P %r %R %N %S";
#
# Arguments in the failover command's order: 1 %d the node to recover, 2 %h its host, 3 %p its
# port, 4 %D its data directory, 5 %m the current primary's id, 6 %H its host, 9 %r its port,
# 10 %R its data directory (7, 8, 11, 12 unused). The PGRELAY_* environment variables carry the
# same values and are preferred.
#
# Steps (each on the node's machine: locally, or over ssh; see conf/recovery_lib.sh):
#   1. The node must not run: a running one (a former primary started again) is stopped
#      (-m fast, then -m immediate).
#   2. pg_rewind from the primary, after a CHECKPOINT there (a newly promoted primary's control
#      file shows its new timeline only after one). Needs wal_log_hints = on or data checksums on
#      the node and full_page_writes = on on the primary; after a kill -9 pg_rewind runs the
#      node's crash recovery itself. pg_rewind copies the primary's configuration files: the
#      node's own *.conf files are put back afterwards.
#   3. If pg_rewind fails (no wal_log_hints/checksums, a missing WAL segment, no data directory):
#      a fresh pg_basebackup -R -X stream from the primary. The old data directory is moved to
#      DIR.recovery-old during the copy (put back if the copy fails, removed if it succeeds);
#      the node's own configuration files are kept (postgresql.auto.conf comes from -R).
#   4. standby.signal and, in postgresql.auto.conf, primary_conninfo (host/port of the primary,
#      application_name = the node's backends[].application_name so that pgrelay finds it in
#      pg_stat_replication) and primary_slot_name. The slot (the node's primary_slot_name, else
#      its application_name made a slot name; RECOVERY_SLOT=none for none) is created on the
#      primary before the copy, reserving WAL at once: the standby then finds every segment it
#      needs there. Drop it (pg_drop_replication_slot) when the node is retired for good.
# The node is not started here: recovery_remote_start_command (conf/remote_start.sh) does it.
# Exit 0 when the data directory is a standby's; the last output line says which way.
# Environment: PGBIN, RECOVERY_PGUSER (default postgres; also the replication user),
# RECOVERY_METHOD (auto | rewind | basebackup; default auto), RECOVERY_SLOT (the node's
# replication slot; default: its primary_slot_name, else its application_name; none: no slot),
# RECOVERY_CONNECT_TIMEOUT (default 2), RECOVERY_BASEBACKUP_TIMEOUT (seconds, default 3600),
# and the ssh settings of conf/recovery_lib.sh. Passwords: PGPASSWORD / ~/.pgpass.
# shellcheck disable=SC2016 # the snippets run on the node, expanded there
set -u
umask 077
HERE=$(dirname -- "$(readlink -f -- "$0")")
cd / || exit 1 # runuser'd tools must not inherit a folder their user cannot enter

SCRIPT=recovery_1st_stage.sh
# shellcheck source=conf/recovery_lib.sh
. "$HERE/recovery_lib.sh" || exit 1

METHOD=${RECOVERY_METHOD:-auto}
BB_TIMEOUT=${RECOVERY_BASEBACKUP_TIMEOUT:-3600}

if [[ -z "$P_HOST" || -z "$P_PORT" ]]; then
  log "no current primary given (%H %r)"
  exit 1
fi
if [[ "$ID" == "$P_ID" ]]; then
  log "node $ID is the primary: nothing to recover"
  exit 1
fi
where=local
[[ $REMOTE == 1 ]] && where="ssh $SSH_USER@$HOST"
log "node $ID ($HOST:$PORT, $DIR, $where) becomes a standby of node $P_ID ($P_HOST:$P_PORT); application_name '$APP'"
if [[ "$(q "$P_HOST" "$P_PORT" "select pg_is_in_recovery()")" != "f" ]]; then
  log "node $P_ID ($P_HOST:$P_PORT) does not answer as a primary"
  exit 1
fi

SRC="host=$P_HOST port=$P_PORT user=$PGUSER_ dbname=postgres connect_timeout=$CT"
pgctl() { on_node "$NODE_PGBIN/pg_ctl" -D "$DIR" "$@"; }

# 1. Not running.
if pgctl status >/dev/null 2>&1; then
  log "node $ID is running: stopping it (-m fast)"
  pgctl -m fast -w -t 30 stop >&2 || pgctl -m immediate -w -t 30 stop >&2 || true
  if pgctl status >/dev/null 2>&1; then
    log "node $ID is still running; giving up"
    exit 1
  fi
fi

# The node's replication slot on the primary, made before the copy: it keeps every WAL segment
# from now on, so the standby finds on the primary what pg_rewind or pg_basebackup did not copy
# (without it a busy primary may have recycled it by the time the node starts).
sql_quote() { printf "%s" "$1" | sed "s/'/''/g"; }
SLOT=${RECOVERY_SLOT:-$(node_conf_value primary_slot_name)}
if [[ -z "$SLOT" ]]; then
  SLOT=$(printf '%s' "$APP" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9_' '_' | cut -c1-63)
fi
[[ "$SLOT" == none ]] && SLOT=""
if [[ -n "$SLOT" ]]; then
  q "$P_HOST" "$P_PORT" "select pg_create_physical_replication_slot('$(sql_quote "$SLOT")', true) where not exists (select 1 from pg_replication_slots where slot_name = '$(sql_quote "$SLOT")')" >/dev/null ||
    log "could not create slot $SLOT on node $P_ID (continuing without a slot)"
  [[ "$(q "$P_HOST" "$P_PORT" "select count(*) from pg_replication_slots where slot_name = '$(sql_quote "$SLOT")'")" == 1 ]] || SLOT=""
fi

# 2. pg_rewind, keeping the node's own configuration files. A postmaster killed with -9 leaves
# children that hold its shared memory a moment: the crash recovery pg_rewind runs is retried.
REWIND='
dir=$1 bin=$2 src=$3
[ -f "$dir/PG_VERSION" ] || { echo "no data directory in $dir" >&2; exit 1; }
keep=$(mktemp -d) || exit 1
cp -p "$dir"/*.conf "$keep"/ 2>/dev/null
for try in 1 2 3 4 5; do
  out=$("$bin/pg_rewind" --target-pgdata="$dir" --source-server="$src" 2>&1)
  rc=$?
  printf "%s\n" "$out" >&2
  case "$out" in
    *"shared memory"*|*"already running"*|*"lock file"*) sleep 1 ;;
    *) break ;;
  esac
done
[ $rc -eq 0 ] && cp -p "$keep"/*.conf "$dir"/
rm -rf "$keep"
exit $rc'
how=""
if [[ "$METHOD" != basebackup ]]; then
  # A freshly promoted primary's control file shows its new timeline only after a checkpoint:
  # without one pg_rewind may see "the same timeline" and rewind nothing.
  q "$P_HOST" "$P_PORT" "checkpoint" >/dev/null || log "checkpoint on node $P_ID failed (continuing)"
  log "pg_rewind of node $ID from node $P_ID"
  if on_node sh -c "$REWIND" _ "$DIR" "$NODE_PGBIN" "$SRC" >&2; then
    how=pg_rewind
  elif [[ "$METHOD" == rewind ]]; then
    log "pg_rewind failed (RECOVERY_METHOD=rewind: no fallback)"
    exit 1
  else
    log "pg_rewind failed: falling back to pg_basebackup"
  fi
fi

# 3. pg_basebackup into a fresh directory; the old one is kept aside until the copy succeeded.
BASEBACKUP='
dir=$1 bin=$2 conninfo=$3 tmo=$4
old="$dir.recovery-old"
keep=$(mktemp -d) || exit 1
cp -p "$dir"/*.conf "$keep"/ 2>/dev/null
rm -rf "$old"
moved=0
if [ -e "$dir" ]; then
  if mv "$dir" "$old" 2>/dev/null; then moved=1; else find "$dir" -mindepth 1 -delete || exit 1; fi
fi
mkdir -p "$dir" && chmod 700 "$dir" || exit 1
if timeout "$tmo" "$bin/pg_basebackup" -D "$dir" -R -X stream -c fast -d "$conninfo" >&2; then
  for f in "$keep"/*.conf; do
    [ -e "$f" ] || continue
    [ "$(basename "$f")" = postgresql.auto.conf ] && continue
    cp -p "$f" "$dir"/
  done
  rm -rf "$old" "$keep"
  exit 0
fi
echo "pg_basebackup failed" >&2
if [ $moved = 1 ]; then rm -rf "$dir"; mv "$old" "$dir"; fi
rm -rf "$keep"
exit 1'
if [[ -z "$how" ]]; then
  log "pg_basebackup of node $ID from node $P_ID (replaces its data directory)"
  if ! on_node sh -c "$BASEBACKUP" _ "$DIR" "$NODE_PGBIN" \
    "host=$P_HOST port=$P_PORT user=$PGUSER_ application_name=$APP connect_timeout=$CT" \
    "$BB_TIMEOUT" >&2; then
    log "node $ID could not be copied from node $P_ID"
    exit 1
  fi
  how=pg_basebackup
fi

# 4. A standby of the primary: standby.signal, primary_conninfo, primary_slot_name.
CONNINFO="host=$P_HOST port=$P_PORT user=$PGUSER_ application_name=$APP"
STANDBY='
dir=$1 conninfo=$2 slot=$3
touch "$dir/standby.signal" || exit 1
touch "$dir/postgresql.auto.conf" || exit 1
sed -i -e "/^[[:space:]]*primary_conninfo/d" -e "/^[[:space:]]*primary_slot_name/d" "$dir/postgresql.auto.conf" || exit 1
{
  printf "primary_conninfo = '\''%s'\''\n" "$(printf "%s" "$conninfo" | sed "s/'\''/'\'''\''/g")"
  [ -n "$slot" ] && printf "primary_slot_name = '\''%s'\''\n" "$slot"
  true
} >>"$dir/postgresql.auto.conf"'
if ! on_node sh -c "$STANDBY" _ "$DIR" "$CONNINFO" "$SLOT" >&2; then
  log "could not write the standby settings into $DIR"
  exit 1
fi
log "node $ID: standby.signal, primary_conninfo '$CONNINFO'${SLOT:+, slot $SLOT}"
echo "node $ID is a standby of node $P_ID ($how)"
exit 0
