"""auth_query: users not in users_file are looked up on the primary (doc/auth.md, "auth_query").

Roles made here (on the primary, replicated to the standbys) and what each stands for:
  aq_scram    SCRAM password, not in users_file: the ordinary case
  aq_expired  VALID UNTIL in the past: must fail like a wrong password
  aq_nologin  NOLOGIN: must fail like a wrong password
  aq_lookup   a non-superuser auth_user that may only run pgrelay_auth.user_lookup (SECURITY DEFINER)
  md5user     (made by scripts/cluster.sh) an md5 password, left out of users_file here
"""

import re
import subprocess
import time

import psycopg
import pytest

import pgwire
from conftest import USERS, connect, pgrelay_bin
from routing_helpers import wait_nodes_known

pytestmark = pytest.mark.pgrelay_only

AQ_PW = "aq-Secret-1"
LOOKUP_PW = "lookup-Secret-2"
WRONG = "hunter2-wrong-Zq9"
LOOKUP_LINE = re.compile(r"auth_query: looking up user=(\S+)")

LOOKUP_FUNCTION = """
CREATE SCHEMA IF NOT EXISTS pgrelay_auth;
CREATE OR REPLACE FUNCTION pgrelay_auth.user_lookup(i_username text)
RETURNS TABLE (uname text, secret text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT rolname::text,
         CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
  FROM pg_catalog.pg_authid WHERE rolname = i_username AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION pgrelay_auth.user_lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgrelay_auth TO aq_lookup;
GRANT EXECUTE ON FUNCTION pgrelay_auth.user_lookup(text) TO aq_lookup;
"""


def _recreate_role(c, name, options):
    c.execute(f"DROP ROLE IF EXISTS {name}")
    c.execute(f"CREATE ROLE {name} {options}")


@pytest.fixture(scope="module")
def roles(cluster):
    with cluster.connect(dbname="app") as c:
        c.execute("SET password_encryption = 'scram-sha-256'")
        c.execute("DROP FUNCTION IF EXISTS pgrelay_auth.user_lookup(text)")
        _recreate_role(c, "aq_scram", f"LOGIN PASSWORD '{AQ_PW}'")
        _recreate_role(c, "aq_expired", f"LOGIN PASSWORD '{AQ_PW}' VALID UNTIL '2001-01-01'")
        _recreate_role(c, "aq_nologin", f"NOLOGIN PASSWORD '{AQ_PW}'")
        _recreate_role(c, "aq_lookup", f"LOGIN PASSWORD '{LOOKUP_PW}'")
        c.execute("GRANT ALL ON SCHEMA public TO aq_scram")
        c.execute(LOOKUP_FUNCTION)
    # The standbys must know the roles before a session is balanced there.
    for node in (1, 2):
        deadline = time.monotonic() + 20
        while True:
            with cluster.connect(node=node, dbname="app") as c:
                n = c.execute("select count(*) from pg_roles where rolname = 'aq_lookup'").fetchone()[0]
            if n == 1:
                break
            assert time.monotonic() < deadline, f"node {node} did not replay the roles"
            time.sleep(0.1)
    return cluster


def aq_relay(pgrelay, users=None, start=True, backends=None, pool=None, wait=True, **auth):
    """pgrelay with auth_query on (auth keys as keyword arguments), run as the superuser postgres
    by default (its plain-text password is in users_file); aq_* roles and md5user are not in
    users_file. With wait, returns once the health checks found the primary (on a loaded machine
    a first check may time out, and a lookup without a primary fails by design)."""
    settings = {"auth_user": "postgres"}
    settings.update(auth)
    overrides = {}
    if backends is not None:
        overrides["backends"] = backends
    if pool is not None:
        overrides["pool"] = pool
    r = pgrelay(users={"app": "app", "postgres": "postgres"} if users is None else users,
                auth=settings, start=start, **overrides)
    if start and wait:
        wait_nodes_known(r, timeout=20)
    return r


def lookups(relay, user):
    return sum(1 for m in LOOKUP_LINE.finditer(relay.log_text()) if m.group(1) == user)


