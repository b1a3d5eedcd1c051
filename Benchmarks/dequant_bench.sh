#!/usr/bin/env bash
# moetool convert --to bf16 of quantized expert shards against the Python reference path (Benchmarks/peer_dequant.py:
# compressed-tensors' dequantizer for INT4, llm-dequant for NVFP4, transformers' MXFP4 conversion for gpt-oss) and cp of the output size,
# in one run; the outputs are compared byte for byte.
#
#   swift build -c release && bash Benchmarks/dequant_bench.sh
#
# Environment: PYTHON (torch, safetensors, compressed-tensors, transformers; default /work/venv/bin/python),
# DATA (default /tmp/moetool-quantized), WORK (default /tmp/moetool-dequant-bench), RUNS (default 3), KINDS
# (default "int4 nvfp4 mxfp4").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
DATA="${DATA:-/tmp/moetool-quantized}"
WORK="${WORK:-/tmp/moetool-dequant-bench}"
RUNS="${RUNS:-3}"
MOETOOL="${MOETOOL:-.build/release/moetool}"
[ -x "$MOETOOL" ] || { echo "dequant_bench: $MOETOOL missing; run: swift build -c release" >&2; exit 1; }
mkdir -p "$WORK"

# run and ratio: Benchmarks/timing.sh
CLEAN=("$WORK/out" "$WORK/peer.safetensors" "$WORK/cp.safetensors")
source Benchmarks/timing.sh

for kind in ${KINDS:-int4 nvfp4 mxfp4}; do
  [ -f "$DATA/$kind/model.safetensors" ] || "$PYTHON" Benchmarks/quantized_shard.py "$kind" "$DATA/$kind"
  cat "$DATA/$kind/model.safetensors" > /dev/null   # warm the page cache
  in_mb=$(( $(stat -c %s "$DATA/$kind/model.safetensors") / 1000000 ))
  rm -rf "$WORK/out" && "$MOETOOL" convert "$DATA/$kind" "$WORK/out" --to bf16 -q > /dev/null
  out_mb=$(( $(stat -c %s "$WORK/out/model.safetensors") / 1000000 ))
  cp "$WORK/out/model.safetensors" "$WORK/ref.safetensors"   # what cp copies below: the output's size
  "$PYTHON" Benchmarks/peer_dequant.py "$kind" "$DATA/$kind" "$WORK/peer.safetensors"
  same=$("$PYTHON" -c "
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
ok = a.keys() == b.keys() and all(torch.equal(a[k].view(torch.int16) if a[k].dtype == torch.bfloat16 else a[k], b[k].view(torch.int16) if b[k].dtype == torch.bfloat16 else b[k]) for k in a)
print('byte-identical tensors' if ok else 'DIFFER')" "$WORK/ref.safetensors" "$WORK/peer.safetensors")
  echo "$kind: $DATA/$kind ($in_mb MB) -> $out_mb MB of BF16, median of $RUNS runs; moetool and the peer: $same"
  printf '%-40s %8s %10s\n' "command" "wall (s)" "RSS (MiB)"
  cat "$DATA/$kind/model.safetensors" > /dev/null   # warm again: the peer's run above may have pushed it out
  run "moetool convert --to bf16 ($kind)" "$MOETOOL" convert "$DATA/$kind" "$WORK/out" --to bf16 -q
  run "python peer ($kind)" "$PYTHON" Benchmarks/peer_dequant.py "$kind" "$DATA/$kind" "$WORK/peer.safetensors"
  run "cp of the output ($kind)" cp --reflink=never "$WORK/ref.safetensors" "$WORK/cp.safetensors"
  m=$(eval echo "\$RESULT_moetool_convert___to_bf16__${kind}_")
  p=$(eval echo "\$RESULT_python_peer__${kind}_")
  c=$(eval echo "\$RESULT_cp_of_the_output__${kind}_")
  echo "peer/moetool ($kind): $(ratio "$p" "$m")x    moetool/cp ($kind): $(ratio "$m" "$c")x"
  rm -f "$WORK/ref.safetensors"
done
