#!/usr/bin/env bash
# Fresh-clone release build time of one or more commits, one after the other (never two at once).
#
# Usage: bash Benchmarks/build_time.sh COMMIT [COMMIT ...]
#
# Each commit is cloned from this repository into $WORK/<commit> (no .build), its packages resolved
# (from the local package cache; timed apart), then `swift build -c release` is timed with GNU time:
# wall, user and system seconds. The load average before and after is printed with each result: on a
# shared machine wall time follows the load, user+system CPU seconds much less.
#
# Environment:
#   WORK     where the clones go (default /tmp/moetool-build-time; removed first)
#
# Linux only (GNU time -f).

set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/tmp/moetool-build-time}"
[ $# -gt 0 ] || { echo "usage: build_time.sh COMMIT [COMMIT ...]" >&2; exit 2; }
rm -rf "$WORK"
mkdir -p "$WORK"
for commit in "$@"; do
    dir="$WORK/$commit"
    git clone -q "$REPO_ROOT" "$dir"
    git -C "$dir" checkout -q "$commit"
    ( cd "$dir"
      /usr/bin/time -f "resolve: %e s wall" swift package resolve > /dev/null
      load_before=$(cut -d' ' -f1-3 /proc/loadavg)
      /usr/bin/time -f "%e %U %S" -o "$dir/.time" swift build -c release > "$dir/.build.log" 2>&1 \
          || { tail -20 "$dir/.build.log"; exit 1; }
      read -r wall user sys < "$dir/.time"
      echo "$commit: release build ${wall} s wall, ${user} s user, ${sys} s system" \
           "(load before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg))" )
done
