#!/usr/bin/env bash
# node-postgres for the driver matrix (tests/integration/test_driver_matrix.py): installs nodejs and
# npm from Debian only when `node` is missing, then `npm ci` in tests/integration/node when its
# node_modules is missing (versions pinned by tests/integration/node/package-lock.json).
# Idempotent: returns at once when both are present. Called from scripts/deps.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_DIR="$ROOT/tests/integration/node"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node_deps.sh: node or npm missing; installing nodejs npm from Debian"
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      echo "node_deps.sh: not root; install them with:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends nodejs npm" >&2
      exit 1
    fi
  else
    SUDO=()
  fi
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
fi

if [[ ! -d "$NODE_DIR/node_modules" ]]; then
  echo "node_deps.sh: npm ci in $NODE_DIR"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund
else
  echo "node_deps.sh: $NODE_DIR/node_modules present"
fi
