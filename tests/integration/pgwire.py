"""A small raw PostgreSQL v3 protocol client for tests that libpq cannot express.

It speaks just enough of the protocol to log in (trust, cleartext, md5, SCRAM-SHA-256), run simple and
extended queries, call functions by OID ('F'), and send deliberately malformed bytes. Every read has a
deadline: a read that times out raises `Timeout`, a closed connection raises `Closed`.

Messages are returned as `Msg(type, payload)` where type is a one-character str ('R', 'E', 'Z', ...).
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass, field

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

DEFAULT_TIMEOUT = 10.0


class Closed(Exception):
    """The peer closed the connection (EOF or reset)."""


class Timeout(Exception):
    """No complete message arrived before the deadline."""


class PgError(Exception):
    """An ErrorResponse; .fields maps field codes ('C', 'M', ...) to values."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")


@dataclass
class Msg:
    type: str
    payload: bytes

    def __repr__(self):
        p = self.payload if len(self.payload) <= 60 else self.payload[:60] + b"..."
        return f"Msg({self.type!r}, {p!r})"


# ---------------------------------------------------------------------------------------------------------
# Message builders (pure functions returning bytes).


def cstr(s):
    if isinstance(s, str):
        s = s.encode()
    return s + b"\0"


def msg(type_, payload=b""):
    """A regular message: type byte, int32 length (including itself), payload."""
    if isinstance(type_, str):
        type_ = type_.encode()
    return type_ + struct.pack("!I", len(payload) + 4) + payload


def startup_packet(user=None, database=None, protocol=PROTOCOL_3_0, **params):
    body = struct.pack("!I", protocol)
    if user is not None:
        body += cstr("user") + cstr(user)
    if database is not None:
        body += cstr("database") + cstr(database)
    for k, v in params.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def gssenc_request():
    return struct.pack("!II", 8, GSSENC_REQUEST_CODE)


def cancel_request(pid, key):
    return struct.pack("!IIii", 16, CANCEL_REQUEST_CODE, pid, key)


def query(sql):
    return msg("Q", cstr(sql))


def parse(name, sql, param_types=()):
    return msg("P", cstr(name) + cstr(sql) + struct.pack("!H", len(param_types))
               + b"".join(struct.pack("!I", t) for t in param_types))


def bind(portal, statement, params=(), param_formats=(), result_formats=()):
    body = cstr(portal) + cstr(statement)
    body += struct.pack("!H", len(param_formats)) + b"".join(struct.pack("!H", f) for f in param_formats)
    body += struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            if isinstance(p, str):
                p = p.encode()
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
    return msg("B", body)


def describe(kind, name=""):
    return msg("D", kind.encode() + cstr(name))


def execute(portal="", max_rows=0):
    return msg("E", cstr(portal) + struct.pack("!I", max_rows))


def close(kind, name=""):
    return msg("C", kind.encode() + cstr(name))


def sync():
    return msg("S")


def flush():
    return msg("H")


def terminate():
    return msg("X")


def function_call(oid, args=(), arg_formats=(), result_format=0):
    body = struct.pack("!I", oid)
    body += struct.pack("!H", len(arg_formats)) + b"".join(struct.pack("!H", f) for f in arg_formats)
    body += struct.pack("!H", len(args))
    for a in args:
        if a is None:
            body += struct.pack("!i", -1)
        else:
            if isinstance(a, str):
                a = a.encode()
            body += struct.pack("!i", len(a)) + a
    body += struct.pack("!H", result_format)
    return msg("F", body)


def copy_data(data):
    return msg("d", data)


def copy_done():
    return msg("c")


def copy_fail(reason):
    return msg("f", cstr(reason))


# ---------------------------------------------------------------------------------------------------------
# Message parsers.


def parse_error_fields(payload):
    """ErrorResponse / NoticeResponse payload -> {field code: value}."""
    fields = {}
    i = 0
    while i < len(payload) and payload[i] != 0:
        code = chr(payload[i])
        end = payload.index(b"\0", i + 1)
        fields[code] = payload[i + 1:end].decode(errors="replace")
        i = end + 1
    return fields


