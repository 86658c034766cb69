#!/usr/bin/env bash
# Builds and runs pgrelay's fuzz harnesses (tests/fuzz/fuzz_*.c). Not part of the meson build.
#
#   tests/fuzz/run.sh [SECONDS] [HARNESS...]   clang + libFuzzer (ASan, UBSan): fuzz each harness
#                                              for SECONDS (default 30), one after another in one
#                                              process each (no -jobs/-fork), starting from
#                                              tests/fuzz/corpus/<harness>/ (only read: new
#                                              inputs go to a scratch corpus). Prints per harness
#                                              the runs executed (libFuzzer's "#N DONE" line) and a
#                                              summary; exits non-zero if any harness crashed, leaked,
#                                              timed out or failed to build, keeping the reproducer(s)
#                                              in the scratch dir ($FUZZ_OUT/<harness>-findings/).
#                                              This is CI's "fresh fuzzing" step.
#   tests/fuzz/run.sh --replay [HARNESS...]    gcc (ASan, UBSan) against replay_main.c: run every
#                                              file of tests/fuzz/corpus/<harness>/ once; what CI
#                                              calls. Exits non-zero on the first failure.
#
# Reproducers found by hand belong in tests/fuzz/findings/<harness>/ until fixed (not in the corpus,
# which CI replays); replay one with: tests/fuzz/run.sh --replay-file HARNESS FILE...
#
# Environment: CC_FUZZ (default clang), CC_REPLAY (default gcc), FUZZ_OUT (scratch directory,
# default a new mktemp -d; builds, logs and findings stay there), FUZZ_TIMEOUT (seconds one input
# may take before it counts as a hang, default 10), FUZZ_FLAGS (extra libFuzzer flags), FUZZ_SRC
# (the src/ tree to build against, default this checkout's; e.g. a `git archive` of a commit).
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../.." && pwd)
SRC_DIR=${FUZZ_SRC:-$ROOT/src}
ALL_HARNESSES=(fuzz_frame fuzz_startup fuzz_scram fuzz_md5 fuzz_admin fuzz_classify
	fuzz_outstanding fuzz_config fuzz_backend_login)
WARN=(-std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes
	-Wstrict-prototypes -Wvla -Wformat=2 -Wimplicit-fallthrough -Wno-format-nonliteral
	-DPGRELAY_VERSION=\"fuzz\")
# shellcheck disable=SC2054 # the commas belong to one compiler flag
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

# The sources (besides the harness) and libraries of each harness: what an untrusted peer reaches
# through it, and what that code needs to link.
harness_inputs() {
	local s=$SRC_DIR
	SRC=()
	LIBS=()
	case $1 in
	fuzz_frame | fuzz_startup)
		SRC=("$s"/protocol/frame.c "$s"/protocol/reader.c "$s"/protocol/builder.c
			"$s"/protocol/startup.c "$s"/util/log.c) ;;
	fuzz_scram)
		SRC=("$s"/auth/scram.c)
		LIBS=(-lcrypto -lpthread) ;;
	fuzz_md5)
		SRC=("$s"/auth/md5.c "$s"/auth/scram.c "$s"/protocol/reader.c)
		LIBS=(-lcrypto -lpthread) ;;
	fuzz_admin)
		# The cluster manager, health statistics, router and classifier are stubbed in
		# the harness; libuv only for the worker's headers.
		SRC=("$s"/admin/admin.c "$s"/protocol/builder.c "$s"/protocol/frame.c
			"$s"/util/log.c) ;;
	fuzz_classify)
		SRC=("$s"/route/classify.c "$s"/route/classify_cache.c "$s"/route/normalize.c
			"$s"/route/classify_plain.c)
		LIBS=(-lpg_query -lpthread) ;;
	fuzz_outstanding)
		SRC=("$s"/pool/outstanding.c) ;;
	fuzz_config)
		SRC=("$s"/conf/config.c "$s"/conf/config_keys.c "$s"/auth/hba.c "$s"/auth/users.c
			"$s"/auth/scram.c "$s"/auth/md5.c "$s"/util/log.c "$s"/net/tls_ctx.c "$s"/util/cidr.c)
		LIBS=(-lconfig -lssl -lcrypto -lpthread -ldl) ;;
	fuzz_backend_login)
		# The harness #includes pool/server.c (its connection callbacks are static), links
		# pool/server_login.c, and stubs the connection, client and worker.
		SRC=("$s"/pool/server_login.c "$s"/protocol/builder.c "$s"/protocol/frame.c
			"$s"/protocol/reader.c "$s"/auth/md5.c "$s"/auth/scram.c "$s"/pool/outstanding.c
			"$s"/pool/prepared.c "$s"/pool/pool.c "$s"/net/iobuf.c "$s"/util/log.c "$s"/route/classify.c
			"$s"/route/classify_cache.c "$s"/route/normalize.c)
		[[ -f $s/util/siphash.c ]] && SRC+=("$s"/util/siphash.c)
		LIBS=(-luv -lpg_query -lcrypto -lpthread) ;;
	*)
		echo "run.sh: no source list for $1 (add it to harness_inputs)" >&2
		exit 2 ;;
	esac
}

