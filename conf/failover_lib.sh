# Shared by conf/failover.sh and conf/follow_primary.sh (sourced, not run). The caller sets
# SCRIPT (its name for log lines), PGUSER_ (role to connect as), CT (connect timeout, seconds).
# Provides: log, q HOST PORT SQL, as_owner DATADIR CMD..., PGBIN and PSQL.

log() { echo "$SCRIPT: $*" >&2; }

# PostgreSQL binaries: $PGBIN, else the newest /usr/lib/postgresql/*/bin (Debian), else PATH.
if [[ -z "${PGBIN:-}" ]]; then
  PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
PSQL=$PGBIN/psql
[[ -x "$PSQL" ]] || PSQL=$(command -v psql || true)
[[ -n "$PSQL" ]] || {
  log "psql not found (set PGBIN)"
  exit 1
}

# q HOST PORT SQL: one value, or nothing (and status 1) when the node does not answer in time.
q() {
  PGCONNECT_TIMEOUT=$CT timeout $((CT + 3)) "$PSQL" -X -A -t -q -h "$1" -p "$2" -U "$PGUSER_" \
    -d "${PGDB_:-postgres}" -c "$3" 2>/dev/null
}

# as_owner DATADIR CMD...: runs CMD as the owner of DATADIR when root (PostgreSQL's tools refuse
# root), as the current user otherwise.
as_owner() {
  local dir=$1
  shift
  if [[ $(id -u) -eq 0 ]]; then
    local owner
    owner=$(stat -c %U -- "$dir") || return 1
    runuser -u "$owner" -- "$@"
  else
    "$@"
  fi
}