def login_error(port, user, password, database="app"):
    """Fail a login; returns (the PgError, the authentication requests the server sent)."""
    c = pgwire.Conn(port=port, timeout=10)
    try:
        c.login(user, password, database)
    except pgwire.PgError as e:
        return e, list(c.auth_requests)
    finally:
        c.close()
    raise AssertionError(f"login of {user!r} succeeded but should have failed")


def test_scram_user_from_auth_query(roles, pgrelay):
    """Bug guarded: a role not in users_file cannot log in although auth_query finds its SCRAM
    verifier, or pgrelay cannot log into the backend afterwards (it never has the password: the
    ClientKey from the client's proof must do)."""
    r = aq_relay(pgrelay)
    with pgwire.connect(r.port, "aq_scram", AQ_PW) as c:
        assert c.auth_requests[0] == pgwire.AUTH_SASL
        assert c.scalar("select current_user") == "aq_scram"
    with connect(r.port, user="aq_scram", password=AQ_PW) as c:
        c.execute("create temp table t(x int)")
        c.execute("insert into t values (1)")
        assert c.execute("select count(*) from t").fetchone() == (1,)
    # psql too, the client users run.
    out = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(r.port), "-U", "aq_scram",
                          "-d", "app", "-c", "select current_user"], capture_output=True, text=True,
                         timeout=30, env={"PGPASSWORD": AQ_PW, "PGSSLMODE": "disable", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "aq_scram"
    # users_file users are not looked up.
    with connect(r.port) as c:
        assert c.execute("select 1").fetchone() == (1,)
    assert lookups(r, "app") == 0


def test_scram_user_on_a_standby(roles, pgrelay):
    """Bug guarded: with load balancing, the backend login to a standby fails for a user whose
    secret came from auth_query (the standby's verifier is the replicated one, same salt)."""
    backends = [{"host": "127.0.0.1", "port": roles.ports[i], "weight": 0.0 if i == 0 else 1.0,
                 "data_directory": str(roles.data_dirs[i]), "application_name": f"node{i}"}
                for i in range(3)]
    r = aq_relay(pgrelay, backends=backends)
    seen_standby = False
    for _ in range(4):
        with connect(r.port, user="aq_scram", password=AQ_PW) as c:
            row = c.execute("select pg_is_in_recovery(), current_user").fetchone()
            assert row[1] == "aq_scram"
            seen_standby |= row[0]
    assert seen_standby, "no read of aq_scram reached a standby"


def test_md5_user_from_auth_query(roles, pgrelay):
    """Bug guarded: an md5 secret fetched by auth_query is not used for the md5 exchange with the
    client, or not passed through to an md5 backend."""
    r = aq_relay(pgrelay)
    with pgwire.connect(r.port, "md5user", "md5pw") as c:
        assert c.auth_requests[0] == pgwire.AUTH_MD5
        assert c.scalar("select current_user") == "md5user"
    e, _ = login_error(r.port, "md5user", WRONG)
    assert e.sqlstate == "28P01", e


def test_wrong_unknown_expired_nologin_all_look_alike(roles, pgrelay):
    """Bug guarded: a client can tell which role names exist (or have expired) from the error or
    the exchange: every failure must be 28P01 after the same SCRAM exchange."""
    r = aq_relay(pgrelay)
    results = {}
    for user, pw in (("aq_scram", WRONG), ("aq_no_such_role", AQ_PW), ("aq_expired", AQ_PW),
                     ("aq_nologin", AQ_PW)):
        e, requests = login_error(r.port, user, pw)
        results[user] = (e.sqlstate, requests, e.fields.get("M", "").replace(user, "USER"))
    first = next(iter(results.values()))
    assert first[0] == "28P01"
    assert first[1] == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE]
    for user, got in results.items():
        assert got == first, (user, got, first)
    # Nothing failed to run: no warning about the lookup itself.
    assert "lookup of user" not in r.log_text()


