#!/usr/bin/env bash
# Build pgrelay with ASan+UBSan and run every test: cmocka unit tests and the pytest integration suite
# against a real primary + two standbys. Also compiles with clang -Werror (compile only).
#   bash scripts/test.sh                 everything (what CI runs)
#   bash scripts/test.sh -k auth -x      extra arguments go to pytest
# Environment: PGRELAY_SKIP_CLANG=1 skips the clang build; PGRELAY_SKIP_INTEGRATION=1 skips pytest;
# PGRELAY_SKIP_FUZZ=1 skips the fresh fuzzing; PGRELAY_SKIP_TSAN=1 the ThreadSanitizer run;
# PGRELAY_SKIP_REGRESS=1 PostgreSQL's regression suite through pgrelay.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
failed=()
t_start=$SECONDS

step() {
  local name=$1
  shift
  echo
  echo "=== test.sh: $name ==="
  local t0=$SECONDS
  if "$@"; then
    echo "=== test.sh: $name: ok ($((SECONDS - t0))s) ==="
    return 0
  else
    local rc=$?
    echo "=== test.sh: $name: FAILED (exit $rc, $((SECONDS - t0))s) ===" >&2
    failed+=("$name")
    return 1
  fi
}

setup_build() {
  local dir=$1
  shift
  if [[ -f "$dir/build.ninja" ]]; then
    meson setup --reconfigure "$dir" "$@"
  else
    rm -rf -- "$dir"
    meson setup "$dir" "$@"
  fi
}

build_test() {
  setup_build build-test -Db_sanitize=address,undefined -Dwerror=true &&
    ninja -C build-test
}

build_clang() {
  CC=clang setup_build build-clang -Dwerror=true && ninja -C build-clang
}

unit_tests() {
  ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-test --suite unit --print-errorlogs
}

integration_tests() {
  PGRELAY_BIN=build-test/pgrelay \
    ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -m pytest -v -p no:cacheprovider tests/integration "$@"
}

# Every C source and header as the repository's .clang-format lays it out (nothing is rewritten).
format_check() {
  local files
  mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]')
  clang-format --dry-run -Werror "${files[@]}"
}

step "dependencies (scripts/deps.sh)" bash scripts/deps.sh || exit 1
step "format (clang-format --dry-run -Werror, .clang-format)" format_check || true

built=0
if step "build with gcc, ASan+UBSan, -Werror (build-test)" build_test; then built=1; fi

if [[ -z "${PGRELAY_SKIP_CLANG:-}" ]]; then
  step "build with clang -Werror (build-clang, compile only)" build_clang || true
fi

if ((built)); then
  step "unit tests (meson test --suite unit)" unit_tests || true
  step "fuzz corpus replay (tests/fuzz/run.sh --replay)" bash tests/fuzz/run.sh --replay || true
  if [[ -z "${PGRELAY_SKIP_FUZZ:-}" ]]; then
    # Fresh fuzzing explores new inputs each run: a finding is reported loudly (reproducer path in
    # the output) but does not fail the run, since it says nothing about this change in particular;
    # the corpus replay above is the gate. Add a reproducer to tests/fuzz/corpus/ with its fix.
    if ! step "fresh fuzzing, 30 s per harness (tests/fuzz/run.sh 30)" bash tests/fuzz/run.sh 30; then
      unset 'failed[${#failed[@]}-1]'
      echo "test.sh: WARNING: fresh fuzzing found something (see above); not counted as a failure" >&2
    fi
  fi
  if [[ -z "${PGRELAY_SKIP_INTEGRATION:-}" ]]; then
    step "integration tests (pytest tests/integration)" integration_tests "$@" || true
  fi
  if [[ -z "${PGRELAY_SKIP_REGRESS:-}" ]]; then
    step "PostgreSQL regression suite through pgrelay (tests/regress/run.sh)" \
      bash tests/regress/run.sh build-test || true
  fi
  if [[ -z "${PGRELAY_SKIP_TSAN:-}" ]]; then
    step "ThreadSanitizer (scripts/tsan.sh: build-tsan, threaded unit + integration tests)" \
      bash scripts/tsan.sh || true
  fi
fi

echo
if ((${#failed[@]})); then
  echo "test.sh: FAILED after $((SECONDS - t_start))s:"
  for f in "${failed[@]}"; do echo "  - $f"; done
  # The regression summary, so that the end of the log says which tests failed.
  if [[ " ${failed[*]} " == *"regression suite"* && -f /tmp/pgrelay-regress-results/summary.txt ]]; then
    sed 's/^/    /' /tmp/pgrelay-regress-results/summary.txt
  fi
  exit 1
fi
echo "test.sh: all steps ok in $((SECONDS - t_start))s"
