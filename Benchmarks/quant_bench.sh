#!/usr/bin/env bash
# moetool convert --to int4|nvfp4|mxfp4 of a BF16 expert shard (Benchmarks/expert_shard.py, ~700 MB) against the
# Python reference path (Benchmarks/peer_quantize.py: llm-compressor's data-free arithmetic through compressed-tensors'
# own functions and compressors) and cp of the input, in one run; the outputs are compared tensor by tensor.
#
#   swift build -c release && bash Benchmarks/quant_bench.sh
#
# Environment: PYTHON (torch, safetensors, compressed-tensors; default /work/venv/bin/python), SHARD_DIR (default
# /tmp/moetool-expert-shard), WORK (default /tmp/moetool-quant-bench), RUNS (default 3), KINDS (default
# "int4 nvfp4 mxfp4").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SHARD_DIR="${SHARD_DIR:-/tmp/moetool-expert-shard}"
WORK="${WORK:-/tmp/moetool-quant-bench}"
RUNS="${RUNS:-3}"
MOETOOL="${MOETOOL:-.build/release/moetool}"
[ -x "$MOETOOL" ] || { echo "quant_bench: $MOETOOL missing; run: swift build -c release" >&2; exit 1; }
mkdir -p "$WORK"
[ -f "$SHARD_DIR/model.safetensors" ] || "$PYTHON" Benchmarks/expert_shard.py "$SHARD_DIR"
CLEAN=("$WORK/out" "$WORK/peer.safetensors" "$WORK/cp.safetensors")
source Benchmarks/timing.sh

in_mb=$(( $(stat -c %s "$SHARD_DIR/model.safetensors") / 1000000 ))
for kind in ${KINDS:-int4 nvfp4 mxfp4}; do
  cat "$SHARD_DIR/model.safetensors" > /dev/null   # warm the page cache
  rm -rf "$WORK/out" && "$MOETOOL" convert "$SHARD_DIR" "$WORK/out" --to "$kind" -q > /dev/null
  out_mb=$(( $(stat -c %s "$WORK/out/model.safetensors") / 1000000 ))
  cp "$WORK/out/model.safetensors" "$WORK/ours.safetensors"
  "$PYTHON" Benchmarks/peer_quantize.py "$kind" "$SHARD_DIR" "$WORK/peer.safetensors"
  same=$("$PYTHON" -c "
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
ok = a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) for k in a)
print('byte-identical tensors' if ok else 'DIFFER')" "$WORK/ours.safetensors" "$WORK/peer.safetensors")
  rm -f "$WORK/ours.safetensors"
  echo "$kind: $SHARD_DIR ($in_mb MB BF16) -> $out_mb MB, median of $RUNS runs; moetool and the peer: $same"
  printf '%-40s %8s %10s\n' "command" "wall (s)" "RSS (MiB)"
  cat "$SHARD_DIR/model.safetensors" > /dev/null
  run "moetool convert --to $kind" "$MOETOOL" convert "$SHARD_DIR" "$WORK/out" --to "$kind" -q
  run "python peer ($kind)" "$PYTHON" Benchmarks/peer_quantize.py "$kind" "$SHARD_DIR" "$WORK/peer.safetensors"
  run "cp of the input ($kind)" cp --reflink=never "$SHARD_DIR/model.safetensors" "$WORK/cp.safetensors"
  m=$(eval echo "\$RESULT_moetool_convert___to_${kind}")
  p=$(eval echo "\$RESULT_python_peer__${kind}_")
  c=$(eval echo "\$RESULT_cp_of_the_input__${kind}_")
  echo "peer/moetool ($kind): $(ratio "$p" "$m")x    moetool/cp ($kind): $(ratio "$m" "$c")x"
done
