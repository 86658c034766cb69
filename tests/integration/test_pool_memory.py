"""Per-client memory: idle logged-in clients must be cheap (no backend, no big buffers)."""

import resource
import time

import pytest

import pgwire
from conftest import connect, pgrelay_bin
from pool_helpers import pool_relay

pytestmark = pytest.mark.pgrelay_only

TRUST_HBA = "host all trustuser 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
N_CLIENTS = 1000
MAX_GROWTH_KB = 2048


def _sanitized(binary):
    """ASan/UBSan builds (build-test) inflate RSS per allocation; the budget is for normal builds."""
    try:
        data = binary.read_bytes()
    except OSError:
        return False
    return b"__asan_init" in data or b"__tsan_init" in data


def _raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft, hard
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= need else need
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, new_hard))
    except (ValueError, OSError):
        pytest.skip(f"RLIMIT_NOFILE {soft}/{hard} < {need} and cannot be raised")
    return soft, hard


@pytest.mark.deadline(90)
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_idle_clients_memory(pgrelay, mode):
    """Bug guarded: each idle logged-in client costs pgrelay more than ~2 kB (e.g. a full read/write
    buffer or a backend connection per client), so 1,000 idle clients grow pgrelay's RSS by more than
    2 MB."""
    if _sanitized(pgrelay_bin()):
        pytest.skip("sanitizer build: RSS budget applies to normal builds only")
    old = _raise_nofile(N_CLIENTS + 1000)
    try:
        r = pool_relay(pgrelay, mode, relay_kw={"hba": TRUST_HBA}, max_client_conn=5000)
        with connect(r.port, user="trustuser", password="") as warm:  # pool + welcome exist already
            warm.execute("select 1")
        # Warm the allocator with a few logins that come and go, like the real thing.
        warmup = pgwire.mass_login(r.port, 20, "trustuser", "app", deadline_s=20)
        warmup.close_all()
        time.sleep(0.3)
        before = r.rss_kb()
        res = pgwire.mass_login(r.port, N_CLIENTS, "trustuser", "app", deadline_s=40)
        try:
            assert not res.errors and not res.closed and not res.hung, (
                f"{len(res.ok)} logged in, errors {res.errors[:5]}, closed {len(res.closed)}, hung {len(res.hung)}")
            time.sleep(0.5)
            after = r.rss_kb()
            growth = after - before
            assert growth <= MAX_GROWTH_KB, (
                f"MEMORY BUDGET EXCEEDED ({mode} mode): {N_CLIENTS} idle clients grew pgrelay's VmRSS by "
                f"{growth} kB ({before} -> {after} kB), {growth * 1024 // N_CLIENTS} bytes per client; "
                f"budget {MAX_GROWTH_KB} kB")
        finally:
            res.close_all()
        with connect(r.port, user="trustuser", password="") as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
