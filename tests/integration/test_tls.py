"""TLS towards clients and backends (doc/interface.md, "TLS and auth").

Clients: `tls.client_mode` (disable | allow | prefer | require | verify-ca | verify-full) with pgrelay's
certificate (`cert_file`/`key_file`, relative to the config file's folder) and `ca_file` for client
certificates; PostgreSQL 17's direct TLS (ClientHello first, ALPN "postgresql"); hba `hostssl`/`hostnossl`
and the `cert` method; SCRAM-SHA-256-PLUS; SIGHUP re-reading the certificate; key file permissions;
bad input over TLS (a stalled handshake, garbage or plain text instead of a ClientHello, plain text
pipelined behind SSLRequest, renegotiation, big messages, many idle TLS clients).

Backends: `tls.server_mode` and per-backend `tls_mode`/`tls_ca_file` with libpq's sslmode meanings,
`server_ca_file`, an optional client certificate (`server_cert_file`/`server_key_file`); a backend whose
certificate fails verification is never sent a password and is reported down by the health check. The
`pg_tls` fixture turns `ssl = on` in the shared cluster for this module only (ALTER SYSTEM + reload on each
node, reset at teardown): node0 and node1 present `server` (CN/SAN 127.0.0.1, localhost), node2 presents
`badhost` (signed by the same CA, named wrong.invalid), so verify-ca accepts every node and verify-full
all but node2.

Drivers: psql/libpq, psycopg, asyncpg (ssl=SSLContext), node-postgres (ssl: { ca, rejectUnauthorized }),
pgJDBC (sslmode=verify-full&sslrootcert=...). A missing driver skips (fails under CI=true) like
test_drivers.py.

Certificates come from tls_helpers.py (`pki`, made with the openssl command)."""

import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import CONNECT_TIMEOUT, client_env, connect, default_settings, pgrelay_bin
from routing_helpers import pool_nodes
from tls_helpers import (FakeTlsBackend, cert_serial, der_of, first_auth_request, peer_cert,  # noqa: F401
                         pki, sasl_mechanisms, scram_plus_login, ssl_request_answer, tls_context, tls_login,
                         tls_pgwire, tls_server_end_point)

pytestmark = [pytest.mark.pgrelay_only, pytest.mark.deadline(90)]

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
IN_CI = os.environ.get("CI", "").lower() == "true"

NO_CERT_MESSAGE = "connection requires a valid client certificate"


def missing(reason):
    """Skip on a developer machine; fail under CI, where the deps scripts must have installed it."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason} (scripts/deps.sh / scripts/node_deps.sh should have installed it)",
                    pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------------
# Relays and clients.


def tls_group(pki, **keys):
    """The tls group with pgrelay's certificate and the CA for client certificates, plus keys."""
    g = {"cert_file": str(pki.server.crt), "key_file": str(pki.server.key), "ca_file": str(pki.ca.crt)}
    g.update(keys)
    return g


def tls_relay(pgrelay, pki, client_mode="prefer", hba=None, tls=None, **overrides):
    return pgrelay(tls=tls_group(pki, client_mode=client_mode, **(tls or {})), hba=hba, **overrides)


def libpq(port, sslmode, pki=None, user="app", password="app", rootcert=None, cert=None, host="127.0.0.1",
          **kw):
    """A psycopg (libpq) connection with the given sslmode; verify modes use pki's CA unless rootcert."""
    if rootcert is None and pki is not None:
        rootcert = pki.ca.crt
    if rootcert is not None:
        kw["sslrootcert"] = str(rootcert)
    if cert is not None:
        kw.update(sslcert=str(cert.crt), sslkey=str(cert.key))
    else:
        # Never pick up ~/.postgresql/postgresql.crt by accident.
        kw.update(sslcert="/nonexistent/postgresql.crt", sslkey="/nonexistent/postgresql.key")
    return psycopg.connect(host=host, port=port, user=user, password=password, dbname="app", sslmode=sslmode,
                           connect_timeout=CONNECT_TIMEOUT, autocommit=True, **kw)


def attempt(port, ctx, user="app", password="app", database="app", direct=False):
    """Try a TLS login. Returns ("ok", None), ("error", PgError), ("closed", reason) for a failed
    handshake or a close (EOF, reset, TLS alert), or ("open", None) when nothing happened in time."""
    try:
        c = tls_pgwire(port, ctx, direct=direct)
    except (ssl.SSLError, OSError) as e:
        return "closed", f"handshake: {e!r}"
    try:
        c.login(user, password, database, timeout=10)
        c.scalar("select 1")
        return "ok", None
    except pgwire.PgError as e:
        return "error", e
    except (pgwire.Closed, ssl.SSLError, ConnectionError, EOFError) as e:
        return "closed", repr(e)
    except pgwire.Timeout:
        return "open", None
    except OSError as e:
        return "closed", repr(e)
    finally:
        c.close()


def plain_attempt(port, user="app", password="app"):
    """A plaintext login without SSLRequest: ("ok", None) or ("error", PgError) or ("closed", reason)."""
    c = pgwire.Conn(port=port, timeout=10)
    try:
        c.login(user, password, "app")
        return "ok", None
    except pgwire.PgError as e:
        return "error", e
    except (pgwire.Closed, OSError) as e:
        return "closed", repr(e)
    finally:
        c.close()


