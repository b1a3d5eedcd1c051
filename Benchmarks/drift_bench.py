#!/usr/bin/env python3
"""Loads that drift: one robust placement for all windows against EPLB's placement of the mean
load and against re-planning every window, on synthetic DeepSeek-V3-shaped series (58 MoE
layers x 256 experts in 8 groups, hot experts drifting over the windows: Fixtures/drift_profiles.py).

Every placement is scored here, by this script's own arithmetic on the phy2log moetool writes
(and EPLB's own output, run from the sglang wheel, for the mean load): per window, the imbalance
(max / mean GPU load) of each layer, averaged over layers; the worst window and the mean over
windows; and per layer the worst window's imbalance (what `--robust max` minimises), averaged.
Moves: each window re-planned with --previous the window before's placement (the first from a
plan of the window before the series), slots whose expert changed.

usage: python Benchmarks/drift_bench.py [--moetool .build/release/moetool] [--windows 8 24] [--seeds 1 2]
(needs torch and numpy; fetches the sglang wheel from PyPI once, as plan_bench.py)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "Fixtures"))
from eplb_reference import load_eplb  # noqa: E402
from drift_profiles import drifting_loads  # noqa: E402

LAYERS, EXPERTS, GROUPS = 58, 256, 8
GPUS, NODES, SLOTS = 32, 4, 288  # one redundant expert per GPU


def imbalance(loads, phy2log):
    """[layer] max/mean GPU load of a placement under loads [layer][expert]."""
    out = []
    for l in range(loads.shape[0]):
        p = np.asarray(phy2log[l])
        cnt = np.bincount(p, minlength=loads.shape[1])
        g = (loads[l][p] / cnt[p]).reshape(GPUS, -1).sum(axis=1)
        out.append(g.max() / g.mean())
    return np.array(out)


def write_profile(path, loads):
    with open(path, "w") as f:
        json.dump({"layers": np.asarray(loads).tolist()}, f)


def moetool(binary, args):
    t = time.perf_counter()
    r = subprocess.run([binary, "plan-experts"] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    return time.perf_counter() - t


def phy2log(path):
    with open(path) as f:
        return json.load(f)["phy2log"]


def run(binary, eplb, windows, seed, policy, tmp):
    deploy = ["--gpus", str(GPUS), "--nodes", str(NODES), "--groups", str(GROUPS), "--slots", str(SLOTS), "--policy", policy]
    series = drifting_loads(LAYERS, EXPERTS, windows + 1, seed)
    before, series = series[0], series[1:]  # the window before: what is deployed when the series starts
    paths = []
    for w, loads in enumerate(series):
        paths.append(os.path.join(tmp, "w%02d.json" % w))
        write_profile(paths[-1], loads)
    loads = [np.asarray(w, dtype=np.float64) for w in series]

    # (a) one robust placement for all windows.
    robust_path = os.path.join(tmp, "robust.json")
    seconds = moetool(binary, paths + deploy + ["-o", robust_path])
    robust = phy2log(robust_path)
    # (b) EPLB (itself) on the mean load.
    mean = np.mean(np.stack(loads), axis=0)
    p, _, _ = eplb(torch.tensor(mean, dtype=torch.float32), SLOTS, GROUPS, NODES, GPUS, policy == "hierarchical")
    eplb_mean = p.tolist()
    # (c) re-planned every window, each from the one before (moves counted).
    first_path = os.path.join(tmp, "before.json")
    write_profile(first_path, before)
    previous = os.path.join(tmp, "p-before.json")
    moetool(binary, [first_path] + deploy + ["-o", previous])
    replanned, moves = [], []
    for w, path in enumerate(paths):
        out = os.path.join(tmp, "p%02d.json" % w)
        moetool(binary, [path] + deploy + ["--previous", previous, "-o", out])
        a, b = np.asarray(phy2log(previous)), np.asarray(phy2log(out))
        moves.append(int((a != b).sum()))
        replanned.append(phy2log(out))
        previous = out
    # Moves of the robust placement from the plan deployed before the series.
    robust_moves_path = os.path.join(tmp, "robust-moves.json")
    moetool(binary, paths + deploy + ["--previous", first_path.replace("before.json", "p-before.json"), "-o", robust_moves_path])
    robust_moves = int((np.asarray(phy2log(robust_moves_path)) != np.asarray(phy2log(os.path.join(tmp, "p-before.json")))).sum())

    table = {
        "robust": np.stack([imbalance(l, robust) for l in loads]),
        "eplb-mean": np.stack([imbalance(l, eplb_mean) for l in loads]),
        "re-planned": np.stack([imbalance(l, replanned[w]) for w, l in enumerate(loads)]),
    }
    return table, moves, robust_moves, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moetool", default=os.path.join(HERE, "..", ".build", "release", "moetool"))
    ap.add_argument("--windows", type=int, nargs="+", default=[8, 24])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--policies", nargs="+", default=["hierarchical", "global"])
    a = ap.parse_args()
    eplb = load_eplb()
    print("| windows | policy | seed | placement | worst window | mean over windows | worst window per layer | moves per re-plan | planning time |")
    print("| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for windows in a.windows:
        for policy in a.policies:
            for seed in a.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    table, moves, robust_moves, seconds = run(a.moetool, eplb, windows, seed, policy, tmp)
                for name, m in table.items():  # m: [window][layer]
                    per_window = m.mean(axis=1)
                    worst_per_layer = m.max(axis=0).mean()
                    if name == "robust":
                        extra = "%d once (from the plan before)" % robust_moves, "%.2f s" % seconds
                    elif name == "re-planned":
                        extra = "%.1f (%d-%d)" % (np.mean(moves), min(moves), max(moves)), ""
                    else:
                        extra = "", ""
                    print("| %d | %s | %d | %s | %.4f | %.4f | %.4f | %s | %s |" % (
                        windows, policy, seed, name, per_window.max(), per_window.mean(), worst_per_layer, *extra), flush=True)


if __name__ == "__main__":
    main()
