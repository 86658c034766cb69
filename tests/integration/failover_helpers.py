"""Helpers for the failover tests: a private cluster per destructive test, the cluster manager
driver (tests/integration/cluster_main.c) and its JSON output.

Destructive tests (kill -9, SIGSTOP, promotions) must not share the session cluster of conftest.py.
Creating a cluster (initdb + two pg_basebackup) takes seconds, so `own_cluster` makes one template
per session, stops it, and gives each test a copy (cp -a of the stopped data directories) started
on fresh free ports by scripts/cluster.sh (which rewrites the ports at every start).
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import CLUSTER_SH, REPO, Cluster, free_port_range, render_config
from driver_build import compile_driver

DRIVER_SRC = REPO / "tests" / "integration" / "cluster_main.c"
PGBIN = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1])
AS_PG = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def as_pg(args, **kw):
    kw.setdefault("timeout", 60)
    return subprocess.run(AS_PG + [str(a) for a in args], capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------------------------------------
# Clusters.


@pytest.fixture(scope="session")
def cluster_template():
    tmp = tempfile.mkdtemp(prefix="pgrelay-fo-tpl-", dir="/tmp")
    os.chmod(tmp, 0o755)
    d = Path(tmp) / "cluster"
    base = free_port_range(3)
    try:
        r = subprocess.run(["bash", str(CLUSTER_SH), "start", str(d), str(base)], timeout=180,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(d)], timeout=120, check=True,
                       capture_output=True)
        yield d
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(d)], timeout=120, capture_output=True)
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


class OwnCluster(Cluster):
    def postmaster_pid(self, node):
        text = (self.data_dirs[node] / "postmaster.pid").read_text()
        return int(text.split("\n")[0])

    def kill9(self, node):
        os.kill(self.postmaster_pid(node), signal.SIGKILL)

    def _family(self, node):
        pid = self.postmaster_pid(node)
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                              text=True).stdout.split()
        return [pid] + [int(k) for k in kids]

    def _signal_family(self, node, sig):
        """sig to the postmaster, then each child (every child is a process group of its own);
        a child that exited in between (a backend ending) is skipped."""
        pid, *kids = self._family(node)
        os.kill(pid, sig)
        for k in kids:
            try:
                os.kill(k, sig)
            except ProcessLookupError:
                pass

    def freeze(self, node):
        self._signal_family(node, signal.SIGSTOP)
        self.frozen.add(node)

    def thaw(self, node):
        self._signal_family(node, signal.SIGCONT)
        self.frozen.discard(node)

    def pg_ctl(self, node, *args):
        return as_pg([PGBIN / "pg_ctl", "-D", self.data_dirs[node], *args])

    def start_node(self, node, timeout=20):
        # After kill -9 of a postmaster its children linger a moment and keep the shared memory
        # in use: the new postmaster refuses to start until they are gone.
        deadline = time.monotonic() + timeout
        while True:
            r = self.pg_ctl(node, "-l", self.dir / f"node{node}.log", "-w", "-t", "30", "start")
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.returncode == 0, r.stdout + r.stderr

    def query(self, node, sql, dbname="postgres"):
        with self.connect(node, dbname=dbname) as c:
            cur = c.execute(sql)
            return cur.fetchall() if cur.description else []

    def streaming_names(self, node):
        return {r[0] for r in self.query(
            node, "select application_name from pg_stat_replication where state = 'streaming'")}

    def wait_streaming(self, node, names, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if set(names) <= self.streaming_names(node):
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False


@pytest.fixture
def own_cluster(cluster_template, tmp_path_factory):
    tmp = Path(tempfile.mkdtemp(prefix="pgrelay-fo-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    d = tmp / "cluster"
    r = subprocess.run(["cp", "-a", str(cluster_template), str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    base = free_port_range(3)
    c = OwnCluster(d, base, owned=True)
    c.frozen = set()
    r = subprocess.run(["bash", str(CLUSTER_SH), "start", str(d), str(base)], timeout=120,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.wait_streaming(0, ["node1", "node2"]), "standbys do not stream"
    try:
        yield c
    finally:
        for n in list(c.frozen):
            try:
                c.thaw(n)
            except Exception:
                pass
        for n in (2, 1, 0):  # immediate: a diverged or frozen node must not stall the teardown
            c.pg_ctl(n, "-m", "immediate", "-w", "-t", "20", "stop")
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# The driver.


@pytest.fixture(scope="session")
def cluster_driver(tmp_path_factory):
    return compile_driver(DRIVER_SRC, tmp_path_factory.mktemp("cluster") / "cluster_main")


RECORDER = """#!/bin/sh
# Records how it was called, then runs the real command (if any).
{ printf '%s' "$1"; shift; for a in "$@"; do printf ' [%s]' "$a"; done; echo;
  env | grep '^PGRELAY_' | sort; echo ---; } >> "$(dirname "$0")/calls.txt"
