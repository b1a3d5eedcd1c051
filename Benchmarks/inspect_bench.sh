#!/usr/bin/env bash
# Benchmark `moetool inspect` against the Python `safetensors` peer on a
# DeepSeek-V3-shaped checkpoint skeleton (163 sparse shards, 91,991 tensors).
#
# Usage: bash Benchmarks/inspect_bench.sh [--peer-only]
#
# Expects .build/release/moetool (run `swift build -c release` first); this
# script builds nothing. --peer-only skips the moetool side.
#
# Environment:
#   SKELETON_DIR  where the skeleton lives / is created
#                 (default /tmp/moetool-dsv3-skeleton)
#   PYTHON        interpreter with `safetensors` installed
#                 (default /work/venv-bench/bin/python, else python3)
#   MOETOOL       moetool binary (default <repo>/.build/release/moetool)
#   RUNS          timed runs per side; the median wall time is reported
#                 (default 5)
#
# Linux only (GNU date %N and GNU time -f).

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

SKELETON_DIR="${SKELETON_DIR:-/tmp/moetool-dsv3-skeleton}"
MOETOOL="${MOETOOL:-$REPO_ROOT/.build/release/moetool}"
RUNS="${RUNS:-5}"
PEER_ONLY=0

die() { echo "inspect_bench: error: $*" >&2; exit 1; }
log() { echo "inspect_bench: $*" >&2; }

for arg in "$@"; do
    case "$arg" in
        --peer-only) PEER_ONLY=1 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"

# --- Python interpreter ------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /work/venv-bench/bin/python ]]; then
        PYTHON=/work/venv-bench/bin/python
    else
        PYTHON="$(command -v python3 || true)"
    fi
fi
[[ -n "$PYTHON" ]] || die "no Python found; set PYTHON"
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON='$PYTHON' is not executable"
"$PYTHON" -c 'import safetensors, numpy' 2>/dev/null \
    || die "$PYTHON cannot import safetensors and numpy; run: $PYTHON -m pip install -r $SCRIPT_DIR/requirements.txt"

# --- moetool -----------------------------------------------------------------
if [[ "$PEER_ONLY" -eq 0 && ! -x "$MOETOOL" ]]; then
    die "moetool not found at $MOETOOL
  build it first:  (cd $REPO_ROOT && swift build -c release)
  or set MOETOOL=/path/to/moetool, or pass --peer-only to time just the peer"
fi

# --- GNU time ----------------------------------------------------------------
TIME_BIN=/usr/bin/time
if [[ ! -x "$TIME_BIN" ]]; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "/usr/bin/time missing; installing the 'time' package"
        apt-get install -y time >/dev/null || { apt-get update >/dev/null && apt-get install -y time >/dev/null; } \
            || die "could not install 'time'"
    else
        die "/usr/bin/time (GNU time) is missing; install it (apt-get install time)"
    fi
fi
"$TIME_BIN" -f %M -o /dev/null true 2>/dev/null || die "$TIME_BIN does not support -f/-o (need GNU time)"

# --- skeleton ----------------------------------------------------------------
INDEX="$SKELETON_DIR/model.safetensors.index.json"
if [[ ! -f "$INDEX" ]]; then
    log "creating skeleton in $SKELETON_DIR"
    "$PYTHON" "$SCRIPT_DIR/deepseek_v3_skeleton.py" "$SKELETON_DIR" >&2
fi
[[ -f "$INDEX" ]] || die "skeleton index missing: $INDEX"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# run_once LABEL OUTFILE CMD...: run CMD under GNU time; stdout to OUTFILE.
# Appends wall seconds to $WORK/LABEL.wall and peak RSS (KiB) to $WORK/LABEL.rss.
run_once() {
    local label="$1" out="$2"; shift 2
    local t0 t1 status=0
    t0=$(date +%s%N)
    "$TIME_BIN" -f %M -o "$WORK/$label.time" "$@" >"$out" 2>"$WORK/$label.err" || status=$?
    t1=$(date +%s%N)
    if [[ "$status" -ne 0 ]]; then
        echo "inspect_bench: error: '$*' exited with status $status; its stderr:" >&2
        cat "$WORK/$label.err" >&2
        exit 1
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", (b - a) / 1e9 }' >>"$WORK/$label.wall"
    # GNU time writes the %M line last (a "Command exited..." line may precede it).
    tail -n 1 "$WORK/$label.time" >>"$WORK/$label.rss"
}

