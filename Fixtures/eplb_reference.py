#!/usr/bin/env python3
"""Writes the expert-load profiles under Fixtures/profiles/ and what DeepSeek's EPLB makes of them.

The reference is EPLB itself as SGLang ships it (sglang/srt/eplb/eplb_algorithms/deepseek.py, which
needs only torch), taken from the sglang wheel on PyPI and imported from a temporary directory;
none of its code is kept here. Profiles are drawn from fixed seeds, so a rerun gives the same files.

usage: python Fixtures/eplb_reference.py        (needs torch, numpy; `zstd` on PATH; pip reaches PyPI)
"""
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "profiles")
SGLANG = "sglang==0.5.23"


def load_eplb():
    cache = os.path.join(tempfile.gettempdir(), "moetool-sglang-wheel")
    wheels = glob.glob(os.path.join(cache, "sglang-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", SGLANG, "-d", cache], check=True)
        wheels = glob.glob(os.path.join(cache, "sglang-*.whl"))
    member = "sglang/srt/eplb/eplb_algorithms/deepseek.py"
    with zipfile.ZipFile(wheels[0]) as z, tempfile.TemporaryDirectory() as tmp:
        z.extract(member, tmp)
        spec = importlib.util.spec_from_file_location("eplb_deepseek", os.path.join(tmp, member))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.rebalance_experts


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, separators=(",", ":"))
        f.write("\n")


def profiles():
    rng = np.random.default_rng(20261201)
    p = {}
    # The example in EPLB's README: 2 layers x 12 experts.
    p["readme"] = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                   [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
    # DeepSeek-V3-shaped: 256 experts in 8 groups, lognormal loads (sigma 1), a few layers.
    p["dsv3_lognormal"] = np.round(rng.lognormal(0.0, 1.0, size=(4, 256)) * 1000, 3).tolist()
    # Zipf-like skew (s = 0.8) over a random expert order.
    ranks = np.arange(1, 257, dtype=np.float64)
    p["dsv3_zipf"] = [np.round(1e6 / ranks[rng.permutation(256)] ** 0.8, 3).tolist() for _ in range(2)]
    # Mixtral-like: 8 experts, top-2.
    p["mixtral"] = np.round(rng.lognormal(0.0, 0.5, size=(4, 8)) * 5000, 2).tolist()
    # The tiny DeepSeek-V3 fixture's shape: 2 MoE layers x 16 experts in 8 groups (integer token counts).
    p["tiny_dsv3"] = rng.integers(100, 5000, size=(2, 16)).tolist()
    return p


CASES = [  # profile, slots, groups, nodes, gpus, policy
    ("readme", 16, 4, 2, 8, "hierarchical"),
    ("readme", 16, 4, 2, 8, "global"),
    ("dsv3_lognormal", 288, 8, 4, 32, "hierarchical"),
    ("dsv3_lognormal", 288, 8, 4, 32, "global"),
    ("dsv3_lognormal", 320, 8, 8, 64, "hierarchical"),
    ("dsv3_lognormal", 256, 8, 4, 32, "hierarchical"),
    ("dsv3_lognormal", 288, 8, 2, 16, "global"),
    ("dsv3_zipf", 288, 8, 4, 32, "hierarchical"),
    ("dsv3_zipf", 288, 8, 4, 32, "global"),
    ("mixtral", 16, 1, 1, 8, "global"),
    ("mixtral", 12, 1, 1, 4, "global"),
    ("tiny_dsv3", 32, 8, 2, 8, "hierarchical"),
    ("tiny_dsv3", 24, 8, 2, 4, "global"),
]


def malformed():
    d = os.path.join(OUT, "malformed")
    os.makedirs(d, exist_ok=True)
    files = {
        "ragged.json": '{"layers": [[1, 2, 3], [4, 5]]}\n',
        "negative.json": '{"layers": [[1, -2, 3]]}\n',
        "string-load.json": '{"layers": [[1, "2", 3]]}\n',
        "overflow.json": '{"layers": [[1, 1e999, 3]]}\n',
        "nan-literal.json": '{"layers": [[1, NaN, 3]]}\n',
        "no-layers.json": '{"loads": [[1, 2, 3]]}\n',
        "duplicate-key.json": '{"layers": [[1, 2]], "layers": [[3, 4]]}\n',
        "empty-layers.json": '{"layers": []}\n',
        "deep.json": '{"layers": ' + "[" * 5000 + "]" * 5000 + "}\n",
        "ragged-passes.json": '{"logical_count": [[[1, 2], [3, 4]], [[1, 2]]]}\n',
        "truncated.json": '{"layers": [[1, 2, 3], [4, 5',
        "fields.csv": "layer,expert,load\n0,0,1\n0,1\n",
        "negative.csv": "layer,expert,load\n0,0,1\n0,1,-4\n",
        "gap.csv": "layer,expert,load\n0,0,1\n2,0,1\n",
        "text-load.csv": "layer,expert,load\n0,0,many\n",
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    good = subprocess.run(["zstd", "-q", "-c", os.path.join(OUT, "tiny_dsv3.json")], check=True, capture_output=True).stdout
    with open(os.path.join(d, "truncated.json.zst"), "wb") as f:
        f.write(good[: len(good) // 2])
    with open(os.path.join(d, "garbage.json.zst"), "wb") as f:
        f.write(b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 4)


def main():
    rebalance = load_eplb()
    os.makedirs(OUT, exist_ok=True)
    p = profiles()
    for name, loads in p.items():
        write_json(os.path.join(OUT, name + ".json"), {"layers": loads})
    # The same tiny profile in every accepted form: SGLang's logical_count over three passes
    # (summing to the same loads), CSV, and zstd-compressed JSON and CSV.
    tiny = np.array(p["tiny_dsv3"])
    a = tiny // 3
    b = tiny // 3
    c = tiny - a - b
    write_json(os.path.join(OUT, "tiny_dsv3.sglang.json"),
               {"logical_count": [a.tolist(), b.tolist(), c.tolist()], "note": "three passes"})
    with open(os.path.join(OUT, "tiny_dsv3.csv"), "w") as f:
        f.write("layer,expert,load\n")
        for layer, row in enumerate(p["tiny_dsv3"]):
            for expert, load in enumerate(row):
                f.write(f"{layer},{expert},{load}\n")
    for src in ["tiny_dsv3.json", "tiny_dsv3.csv"]:
        subprocess.run(["zstd", "-q", "-f", "-19", os.path.join(OUT, src), "-o", os.path.join(OUT, src + ".zst")], check=True)
    cases = []
    for name, slots, groups, nodes, gpus, policy in CASES:
        weight = torch.tensor(p[name], dtype=torch.float64)
        phy2log, log2phy, logcnt = rebalance(weight, slots, groups, nodes, gpus, policy == "hierarchical")
        cases.append({"profile": name, "slots": slots, "groups": groups, "nodes": nodes, "gpus": gpus, "policy": policy,
                      "phy2log": phy2log.tolist(), "log2phy": log2phy.tolist(), "logcnt": logcnt.tolist()})
    write_json(os.path.join(OUT, "eplb_expected.json"), {"reference": "EPLB as shipped in " + SGLANG, "cases": cases})
    malformed()
    print(f"wrote {OUT}: {len(p)} profiles, {len(cases)} EPLB cases")


if __name__ == "__main__":
    main()
