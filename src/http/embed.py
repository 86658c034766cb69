#!/usr/bin/env python3
"""Turns a file into a C array at build time (meson custom_target): embed.py IN OUT NAME writes OUT
defining `const char NAME[]` (the bytes of IN plus a terminating NUL) and `const size_t NAME_len`
(without the NUL). The declarations live in a hand-written header the output includes."""
import sys

src, out, name, header = sys.argv[1:5]
data = open(src, "rb").read()
lines = [f"/* Generated from {src.rsplit('/', 1)[-1]} by embed.py; do not edit. */",
         f'#include "{header}"', "", f"const char {name}[] = {{"]
for i in range(0, len(data), 16):
    lines.append("\t" + ", ".join(f"0x{b:02x}" for b in data[i:i + 16]) + ",")
lines += ["\t0x00", "};", f"const size_t {name}_len = {len(data)};", ""]
with open(out, "w") as f:
    f.write("\n".join(lines))
