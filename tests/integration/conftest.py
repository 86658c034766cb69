"""Fixtures for pgrelay's integration tests.

- `cluster` (session): a real primary and two streaming standbys started by scripts/cluster.sh in a fresh
  temporary folder on three consecutive free loopback ports; stopped at the end, also on failure.
- `pgrelay` (function): a factory. `pgrelay(**overrides)` writes a config file, a users file and an
  optional hba file into a per-test folder, starts $PGRELAY_BIN (default build/pgrelay) on a free port
  with `-f CONFIG -d`, waits until the port accepts and returns a `Relay`. At teardown every relay it
  started gets SIGTERM (SIGKILL after 10 s); the test FAILS if a relay hung, exited non-zero, or its
  stderr mentions AddressSanitizer or an UBSan "runtime error:".
- `relay` (function): `pgrelay()` with the defaults.

Environment:
  PGRELAY_BIN           the binary to test (default: build/pgrelay, relative to the repository)
  PGRELAY_TEST_DIRECT=1 point every test at the PostgreSQL primary instead of pgrelay (tests marked
                        pgrelay_only are skipped); checks the tests themselves against the real server
  PGRELAY_TEST_CLUSTER  DIR:BASEPORT of an already running scripts/cluster.sh cluster to reuse (not stopped)
  PGRELAY_KEEP_TMP=1    keep the temporary folders (cluster data, configs, logs)
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
DIRECT = os.environ.get("PGRELAY_TEST_DIRECT", "") not in ("", "0")
DEFAULT_DEADLINE = 60  # seconds per test, override with @pytest.mark.deadline(N)
START_DEADLINE = 10
STOP_DEADLINE = 10
CONNECT_TIMEOUT = 5

USERS = {"app": "app", "postgres": "postgres", "md5user": "md5pw"}

_live_relays = []


def pgrelay_bin():
    p = Path(os.environ.get("PGRELAY_BIN", "build/pgrelay"))
    return p if p.is_absolute() else REPO / p


def pytest_configure(config):
    config.addinivalue_line("markers", "deadline(seconds): per-test wall-clock limit (default 60 s)")
    config.addinivalue_line("markers", "pgrelay_only: needs pgrelay itself (skipped with PGRELAY_TEST_DIRECT=1)")


def pytest_report_header(config):
    if DIRECT:
        return "pgrelay: DIRECT mode, tests talk to the PostgreSQL primary"
    return f"pgrelay: binary {pgrelay_bin()}"


# ---------------------------------------------------------------------------------------------------------
# Ports.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port_range(n=3, tries=200):
    import random
    rnd = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(tries):
        base = rnd.randrange(20000, 30000)  # below the usual ephemeral range (32768-60999)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports found")


def wait_port(port, deadline_s, proc=None):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------------------
# The PostgreSQL cluster.


class Cluster:
    def __init__(self, dir_, baseport, owned):
        self.dir = Path(dir_)
        self.baseport = baseport
        self.ports = [baseport, baseport + 1, baseport + 2]
        self.primary_port = baseport
        self.data_dirs = [self.dir / f"node{i}" for i in range(3)]
        self.owned = owned

    def stop(self):
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(self.dir)], timeout=120, check=False)

    def wait_settled(self, timeout=30.0):
        """Wait until the primary answers a fresh connection quickly again (after a flood its
        postmaster may still be working through a backlog of connection attempts)."""
        deadline = time.monotonic() + timeout
        fast = 0
        while fast < 2 and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                with self.connect(dbname="postgres") as c:
                    c.execute("select 1")
                fast = fast + 1 if time.monotonic() - t0 < 0.3 else 0
            except psycopg.Error:
                fast = 0
            if fast < 2:
                time.sleep(0.2)
        return fast >= 2

    def connect(self, node=0, user="postgres", password="postgres", dbname="app", **kw):
        """A psycopg connection straight to a PostgreSQL node (not through pgrelay)."""
        return psycopg.connect(host="127.0.0.1", port=self.ports[node], user=user, password=password,
                               dbname=dbname, connect_timeout=CONNECT_TIMEOUT, autocommit=True, **kw)


@pytest.fixture(scope="session")
def cluster():
    reuse = os.environ.get("PGRELAY_TEST_CLUSTER")
    if reuse:
        d, port = reuse.rsplit(":", 1)
        c = Cluster(d, int(port), owned=False)
        subprocess.run(["bash", str(CLUSTER_SH), "start", d, port], check=True, timeout=180,
                       stdout=subprocess.DEVNULL)
        yield c
        return
    tmp = tempfile.mkdtemp(prefix="pgrelay-it-", dir="/tmp")
    os.chmod(tmp, 0o755)
    base = free_port_range(3)
    c = Cluster(Path(tmp) / "cluster", base, owned=True)
    atexit.register(c.stop)
    try:
        r = subprocess.run(["bash", str(CLUSTER_SH), "start", str(c.dir), str(base)], timeout=180,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            pytest.exit(f"scripts/cluster.sh start failed:\n{r.stdout}", returncode=3)
        yield c
    finally:
        c.stop()
        atexit.unregister(c.stop)
        if not os.environ.get("PGRELAY_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Config writing.


def _fmt(v, indent="  "):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        inner = " ".join(f"{k} = {_fmt(x, indent)};" for k, x in v.items())
        return "{ " + inner + " }"
    if isinstance(v, (list, tuple)):
        return "(\n" + ",\n".join(indent + _fmt(x, indent) for x in v) + "\n)"
    raise TypeError(f"cannot write {v!r} as libconfig")


def render_config(settings):
    """A dict -> libconfig text; a value of None drops the key."""
    return "".join(f"{k} = {_fmt(v)};\n" for k, v in settings.items() if v is not None)


def merge(base, overrides):
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def default_settings(cluster, port):
    return {
        "listen_addresses": "127.0.0.1",
        "port": port,
        "authentication_timeout": "10s",
        "shutdown_timeout": "3s",
        "backends": [
            {"host": "127.0.0.1", "port": cluster.ports[i], "weight": 1.0, "data_directory": str(cluster.data_dirs[i]),
             "application_name": f"node{i}"}
            for i in range(3)
        ],
        "auth": {"users_file": "users.txt"},
        "logging": {"level": "debug"},
        "health_check": {"period": "1s", "timeout": "2s", "max_retries": 2, "retry_delay": "500ms",
                         "user": "postgres", "password": "postgres", "database": "postgres"},
    }


# ---------------------------------------------------------------------------------------------------------
# A running pgrelay.


class Relay:
    def __init__(self, workdir, settings, users, hba, extra_text, prlimit_nofile, env):
        self.dir = Path(workdir)
        self.settings = settings
        self.port = settings["port"]
        self.config_path = self.dir / "pgrelay.conf"
        self.log_path = self.dir / "pgrelay.stderr"
        self.users = users
        self.hba = hba
        self.extra_text = extra_text
        self.prlimit_nofile = prlimit_nofile
        self.env = env
        self.proc = None
        self.expected_exit = None  # set by tests that stop it themselves and checked the code
        self.write_files()

    # files
    def write_files(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        text = render_config(self.settings) + (self.extra_text or "")
        self.config_path.write_text(text)
        self.dir.joinpath("users.txt").write_text("".join(f"{u}:{s}\n" for u, s in self.users.items()))
        if self.hba is not None:
            self.dir.joinpath("hba.conf").write_text(self.hba)

    def rewrite(self, extra_text=None, **overrides):
        """Change the config file (merge overrides into the current settings); does not reload."""
        self.settings = merge(self.settings, overrides)
        if extra_text is not None:
            self.extra_text = extra_text
        self.write_files()

    # process
    def command(self):
        cmd = [str(pgrelay_bin()), "-f", str(self.config_path), "-d"]
        if self.prlimit_nofile:
            cmd = ["prlimit", f"--nofile={self.prlimit_nofile}:{self.prlimit_nofile}", "--"] + cmd
        return cmd

    def start(self):
        env = dict(os.environ)
        env.update(self.env or {})
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=self._log_fh, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        _live_relays.append(self)
        if not wait_port(self.port, START_DEADLINE, self.proc):
            code = self.proc.poll()
            self.kill()
            pytest.fail(f"pgrelay did not accept on port {self.port} within {START_DEADLINE}s "
                        f"(exit code {code})\n--- pgrelay log tail ---\n{self.log_tail()}", pytrace=False)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def wait(self, timeout):
        """Wait for exit; returns the exit code or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def rss_kb(self):
        """VmRSS of the pgrelay process (the child of prlimit execs in place, same pid)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # logs
    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, pattern, timeout=5.0, start=0):
        """Wait until the log (from byte offset `start`) contains `pattern` (a str or a compiled regex)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[start:]
            if (pattern.search(text) if hasattr(pattern, "search") else pattern in text):
                return text
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def log_size(self):
        return len(self.log_text())

    def sanitizer_reports(self):
        text = self.log_text()
        bad = [ln for ln in text.splitlines() if "AddressSanitizer" in ln or "runtime error:" in ln
               or "LeakSanitizer" in ln or "ThreadSanitizer" in ln]
        return bad

    def shutdown_and_check(self):
        """Teardown: SIGTERM, wait, and return a list of problems (empty when all is well)."""
        problems = []
        if self.proc is None:
            return problems
        if self.alive():
            self.signal(signal.SIGTERM)
            code = self.wait(STOP_DEADLINE)
            if code is None:
                problems.append(f"pgrelay (pid {self.pid}) did not exit within {STOP_DEADLINE}s of SIGTERM; killed")
                self.kill()
        code = self.proc.returncode
        if code != 0 and code != self.expected_exit:
            problems.append(f"pgrelay exited with code {code}")
        bad = self.sanitizer_reports()
        if bad:
            problems.append("sanitizer report in pgrelay's stderr:\n  " + "\n  ".join(bad[:10]))
        try:
            self._log_fh.close()
        except Exception:
            pass
        if self in _live_relays:
            _live_relays.remove(self)
        return problems


