#!/usr/bin/python3
"""Memory of idle clients: VmRSS of a proxy before and after N idle, logged-in trust connections.

    bench/idle_clients.py --port PORT --pid PID [--clients 1000] [--user trustuser] [--database app] [--tls]
                          [--query SQL [--wave N] [--settle S]]

Logs 20 clients in and out first (pool, welcome and allocator warmed up, as in
tests/integration/test_pool_memory.py), reads VmRSS of PID from /proc/PID/status, opens N
connections and logs each in (startup packet, trust, up to ReadyForQuery; they then stay idle), waits
0.5 s, reads VmRSS again and closes them. Prints one line of key=value pairs on stdout:

    before_kb=.. after_kb=.. clients=N ok=.. errors=.. closed=.. hung=.. login_s=.. warmup_ok=..
    before_pss_kb=.. after_pss_kb=..

The _pss_ pair is the proportional set size (/proc/PID/smaps_rollup): pages of shared libraries
count divided by the number of processes that map them, so it depends on what else runs (-1 when
the kernel has no smaps_rollup).

Exit status 0 when all N logged in, 1 otherwise (the line is printed either way), 2 on usage.
The raw protocol client is tests/integration/pgwire.py (no libpq needed).

--query SQL: every one of the N sessions runs SQL once (a simple Query, read up to ReadyForQuery;
64 sessions at a time) before the second reading, so they are idle after having worked, as a
pool's clients usually are: what a session keeps after its first statement is counted. Plain text only.
--wave N: sessions per wave (0: all at once, a burst that queues behind the pool); --settle S:
seconds to wait after the statements before the second reading (what is given back after a burst).

--tls: every connection (the 20 warm-up ones too) sends an SSLRequest, expects 'S', completes a TLS
handshake (Python's ssl module, no certificate check: libpq's sslmode=require) and logs in over it;
the N sessions then stay idle with their TLS state open. A proxy that answers 'N' counts as an error.
"""

import argparse
import os
import errno
import resource
import selectors
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import pgwire  # noqa: E402


