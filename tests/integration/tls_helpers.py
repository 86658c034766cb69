"""Helpers for the TLS tests (tests/integration/test_tls.py).

Certificates (`pki`, session-scoped): made with the `openssl` command only, in a temporary folder, every
private key mode 0600. EC P-256 keys (fast to make, accepted by libpq, Python, Node and Java).
- `ca`: the test CA (root.crt); `server` (CN=localhost, SAN IP:127.0.0.1 DNS:localhost) and `server2`
  (same names, another serial and O=reloaded: the certificate a reload switches to), both signed by it.
- `app` (CN=app) and `other` (CN=someoneelse): client certificates signed by the CA.
- `wrong_ca` and `wrong_app` (CN=app signed by wrong_ca), `wrong_server` (server names, signed by
  wrong_ca: a backend whose certificate fails verification).
- `expired_app` (CN=app, signed by the CA, valid only in 2020). OpenSSL 3.0's `x509 -req` has no
  `-not_after` (3.4 added it) and `-days` cannot be negative, so it is issued by `openssl ca` with
  `-startdate`/`-enddate`.
- `badhost`: signed by the CA, CN/SAN wrong.invalid only (verify-ca accepts it, verify-full does not).
Each entry is a `Cert(crt, key)` of absolute paths; `pki.ca.crt` is the CA file.

TLS clients that libpq cannot express: `tls_context()` (a client SSLContext), `tls_pgwire()` (a pgwire.Conn
whose socket is wrapped after SSLRequest/'S', or at once for PostgreSQL 17's direct TLS), `peer_cert()` (the
DER certificate a listener presents), `ScramPlus` (SCRAM-SHA-256-PLUS with tls-server-end-point, with a
switch to send wrong binding data).
"""

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import subprocess
import tempfile
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import pgwire


@dataclass
class Cert:
    crt: Path
    key: Path


@dataclass
class Pki:
    dir: Path
    ca: Cert
    server: Cert
    server2: Cert
    app: Cert
    other: Cert
    wrong_ca: Cert
    wrong_app: Cert
    wrong_server: Cert
    expired_app: Cert
    badhost: Cert


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *map(str, args)], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def _key(path):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)


LEAF_EXT = """\
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

CA_CONF = """\
[ca]
default_ca = test_ca

[test_ca]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = {ca_crt}
private_key = {ca_key}
serial = $dir/serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
email_in_dn = no

