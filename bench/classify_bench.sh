#!/usr/bin/env bash
# Builds bench/classify_bench.c with gcc -O2 against the classifier sources and libpg_query, runs
# it, and prints a Markdown table (ns per classification, cache off and on).
# Usage: bench/classify_bench.sh [uncached-rounds [cached-rounds]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc=${CC:-gcc}
"$cc" -std=c17 -O2 -DNDEBUG -D_GNU_SOURCE -Wall -Wextra -Werror -I"$root/src" \
	"$root/bench/classify_bench.c" "$root/src/route/classify.c" \
	"$root/src/route/classify_cache.c" "$root/src/route/normalize.c" -lpg_query -o "$out/classify_bench"
echo "classify_bench: $("$cc" --version | head -1), $(nproc) cores, $(uname -m)"
"$out/classify_bench" "$@"