def parse_row_description(payload):
    (n,) = struct.unpack_from("!H", payload, 0)
    off = 2
    cols = []
    for _ in range(n):
        end = payload.index(b"\0", off)
        name = payload[off:end].decode()
        off = end + 1
        table_oid, attnum, type_oid, typlen, typmod, fmt = struct.unpack_from("!IhIhih", payload, off)
        off += 18
        cols.append({"name": name, "type_oid": type_oid, "format": fmt})
    return cols


def parse_data_row(payload):
    (n,) = struct.unpack_from("!H", payload, 0)
    off = 2
    vals = []
    for _ in range(n):
        (ln,) = struct.unpack_from("!i", payload, off)
        off += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(payload[off:off + ln])
            off += ln
    return vals


def parse_parameter_status(payload):
    name, value, _ = payload.split(b"\0", 2)
    return name.decode(), value.decode()


def parse_notification(payload):
    (pid,) = struct.unpack_from("!i", payload, 0)
    channel, extra, _ = payload[4:].split(b"\0", 2)
    return pid, channel.decode(), extra.decode()


# ---------------------------------------------------------------------------------------------------------
# Password hashing.


def md5_secret(user, password):
    """The md5 secret PostgreSQL stores: 'md5' + md5(password + user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def _hmac(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def scram_keys(password, salt, iterations):
    """(ClientKey, StoredKey, ServerKey) as PostgreSQL derives them (no SASLprep for ASCII passwords)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = _hmac(salted, b"Server Key")
    return client_key, stored_key, server_key


def scram_verifier(password, salt=None, iterations=4096):
    """A SCRAM-SHA-256 verifier in pg_authid's format."""
    if salt is None:
        salt = os.urandom(16)
    _, stored_key, server_key = scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def parse_scram_verifier(verifier):
    """'SCRAM-SHA-256$iter:salt$stored:server' -> (iterations, salt bytes, stored, server)."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256", verifier
    iter_salt, keys = rest.split("$", 1)
    iterations, salt = iter_salt.split(":", 1)
    stored, server = keys.split(":", 1)
    return int(iterations), base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server)


class ScramClient:
    """SCRAM-SHA-256 client side (RFC 5802/7677, no channel binding), as libpq does it."""

    MECHANISM = "SCRAM-SHA-256"

    def __init__(self, password, nonce=None):
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n=,r={self.nonce}"
        self.server_signature = None

    def client_first(self):
        return ("n,," + self.client_first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ValueError("server nonce does not start with the client nonce")
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        client_key, stored_key, server_key = scram_keys(self.password, salt, iterations)
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        client_signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature))
        self.server_signature = _hmac(server_key, auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        if "e" in attrs:
            raise ValueError(f"SCRAM server error: {attrs['e']}")
        if base64.b64decode(attrs["v"]) != self.server_signature:
            raise ValueError("SCRAM server signature mismatch")


# ---------------------------------------------------------------------------------------------------------
# Results.


@dataclass
class Result:
    """One statement's outcome within a query cycle."""
    columns: list = None
    rows: list = field(default_factory=list)
    command: str = None
    error: dict = None

    def text_rows(self):
        return [[None if v is None else v.decode() for v in r] for r in self.rows]


@dataclass
class Cycle:
    """Everything between sending a query and ReadyForQuery."""
    results: list = field(default_factory=list)
    notices: list = field(default_factory=list)
    notifications: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    status: str = None

    @property
    def errors(self):
        return [r.error for r in self.results if r.error is not None]


# ---------------------------------------------------------------------------------------------------------
# The connection.


