#!/usr/bin/env bash
# Fuzzes every reader of untrusted bytes with libFuzzer (+ AddressSanitizer) for SECONDS each
# (default 600), seeded from Fixtures/. Crashers land in Fuzz/crashers/<target>/ (commit them to
# Fixtures/fuzz-regressions/<target>/ once fixed: the tests replay that folder); the last status
# line of each run (executions, coverage) goes to Fuzz/<target>.log.
#
#   bash Scripts/fuzz.sh                 # every target, 10 minutes each, two at a time
#   SECONDS_EACH=60 bash Scripts/fuzz.sh header profile
set -euo pipefail
cd "$(dirname "$0")/.."
each="${SECONDS_EACH:-600}"
targets=("${@:-header profile compressed config index pt}")
read -r -a targets <<< "${targets[*]}"
scratch="${FUZZ_SCRATCH:-.build/fuzz}"
swift build -c debug --product moetool-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
  -Xswiftc -parse-as-library --scratch-path "$scratch" >/dev/null
bin="$scratch/debug/moetool-fuzz"
mkdir -p Fuzz
seed() {  # seed corpus for a target, from the fixtures
  local t="$1" dir="Fuzz/corpus/$1"
  mkdir -p "$dir"
  case "$t" in
    header) cp Fixtures/malformed/*.safetensors Fixtures/valid/*.safetensors "$dir"/ 2>/dev/null || true
            for f in Fixtures/models/*/model*.safetensors; do head -c 65536 "$f" > "$dir/$(echo "$f" | tr / _)"; done ;;
    profile) cp Fixtures/profiles/*.json Fixtures/profiles/*.csv Fixtures/profiles/*.zst Fixtures/profiles/malformed/* "$dir"/ ;;
    pt) find Fixtures/profiles/sglang -type f -exec cp {} "$dir"/ \;
        for f in Fixtures/profiles/sglang/*/*.pt; do  # bare pickles too: the target runs non-zip input as data.pkl
          python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); sys.stdout.buffer.write(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))' "$f" > "$dir/$(basename "$f").pkl" 2>/dev/null || rm -f "$dir/$(basename "$f").pkl"
        done ;;
    compressed) for f in Fixtures/models/mixtral-bf16/model.safetensors Fixtures/models/qwen3_moe-bf16/model.safetensors; do
                  [ -f "$dir/$(basename "$(dirname "$f")").stz" ] || .build/release/moetool compress "$f" "$dir/$(basename "$(dirname "$f")").stz" -q >/dev/null 2>&1 || true
                done ;;
    index) for f in Fixtures/models/*/model.safetensors.index.json Fixtures/malformed/checkpoints/*/model.safetensors.index.json; do
             [ -f "$f" ] && cp "$f" "$dir/$(echo "$f" | tr / _)"; done
           cp Fixtures/fuzz-regressions/index/* "$dir"/ ;;  # matching-seed.json fits the target's two shards
    config) cp Fixtures/models/*/config.json "$dir"/ 2>/dev/null || true
            for f in Fixtures/models/*/config.json; do cp "$f" "$dir/$(echo "$f" | tr / _)"; done ;;
  esac
}
run() {
  local t="$1"
  seed "$t"
  mkdir -p "Fuzz/crashers/$t"
  MOETOOL_FUZZ_TARGET="$t" ASAN_OPTIONS=detect_leaks=0 "$bin" "Fuzz/corpus/$t" -max_total_time="$each" \
    -artifact_prefix="Fuzz/crashers/$t/" -max_len=1048576 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    > "Fuzz/$t.log" 2>&1 || true
  echo "$t: $(grep -E '^#[0-9]+' "Fuzz/$t.log" | tail -1)"
  echo "$t: $(grep -E 'stat::number_of_executed_units|cov:' "Fuzz/$t.log" | tail -2 | tr '\n' ' ')"
  ls "Fuzz/crashers/$t" | sed "s|^|$t crasher: |"
}
[ -x .build/release/moetool ] || swift build -c release >/dev/null
i=0
for t in "${targets[@]}"; do
  run "$t" &
  i=$((i + 1))
  if [ $((i % 2)) -eq 0 ]; then wait; fi
done
wait
