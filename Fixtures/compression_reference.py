#!/usr/bin/env python3
"""Writes Fixtures/compression/xxh64.json: XXH64 (seed 0) of deterministic byte strings, computed by
the `xxhash` package (the reference implementation's Python binding), for moetool's checksum tests.

usage: python Fixtures/compression_reference.py      (needs xxhash)
"""
import json
import os

import xxhash

HERE = os.path.dirname(os.path.abspath(__file__))


def pattern(n):
    # Bytes 0, 7, 14, ... mod 251: no runs, every length a different tail.
    return bytes((i * 7) % 251 for i in range(n))


def main():
    lengths = list(range(0, 70)) + [100, 127, 128, 129, 1000, 4096, 65537, 1 << 20]
    cases = [{"length": n, "xxh64": format(xxhash.xxh64(pattern(n), seed=0).intdigest(), "016x")} for n in lengths]
    out = os.path.join(HERE, "compression")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "xxh64.json"), "w") as f:
        json.dump({"pattern": "byte i = (i * 7) % 251", "seed": 0, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} XXH64 cases")


if __name__ == "__main__":
    main()