median() {  # median of the numbers in file $1
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
max_mib() {  # max of the KiB numbers in file $1, in MiB
    sort -g "$1" | tail -n 1 | awk '{ printf "%.1f", $1 / 1024 }'
}

MOE_CMD=("$MOETOOL" inspect "$SKELETON_DIR")
PEER_CMD=("$PYTHON" "$SCRIPT_DIR/peer_inspect.py" "$SKELETON_DIR")

# --- warm-up: one untimed run each (page cache for the headers + index) ------
log "warming page cache"
if [[ "$PEER_ONLY" -eq 0 ]]; then
    run_once warm "$WORK/moetool.out" "${MOE_CMD[@]}"
    if ! grep -Eq '91,?991' "$WORK/moetool.out"; then
        log "note: moetool's output does not mention 91991 tensors; check that it inspects correctly"
    fi
fi
run_once warm "$WORK/peer.out" "${PEER_CMD[@]}"
grep -q '^tensors: *91991$' "$WORK/peer.out" \
    || die "peer did not report 91991 tensors:
$(cat "$WORK/peer.out")"
rm -f "$WORK"/warm.*

# --- timed runs (interleaved so drift affects both sides alike) --------------
log "timing $RUNS runs per side"
for ((i = 1; i <= RUNS; i++)); do
    if [[ "$PEER_ONLY" -eq 0 ]]; then
        run_once moetool /dev/null "${MOE_CMD[@]}"
    fi
    run_once peer "$WORK/peer.out" "${PEER_CMD[@]}"
    # the peer's own in-process figure (excludes interpreter start-up/imports)
    awk '/^elapsed:/ { print $2 }' "$WORK/peer.out" >>"$WORK/peer_inproc.wall"
done

# --- report ------------------------------------------------------------------
PEER_WALL=$(median "$WORK/peer.wall")
PEER_INPROC=$(median "$WORK/peer_inproc.wall")
PEER_RSS=$(max_mib "$WORK/peer.rss")
SAFETENSORS_VER=$("$PYTHON" -c 'import safetensors; print(safetensors.__version__)')

echo
echo "inspect benchmark: $SKELETON_DIR"
echo "  $(ls "$SKELETON_DIR" | grep -c '\.safetensors$') shards, 91991 tensors; median of $RUNS runs, page cache warm"
echo
printf '  %-34s %12s %14s\n' "tool" "wall (s)" "peak RSS (MiB)"
printf '  %-34s %12s %14s\n' "----" "--------" "--------------"
if [[ "$PEER_ONLY" -eq 0 ]]; then
    MOE_WALL=$(median "$WORK/moetool.wall")
    MOE_RSS=$(max_mib "$WORK/moetool.rss")
    printf '  %-34s %12.3f %14s\n' "moetool inspect" "$MOE_WALL" "$MOE_RSS"
fi
printf '  %-34s %12.3f %14s\n' "python safetensors $SAFETENSORS_VER (peer)" "$PEER_WALL" "$PEER_RSS"
printf '  %-34s %12.3f %14s\n' "  peer, in-process only" "$PEER_INPROC" "-"
echo
if [[ "$PEER_ONLY" -eq 0 ]]; then
    awk -v m="$MOE_WALL" -v p="$PEER_WALL" 'BEGIN {
        if (p > 0) printf "  ratio moetool/peer (wall): %.3f  (%.1fx %s)\n", m / p,
            (m < p ? p / m : m / p), (m < p ? "faster" : "slower") }'
else
    echo "  (moetool side skipped: --peer-only)"
fi
