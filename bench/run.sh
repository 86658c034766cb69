#!/usr/bin/env bash
# pgrelay benchmark harness: pgbench against PostgreSQL directly, through pgrelay (load balancing
# off, and on over the cluster's 3 nodes) and through PgBouncer (and optionally pgpool-II), in
# ROUNDS interleaved rounds per workload, with the proxies' CPU per transaction; cells are the
# medians of the rounds. See bench/README.md for the columns and the caveats.
#
#   bench/run.sh [--with-pgpool] [--help]
#
# Environment (all optional):
#   DURATION=10              seconds per pgbench run
#   ROUNDS=3                 rounds per (workload, mode); each round runs every target once, the
#                            order pgbouncer pgrelay pgrelay-lb [pgpool] direct rotated by one per
#                            round (round 2 starts with the second target); cells show medians
#   LB_WEIGHTS="1 1 1"       backend weights of the pgrelay-lb target (primary first); "1 0 0"
#                            keeps every read on the primary: the routing work without the standbys
#   BENCH_TARGETS="..."      subset of: pgbouncer pgrelay pgrelay-lb direct (default: all four;
#                            --with-pgpool adds pgpool). pgrelay = load balancing off, pgrelay-lb =
#                            load balancing on over every node (select-* and tpcb rows only)
#   SCALE=10                 pgbench -i scale factor
#   MODES="session transaction"   pool modes to try; a mode pgrelay rejects is skipped for pgrelay
#   POOL_SIZE=40             pool size of every proxy (pgrelay pool_size, PgBouncer default_pool_size,
#                            pgpool-II num_init_children); must be >= 32 or session-mode clients queue
#   MANY_CLIENTS=1000        clients of the many-clients rows (transaction mode only)
#   MANY_POOL_SIZE=20        pool size of the proxies of the many-clients rows and of idle-memory
#   MANY_CONNECT_S=40        seconds added to -T of the many-clients runs for pgbench's connection phase
#   IDLE_CLIENTS=1000        idle logged-in clients opened by idle-memory
#   PG_MAX_CONNECTIONS=1200  max_connections of our own cluster (direct many-clients needs > MANY_CLIENTS)
#   WORKLOADS="..."          subset of: select-simple select-extended select-prepared tpcb
#                            connect-scram connect-trust many-clients many-clients-prepared idle-memory
#                            (default: all of these; the many-clients runs go first, idle-memory comes
#                            last), and the opt-in TLS rows: tls-select-simple tls-select-extended
#                            tls-select-prepared tls-connect-scram tls-idle-memory ("tls" = all five).
#                            TLS rows: sslmode=require from pgbench to the proxy (or to PostgreSQL for
#                            direct) and TLS from the proxy to PostgreSQL; the script makes a CA and a
#                            server certificate with openssl and turns ssl on in its own cluster.
#                            tls-idle-memory measures idle-memory with and without TLS (the ratio)
#   TLS_KEY=rsa:2048         key of the TLS rows' server certificate (openssl -newkey: rsa:N or ec)
#   BENCH_PGPORT=PORT        reuse a running scripts/cluster.sh cluster whose primary listens on
#                            127.0.0.1:PORT (standbys PORT+1, PORT+2 are used when they answer);
#                            it must have the roles of scripts/cluster.sh. Default: start our own.
#   BENCH_BUILD_DIR=DIR      pgrelay release build dir (default: build-bench in the repository)
#   BENCH_PGRELAY_BIN=FILE   use this pgrelay binary as it is instead of building one
#   BENCH_KEEP_TMP=1         keep the temporary folder (configs, logs, cluster data)
#   PGBIN=DIR                PostgreSQL binaries (default /usr/lib/postgresql/15/bin, else the newest)
#
# Output: one Markdown table on stdout, also written to bench/results/latest.md; every run's raw
# numbers in bench/results/latest-runs.tsv; proxy logs in bench/results/logs/.
# Exit status: 0 when the benchmark ran (even if some runs failed: those cells say "fail"),
# 1 on a setup failure (packages, build, cluster, a reference proxy that does not start), 2 on usage.
set -Eeuo pipefail
umask 022

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$REPO/bench/results

# ------------------------------------------------------------------------------------------------
# Options.

WITH_PGPOOL=0
usage() {
  sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '/^set -E/d' -e 's/^# \{0,1\}//'
}
while (($#)); do
  case "$1" in
    --with-pgpool) WITH_PGPOOL=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument '$1' (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
BENCH_TARGETS=${BENCH_TARGETS:-pgbouncer pgrelay pgrelay-lb direct}
LB_WEIGHTS=${LB_WEIGHTS:-1 1 1}
SCALE=${SCALE:-10}
MODES=${MODES:-session transaction}
POOL_SIZE=${POOL_SIZE:-40}
MANY_CLIENTS=${MANY_CLIENTS:-1000}
MANY_POOL_SIZE=${MANY_POOL_SIZE:-20}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-1200}
MANY_CONNECT_S=${MANY_CONNECT_S:-40}
ALL_WORKLOADS="select-simple select-extended select-prepared tpcb connect-scram connect-trust many-clients many-clients-prepared idle-memory"
# Opt-in: only run when named in WORKLOADS ("tls" names all of them).
TLS_WORKLOADS="tls-select-simple tls-select-extended tls-select-prepared tls-connect-scram tls-idle-memory"
WORKLOADS=${WORKLOADS:-$ALL_WORKLOADS}
WORKLOADS=$(for w in $WORKLOADS; do if [[ "$w" == tls ]]; then echo "$TLS_WORKLOADS"; else echo "$w"; fi; done | tr '\n' ' ')
TLS_KEY=${TLS_KEY:-rsa:2048}
BENCH_PGPORT=${BENCH_PGPORT:-}
BUILD_DIR=${BENCH_BUILD_DIR:-$REPO/build-bench}
JOBS=2

for v in DURATION ROUNDS SCALE POOL_SIZE MANY_CLIENTS MANY_POOL_SIZE MANY_CONNECT_S IDLE_CLIENTS PG_MAX_CONNECTIONS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || {
    echo "run.sh: $v must be a positive integer, got '${!v}'" >&2
    exit 2
  }
done
[[ -z "$BENCH_PGPORT" || "$BENCH_PGPORT" =~ ^[0-9]+$ ]] || {
  echo "run.sh: BENCH_PGPORT must be a port number, got '$BENCH_PGPORT'" >&2
  exit 2
}
for w in $WORKLOADS; do
  [[ " $ALL_WORKLOADS $TLS_WORKLOADS " == *" $w "* ]] || {
    echo "run.sh: unknown workload '$w' (known: $ALL_WORKLOADS $TLS_WORKLOADS tls)" >&2
    exit 2
  }
done
[[ "$TLS_KEY" =~ ^(rsa:[1-9][0-9]*|ec)$ ]] || {
  echo "run.sh: TLS_KEY must be rsa:BITS or ec, got '$TLS_KEY'" >&2
  exit 2
}
for t in $BENCH_TARGETS; do
  [[ " pgbouncer pgrelay pgrelay-lb direct " == *" $t "* ]] || {
    echo "run.sh: unknown target '$t' in BENCH_TARGETS (known: pgbouncer pgrelay pgrelay-lb direct)" >&2
    exit 2
  }
done
for m in $MODES; do
  [[ "$m" =~ ^(session|transaction|statement)$ ]] || {
    echo "run.sh: unknown pool mode '$m' (session, transaction, statement)" >&2
    exit 2
  }
done

# Timeouts (seconds). Every wait in this script is bounded.
T_APT=900
T_BUILD=900
T_CLUSTER=300
T_INIT=1200
T_START=20
T_STOP=15
T_SMOKE=20
T_RUN_EXTRA=90 # a pgbench run may take DURATION + this before it is killed

# ------------------------------------------------------------------------------------------------
# Helpers.

log() { printf '%s run.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '%s run.sh: WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '%s run.sh: setup failed: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

if [[ -z "${PGBIN:-}" ]]; then
  if [[ -x /usr/lib/postgresql/15/bin/pgbench ]]; then
    PGBIN=/usr/lib/postgresql/15/bin
  else
    PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
fi
[[ -n "$PGBIN" && -x "$PGBIN/pgbench" && -x "$PGBIN/psql" ]] ||
  die "PostgreSQL client binaries (pgbench, psql) not found; set PGBIN or run scripts/deps.sh"

# libpq settings shared by every client: plain TCP (no SSL/GSS round trips, same for all targets),
# a bounded connect; no password file (PGPASSFILE is pointed into the temp folder below). The TLS
# rows and their smoke tests set PGSSLMODE=require for their own commands.
export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS 2>/dev/null || true

CLK_TCK=$(getconf CLK_TCK)

# Open files: MANY_CLIENTS clients need as many descriptors in pgbench and in each proxy. pgrelay
# raises its own soft limit to the hard one; pgbench, PgBouncer and the idle-memory helper inherit ours.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [[ "$NOFILE" =~ ^[0-9]+$ ]] && ((NOFILE < MANY_CLIENTS + 200 || NOFILE < IDLE_CLIENTS + 200)); then
  warn "the open-files limit is $NOFILE (could not raise it to 65536); the 1,000-client runs may fail"
fi

# The pgbench workloads in table order (as given) and in run order: the many-clients runs first,
# because their direct run needs MANY_CLIENTS backends while the other proxies' pools are still
# small. They exist in transaction mode only. idle-memory is not a pgbench run; it comes last.
HAS_MANY=0 HAS_IDLE=0 HAS_TLS=0 HAS_TLS_IDLE=0 HAS_TLS_PGBENCH=0 PGBENCH_WORKLOADS="" RUN_ORDER=""
run_later=""
for w in $WORKLOADS; do
  [[ "$w" != tls-* ]] || HAS_TLS=1
  case "$w" in
    idle-memory) HAS_IDLE=1 ;;
    # The TLS idle figure is compared with the plaintext one: both are measured.
    tls-idle-memory) HAS_IDLE=1 HAS_TLS_IDLE=1 ;;
    many-clients*)
      if [[ " $MODES " == *" transaction "* ]]; then
        HAS_MANY=1
        PGBENCH_WORKLOADS+="$w "
        RUN_ORDER+="$w "
      else
        warn "$w needs MODES to include 'transaction'; leaving it out"
      fi
      ;;
    *)
      [[ "$w" != tls-* ]] || HAS_TLS_PGBENCH=1
      PGBENCH_WORKLOADS+="$w "
      run_later+="$w "
      ;;
  esac
done
RUN_ORDER+=$run_later

TMP=""
CLUSTER_DIR=""
SERVER_LOGS=() # the nodes' logs when we started the cluster: scanned for problems per run
OWN_CLUSTER=0
POLICY_RC_CREATED=0
declare -a STARTED_PIDS=() # every long-running process we started
declare -A PROC_PID=()     # instance name -> pid
declare -A PROC_PORT=()    # instance name -> port
declare -A PROC_LOG=()     # instance name -> log file
declare -A PROC_CMD=()     # instance name -> start command (for restarts), NUL-free, eval-safe
declare -A PROC_NOTE=()    # instance name -> what happened to it (crashes, restarts)
declare -A PROC_SIG=()     # instance name -> its shutdown signal
declare -A PROC_GONE=()    # instance name -> 1 when a restart failed (no more attempts)
declare -a EXTRA_NOTES=()  # lines for the notes under the table
declare -A USED_PORTS=()

# Pids of the descendants of PID (pgpool-II's children), one per line.
descendants() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " "); ppid[pid] = f[2] }
    END {
      for (p in ppid) {
        q = ppid[p]; depth = 0
        while (q != "" && q != 0 && q != root && depth < 64) { q = ppid[q]; depth++ }
        if (q == root && p != root) print p
      }
    }'
}

