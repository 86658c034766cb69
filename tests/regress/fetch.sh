#!/usr/bin/env bash
# Fetch PostgreSQL 15's regression suite from Debian and build what pg_regress needs.
#   tests/regress/fetch.sh [CACHE]      (default /var/cache/pgrelay-regress; run as root)
# Prints, as its last line, the prepared suite folder: CACHE/postgresql-15-<version>.
# Everything comes from Debian's archive (deb-src of the bookworm suite named in
# /etc/apt/sources.list.d/debian.sources); a cache that is complete is reused without network.
set -euo pipefail
CACHE=${1:-${PGRELAY_REGRESS_CACHE:-/var/cache/pgrelay-regress}}
PGVER=15
PGLIB=/usr/lib/postgresql/$PGVER/lib
log() { echo "regress/fetch: $*" >&2; }
die() {
  echo "regress/fetch: error: $*" >&2
  exit 1
}
[[ $(id -u) -eq 0 ]] || die "run as root (apt-get, and the cluster runs as the postgres user)"

# The installed server's Debian version: the source must match it (expected outputs, regress.so).
srv_ver=$(dpkg-query -W -f='${Version}' "postgresql-$PGVER" 2>/dev/null || true)
[[ -n "$srv_ver" ]] || die "postgresql-$PGVER is not installed (run scripts/deps.sh)"
upstream=${srv_ver%%-*}
SRC=$CACHE/postgresql-$PGVER-$upstream
STAMP=$SRC/.pgrelay-built

if [[ -f "$STAMP" && -f "$SRC/src/test/regress/regress.so" ]]; then
  log "reusing $SRC"
  echo "$SRC"
  exit 0
fi

# 1. A deb-src entry for the main bookworm suite, copied from debian.sources.
have_src() {
  grep -rqsE '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]].*debian)' /etc/apt/sources.list /etc/apt/sources.list.d/
}
apt_updated=0
if ! have_src; then
  main=/etc/apt/sources.list.d/debian.sources
  [[ -f "$main" ]] || die "no deb-src entry and no $main to copy one from"
  # The first stanza (the main archive); keep its URIs, first Suite (bookworm) and Signed-By.
  uris=$(awk '/^$/{exit} /^URIs:/{sub(/^URIs:[ \t]*/,""); print; exit}' "$main")
  suite=$(awk '/^$/{exit} /^Suites:/{print $2; exit}' "$main")
  signed=$(awk '/^$/{exit} /^Signed-By:/{sub(/^Signed-By:[ \t]*/,""); print; exit}' "$main")
  [[ -n "$uris" && -n "$suite" ]] || die "cannot read URIs/Suites from $main"
  log "adding deb-src for $uris $suite (/etc/apt/sources.list.d/pgrelay-src.sources)"
  {
    echo "# added by pgrelay tests/regress/fetch.sh: source packages for the regression suite"
    echo "Types: deb-src"
    echo "URIs: $uris"
    echo "Suites: $suite"
    echo "Components: main"
    [[ -n "$signed" ]] && echo "Signed-By: $signed"
  } >/etc/apt/sources.list.d/pgrelay-src.sources
  apt-get update -q >&2
  apt_updated=1
fi

# 2. Build dependencies: PGXS headers of the installed server version, dpkg-source.
need=()
dpkg-query -W -f='${Status}' "postgresql-server-dev-$PGVER" 2>/dev/null | grep -q "ok installed" ||
  need+=("postgresql-server-dev-$PGVER=$srv_ver")
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
if ((${#need[@]})); then
  ((apt_updated)) || apt-get update -q >&2
  apt_updated=1
  log "installing ${need[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2; then
    log "warning: retrying without pinning postgresql-server-dev-$PGVER to $srv_ver"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]%%=*}" >&2 ||
      die "apt-get install ${need[*]} failed"
  fi
fi
PGXS_MK=$($PGLIB/../bin/pg_config --pgxs 2>/dev/null || pg_config --pgxs)
[[ -f "$PGXS_MK" ]] || die "PGXS makefile not found ($PGXS_MK)"

# 3. The source package, unpacked into the cache.
mkdir -p -- "$CACHE"
chmod 755 -- "$CACHE"
if [[ ! -f "$SRC/src/test/regress/parallel_schedule" ]]; then
  tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
  log "apt-get source postgresql-$PGVER=$srv_ver into $CACHE"
  if ! (cd "$tmp" && apt-get source -q "postgresql-$PGVER=$srv_ver" >&2); then
    ((apt_updated)) || { apt-get update -q >&2; apt_updated=1; }
    if ! (cd "$tmp" && apt-get source -q "postgresql-$PGVER=$srv_ver" >&2); then
      # The server came from another suite (e.g. bookworm-security) than the deb-src entry: take
      # the suite's version; expected outputs rarely change within a major version.
      log "warning: no source for $srv_ver; taking the newest postgresql-$PGVER source available"
      (cd "$tmp" && apt-get source -q "postgresql-$PGVER" >&2) || die "apt-get source postgresql-$PGVER failed"
    fi
  fi
  d=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name "postgresql-$PGVER-*" | head -n 1)
  [[ -n "$d" && -f "$d/src/test/regress/parallel_schedule" ]] || die "unexpected source layout in $tmp"
  rm -rf -- "$SRC"
  mv -- "$d" "$SRC"
  rm -rf -- "$tmp"
fi

# 4. regress.so (the suite's C functions) against the installed server, with PGXS; the contrib/spi
#    modules the triggers test loads (autoinc, refint) are Debian's own, copied next to it.
R=$SRC/src/test/regress
log "building regress.so with PGXS ($PGXS_MK)"
make -C "$R" -f /dev/stdin PGXS="$PGXS_MK" >&2 <<'MK'
MODULES = regress
PGFILEDESC = "regression test functions for pgrelay's run of the suite"
include $(PGXS)
MK
for m in autoinc refint; do
  [[ -f "$PGLIB/$m.so" ]] || die "$PGLIB/$m.so missing (package postgresql-$PGVER)"
  cp -f -- "$PGLIB/$m.so" "$R/$m.so"
done

# 5. pg_regress: Debian's server package ships it under PGXS; build it only when absent.
if [[ -x "$PGLIB/pgxs/src/test/regress/pg_regress" ]]; then
  ln -sf -- "$PGLIB/pgxs/src/test/regress/pg_regress" "$R/pg_regress.bin"
else
  die "pg_regress not found at $PGLIB/pgxs/src/test/regress/pg_regress (postgresql-server-dev-$PGVER ships it)"
fi
chmod -R a+rX -- "$SRC"
touch "$STAMP"
log "suite ready in $SRC"
echo "$SRC"
