#!/usr/bin/env bash
# A local PostgreSQL cluster for pgrelay's demo and tests: one primary and two streaming standbys.
#
#   scripts/cluster.sh start  DIR BASEPORT   create (once) and start; primary on BASEPORT,
#                                            standbys node1/node2 on BASEPORT+1 and BASEPORT+2
#   scripts/cluster.sh stop   DIR [BASEPORT] stop all nodes (pg_ctl -m fast)
#   scripts/cluster.sh status DIR [BASEPORT] print each node's state; exit 0 only if all run
#
# Layout: DIR/node0 (primary), DIR/node1, DIR/node2 (standbys), DIR/sock (unix sockets),
# DIR/nodeN.log (server logs). Roles on the primary (replicated to the standbys):
#   postgres  password 'postgres' (superuser)      app      password 'app' (SCRAM), owns database app
#   md5user   password 'md5pw' stored as md5       trustuser no password, trusted from 127.0.0.1
# When run as root every PostgreSQL binary runs as the 'postgres' user, so DIR must be reachable by it.
# Environment: PG_MAX_CONNECTIONS (default 200) sets max_connections on every node; like the ports it
# is rewritten at every start (a standby needs at least the primary's value: restart all nodes).
# PG_EXTRA_SETTINGS: extra postgresql.conf lines ("name = value", newline-separated) written with
# the ports at every start, e.g. "wal_log_hints = on" for pg_rewind (the recovery tests).
set -euo pipefail
umask 022

usage() {
  echo "usage: $0 start|stop|status DIR BASEPORT" >&2
  exit 2
}

(($# >= 2)) || usage
CMD=$1
DIR=$2
BASEPORT=${3:-}
case "$CMD" in
  start) [[ -n "$BASEPORT" ]] || usage ;;
  stop | status) ;;
  *) usage ;;
esac
if [[ -n "$BASEPORT" ]] && ! [[ "$BASEPORT" =~ ^[0-9]+$ ]]; then
  echo "cluster.sh: BASEPORT must be a number, got '$BASEPORT'" >&2
  exit 2
fi

PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-200}
if ! [[ "$PG_MAX_CONNECTIONS" =~ ^[1-9][0-9]*$ ]]; then
  echo "cluster.sh: PG_MAX_CONNECTIONS must be a positive number, got '$PG_MAX_CONNECTIONS'" >&2
  exit 2
fi

DIR=$(realpath -m -- "$DIR")
NODES=(0 1 2)
READY_DEADLINE=${PGRELAY_CLUSTER_DEADLINE:-30}

# PostgreSQL server binaries: $PGBIN, else the newest /usr/lib/postgresql/*/bin.
if [[ -z "${PGBIN:-}" ]]; then
  PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
if [[ -z "${PGBIN:-}" || ! -x "$PGBIN/initdb" ]]; then
  echo "cluster.sh: PostgreSQL server binaries not found (set PGBIN or run scripts/deps.sh)" >&2
  exit 1
fi

if [[ $(id -u) -eq 0 ]]; then
  AS_PG=(runuser -u postgres --)
else
  AS_PG=()
fi
pg() { "${AS_PG[@]}" "$PGBIN/$1" "${@:2}"; }

log() { echo "cluster.sh: $*"; }
die() {
  echo "cluster.sh: error: $*" >&2
  exit 1
}

node_dir() { echo "$DIR/node$1"; }
node_log() { echo "$DIR/node$1.log"; }
node_port() { echo $((BASEPORT + $1)); }

# The port a node was last configured with (for stop/status without BASEPORT).
saved_baseport() {
  [[ -f "$DIR/baseport" ]] && cat "$DIR/baseport"
}

is_running() {
  [[ -f "$(node_dir "$1")/PG_VERSION" ]] || return 1
  pg pg_ctl -D "$(node_dir "$1")" status >/dev/null 2>&1
}

