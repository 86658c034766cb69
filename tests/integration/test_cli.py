"""The command line: options, exit codes, -t config checks."""

import re
import subprocess

import pytest

from conftest import pgrelay_bin

pytestmark = pytest.mark.pgrelay_only


def run(*args, cwd=None):
    return subprocess.run([str(pgrelay_bin()), *args], capture_output=True, text=True, timeout=15,
                          stdin=subprocess.DEVNULL, cwd=cwd)


@pytest.fixture
def config(pgrelay):
    """A valid config file (with users file) that is written but not started."""
    return pgrelay(start=False)


@pytest.fixture(autouse=True)
def need_binary():
    if not pgrelay_bin().exists():
        pytest.skip(f"{pgrelay_bin()} not built")


def test_version():
    """Bug guarded: --version fails or prints nothing useful."""
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert re.search(r"pgrelay.*\d+\.\d+", r.stdout + r.stderr, re.I)


def test_help():
    """Bug guarded: --help exits non-zero or omits the options."""
    r = run("--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for opt in ("-f", "-t", "-d", "--version", "--help"):
        assert opt in out, f"{opt} missing from --help"


def test_unknown_option_exits_2():
    """Bug guarded: an unknown option is ignored or treated as a startup error (exit 1)."""
    r = run("--no-such-option")
    assert r.returncode == 2, (r.returncode, r.stderr)
    r = run("-Z")
    assert r.returncode == 2, (r.returncode, r.stderr)


def test_check_good_config(config):
    """Bug guarded: -t rejects a valid configuration (or starts the server)."""
    r = run("-t", "-f", str(config.config_path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_unknown_key(config):
    """Bug guarded: a misspelt key is silently ignored; it must be reported as FILE:LINE with a
    'did you mean' hint."""
    config.rewrite(listen_addresses=None, extra_text='listen_adresses = "127.0.0.1";\n')
    line = config.config_path.read_text().splitlines().index('listen_adresses = "127.0.0.1";') + 1
    r = run("-t", "-f", str(config.config_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(rf"pgrelay\.conf:{line}:", out), out
    assert "did you mean" in out.lower(), out
    assert "listen_addresses" in out, out


def test_check_nested_unknown_key(config):
    """Bug guarded: unknown keys inside groups (health_check, backends) are not checked."""
    config.rewrite(health_check={"perod": "1s"})
    lines = config.config_path.read_text().splitlines()
    line = next(i for i, ln in enumerate(lines, 1) if "perod" in ln)
    r = run("-t", "-f", str(config.config_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(rf"pgrelay\.conf:{line}:", out), out
    assert "period" in out, out


def test_check_syntax_error(config):
    """Bug guarded: a libconfig syntax error is not reported with its line."""
    config.rewrite(extra_text="port = ;\n")
    line = config.config_path.read_text().count("\n")
    r = run("-t", "-f", str(config.config_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(rf"pgrelay\.conf:{line}\b", out), out


def test_missing_file_exits_1(tmp_path):
    """Bug guarded: a missing config file is not an error (or crashes)."""
    r = run("-f", str(tmp_path / "nope.conf"))
    assert r.returncode == 1, r.stdout + r.stderr
    r = run("-t", "-f", str(tmp_path / "nope.conf"))
    assert r.returncode == 1, r.stdout + r.stderr
