#!/usr/bin/env bash
# Runs the whole test suite under AddressSanitizer and then ThreadSanitizer, each in its own build
# directory (a full rebuild each: about 10 minutes apiece on 2 cores). Exit status: 0 when both pass.
# Leak detection is off: the only leaks LeakSanitizer reports are XCTest's own test-runner objects.
#
#   bash Scripts/sanitizers.sh            # both
#   bash Scripts/sanitizers.sh address    # one of them
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for sanitizer in ${1:-address thread}; do
  echo "== swift test --sanitize=$sanitizer"
  if ASAN_OPTIONS=detect_leaks=0 swift test --sanitize="$sanitizer" --scratch-path ".build/sanitize-$sanitizer" 2>&1 | tee "/tmp/moetool-sanitize-$sanitizer.log" | grep -E "Test run|ERROR: |WARNING: ThreadSanitizer|SUMMARY: "; then :; fi
  if grep -qE "ERROR: AddressSanitizer|WARNING: ThreadSanitizer|SUMMARY: (Address|Thread)Sanitizer" "/tmp/moetool-sanitize-$sanitizer.log" \
     || ! grep -q "Test run with .* passed" "/tmp/moetool-sanitize-$sanitizer.log"; then
    echo "== $sanitizer: FAILED (full log: /tmp/moetool-sanitize-$sanitizer.log)"
    status=1
  else
    echo "== $sanitizer: passed"
  fi
done
exit $status
