#!/usr/bin/env bash
# Builds and runs pgrelay's fuzz harnesses (tests/fuzz/fuzz_*.c). Not part of the meson build.
#
#   tests/fuzz/run.sh [SECONDS] [HARNESS...]   clang + libFuzzer (ASan, UBSan): fuzz each harness
#                                              for SECONDS (default 30), starting from and adding
#                                              to tests/fuzz/corpus/<harness>/ (new inputs go to a
#                                              scratch corpus; crashes to the scratch dir)
#   tests/fuzz/run.sh --replay [HARNESS...]    gcc (ASan, UBSan) against replay_main.c: run every
#                                              file of tests/fuzz/corpus/<harness>/ once; what CI
#                                              calls. Exits non-zero on the first failure.
#
# Environment: CC_FUZZ (default clang), CC_REPLAY (default gcc), FUZZ_OUT (scratch directory,
# default a new mktemp -d; builds and findings stay there).
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../.." && pwd)
ALL_HARNESSES=(fuzz_frame fuzz_startup)
SOURCES=("$ROOT"/src/protocol/frame.c "$ROOT"/src/protocol/reader.c
	"$ROOT"/src/protocol/builder.c "$ROOT"/src/protocol/startup.c "$ROOT"/src/util/log.c)
WARN=(-std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes
	-Wstrict-prototypes -Wvla -Wformat=2 -Wimplicit-fallthrough -Wno-format-nonliteral)
# shellcheck disable=SC2054 # the commas belong to one compiler flag
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

usage() {
	echo "usage: $0 [SECONDS] [HARNESS...] | $0 --replay [HARNESS...]" >&2
	exit 2
}

mode=fuzz
seconds=30
if [[ ${1:-} == --replay ]]; then
	mode=replay
	shift
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
	seconds=$1
	shift
elif [[ ${1:-} == -* ]]; then
	usage
fi
harnesses=("$@")
((${#harnesses[@]})) || harnesses=("${ALL_HARNESSES[@]}")
for h in "${harnesses[@]}"; do
	[[ -f $HERE/$h.c ]] || {
		echo "run.sh: no harness $HERE/$h.c" >&2
		exit 2
	}
done

out=${FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/pgrelay-fuzz.XXXXXX")}
mkdir -p "$out"
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

if [[ $mode == replay ]]; then
	cc=${CC_REPLAY:-gcc}
	for h in "${harnesses[@]}"; do
		echo "== $h: build with $cc, replay corpus/$h"
		"$cc" "${WARN[@]}" "${SAN[@]}" -g -O1 -I"$ROOT/src" "${SOURCES[@]}" "$HERE/$h.c" \
			"$HERE/replay_main.c" -o "$out/$h-replay"
		"$out/$h-replay" "$HERE/corpus/$h"
	done
	echo "replay ok"
	exit 0
fi

cc=${CC_FUZZ:-clang}
status=0
for h in "${harnesses[@]}"; do
	echo "== $h: build with $cc + libFuzzer, fuzz for ${seconds}s"
	"$cc" "${WARN[@]}" "${SAN[@]}" -fsanitize=fuzzer -g -O1 -I"$ROOT/src" "${SOURCES[@]}" \
		"$HERE/$h.c" -o "$out/$h"
	mkdir -p "$out/$h-corpus" "$out/$h-findings"
	# New inputs go to the scratch corpus (first directory); the checked-in one is only read.
	if ! "$out/$h" -max_total_time="$seconds" -keep_seed=1 -print_final_stats=1 \
		-artifact_prefix="$out/$h-findings/" "$out/$h-corpus" "$HERE/corpus/$h"; then
		echo "== $h: FAILED; reproducer(s) in $out/$h-findings/" >&2
		status=1
	fi
done
echo "scratch directory: $out"
exit $status
