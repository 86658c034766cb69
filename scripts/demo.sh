#!/usr/bin/env bash
# Try pgrelay in one command: installs the dependencies, builds, starts a local primary and two
# streaming standbys (kept between runs), writes demo/pgrelay.conf and runs pgrelay in the foreground.
#   bash scripts/demo.sh          start (Ctrl-C stops pgrelay; the cluster keeps running)
#   bash scripts/demo.sh stop     stop the demo cluster
#   bash scripts/demo.sh status   show the demo cluster's state
# Environment: PGRELAY_DEMO_BASEPORT (default 5432: primary, +1 and +2 standbys), PGRELAY_DEMO_PORT (9999).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=$ROOT/demo
BASEPORT=${PGRELAY_DEMO_BASEPORT:-5432}
PORT=${PGRELAY_DEMO_PORT:-9999}
FALLBACK_DIR=/var/tmp/pgrelay-demo

say() { echo "demo.sh: $*"; }

cluster_dir() {
  # Where the cluster lives: remembered from the first run, else demo/cluster if the postgres user
  # can reach the checkout, else /var/tmp/pgrelay-demo.
  if [[ -f "$DEMO/cluster-dir" ]]; then
    cat "$DEMO/cluster-dir"
    return
  fi
  if [[ $(id -u) -ne 0 ]] || runuser -u postgres -- test -x "$ROOT" 2>/dev/null; then
    echo "$DEMO/cluster"
  else
    echo "$FALLBACK_DIR"
  fi
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

case "${1:-start}" in
  stop)
    [[ -f "$DEMO/cluster-dir" ]] || {
      say "no demo cluster"
      exit 0
    }
    exec bash scripts/cluster.sh stop "$(cat "$DEMO/cluster-dir")"
    ;;
  status)
    [[ -f "$DEMO/cluster-dir" ]] || {
      say "no demo cluster"
      exit 3
    }
    exec bash scripts/cluster.sh status "$(cat "$DEMO/cluster-dir")"
    ;;
  start) ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac

bash scripts/deps.sh

if [[ ! -f build/build.ninja ]]; then
  rm -rf build
  meson setup build
fi
ninja -C build

mkdir -p "$DEMO"
CLUSTER=$(cluster_dir)
if [[ "$CLUSTER" == "$FALLBACK_DIR" ]]; then
  say "the postgres user cannot reach $ROOT, so the cluster lives in $FALLBACK_DIR instead of demo/cluster"
fi

if ! bash scripts/cluster.sh status "$CLUSTER" >/dev/null 2>&1; then
  for p in "$BASEPORT" $((BASEPORT + 1)) $((BASEPORT + 2)); do
    if port_in_use "$p"; then
      echo "demo.sh: port $p is already in use; choose other ports, e.g. PGRELAY_DEMO_BASEPORT=15432 bash scripts/demo.sh" >&2
      exit 1
    fi
  done
fi
if port_in_use "$PORT"; then
  echo "demo.sh: port $PORT is already in use (another pgrelay?); set PGRELAY_DEMO_PORT" >&2
  exit 1
fi

# pg_rewind (online recovery of the old primary) needs wal_log_hints on the nodes and
# full_page_writes on the primary; cluster.sh writes these at every start.
PG_EXTRA_SETTINGS=$'wal_log_hints = on\nfull_page_writes = on' bash scripts/cluster.sh start "$CLUSTER" "$BASEPORT"
echo "$CLUSTER" >"$DEMO/cluster-dir"

cat >"$DEMO/users.txt" <<EOF2
app:app
postgres:postgres
md5user:md5pw
EOF2
chmod 600 "$DEMO/users.txt"

cat >"$DEMO/pgrelay.conf" <<EOF2
# Written by scripts/demo.sh; regenerated at every run.
listen_addresses = "127.0.0.1";
port = $PORT;
authentication_timeout = "10s";
shutdown_timeout = "10s";

