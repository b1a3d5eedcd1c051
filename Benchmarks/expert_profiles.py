#!/usr/bin/env python3
"""Writes synthetic expert-load profiles for the plan-experts benchmark, from fixed seeds.

DeepSeek-V3-shaped (58 MoE layers x 256 experts in 8 groups): lognormal sigma 0.5 and 1.0, Zipf
s = 0.8 over a random expert order per layer, and group-skewed (each group's experts scaled by a
lognormal sigma 0.8 factor, so some groups run hot); Mixtral-like (32 layers x 8 experts,
lognormal sigma 0.5). Loads are token counts for a batch of 8192 tokens x top-k.

usage: expert_profiles.py OUTDIR        (needs numpy)
"""
import json
import os
import sys

import numpy as np


def counts(rng, weights, tokens):
    """Token counts drawn multinomially from per-expert weights (one row per layer)."""
    p = weights / weights.sum(axis=1, keepdims=True)
    return np.stack([rng.multinomial(tokens, row) for row in p])


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(58256)
    layers, experts, groups = 58, 256, 8
    tokens = 8192 * 8
    shapes = {}
    shapes["lognormal-0.5"] = rng.lognormal(0, 0.5, (layers, experts))
    shapes["lognormal-1.0"] = rng.lognormal(0, 1.0, (layers, experts))
    ranks = np.arange(1, experts + 1, dtype=np.float64)
    shapes["zipf-0.8"] = np.stack([1 / ranks[rng.permutation(experts)] ** 0.8 for _ in range(layers)])
    group_factor = np.repeat(rng.lognormal(0, 0.8, (layers, groups)), experts // groups, axis=1)
    shapes["group-skewed"] = rng.lognormal(0, 0.5, (layers, experts)) * group_factor
    for name, w in shapes.items():
        with open(os.path.join(out, f"dsv3-{name}.json"), "w") as f:
            json.dump({"layers": counts(rng, w, tokens).tolist()}, f)
    with open(os.path.join(out, "mixtral-lognormal-0.5.json"), "w") as f:
        json.dump({"layers": counts(rng, rng.lognormal(0, 0.5, (32, 8)), 8192 * 2).tolist()}, f)
    print(out)


if __name__ == "__main__":
    main()
