#!/usr/bin/env python3
"""Writes a synthetic time series of expert-load profiles whose hot experts drift: one JSON profile
{"layers": [[tokens per expert] per layer]} per window, w00.json, w01.json, ... in OUT.

Per layer and expert: a lognormal base load (sigma 1, as dsv3_lognormal.json) times a drift factor
exp(d), d an AR(1) walk over the windows (rho 0.6, stationary sigma 0.8): experts heat up and cool
down, a different few at a time, while the overall skew stays that of a real profile. Each window
also has its own token count (0.5 to 1.5 times the mean: busy and quiet hours). Loads are whole
token counts. Fixed seed: a rerun writes the same files.

usage: python Fixtures/drift_profiles.py                     (the fixture: Fixtures/profiles/drift/, 4 x 4 x 64)
       python Fixtures/drift_profiles.py OUT --layers 58 --experts 256 --windows 16 --seed 1   (the benchmark's)
"""
import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def drifting_loads(layers, experts, windows, seed, rho=0.6, sigma=0.8):
    """[window][layer][expert] token counts."""
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0.0, 1.0, size=(layers, experts))
    d = rng.normal(0.0, sigma, size=(layers, experts))
    tokens = rng.uniform(0.5, 1.5, size=windows)
    out = []
    for w in range(windows):
        if w > 0:
            d = rho * d + np.sqrt(1 - rho * rho) * rng.normal(0.0, sigma, size=(layers, experts))
        loads = base * np.exp(d)
        loads = loads / loads.sum(axis=1, keepdims=True) * experts * 1000 * tokens[w]
        out.append(np.rint(loads).astype(np.int64))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=os.path.join(HERE, "profiles", "drift"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=20261203)
    a = parser.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for w, loads in enumerate(drifting_loads(a.layers, a.experts, a.windows, a.seed)):
        with open(os.path.join(a.out, "w%02d.json" % w), "w") as f:
            json.dump({"layers": loads.tolist()}, f, separators=(",", ":"))
            f.write("\n")


if __name__ == "__main__":
    main()