def read_until_close(sock, timeout):
    """Every byte until the peer closes; raises AssertionError if it stays open past the deadline."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection still open after {timeout}s (received {data[:80]!r})")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk


def still_serving(r, pki, bystander=None):
    """pgrelay is alive, an open session (if any) still answers and a new TLS login works."""
    assert r.alive(), f"pgrelay died:\n{r.log_tail()}"
    if bystander is not None:
        assert bystander.scalar("select 'bystander ok'") == "bystander ok"
    with tls_login(r.port, tls_context(pki.ca)) as c:
        assert c.scalar("select 'new session ok'") == "new session ok"


def psql(port, conninfo, sql="select 'psql ok'", password="app"):
    env = client_env(password)
    env.pop("PGSSLMODE", None)
    return subprocess.run(["psql", "-X", "-At", "-d", f"host=127.0.0.1 port={port} user=app dbname=app " + conninfo,
                           "-c", sql], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)


# ---------------------------------------------------------------------------------------------------------
# client_mode


def test_client_mode_disable_answers_n(pgrelay, pki):
    """Bug guarded: with client_mode = disable pgrelay still answers SSLRequest 'S' (a require client
    would then get TLS the operator turned off), or a prefer client cannot fall back to plain text."""
    r = tls_relay(pgrelay, pki, client_mode="disable")
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        assert ssl_request_answer(c) == b"N"
        c.login("app", "app", "app")
        assert c.scalar("select 'plain after N'") == "plain after N"
    finally:
        c.terminate()
    with pytest.raises(psycopg.OperationalError):
        libpq(r.port, "require")
    with libpq(r.port, "prefer") as p:
        assert p.pgconn.ssl_in_use is False
        assert p.execute("select 1").fetchone() == (1,)


def test_client_mode_prefer_without_cert_answers_n(pgrelay):
    """Bug guarded: client_mode = prefer without a certificate answers 'S' and then fails every prefer
    client's handshake (libpq would not retry in plain text)."""
    r = pgrelay(tls={"client_mode": "prefer"})
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        assert ssl_request_answer(c) == b"N"
    finally:
        c.close()
    with connect(r.port, sslmode="prefer") as p:
        assert p.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_client_mode_allow_prefer(pgrelay, pki, mode):
    """Bug guarded: allow/prefer do not answer 'S' with a certificate set, the handshake or the session
    over TLS fails, the certificate does not verify for 127.0.0.1 and localhost, or plain-text clients
    are refused."""
    r = tls_relay(pgrelay, pki, client_mode=mode)
    with libpq(r.port, "verify-full", pki) as p:
        assert p.pgconn.ssl_in_use is True
        assert p.execute("select current_user").fetchone() == ("app",)
    with libpq(r.port, "verify-full", pki, host="localhost") as p:
        assert p.pgconn.ssl_in_use is True
    with libpq(r.port, "disable") as p:
        assert p.pgconn.ssl_in_use is False
        assert p.execute("select 2").fetchone() == (2,)
    assert plain_attempt(r.port)[0] == "ok"
    with tls_login(r.port, tls_context(pki.ca)) as c:
        assert c.scalar("select 'raw tls'") == "raw tls"


def test_client_mode_require_rejects_plaintext(pgrelay, pki):
    """Bug guarded: client_mode = require lets a plain-text client in, or refuses it with another code
    than 28000 (or before reading its startup packet, so the client cannot tell why)."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    kind, e = plain_attempt(r.port)
    assert kind == "error" and e.sqlstate == "28000", (kind, e)
    assert e.fields.get("S") == "FATAL", e.fields
    with pytest.raises(psycopg.OperationalError):
        libpq(r.port, "disable")
    with libpq(r.port, "require") as p:
        assert p.pgconn.ssl_in_use is True
        assert p.execute("select 3").fetchone() == (3,)
    with libpq(r.port, "verify-full", pki) as p:
        assert p.execute("select 4").fetchone() == (4,)
    assert r.alive()


def test_client_wrong_root_cert_fails_on_client(pgrelay, pki):
    """Negative control for the verify-full tests: a client trusting another CA refuses pgrelay's
    certificate (otherwise the verify-full checks above prove nothing)."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        libpq(r.port, "verify-full", rootcert=pki.wrong_ca.crt)
    kind, why = attempt(r.port, tls_context(pki.wrong_ca))
    assert kind == "closed", (kind, why)
    still_serving(r, pki)


def test_psql_verify_full(pgrelay, pki):
    """Bug guarded: psql (libpq 15) with sslmode=verify-full cannot connect by IP or by name."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    for host in ("127.0.0.1", "localhost"):
        p = psql(r.port, f"host={host} sslmode=verify-full sslrootcert={pki.ca.crt}",
                 sql="select 'psql ' || current_user")
        assert p.returncode == 0 and p.stdout.strip() == "psql app", (host, p.stdout, p.stderr)
    p = psql(r.port, f"sslmode=verify-full sslrootcert={pki.wrong_ca.crt}")
    assert p.returncode != 0 and "certificate verify failed" in p.stderr, p.stderr


def test_min_protocol(pgrelay, pki):
    """Bug guarded: tls.min_protocol is ignored (a TLS 1.2 client gets in with min_protocol = TLSv1.3)."""
    r = tls_relay(pgrelay, pki, client_mode="require", tls={"min_protocol": "TLSv1.3"})
    kind, why = attempt(r.port, tls_context(pki.ca, max_version=ssl.TLSVersion.TLSv1_2))
    assert kind == "closed", (kind, why)
    with tls_login(r.port, tls_context(pki.ca)) as c:
        assert c.sock.version() == "TLSv1.3"
        assert c.scalar("select 1") == "1"


def test_relative_paths_from_config_folder(pgrelay, pki, request):
    """Bug guarded: relative cert_file/key_file/ca_file are resolved against the working directory
    instead of the config file's folder."""
    if not pgrelay_bin().exists():
        pytest.skip(f"{pgrelay_bin()} not built")
    r = pgrelay(start=False, tls={"cert_file": "tls/server.crt", "key_file": "tls/server.key",
                                  "ca_file": "tls/root.crt", "client_mode": "verify-ca"})
    # The config goes into a subfolder; pgrelay still runs in r.dir, where "tls/..." does not exist.
    conf = r.dir / "conf"
    (conf / "tls").mkdir(parents=True)
    r.config_path = conf / "pgrelay.conf"
    r.write_files()
    shutil.copy(r.dir / "users.txt", conf / "users.txt")
    for src, name in ((pki.server.crt, "server.crt"), (pki.server.key, "server.key"), (pki.ca.crt, "root.crt")):
        shutil.copy(src, conf / "tls" / name)
    os.chmod(conf / "tls" / "server.key", 0o600)
    assert not (r.dir / "tls").exists()
    request.node._pgrelays.append(r)
    r.start()
    assert peer_cert(r.port) == der_of(pki.server.crt)
    kind, e = attempt(r.port, tls_context(pki.ca, cert=pki.app))
    assert kind == "ok", (kind, e)


# ---------------------------------------------------------------------------------------------------------
# Client certificates: verify-ca, verify-full


