"""Compiles a test driver (a C file using pgrelay's modules) against the libpgrelay.a next to
$PGRELAY_BIN, with the same sanitizers as that build. Skips the test when there is nothing to link."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO, pgrelay_bin


def _sanitize_flags(build_dir):
    try:
        opts = json.loads((build_dir / "meson-info" / "intro-buildoptions.json").read_text())
    except (OSError, ValueError):
        return []
    for o in opts:
        if o["name"] == "b_sanitize" and o["value"] not in ("none", "", []):
            value = o["value"] if isinstance(o["value"], str) else ",".join(o["value"])
            return [f"-fsanitize={value}"]
    return []


def compile_driver(src, out):
    build_dir = pgrelay_bin().parent
    lib = build_dir / "libpgrelay.a"
    if not lib.exists():
        pytest.skip(f"{lib} not built")
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip("no C compiler")
    pq_inc = subprocess.run(["pg_config", "--includedir"], capture_output=True, text=True).stdout.strip()
    cmd = [cc, "-std=c17", "-D_GNU_SOURCE", "-g", "-O1", "-Wall", "-Wextra", "-I", str(REPO / "src"),
           "-I", pq_inc, *_sanitize_flags(build_dir), "-o", str(out), str(src), str(lib),
           "-luv", "-lconfig", "-lssl", "-lcrypto", "-lpq", "-lpg_query", "-lcurl", "-ljson-c",
           "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"compiling the driver failed:\n{' '.join(cmd)}\n{r.stderr}"
    return out