"""

PLACEHOLDERS = "%d %h %p %D %m %H %M %P %r %R %N %S"


def recorder(workdir, name, then=None):
    """A script that appends its arguments and PGRELAY_* environment to workdir/calls.txt, then
    runs `then` (a shell snippet; "$@" are the placeholders) and exits with its status."""
    p = Path(workdir) / f"{name}.sh"
    body = RECORDER.replace("printf '%s' \"$1\"; shift;", f"printf '{name}';")
    p.write_text(body + (then or "exit 0") + "\n")
    p.chmod(0o755)
    return f"{p} {PLACEHOLDERS}"


def calls(workdir):
    """[(name, [args], {env})] from calls.txt."""
    f = Path(workdir) / "calls.txt"
    if not f.exists():
        return []
    out = []
    for block in f.read_text().split("---\n"):
        lines = [ln for ln in block.splitlines() if ln]
        if not lines:
            continue
        head = lines[0]
        name = head.split(" ", 1)[0]
        args = [a[:-1] for a in head[len(name):].split(" [")[1:]]
        env = dict(ln.split("=", 1) for ln in lines[1:] if "=" in ln)
        out.append((name, args, env))
    return out


def manager_config(cluster, **overrides):
    s = {
        "listen_addresses": "127.0.0.1",
        "port": 9999,
        "backends": [{"host": "127.0.0.1", "port": cluster.ports[i], "weight": 1.0,
                      "data_directory": str(cluster.data_dirs[i]), "application_name": f"node{i}"}
                     for i in range(3)],
        "auth": {"users_file": "users.txt"},
        "logging": {"level": "log"},
        "health_check": {"period": "1s", "timeout": "2s", "max_retries": 2, "retry_delay": "500ms",
                         "user": "postgres", "password": "postgres", "database": "postgres"},
        "failover_command_timeout": "60s",
        "search_primary_node_timeout": "30s",
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(s.get(k), dict):
            s[k] = {**s[k], **v}
        else:
            s[k] = v
    return s


class Manager:
    """A running cluster_main: views, events and replies as parsed JSON, commands on stdin."""

    def __init__(self, driver, workdir, settings):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "users.txt").write_text("postgres:postgres\n")
        self.config = self.dir / "pgrelay.conf"
        self.config.write_text(render_config(settings))
        self.err_path = self.dir / "manager.stderr"
        env = dict(os.environ, PGPASSWORD="postgres", PGBIN=str(PGBIN), PGCONNECT_TIMEOUT="2")
        self._err = open(self.err_path, "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([str(driver), str(self.config)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True, env=env,
                                     cwd=self.dir)
        self.lines = []
        self.cv = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            doc = json.loads(line)
            doc["t"] = time.monotonic()
            with self.cv:
                self.lines.append(doc)
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def views(self):
        with self.cv:
            return [d for d in self.lines if d["type"] == "view"]

    def view(self):
        v = self.views()
        return v[-1] if v else None

    def events(self, name=None):
        with self.cv:
            return [d for d in self.lines if d["type"] == "event" and (name is None or d["event"] == name)]

    def wait(self, pred, timeout, what="condition"):
        """Waits until pred(manager) returns a truthy value; returns it (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                r = pred(self)
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    break
                self.cv.wait(min(left, 0.2))
        pytest.fail(f"timed out after {timeout}s waiting for {what}; last view: {self.view()}\n"
                    f"events: {self.events()}\n--- stderr tail ---\n{self.stderr_tail()}", pytrace=False)

    def mark(self):
        """A position in the output: wait_view(..., since=mark) looks only at later views."""
        with self.cv:
            return len(self.lines)

    def wait_view(self, pred, timeout, what="view", since=0):
        return self.wait(lambda m: next((d for d in m.lines[since:] if d["type"] == "view" and pred(d)),
                                        None), timeout, what)

    def wait_event(self, name, timeout, pred=lambda e: True):
        return self.wait(lambda m: next((e for e in m.events(name) if pred(e)), None), timeout,
                         f"event {name}")

    def send(self, line):
        with self.cv:
            n = len(self.lines)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.wait(lambda m: next((d for d in m.lines[n:] if d["type"] == "reply"), None), 10,
                         f"reply to {line}")

    def stderr_text(self):
        return self.err_path.read_text(errors="replace")

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def stop(self):
        """Quits the driver; returns the time cluster_stop took (ms). Fails on sanitizer reports."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail("the cluster manager did not stop within 15 s", pytrace=False)
        self._err.close()
        err = self.stderr_text()
        assert self.proc.returncode == 0, err[-3000:]
        assert "runtime error" not in err and "Sanitizer" not in err, err[-3000:]
        return int(err.split("stop_ms=")[1].split()[0])


@pytest.fixture
def manager(cluster_driver, tmp_path):
    """Factory: manager(cluster, **config_overrides) -> Manager; stopped (and checked) at teardown."""
    started = []

    def factory(cluster, workdir=None, **overrides):
        m = Manager(cluster_driver, workdir or tmp_path / f"mgr{len(started)}",
                    manager_config(cluster, **overrides))
        started.append(m)
        return m

    yield factory
    for m in started:
        stop_ms = m.stop()
        assert stop_ms < 3000, f"cluster_stop took {stop_ms} ms"


def all_up(v, primary=0):
    return v["primary"] == primary and all(n["status"] == "up" for n in v["nodes"])