def test_security_definer_function_as_non_superuser(roles, pgrelay):
    """Bug guarded: the documented setup for an auth_user without superuser (doc/auth.md: a
    SECURITY DEFINER function over pg_authid) does not work, or its "no row" answer is not a
    plain 28P01."""
    users = {"app": "app", "aq_lookup": LOOKUP_PW}
    r = aq_relay(pgrelay, users=users, auth_user="aq_lookup",
                 auth_query="SELECT uname, secret FROM pgrelay_auth.user_lookup($1)")
    with connect(r.port, user="aq_scram", password=AQ_PW) as c:
        assert c.execute("select current_user").fetchone() == ("aq_scram",)
    for user in ("aq_no_such_role", "aq_expired"):
        e, _ = login_error(r.port, user, AQ_PW)
        assert e.sqlstate == "28P01", (user, e)
    # Negative control: the same non-superuser cannot run the default query on pg_authid.
    r2 = aq_relay(pgrelay, users=users, auth_user="aq_lookup")
    e, _ = login_error(r2.port, "aq_scram", AQ_PW)
    assert e.sqlstate == "28000", e
    assert "auth_query" in e.fields.get("M", "")
    assert r2.wait_log("permission denied", timeout=5), r2.log_tail()


def test_auth_user_cannot_connect(roles, pgrelay):
    """Bug guarded: when the lookup cannot run (auth_user's password is wrong), the client hangs
    or gets a misleading 28P01, the failure is not logged (or logged with a secret), or other
    clients suffer."""
    users = {"app": "app", "aq_lookup": "not-the-password"}
    r = aq_relay(pgrelay, users=users, auth_user="aq_lookup")
    t0 = time.monotonic()
    e, _ = login_error(r.port, "aq_scram", AQ_PW)
    assert time.monotonic() - t0 < 8
    assert e.sqlstate == "08006", e
    assert "auth_query" in e.fields.get("M", "")
    with connect(r.port) as c:  # a users_file user is unaffected
        assert c.execute("select 1").fetchone() == (1,)
    log = r.log_text()
    warnings = [ln for ln in log.splitlines() if "lookup of user=aq_scram" in ln]
    assert len(warnings) == 1, warnings
    assert "not-the-password" not in log and AQ_PW not in log


def test_no_primary_is_a_clean_error(roles, pgrelay):
    """Bug guarded: with the primary unreachable the lookup blocks the loop or the client waits
    for authentication_timeout instead of a prompt, clear error."""
    backends = [{"host": "127.0.0.1", "port": 1 if i == 0 else roles.ports[i], "weight": 1.0,
                 "data_directory": str(roles.data_dirs[i]), "application_name": f"node{i}"}
                for i in range(3)]
    r = aq_relay(pgrelay, backends=backends, pool={"server_connect_timeout": "2s"}, wait=False)
    t0 = time.monotonic()
    e, _ = login_error(r.port, "aq_scram", AQ_PW)
    assert time.monotonic() - t0 < 8
    assert e.sqlstate == "08006", e
    assert "auth_query" in e.fields.get("M", "")


def test_cache_serves_repeated_logins_until_its_ttl(roles, pgrelay):
    """Bug guarded: auth_query_cache does not spare the lookup of a second login, keeps a secret
    past its TTL, or caches what a client sent before it authenticated (an unknown name, a wrong
    password)."""
    r = aq_relay(pgrelay, auth_query_cache="3s")
    with connect(r.port, user="aq_scram", password=AQ_PW):
        pass
    with connect(r.port, user="aq_scram", password=AQ_PW):
        pass
    assert lookups(r, "aq_scram") == 1
    time.sleep(3.3)
    with connect(r.port, user="aq_scram", password=AQ_PW):
        pass
    assert lookups(r, "aq_scram") == 2
    # Failures are never cached: each attempt looks up again.
    for _ in range(2):
        login_error(r.port, "aq_no_such_role", AQ_PW)
        login_error(r.port, "md5user", WRONG)
    assert lookups(r, "aq_no_such_role") == 2
    assert lookups(r, "md5user") == 2


def test_no_cache_by_default(roles, pgrelay):
    """Bug guarded: the default (auth_query_cache = 0, PgBouncer's behaviour) still caches, so a
    password change or an expiry is not seen at once."""
    r = aq_relay(pgrelay)
    for _ in range(2):
        with connect(r.port, user="aq_scram", password=AQ_PW):
            pass
    assert lookups(r, "aq_scram") == 2


