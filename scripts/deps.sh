#!/usr/bin/env bash
# Install the Debian packages pgrelay needs to build and test. Idempotent: when every package is
# already installed it returns at once without touching apt. Bench-only packages (pgbouncer, pgpool2)
# are installed by the bench scripts, not here.
set -euo pipefail

PACKAGES=(
  build-essential meson ninja-build pkg-config
  libuv1-dev libconfig-dev libssl-dev libpq-dev libcmocka-dev libpg-query-dev libprotobuf-c-dev
  postgresql postgresql-contrib
  python3-psycopg python3-pytest
  python3-asyncpg libpostgresql-jdbc-java openjdk-17-jdk-headless
  golang-go golang-github-jackc-pgx-v4-dev
  clang libclang-rt-14-dev clang-format
  libhttp-parser-dev haproxy python3-prometheus-client
  prometheus chromium python3-websocket
  libcurl4-openssl-dev libjson-c-dev etcd-server etcd-client
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

# node-postgres for the driver tests (Debian's nodejs/npm only if node is missing; npm ci once).
bash "$(dirname "${BASH_SOURCE[0]}")/node_deps.sh"

if ((${#missing[@]} == 0)); then
  echo "deps.sh: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "deps.sh: missing packages: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "deps.sh: not root; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=()
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "deps.sh: installed ${missing[*]}"