def test_verify_ca(pgrelay, pki):
    """Bug guarded: client_mode = verify-ca lets in a client without a certificate (or answers it with
    something else than 28000 "connection requires a valid client certificate"), accepts a certificate
    signed by another CA or an expired one (the handshake must fail), or refuses a plain-text client
    with another code than 28000; other sessions suffer from the failures."""
    r = tls_relay(pgrelay, pki, client_mode="verify-ca")
    bystander = tls_login(r.port, tls_context(pki.ca, cert=pki.app))
    try:
        assert bystander.scalar("select current_user") == "app"
        # verify-ca does not compare the name: CN=someoneelse may log in as app.
        assert attempt(r.port, tls_context(pki.ca, cert=pki.other)) == ("ok", None)
        kind, e = attempt(r.port, tls_context(pki.ca))
        assert kind == "error" and e.sqlstate == "28000", (kind, e)
        assert NO_CERT_MESSAGE in e.fields.get("M", ""), e.fields
        for bad in (pki.wrong_app, pki.expired_app):
            kind, why = attempt(r.port, tls_context(pki.ca, cert=bad))
            assert kind == "closed", (bad.crt.name, kind, why)
        kind, e = plain_attempt(r.port)
        assert kind == "error" and e.sqlstate == "28000", (kind, e)
        with libpq(r.port, "verify-full", pki, cert=pki.app) as p:
            assert p.execute("select 'libpq with cert'").fetchone() == ("libpq with cert",)
        with pytest.raises(psycopg.OperationalError, match=NO_CERT_MESSAGE):
            libpq(r.port, "verify-full", pki)
        assert bystander.scalar("select 'bystander ok'") == "bystander ok"
    finally:
        bystander.terminate()
    assert r.alive()


def test_verify_full(pgrelay, pki):
    """Bug guarded: client_mode = verify-full does not compare the certificate's CN with the user name
    (CN=someoneelse logs in as app), or refuses the matching one."""
    r = tls_relay(pgrelay, pki, client_mode="verify-full")
    assert attempt(r.port, tls_context(pki.ca, cert=pki.app)) == ("ok", None)
    kind, e = attempt(r.port, tls_context(pki.ca, cert=pki.other))
    assert kind == "error" and e.sqlstate == "28000", (kind, e)
    kind, e = attempt(r.port, tls_context(pki.ca, cert=pki.app), user="postgres", password="postgres")
    assert kind == "error" and e.sqlstate == "28000", (kind, e)
    kind, e = attempt(r.port, tls_context(pki.ca))
    assert kind == "error" and e.sqlstate == "28000", (kind, e)
    kind, why = attempt(r.port, tls_context(pki.ca, cert=pki.wrong_app))
    assert kind == "closed", (kind, why)
    with libpq(r.port, "verify-full", pki, cert=pki.app) as p:
        assert p.execute("select current_user").fetchone() == ("app",)
    with pytest.raises(psycopg.OperationalError):
        libpq(r.port, "verify-full", pki, cert=pki.other)
    assert r.alive()


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL 17 direct TLS


def test_direct_tls_with_alpn(pgrelay, pki):
    """Bug guarded: a client that starts with a ClientHello (PostgreSQL 17's sslnegotiation=direct, ALPN
    "postgresql") is taken for a startup packet with a huge length and dropped, or pgrelay does not
    select the ALPN protocol."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    c = tls_pgwire(r.port, tls_context(pki.ca, alpn=["postgresql"]), direct=True)
    try:
        assert c.sock.selected_alpn_protocol() == "postgresql"
        c.login("app", "app", "app")
        assert c.scalar("select 'direct tls'") == "direct tls"
    finally:
        c.terminate()
    # Direct TLS with a client certificate under verify-full too.
    r2 = tls_relay(pgrelay, pki, client_mode="verify-full")
    assert attempt(r2.port, tls_context(pki.ca, cert=pki.app, alpn=["postgresql"]), direct=True) == ("ok", None)


def test_direct_tls_without_alpn_is_refused(pgrelay, pki):
    """Bug guarded: a direct TLS handshake without the "postgresql" ALPN (or with another protocol, e.g.
    an HTTPS client sent to the wrong port) is accepted; PostgreSQL 17 refuses it (protocol confusion
    attacks)."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    for alpn in (None, ["http/1.1"]):
        kind, why = attempt(r.port, tls_context(pki.ca, alpn=alpn), direct=True)
        assert kind in ("closed", "error"), (alpn, kind, why)
    still_serving(r, pki)


# ---------------------------------------------------------------------------------------------------------
# hba: hostssl, hostnossl, cert


HBA_SSL = """\
# TYPE    DATABASE USER     ADDRESS       METHOD
hostssl   all      app      127.0.0.1/32  scram-sha-256
hostnossl all      app      127.0.0.1/32  reject
hostnossl all      postgres 127.0.0.1/32  scram-sha-256
hostssl   all      postgres 127.0.0.1/32  reject
"""


def test_hba_hostssl_hostnossl(pgrelay, pki):
    """Bug guarded: hostssl lines match plain-text clients or hostnossl lines match TLS clients (each user
    here is only let in over one of them)."""
    r = tls_relay(pgrelay, pki, client_mode="prefer", hba=HBA_SSL)
    assert attempt(r.port, tls_context(pki.ca)) == ("ok", None)
    kind, e = plain_attempt(r.port)
    assert kind == "error" and e.sqlstate in ("28000", "28P01"), (kind, e)
    assert plain_attempt(r.port, "postgres", "postgres") == ("ok", None)
    kind, e = attempt(r.port, tls_context(pki.ca), user="postgres", password="postgres")
    assert kind == "error" and e.sqlstate in ("28000", "28P01"), (kind, e)


HBA_CERT = """\
hostssl   all      app      127.0.0.1/32  cert
hostnossl all      app      127.0.0.1/32  reject
host      all      all      127.0.0.1/32  scram-sha-256
"""