check_reachable() {
  # Under root, the postgres user must be able to traverse every parent of DIR.
  ((${#AS_PG[@]})) || return 0
  local existing=$DIR
  while [[ ! -e "$existing" ]]; do existing=$(dirname -- "$existing"); done
  if ! "${AS_PG[@]}" test -x "$existing" 2>/dev/null; then
    die "the 'postgres' user cannot reach '$existing' (needed for '$DIR'); choose a DIR under a folder it can traverse, e.g. /tmp or /var/tmp"
  fi
  if [[ -e "$DIR" ]] && ! "${AS_PG[@]}" test -x "$DIR" 2>/dev/null; then
    die "the 'postgres' user cannot reach '$DIR'; choose another DIR, e.g. under /tmp or /var/tmp"
  fi
}

prepare_dir() {
  check_reachable
  mkdir -p -- "$DIR"
  chmod 755 -- "$DIR"
  if ((${#AS_PG[@]})); then
    chown postgres: -- "$DIR"
  fi
  "${AS_PG[@]}" mkdir -p -- "$DIR/sock"
  "${AS_PG[@]}" test -w "$DIR" || die "the 'postgres' user cannot write to '$DIR'; choose another DIR"
}

# Per-node settings that depend on the ports (and PG_MAX_CONNECTIONS); rewritten at every start so
# BASEPORT may change.
write_node_conf() {
  local n=$1 d
  d=$(node_dir "$n")
  {
    echo "# written by scripts/cluster.sh at every start"
    echo "port = $(node_port "$n")"
    echo "max_connections = $PG_MAX_CONNECTIONS"
    if ((n > 0)); then
      echo "primary_conninfo = 'host=127.0.0.1 port=$(node_port 0) user=postgres application_name=node$n'"
      echo "primary_slot_name = 'node$n'"
    fi
    if [[ -n "${PG_EXTRA_SETTINGS:-}" ]]; then
      printf '%s\n' "$PG_EXTRA_SETTINGS"
    fi
  } | "${AS_PG[@]}" tee "$d/pgrelay_node.conf" >/dev/null
  # pg_basebackup -R put primary_conninfo into postgresql.auto.conf, which would override ours.
  if [[ -f "$d/postgresql.auto.conf" ]]; then
    "${AS_PG[@]}" sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' "$d/postgresql.auto.conf"
  fi
}

wait_ready() {
  local n=$1 port deadline
  port=$(node_port "$n")
  deadline=$((SECONDS + READY_DEADLINE))
  until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; do
    if ((SECONDS >= deadline)); then
      tail -n 30 "$(node_log "$n")" >&2 || true
      die "node$n (port $port) did not accept connections within ${READY_DEADLINE}s; see $(node_log "$n")"
    fi
    sleep 0.2
  done
}

start_node() {
  local n=$1
  if is_running "$n"; then
    log "node$n already running"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$(node_port "$n")") 2>/dev/null; then
      die "port $(node_port "$n") (node$n) is already in use by another program; choose another BASEPORT"
    fi
    write_node_conf "$n"
    pg pg_ctl -D "$(node_dir "$n")" -l "$(node_log "$n")" -w -t "$READY_DEADLINE" start >/dev/null ||
      {
        tail -n 30 "$(node_log "$n")" >&2 || true
        die "node$n failed to start; see $(node_log "$n")"
      }
  fi
  wait_ready "$n"
  log "node$n ready on 127.0.0.1:$(node_port "$n") (data $(node_dir "$n"))"
}

psql_primary() {
  "${AS_PG[@]}" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/sock" -p "$(node_port 0)" -U postgres -d postgres "$@"
}

create_primary() {
  local d
  d=$(node_dir 0)
  log "initdb $d"
  pg initdb -D "$d" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    die "initdb failed"
  }
  "${AS_PG[@]}" tee -a "$d/postgresql.conf" >/dev/null <<EOF

# --- pgrelay test cluster (scripts/cluster.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
max_connections = 200
wal_level = replica
hot_standby = on
max_wal_senders = 10
max_replication_slots = 10
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 64MB
log_line_prefix = '%m [%p] %q%u@%d '
include_if_exists = 'pgrelay_node.conf'
EOF
  "${AS_PG[@]}" tee "$d/pg_hba.conf" >/dev/null <<EOF
# written by scripts/cluster.sh
# TYPE  DATABASE     USER       ADDRESS        METHOD
local   all          all                       trust
local   replication  all                       trust
host    replication  postgres   127.0.0.1/32   trust
host    all          trustuser  127.0.0.1/32   trust
host    all          md5user    127.0.0.1/32   md5
host    all          all        127.0.0.1/32   scram-sha-256
host    all          all        ::1/128        scram-sha-256
EOF
  write_node_conf 0
}

create_roles() {
  log "creating roles and database on the primary"
  psql_primary -o /dev/null <<'EOF'
SET password_encryption = 'scram-sha-256';
ALTER ROLE postgres PASSWORD 'postgres';
CREATE ROLE app LOGIN PASSWORD 'app';
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pw';
RESET password_encryption;
CREATE ROLE trustuser LOGIN;
CREATE DATABASE app OWNER app;
SELECT pg_create_physical_replication_slot('node1', true);
SELECT pg_create_physical_replication_slot('node2', true);
EOF
  psql_primary -d app -c "GRANT ALL ON SCHEMA public TO PUBLIC;"
}

create_standby() {
  local n=$1 d
  d=$(node_dir "$n")
  log "pg_basebackup node$n"
  pg pg_basebackup -D "$d" -R -X stream -c fast -h 127.0.0.1 -p "$(node_port 0)" -U postgres \
    -d "application_name=node$n" >"$DIR/basebackup$n.log" 2>&1 || {
    cat "$DIR/basebackup$n.log" >&2
    die "pg_basebackup for node$n failed"
  }
  "${AS_PG[@]}" chmod 700 "$d"
  write_node_conf "$n"
}

cmd_start() {
  prepare_dir
  if [[ ! -f "$DIR/initialized" ]]; then
    # A previous creation did not finish: stop what it started and start over.
    for n in "${NODES[@]}"; do
      if is_running "$n"; then pg pg_ctl -D "$(node_dir "$n")" -m immediate -w stop >/dev/null || true; fi
    done
    rm -rf -- "$DIR/node0" "$DIR/node1" "$DIR/node2"
    create_primary
    start_node 0
    create_roles
    create_standby 1
    create_standby 2
    echo "$BASEPORT" | "${AS_PG[@]}" tee "$DIR/baseport" >/dev/null
    "${AS_PG[@]}" touch "$DIR/initialized"
    NODES=(1 2)
  else
    echo "$BASEPORT" | "${AS_PG[@]}" tee "$DIR/baseport" >/dev/null
  fi
  for n in "${NODES[@]}"; do start_node "$n"; done
  NODES=(0 1 2)
  log "cluster up: primary 127.0.0.1:$(node_port 0), standbys :$(node_port 1) :$(node_port 2)"
}

cmd_stop() {
  [[ -d "$DIR" ]] || {
    log "no cluster in $DIR"
    return 0
  }
  local rc=0
  # Standbys first, then the primary.
  for n in 2 1 0; do
    if is_running "$n"; then
      pg pg_ctl -D "$(node_dir "$n")" -m fast -w -t "$READY_DEADLINE" stop >/dev/null || {
        echo "cluster.sh: node$n did not stop in time; sending immediate shutdown" >&2
        pg pg_ctl -D "$(node_dir "$n")" -m immediate -w stop >/dev/null || rc=1
      }
      log "node$n stopped"
    fi
  done
  return $rc
}

cmd_status() {
  [[ -n "$BASEPORT" ]] || BASEPORT=$(saved_baseport || true)
  local rc=0 state
  for n in "${NODES[@]}"; do
    if is_running "$n"; then
      state=running
      if [[ -n "$BASEPORT" ]] && ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$(node_port "$n")" -t 2; then
        state="running, not accepting connections"
        rc=3
      fi
    else
      state=stopped
      rc=3
    fi
    echo "node$n ${BASEPORT:+port $(node_port "$n") }$state ($(node_dir "$n"))"
  done
  return $rc
}

case "$CMD" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
esac