[any_name]
commonName = supplied

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_ca(d, name, cn):
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    _key(key)
    openssl("req", "-new", "-x509", "-key", key, "-out", crt, "-days", "3650", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")
    return Cert(crt, key)


def make_leaf(d, name, subject, ca, kind, san=None, serial=None):
    """A certificate signed by ca; kind is "server" (with san) or "client"."""
    crt, key, csr, ext = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    _key(key)
    openssl("req", "-new", "-key", key, "-out", csr, "-subj", subject)
    ext.write_text(LEAF_EXT.format(san=san or "DNS:unused.invalid"))
    serial = serial if serial is not None else int.from_bytes(os.urandom(8), "big") >> 1
    openssl("x509", "-req", "-in", csr, "-CA", ca.crt, "-CAkey", ca.key, "-set_serial", serial, "-days", "3650",
            "-sha256", "-extfile", ext, "-extensions", kind, "-out", crt)
    return Cert(crt, key)


def make_expired_client(d, name, cn, ca):
    """A client certificate signed by ca whose validity ended in 2020 (openssl ca -startdate/-enddate)."""
    cadir = d / f"{name}-cadb"
    (cadir / "newcerts").mkdir(parents=True)
    (cadir / "index.txt").write_text("")
    (cadir / "serial").write_text("1000\n")
    conf = cadir / "ca.cnf"
    conf.write_text(CA_CONF.format(dir=cadir, ca_crt=ca.crt, ca_key=ca.key))
    crt, key, csr = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr"
    _key(key)
    openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={cn}")
    openssl("ca", "-batch", "-config", conf, "-in", csr, "-out", crt, "-notext", "-extensions", "client",
            "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
    return Cert(crt, key)


SERVER_SAN = "IP:127.0.0.1,DNS:localhost"


def make_pki(d):
    d = Path(d)
    ca = make_ca(d, "root", "pgrelay test CA")
    wrong_ca = make_ca(d, "wrong-root", "pgrelay wrong CA")
    pki = Pki(
        dir=d, ca=ca, wrong_ca=wrong_ca,
        server=make_leaf(d, "server", "/CN=localhost", ca, "server", SERVER_SAN, serial=1001),
        server2=make_leaf(d, "server2", "/O=reloaded/CN=localhost", ca, "server", SERVER_SAN, serial=1002),
        app=make_leaf(d, "app", "/CN=app", ca, "client"),
        other=make_leaf(d, "other", "/CN=someoneelse", ca, "client"),
        wrong_app=make_leaf(d, "wrong-app", "/CN=app", wrong_ca, "client"),
        wrong_server=make_leaf(d, "wrong-server", "/CN=localhost", wrong_ca, "server", SERVER_SAN),
        expired_app=make_expired_client(d, "expired-app", "app", ca),
        badhost=make_leaf(d, "badhost", "/CN=wrong.invalid", ca, "server", "DNS:wrong.invalid"),
    )
    # Self-checks: the chain verifies where it should and the expired one is expired.
    openssl("verify", "-CAfile", ca.crt, pki.server.crt, pki.app.crt, pki.badhost.crt)
    r = subprocess.run(["openssl", "verify", "-CAfile", str(ca.crt), str(pki.expired_app.crt)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "expired" in (r.stdout + r.stderr), r.stdout + r.stderr
    return pki


@pytest.fixture(scope="session")
def pki():
    d = tempfile.mkdtemp(prefix="pgrelay-pki-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield make_pki(d)
    finally:
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)


def cert_serial(der):
    """Serial number of a DER certificate (via openssl x509)."""
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-subject"], input=der,
                         capture_output=True, timeout=30, check=True).stdout.decode()
    return out


def der_of(path):
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


# ---------------------------------------------------------------------------------------------------------
# TLS clients.


def tls_context(ca=None, cert=None, verify=True, alpn=None, max_version=None):
    """A client SSLContext: verifies the server against ca (hostname check on) unless verify is False;
    presents cert (a Cert) when given."""
    if isinstance(ca, Cert):
        ca = ca.crt
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert.crt), str(cert.key))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def ssl_request_answer(c, timeout=5):
    """Send SSLRequest over the plain pgwire.Conn c and return the one-byte answer."""
    c.send(pgwire.ssl_request())
    return c.read_bytes(1, timeout=timeout)


def tls_pgwire(port, ctx, direct=False, timeout=10, host="127.0.0.1"):
    """A pgwire.Conn over TLS: SSLRequest, 'S', handshake (or, direct=True, the handshake at once as
    PostgreSQL 17's sslnegotiation=direct does). Raises AssertionError if the answer is not 'S',
    ssl.SSLError / OSError if the handshake fails."""
    c = pgwire.Conn(port=port, timeout=timeout)
    try:
        if not direct:
            answer = ssl_request_answer(c)
            if answer != b"S":
                raise AssertionError(f"SSLRequest answered {answer!r}, expected b'S'")
            assert c.buf == b"", f"bytes after 'S': {c.buf!r}"
        c.sock = ctx.wrap_socket(c.sock, server_hostname=host)
    except BaseException:
        c.close()
        raise
    return c


def tls_login(port, ctx, user="app", password="app", database="app", direct=False, **params):
    c = tls_pgwire(port, ctx, direct=direct)
    try:
        c.login(user, password, database, **params)
    except BaseException:
        c.close()
        raise
    return c


def peer_cert(port, ca=None):
    """The DER certificate the listener on port presents after SSLRequest (no verification)."""
    c = tls_pgwire(port, tls_context(verify=False))
    try:
        return c.sock.getpeercert(binary_form=True)
    finally:
        c.close()


def first_auth_request(c, user="app", database="app"):
    """Send a startup packet over c; return (auth code, payload after the code) of the first 'R'."""
    c.send(pgwire.startup_packet(user, database))
    while True:
        m = c.read_msg()
        if m.type == "R":
            (code,) = struct.unpack_from("!I", m.payload, 0)
            return code, m.payload[4:]
        if m.type == "E":
            raise pgwire.PgError(pgwire.parse_error_fields(m.payload))


def sasl_mechanisms(payload):
    return [x.decode() for x in payload.split(b"\0") if x]


def outcome(c, timeout=10):
    """What a server did with a connection: ("ok", msgs) if it logged in (ReadyForQuery), ("error",
    sqlstate, msgs) on an ErrorResponse, ("closed", msgs) if it closed (EOF, reset, TLS alert),
    ("open", msgs) if nothing happened before the deadline."""
    msgs = []
    try:
        while True:
            m = c.read_msg(timeout=timeout)
            msgs.append(m)
            if m.type == "E":
                return "error", pgwire.parse_error_fields(m.payload).get("C"), msgs
            if m.type == "Z":
                return "ok", None, msgs
    except (pgwire.Closed, ssl.SSLError, ConnectionError, OSError) as e:
        if isinstance(e, socket.timeout):
            return "open", None, msgs
        return "closed", str(e), msgs
    except pgwire.Timeout:
        return "open", None, msgs


# ---------------------------------------------------------------------------------------------------------
# SCRAM-SHA-256-PLUS (tls-server-end-point), for checking that pgrelay verifies the binding data.


def tls_server_end_point(der):
    """RFC 5929 tls-server-end-point: the certificate's hash with its signature algorithm's hash (SHA-256
    for MD5/SHA-1/SHA-256 signatures, which covers every certificate made here)."""
    return hashlib.sha256(der).digest()


class ScramPlus:
    MECHANISM = "SCRAM-SHA-256-PLUS"

    def __init__(self, password, cbind_data):
        self.password = password
        self.cbind_data = cbind_data
        self.gs2 = b"p=tls-server-end-point,,"
        self.nonce = base64.b64encode(os.urandom(18)).decode()

    def client_first(self):
        self.client_first_bare = f"n=,r={self.nonce}"
        return self.gs2 + self.client_first_bare.encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce)
        salt = base64.b64decode(attrs["s"])
        client_key, stored_key, server_key = pgwire.scram_keys(self.password, salt, int(attrs["i"]))
        cbind = base64.b64encode(self.gs2 + self.cbind_data).decode()
        without_proof = f"c={cbind},r={attrs['r']}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def scram_plus_login(c, user, password, cbind_data, database="app"):
    """Log in over the TLS pgwire.Conn c with SCRAM-SHA-256-PLUS; returns after ReadyForQuery, raises
    PgError on an error."""
    code, payload = first_auth_request(c, user, database)
    assert code == pgwire.AUTH_SASL, code
    assert ScramPlus.MECHANISM in sasl_mechanisms(payload), sasl_mechanisms(payload)
    s = ScramPlus(password, cbind_data)
    first = s.client_first()
    c.send(pgwire.msg("p", pgwire.cstr(s.MECHANISM) + struct.pack("!i", len(first)) + first))
    while True:
        m = c.read_msg()
        if m.type == "E":
            raise pgwire.PgError(pgwire.parse_error_fields(m.payload))
        if m.type == "R":
            (code,) = struct.unpack_from("!I", m.payload, 0)
            if code == pgwire.AUTH_SASL_CONTINUE:
                c.send(pgwire.msg("p", s.client_final(m.payload[4:])))
            elif code == pgwire.AUTH_SASL_FINAL:
                v = dict(kv.split("=", 1) for kv in m.payload[4:].decode().split(","))["v"]
                assert base64.b64decode(v) == s.server_signature, "wrong server signature"
        elif m.type == "Z":
            return c


