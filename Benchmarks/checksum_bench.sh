#!/usr/bin/env bash
# SHA-256 throughput of `moetool inspect --checksum` against coreutils' sha256sum, in the same run,
# on one multi-GB safetensors file (one file: every tool hashes it on one core).
#
# Usage: bash Benchmarks/checksum_bench.sh [MOETOOL_BINARY ...]
#
# Each binary given (default: <repo>/.build/release/moetool) is timed, then timed again with SHA-NI
# masked off (OPENSSL_ia32cap), so two builds can be compared side by side (e.g. one linking
# swift-crypto, one linking libcrypto) on CPUs with and without it. The file is made once with
# numpy + safetensors (random 16-bit patterns, 1 GiB per tensor), read once to warm the page
# cache, then every tool runs RUNS times in turn; the median wall time and GB/s (10^9 bytes/s) are
# printed. Every digest must equal sha256sum's, or the script fails.
#
# Environment:
#   GIB      size of the file in GiB (default 3)
#   DIR      where the file is made (default /tmp/moetool-checksum-bench; delete it afterwards)
#   PYTHON   interpreter with numpy and safetensors (default /work/venv/bin/python, else python3)
#   RUNS     timed runs per tool (default 5)
#
# Linux only (GNU date %N).

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
GIB="${GIB:-3}"
DIR="${DIR:-/tmp/moetool-checksum-bench}"
RUNS="${RUNS:-5}"
PYTHON="${PYTHON:-/work/venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$REPO_ROOT/.build/release/moetool")

FILE="$DIR/model.safetensors"
mkdir -p "$DIR"
if [ ! -f "$FILE" ]; then
    echo "checksum_bench: writing $GIB GiB to $FILE" >&2
    "$PYTHON" - "$FILE" "$GIB" <<'PY'
import sys
import numpy as np
from safetensors.numpy import save_file
path, gib = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(14)
tensors = {f"model.layers.{i}.mlp.experts.w": rng.integers(0, 1 << 16, size=(1 << 14, 1 << 15), dtype=np.uint16)
           for i in range(gib)}  # 2^29 values x 2 bytes = 1 GiB each (U16: any 16-bit pattern; the digest reads bytes)
save_file(tensors, path)
PY
fi
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null  # warm the page cache: every run reads from memory

expected=$(sha256sum "$FILE" | cut -d' ' -f1)
now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

run_tool() {  # label, command...
    local label="$1"; shift
    local times=()
    for _ in $(seq "$RUNS"); do
        local t0 t1 out
        t0=$(now)
        out=$("$@")
        t1=$(now)
        echo "$out" | grep -q "$expected" || { echo "checksum_bench: $label gave a different digest" >&2; exit 1; }
        times+=("$(echo "$t1 - $t0" | bc -l)")
    done
    local m
    m=$(printf '%s\n' "${times[@]}" | median)
    printf '%-60s %8.3f s %7.2f GB/s\n' "$label" "$m" "$(echo "$BYTES / $m / 1000000000" | bc -l)"
}

echo "checksum benchmark: $FILE ($BYTES bytes), median of $RUNS runs, page cache warm"
run_tool "sha256sum (coreutils $(sha256sum --version | head -1 | awk '{print $NF}'))" sha256sum "$FILE"
for b in "${BINARIES[@]}"; do
    run_tool "moetool inspect --checksum -q ($b)" "$b" inspect --checksum -q "$FILE"
done
# The same without the SHA extensions (CPUID leaf 7 EBX bit 29, masked the way OpenSSL and BoringSSL read
# OPENSSL_ia32cap): what a CPU without SHA-NI gets from each library's vector code.
for b in "${BINARIES[@]}"; do
    run_tool "  the same, SHA-NI masked off ($b)" env OPENSSL_ia32cap=":~0x20000000" "$b" inspect --checksum -q "$FILE"
done
