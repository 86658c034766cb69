"""Helpers for the watchdog tests (test_watchdog.py) and bench/watchdog_failover.sh: an etcd
cluster on free loopback ports, a controllable TCP relay (to cut one pgrelay off from the primary
or from etcd), and the settings of one pgrelay instance of a watchdog group.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from conftest import free_port_range


def quiet_port():
    """A free port below the ephemeral range, so that no outgoing connection (libpq, curl, other
    tests) takes it between this choice and the listen."""
    return free_port_range(1)

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"


class Etcd:
    """n etcd members (etcd-server's /usr/bin/etcd) on free ports, data in a temp folder."""

    def __init__(self, n=1):
        self.dir = Path(tempfile.mkdtemp(prefix="pgrelay-etcd-", dir="/tmp"))
        self.n = n
        self.client_ports = [quiet_port() for _ in range(n)]
        self.peer_ports = [quiet_port() for _ in range(n)]
        self.procs = [None] * n
        self.logs = []

    @property
    def endpoints(self):
        return [f"http://127.0.0.1:{p}" for p in self.client_ports]

    def _cmd(self, i):
        cluster = ",".join(f"e{j}=http://127.0.0.1:{self.peer_ports[j]}" for j in range(self.n))
        return [ETCD_BIN, "--name", f"e{i}", "--data-dir", str(self.dir / f"e{i}"),
                "--listen-client-urls", self.endpoints[i], "--advertise-client-urls", self.endpoints[i],
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.dir.name, "--heartbeat-interval", "50",
                "--election-timeout", "500", "--log-level", "warn"]

    def start(self, timeout=30):
        for i in range(self.n):
            if self.procs[i] is None or self.procs[i].poll() is not None:
                log = open(self.dir / f"e{i}.log", "a")
                self.logs.append(log)
                self.procs[i] = subprocess.Popen(self._cmd(i), stdout=log, stderr=log,
                                                 start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.healthy(i) for i in range(self.n)):
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not become healthy in {timeout}s: see {self.dir}")

    def healthy(self, i):
        try:
            with urllib.request.urlopen(self.endpoints[i] + "/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def stop(self):
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        self.procs = [None] * self.n

    def close(self):
        self.stop()
        for f in self.logs:
            f.close()
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)


class TcpRelay:
    """A TCP relay on a free loopback port to target_port, run by asyncio in a thread of its own.
    blackhole(): from now on nothing passes in either direction (sockets stay open, new ones are
    accepted and ignored), as a cut cable does; heal(): existing connections are closed (their
    bytes were lost) and new ones pass again."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.port = quiet_port()
        self.holed = False
        self.loop = asyncio.new_event_loop()
        self.writers = set()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "relay did not start"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _pipe(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                if not self.holed:
                    w.write(data)
                    await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _client(self, cr, cw):
        self.writers.add(cw)
        if self.holed:
            return  # accepted, never answered
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.close()
            return
        self.writers.add(sw)
        await asyncio.gather(self._pipe(cr, sw), self._pipe(sr, cw))

    def blackhole(self):
        self.holed = True

    def heal(self):
        def drop():
            for w in list(self.writers):
                w.close()
            self.writers.clear()
        self.holed = False
        self.loop.call_soon_threadsafe(drop)

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.heal()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def watchdog_settings(c, name, endpoints, prefix, http_port, ttl="3s", backend_ports=None,
                      **watchdog):
    """The settings of one instance (merged into relay_for's by the tests)."""
    ports = backend_ports or c.ports
    return dict(
        port=quiet_port(),
        backends=[{"host": "127.0.0.1", "port": ports[i], "weight": 1.0,
                   "data_directory": str(c.data_dirs[i]), "application_name": f"node{i}"}
                  for i in range(3)],
        http={"port": http_port},
        watchdog={"enabled": True, "endpoints": list(endpoints), "prefix": prefix, "name": name,
                  "lease_ttl": ttl, **watchdog},
    )


def port_is_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
