#!/usr/bin/env bash
# moetool convert against the torch peer (Benchmarks/peer_convert.py) and cp, in one run,
# on a ~700 MB BF16 shard shaped like DeepSeek-V3 experts (Benchmarks/expert_shard.py).
#
#   swift build -c release && bash Benchmarks/convert_bench.sh
#
# Environment: PYTHON (with torch and safetensors; default /work/venv/bin/python), SHARD_DIR
# (default /tmp/moetool-expert-shard), WORK (default /tmp/moetool-convert-bench), RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SHARD_DIR="${SHARD_DIR:-/tmp/moetool-expert-shard}"
WORK="${WORK:-/tmp/moetool-convert-bench}"
RUNS="${RUNS:-3}"
MOETOOL="${MOETOOL:-.build/release/moetool}"
[ -x "$MOETOOL" ] || { echo "convert_bench: $MOETOOL missing; run: swift build -c release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "convert_bench: needs GNU time (apt-get install time)" >&2; exit 1; }
[ -f "$SHARD_DIR/model.safetensors" ] || "$PYTHON" Benchmarks/expert_shard.py "$SHARD_DIR"
mkdir -p "$WORK"
cat "$SHARD_DIR/model.safetensors" > /dev/null   # warm the page cache

# run and ratio: Benchmarks/timing.sh
CLEAN=("$WORK/out" "$WORK/out.safetensors" "$WORK/cp.safetensors")
source Benchmarks/timing.sh

bytes=$(stat -c %s "$SHARD_DIR/model.safetensors")
echo "convert benchmark: $SHARD_DIR/model.safetensors ($((bytes / 1000000)) MB BF16), median of $RUNS runs"
printf '%-34s %8s %10s\n' "command" "wall (s)" "RSS (MiB)"
run "moetool convert --to fp8" "$MOETOOL" convert "$SHARD_DIR" "$WORK/out" --to fp8 -q
run "torch peer --to fp8" "$PYTHON" Benchmarks/peer_convert.py "$SHARD_DIR/model.safetensors" "$WORK/out.safetensors" --to fp8
run "cp (the input)" cp "$SHARD_DIR/model.safetensors" "$WORK/cp.safetensors"
# cp uses copy_file_range (an in-kernel copy); these two show what writing the bytes costs here.
run "cp --reflink=never (the input)" cp --reflink=never "$SHARD_DIR/model.safetensors" "$WORK/cp.safetensors"
run "dd 366 MB (the FP8 output size)" dd if=/dev/zero of="$WORK/cp.safetensors" bs=1M count=366 status=none

# The FP8 result as input for the way back; the torch peer's own FP8 file must be the same bytes.
rm -rf "$WORK/fp8" && "$MOETOOL" convert "$SHARD_DIR" "$WORK/fp8" --to fp8 -q > /dev/null
"$PYTHON" Benchmarks/peer_convert.py "$SHARD_DIR/model.safetensors" "$WORK/peer-fp8.safetensors" --to fp8 > /dev/null
if cmp -s "$WORK/fp8/model.safetensors" "$WORK/peer-fp8.safetensors"; then echo "fp8 outputs: byte-identical"; else echo "fp8 outputs: DIFFER"; fi
run "moetool convert --to bf16" "$MOETOOL" convert "$WORK/fp8" "$WORK/out" --to bf16 -q
run "torch peer --to bf16" "$PYTHON" Benchmarks/peer_convert.py "$WORK/fp8/model.safetensors" "$WORK/out.safetensors" --to bf16

ratio() { echo "scale=3; $1 / $2" | bc -l; }
echo "torch/moetool --to fp8:  $(ratio "$RESULT_torch_peer___to_fp8" "$RESULT_moetool_convert___to_fp8")x"
echo "moetool/cp --to fp8:     $(ratio "$RESULT_moetool_convert___to_fp8" "$RESULT_cp__the_input_")x"
echo "moetool/cp --reflink=never --to fp8: $(ratio "$RESULT_moetool_convert___to_fp8" "$RESULT_cp___reflink_never__the_input_")x"
echo "moetool/dd of the output size --to fp8: $(ratio "$RESULT_moetool_convert___to_fp8" "$RESULT_dd_366_MB__the_FP8_output_size_")x"
echo "torch/moetool --to bf16: $(ratio "$RESULT_torch_peer___to_bf16" "$RESULT_moetool_convert___to_bf16")x"
