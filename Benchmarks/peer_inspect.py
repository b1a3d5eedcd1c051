#!/usr/bin/env python3
"""The peer for `moetool inspect`: read every tensor's dtype and shape with
the reference `safetensors` Python package.

Usage: peer_inspect.py DIR

For each shard named in DIR/model.safetensors.index.json (the sorted unique
values of its weight_map), open it with safetensors.safe_open(framework=
"numpy") and, for every key, read get_slice(key).get_dtype() and
get_shape(). Prints the tensor count, the parameter count (sum over tensors
of the product of the shape) and the elapsed seconds.

Deliberately plain: one process, one thread, the way a user would write it.
Timing covers everything after imports: reading the index, opening the
shards and walking the headers.
"""

import json
import os
import sys
import time

from safetensors import safe_open

INDEX_NAME = "model.safetensors.index.json"


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: %s DIR" % os.path.basename(argv[0]), file=sys.stderr)
        return 2
    root = argv[1]
    t0 = time.perf_counter()

    with open(os.path.join(root, INDEX_NAME)) as f:
        index = json.load(f)
    shards = sorted(set(index["weight_map"].values()))

    n_tensors = 0
    n_params = 0
    dtypes = {}
    for shard in shards:
        with safe_open(os.path.join(root, shard), framework="numpy") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                dtype = sl.get_dtype()
                shape = sl.get_shape()
                count = 1
                for d in shape:
                    count *= d
                n_tensors += 1
                n_params += count
                dtypes[dtype] = dtypes.get(dtype, 0) + 1

    elapsed = time.perf_counter() - t0
    print("shards:     %d" % len(shards))
    print("tensors:    %d" % n_tensors)
    print("parameters: %d" % n_params)
    print("dtypes:     %s" % ", ".join(
        "%s=%d" % (k, v) for k, v in sorted(dtypes.items())))
    print("elapsed:    %.3f s" % elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