def vmrss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def pss_kb(pid):
    """Proportional set size: shared pages (libraries) divided among the processes mapping them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def mass_login_tls(port, n, user, database, deadline_s=60.0, in_flight=256, host="127.0.0.1"):
    """pgwire.mass_login over TLS: SSLRequest, 'S', handshake, startup packet, up to ReadyForQuery.
    Returns a pgwire.MassLogin whose ok list holds the logged-in ssl sockets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sel = selectors.DefaultSelector()
    startup = pgwire.startup_packet(user, database)
    sslreq = struct.pack("!II", 8, pgwire.SSL_REQUEST_CODE)
    res = pgwire.MassLogin()
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    next_i = 0
    active = {}  # fd -> [index, sock, state, buf]; state: connecting, sslreq, handshake, startup, reading

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

    def want(fd, s, ev):
        sel.modify(s, ev)

    def handshake(fd, st):
        s = st[1]
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            want(fd, s, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            want(fd, s, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as e:
            finish(fd, "error", f"handshake: {e}")
            return
        st[2] = "startup"
        send_startup(fd, st)

    def send_startup(fd, st):
        s = st[1]
        try:
            s.sendall(startup)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            want(fd, s, selectors.EVENT_WRITE)
            return
        except OSError as e:
            finish(fd, "error", f"send: {e}")
            return
        st[2] = "reading"
        want(fd, s, selectors.EVENT_READ)

    def read_login(fd, st):
        s = st[1]
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return
            except ssl.SSLWantWriteError:
                want(fd, s, selectors.EVENT_WRITE)
                return
            except OSError:
                finish(fd, "closed")
                return
            if not chunk:
                finish(fd, "closed")
                return
            buf = st[3] + chunk
            while len(buf) >= 5:
                (ln,) = struct.unpack_from("!I", buf, 1)
                if len(buf) < 1 + ln:
                    break
                t, payload, buf = chr(buf[0]), buf[5:1 + ln], buf[1 + ln:]
                if t == "E":
                    finish(fd, "error", pgwire.parse_error_fields(payload).get("C"))
                    return
                if t == "R" and struct.unpack_from("!I", payload)[0] != pgwire.AUTH_OK:
                    finish(fd, "error", "authentication requested")
                    return
                if t == "Z":
                    finish(fd, "ok")
                    return
            st[3] = buf
            if not s.pending():
                return

    while (next_i < n or active) and time.monotonic() < deadline:
        while next_i < n and len(active) < in_flight:
            start_one(next_i)
            next_i += 1
        for key, _ in sel.select(timeout=0.2):
            fd = key.fd
            if fd not in active:
                continue
            st = active[fd]
            s, state = st[1], st[2]
            if state == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(fd, "error", f"connect: {os.strerror(err)}")
                    continue
                try:
                    s.send(sslreq)
                except OSError as e:
                    finish(fd, "error", f"send: {e}")
                    continue
                st[2] = "sslreq"
                want(fd, s, selectors.EVENT_READ)
            elif state == "sslreq":
                # Exactly one byte: anything after it belongs to the TLS handshake.
                try:
                    b = s.recv(1)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    finish(fd, "closed")
                    continue
                if b != b"S":
                    finish(fd, "error" if b else "closed", f"SSLRequest answered {b!r}")
                    continue
                sel.unregister(s)
                s = ctx.wrap_socket(s, do_handshake_on_connect=False)
                del active[fd]
                st[1] = s
                st[2] = "handshake"
                active[s.fileno()] = st
                sel.register(s, selectors.EVENT_WRITE)
                handshake(s.fileno(), st)
            elif state == "handshake":
                handshake(fd, st)
            elif state == "startup":
                send_startup(fd, st)
            else:
                read_login(fd, st)
    for fd in list(active):
        res.hung.append(active[fd][0])
        finish(fd, "hung")
    res.hung.extend(range(next_i, n))
    sel.close()
    res.elapsed = time.monotonic() - t0
    return res


def run_once(socks, sql, timeout_s=30.0, wave=64):
    """Sends sql as a simple Query on every socket, `wave` sessions at a time (each wave's answers
    read up to ReadyForQuery before the next is sent, so what is measured is what a session
    keeps, not a burst of 10,000 queued queries). Returns how many answered without an
    ErrorResponse."""
    ok = 0
    for i in range(0, len(socks), wave):
        ok += run_wave(socks[i:i + wave], pgwire.query(sql), timeout_s)
    return ok


def run_wave(socks, q, timeout_s):
    for s in socks:
        s.setblocking(True)
        s.settimeout(timeout_s)
        s.sendall(q)
    ok = 0
    for s in socks:
        buf, failed, done = b"", False, False
        while not done:
            chunk = s.recv(65536)
            if not chunk:
                failed = True
                break
            buf += chunk
            while len(buf) >= 5:
                (ln,) = struct.unpack_from("!I", buf, 1)
                if len(buf) < 1 + ln:
                    break
                t, buf = chr(buf[0]), buf[1 + ln:]
                failed |= t == "E"
                done |= t == "Z"
        ok += 0 if failed else 1
    return ok


def close_tls(res):
    """Closes TLS sessions as libpq does (close_notify first), so the proxy logs no unexpected EOF."""
    for s in res.ok:
        try:
            s.unwrap()  # sends close_notify; on a non-blocking socket it then wants the peer's
        except (ssl.SSLError, OSError, ValueError):
            pass
        try:
            s.close()
        except OSError:
            pass
    res.ok = []


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--user", default="trustuser")
    ap.add_argument("--database", default="app")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds for all logins")
    ap.add_argument("--tls", action="store_true", help="log in over TLS (SSLRequest, sslmode=require)")
    ap.add_argument("--query", help="SQL every session runs once before the second reading")
    ap.add_argument("--wave", type=int, default=64, help="sessions per wave of --query (0: all)")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds before the second reading")
    a = ap.parse_args()
    if a.query and a.tls:
        ap.error("--query is plain text only")
    login = mass_login_tls if a.tls else pgwire.mass_login
    close = close_tls if a.tls else (lambda r: r.close_all())

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.clients + 64
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
        except (ValueError, OSError):
            pass

    warm = login(a.port, 20, a.user, a.database, deadline_s=20)
    warm_ok = len(warm.ok)
    close(warm)
    time.sleep(0.3)
    before, before_pss = vmrss_kb(a.pid), pss_kb(a.pid)
    res = login(a.port, a.clients, a.user, a.database, deadline_s=a.deadline)
    query_ok = -1
    try:
        if a.query:
            query_ok = run_once(res.ok, a.query, wave=a.wave if a.wave > 0 else len(res.ok) or 1)
        time.sleep(a.settle)
        after, after_pss = vmrss_kb(a.pid), pss_kb(a.pid)
    finally:
        res_ok = len(res.ok)
        close(res)
    errs = sorted({str(e[1]) for e in res.errors})[:3]
    print(f"before_kb={before} after_kb={after} clients={a.clients} ok={res_ok} errors={len(res.errors)} "
          f"closed={len(res.closed)} hung={len(res.hung)} login_s={res.elapsed:.2f} warmup_ok={warm_ok} "
          f"before_pss_kb={before_pss} after_pss_kb={after_pss}"
          + (" tls=1" if a.tls else "")
          + (f" query_ok={query_ok}" if a.query else "")
          + (f" first_errors={','.join(errs).replace(' ', '_')}" if errs else ""))
    return 0 if res_ok == a.clients and query_ok in (-1, a.clients) else 1


if __name__ == "__main__":
    sys.exit(main())
