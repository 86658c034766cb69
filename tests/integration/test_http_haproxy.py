"""conf/haproxy.cfg, as shipped, in front of two pgrelay instances: every address and port of the
file is moved to free loopback ports, nothing else changes. psql through HAProxy's read-write
port reaches the primary, through its read-only port a standby (the runbook's promise)."""

import re
import shutil
import subprocess
import time

import pytest

from conftest import DIRECT, REPO, connect, free_port, wait_port

pytestmark = [pytest.mark.pgrelay_only,
              pytest.mark.skipif(DIRECT, reason="needs pgrelay's HTTP health paths"),
              pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")]

HAPROXY_CFG = REPO / "conf" / "haproxy.cfg"


def start_relay(pgrelay):
    ports = {"rw": free_port(), "ro": free_port(), "http": free_port()}
    r = pgrelay(listeners=[{"port": ports["rw"], "role": "primary"},
                           {"port": ports["ro"], "role": "standby"}],
                http={"port": ports["http"]})
    r.role_ports = ports
    return r


def adapt(text, relays, front):
    """The shipped file on loopback: instance a is 192.0.2.11, b is 192.0.2.12."""
    for host, r in zip(("192.0.2.11", "192.0.2.12"), relays):
        p = r.role_ports
        text = text.replace(f"{host}:6432 maxconn 100 check port 9998",
                            f"127.0.0.1:{p['rw']} maxconn 100 check port {p['http']}")
        text = text.replace(f"{host}:6433 maxconn 100 check port 9998",
                            f"127.0.0.1:{p['ro']} maxconn 100 check port {p['http']}")
    text = text.replace("bind *:5000", f"bind 127.0.0.1:{front['rw']}")
    text = text.replace("bind *:5001", f"bind 127.0.0.1:{front['ro']}")
    text = text.replace("bind 127.0.0.1:7000", f"bind 127.0.0.1:{front['stats']}")
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"192\.0\.2\.|:500[01]\b|:7000\b|\b9998\b", live), live
    return text


def in_recovery(port):
    with connect(port, connect_timeout=5) as c:
        return c.execute("select pg_is_in_recovery()").fetchone()[0]


@pytest.mark.deadline(90)
def test_haproxy_routes_by_health_paths(pgrelay, tmp_path):
    relays = [start_relay(pgrelay), start_relay(pgrelay)]
    front = {"rw": free_port(), "ro": free_port(), "stats": free_port()}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(adapt(HAPROXY_CFG.read_text(), relays, front))
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(tmp_path / "haproxy.log", "w")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        assert wait_port(front["rw"], 10, proc) and wait_port(front["ro"], 10, proc)
        # Until both pgrelays found the primary, a check may still fail: retry for a while.
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = (in_recovery(front["rw"]), in_recovery(front["ro"]))
                if seen == (False, True):
                    break
            except Exception as e:  # noqa: BLE001 - a refused or cut session while checks settle
                seen = repr(e)
            time.sleep(0.5)
        assert seen == (False, True), seen
        for _ in range(4):  # round robin over both instances: always the right role
            assert in_recovery(front["rw"]) is False
            assert in_recovery(front["ro"]) is True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