# ---------------------------------------------------------------------------------------------------------
# A fake backend that presents a given certificate and records what a client sends it.


class FakeTlsBackend:
    """Listens on a free loopback port. Answers SSLRequest with 'S' and a TLS handshake with cert (a
    Cert); then, as for a plain startup, asks for a cleartext password and records it. Records:
    `handshakes` (completed TLS handshakes), `startups` (startup packets, with "tls" or "plain"),
    `passwords` (PasswordMessage payloads). Every socket has a deadline; stop() joins the thread."""

    def __init__(self, cert):
        import threading
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert.crt), str(cert.key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self.handshake_errors = []
        self.startups = []
        self.passwords = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import threading
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    @staticmethod
    def _read(s, n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self, s):
        s.settimeout(10)
        kind = "plain"
        try:
            (length,) = struct.unpack("!I", self._read(s, 4))
            body = self._read(s, length - 4)
            if length == 8 and struct.unpack("!I", body)[0] == pgwire.SSL_REQUEST_CODE:
                s.sendall(b"S")
                try:
                    s = self.ctx.wrap_socket(s, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    with self.lock:
                        self.handshake_errors.append(str(e))
                    return
                kind = "tls"
                with self.lock:
                    self.handshakes += 1
                (length,) = struct.unpack("!I", self._read(s, 4))
                body = self._read(s, length - 4)
            with self.lock:
                self.startups.append((kind, body))
            s.sendall(pgwire.msg("R", struct.pack("!I", pgwire.AUTH_CLEARTEXT)))
            t = self._read(s, 1)
            (length,) = struct.unpack("!I", self._read(s, 4))
            payload = self._read(s, length - 4)
            if t == b"p":
                with self.lock:
                    self.passwords.append((kind, payload))
            s.sendall(pgwire.msg("E", b"SFATAL\0C28P01\0Mfake backend\0\0"))
        except (EOFError, OSError, struct.error):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()