class DirectRelay:
    """PGRELAY_TEST_DIRECT=1: the 'relay' is the PostgreSQL primary itself."""

    def __init__(self, cluster):
        self.port = cluster.primary_port
        self.proc = None
        self.dir = None
        self.log_path = None

    def log_text(self):
        return ""

    def log_tail(self, n=60):
        return ""

    def log_size(self):
        return 0

    def wait_log(self, *a, **kw):
        return ""

    def alive(self):
        return True

    def reload(self):
        pytest.skip("reload needs pgrelay (PGRELAY_TEST_DIRECT)")

    def shutdown_and_check(self):
        return []


@atexit.register
def _kill_leftovers():
    for r in list(_live_relays):
        r.kill()


@pytest.fixture
def pgrelay(cluster, request, tmp_path):
    """Factory: pgrelay(users=..., hba=..., extra_text=..., prlimit_nofile=..., env=..., start=True,
    **config_overrides) -> Relay. Overrides are merged into the default settings (dicts merge)."""
    started = []
    request.node._pgrelays = started
    counter = [0]

    def factory(users=None, hba=None, extra_text=None, prlimit_nofile=None, env=None, start=True, **overrides):
        if DIRECT:
            if request.node.get_closest_marker("pgrelay_only"):
                pytest.skip("needs pgrelay itself")
            r = DirectRelay(cluster)
            started.append(r)
            return r
        counter[0] += 1
        workdir = tmp_path / f"relay{counter[0]}"
        settings = merge(default_settings(cluster, free_port()), overrides)
        if hba is not None:
            settings = merge(settings, {"auth": {"hba_file": "hba.conf"}})
        r = Relay(workdir, settings, dict(USERS) if users is None else users, hba, extra_text,
                  prlimit_nofile, env)
        if start:
            if not pgrelay_bin().exists():
                if os.environ.get("PGRELAY_BIN"):
                    pytest.fail(f"PGRELAY_BIN={pgrelay_bin()} does not exist", pytrace=False)
                pytest.skip(f"pgrelay binary {pgrelay_bin()} not built")
            started.append(r)
            r.start()
        return r

    yield factory

    problems = []
    for r in started:
        p = r.shutdown_and_check()
        if p:
            problems.append("\n".join(p) + f"\n--- pgrelay log tail ({r.log_path}) ---\n{r.log_tail(40)}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def relay(pgrelay):
    return pgrelay()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when == "call":
        for r in getattr(item, "_pgrelays", []):
            if r.log_path is not None:
                rep.sections.append((f"pgrelay log tail ({r.log_path})", r.log_tail(60)))


# ---------------------------------------------------------------------------------------------------------
# Per-test deadline (SIGALRM; pytest-timeout is not installed).


class DeadlineExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline(request):
    m = request.node.get_closest_marker("deadline")
    secs = m.args[0] if m else DEFAULT_DEADLINE

    def on_alarm(signum, frame):
        raise DeadlineExceeded(f"test exceeded its {secs}s deadline")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, secs)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------------------
# Client helpers.


def connect(port, user="app", password="app", dbname="app", **kw):
    """A psycopg connection through pgrelay (or whatever listens on port)."""
    kw.setdefault("connect_timeout", CONNECT_TIMEOUT)
    kw.setdefault("autocommit", True)
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, **kw)


def client_env(password):
    env = dict(os.environ)
    env.update(PGPASSWORD=password, PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT), PGSSLMODE="disable")
    env.pop("PGSERVICE", None)
    return env


def run_client(args, password="app", timeout=60):
    """Run psql/pgbench; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(args, env=client_env(password), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def conn(relay):
    c = connect(relay.port)
    yield c
    c.close()
