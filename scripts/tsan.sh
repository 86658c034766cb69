#!/usr/bin/env bash
# ThreadSanitizer run (issue 9): builds pgrelay with -Db_sanitize=thread into build-tsan, then runs
# what exercises pgrelay's threads (the worker loop, libuv's thread pool, the health thread, the
# cluster manager thread):
#   - the unit tests that start threads (tests/unit/test_health.c, test_cluster.c);
#   - the integration tests of health checks, the cluster manager, routing by lag, signals/reloads,
#     the admin interface and a fast subset of the failover end-to-end tests.
# Exits non-zero on any test failure or any ThreadSanitizer report (in pgrelay's stderr, in a
# driver's stderr, or in the unit tests' output).
#   bash scripts/tsan.sh                  everything (~10 min measured on a 2-core machine at load ~15)
#   bash scripts/tsan.sh -k lag -x        extra arguments go to pytest
# Environment: PGRELAY_SKIP_INTEGRATION=1 skips pytest; TSAN_EXTRA_OPTIONS is appended to TSAN_OPTIONS.
# gcc (the default cc) on purpose: the test drivers are linked with cc against build-tsan/libpgrelay.a.
# Suppressions (uninstrumented libuv/libpq/... only): tests/tsan.supp. See doc/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PY=/usr/bin/python3
BUILD=build-tsan
SUPP=$REPO/tests/tsan.supp
# halt_on_error: the first report ends the process with exit code 66 (the tests see a failed exit).
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stop=1:suppressions=$SUPP${TSAN_EXTRA_OPTIONS:+:$TSAN_EXTRA_OPTIONS}"

# The thread-heavy integration files, and a fast failover e2e subset (~10-25 s each): a standby
# killed under load (private cluster: health thread -> manager -> views to the worker), writes
# waiting for a primary across many views while a failover command runs (manager + command
# runner + worker), and several waiting clients woken by views until an operator ATTACH.
INTEGRATION=(
  tests/integration/test_health_probe.py
  tests/integration/test_health_misconfig.py
  tests/integration/test_failover_manager.py
  tests/integration/test_routing_lag.py
  tests/integration/test_signals.py
  tests/integration/test_admin.py
  tests/integration/test_failover_e2e.py::test_standby_loss
  tests/integration/test_failover_e2e.py::test_write_waits_query_wait_timeout_during_failover_then_fails_at_once
  tests/integration/test_failover_e2e.py::test_clients_waiting_for_a_primary_do_not_wedge_pgrelay
  # Online recovery: requests from the worker, the stages on the manager's thread, SHOW pool_recovery.
  tests/integration/test_recovery.py::test_recovery_failures_and_refusals
  # TLS (thread-local scratch buffers, contexts shared across reloads) and auth_query (lookups on
  # the thread pool finding their clients again).
  tests/integration/test_tls.py::test_sighup_reloads_certificate
  tests/integration/test_tls.py::test_many_idle_tls_clients
  tests/integration/test_tls.py::test_server_mode
  tests/integration/test_auth_query.py
)

# Tests whose assertion is a time bound (failover within 4 s of a freeze): under TSan's slowdown on
# a shared 2-core machine they measure the machine, not races. They run in the ASan suite.
DESELECT=(
  --deselect tests/integration/test_failover_manager.py::test_frozen_primary_fails_over_in_time
  --deselect tests/integration/test_failover_manager.py::test_kill9_primary_promotes_most_advanced_standby
)

failed=()
t_start=$SECONDS

step() {
  local name=$1
  shift
  echo
  echo "=== tsan.sh: $name ==="
  local t0=$SECONDS
  if "$@"; then
    echo "=== tsan.sh: $name: ok ($((SECONDS - t0))s) ==="
    return 0
  else
    local rc=$?
    echo "=== tsan.sh: $name: FAILED (exit $rc, $((SECONDS - t0))s) ===" >&2
    failed+=("$name")
    return 1
  fi
}

build() {
  if [[ -f "$BUILD/build.ninja" ]]; then
    meson setup --reconfigure "$BUILD" -Db_sanitize=thread
  else
    rm -rf -- "$BUILD"
    meson setup "$BUILD" -Db_sanitize=thread
  fi
  ninja -C "$BUILD"
}

# Prints every ThreadSanitizer report header found in the files given (or stdin); fails if any.
no_reports() {
  local hits
  hits=$(grep -H -n -E 'WARNING: ThreadSanitizer|ERROR: ThreadSanitizer|ThreadSanitizer: reported' "$@" || true)
  if [[ -n "$hits" ]]; then
    echo "ThreadSanitizer reports:" >&2
    echo "$hits" | head -40 >&2
    return 1
  fi
}

unit_tests() {
  # Only the tests that start threads: the others are covered by the ASan/UBSan build (test.sh),
  # and a slower TSan build would only make the big loops (test_relay) time out.
  local rc=0
  meson test -C "$BUILD" --suite unit --print-errorlogs --timeout-multiplier 4 test_health test_cluster || rc=$?
  no_reports "$BUILD/meson-logs/testlog.txt" || rc=1
  return $rc
}

integration_tests() {
  # --basetemp keeps each test's folder (pgrelay.stderr, manager.stderr) until the next run, so
  # reports are found even where a test does not read them itself.
  local tmp=$BUILD/pytest-tmp rc=0
  rm -rf -- "$tmp"
  PGRELAY_BIN=$BUILD/pgrelay PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -m pytest -v -p no:cacheprovider --durations=10 --basetemp="$tmp" "${INTEGRATION[@]}" \
      "${DESELECT[@]}" "$@" || rc=$?
  if [[ -d "$tmp" ]]; then
    local files
    mapfile -t files < <(find "$tmp" -type f -name '*.stderr')
    if ((${#files[@]})); then no_reports "${files[@]}" || rc=1; fi
  fi
  return $rc
}

if [[ ! -f "$SUPP" ]]; then
  echo "tsan.sh: $SUPP missing" >&2
  exit 1
fi

step "dependencies (scripts/deps.sh)" bash scripts/deps.sh || exit 1
if step "build with ThreadSanitizer ($BUILD)" build; then
  step "unit tests with threads under TSan (test_health, test_cluster)" unit_tests || true
  if [[ -z "${PGRELAY_SKIP_INTEGRATION:-}" ]]; then
    step "integration tests under TSan (health, manager, lag, signals, admin, failover subset)" \
      integration_tests "$@" || true
  fi
fi

echo
if ((${#failed[@]})); then
  echo "tsan.sh: FAILED after $((SECONDS - t_start))s:"
  for f in "${failed[@]}"; do echo "  - $f"; done
  exit 1
fi
echo "tsan.sh: all steps ok in $((SECONDS - t_start))s"