backends = (
  { host = "127.0.0.1"; port = $BASEPORT; weight = 1.0; data_directory = "$CLUSTER/node0"; application_name = "node0"; },
  { host = "127.0.0.1"; port = $((BASEPORT + 1)); weight = 1.0; data_directory = "$CLUSTER/node1"; application_name = "node1"; },
  { host = "127.0.0.1"; port = $((BASEPORT + 2)); weight = 1.0; data_directory = "$CLUSTER/node2"; application_name = "node2"; }
);

# Role-pinned ports beside the splitting one: every statement to the primary / sessions to a standby.
listeners = ( { port = $((PORT + 1)); role = "primary"; }, { port = $((PORT + 2)); role = "standby"; } );

auth = { users_file = "users.txt"; };

logging = { level = "log"; };

health_check = { period = "1s"; timeout = "2s"; max_retries = 1; retry_delay = "500ms";
                 user = "postgres"; password = "postgres"; database = "postgres"; };

failover_command = "$ROOT/conf/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S";
follow_primary_command = "$ROOT/conf/follow_primary.sh %d %h %p %D %m %H %M %P %r %R %N %S";

# Online recovery: PGRELAY RECOVER NODE n brings a down node back as a standby of the primary.
recovery_1st_stage_command = "$ROOT/conf/recovery_1st_stage.sh %d %h %p %D %m %H %M %P %r %R %N %S";
recovery_remote_start_command = "$ROOT/conf/remote_start.sh %d %h %p %D %m %H %M %P %r %R %N %S";
recovery_timeout = "5min";
EOF2

cat <<EOF2

pgrelay listens on 127.0.0.1:$PORT in front of
  primary 127.0.0.1:$BASEPORT, standbys 127.0.0.1:$((BASEPORT + 1)) and 127.0.0.1:$((BASEPORT + 2))  (data in $CLUSTER)
Try, in another terminal (password: app):
  psql -h 127.0.0.1 -p $PORT -U app app
  PGPASSWORD=app pgbench -h 127.0.0.1 -p $PORT -U app -i app
  PGPASSWORD=app pgbench -h 127.0.0.1 -p $PORT -U app -S -c 8 -j 2 -T 10 app
  PGPASSWORD=app psql -h 127.0.0.1 -p $PORT -U app app -c 'SHOW pool_nodes'
  PGPASSWORD=app psql -h 127.0.0.1 -p $PORT -U app app -c "PGRELAY EXPLAIN ROUTE select nextval('s')"
  PGPASSWORD=app psql -h 127.0.0.1 -p $((PORT + 1)) -U app app -c 'select inet_server_port()'   # primary port
  PGPASSWORD=app psql -h 127.0.0.1 -p $((PORT + 2)) -U app app -c 'select inet_server_port()'   # standby port
Failover: kill -9 the primary's postmaster and watch the log; then look at the history:
  kill -9 \$(head -1 $CLUSTER/node0/postmaster.pid)
  PGPASSWORD=postgres psql -h 127.0.0.1 -p $PORT -U postgres app -c 'SHOW pool_failover_history'
Bring the old primary back as a standby of the new primary (online recovery: pg_rewind, else
pg_basebackup, then pg_ctl start; it returns at once, the recovery runs in the background):
  PGPASSWORD=postgres psql -h 127.0.0.1 -p $PORT -U postgres app -c 'PGRELAY RECOVER NODE 0'
  PGPASSWORD=postgres psql -h 127.0.0.1 -p $PORT -U postgres app -c 'SHOW pool_recovery'   # until stage = done
  PGPASSWORD=postgres psql -h 127.0.0.1 -p $PORT -U postgres app -c 'SHOW pool_nodes'      # node 0: up, standby
The scripts read passwords from PGPASSWORD/~/.pgpass.
Other users: postgres/postgres, md5user/md5pw. Config: demo/pgrelay.conf.
Ctrl-C stops pgrelay; run this again to restart it; 'bash scripts/demo.sh stop' stops the cluster.

EOF2

# The failover scripts connect to the nodes as postgres with libpq's usual password sources.
export PGPASSWORD=postgres
exec build/pgrelay -f "$DEMO/pgrelay.conf"
