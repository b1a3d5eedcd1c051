# Shared by the benchmark scripts (source it): `run NAME CMD...` runs CMD $RUNS times and prints its median wall
# seconds and largest peak RSS (MiB), leaving the median in milliseconds in RESULT_<NAME with non-alphanumerics as _>;
# before each run it removes the paths in the array CLEAN and syncs, so every run writes from scratch.
# `ratio A B` prints A / B with two decimals.
run() {
  local name="$1"; shift
  local times=() rss=0
  for _ in $(seq "$RUNS"); do
    rm -rf "${CLEAN[@]}"
    sync
    local start end kb
    start=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$WORK/rss" "$@" > /dev/null 2> "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    end=$(date +%s%N)
    kb=$(tail -1 "$WORK/rss")
    times+=("$(( (end - start) / 1000000 ))")
    [ "$kb" -gt "$rss" ] && rss="$kb"
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  printf '%-40s %8.3f %10.1f\n' "$name" "$(echo "$median / 1000" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
  eval "RESULT_${name//[^a-zA-Z0-9]/_}=$median"
}
ratio() { echo "scale=2; $1 / $2" | bc -l; }
