# shellcheck shell=bash disable=SC2034,SC2016
# Shared by conf/recovery_1st_stage.sh and conf/remote_start.sh (sourced, not run). The caller sets
# SCRIPT (its name for log lines) and passes its arguments on: "$@" are the placeholders
# %d %h %p %D %m %H %M %P %r %R %N %S; the PGRELAY_* environment variables, when set, win.
#
# Provides: ID HOST PORT DIR (the node to recover), P_ID P_HOST P_PORT (the current primary),
# APP (the node's application_name), PGUSER_, CT, q HOST PORT SQL (from failover_lib.sh), sq WORD
# (POSIX shell quoting), REMOTE (1 when the node's commands go over ssh) and on_node CMD... (runs
# CMD on the node's machine as the owner of its data directory: locally through runuser when
# root, or over ssh).
#
# Where the node's commands run (pgpool-II's runbook layout): locally when the node's host is
# this machine (localhost, 127.x, ::1, this host's name or one of its addresses), else over ssh
# as PGRELAY_SSH_USER (default postgres) with key authentication set up beforehand:
#   PGRELAY_SSH        the ssh command (default: ssh -o BatchMode=yes -o ConnectTimeout=10
#                      -o StrictHostKeyChecking=accept-new)
#   PGRELAY_SSH_USER   the remote user that owns the data directory (default postgres)
#   RECOVERY_SSH       auto (default) | always | never
#   RECOVERY_REMOTE_PGBIN  PostgreSQL binaries on the node (default: $PGBIN)
# Over ssh, passwords come from the remote user's ~/.pgpass (PGPASSWORD is not forwarded).

ID=${PGRELAY_FAILED_NODE_ID-${1-}}
HOST=${PGRELAY_FAILED_HOST-${2-}}
PORT=${PGRELAY_FAILED_PORT-${3-}}
DIR=${PGRELAY_FAILED_DATA_DIR-${4-}}
P_ID=${PGRELAY_NEW_MAIN_NODE_ID-${5-}}
P_HOST=${PGRELAY_NEW_MAIN_HOST-${6-}}
P_PORT=${PGRELAY_NEW_MAIN_PORT-${9-}}

PGUSER_=${RECOVERY_PGUSER:-postgres}
CT=${RECOVERY_CONNECT_TIMEOUT:-2}

# shellcheck source=conf/failover_lib.sh
. "$HERE/failover_lib.sh" || exit 1

if [[ -z "$ID" || -z "$HOST" || -z "$PORT" || -z "$DIR" ]]; then
  log "the node to recover needs an id, host, port and data directory (%d %h %p %D); got '$ID' '$HOST' '$PORT' '$DIR'"
  exit 1
fi

sq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

host_is_local() {
  local h=$1 a
  case "$h" in
    localhost | localhost.* | 127.* | ::1 | "") return 0 ;;
  esac
  [[ "$h" == "$(hostname 2>/dev/null)" || "$h" == "$(hostname -f 2>/dev/null)" ]] && return 0
  for a in $(hostname -I 2>/dev/null); do
    [[ "$h" == "$a" ]] && return 0
  done
  return 1
}

case "${RECOVERY_SSH:-auto}" in
  always) REMOTE=1 ;;
  never) REMOTE=0 ;;
  *) if host_is_local "$HOST"; then REMOTE=0; else REMOTE=1; fi ;;
esac
SSH_USER=${PGRELAY_SSH_USER:-postgres}
read -r -a SSH_CMD <<<"${PGRELAY_SSH:-ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=accept-new}"
NODE_PGBIN=${RECOVERY_REMOTE_PGBIN:-$PGBIN}
[[ $REMOTE == 1 ]] || NODE_PGBIN=$PGBIN

# on_node CMD...: CMD on the node's machine as the owner of its data directory (or of the folder
# that will hold it). Every word is quoted for a POSIX remote shell.
on_node() {
  if [[ $REMOTE == 1 ]]; then
    local line="" w
    for w in "$@"; do line+="$(sq "$w") "; done
    "${SSH_CMD[@]}" "$SSH_USER@$HOST" "$line"
  else
    local owned=$DIR
    [[ -e "$owned" ]] || owned=$(dirname -- "$DIR")
    as_owner "$owned" "$@"
  fi
}

# The node's application_name: pgrelay's backends[].application_name, else the one in its
# configuration files, else pgrelay_nodeN.
node_conf_value() { # KEY: the last value of KEY in the node's *.conf files ("" if none)
  on_node sh -c 'cat "$1"/*.conf "$1"/postgresql.auto.conf 2>/dev/null' _ "$DIR" |
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*'\(.*\)'.*/\1/p" | tail -n 1
}
APP=${PGRELAY_FAILED_APPLICATION_NAME:-}
if [[ -z "$APP" ]]; then
  APP=$(node_conf_value primary_conninfo | sed -n "s/.*application_name=\([^ ']*\).*/\1/p")
fi
APP=${APP:-pgrelay_node$ID}
