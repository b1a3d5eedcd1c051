#!/usr/bin/env python3
"""moetool compress/decompress against ZipNN (the `zipnn` package) and the zstd CLI, in one run, on
a BF16 shard (Benchmarks/expert_shard.py, N(0, 0.02)), the same shard converted to DeepSeek's FP8
block format by moetool, and an F32 shard of N(0, 0.02) values. Every tool's round trip is checked
byte for byte; times are wall clock with the input in the page cache and the output written to
--out (default /dev/shm, a tmpfs, so that the tools are measured rather than this machine's disk),
best of --runs; MB/s are of original bytes.

usage: python Benchmarks/compress_bench.py [--moetool .build/release/moetool] [--runs 3]
(needs torch, safetensors, numpy, zipnn; zstd on PATH)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(fn, runs):
    best = None
    for _ in range(runs):
        subprocess.run(["sync"])
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
    return best


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moetool", default=os.path.join(HERE, "..", ".build", "release", "moetool"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "moetool-compress-data"))
    ap.add_argument("--out", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    args = ap.parse_args()
    moetool = os.path.abspath(args.moetool)
    os.makedirs(args.data, exist_ok=True)
    bf16 = os.path.join(args.data, "bf16", "model.safetensors")
    if not os.path.exists(bf16):
        subprocess.run([sys.executable, os.path.join(HERE, "expert_shard.py"), os.path.dirname(bf16)], check=True)
    fp8 = os.path.join(args.data, "fp8", "model.safetensors")
    if not os.path.exists(fp8):
        subprocess.run([moetool, "convert", os.path.dirname(bf16), os.path.dirname(fp8), "--to", "fp8", "-q"], check=True,
                       capture_output=True)
    f32 = os.path.join(args.data, "f32.safetensors")
    if not os.path.exists(f32):
        from safetensors.numpy import save_file
        rng = np.random.default_rng(32)
        save_file({f"w{i}": (rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32) for i in range(4)}, f32)

    from zipnn import ZipNN
    work = tempfile.mkdtemp(prefix="moetool-compress-bench-", dir=args.out)
    rows = []
    for label, path, zipnn_dtype in [("BF16 N(0,0.02)", bf16, "bfloat16"), ("FP8 E4M3 128x128 blocks", fp8, None),
                                     ("F32 N(0,0.02)", f32, "float32")]:
        size = os.path.getsize(path)
        out = os.path.join(work, "c")
        back = os.path.join(work, "d")

        def clean():
            for p in (out, back):
                if os.path.exists(p):
                    os.remove(p)

        results = {}
        # moetool
        clean()
        tc = timed(lambda: (clean(), subprocess.run([moetool, "compress", path, out, "-q"], check=True, capture_output=True)), args.runs)
        stored = os.path.getsize(out)
        td = timed(lambda: (os.path.exists(back) and os.remove(back),
                            subprocess.run([moetool, "decompress", out, back, "-q"], check=True, capture_output=True)), args.runs)
        results["moetool"] = (stored, tc, td, same(path, back))
        # zstd CLI, levels 3 (its default) and 1, two threads
        for level in (3, 1):
            clean()
            tc = timed(lambda: (clean(), subprocess.run(["zstd", f"-{level}", "-T2", "-q", "-f", path, "-o", out], check=True)), args.runs)
            stored = os.path.getsize(out)
            td = timed(lambda: subprocess.run(["zstd", "-d", "-T2", "-q", "-f", out, "-o", back], check=True), args.runs)
            results[f"zstd -{level}"] = (stored, tc, td, same(path, back))
        # ZipNN on the whole file's bytes with the data's dtype; it has no 8-bit mode, so FP8 goes
        # through its bfloat16 byte grouping.
        z = ZipNN(bytearray_dtype=zipnn_dtype or "bfloat16", threads=2)
        if z is not None:
            def zc():
                with open(path, "rb") as f:
                    data = f.read()
                c = z.compress(data)
                with open(out, "wb") as f:
                    f.write(c)

            def zd():
                with open(out, "rb") as f:
                    c = f.read()
                d = z.decompress(c)
                with open(back, "wb") as f:
                    f.write(bytes(d))

            clean()
            tc = timed(zc, args.runs)
            stored = os.path.getsize(out)
            td = timed(zd, args.runs)
            results["ZipNN"] = (stored, tc, td, same(path, back))
        clean()
        for tool, (stored, tc, td, ok) in results.items():
            rows.append((label, size, tool, size / stored, size / 1e6 / tc, size / 1e6 / td, ok))
    print("| data | size (MB) | tool | ratio | compress MB/s | decompress MB/s | round trip |")
    print("|---|---|---|---|---|---|---|")
    for label, size, tool, ratio, c, d, ok in rows:
        print(f"| {label} | {size / 1e6:.0f} | {tool} | {ratio:.4f} | {c:.0f} | {d:.0f} | {'identical' if ok else 'DIFFERS'} |")


if __name__ == "__main__":
    main()