def test_hba_cert_method(pgrelay, pki):
    """Bug guarded: the hba `cert` method asks for a password, lets in a TLS client without a certificate
    or with a certificate for another name (CN must be the user name), or accepts a certificate signed by
    another CA; with client_mode = prefer pgrelay must still ask for the client certificate."""
    r = tls_relay(pgrelay, pki, client_mode="prefer", hba=HBA_CERT)
    c = tls_pgwire(r.port, tls_context(pki.ca, cert=pki.app))
    try:
        c.login("app", None, "app")
        assert c.auth_requests == [pgwire.AUTH_OK], f"cert must not ask for a password: {c.auth_requests}"
        assert c.scalar("select current_user") == "app"
    finally:
        c.terminate()
    for cert in (None, pki.other):
        kind, e = attempt(r.port, tls_context(pki.ca, cert=cert))
        assert kind == "error" and e.sqlstate in ("28000", "28P01"), (cert, kind, e)
    kind, why = attempt(r.port, tls_context(pki.ca, cert=pki.wrong_app))
    assert kind in ("closed", "error") and kind != "ok", (kind, why)
    assert plain_attempt(r.port)[0] == "error"
    # psql with a certificate and no password at all.
    p = psql(r.port, f"sslmode=verify-full sslrootcert={pki.ca.crt} sslcert={pki.app.crt} sslkey={pki.app.key}",
             sql="select 'cert ' || current_user", password="")
    assert p.returncode == 0 and p.stdout.strip() == "cert app", p.stderr
    # Other users still use SCRAM over TLS.
    assert attempt(r.port, tls_context(pki.ca), user="postgres", password="postgres") == ("ok", None)


# ---------------------------------------------------------------------------------------------------------
# Channel binding


def test_scram_plus_offered_only_over_tls(pgrelay, pki):
    """Bug guarded: SCRAM-SHA-256-PLUS is not offered over TLS (channel_binding=require fails), or it is
    offered over plain text (libpq refuses such a server: "server offered SCRAM-SHA-256-PLUS
    authentication over a non-SSL connection")."""
    r = tls_relay(pgrelay, pki, client_mode="prefer")
    c = tls_pgwire(r.port, tls_context(pki.ca))
    try:
        code, payload = first_auth_request(c)
        assert code == pgwire.AUTH_SASL, code
        mechs = sasl_mechanisms(payload)
        assert "SCRAM-SHA-256-PLUS" in mechs and "SCRAM-SHA-256" in mechs, mechs
    finally:
        c.close()
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        code, payload = first_auth_request(c)
        assert code == pgwire.AUTH_SASL, code
        assert sasl_mechanisms(payload) == ["SCRAM-SHA-256"], sasl_mechanisms(payload)
    finally:
        c.close()


def test_channel_binding_require_libpq(pgrelay, pki):
    """Bug guarded: libpq's channel_binding=require fails through pgrelay over TLS (wrong
    tls-server-end-point hash, or the server proof does not cover the binding); and without TLS it must
    fail on the client side."""
    r = tls_relay(pgrelay, pki, client_mode="prefer")
    with libpq(r.port, "verify-full", pki, channel_binding="require") as p:
        assert p.pgconn.ssl_in_use is True
        assert p.execute("select 'bound'").fetchone() == ("bound",)
    with libpq(r.port, "require", channel_binding="require") as p:
        assert p.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        libpq(r.port, "disable", channel_binding="require")
    p = psql(r.port, f"sslmode=verify-full sslrootcert={pki.ca.crt} channel_binding=require",
             sql="select 'psql bound'")
    assert p.returncode == 0 and p.stdout.strip() == "psql bound", p.stderr


def test_channel_binding_data_is_checked(pgrelay, pki):
    """Bug guarded: pgrelay accepts SCRAM-SHA-256-PLUS with binding data that is not the hash of its own
    certificate (a man in the middle with another certificate would pass)."""
    r = tls_relay(pgrelay, pki, client_mode="prefer")
    good = tls_server_end_point(der_of(pki.server.crt))
    c = tls_pgwire(r.port, tls_context(pki.ca))
    try:
        scram_plus_login(c, "app", "app", good)
        assert c.scalar("select 'plus ok'") == "plus ok"
    finally:
        c.terminate()
    bad = tls_server_end_point(der_of(pki.wrong_server.crt))
    c = tls_pgwire(r.port, tls_context(pki.ca))
    try:
        with pytest.raises(pgwire.PgError) as ei:
            scram_plus_login(c, "app", "app", bad)
        assert ei.value.sqlstate in ("08P01", "28P01", "28000"), ei.value
    finally:
        c.close()
    still_serving(r, pki)


# ---------------------------------------------------------------------------------------------------------
# Reload and key files


def copy_cert(src, d):
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(src.crt, d / "server.crt")
    shutil.copy(src.key, d / "server.key")
    os.chmod(d / "server.key", 0o600)