def test_password_change_is_picked_up(roles, pgrelay):
    """Bug guarded: after ALTER ROLE ... PASSWORD the new password is refused beyond the cache's
    TTL, or new backend connections keep using the old credentials."""
    r = aq_relay(pgrelay, auth_query_cache="2s", pool={"connection_cache": False})
    with roles.connect(dbname="app") as c:
        c.execute("CREATE ROLE aq_change LOGIN PASSWORD 'old-pw-1'") if not c.execute(
            "select 1 from pg_roles where rolname = 'aq_change'").fetchone() else c.execute(
            "ALTER ROLE aq_change PASSWORD 'old-pw-1'")
    try:
        with connect(r.port, user="aq_change", password="old-pw-1") as c:
            assert c.execute("select current_user").fetchone() == ("aq_change",)
        with roles.connect(dbname="app") as c:
            c.execute("ALTER ROLE aq_change PASSWORD 'new-pw-2'")
        time.sleep(2.3)
        # Past the TTL: the new password works, on a fresh backend connection too.
        with connect(r.port, user="aq_change", password="new-pw-2") as c:
            assert c.execute("select current_user").fetchone() == ("aq_change",)
        e, _ = login_error(r.port, "aq_change", "old-pw-1")
        assert e.sqlstate == "28P01"
        # Within the TTL a failed login drops the cached secret: the next one looks it up.
        with connect(r.port, user="aq_change", password="new-pw-2"):
            pass  # (that failure above dropped it: cache new-pw-2 again)
        with roles.connect(dbname="app") as c:
            c.execute("ALTER ROLE aq_change PASSWORD 'newer-pw-3'")
        with pytest.raises(psycopg.OperationalError):
            connect(r.port, user="aq_change", password="newer-pw-3")
        with connect(r.port, user="aq_change", password="newer-pw-3") as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        with roles.connect(dbname="app") as c:
            c.execute("DROP ROLE IF EXISTS aq_change")


def test_pgbouncer_1186_auth_user_with_scram_verifier(roles, pgrelay):
    """Bug guarded (PgBouncer issue #1186): auth_user's secret in users_file is the SCRAM verifier
    copied from pg_authid; PgBouncer then cannot log in as auth_user to run auth_query (the
    server rejects the lookup connection) and every auth_query login fails. A verifier cannot
    answer a server's challenge, so pgrelay refuses such a file up front and says what to put
    there instead; with the plain-text password the same setup works (negative control)."""
    with roles.connect(dbname="app") as c:
        verifier = c.execute("select rolpassword from pg_authid where rolname = 'aq_lookup'").fetchone()[0]
    assert verifier.startswith("SCRAM-SHA-256$")
    r = aq_relay(pgrelay, users={"app": "app", "aq_lookup": verifier}, auth_user="aq_lookup",
                 auth_query="SELECT uname, secret FROM pgrelay_auth.user_lookup($1)", start=False)
    out = subprocess.run([str(pgrelay_bin()), "-t", "-f", str(r.config_path)], capture_output=True,
                         text=True, timeout=15, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "auth.auth_user" in text and "plain-text password" in text, text
    assert verifier not in text
    ok = aq_relay(pgrelay, users={"app": "app", "aq_lookup": LOOKUP_PW}, auth_user="aq_lookup",
                  auth_query="SELECT uname, secret FROM pgrelay_auth.user_lookup($1)")
    with connect(ok.port, user="aq_scram", password=AQ_PW) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_config_rules(roles, pgrelay):
    """Bug guarded: auth_user missing from users_file, or auth_query set without auth_user, is
    accepted and only fails at the first login."""
    for auth, needle in (({"auth_user": "nobody_here"}, "is not in users_file"),
                         ({"auth_query": "SELECT 1, 2"}, "needs auth.auth_user")):
        r = pgrelay(users=dict(USERS), auth=auth, start=False)
        out = subprocess.run([str(pgrelay_bin()), "-t", "-f", str(r.config_path)], capture_output=True,
                             text=True, timeout=15, stdin=subprocess.DEVNULL)
        assert out.returncode == 1 and needle in out.stdout + out.stderr, out.stdout + out.stderr


def test_many_clients_share_bounded_lookups(roles, pgrelay):
    """Bug guarded: a burst of logins of one user runs one lookup each (or unbounded lookups at
    once) instead of sharing the running one."""
    import threading
    r = aq_relay(pgrelay)
    errors = []

    def one():
        try:
            with connect(r.port, user="aq_scram", password=AQ_PW) as c:
                c.execute("select 1")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert 1 <= lookups(r, "aq_scram") < 12