# Stops one of our processes: its shutdown signal (PID_SIG, default TERM), up to T_STOP seconds,
# then SIGKILL; descendants it leaves behind are killed by pid.
declare -A PID_SIG=()
stop_pid() {
  local pid=$1 i kids
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -"${PID_SIG[$pid]:-TERM}" "$pid" 2>/dev/null || true
  for ((i = 0; i < T_STOP * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "pid $pid did not stop within ${T_STOP}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  exit_description "$pid"
  for i in $kids; do
    if kill -0 "$i" 2>/dev/null; then kill -KILL "$i" 2>/dev/null || true; fi
  done
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  # Children of our proxies (pgpool-II's processes) go with their parent; nothing else to end.
  if ((OWN_CLUSTER)) && [[ -n "$CLUSTER_DIR" ]]; then
    log "stopping our cluster"
    timeout -k 10 120 bash "$REPO/scripts/cluster.sh" stop "$CLUSTER_DIR" >/dev/null 2>&1 ||
      warn "cluster.sh stop failed; data left in $CLUSTER_DIR"
  fi
  if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ -n "${BENCH_KEEP_TMP:-}" ]]; then
      log "kept $TMP"
    else
      rm -rf -- "$TMP"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'printf "%s run.sh: setup failed: line %s: %s (status %s)\n" "$(date +%H:%M:%S)" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
trap 'warn "interrupted"; exit 130' INT TERM

port_in_use() {
  [[ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]] && return 0
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# A free loopback port below the ephemeral range, not handed out before, in PORT_PICKED.
# pick_ports N: the first of N consecutive ones. (Sets a global: a $(...) subshell would lose
# USED_PORTS.)
PORT_PICKED=""
pick_ports() {
  local n=$1 tries base i ok
  for ((tries = 0; tries < 300; tries++)); do
    base=$((20000 + RANDOM % 9000))
    ok=1
    for ((i = 0; i < n; i++)); do
      if [[ -n "${USED_PORTS[$((base + i))]:-}" ]] || port_in_use $((base + i)); then
        ok=0
        break
      fi
    done
    if ((ok)); then
      for ((i = 0; i < n; i++)); do USED_PORTS[$((base + i))]=1; done
      PORT_PICKED=$base
      return 0
    fi
  done
  die "no $n free consecutive ports found in 20000-29000"
}

# Waits until 127.0.0.1:PORT accepts TCP connections while PID lives; returns 1 otherwise.
wait_port() {
  local port=$1 pid=$2 deadline=$((SECONDS + T_START))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# CPU ticks (utime+stime) of PID and all its descendants, plus the reaped children of PID
# (cutime+cstime). One read of /proc; fields after the last ")" of /proc/N/stat.
proc_ticks() {
  local root=$1
  [[ -r /proc/$root/stat ]] || {
    echo ""
    return 0
  }
  # shellcheck disable=SC2016
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$root" '
    {
      pid = $1; rest = $0; sub(/^.*\) /, "", rest); n = split(rest, f, " ")
      if (n < 15) next
      ppid[pid] = f[2]; t[pid] = f[12] + f[13]; if (pid == root) ct = f[14] + f[15]
    }
    END {
      if (!(root in t)) { print ""; exit }
      total = t[root] + ct
      # Descendants: walk each process up its parent chain.
      for (p in t) {
        if (p == root) continue
        q = ppid[p]; depth = 0
        while (q != "" && q != 0 && q != root && depth < 64) { q = ppid[q]; depth++ }
        if (q == root) total += t[p]
      }
      print total
    }'
}

# Sets EXIT_DESC to "still running", "exited with status N" or "killed by SIGxxx" for one of our
# children. Must run in this shell (not in $(...)): only the parent can collect the status, once,
# so it is cached.
declare -A EXIT_CACHE=()
EXIT_DESC=""
exit_description() {
  local pid=$1 st=0
  if [[ -n "${EXIT_CACHE[$pid]:-}" ]]; then
    EXIT_DESC=${EXIT_CACHE[$pid]}
    return 0
  fi
  if kill -0 "$pid" 2>/dev/null; then
    EXIT_DESC="still running"
    return 0
  fi
  wait "$pid" 2>/dev/null || st=$?
  if ((st > 128)); then
    EXIT_DESC="killed by SIG$(kill -l $((st - 128)) 2>/dev/null || echo $((st - 128)))"
  else
    EXIT_DESC="exited with status $st"
  fi
  EXIT_CACHE[$pid]=$EXIT_DESC
}

# ------------------------------------------------------------------------------------------------
# 1. Packages.

is_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }

# Stops the Debian service of a package we just installed if its maintainer script started it.
stop_package_service() {
  local svc=$1
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    timeout 30 systemctl stop "$svc" >/dev/null 2>&1 || true
    timeout 30 systemctl disable "$svc" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    timeout 30 service "$svc" stop >/dev/null 2>&1 || true
  fi
  # Anything left is the packaged daemon started from its /etc config: end it by its pid file.
  local pf
  for pf in /run/postgresql/pgbouncer.pid /var/run/postgresql/pgbouncer.pid /run/postgresql/pgpool.pid /var/run/postgresql/pgpool.pid; do
    [[ -f "$pf" ]] || continue
    case "$svc:$pf" in
      pgbouncer:*pgbouncer.pid | pgpool2:*pgpool.pid) ;;
      *) continue ;;
    esac
    local p
    p=$(cat "$pf" 2>/dev/null || true)
    if [[ "$p" =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null; then
      log "stopping the packaged $svc daemon (pid $p)"
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
}

install_packages() {
  local want=(pgbouncer) missing=() p
  ((WITH_PGPOOL)) && want+=(pgpool2)
  for p in "${want[@]}"; do is_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; install them as root: apt-get install -y ${missing[*]}"
  log "installing ${missing[*]}"
  # Keep the packages' own services from starting (policy-rc.d is honoured by invoke-rc.d and
  # deb-systemd-invoke); removed again right after, or by the exit trap.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout "$T_APT" apt-get install -y --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1; then
    timeout "$T_APT" apt-get update >>"$TMP/apt.log" 2>&1 || true
    timeout "$T_APT" apt-get install -y --no-install-recommends "${missing[@]}" >>"$TMP/apt.log" 2>&1 || {
      tail -n 20 "$TMP/apt.log" >&2
      die "apt-get install ${missing[*]} failed"
    }
  fi
  if ((POLICY_RC_CREATED)); then
    rm -f /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=0
  fi
  for p in "${missing[@]}"; do stop_package_service "$p"; done
}

# ------------------------------------------------------------------------------------------------
# Start.

TMP=$(mktemp -d /tmp/pgrelay-bench.XXXXXX)
chmod 755 "$TMP"
export PGPASSFILE=$TMP/no-pgpass
log "temporary folder $TMP"

install_packages
command -v pgbouncer >/dev/null || die "pgbouncer not found after installation"
if ((WITH_PGPOOL)); then command -v pgpool >/dev/null || die "pgpool not found after installation"; fi
command -v ss >/dev/null || die "ss (iproute2) is needed"

# PgBouncer refuses to run as root; the postgres user (from the postgresql packages) runs it.
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "user 'postgres' is missing (install postgresql)"
  AS_PG=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
else
  AS_PG=()
fi

# 3a. Build pgrelay (release), unless BENCH_PGRELAY_BIN names a binary to use as it is.
if [[ -n "${BENCH_PGRELAY_BIN:-}" ]]; then
  PGRELAY_BIN=$(realpath -- "$BENCH_PGRELAY_BIN")
  [[ -x "$PGRELAY_BIN" ]] || die "BENCH_PGRELAY_BIN=$BENCH_PGRELAY_BIN is not an executable"
  log "using $PGRELAY_BIN as it is (no build)"
else
  log "building pgrelay (release) in $BUILD_DIR"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    timeout "$T_BUILD" meson setup "$BUILD_DIR" "$REPO" -Dbuildtype=release -Db_lto=true -Dunit_tests=disabled \
      >"$TMP/build.log" 2>&1 || {
      tail -n 30 "$TMP/build.log" >&2
      die "meson setup failed"
    }
  else
    timeout "$T_BUILD" meson configure "$BUILD_DIR" -Dbuildtype=release -Db_lto=true -Dunit_tests=disabled \
      >"$TMP/build.log" 2>&1 || {
      tail -n 30 "$TMP/build.log" >&2
      die "meson configure failed"
    }
  fi
  timeout "$T_BUILD" ninja -C "$BUILD_DIR" pgrelay >>"$TMP/build.log" 2>&1 || {
    tail -n 30 "$TMP/build.log" >&2
    die "building pgrelay failed"
  }
  PGRELAY_BIN=$BUILD_DIR/pgrelay
  [[ -x "$PGRELAY_BIN" ]] || die "$PGRELAY_BIN missing after the build"
fi

# 2. The cluster.
if [[ -n "$BENCH_PGPORT" ]]; then
  PRIMARY_PORT=$BENCH_PGPORT
  timeout 15 "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PRIMARY_PORT" -t 10 ||
    die "no PostgreSQL accepting connections on 127.0.0.1:$PRIMARY_PORT (BENCH_PGPORT)"
  BACKEND_PORTS=("$PRIMARY_PORT")
  for p in $((PRIMARY_PORT + 1)) $((PRIMARY_PORT + 2)); do
    if timeout 5 "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$p" -t 3; then BACKEND_PORTS+=("$p"); fi
  done
  log "reusing the cluster on 127.0.0.1:$PRIMARY_PORT (backends: ${BACKEND_PORTS[*]})"
else
  pick_ports 3
  base=$PORT_PICKED
  CLUSTER_DIR=$TMP/cluster
  OWN_CLUSTER=1
  log "starting a cluster in $CLUSTER_DIR on ports $base-$((base + 2))"
  PGBIN=$PGBIN PG_MAX_CONNECTIONS=$PG_MAX_CONNECTIONS timeout -k 10 "$T_CLUSTER" \
    bash "$REPO/scripts/cluster.sh" start "$CLUSTER_DIR" "$base" \
    >"$TMP/cluster.log" 2>&1 || {
    tail -n 30 "$TMP/cluster.log" >&2
    die "scripts/cluster.sh start failed"
  }
  PRIMARY_PORT=$base
  BACKEND_PORTS=("$base" $((base + 1)) $((base + 2)))
  SERVER_LOGS=("$CLUSTER_DIR/node0.log" "$CLUSTER_DIR/node1.log" "$CLUSTER_DIR/node2.log")
fi

psql_as() { # USER PASSWORD SQL...
  local user=$1 pw=$2
  shift 2
  PGPASSWORD=$pw timeout "$T_SMOKE" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 \
    -p "$PRIMARY_PORT" -U "$user" -d app "$@"
}

psql_as app app -c 'SELECT 1' >/dev/null 2>"$TMP/psql.err" || {
  cat "$TMP/psql.err" >&2
  die "cannot log in as app/app to database app on 127.0.0.1:$PRIMARY_PORT"
}
max_conn=$(psql_as app app -c 'SHOW max_connections' 2>/dev/null || echo 0)

# 4a. pgbench -i, once, straight on the primary.
log "pgbench -i -s $SCALE"
PGPASSWORD=app timeout -k 10 "$T_INIT" "$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" \
  -U app app >"$TMP/init.log" 2>&1 || {
  tail -n 20 "$TMP/init.log" >&2
  die "pgbench -i failed"
}
psql_as app app -c 'GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO trustuser' \
  >/dev/null 2>"$TMP/psql.err" || {
  cat "$TMP/psql.err" >&2
  die "granting the pgbench tables to trustuser failed"
}
psql_as postgres postgres -c 'CHECKPOINT' >/dev/null 2>&1 || true

# 2b. TLS, for the tls-* workloads only: a CA and a server certificate for 127.0.0.1 made with the
# openssl CLI in $TMP/tls (keys 0600, owned by the postgres user when we are root: PostgreSQL and
# PgBouncer run as that user); every node of our own cluster gets ssl = on with them (ALTER SYSTEM,
# pg_reload_conf). pgrelay and PgBouncer present the same certificate to their clients.
TLS_DIR=$TMP/tls
TLS_DESC=""
if ((HAS_TLS)); then
  command -v openssl >/dev/null || die "the TLS workloads need the openssl command (apt-get install openssl)"
  mkdir -p "$TLS_DIR"
  keyopt=(-newkey "$TLS_KEY")
  [[ "$TLS_KEY" == ec ]] && keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
  (
    cd "$TLS_DIR"
    umask 077
    openssl req -x509 -new -nodes "${keyopt[@]}" -keyout ca.key -out ca.crt -days 7 -subj "/CN=pgrelay bench CA"
    openssl req -new -nodes "${keyopt[@]}" -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
    usage=digitalSignature
    [[ "$TLS_KEY" == ec ]] || usage+=", keyEncipherment"
    printf '%s\n' 'subjectAltName = IP:127.0.0.1, DNS:localhost' 'basicConstraints = CA:FALSE' \
      "keyUsage = $usage" 'extendedKeyUsage = serverAuth' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -extfile server.ext \
      -out server.crt
  ) >"$TMP/openssl.log" 2>&1 || {
    cat "$TMP/openssl.log" >&2
    die "making the TLS certificates with openssl failed"
  }
  chmod 644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
  chmod 600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key"
  [[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$TLS_DIR/server.key" "$TLS_DIR/server.crt"
  if ((OWN_CLUSTER)); then
    for p in "${BACKEND_PORTS[@]}"; do
      PGPASSWORD=postgres timeout "$T_SMOKE" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" \
        -U postgres -d postgres -c "ALTER SYSTEM SET ssl_cert_file = '$TLS_DIR/server.crt'" \
        -c "ALTER SYSTEM SET ssl_key_file = '$TLS_DIR/server.key'" -c 'ALTER SYSTEM SET ssl = on' \
        -c 'SELECT pg_reload_conf()' >/dev/null 2>"$TMP/psql.err" || {
        cat "$TMP/psql.err" >&2
        die "turning ssl on in the node on port $p failed"
      }
    done
  fi
  # Every node must accept TLS now (the reload is asynchronous); a reused cluster must have it on.
  for p in "${BACKEND_PORTS[@]}"; do
    deadline=$((SECONDS + T_START)) v=""
    while ((SECONDS < deadline)); do
      v=$(PGSSLMODE=require PGPASSWORD=postgres timeout "$T_SMOKE" "$PGBIN/psql" -X -q -At -F' ' -h 127.0.0.1 \
        -p "$p" -U postgres -d postgres -c 'SELECT ssl, version, cipher, bits FROM pg_stat_ssl WHERE pid = pg_backend_pid()' \
        2>"$TMP/psql.err" || true)
      [[ "$v" != t\ * ]] || break
      sleep 0.2
    done
    [[ "$v" == t\ * ]] || {
      cat "$TMP/psql.err" >&2
      why=""
      ((OWN_CLUSTER)) || why="; the TLS workloads need ssl = on in the reused cluster"
      die "PostgreSQL on port $p does not accept TLS (sslmode=require)$why"
    }
    [[ -n "$TLS_DESC" ]] || TLS_DESC=${v#t }
  done
  log "TLS on every node (libpq to PostgreSQL: $TLS_DESC; server key $TLS_KEY)"
fi

# ------------------------------------------------------------------------------------------------
# 3b. The proxies. Instances are named TARGET-MODE-AUTH (pgrelay-session-scram, ...).

# Starts instance NAME with COMMAND (a bash string) logging to LOG, waits for PORT.
start_instance() {
  local name=$1 port=$2 logf=$3 cmd=$4 sig=${5:-TERM} pid
  # The process is a child of this shell so that its exit status can be collected. It runs in a
  # session of its own, as a service does (PgBouncer's -d does the same): with the kernel's
  # autogroup scheduling (on by default), a process shares CPU time with everything in its
  # session, and a proxy sharing pgbench's would be scheduled unlike one in production.
  # (A background job of this non-interactive shell is no group leader: setsid does not fork.)
  setsid bash -c "exec $cmd" >>"$logf" 2>&1 </dev/null &
  pid=$!
  STARTED_PIDS+=("$pid")
  PID_SIG[$pid]=$sig
  PROC_SIG[$name]=$sig
  PROC_PID[$name]=$pid
  PROC_PORT[$name]=$port
  PROC_LOG[$name]=$logf
  PROC_CMD[$name]=$cmd
  if ! wait_port "$port" "$pid"; then
    exit_description "$pid"
    warn "$name did not accept connections on port $port within ${T_START}s ($EXIT_DESC); log:"
    tail -n 20 "$logf" >&2 || true
    stop_pid "$pid"
    return 1
  fi
  return 0
}

# Restarts an instance that died (after a crash), so later runs still measure something.
ensure_running() {
  local name=$1 pid=${PROC_PID[$1]}
  kill -0 "$pid" 2>/dev/null && return 0
  [[ -z "${PROC_GONE[$name]:-}" ]] || return 1
  exit_description "$pid"
  local how=$EXIT_DESC
  warn "$name (pid $pid) $how; restarting it. Last log lines:"
  tail -n 15 "${PROC_LOG[$name]}" >&2 || true
  PROC_NOTE[$name]="${PROC_NOTE[$name]:-}${PROC_NOTE[$name]:+; }pid $pid $how"
  echo "---- restart after: $how ----" >>"${PROC_LOG[$name]}"
  start_instance "$name" "${PROC_PORT[$name]}" "${PROC_LOG[$name]}" "${PROC_CMD[$name]}" "${PROC_SIG[$name]}" || {
    PROC_NOTE[$name]+="; restart failed"
    PROC_GONE[$name]=1
    return 1
  }
}

smoke() { # NAME USER PASSWORD [tls]
  local name=$1 user=$2 pw=$3 out
  if [[ "${4:-}" == tls ]]; then
    # sslmode=require towards the proxy; pg_stat_ssl shows the proxy's backend connection is TLS too.
    out=$(PGSSLMODE=require PGPASSWORD=$pw timeout "$T_SMOKE" "$PGBIN/psql" -X -At -F' ' -h 127.0.0.1 \
      -p "${PROC_PORT[$name]}" -U "$user" -d app \
      -c 'SELECT count(*), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) FROM pgbench_branches' 2>&1) &&
      [[ "$out" == "$SCALE t" ]] && return 0
    warn "$name: sslmode=require, SELECT count(*) and pg_stat_ssl.ssl of the backend as $user: '$out' (want '$SCALE t')"
    return 1
  fi
  out=$(PGPASSWORD=$pw timeout "$T_SMOKE" "$PGBIN/psql" -X -At -h 127.0.0.1 -p "${PROC_PORT[$name]}" \
    -U "$user" -d app -c 'SELECT count(*) FROM pgbench_branches' 2>&1) && [[ "$out" == "$SCALE" ]] && return 0
  warn "$name: 'SELECT count(*) FROM pgbench_branches' as $user failed: $out"
  return 1
}

mkdir -p "$TMP/pgrelay" "$TMP/pgbouncer" "$TMP/pgpool"
[[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$TMP/pgbouncer" "$TMP/pgpool"

# pgrelay: users file with plain passwords; the trust variant adds an hba file.
printf 'app:app\npostgres:postgres\n' >"$TMP/pgrelay/users.txt"
printf 'host all trustuser 127.0.0.1/32 trust\nhost all all 0.0.0.0/0 scram-sha-256\n' >"$TMP/pgrelay/hba.conf"
# Every node of the cluster, equal weights. With load balancing off pgrelay still knows (and
# health-checks) the standbys but sends every statement to the primary, so "LB on" minus "LB off"
# is the cost of the routing itself.
pgrelay_backends() { # [WEIGHT...] (default 1 each)
  local p first=1 i=0 w flag
  local -a weights=("$@")
  printf 'backends = ( '
  for p in "${BACKEND_PORTS[@]}"; do
    ((first)) || printf ', '
    first=0
    w=${weights[$i]:-1}
    [[ $w == *.* ]] || w=$w.0
    i=$((i + 1))
    # The benchmark measures pooling, not failover: a node that misses checks on an overloaded
    # machine (1000 direct clients) must not be detached in the middle of the run.
    flag=DISALLOW_TO_FAILOVER
    ((i == 1)) && flag="ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER"
    printf '{ host = "127.0.0.1"; port = %d; weight = %s; flag = "%s"; }' "$p" "$w" "$flag"
  done
  printf ' );\n'
}
write_pgrelay_conf() { # FILE PORT MODE AUTH [POOL_SIZE] [LB: on|off, default off] [tls]
  local f=$1 port=$2 mode=$3 auth=$4 size=${5:-$POOL_SIZE} lb=${6:-off} tls=${7:-} hba="" enabled=false
  [[ "$auth" == trust ]] && hba=' hba_file = "hba.conf";'
  [[ "$lb" == on ]] && enabled=true
  {
    echo "# written by bench/run.sh"
    echo 'listen_addresses = "127.0.0.1";'
    echo "port = $port;"
    if [[ "$lb" == on ]]; then
      # shellcheck disable=SC2086  # LB_WEIGHTS is a list of numbers
      pgrelay_backends $LB_WEIGHTS
    else
      pgrelay_backends
    fi
    echo "auth = { users_file = \"users.txt\";$hba };"
    echo 'logging = { level = "warning"; };'
    echo "pool = { mode = \"$mode\"; pool_size = $size; max_client_conn = 20000; };"
    echo 'health_check = { user = "postgres"; password = "postgres"; database = "postgres"; timeout = "10s"; };'
    echo "load_balance = { enabled = $enabled; };"
    # TLS rows: TLS from the clients (required, like PgBouncer's client_tls_sslmode) and to every node.
    if [[ "$tls" == tls ]]; then
      echo "tls = { cert_file = \"$TLS_DIR/server.crt\"; key_file = \"$TLS_DIR/server.key\"; client_mode = \"require\"; server_mode = \"require\"; };"
    fi
  } >"$f"
}

# PgBouncer: plain-text userlist; auth_type scram-sha-256, or trust for the trust variant.
printf '"app" "app"\n"trustuser" ""\n' >"$TMP/pgbouncer/userlist.txt"
write_pgbouncer_conf() { # FILE PORT MODE AUTH [POOL_SIZE] [tls]
  local f=$1 port=$2 mode=$3 auth=$4 size=${5:-$POOL_SIZE} tls=${6:-} dir
  dir=$(dirname "$f")
  local authtype=scram-sha-256
  [[ "$auth" == trust ]] && authtype=trust
  cat >"$f" <<EOF
; written by bench/run.sh
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = $authtype
auth_file = $dir/userlist.txt
pool_mode = $mode
default_pool_size = $size
max_client_conn = 20000
logfile =
pidfile =
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 60
EOF
  if [[ "$tls" == tls ]]; then
    cat >>"$f" <<EOF
client_tls_sslmode = require
client_tls_key_file = $TLS_DIR/server.key
client_tls_cert_file = $TLS_DIR/server.crt
server_tls_sslmode = require
EOF
  fi
}

# pgpool-II 4.3: connection pooling only, streaming-replication mode, no load balancing, no
# health checks; one instance for both auth variants (pool_hba: trustuser trust, others scram).
write_pgpool_conf() { # DIR PORT PCPPORT
  local d=$1 port=$2 pcp=$3 i=0 p
  {
    echo "# written by bench/run.sh"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$d'"
    echo "pcp_listen_addresses = ''"
    echo "pcp_port = $pcp"
    echo "pcp_socket_dir = '$d'"
    echo "backend_clustering_mode = 'streaming_replication'"
    for p in "${BACKEND_PORTS[@]}"; do
      echo "backend_hostname$i = '127.0.0.1'"
      echo "backend_port$i = $p"
      echo "backend_weight$i = 1"
      echo "backend_flag$i = 'ALLOW_TO_FAILOVER'"
      i=$((i + 1))
    done
    echo "enable_pool_hba = on"
    echo "pool_passwd = '$d/pool_passwd'"
    echo "num_init_children = $POOL_SIZE"
    echo "max_pool = 1"
    echo "reserved_connections = 0"
    echo "child_life_time = 0"
    echo "child_max_connections = 0"
    echo "connection_life_time = 0"
    echo "client_idle_limit = 0"
    echo "connection_cache = on"
    echo "load_balance_mode = off"
    echo "sr_check_period = 0"
    echo "sr_check_user = 'postgres'"
    echo "sr_check_password = 'postgres'"
    echo "health_check_period = 0"
    echo "failover_on_backend_error = off"
    echo "use_watchdog = off"
    echo "memory_cache_enabled = off"
    echo "log_destination = 'stderr'"
    echo "log_min_messages = warning"
    echo "log_connections = off"
    echo "logdir = '$d'"
    echo "pid_file_name = '$d/pgpool.pid'"
  } >"$d/pgpool.conf"
  printf 'app:TEXTapp\npostgres:TEXTpostgres\n' >"$d/pool_passwd"
  printf 'host all trustuser 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$d/pool_hba.conf"
  : >"$d/pcp.conf"
  chmod 600 "$d/pool_passwd"
  [[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$d/pgpool.conf" "$d/pool_passwd" "$d/pool_hba.conf" "$d/pcp.conf"
}

declare -A RELAY_MODE_OK=()   # mode -> 1 when pgrelay accepted and serves it
declare -A RELAY_TLS_OK=()    # mode -> 1 when pgrelay-MODE-scram-tls started
declare -A RELAY_MODE_NOTE=() # mode -> why it was skipped
mkdir -p "$TMP/logs"

for mode in $MODES; do
  for auth in scram trust; do
    # pgrelay
    name=pgrelay-$mode-$auth
    conf=$TMP/pgrelay/$name.conf
    pick_ports 1
    port=$PORT_PICKED
    write_pgrelay_conf "$conf" "$port" "$mode" "$auth"
    if [[ -n "${RELAY_MODE_NOTE[$mode]:-}" ]]; then
      :
    elif ! out=$("$PGRELAY_BIN" -t -f "$conf" 2>&1); then
      if [[ "$mode" == session ]]; then
        echo "$out" >&2
        die "pgrelay rejects its session-mode configuration"
      fi
      RELAY_MODE_NOTE[$mode]="pgrelay rejects pool mode '$mode': $(echo "${out//"$TMP/pgrelay/"/}" | head -n 3 | tr '\n' ' ')"
      warn "${RELAY_MODE_NOTE[$mode]}; skipping pgrelay in this mode"
    elif start_instance "$name" "$port" "$TMP/logs/$name.log" "'$PGRELAY_BIN' -f '$conf'"; then
      RELAY_MODE_OK[$mode]=1
      user=app pw=app
      [[ "$auth" == trust ]] && user=trustuser pw=""
      smoke "$name" "$user" "$pw" || PROC_NOTE[$name]="smoke test failed"
    elif [[ "$mode" == session ]]; then
      die "pgrelay ($name) did not start; see the log above"
    else
      unset 'RELAY_MODE_OK[$mode]'
      RELAY_MODE_NOTE[$mode]="pgrelay did not start in pool mode '$mode' ($(tail -n 2 "$TMP/logs/$name.log" | tr '\n' ' '))"
      warn "${RELAY_MODE_NOTE[$mode]}; skipping pgrelay in this mode"
    fi
    if [[ -n "${RELAY_MODE_NOTE[$mode]:-}" ]]; then
      unset 'RELAY_MODE_OK[$mode]'
    fi

    # PgBouncer
    name=pgbouncer-$mode-$auth
    pick_ports 1
    port=$PORT_PICKED
    conf=$TMP/pgbouncer/$name.ini
    write_pgbouncer_conf "$conf" "$port" "$mode" "$auth"
    [[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$conf"
    touch "$TMP/logs/$name.log"
    start_instance "$name" "$port" "$TMP/logs/$name.log" "${AS_PG[*]} pgbouncer '$conf'" ||
      die "PgBouncer ($name) did not start"
    user=app pw=app
    [[ "$auth" == trust ]] && user=trustuser pw=""
    smoke "$name" "$user" "$pw" || die "PgBouncer ($name) does not serve queries; see $TMP/logs/$name.log"
  done

  # The TLS rows' instances: SCRAM, TLS from the clients and to PostgreSQL (pgbench sslmode=require).
  if ((HAS_TLS_PGBENCH)); then
    name=pgrelay-$mode-scram-tls
    if [[ -n "${RELAY_MODE_OK[$mode]:-}" ]]; then
      pick_ports 1
      port=$PORT_PICKED
      conf=$TMP/pgrelay/$name.conf
      write_pgrelay_conf "$conf" "$port" "$mode" scram "$POOL_SIZE" off tls
      if ! out=$("$PGRELAY_BIN" -t -f "$conf" 2>&1); then
        msg="pgrelay rejects its TLS configuration: $(echo "${out//"$TMP/"/}" | head -n 3 | tr '\n' ' ')"
        warn "$name: $msg; its runs are skipped"
        EXTRA_NOTES+=("- $name: $msg; its runs were skipped")
      elif start_instance "$name" "$port" "$TMP/logs/$name.log" "'$PGRELAY_BIN' -f '$conf'"; then
        RELAY_TLS_OK[$mode]=1
        smoke "$name" app app tls || PROC_NOTE[$name]="smoke test over TLS failed"
      else
        warn "$name did not start; its runs are skipped"
        EXTRA_NOTES+=("- $name did not start (logs/$name.log); its runs were skipped")
        unset 'PROC_PID[$name]'
      fi
    fi
    name=pgbouncer-$mode-scram-tls
    pick_ports 1
    port=$PORT_PICKED
    conf=$TMP/pgbouncer/$name.ini
    write_pgbouncer_conf "$conf" "$port" "$mode" scram "$POOL_SIZE" tls
    [[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$conf"
    touch "$TMP/logs/$name.log"
    start_instance "$name" "$port" "$TMP/logs/$name.log" "${AS_PG[*]} pgbouncer '$conf'" ||
      die "PgBouncer ($name) did not start"
    smoke "$name" app app tls || die "PgBouncer ($name) does not serve queries over TLS; see $TMP/logs/$name.log"
  fi
done

# pgrelay with load balancing on, SCRAM, one per mode, for the select-* and tpcb rows. It needs a
# standby: with none answering (a reused cluster without them) its column says n/a.
lb_workload() { [[ "$1" == select-* || "$1" == tpcb ]]; }
# SHOW pool_nodes through instance NAME until every node is up with a known role and at least one
# is a standby (the health check ran), at most T_START seconds. LB_NODES: "N standbys of M nodes".
LB_NODES=""
lb_nodes_ready() {
  local name=$1 deadline=$((SECONDS + T_START)) rows
  while ((SECONDS < deadline)); do
    rows=$(PGPASSWORD=app timeout "$T_SMOKE" "$PGBIN/psql" -X -At -F'|' -h 127.0.0.1 -p "${PROC_PORT[$name]}" \
      -U app -d app -c 'SHOW pool_nodes' 2>/dev/null || true)
    LB_NODES=$(awk -F'|' 'NF > 7 { n++; if ($4 == "up" && $7 == "standby") s++; if ($4 != "up" || ($7 != "primary" && $7 != "standby")) bad++ }
      END { if (n && !bad && s) printf "%d standbys of %d nodes", s, n }' <<<"$rows")
    [[ -z "$LB_NODES" ]] || return 0
    sleep 0.2
  done
  LB_NODES=$(awk -F'|' 'NF > 7 { printf "%snode %s %s %s", sep, $1, $4, $7; sep = ", " }' <<<"$rows")
  return 1
}
declare -A LB_OK=() # mode -> 1 when pgrelay-lb-MODE-scram serves with standbys up
LB_NA_WHY=""        # why the LB column is n/a everywhere
LB_WANTED=0
if [[ " $BENCH_TARGETS " == *" pgrelay-lb "* ]]; then
  for w in $PGBENCH_WORKLOADS; do
    if lb_workload "$w"; then LB_WANTED=1; fi
  done
fi
if ((LB_WANTED)) && ((${#BACKEND_PORTS[@]} < 2)); then
  LB_NA_WHY="no standby answered on 127.0.0.1:$((PRIMARY_PORT + 1)) or :$((PRIMARY_PORT + 2))"
  warn "pgrelay with load balancing: $LB_NA_WHY; its column says n/a"
  EXTRA_NOTES+=("- pgrelay LB on: n/a, $LB_NA_WHY.")
elif ((LB_WANTED)); then
  for mode in $MODES; do
    [[ -n "${RELAY_MODE_OK[$mode]:-}" ]] || continue
    name=pgrelay-lb-$mode-scram
    pick_ports 1
    port=$PORT_PICKED
    conf=$TMP/pgrelay/$name.conf
    write_pgrelay_conf "$conf" "$port" "$mode" scram "$POOL_SIZE" on
    if ! start_instance "$name" "$port" "$TMP/logs/$name.log" "'$PGRELAY_BIN' -f '$conf'"; then
      EXTRA_NOTES+=("- $name did not start (logs/$name.log); its runs were skipped")
      unset 'PROC_PID[$name]'
      continue
    fi
    smoke "$name" app app || PROC_NOTE[$name]="smoke test failed"
    if lb_nodes_ready "$name"; then
      LB_OK[$mode]=1
      log "$name: load balancing over ${#BACKEND_PORTS[@]} nodes ($LB_NODES up)"
    else
      warn "$name: no standby up after ${T_START}s (SHOW pool_nodes: ${LB_NODES:-no answer}); its runs are skipped"
      EXTRA_NOTES+=("- $name: no standby up after ${T_START}s (SHOW pool_nodes: ${LB_NODES:-no answer}); its runs were skipped")
    fi
  done
fi

if ((WITH_PGPOOL)); then
  name=pgpool-session-any
  pick_ports 1
  port=$PORT_PICKED
  pick_ports 1
  pcp=$PORT_PICKED
  write_pgpool_conf "$TMP/pgpool" "$port" "$pcp"
  if start_instance "$name" "$port" "$TMP/logs/$name.log" \
    "${AS_PG[*]} pgpool -n -f '$TMP/pgpool/pgpool.conf' -F '$TMP/pgpool/pcp.conf' -a '$TMP/pgpool/pool_hba.conf'" INT; then
    smoke "$name" app app || PROC_NOTE[$name]="smoke test (app) failed"
    smoke "$name" trustuser "" || PROC_NOTE[$name]="${PROC_NOTE[$name]:-}${PROC_NOTE[$name]:+; }smoke test (trustuser) failed"
  else
    warn "pgpool-II did not start; its columns will say skipped"
    EXTRA_NOTES+=("- pgpool-II did not start (logs/$name.log); its runs were skipped")
    unset 'PROC_PID[$name]'
  fi
fi

# The many-clients instances: transaction mode, SCRAM, pool MANY_POOL_SIZE.
RELAY_MANY_OK=0
if ((HAS_MANY)); then
  name=pgrelay-transaction-many
  if [[ -n "${RELAY_MODE_OK[transaction]:-}" ]]; then
    pick_ports 1
    port=$PORT_PICKED
    conf=$TMP/pgrelay/$name.conf
    write_pgrelay_conf "$conf" "$port" transaction scram "$MANY_POOL_SIZE"
    if start_instance "$name" "$port" "$TMP/logs/$name.log" "'$PGRELAY_BIN' -f '$conf'"; then
      RELAY_MANY_OK=1
      smoke "$name" app app || PROC_NOTE[$name]="smoke test failed"
    else
      warn "$name did not start; its many-clients runs are skipped"
      EXTRA_NOTES+=("- $name did not start (logs/$name.log); its many-clients runs were skipped")
      unset 'PROC_PID[$name]'
    fi
  fi
  name=pgbouncer-transaction-many
  pick_ports 1
  port=$PORT_PICKED
  conf=$TMP/pgbouncer/$name.ini
  write_pgbouncer_conf "$conf" "$port" transaction scram "$MANY_POOL_SIZE"
  [[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$conf"
  touch "$TMP/logs/$name.log"
  start_instance "$name" "$port" "$TMP/logs/$name.log" "${AS_PG[*]} pgbouncer '$conf'" ||
    die "PgBouncer ($name) did not start"
  smoke "$name" app app || die "PgBouncer ($name) does not serve queries; see $TMP/logs/$name.log"
fi

# Backends the primary must allow: idle proxy pools (each proxy keeps what a run opened) plus a
# direct run; the direct many-clients run comes first, while the pools are nearly empty.
need=$((32 + 2 * POOL_SIZE + POOL_SIZE * WITH_PGPOOL + POOL_SIZE * LB_WANTED + 2 * POOL_SIZE * HAS_TLS_PGBENCH))
if [[ "$max_conn" =~ ^[0-9]+$ ]] && ((max_conn < need)); then
  warn "the primary's max_connections is $max_conn; idle proxy pools plus a direct run may need ~$need"
fi
need=$((MANY_CLIENTS + 40))
if ((HAS_MANY)) && [[ "$max_conn" =~ ^[0-9]+$ ]] && ((max_conn < need)); then
  warn "the primary's max_connections is $max_conn; the direct many-clients runs need ~$need (they will fail)"
fi

# ------------------------------------------------------------------------------------------------
# 4/5. The runs.

# workload -> "clients|user|password|pgbench options|label"
declare -A WL=(
  [select-simple]="32|app|app|-S -M simple|select-only -M simple"
  [select-extended]="32|app|app|-S -M extended|select-only -M extended"
  [select-prepared]="32|app|app|-S -M prepared|select-only -M prepared"
  [tpcb]="16|app|app|-b tpcb-like -M simple|tpcb-like"
  [connect-scram]="16|app|app|-S -C -M simple|select-only -C (SCRAM)"
  [connect-trust]="16|trustuser||-S -C -M simple|select-only -C (trust)"
  [many-clients]="$MANY_CLIENTS|app|app|-S -M simple|select-only -M simple, $MANY_CLIENTS clients, pool $MANY_POOL_SIZE"
  [many-clients-prepared]="$MANY_CLIENTS|app|app|-S -M prepared|select-only -M prepared, $MANY_CLIENTS clients, pool $MANY_POOL_SIZE"
  # TLS rows (opt-in): pgbench with sslmode=require; the proxies speak TLS to PostgreSQL too.
  [tls-select-simple]="32|app|app|-S -M simple|select-only -M simple, TLS"
  [tls-select-extended]="32|app|app|-S -M extended|select-only -M extended, TLS"
  [tls-select-prepared]="32|app|app|-S -M prepared|select-only -M prepared, TLS"
  [tls-connect-scram]="16|app|app|-S -C -M simple|select-only -C (SCRAM), TLS"
)
wl_modes() { # WORKLOAD -> the pool modes it runs in
  case "$1" in
    many-clients*) echo transaction ;;
    *) echo "$MODES" ;;
  esac
}

# The targets in the order each round runs them: the proxies, then direct.
TARGETS=()
for t in pgbouncer pgrelay pgrelay-lb; do
  if [[ " $BENCH_TARGETS " == *" $t "* ]]; then TARGETS+=("$t"); fi
done
((WITH_PGPOOL)) && TARGETS+=(pgpool)
[[ " $BENCH_TARGETS " == *" direct "* ]] && TARGETS+=(direct)

# Per round, keyed WORKLOAD|MODE|TARGET|ROUND; the cells (medians over the rounds) are keyed
# WORKLOAD|MODE|TARGET.
declare -A R_TPS=() R_FAILED=() R_CPU=() R_STATUS=() R_TXN=() R_LOGINS=() R_SCONNS=() R_CONNECT_S=()
declare -A TPS=() FAILED=() CPU=() STATUS=() TXN=() LOGINS=() SCONNS=() CONNECT_S=() FAIL_ROUNDS=() TPS_SPREAD=()
RUNS_TSV=$TMP/runs.tsv
printf 'workload\tmode\ttarget\tround\tstatus\ttps\ttransactions\tfailed\tcpu_us_per_txn\tproxy_log_lines\tserver_log_problems\tbackend_logins\tserver_conns_after\tconnect_s\n' >"$RUNS_TSV"

# Backend logins to database app so far, summed over the nodes (pg_stat_database.sessions, read
# from database postgres so that the reading itself does not count); "" when a node is unreadable.
# PostgreSQL flushes the counter within about a second of a login, so a run's difference is
# approximate (a few logins).
app_sessions() {
  local p v total=0
  for p in "${BACKEND_PORTS[@]}"; do
    v=$(PGPASSWORD=postgres timeout "$T_SMOKE" "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$p" -U postgres \
      -d postgres -c "SELECT sessions FROM pg_stat_database WHERE datname = 'app'" 2>/dev/null || true)
    if ! [[ "$v" =~ ^[0-9]+$ ]]; then
      echo ""
      return 0
    fi
    total=$((total + v))
  done
  echo "$total"
}
# Established TCP connections from PID (or its descendants: pgpool-II) to each PORT, joined by "+".
server_conns() { # PID PORT...
  local pids p n out=""
  pids=$( (
    echo "$1"
    descendants "$1"
  ) | tr '\n' ' ')
  shift
  for p in "$@"; do
    n=$({ ss -Htnp state established "( dport = :$p )" 2>/dev/null || true; } |
      awk -v pids="$pids" 'BEGIN { n = split(pids, a, " "); for (i = 1; i <= n; i++) want["pid=" a[i] ","] = 1 }
        { for (k in want) if (index($0, k)) { c++; break } } END { print c + 0 }')
    out+="${out:+ + }$n"
  done
  echo "$out"
}
# Lines of the nodes' logs that point at trouble; the "LOG:"-style level and message are kept,
# without the timestamp/pid prefix, so that equal messages can be counted.
SERVER_PROBLEMS='(ERROR|FATAL|PANIC|WARNING):|unexpected EOF|could not (receive|send)|terminating connection|incomplete startup packet'


instance_for() { # TARGET MODE WORKLOAD -> instance name ("" for direct, "-" skipped, "n/a" not applicable)
  local target=$1 mode=$2 wl=$3 auth=scram
  [[ "$wl" == connect-trust ]] && auth=trust
  if [[ "$wl" == tls-* ]]; then
    case "$target" in
      direct) echo "" ;;
      pgrelay) if [[ -n "${RELAY_TLS_OK[$mode]:-}" ]]; then echo "pgrelay-$mode-scram-tls"; else echo "-"; fi ;;
      pgbouncer) echo "pgbouncer-$mode-scram-tls" ;;
      pgpool | pgrelay-lb) echo "n/a" ;;
    esac
    return 0
  fi
  if [[ "$wl" == many-clients* ]]; then
    case "$target" in
      direct) echo "" ;;
      pgrelay) if ((RELAY_MANY_OK)); then echo pgrelay-transaction-many; else echo "-"; fi ;;
      pgbouncer) echo pgbouncer-transaction-many ;;
      pgpool | pgrelay-lb) echo "n/a" ;;
    esac
    return 0
  fi
  case "$target" in
    direct) echo "" ;;
    pgrelay) if [[ -n "${RELAY_MODE_OK[$mode]:-}" ]]; then echo "pgrelay-$mode-$auth"; else echo "-"; fi ;;
    pgrelay-lb)
      # Load balancing is measured on the select-* and tpcb rows only.
      if ! lb_workload "$wl" || [[ -n "$LB_NA_WHY" ]]; then
        echo "n/a"
      elif [[ -n "${LB_OK[$mode]:-}" ]]; then
        echo "pgrelay-lb-$mode-scram"
      else
        echo "-"
      fi
      ;;
    pgbouncer) echo "pgbouncer-$mode-$auth" ;;
    pgpool)
      # pgpool-II pools per session only: its column is not applicable to other modes.
      if [[ "$mode" != session ]]; then
        echo "n/a"
      elif [[ -n "${PROC_PID[pgpool-session-any]:-}" ]]; then
        echo pgpool-session-any
      else
        echo "-"
      fi
      ;;
  esac
}

# Waits until the pgbench under `timeout` pid TPID has CLIENTS connections open (counted as its open
# descriptors: stdin/out/err plus one socket per client; pgbench opens them one after the other,
# each fully logged in before the next), at most LIMIT seconds. Sets CONNECTED_S.
CONNECTED_S=""
wait_connected() { # TPID CLIENTS LIMIT
  local tp=$1 fds=$(($2 + 3)) limit=$3 start=$EPOCHREALTIME pb="" n
  CONNECTED_S=""
  while kill -0 "$tp" 2>/dev/null; do
    [[ -n "$pb" ]] || pb=$(awk '{ print $1 }' "/proc/$tp/task/$tp/children" 2>/dev/null || true)
    if [[ -n "$pb" ]]; then
      n=$(find "/proc/$pb/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      if ((n >= fds)); then
        CONNECTED_S=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
        return 0
      fi
    fi
    awk -v a="$start" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }' && return 1
    sleep 0.2
  done
  return 1
}

RUN_NO=0
run_one() { # WORKLOAD MODE TARGET ROUND
  local wl=$1 mode=$2 target=$3 round=$4 key="$1|$2|$3|$4"
  local clients user pw opts label inst port out rc=0 t0="" t1="" lines0=0 lines1=0 problems=n/a
  local sess0 sess1 logins="" sconns=n/a f
  local -A slog0=()
  IFS='|' read -r clients user pw opts label <<<"${WL[$wl]}"
  inst=$(instance_for "$target" "$mode" "$wl")
  if [[ "$inst" == "n/a" ]]; then
    R_STATUS[$key]=n/a
    return 0
  fi
  RUN_NO=$((RUN_NO + 1))
  local tag="[$RUN_NO/$TOTAL_RUNS] $label [$mode] round $round/$ROUNDS $target"
  if [[ "$inst" == "-" ]]; then
    R_STATUS[$key]=skipped
    printf '%s\t%s\t%s\t%s\tskipped\t\t\t\t\t\t\t\t\t\n' "$wl" "$mode" "$target" "$round" >>"$RUNS_TSV"
    log "$tag: skipped"
    return 0
  fi
  if [[ -z "$inst" ]]; then
    port=$PRIMARY_PORT
  else
    if ! ensure_running "$inst"; then
      R_STATUS[$key]=fail
      printf '%s\t%s\t%s\t%s\tfail\t\t\t\t\t\t\t\t\t\n' "$wl" "$mode" "$target" "$round" >>"$RUNS_TSV"
      log "$tag: fail ($inst is down)"
      return 0
    fi
    port=${PROC_PORT[$inst]}
    lines0=$(wc -l <"${PROC_LOG[$inst]}")
    t0=$(proc_ticks "${PROC_PID[$inst]}")
  fi
  out=$TMP/logs/run-$RUN_NO-$wl-$mode-$target-r$round.out
  for f in "${SERVER_LOGS[@]}"; do
    [[ ! -f "$f" ]] || slog0[$f]=$(stat -c %s "$f")
  done
  sess0=$(app_sessions)
  # pgbench's -T clock starts before its connections: the many-clients runs get MANY_CONNECT_S more
  # seconds, and their CPU window starts once every client is connected (pgbench's tps and
  # transaction count exclude the connection phase too).
  local secs=$DURATION connect_s="" bpid sslmode=disable
  [[ "$wl" == many-clients* ]] && secs=$((DURATION + MANY_CONNECT_S))
  [[ "$wl" == tls-* ]] && sslmode=require
  # shellcheck disable=SC2086
  PGSSLMODE=$sslmode PGPASSWORD=$pw timeout -k 10 $((secs + T_RUN_EXTRA)) "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U "$user" \
    -n -c "$clients" -j "$JOBS" -T "$secs" $opts app >"$out" 2>&1 &
  bpid=$!
  if [[ "$wl" == many-clients* ]]; then
    if wait_connected "$bpid" "$clients" "$secs"; then
      connect_s=$CONNECTED_S
    else
      warn "$label [$mode] via $target: not all $clients clients connected within ${secs}s"
    fi
    [[ -z "$inst" ]] || t0=$(proc_ticks "${PROC_PID[$inst]}")
  fi
  wait "$bpid" || rc=$?
  if [[ -n "$inst" ]]; then
    t1=$(proc_ticks "${PROC_PID[$inst]}")
    lines1=$(wc -l <"${PROC_LOG[$inst]}")
    if [[ "$target" == pgrelay-lb ]]; then
      sconns=$(server_conns "${PROC_PID[$inst]}" "${BACKEND_PORTS[@]}")
    else
      sconns=$(server_conns "${PROC_PID[$inst]}" "$PRIMARY_PORT")
    fi
  fi
  sess1=$(app_sessions)
  [[ "$sess0" =~ ^[0-9]+$ && "$sess1" =~ ^[0-9]+$ ]] && logins=$((sess1 - sess0))
  if ((${#slog0[@]})); then
    : >"$out.server"
    for f in "${!slog0[@]}"; do
      { tail -c +$((slog0[$f] + 1)) "$f" | grep -E "$SERVER_PROBLEMS" || true; } |
        sed -E 's/^.*[[:space:]](LOG|ERROR|FATAL|PANIC|WARNING|DETAIL|STATEMENT):/\1:/' >>"$out.server"
    done
    problems=$(wc -l <"$out.server")
    cat "$out.server" >>"$TMP/server-problems-$target.txt"
  fi
  local tps txn failed cpu="n/a" st=ok
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1)
  txn=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n 1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n 1)
  failed=${failed:-0}
  if ((rc != 0)) || [[ -z "$tps" || -z "$txn" ]] || ((txn == 0)); then
    st=fail
    warn "$label [$mode] round $round via $target failed (pgbench exit $rc):"
    { grep -E 'error|ERROR|FATAL|abort|timeout' "$out" | sort | uniq -c | sort -rn | head -n 5; } >&2 || true
    [[ $rc -eq 124 || $rc -eq 137 ]] && echo "  (pgbench timed out after $((DURATION + T_RUN_EXTRA))s)" >&2
    tail -n 3 "$out" >&2 || true
  fi
  if [[ -n "$inst" ]]; then
    if ! kill -0 "${PROC_PID[$inst]}" 2>/dev/null; then
      st=fail
      exit_description "${PROC_PID[$inst]}"
      warn "$inst died during this run ($EXIT_DESC)"
    elif [[ "$st" == ok && -n "$t0" && -n "$t1" ]]; then
      cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v n="$txn" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
    fi
  fi
  R_STATUS[$key]=$st
  R_TPS[$key]=$tps
  R_FAILED[$key]=$failed
  R_CPU[$key]=$cpu
  R_TXN[$key]=${txn:-}
  R_LOGINS[$key]=$logins
  R_SCONNS[$key]=$sconns
  R_CONNECT_S[$key]=$connect_s
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$mode" "$target" "$round" "$st" "${tps:-}" \
    "${txn:-}" "$failed" "$cpu" "$([[ -n "$inst" ]] && echo $((lines1 - lines0)) || echo n/a)" "$problems" "$logins" \
    "$sconns" "$connect_s" >>"$RUNS_TSV"
  if [[ "$st" == ok ]]; then
    log "$tag: $(printf '%.0f' "$tps") tps, $failed failed, CPU/txn $cpu µs, ${logins:-?} backend logins, server conns $sconns${connect_s:+, all connected after ${connect_s}s}"
  else
    log "$tag: fail"
  fi
}

# The median of the numbers given ("" when none).
median() {
  (($#)) || return 0
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# The cell of WORKLOAD|MODE|TARGET from its rounds: status ok when at least one round succeeded;
# median tps and CPU/txn over the successful rounds; transactions, failed transactions and backend
# logins summed over them; server connections after the last one; FAIL_ROUNDS counts failed rounds.
aggregate() { # KEY
  local key=$1 r s other="" nfail=0 txn=0 failed=0 logins=0 logins_ok=1 sconns=""
  local -a tps=() cpu=() conn=()
  for ((r = 1; r <= ROUNDS; r++)); do
    s=${R_STATUS[$key|$r]:-}
    case "$s" in
      ok)
        tps+=("${R_TPS[$key|$r]}")
        [[ "${R_CPU[$key|$r]}" == n/a ]] || cpu+=("${R_CPU[$key|$r]}")
        [[ -z "${R_CONNECT_S[$key|$r]}" ]] || conn+=("${R_CONNECT_S[$key|$r]}")
        txn=$((txn + ${R_TXN[$key|$r]}))
        failed=$((failed + ${R_FAILED[$key|$r]}))
        if [[ "${R_LOGINS[$key|$r]}" =~ ^-?[0-9]+$ ]]; then logins=$((logins + ${R_LOGINS[$key|$r]})); else logins_ok=0; fi
        sconns=${R_SCONNS[$key|$r]}
        ;;
      fail) nfail=$((nfail + 1)) ;;
      "") ;;
      *) other=$s ;;
    esac
  done
  FAIL_ROUNDS[$key]=$nfail
  if ((${#tps[@]})); then
    STATUS[$key]=ok
    TPS[$key]=$(median "${tps[@]}")
    CPU[$key]=n/a
    ((${#cpu[@]} == 0)) || CPU[$key]=$(median "${cpu[@]}" | awk '{ printf "%.1f", $1 }')
    FAILED[$key]=$failed
    TXN[$key]=$txn
    LOGINS[$key]=""
    ((logins_ok)) && LOGINS[$key]=$logins
    SCONNS[$key]=$sconns
    CONNECT_S[$key]=$(median "${conn[@]}")
    # Spread of the rounds' tps: (max - min) / median, in percent.
    ((${#tps[@]} < 2)) || TPS_SPREAD[$key]=$(printf '%s\n' "${tps[@]}" |
      awk -v m="${TPS[$key]}" 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 } END { if (m > 0) printf "%.0f", (hi - lo) * 100 / m }')
  elif ((nfail)); then
    STATUS[$key]=fail
  elif [[ -n "$other" ]]; then
    STATUS[$key]=$other
  fi
}

n_modes=$(wc -w <<<"$MODES")
TOTAL_RUNS=0
for wl in $RUN_ORDER; do
  for mode in $(wl_modes "$wl"); do
    for target in "${TARGETS[@]}"; do
      [[ "$(instance_for "$target" "$mode" "$wl")" == "n/a" ]] || TOTAL_RUNS=$((TOTAL_RUNS + ROUNDS))
    done
  done
done
log "warming up (direct select-only, $((DURATION < 5 ? DURATION : 5))s)"
PGPASSWORD=app timeout -k 10 $((DURATION + T_RUN_EXTRA)) "$PGBIN/pgbench" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app \
  -n -S -c 8 -j "$JOBS" -T $((DURATION < 5 ? DURATION : 5)) app >"$TMP/logs/warmup.out" 2>&1 ||
  warn "warm-up run failed: $(tail -n 2 "$TMP/logs/warmup.out" | tr '\n' ' ')"

log "$TOTAL_RUNS runs of ${DURATION}s: workloads [$RUN_ORDER], modes [$MODES], $ROUNDS round(s) of targets [${TARGETS[*]}]"
for wl in $RUN_ORDER; do
  for mode in $(wl_modes "$wl"); do
    for ((round = 1; round <= ROUNDS; round++)); do
      # Each round starts one target later (round 1: the list's order, round 2: from its second
      # target...), so no target always runs right after the same other one.
      n=${#TARGETS[@]}
      for ((k = 0; k < n; k++)); do
        run_one "$wl" "$mode" "${TARGETS[$(((k + round - 1) % n))]}" "$round"
      done
    done
    for target in "${TARGETS[@]}"; do aggregate "$wl|$mode|$target"; done
  done
done

# ------------------------------------------------------------------------------------------------
# 5b. Memory per idle client: a fresh proxy (transaction mode, trust, pool MANY_POOL_SIZE), its VmRSS
# before and after IDLE_CLIENTS idle logged-in connections (bench/idle_clients.py). With "tls"
# (tls-idle-memory) the proxy has the TLS rows' tls settings and every client logs in over TLS;
# its figures are keyed TARGET-tls.

declare -A IDLE_KB=() IDLE_DESC=() STOPPED=()
IDLE_DEADLINE=$((IDLE_CLIENTS / 50 > 60 ? IDLE_CLIENTS / 50 : 60)) # seconds for all the logins
idle_memory() { # TARGET (pgrelay | pgbouncer) [tls]
  local tls=${2:-} target=$1${2:+-$2} name=$1-idle-memory${2:+-$2} port conf out rc=0 before after ok
  local -a tlsarg=()
  [[ "$tls" != tls ]] || tlsarg=(--tls)
  pick_ports 1
  port=$PORT_PICKED
  if [[ "$target" == pgrelay* ]]; then
    if [[ -z "${RELAY_MODE_OK[transaction]:-}" ]]; then
      IDLE_DESC[$target]="skipped (pgrelay does not run in transaction mode)"
      return 0
    fi
    conf=$TMP/pgrelay/$name.conf
    write_pgrelay_conf "$conf" "$port" transaction trust "$MANY_POOL_SIZE" off "$tls"
    start_instance "$name" "$port" "$TMP/logs/$name.log" "'$PGRELAY_BIN' -f '$conf'" || {
      IDLE_DESC[$target]="fail (did not start)"
      return 0
    }
  else
    conf=$TMP/pgbouncer/$name.ini
    write_pgbouncer_conf "$conf" "$port" transaction trust "$MANY_POOL_SIZE" "$tls"
    [[ ${#AS_PG[@]} -eq 0 ]] || chown postgres: "$conf"
    touch "$TMP/logs/$name.log"
    start_instance "$name" "$port" "$TMP/logs/$name.log" "${AS_PG[*]} pgbouncer '$conf'" || {
      IDLE_DESC[$target]="fail (did not start)"
      return 0
    }
  fi
  # The first login of trustuser creates the pool and its welcome (a backend login); then idle.
  smoke "$name" trustuser "" "$tls" || PROC_NOTE[$name]="smoke test${tls:+ over TLS} failed"
  out=$(timeout -k 5 $((IDLE_DEADLINE + T_RUN_EXTRA)) /usr/bin/python3 "$REPO/bench/idle_clients.py" --port "$port" \
    --pid "${PROC_PID[$name]}" --clients "$IDLE_CLIENTS" --deadline "$IDLE_DEADLINE" "${tlsarg[@]}" 2>&1) || rc=$?
  echo "$out" >"$TMP/logs/$name.out"
  before=$(sed -n 's/.*before_kb=\([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
  after=$(sed -n 's/.*after_kb=\([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
  ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
  if ((rc == 0)) && [[ -n "$before" && -n "$after" ]]; then
    IDLE_KB[$target]=$(((after - before) * 1000 / IDLE_CLIENTS))
    IDLE_DESC[$target]="${IDLE_KB[$target]} KB (VmRSS $before → $after KB with $IDLE_CLIENTS idle clients)"
  else
    IDLE_DESC[$target]="fail (${ok:-?} of $IDLE_CLIENTS logged in; $(tail -n 2 <<<"$out" | tr '\n' ' '))"
    warn "idle-memory $target: ${IDLE_DESC[$target]}"
  fi
  log "idle-memory $target: ${IDLE_DESC[$target]}"
  if ! kill -0 "${PROC_PID[$name]}" 2>/dev/null; then
    exit_description "${PROC_PID[$name]}"
    warn "$name died during the idle-memory check ($EXIT_DESC)"
    return 0
  fi
  STOPPED[$name]=1
  stop_pid "${PROC_PID[$name]}"
}

if ((HAS_IDLE)); then
  log "idle-memory: $IDLE_CLIENTS idle clients on a fresh pgrelay and PgBouncer (transaction mode, trust)"
  idle_memory pgrelay
  idle_memory pgbouncer
fi
if ((HAS_TLS_IDLE)); then
  log "tls-idle-memory: $IDLE_CLIENTS idle TLS clients on a fresh pgrelay and PgBouncer (transaction mode, trust, TLS both sides)"
  idle_memory pgrelay tls
  idle_memory pgbouncer tls
fi

# ------------------------------------------------------------------------------------------------
# 6. The table.

cell_tps() { # KEY
  case "${STATUS[$1]:-}" in
    ok)
      printf '%.0f' "${TPS[$1]}"
      local notes=""
      ((${FAILED[$1]:-0} == 0)) || notes="${FAILED[$1]} failed"
      ((${FAIL_ROUNDS[$1]:-0} == 0)) || notes+="${notes:+, }${FAIL_ROUNDS[$1]} of $ROUNDS rounds failed"
      [[ -z "$notes" ]] || printf ' (%s)' "$notes"
      ;;
    skipped) printf 'skipped' ;;
    fail) printf 'fail' ;;
    *) printf 'n/a' ;;
  esac
}
cell_ratio() { # KEY_A KEY_B -> tps(a)/tps(b)
  if [[ "${STATUS[$1]:-}" == ok && "${STATUS[$2]:-}" == ok ]]; then
    awk -v a="${TPS[$1]}" -v b="${TPS[$2]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'
  else
    printf '—'
  fi
}
cell_cpu() { # KEY
  case "${STATUS[$1]:-}" in
    ok) printf '%s' "${CPU[$1]}" ;;
    skipped) printf 'skipped' ;;
    fail) printf 'fail' ;;
    *) printf 'n/a' ;;
  esac
}
cell_cpu_delta() { # KEY_A KEY_B -> CPU/txn(a) - CPU/txn(b), in µs
  if [[ "${STATUS[$1]:-}" == ok && "${STATUS[$2]:-}" == ok && "${CPU[$1]}" != n/a && "${CPU[$2]}" != n/a ]]; then
    awk -v a="${CPU[$1]}" -v b="${CPU[$2]}" 'BEGIN { printf "%+.1f", a - b }'
  else
    printf '—'
  fi
}

mode_label=1
((n_modes == 1)) && mode_label=0

table() {
  local hdr="| workload | direct tps | pgrelay LB off tps | ratio to direct | pgbouncer tps | pgrelay/pgbouncer | pgrelay LB off µs CPU/txn | pgbouncer µs CPU/txn |"
  local sep="|---|---:|---:|---:|---:|---:|---:|---:|"
  if ((LB_WANTED)); then
    hdr+=" pgrelay LB on tps | LB on/pgbouncer | pgrelay LB on µs CPU/txn | LB on − LB off CPU/txn (µs) |"
    sep+="---:|---:|---:|---:|"
  fi
  if ((WITH_PGPOOL)); then
    hdr+=" pgpool-II tps | pgrelay/pgpool-II | pgpool-II µs CPU/txn |"
    sep+="---:|---:|---:|"
  fi
  echo "$hdr"
  echo "$sep"
  local wl mode label d r b p l row
  for wl in $PGBENCH_WORKLOADS; do
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    for mode in $(wl_modes "$wl"); do
      d="$wl|$mode|direct" r="$wl|$mode|pgrelay" b="$wl|$mode|pgbouncer" p="$wl|$mode|pgpool" l="$wl|$mode|pgrelay-lb"
      row="| $label"
      ((mode_label)) && row+=" [$mode]"
      row+=" | $(cell_tps "$d") | $(cell_tps "$r") | $(cell_ratio "$r" "$d") | $(cell_tps "$b")"
      row+=" | $(cell_ratio "$r" "$b") | $(cell_cpu "$r") | $(cell_cpu "$b") |"
      if ((LB_WANTED)); then
        row+=" $(cell_tps "$l") | $(cell_ratio "$l" "$b") | $(cell_cpu "$l") | $(cell_cpu_delta "$l" "$r") |"
      fi
      if ((WITH_PGPOOL)); then
        row+=" $(cell_tps "$p") | $(cell_ratio "$r" "$p") | $(cell_cpu "$p") |"
      fi
      echo "$row"
    done
  done
}

# The issue's targets, each with the measured value and met / not met.
# tgt_ratio KEY_RELAY KEY_REF MIN REF_NAME [NAME] -> "measured | verdict" cells for pgrelay tps >=
# MIN x ref tps (medians of the rounds; a failed round of pgrelay fails the target).
tgt_ratio() {
  local r=$1 b=$2 min=$3 refname=$4 name=${5:-pgrelay} rs=${STATUS[$1]:-} bs=${STATUS[$2]:-}
  if [[ "$rs" == n/a ]]; then
    printf '%s: n/a | —' "$name"
    return 0
  fi
  if [[ "$rs" != ok ]]; then
    printf '%s: %s | not met' "$name" "${rs:-n/a}"
    return 0
  fi
  if [[ "$bs" != ok ]]; then
    if [[ "$refname" == PgBouncer ]]; then
      printf '%.0f tps, %s: %s | met (%s failed)' "${TPS[$r]}" "$refname" "${bs:-n/a}" "$refname"
    else
      printf '%.0f tps, %s: %s | — (no reference)' "${TPS[$r]}" "$refname" "${bs:-n/a}"
    fi
    return 0
  fi
  awk -v a="${TPS[$r]}" -v b="${TPS[$2]}" -v m="$min" -v n="$refname" -v fr="${FAILED[$r]:-0}" \
    -v fo="${FAIL_ROUNDS[$r]:-0}" -v rounds="$ROUNDS" 'BEGIN {
    x = (b > 0) ? a / b : 0
    printf "%.2f× %s (%.0f vs %.0f tps)", x, n, a, b
    if (fo > 0) printf ", %d of %d rounds failed | not met (failed rounds)", fo, rounds
    else if (fr > 0) printf ", %d failed transactions | not met (failed transactions)", fr
    else printf " | %s", (x >= m) ? "met" : "not met"
  }'
}

# The issue's goal for load balancing: at most LB_MAX_US µs more proxy CPU per transaction than
# with load balancing off. tgt_lb KEY_ON KEY_OFF -> "measured | verdict".
LB_MAX_US=3
tgt_lb() {
  local on=$1 off=$2 os=${STATUS[$1]:-} fs=${STATUS[$2]:-}
  if [[ "$os" == n/a || -z "$os" ]]; then
    printf 'LB on: n/a | —'
  elif [[ "$os" != ok ]]; then
    printf 'LB on: %s | not met' "$os"
  elif [[ "$fs" != ok || "${CPU[$on]}" == n/a || "${CPU[$off]}" == n/a ]]; then
    printf 'LB on %s µs/txn, LB off: %s | — (no reference)' "${CPU[$on]}" "${fs:-n/a}"
  else
    awk -v a="${CPU[$on]}" -v b="${CPU[$off]}" -v m="$LB_MAX_US" -v fo="${FAIL_ROUNDS[$on]:-0}" 'BEGIN {
      printf "%+.1f µs (%.1f vs %.1f µs/txn)", a - b, a, b
      if (fo > 0) printf ", %d rounds failed | not met (failed rounds)", fo
      else printf " | %s", (a - b <= m) ? "met" : "not met"
    }'
  fi
}

# The TLS rows' CPU goal: pgrelay's µs CPU per transaction at most PgBouncer's.
# tgt_cpu KEY_RELAY KEY_PGBOUNCER -> "measured | verdict" (a failed PgBouncer counts as met).
tgt_cpu() {
  local r=$1 b=$2 rs=${STATUS[$1]:-} bs=${STATUS[$2]:-}
  if [[ "$rs" != ok ]]; then
    printf 'pgrelay: %s | not met' "${rs:-n/a}"
  elif [[ "$bs" != ok ]]; then
    printf 'pgrelay %s µs/txn, PgBouncer: %s | met (PgBouncer failed)' "${CPU[$r]}" "${bs:-n/a}"
  elif [[ "${CPU[$r]}" == n/a || "${CPU[$b]}" == n/a ]]; then
    printf 'pgrelay %s, PgBouncer %s µs/txn | — (no CPU figure)' "${CPU[$r]}" "${CPU[$b]}"
  else
    awk -v a="${CPU[$r]}" -v b="${CPU[$b]}" -v fr="${FAILED[$r]:-0}" -v fo="${FAIL_ROUNDS[$r]:-0}" -v rounds="$ROUNDS" 'BEGIN {
      printf "%.1f vs %.1f µs/txn", a, b
      if (b > 0) printf " (%.2f×)", a / b
      if (fo > 0) printf ", %d of %d rounds failed | not met (failed rounds)", fo, rounds
      else if (fr > 0) printf ", %d failed transactions | not met (failed transactions)", fr
      else printf " | %s", (a <= b) ? "met" : "not met"
    }'
  fi
}

# tls-idle-memory: RSS per 1,000 idle TLS clients against the plaintext figure of the same proxy.
# idle_tls_ratio TARGET -> "X KB per 1,000 TLS clients vs Y KB plaintext (R×)"; sets IDLE_RATIO.
IDLE_RATIO=""
idle_tls_ratio() {
  local t=${IDLE_KB[$1-tls]:-} p=${IDLE_KB[$1]:-}
  IDLE_RATIO=""
  if [[ -z "$t" ]]; then
    printf '%s' "${IDLE_DESC[$1-tls]:-n/a}"
    return 0
  fi
  printf '%s KB per 1,000 TLS clients %s vs %s KB plaintext' "$t" "${IDLE_DESC[$1-tls]#"$t KB "}" "${p:-n/a}"
  if [[ -n "$p" ]] && ((p > 0)); then
    IDLE_RATIO=$(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }')
    printf ' (%s×)' "$IDLE_RATIO"
  fi
}

targets() {
  local wl mode label r b d m
  echo "| target | run | measured | verdict |"
  echo "|---|---|---|---|"
  for wl in $PGBENCH_WORKLOADS; do
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    for mode in $(wl_modes "$wl"); do
      echo "| pgrelay ≥ PgBouncer | $label [$mode] | $(tgt_ratio "$wl|$mode|pgrelay" "$wl|$mode|pgbouncer" 1 PgBouncer) |"
      if ((LB_WANTED)) && lb_workload "$wl"; then
        echo "| pgrelay LB on ≥ PgBouncer | $label [$mode] | $(tgt_ratio "$wl|$mode|pgrelay-lb" "$wl|$mode|pgbouncer" 1 PgBouncer "pgrelay LB on") |"
      fi
    done
  done
  if ((LB_WANTED)); then
    for wl in $PGBENCH_WORKLOADS; do
      lb_workload "$wl" || continue
      IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
      for mode in $MODES; do
        echo "| load balancing adds ≤ $LB_MAX_US µs CPU/txn over LB off | $label [$mode] | $(tgt_lb "$wl|$mode|pgrelay-lb" "$wl|$mode|pgrelay") |"
      done
    done
  fi
  for wl in select-simple select-extended select-prepared; do
    [[ " $PGBENCH_WORKLOADS " == *" $wl "* ]] || continue
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    for mode in $MODES; do
      echo "| pgrelay ≥ 0.8× direct (select-only) | $label [$mode] | $(tgt_ratio "$wl|$mode|pgrelay" "$wl|$mode|direct" 0.8 direct) |"
    done
  done
  if [[ " $PGBENCH_WORKLOADS " == *" connect-scram "* ]]; then
    for mode in $MODES; do
      echo "| -C under SCRAM: pgrelay ≥ PgBouncer | select-only -C (SCRAM) [$mode] | $(tgt_ratio "connect-scram|$mode|pgrelay" "connect-scram|$mode|pgbouncer" 1 PgBouncer) |"
    done
  fi
  if [[ " $PGBENCH_WORKLOADS " == *" connect-trust "* ]]; then
    for mode in $MODES; do
      echo "| -C under trust: pgrelay ≥ 10× direct | select-only -C (trust) [$mode] | $(tgt_ratio "connect-trust|$mode|pgrelay" "connect-trust|$mode|direct" 10 direct) |"
    done
  fi
  for wl in many-clients many-clients-prepared; do
    [[ " $PGBENCH_WORKLOADS " == *" $wl "* ]] || continue
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    echo "| $MANY_CLIENTS clients, transaction mode: pgrelay ≥ direct | $label [transaction] | $(tgt_ratio "$wl|transaction|pgrelay" "$wl|transaction|direct" 1 direct) |"
  done
  if ((HAS_IDLE)); then
    local v="not met" kb=${IDLE_KB[pgrelay]:-}
    if [[ -n "$kb" ]]; then
      ((kb <= 2048)) && v=met
    fi
    echo "| ≤ 2 MB (2048 KB) RSS per 1,000 idle clients | pgrelay, transaction mode, trust | ${IDLE_DESC[pgrelay]:-n/a}; PgBouncer: ${IDLE_DESC[pgbouncer]:-n/a} | $v |"
  fi
  # The TLS rows' own goals (the rows' "pgrelay ≥ PgBouncer" lines are above).
  for wl in tls-select-simple tls-select-extended tls-select-prepared; do
    [[ " $PGBENCH_WORKLOADS " == *" $wl "* ]] || continue
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    for mode in $MODES; do
      echo "| TLS: pgrelay µs CPU/txn ≤ PgBouncer | $label [$mode] | $(tgt_cpu "$wl|$mode|pgrelay" "$wl|$mode|pgbouncer") |"
    done
  done
  if [[ " $PGBENCH_WORKLOADS " == *" tls-connect-scram "* ]]; then
    IFS='|' read -r _ _ _ _ label <<<"${WL[tls-connect-scram]}"
    for mode in $MODES; do
      echo "| -C with TLS: pgrelay connections/s ≥ PgBouncer | $label [$mode] | $(tgt_ratio "tls-connect-scram|$mode|pgrelay" "tls-connect-scram|$mode|pgbouncer" 1 PgBouncer) |"
    done
  fi
  if ((HAS_TLS_IDLE)); then
    local rel bou v="not met"
    rel=$(idle_tls_ratio pgrelay)
    idle_tls_ratio pgrelay >/dev/null
    if [[ -n "$IDLE_RATIO" ]]; then
      awk -v x="$IDLE_RATIO" 'BEGIN { exit !(x <= 2) }' && v=met
    elif [[ -n "${IDLE_KB[pgrelay-tls]:-}" ]]; then
      v="— (no plaintext figure)"
    fi
    bou=$(idle_tls_ratio pgbouncer)
    echo "| idle TLS clients: pgrelay RSS per client ≤ 2× plaintext | pgrelay, transaction mode, trust, $IDLE_CLIENTS clients | pgrelay: $rel; PgBouncer: $bou | $v |"
  fi
  # CPU per transaction: reported against PgBouncer's (no threshold given); per row in the table.
  local n=0 lower=0 ratios=""
  for wl in $PGBENCH_WORKLOADS; do
    for mode in $(wl_modes "$wl"); do
      r="$wl|$mode|pgrelay" b="$wl|$mode|pgbouncer"
      [[ "${STATUS[$r]:-}" == ok && "${STATUS[$b]:-}" == ok ]] || continue
      [[ "${CPU[$r]}" != n/a && "${CPU[$b]}" != n/a ]] || continue
      n=$((n + 1))
      ratios+="${CPU[$r]} ${CPU[$b]}"$'\n'
    done
  done
  if ((n > 0)); then
    m=$(awk 'NF == 2 && $2 > 0 { x = $1 / $2; s += log(x); c++; if ($1 <= $2) l++; if (min == "" || x < min) min = x; if (x > max) max = x }
      END { printf "%d|%.2f|%.2f|%.2f", l, exp(s / c), min, max }' <<<"$ratios")
    IFS='|' read -r lower d r b <<<"$m"
    echo "| CPU per transaction vs PgBouncer (reported) | the $n rows where both ran | pgrelay/PgBouncer µs CPU per txn: geometric mean ${d}×, range ${r}×–${b}×; pgrelay lower or equal in $lower of $n rows (per row: table above) | $( ((lower == n)) && echo "lower everywhere" || echo "higher in $((n - lower)) rows") |"
  fi
}

# Pooling check: backend logins during each run (pg_stat_database.sessions of database app) and
# the proxy's server connections to the primary right after it.
pooling_check() {
  local wl mode label r b l row hdr="| run | transactions (pgrelay LB off) | pgrelay backend logins | pgrelay server conns | transactions (PgBouncer) | PgBouncer backend logins | PgBouncer server conns |"
  local sep="|---|---:|---:|---:|---:|---:|---:|"
  if ((LB_WANTED)); then
    hdr+=" transactions (pgrelay LB on) | LB on backend logins | LB on server conns (node $(seq -s ' + ' 0 $((${#BACKEND_PORTS[@]} - 1)))) |"
    sep+="---:|---:|---:|"
  fi
  echo "$hdr"
  echo "$sep"
  for wl in $PGBENCH_WORKLOADS; do
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    for mode in $(wl_modes "$wl"); do
      r="$wl|$mode|pgrelay" b="$wl|$mode|pgbouncer" l="$wl|$mode|pgrelay-lb"
      row="| $label [$mode] | ${TXN[$r]:-—} | ${LOGINS[$r]:-—} | ${SCONNS[$r]:-—} | ${TXN[$b]:-—} | ${LOGINS[$b]:-—} | ${SCONNS[$b]:-—} |"
      ((LB_WANTED)) && row+=" ${TXN[$l]:-—} | ${LOGINS[$l]:-—} | ${SCONNS[$l]:-—} |"
      echo "$row"
    done
  done
  local t line
  for wl in $PGBENCH_WORKLOADS; do
    [[ "$wl" == many-clients* ]] || continue
    IFS='|' read -r _ _ _ _ label <<<"${WL[$wl]}"
    line=""
    for t in direct pgrelay pgbouncer; do
      line+="${line:+, }$t ${CONNECT_S[$wl|transaction|$t]:-?} s"
    done
    echo
    echo "$label: all $MANY_CLIENTS clients connected after $line (pgbench -T includes this phase; tps and CPU/txn exclude it)."
  done
}

notes() {
  local name n msg mode
  ((${#EXTRA_NOTES[@]} == 0)) || printf '%s\n' "${EXTRA_NOTES[@]}"
  for mode in $MODES; do
    [[ -z "${RELAY_MODE_NOTE[$mode]:-}" ]] || echo "- ${RELAY_MODE_NOTE[$mode]}"
  done
  local lines=()
  for name in "${!PROC_PID[@]}"; do
    msg="${PROC_NOTE[$name]:-}"
    if [[ -z "${STOPPED[$name]:-}" ]] && ! kill -0 "${PROC_PID[$name]}" 2>/dev/null; then
      exit_description "${PROC_PID[$name]}"
      msg="${msg}${msg:+; }$EXIT_DESC before the end"
    fi
    if [[ "$name" == pgrelay-* ]]; then
      n=$(grep -cvE '^---- restart' "${PROC_LOG[$name]}" || true)
      ((n == 0)) || msg="${msg}${msg:+; }$n log line(s) at level warning or above (logs/$name.log)"
    fi
    [[ -z "$msg" ]] || lines+=("- $name: $msg")
  done
  ((${#lines[@]} == 0)) || printf '%s\n' "${lines[@]}" | sort
  local t f
  for t in "${TARGETS[@]}"; do
    f=$TMP/server-problems-$t.txt
    [[ -s "$f" ]] || continue
    echo "- PostgreSQL logs (all nodes) during the $t runs: $(wc -l <"$f") problem lines; most frequent:"
    # shellcheck disable=SC2016 # backquotes are Markdown
    sort "$f" | uniq -c | sort -rn | head -n 3 | sed -E 's/^ *([0-9]+) (.*)$/  - \1 × `\2`/'
  done
  # How far the rounds of one cell were apart: a hint of the noise behind the medians.
  if ((ROUNDS > 1 && ${#TPS_SPREAD[@]} > 0)); then
    local k w md tg
    for k in "${!TPS_SPREAD[@]}"; do printf '%s\t%s\n' "${TPS_SPREAD[$k]}" "$k"; done | sort -n |
      awk -F'\t' '{ v[NR] = $1; k[NR] = $2 } END { printf "%s\t%s\t%s\n", v[int((NR + 1) / 2)], v[NR], k[NR] }' >"$TMP/spread.txt"
    IFS=$'\t' read -r md n k <"$TMP/spread.txt"
    IFS='|' read -r w mode tg <<<"$k"
    IFS='|' read -r _ _ _ _ msg <<<"${WL[$w]}"
    echo "- Spread of tps between the $ROUNDS rounds of a cell ((max − min) / median): median $md %, largest $n % ($msg [$mode], $tg); per round: latest-runs.tsv."
  fi
  # Where the load-balanced SELECTs went (SHOW pool_nodes: select_cnt per node since its start).
  local rows
  for mode in $MODES; do
    [[ -n "${LB_OK[$mode]:-}" ]] || continue
    name=pgrelay-lb-$mode-scram
    kill -0 "${PROC_PID[$name]}" 2>/dev/null || continue
    rows=$(PGPASSWORD=app timeout "$T_SMOKE" "$PGBIN/psql" -X -At -F'|' -h 127.0.0.1 -p "${PROC_PORT[$name]}" \
      -U app -d app -c 'SHOW pool_nodes' 2>/dev/null || true)
    [[ -n "$rows" ]] || continue
    echo "- $name, SELECTs sent to each node (SHOW pool_nodes select_cnt): $(awk -F'|' 'NF > 8 { printf "%snode %s (%s) %s", sep, $1, $7, $9; sep = ", " }' <<<"$rows")."
  done
}

PG_VERSION=$("$PGBIN/pgbench" --version | awk '{print $3}')
BOUNCER_VERSION=$(pgbouncer --version 2>/dev/null | head -n 1 | awk '{print $2}')
POOL_VERSION=""
((WITH_PGPOOL)) && POOL_VERSION=$(pgpool --version 2>&1 | head -n 1 | awk '{print $3}')
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
[[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n 1)" ]] && GIT_REV+=" (uncommitted changes)"

mkdir -p "$RESULTS_DIR/logs"
rm -f "$RESULTS_DIR"/logs/*.log
for name in "${!PROC_LOG[@]}"; do cp -f "${PROC_LOG[$name]}" "$RESULTS_DIR/logs/" 2>/dev/null || true; done
cp -f "$RUNS_TSV" "$RESULTS_DIR/latest-runs.tsv"

TABLE=$(table)
TARGETS_MD=$(targets)
POOLING_MD=$(pooling_check)
notes >"$TMP/notes.txt"
NOTES=$(cat "$TMP/notes.txt")
report() {
  echo "$TABLE"
  echo
  echo "Targets (from the issue; verdicts use the medians of this run's $ROUNDS round(s), see the caveats in bench/README.md):"
  echo
  echo "$TARGETS_MD"
  echo
  echo "Pooling check (transactions and backend logins summed over the rounds, logins from pg_stat_database.sessions"
  echo "of every node, approximate; the proxy's connections to the primary, or to each node with LB on, after the last round):"
  echo
  echo "$POOLING_MD"
  if [[ -n "$NOTES" ]]; then
    echo
    echo "Notes:"
    echo "$NOTES"
  fi
}
many_desc=""
((HAS_MANY)) && many_desc=" ($MANY_POOL_SIZE in the $MANY_CLIENTS-client rows)"
{
  echo "# pgrelay benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "pgrelay $GIT_REV (release build), PostgreSQL $PG_VERSION, PgBouncer $BOUNCER_VERSION${POOL_VERSION:+, pgpool-II $POOL_VERSION};"
  echo "$(nproc) cores, $(uname -r); pgbench -s $SCALE, ${DURATION}s per run, -j $JOBS, pool size $POOL_SIZE$many_desc;"
  echo "pgrelay LB off and LB on over ${#BACKEND_PORTS[@]} node(s); each cell is the median of $ROUNDS round(s), every round running the targets"
  echo "one after the other (${TARGETS[*]}, rotated by one target per round). Compare ratios within this run only (bench/README.md)."
  if ((HAS_TLS)); then
    echo "TLS rows: pgbench sslmode=require to the proxy (direct: to PostgreSQL), each proxy sslmode=require to PostgreSQL;"
    echo "server certificate $TLS_KEY (openssl); libpq to PostgreSQL negotiated $TLS_DESC."
  fi
  echo
  report
  echo
  echo "Raw numbers per run: latest-runs.tsv; proxy logs: logs/."
} >"$RESULTS_DIR/latest.md"

echo
report
echo
log "written to bench/results/latest.md (raw runs: bench/results/latest-runs.tsv)"
exit 0
