#!/usr/bin/env python3
"""plan-experts against DeepSeek's EPLB (as SGLang ships it), in one run, on the profiles of
Benchmarks/expert_profiles.py: balance, gap to the lower bound, co-located duplicate replicas
and planning time. Both placements are scored here, by this script's own arithmetic, not by
moetool's report.

usage: python Benchmarks/plan_bench.py [--moetool .build/release/moetool] [--runs 3]
(needs torch and numpy; fetches the sglang wheel from PyPI once, keeping only EPLB's file in a
temporary directory while it runs)
"""
import argparse
import glob
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
from eplb_reference import load_eplb  # noqa: E402  (EPLB from the sglang wheel, shared with the fixtures)

DSV3 = [(288, 32, 4), (320, 64, 8), (256, 32, 4), (288, 16, 2)]  # slots, GPUs, nodes
MIXTRAL = [(16, 8, 1), (12, 4, 1)]


def score(loads, phy2log, gpus):
    """Per-layer imbalance (max/mean GPU load), gap to the lower bound, duplicate replicas."""
    loads = np.asarray(loads, dtype=np.float64)
    phy2log = np.asarray(phy2log)
    layers, experts = loads.shape
    slots = phy2log.shape[1]
    per_gpu = slots // gpus
    imb, gaps, dups = [], [], 0
    for l in range(layers):
        cnt = np.bincount(phy2log[l], minlength=experts)
        assert cnt.min() >= 1, "an expert without a slot"
        g = (loads[l][phy2log[l]] / cnt[phy2log[l]]).reshape(gpus, per_gpu).sum(axis=1)
        imb.append(g.max() / g.mean())
        # Lower bound: max(total / GPUs, the best heaviest load per replica for these slots).
        c = np.ones(experts)
        for _ in range(slots - experts):
            j = np.argmax(loads[l] / c)
            c[j] += 1
        bound = max(loads[l].sum() / gpus, (loads[l] / c).max())
        gaps.append(g.max() / bound - 1)
        for row in phy2log[l].reshape(gpus, per_gpu):
            dups += len(row) - len(set(row.tolist()))
    return float(np.mean(imb)), float(np.max(imb)), float(np.mean(gaps)), float(np.max(gaps)), dups


def compositions(n, k, cap):
    if k == 1:
        if 1 <= n <= cap:
            yield (n,)
        return
    for a in range(1, min(cap, n - k + 1) + 1):
        for rest in compositions(n - a, k - 1, cap):
            yield (a,) + rest


def best_possible_two_slots(loads, slots, gpus):
    """With two slots per GPU and few experts: the lightest heaviest GPU over every replica count,
    each paired optimally (heaviest with lightest), duplicates allowed: no placement does better.
    Returns the mean over layers of that optimum's gap to the simple lower bound."""
    gaps = []
    for row in loads:
        best = min(max(r[i] + r[-1 - i] for i in range(gpus))
                   for c in compositions(slots, len(row), gpus)
                   for r in [sorted(row[j] / c[j] for j in range(len(row)) for _ in range(c[j]))])
        cnt = [1] * len(row)
        for _ in range(slots - len(row)):
            j = max(range(len(row)), key=lambda j: row[j] / cnt[j])
            cnt[j] += 1
        bound = max(sum(row) / gpus, max(row[j] / cnt[j] for j in range(len(row))))
        gaps.append(best / bound - 1)
    return float(np.mean(gaps))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moetool", default=os.path.join(HERE, "..", ".build", "release", "moetool"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profiles", default=os.path.join(tempfile.gettempdir(), "moetool-expert-profiles"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rebalance = load_eplb()
    if not glob.glob(os.path.join(args.profiles, "*.json")):
        subprocess.run([sys.executable, os.path.join(HERE, "expert_profiles.py"), args.profiles], check=True, capture_output=True)
    work = tempfile.mkdtemp(prefix="moetool-plan-bench-")
    rows = []
    cases = [(p, s, g, n, 8) for p in sorted(glob.glob(os.path.join(args.profiles, "dsv3-*.json"))) for s, g, n in DSV3]
    cases += [(p, s, g, n, 1) for p in sorted(glob.glob(os.path.join(args.profiles, "mixtral-*.json"))) for s, g, n in MIXTRAL]
    for path, slots, gpus, nodes, groups in cases:
        loads = json.load(open(path))["layers"]
        weight = torch.tensor(loads, dtype=torch.float64)
        policies = ["hierarchical", "global"] if nodes > 1 else ["global"]
        for policy in policies:
            peer_times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                phy2log, _, _ = rebalance(weight, slots, groups, nodes, gpus, policy == "hierarchical")
                peer_times.append(time.perf_counter() - t0)
            out = os.path.join(work, "placement.json")
            ours_times, wall_times = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                r = subprocess.run([args.moetool, "plan-experts", path, "--gpus", str(gpus), "--nodes", str(nodes),
                                    "--slots", str(slots), "--groups", str(groups), "--policy", policy, "--threads", "1",
                                    "--json", "-o", out], check=True, capture_output=True, text=True)
                wall_times.append(time.perf_counter() - t0)
                ours_times.append(json.loads(r.stdout)["seconds"])
            ours = json.load(open(out))["phy2log"]
            e = score(loads, phy2log.tolist(), gpus)
            m = score(loads, ours, gpus)
            rows.append((os.path.basename(path)[:-5], f"{slots}/{gpus}/{nodes}", policy, e, m,
                         min(peer_times), min(ours_times), min(wall_times)))
    print("| profile | slots/GPUs/nodes | policy | EPLB mean imb. | moetool mean imb. | EPLB worst | moetool worst "
          "| EPLB gap mean/worst | moetool gap mean/worst | dup. EPLB/moetool | EPLB s | moetool s (wall) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    never_worse = True
    for name, shape, policy, e, m, tp, tm, tw in rows:
        never_worse &= m[0] <= e[0] + 1e-12
        print(f"| {name} | {shape} | {policy} | {e[0]:.4f} | {m[0]:.4f} | {e[1]:.4f} | {m[1]:.4f} "
              f"| {e[2]*100:.2f}% / {e[3]*100:.2f}% | {m[2]*100:.3f}% / {m[3]*100:.3f}% | {e[4]} / {m[4]} "
              f"| {tp:.3f} | {tm*1000:.1f} ms ({tw*1000:.0f} ms) | {tp/tm:.1f}x |")
    # Only where there are redundant slots: without them the counts are fixed at one per expert.
    g = [m[2] for name, shape, p, e, m, *_ in rows if p == "global" and int(shape.split("/")[0]) > (8 if "mixtral" in name else 256)]
    for name, shape, policy, e, m, *_ in rows:
        slots, gpus, _ = map(int, shape.split("/"))
        if slots == 2 * gpus and "mixtral" in name:
            loads = json.load(open(os.path.join(args.profiles, name + ".json")))["layers"]
            print(f"\n{name} {shape}: the best any placement can do (every replica count, optimal pairs, duplicates "
                  f"allowed) is a mean gap of {best_possible_two_slots(loads, slots, gpus)*100:.3f}% to the lower bound; "
                  f"moetool {m[2]*100:.3f}%")
    print(f"\nmoetool never worse than EPLB (mean imbalance): {never_worse}; "
          f"global policy with redundant slots, worst mean gap to the lower bound: {max(g)*100:.3f}%; "
          f"moetool co-located duplicates: {sum(m[4] for _, _, _, _, m, *_ in rows)}; "
          f"slowest moetool plan: {max(r[6] for r in rows)*1000:.1f} ms (one thread)")


if __name__ == "__main__":
    main()