usage() {
	echo "usage: $0 [SECONDS] [HARNESS...] | $0 --replay [HARNESS...] |" \
		"$0 --replay-file HARNESS FILE..." >&2
	exit 2
}

mode=fuzz
seconds=30
files=()
if [[ ${1:-} == --replay ]]; then
	mode=replay
	shift
elif [[ ${1:-} == --replay-file ]]; then
	mode=replay-file
	(($# >= 3)) || usage
	files=("${@:3}")
	set -- "$2"
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
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/lsan.supp:print_suppressions=0}

build_replay() {
	local h=$1 cc=${CC_REPLAY:-gcc}
	harness_inputs "$h"
	"$cc" "${WARN[@]}" "${SAN[@]}" -g -O1 -I"$SRC_DIR" "${SRC[@]}" "$HERE/$h.c" \
		"$HERE/replay_main.c" "${LIBS[@]}" -o "$out/$h-replay"
}

if [[ $mode == replay-file ]]; then
	echo "== ${harnesses[0]}: build with ${CC_REPLAY:-gcc}, replay ${files[*]}"
	build_replay "${harnesses[0]}"
	"$out/${harnesses[0]}-replay" "${files[@]}"
	exit 0
fi

if [[ $mode == replay ]]; then
	for h in "${harnesses[@]}"; do
		echo "== $h: build with ${CC_REPLAY:-gcc}, replay corpus/$h"
		build_replay "$h"
		"$out/$h-replay" "$HERE/corpus/$h"
	done
	echo "replay ok"
	exit 0
fi

cc=${CC_FUZZ:-clang}
status=0
summary=()
# shellcheck disable=SC2206 # FUZZ_FLAGS is a list of flags
extra=(${FUZZ_FLAGS:-})
for h in "${harnesses[@]}"; do
	echo "== $h: build with $cc + libFuzzer, fuzz for ${seconds}s"
	harness_inputs "$h"
	if ! "$cc" "${WARN[@]}" "${SAN[@]}" -fsanitize=fuzzer -g -O1 -I"$SRC_DIR" "${SRC[@]}" \
		"$HERE/$h.c" "${LIBS[@]}" -o "$out/$h"; then
		summary+=("$h: BUILD FAILED")
		status=1
		continue
	fi
	mkdir -p "$out/$h-corpus" "$out/$h-findings"
	log=$out/$h.log
	# New inputs go to the scratch corpus (first directory); the checked-in one is only read.
	# The fuzzer's stderr goes to the log; the summary lines are printed from it.
	rc=0
	(cd "$out" && "$out/$h" -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" \
		-keep_seed=1 -print_final_stats=1 -artifact_prefix="$out/$h-findings/" \
		"${extra[@]}" "$out/$h-corpus" "$HERE/corpus/$h") >"$log" 2>&1 || rc=$?
	done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
	runs=$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+)/\1/p' "$log" | tail -n 1)
	if ((rc != 0)); then
		tail -n 60 "$log" >&2
		found=$(find "$out/$h-findings" -type f | head -n 5 | tr '\n' ' ')
		echo "== $h: FAILED (exit $rc) after ${runs:-?} runs; reproducer(s): ${found:-none}" >&2
		summary+=("$h: FAILED after ${runs:-?} runs; reproducer(s) in $out/$h-findings/")
		status=1
	else
		echo "$done_line"
		summary+=("$h: ok, ${runs:-?} runs in ${seconds}s (${done_line:-no DONE line})")
	fi
done
echo "== summary (scratch directory: $out)"
printf '%s\n' "${summary[@]}"
exit $status