def wait_peer_cert(port, der, timeout=15.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = peer_cert(port)
        if got == der:
            return True
        time.sleep(0.2)
    return False


KEY_PROBLEM = re.compile(r"(?im)^.*(key_file|private key|server\.key|key.*(match|certificate|invalid|read|open)).*$")


def expect_kept(r, pki, what):
    """After SIGHUP with a bad key: a log line says why, new sessions still get server2's certificate."""
    off = r.log_size()
    r.reload()
    assert r.wait_log(KEY_PROBLEM, timeout=10, start=off) is not None, \
        f"no log line about {what} after SIGHUP:\n{r.log_tail()}"
    time.sleep(0.5)
    for _ in range(3):
        assert peer_cert(r.port) == der_of(pki.server2.crt), f"{what}: the presented certificate changed"
    with libpq(r.port, "verify-full", pki) as p:
        assert p.execute("select 'kept'").fetchone() == ("kept",)


@pytest.mark.deadline(120)
def test_sighup_reloads_certificate(pgrelay, pki, tmp_path):
    """Bug guarded: SIGHUP does not re-read cert_file/key_file (a renewed certificate needs a restart),
    drops the open TLS sessions, or installs a bad new key (a key that does not match the certificate,
    or no key at all) instead of keeping the old pair and saying why in the log."""
    d = tmp_path / "certs"
    copy_cert(pki.server, d)
    r = pgrelay(tls={"cert_file": str(d / "server.crt"), "key_file": str(d / "server.key"),
                     "client_mode": "prefer"})
    assert peer_cert(r.port) == der_of(pki.server.crt)
    s1 = tls_login(r.port, tls_context(pki.ca))
    try:
        assert s1.scalar("select 'before reload'") == "before reload"
        copy_cert(pki.server2, d)
        r.reload()
        assert wait_peer_cert(r.port, der_of(pki.server2.crt)), \
            f"new sessions still see {cert_serial(peer_cert(r.port))}\n{r.log_tail()}"
        assert s1.scalar("select 'after reload'") == "after reload"
        with libpq(r.port, "verify-full", pki) as p:
            assert p.execute("select 1").fetchone() == (1,)

        # A key that does not match the certificate: the old pair stays.
        shutil.copy(pki.server.crt, d / "server.crt")  # certificate 1001 with server2's key
        expect_kept(r, pki, "a key that does not match the certificate")
        # An unusable key file (not a key at all): the old pair stays.
        copy_cert(pki.server, d)
        (d / "server.key").write_text("this is not a private key\n")
        expect_kept(r, pki, "a key file that holds no key")
        # No key file at all.
        (d / "server.key").unlink()
        expect_kept(r, pki, "a missing key file")
        assert s1.scalar("select 'still open'") == "still open"
        assert r.alive()
    finally:
        s1.terminate()


def check_config(pgrelay, pki, tmp_path, mode, name):
    d = tmp_path / name
    copy_cert(pki.server, d)
    os.chmod(d / "server.key", mode)
    r = pgrelay(start=False, tls={"cert_file": str(d / "server.crt"), "key_file": str(d / "server.key"),
                                  "client_mode": "prefer"})
    return r, subprocess.run([str(pgrelay_bin()), "-t", "-f", str(r.config_path)], capture_output=True,
                             text=True, timeout=15, stdin=subprocess.DEVNULL)


def test_key_file_permissions(pgrelay, pki, tmp_path):
    """Bug guarded: a private key readable by group or others (0644) is accepted (PostgreSQL refuses it);
    0600, and 0640 for a root-owned file, are accepted."""
    if not pgrelay_bin().exists():
        pytest.skip(f"{pgrelay_bin()} not built")
    r, p = check_config(pgrelay, pki, tmp_path, 0o644, "open")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "tls.key_file" in p.stdout + p.stderr, p.stdout + p.stderr
    # Starting it fails the same way.
    try:
        started = subprocess.run([str(pgrelay_bin()), "-f", str(r.config_path), "-d"], capture_output=True,
                                 text=True, timeout=20, stdin=subprocess.DEVNULL, cwd=r.dir)
    except subprocess.TimeoutExpired:
        raise AssertionError("pgrelay started (and kept running) with a key file of mode 0644") from None
    assert started.returncode == 1, (started.returncode, started.stdout[-2000:], started.stderr[-2000:])
    assert "tls.key_file" in started.stdout + started.stderr
    for mode, name in ((0o600, "private"), (0o640, "group")):
        _, p = check_config(pgrelay, pki, tmp_path, mode, name)
        assert os.stat(tmp_path / name / "server.key").st_uid == 0
        assert p.returncode == 0, (oct(mode), p.stdout, p.stderr)


@pytest.mark.parametrize("tls,key", [
    ({"client_mode": "bogus"}, "tls.client_mode"),
    ({"server_mode": "verify-everything"}, "tls.server_mode"),
    ({"cert_file": "/nonexistent/server.crt"}, "tls.cert_file"),
    ({"ca_file": "/nonexistent/root.crt", "client_mode": "verify-ca"}, "tls.ca_file"),
    ({"min_protocol": "SSLv2"}, "tls.min_protocol"),
], ids=["client_mode", "server_mode", "cert_file", "ca_file", "min_protocol"])
def test_bad_tls_config_is_refused(pgrelay, pki, tls, key):
    """Bug guarded: a bad tls value (unknown mode, missing file, unknown protocol) is accepted by -t and
    fails only when a client arrives, or the message does not name the key."""
    if not pgrelay_bin().exists():
        pytest.skip(f"{pgrelay_bin()} not built")
    r = pgrelay(start=False, tls=tls_group(pki, **tls))
    p = subprocess.run([str(pgrelay_bin()), "-t", "-f", str(r.config_path)], capture_output=True, text=True,
                       timeout=15, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert key in p.stdout + p.stderr, p.stdout + p.stderr


# ---------------------------------------------------------------------------------------------------------
# Bad input over TLS


def test_stalled_handshake_is_closed(pgrelay, pki):
    """Bug guarded: a client that gets 'S' and never sends a ClientHello holds its connection forever
    (authentication_timeout must cover the handshake)."""
    r = tls_relay(pgrelay, pki, authentication_timeout="2s")
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        assert ssl_request_answer(c) == b"S"
        read_until_close(c.sock, timeout=30)
    finally:
        c.close()
    # A client that stalls in the middle of the handshake (ClientHello sent, nothing after).
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        assert ssl_request_answer(c) == b"S"
        obj_in, obj_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = tls_context(pki.ca).wrap_bio(obj_in, obj_out, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        c.send(obj_out.read())
        read_until_close(c.sock, timeout=30)
    finally:
        c.close()
    still_serving(r, pki)


GARBAGE = bytes(range(256)) * 4


def test_garbage_instead_of_client_hello(pgrelay, pki):
    """Bug guarded: bytes that are not a ClientHello after 'S' hang the connection, crash pgrelay, or
    disturb other sessions."""
    r = tls_relay(pgrelay, pki)
    bystander = tls_login(r.port, tls_context(pki.ca))
    try:
        for junk in (GARBAGE, b"\x16\x03\x01\xff\xff" + GARBAGE, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            c = pgwire.Conn(port=r.port, timeout=5)
            try:
                assert ssl_request_answer(c) == b"S"
                c.send(junk)
                read_until_close(c.sock, timeout=15)
            finally:
                c.close()
        still_serving(r, pki, bystander)
    finally:
        bystander.terminate()


def test_plaintext_startup_after_s(pgrelay, pki):
    """Bug guarded: a client that gets 'S' but sends a plain startup packet is logged in in plain text
    (under client_mode = require that would bypass TLS)."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        assert ssl_request_answer(c) == b"S"
        c.send(pgwire.startup_packet("app", "app"))
        data = read_until_close(c.sock, timeout=15)
    finally:
        c.close()
    assert b"R\x00\x00\x00" not in data and b"Z\x00\x00\x00\x05" not in data, data[:200]
    still_serving(r, pki)


def test_bytes_pipelined_behind_ssl_request(pgrelay, pki):
    """Bug guarded (CVE-2021-23214 class): plain-text bytes sent with the SSLRequest in one write are kept
    and read as if they came over TLS (a man in the middle could inject them), instead of an 08P01 error
    or a close without TLS."""
    r = tls_relay(pgrelay, pki, client_mode="prefer")
    c = pgwire.Conn(port=r.port, timeout=5)
    try:
        c.send(pgwire.ssl_request() + pgwire.startup_packet("app", "app"))
        data = read_until_close(c.sock, timeout=15)
    finally:
        c.close()
    rest = data[1:] if data[:1] in (b"S", b"N") else data
    msgs = []
    while len(rest) >= 5:
        (ln,) = struct.unpack_from("!I", rest, 1)
        msgs.append(pgwire.Msg(chr(rest[0]), rest[5:1 + ln]))
        rest = rest[1 + ln:]
    assert not any(m.type in ("R", "Z", "K") for m in msgs), msgs
    errors = [pgwire.parse_error_fields(m.payload) for m in msgs if m.type == "E"]
    assert all(e.get("C") == "08P01" for e in errors), errors
    still_serving(r, pki)


def test_renegotiation_is_refused(pgrelay, pki):
    """Bug guarded: a TLS 1.2 client asking for renegotiation ('R' in openssl s_client) gets it, which
    PostgreSQL never allows (renegotiation DoS, CVE-2009-3555 class), or hangs / crashes pgrelay."""
    r = tls_relay(pgrelay, pki, client_mode="prefer")
    bystander = tls_login(r.port, tls_context(pki.ca))
    try:
        p = subprocess.Popen(["openssl", "s_client", "-tls1_2", "-starttls", "postgres", "-connect",
                              f"127.0.0.1:{r.port}", "-CAfile", str(pki.ca.crt)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)  # the handshake
            assert p.poll() is None, p.stdout.read().decode(errors="replace")
            p.stdin.write(b"R\n")
            p.stdin.flush()
            try:
                out, _ = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                raise AssertionError("the connection stayed open after a renegotiation request:\n"
                                     + out.decode(errors="replace")[-2000:])
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        text = out.decode(errors="replace")
        assert "RENEGOTIATING" in text, text[-2000:]  # s_client did ask
        assert "Protocol  : TLSv1.2" in text or "TLSv1.2" in text, text[-2000:]
        still_serving(r, pki, bystander)
    finally:
        bystander.terminate()


@pytest.mark.deadline(120)
def test_big_messages_over_tls(pgrelay, pki):
    """Bug guarded: messages larger than one TLS record (16 kB) or than the connection's buffer are cut,
    reordered or stall when they cross the TLS layer, in either direction."""
    r = tls_relay(pgrelay, pki, client_mode="require")
    n = 6 * 1024 * 1024
    with tls_login(r.port, tls_context(pki.ca)) as c:
        big = "y" * n
        assert c.scalar(f"select length('{big}')", timeout=60) == str(n)
        cyc = c.simple(f"select repeat('z', {n}), md5(repeat('z', {n}))", timeout=60)
        assert not cyc.errors, cyc.errors
        row = cyc.results[0].rows[0]
        assert len(row[0]) == n and row[0] == b"z" * n
        assert c.scalar("select 'after big'") == "after big"
    with libpq(r.port, "verify-full", pki) as p:
        assert p.execute("select length(%s)", ("w" * n,)).fetchone() == (n,)
        v = p.execute("select repeat('v', %s)", (n,)).fetchone()[0]
        assert v == "v" * n


@pytest.mark.deadline(180)
def test_many_idle_tls_clients(pgrelay, pki):
    """Bug guarded: 200 idle TLS clients (logged in, or stopped after the handshake) slow down or break a
    working session (per-connection TLS state kept busy, a shared buffer, a scan over every client), and
    dropping them all at once disturbs it."""
    r = tls_relay(pgrelay, pki, client_mode="prefer", authentication_timeout="120s",
                  pool={"mode": "transaction", "pool_size": 4})
    worker = tls_login(r.port, tls_context(pki.ca))
    idle = []
    try:
        for i in range(150):
            idle.append(tls_login(r.port, tls_context(pki.ca)))
            if i % 50 == 0:
                assert worker.scalar(f"select {i}") == str(i)
        for _ in range(50):
            idle.append(tls_pgwire(r.port, tls_context(pki.ca)))  # handshake done, no startup yet
        for i in range(100):
            assert worker.scalar(f"select {i} + 1") == str(i + 1)
        for c in idle[:150:7]:
            assert c.scalar("select 'idle ok'") == "idle ok"
        for c in idle:
            c.abort()
        idle.clear()
        for i in range(20):
            assert worker.scalar(f"select {i} * 2") == str(i * 2)
        still_serving(r, pki)
    finally:
        for c in idle:
            c.close()
        worker.terminate()


# ---------------------------------------------------------------------------------------------------------
# Backends


def _pg_set(cluster, node, settings, reset=False):
    with cluster.connect(node, dbname="postgres") as c:
        for k, v in settings.items():
            if reset:
                c.execute(f"alter system reset {k}")
            else:
                c.execute(f"alter system set {k} = '{v}'")
        c.execute("select pg_reload_conf()")


def _node_ssl(cluster, node):
    """True when the node accepts a TLS connection now (sslmode=require), False when it refuses TLS."""
    try:
        with cluster.connect(node, dbname="postgres", sslmode="require") as c:
            return c.pgconn.ssl_in_use
    except psycopg.OperationalError as e:
        if "does not support SSL" in str(e):
            return False
        raise


@pytest.fixture(scope="module")
def pg_tls(cluster, pki):
    """ssl = on on the three nodes for this module (reset at teardown, also after a failure). The files
    are copied into the cluster's folder (owned by postgres, keys 0600), so a reused cluster
    (PGRELAY_TEST_CLUSTER) that restarts with a leftover setting still finds them."""
    import pwd
    pg = pwd.getpwnam("postgres")
    d = cluster.dir / "tls"
    d.mkdir(exist_ok=True)
    os.chown(d, pg.pw_uid, pg.pw_gid)
    keys = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl")
    per_node = {}
    for node in range(3):
        cert = pki.badhost if node == 2 else pki.server
        files = {}
        for src, name in ((cert.crt, f"node{node}.crt"), (cert.key, f"node{node}.key"), (pki.ca.crt, "root.crt")):
            shutil.copy(src, d / name)
            os.chown(d / name, pg.pw_uid, pg.pw_gid)
            files[name] = d / name
        os.chmod(d / f"node{node}.key", 0o600)
        per_node[node] = {"ssl_cert_file": d / f"node{node}.crt", "ssl_key_file": d / f"node{node}.key",
                          "ssl_ca_file": d / "root.crt", "ssl": "on"}
    try:
        for node in range(3):
            _pg_set(cluster, node, per_node[node])
        deadline = time.monotonic() + 20
        while not all(_node_ssl(cluster, n) for n in range(3)):
            assert time.monotonic() < deadline, "ssl = on did not take effect on every node"
            time.sleep(0.2)
        yield per_node
    finally:
        for node in range(3):
            _pg_set(cluster, node, dict.fromkeys(keys), reset=True)
        deadline = time.monotonic() + 20
        while any(_node_ssl(cluster, n) for n in range(3)) and time.monotonic() < deadline:
            time.sleep(0.2)


def backends(cluster, **per_node):
    """default backends with per-node overrides: node0={...}."""
    out = default_settings(cluster, 0)["backends"]
    for k, v in per_node.items():
        out[int(k[-1])].update(v)
    return out


PRIMARY_ONLY = {"enabled": False}


def backend_tls(port):
    """(ssl, client_dn) of the backend connection that runs the session's statements."""
    with connect(port) as c:
        return c.execute("select ssl, coalesce(client_dn, '') from pg_stat_ssl "
                         "where pid = pg_backend_pid()").fetchone()


def server_tls(pki, **keys):
    g = {"server_ca_file": str(pki.ca.crt)}
    g.update(keys)
    return g


@pytest.mark.parametrize("mode,encrypted", [("disable", False), ("allow", False), ("prefer", True),
                                            ("require", True), ("verify-ca", True), ("verify-full", True)])
def test_server_mode(pgrelay, pki, pg_tls, mode, encrypted):
    """Bug guarded: tls.server_mode does not follow libpq's sslmode meanings towards the backends
    (disable/allow stay in plain text when the server takes both, prefer and stronger encrypt), seen
    from PostgreSQL's pg_stat_ssl for the backend connection that runs the session."""
    r = pgrelay(tls=server_tls(pki, server_mode=mode), load_balance=PRIMARY_ONLY)
    ssl_on, _ = backend_tls(r.port)
    assert ssl_on is encrypted, (mode, ssl_on)


def test_per_backend_tls_mode_override(pgrelay, pki, pg_tls, cluster):
    """Bug guarded: a backend's own tls_mode is ignored in favour of tls.server_mode (or the other way
    round for the backends without one)."""
    r = pgrelay(tls=server_tls(pki, server_mode="disable"), load_balance=PRIMARY_ONLY,
                backends=backends(cluster, node0={"tls_mode": "verify-full", "tls_ca_file": str(pki.ca.crt)}))
    assert backend_tls(r.port)[0] is True
    r2 = pgrelay(tls=server_tls(pki, server_mode="require"), load_balance=PRIMARY_ONLY,
                 backends=backends(cluster, node0={"tls_mode": "disable"}))
    assert backend_tls(r2.port)[0] is False
    # A backend's tls_ca_file replaces server_ca_file (here the global one could not verify anything).
    r3 = pgrelay(tls={"server_mode": "verify-full", "server_ca_file": str(pki.wrong_ca.crt)},
                 load_balance=PRIMARY_ONLY,
                 backends=backends(cluster, node0={"tls_ca_file": str(pki.ca.crt)})[:1])
    assert backend_tls(r3.port)[0] is True


def test_server_client_certificate(pgrelay, pki, pg_tls):
    """Bug guarded: server_cert_file/server_key_file are not presented to the backends (PostgreSQL, which
    has ssl_ca_file set, shows the client certificate's DN in pg_stat_ssl)."""
    r = pgrelay(tls=server_tls(pki, server_mode="verify-full", server_cert_file=str(pki.app.crt),
                               server_key_file=str(pki.app.key)), load_balance=PRIMARY_ONLY)
    assert backend_tls(r.port) == (True, "/CN=app")


def node_states(port):
    with connect(port, user="postgres", password="postgres", dbname="postgres") as c:
        return [row["status"] for row in pool_nodes(c)]


def wait_states(r, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    states = None
    while time.monotonic() < deadline:
        try:
            states = node_states(r.port)
            if states == want:
                return states
        except psycopg.Error as e:
            states = repr(e)
        time.sleep(0.3)
    raise AssertionError(f"pool_nodes status {states}, expected {want}\n{r.log_tail()}")


@pytest.mark.deadline(90)
def test_health_check_verify_full_reports_bad_node_down(pgrelay, pki, pg_tls):
    """Bug guarded: the health check (libpq) ignores tls.server_mode: a node whose certificate does not
    match its host name (node2, CN wrong.invalid) stays up under verify-full, so clients would be sent to a
    node pgrelay itself cannot verify. Under verify-ca (same CA, no name check) every node is up."""
    r = pgrelay(tls=server_tls(pki, server_mode="verify-ca"))
    wait_states(r, ["up", "up", "up"])
    r2 = pgrelay(tls=server_tls(pki, server_mode="verify-full"))
    wait_states(r2, ["up", "up", "down"])
    assert re.search(r"(?i)certificate|verif", r2.log_text()), r2.log_tail()
    with connect(r2.port) as c:
        assert c.execute("select 'primary fine'").fetchone() == ("primary fine",)


@pytest.mark.deadline(90)
def test_unverified_backend_gets_no_login(pgrelay, pki, pg_tls, cluster):
    """Bug guarded: a backend whose certificate fails verify-full (signed by a CA pgrelay does not trust)
    is logged into anyway, or pgrelay falls back to plain text; the client must get an error (class 08)
    and the log must say why."""
    r = pgrelay(tls=server_tls(pki, server_mode="verify-full"),
                backends=backends(cluster, node0={"tls_ca_file": str(pki.wrong_ca.crt)})[:1],
                load_balance=PRIMARY_ONLY, pool={"server_connect_timeout": "3s"})
    c = pgwire.Conn(port=r.port, timeout=20)
    try:
        with pytest.raises(pgwire.PgError) as ei:
            c.login("app", "app", "app", timeout=20)
    finally:
        c.close()
    assert ei.value.sqlstate[:2] in ("08", "57"), ei.value
    assert re.search(r"(?i)certificate verify failed|verif", r.log_text()), r.log_tail()
    assert r.alive()


@pytest.mark.deadline(90)
@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_unverified_backend_never_gets_a_password(pgrelay, pki, mode):
    """Bug guarded: pgrelay sends the user's password (or even the startup packet) to a backend whose
    certificate it could not verify, or falls back to plain text with it. A fake backend presents a
    certificate from another CA and asks for a cleartext password; the negative control (server_mode =
    require, no verification) shows the fake would have got the login."""
    fake = FakeTlsBackend(pki.wrong_server)
    try:
        one = [{"host": "127.0.0.1", "port": fake.port, "weight": 1.0}]
        control = pgrelay(tls={"server_mode": "require"}, backends=one, load_balance=PRIMARY_ONLY)
        c = pgwire.Conn(port=control.port, timeout=20)
        try:
            with pytest.raises(pgwire.PgError):
                c.login("app", "app", "app", timeout=20)
        finally:
            c.close()
        deadline = time.monotonic() + 10
        while not fake.startups and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake.handshakes > 0 and any(k == "tls" for k, _ in fake.startups), \
            (fake.handshakes, fake.startups, fake.handshake_errors)
        control.shutdown_and_check()

        fake.handshakes, fake.startups, fake.passwords, fake.handshake_errors = 0, [], [], []
        r = pgrelay(tls=server_tls(pki, server_mode=mode), backends=one, load_balance=PRIMARY_ONLY)
        c = pgwire.Conn(port=r.port, timeout=20)
        try:
            with pytest.raises(pgwire.PgError) as ei:
                c.login("app", "app", "app", timeout=20)
        finally:
            c.close()
        assert ei.value.sqlstate[:2] in ("08", "57"), ei.value
        time.sleep(2)  # health checks ran against the fake too
        assert fake.passwords == [], fake.passwords
        assert fake.startups == [], fake.startups
        assert fake.handshakes == 0
        assert fake.handshake_errors, "pgrelay never tried TLS with the backend"
        assert re.search(r"(?i)certificate|verif", r.log_text()), r.log_tail()
    finally:
        fake.stop()


# ---------------------------------------------------------------------------------------------------------
# Drivers


def test_asyncpg_tls(pgrelay, pki):
    """Bug guarded: asyncpg (its own TLS over asyncio, ssl=SSLContext) cannot connect through pgrelay with
    client_mode = require, or with a client certificate under verify-full."""
    try:
        import asyncpg
    except ImportError as e:
        missing(f"asyncpg is not importable ({e}); install python3-asyncpg")
    r = tls_relay(pgrelay, pki, client_mode="require")
    r2 = tls_relay(pgrelay, pki, client_mode="verify-full")

    async def one(port, ctx):
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="app", database="app",
                                     ssl=ctx, timeout=10, command_timeout=20)
        try:
            assert await conn.fetchval("select $1::int + 1", 41) == 42
            assert await conn.fetchval("select length($1::text)", "q" * (2 << 20)) == 2 << 20
            return await conn.fetchval("select current_user")
        finally:
            await asyncio.wait_for(conn.close(), 10)

    async def main():
        assert await one(r.port, ssl.create_default_context(cafile=str(pki.ca.crt))) == "app"
        ctx = ssl.create_default_context(cafile=str(pki.ca.crt))
        ctx.load_cert_chain(str(pki.app.crt), str(pki.app.key))
        assert await one(r2.port, ctx) == "app"
        with pytest.raises((ssl.SSLError, OSError)):
            await one(r.port, ssl.create_default_context(cafile=str(pki.wrong_ca.crt)))

    asyncio.run(asyncio.wait_for(main(), 60))


def run_program(cmd, timeout=60):
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return None, f"(no exit within {timeout}s) {e.stdout or ''}{e.stderr or ''}"


@pytest.fixture(scope="module")
def node_bin():
    node = shutil.which("node")
    if not node:
        missing("node not found on PATH; run scripts/node_deps.sh")
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        missing(f"{NODE_DIR}/node_modules/pg missing; run scripts/node_deps.sh "
                f"(npm ci --prefix tests/integration/node)")
    return node


@pytest.mark.parametrize("variant", ["ca", "client-cert", "channel-binding"])
def test_node_postgres_tls(pgrelay, pki, node_bin, variant):
    """Bug guarded: node-postgres with ssl: { ca, rejectUnauthorized: true } cannot connect through pgrelay
    (Node checks the IP SAN itself), with a client certificate under verify-full, or with
    SCRAM-SHA-256-PLUS (enableChannelBinding). The wrong CA must fail (negative control)."""
    mode = "verify-full" if variant == "client-cert" else "require"
    r = tls_relay(pgrelay, pki, client_mode=mode)
    cfg = {"port": r.port, "user": "app", "password": "app", "database": "app", "ca": str(pki.ca.crt),
           "channelBinding": variant == "channel-binding"}
    if variant == "client-cert":
        cfg.update(cert=str(pki.app.crt), key=str(pki.app.key))
    code, out = run_program([node_bin, str(NODE_DIR / "tls.js"), json.dumps(cfg)])
    assert code == 0 and out.strip().endswith("OK"), out
    cfg["ca"] = str(pki.wrong_ca.crt)
    code, out = run_program([node_bin, str(NODE_DIR / "tls.js"), json.dumps(cfg)])
    assert code == 1 and "FAIL" in out, out


@pytest.fixture(scope="module")
def tls_check_classes(tmp_path_factory):
    from test_drivers import compile_java
    return compile_java(tmp_path_factory, "TlsCheck.java")


def test_jdbc_tls(pgrelay, pki, tls_check_classes):
    """Bug guarded: pgJDBC with ssl=true&sslmode=verify-full&sslrootcert=... cannot connect through
    pgrelay (its own Java TLS stack and host name check of the IP SAN). The wrong CA must fail."""
    r = tls_relay(pgrelay, pki, client_mode="require")

    def url(ca):
        return (f"jdbc:postgresql://127.0.0.1:{r.port}/app?ssl=true&sslmode=verify-full&sslrootcert={ca}"
                f"&connectTimeout=5&socketTimeout=30")

    code, out = run_program(["java", "-cp", tls_check_classes, "TlsCheck", url(pki.ca.crt), "app", "app"])
    assert code == 0 and "OK" in out, out
    code, out = run_program(["java", "-cp", tls_check_classes, "TlsCheck", url(pki.wrong_ca.crt), "app", "app"])
    assert code == 1 and "FAIL" in out, out