class Conn:
    def __init__(self, host="127.0.0.1", port=5432, timeout=DEFAULT_TIMEOUT, rcvbuf=None):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.params = {}
        self.backend_key = None
        self.auth_requests = []
        self.status = None

    # -- raw I/O --------------------------------------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout("no complete message before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise Timeout("no complete message before the deadline") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(str(e)) from None
        if not chunk:
            raise Closed("connection closed by peer")
        self.buf += chunk

    def read_bytes(self, n, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_msg(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < 5:
            self._fill(deadline)
        type_ = chr(self.buf[0])
        (length,) = struct.unpack_from("!I", self.buf, 1)
        if length < 4:
            raise ValueError(f"bad length {length} for message {type_!r}")
        while len(self.buf) < 1 + length:
            self._fill(deadline)
        payload = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return Msg(type_, payload)

    def read_all_until_close(self, timeout=None):
        """Every message until the peer closes; raises Timeout if it stays open past the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        msgs = []
        while True:
            try:
                msgs.append(self.read_msg(timeout=max(0.0, deadline - time.monotonic())))
            except Closed:
                return msgs

    def expect(self, *types, timeout=None):
        m = self.read_msg(timeout)
        if m.type not in types:
            if m.type == "E":
                raise PgError(parse_error_fields(m.payload))
            raise AssertionError(f"expected one of {types}, got {m!r}")
        return m

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with a TCP RST (SO_LINGER 0), as a crashed client would."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def terminate(self):
        try:
            self.send(terminate())
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.terminate()

    # -- login ----------------------------------------------------------------------------------------

    def login(self, user, password=None, database=None, timeout=None, **params):
        """Send a startup packet and authenticate; returns after ReadyForQuery. Raises PgError on error."""
        self.send(startup_packet(user, database or user, **params))
        return self.authenticate(user, password, timeout)

    def authenticate(self, user, password=None, timeout=None):
        scram = None
        while True:
            m = self.read_msg(timeout)
            if m.type == "E":
                raise PgError(parse_error_fields(m.payload))
            if m.type == "R":
                (code,) = struct.unpack_from("!I", m.payload, 0)
                self.auth_requests.append(code)
                if code == AUTH_OK:
                    continue
                if password is None:
                    raise AssertionError(f"server asked for authentication {code} but no password was given")
                if code == AUTH_CLEARTEXT:
                    self.send(msg("p", cstr(password)))
                elif code == AUTH_MD5:
                    self.send(msg("p", cstr(md5_response(user, password, m.payload[4:8]))))
                elif code == AUTH_SASL:
                    mechs = [x.decode() for x in m.payload[4:].split(b"\0") if x]
                    if ScramClient.MECHANISM not in mechs:
                        raise AssertionError(f"no SCRAM-SHA-256 among {mechs}")
                    scram = ScramClient(password)
                    first = scram.client_first()
                    self.send(msg("p", cstr(ScramClient.MECHANISM) + struct.pack("!i", len(first)) + first))
                elif code == AUTH_SASL_CONTINUE:
                    self.send(msg("p", scram.client_final(m.payload[4:])))
                elif code == AUTH_SASL_FINAL:
                    scram.verify_server_final(m.payload[4:])
                else:
                    raise AssertionError(f"unsupported authentication request {code}")
            elif m.type == "S":
                k, v = parse_parameter_status(m.payload)
                self.params[k] = v
            elif m.type == "K":
                self.backend_key = struct.unpack("!ii", m.payload[:8])
            elif m.type == "N":
                pass
            elif m.type == "Z":
                self.status = m.payload.decode()
                return self
            else:
                raise AssertionError(f"unexpected message during login: {m!r}")

    # -- queries --------------------------------------------------------------------------------------

    def read_cycle(self, timeout=None, until_ready=1):
        """Collect messages into a Cycle until `until_ready` ReadyForQuery messages arrived."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        cyc = Cycle()
        cur = None
        ready = 0
        while ready < until_ready:
            m = self.read_msg(timeout=max(0.001, deadline - time.monotonic()))
            cyc.messages.append(m)
            t = m.type
            if t == "T":
                cur = Result(columns=parse_row_description(m.payload))
            elif t == "D":
                if cur is None:
                    cur = Result()
                cur.rows.append(parse_data_row(m.payload))
            elif t == "C":
                if cur is None:
                    cur = Result()
                cur.command = m.payload.rstrip(b"\0").decode()
                cyc.results.append(cur)
                cur = None
            elif t == "E":
                r = cur or Result()
                r.error = parse_error_fields(m.payload)
                cyc.results.append(r)
                cur = None
            elif t == "I":
                cyc.results.append(Result(command=""))
            elif t == "N":
                cyc.notices.append(parse_error_fields(m.payload))
            elif t == "A":
                cyc.notifications.append(parse_notification(m.payload))
            elif t == "S":
                k, v = parse_parameter_status(m.payload)
                self.params[k] = v
            elif t == "Z":
                self.status = m.payload.decode()
                cyc.status = self.status
                ready += 1
        return cyc

    def simple(self, sql, timeout=None):
        self.send(query(sql))
        return self.read_cycle(timeout)

    def scalar(self, sql, timeout=None):
        """Run a simple query and return the first column of the first row as str; raise on error."""
        cyc = self.simple(sql, timeout)
        if cyc.errors:
            raise PgError(cyc.errors[0])
        return cyc.results[0].text_rows()[0][0]


def connect(port, user="app", password="app", database="app", host="127.0.0.1", timeout=DEFAULT_TIMEOUT,
            **params):
    c = Conn(host, port, timeout=timeout)
    try:
        c.login(user, password, database, timeout=timeout, **params)
    except BaseException:
        c.close()
        raise
    return c


# ---------------------------------------------------------------------------------------------------------
# Many concurrent trust logins (non-blocking sockets + selectors).


@dataclass
class MassLogin:
    ok: list = field(default_factory=list)        # logged-in sockets (caller closes them)
    errors: list = field(default_factory=list)    # (index, sqlstate or reason)
    closed: list = field(default_factory=list)    # indexes closed by the server without an error
    hung: list = field(default_factory=list)      # indexes with no answer before the deadline
    elapsed: float = 0.0

    def close_all(self):
        for s in self.ok:
            try:
                s.close()
            except OSError:
                pass
        self.ok.clear()


def mass_login(port, n, user="trustuser", database="app", deadline_s=60.0, in_flight=256, host="127.0.0.1"):
    """Open n connections and log each in as a trust user, at most in_flight handshakes at a time.
    Connections left over at the deadline are counted as hung and closed."""
    import errno
    import selectors

    sel = selectors.DefaultSelector()
    startup = startup_packet(user, database)
    res = MassLogin()
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    next_i = 0
    active = {}  # fd -> [index, sock, state, buf]

    def start_one(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            res.errors.append((i, f"connect: {os.strerror(err)}"))
            return
        active[s.fileno()] = [i, s, "connecting", b""]
        sel.register(s, selectors.EVENT_WRITE)

    def finish(fd, outcome, detail=None):
        i, s, _, _ = active.pop(fd)
        sel.unregister(s)
        if outcome == "ok":
            res.ok.append(s)
            return
        s.close()
        if outcome == "error":
            res.errors.append((i, detail))
        elif outcome == "closed":
            res.closed.append(i)

    while (next_i < n or active) and time.monotonic() < deadline:
        while next_i < n and len(active) < in_flight:
            start_one(next_i)
            next_i += 1
        for key, events in sel.select(timeout=0.2):
            fd = key.fd
            if fd not in active:
                continue
            st = active[fd]
            i, s, state, buf = st
            if state == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(fd, "error", f"connect: {os.strerror(err)}")
                    continue
                try:
                    s.send(startup)
                except OSError as e:
                    finish(fd, "error", f"send: {e}")
                    continue
                st[2] = "reading"
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                finish(fd, "closed")
                continue
            if not chunk:
                finish(fd, "closed")
                continue
            buf += chunk
            done = False
            while len(buf) >= 5:
                (ln,) = struct.unpack_from("!I", buf, 1)
                if len(buf) < 1 + ln:
                    break
                t, payload, buf = chr(buf[0]), buf[5:1 + ln], buf[1 + ln:]
                if t == "E":
                    finish(fd, "error", parse_error_fields(payload).get("C"))
                    done = True
                    break
                if t == "R" and struct.unpack_from("!I", payload)[0] != AUTH_OK:
                    finish(fd, "error", "authentication requested")
                    done = True
                    break
                if t == "Z":
                    finish(fd, "ok")
                    done = True
                    break
            if not done:
                st[3] = buf
    for fd in list(active):
        res.hung.append(active[fd][0])
        finish(fd, "hung")
    res.hung.extend(range(next_i, n))
    sel.close()
    res.elapsed = time.monotonic() - t0
    return res
