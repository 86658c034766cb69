"""Real client drivers through pgrelay's pool: asyncpg (every statement server-prepared under a named
statement, plus a statement cache) and pgJDBC (server-prepared after prepareThreshold executions), in
transaction mode with fewer backend connections than clients, so every client's named statements must
follow it from one backend connection to another.

A missing driver skips the test with its reason on a developer machine; under CI (CI=true) it fails,
since scripts/deps.sh installs python3-asyncpg, libpostgresql-jdbc-java and openjdk-17-jdk-headless."""

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pool_helpers import pool_relay

JAVA_DIR = Path(__file__).resolve().parent / "java"
PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason):
    """Skip on a developer machine; fail under CI, where scripts/deps.sh must have installed it."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason} (scripts/deps.sh should have installed it)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------------
# asyncpg


def _asyncpg():
    try:
        import asyncpg
    except ImportError as e:
        missing(f"asyncpg is not importable ({e}); install python3-asyncpg")
    return asyncpg


async def _asyncpg_client(asyncpg, port, i, iterations):
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="app", database="app",
                                 timeout=10, command_timeout=20)
    step = "connected"
    try:
        # asyncpg looked at the server's ParameterStatus values while connecting.
        assert conn.get_server_version().major >= 10, conn.get_server_version()
        # fetchval: asyncpg prepares it under a named statement (__asyncpg_stmt_N__) and caches it.
        for k in range(iterations):
            step = f"fetchval('select $1::int + 1', {k})"
            got = await conn.fetchval("select $1::int + 1", i * 1000 + k)
            assert got == i * 1000 + k + 1, f"{step} gave {got}"
        # An explicitly prepared statement, reused; its text differs per client while asyncpg's statement
        # names are the same sequence on every connection.
        step = "prepare"
        stmt = await conn.prepare(f"select $1::int * {i + 2}, $2::text")
        for k in range(20):
            step = f"prepared statement, execution {k + 1}"
            row = await stmt.fetchrow(k, f"c{i}")
            assert tuple(row) == (k * (i + 2), f"c{i}"), f"{step} gave {tuple(row)}"
        # Transactions: every statement of one transaction runs on one backend.
        for t in range(5):
            step = f"transaction {t + 1}"
            async with conn.transaction():
                p1 = await conn.fetchval("select pg_backend_pid()")
                x1 = await conn.fetchval("select txid_current()")
                p2 = await conn.fetchval("select pg_backend_pid()")
                x2 = await conn.fetchval("select txid_current()")
                assert (p1, x1) == (p2, x2), f"{step}: pid/txid changed inside the transaction: {(p1, x1)} -> {(p2, x2)}"
        # A rolled-back transaction whose statement failed, then the connection goes on.
        step = "failed transaction"
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            async with conn.transaction():
                await conn.fetchval("select 1 / $1::int", 0)
        step = "after the failed transaction"
        assert await conn.fetchval("select $1::int + 1", 41) == 42
        # The cached statements are still good after all that.
        step = "cached statement at the end"
        assert await conn.fetchval("select $1::int + 1", -1) == 0
        assert tuple(await stmt.fetchrow(3, "z")) == (3 * (i + 2), "z")
        return True
    except Exception as e:
        raise AssertionError(f"asyncpg client {i} at step [{step}]: {type(e).__name__}: {e}") from e
    finally:
        await asyncio.wait_for(conn.close(), 10)


def run_asyncpg_clients(port, n, iterations, timeout):
    asyncpg = _asyncpg()

    async def main():
        results = await asyncio.wait_for(
            asyncio.gather(*(_asyncpg_client(asyncpg, port, i, iterations) for i in range(n)),
                           return_exceptions=True), timeout)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} of {n} asyncpg clients failed:\n" + "\n".join(map(str, errors[:10]))

    asyncio.run(main())


@pytest.mark.deadline(90)
def test_asyncpg_transaction_mode(pgrelay):
    """Bug guarded: asyncpg in transaction mode: its named statements (__asyncpg_stmt_N__, the same names
    on every connection for different queries) fail on the backend its next transaction lands on
    ('prepared statement ... does not exist' / 'already exists', or another client's query runs), its
    statement cache goes stale, or a transaction's statements are spread over two backends; 10 clients over
    pool_size = 2."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    run_asyncpg_clients(r.port, n=10, iterations=100, timeout=75)


@pytest.mark.deadline(60)
def test_asyncpg_session_mode(pgrelay):
    """Bug guarded: asyncpg fails to connect or run through pgrelay at all (startup parameters,
    ParameterStatus values it checks such as server_version, its extended-protocol pattern of
    Parse/Describe/Sync then Bind/Execute/Sync) in session mode."""
    r = pool_relay(pgrelay, "session", pool_size=4)
    run_asyncpg_clients(r.port, n=4, iterations=100, timeout=45)


# ---------------------------------------------------------------------------------------------------------
# pgJDBC


def compile_java(tmp_path_factory, source):
    """tests/integration/java/<source> compiled against pgJDBC into a temporary folder; returns the
    classpath. A missing JDK or jar skips (fails under CI)."""
    java, javac = shutil.which("java"), shutil.which("javac")
    if not java or not javac:
        missing("java/javac not found on PATH; install openjdk-17-jdk-headless")
    if not PGJDBC_JAR.exists():
        missing(f"{PGJDBC_JAR} not found; install libpostgresql-jdbc-java")
    out = tmp_path_factory.mktemp("java-classes")
    r = subprocess.run([javac, "-d", str(out), "-cp", str(PGJDBC_JAR), str(JAVA_DIR / source)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"javac failed:\n{r.stdout}{r.stderr}"
    return f"{out}:{PGJDBC_JAR}"


@pytest.fixture(scope="module")
def pool_check_classes(tmp_path_factory):
    """tests/integration/java/PoolCheck.java compiled; the classpath."""
    return compile_java(tmp_path_factory, "PoolCheck.java")


def run_pool_check(relay, classpath, n=8, iterations=50, transactions=10, hold=20, timeout=90, **url_params):
    params = {"connectTimeout": 5, "socketTimeout": 30, "sslmode": "disable", **url_params}
    url = f"jdbc:postgresql://127.0.0.1:{relay.port}/app?" + "&".join(f"{k}={v}" for k, v in params.items())
    cmd = ["java", "-Xss512k", "-cp", classpath, "PoolCheck", url, "app", "app", str(n), str(iterations),
           str(transactions), str(hold)]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        out, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, code = f"(no exit within {timeout}s)\n{e.stdout or ''}{e.stderr or ''}", None
    if code != 0 or "OK" not in out:
        pins = [ln for ln in relay.log_text().splitlines() if "pinned" in ln]
        pytest.fail(f"PoolCheck ({url}) exited {code}:\n{out}"
                    + (f"\npgrelay pinned {len(pins)} clients, e.g.:\n" + "\n".join(pins[:3]) if pins else ""),
                    pytrace=False)
    return out


JDBC_VARIANTS = {
    # pgJDBC's defaults: prepareThreshold=5; after login it sends SET extra_float_digits = 3 and
    # SET application_name = 'PostgreSQL JDBC Driver' as extended-protocol statements.
    "defaults": {},
    "prepareThreshold=1": {"prepareThreshold": 1},
    # With a known server version pgJDBC puts extra_float_digits and application_name into the startup
    # packet and sends no SET at all.
    "assumeMinServerVersion=9.4": {"assumeMinServerVersion": "9.4"},
}


@pytest.mark.deadline(120)
@pytest.mark.parametrize("variant", list(JDBC_VARIANTS))
def test_jdbc_transaction_mode(pgrelay, pool_check_classes, variant):
    """Bug guarded: pgJDBC in transaction mode: its 8 connections cannot all stay open and active over
    pool_size = 2 (a client holding a backend connection for its whole session blocks the others); once a
    PreparedStatement becomes server-prepared (after prepareThreshold executions: named S_1, S_2, ... on
    every connection, for different queries) its Bind reaches a backend without it, or with another
    client's S_n; or a setAutoCommit(false) transaction's statements run on two backends."""
    r = pool_relay(pgrelay, "transaction", pool_size=2)
    run_pool_check(r, pool_check_classes, **JDBC_VARIANTS[variant])
