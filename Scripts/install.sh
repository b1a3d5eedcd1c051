#!/usr/bin/env bash
# Installs moetool on a fresh Debian/Ubuntu machine with Swift 6: the system
# libraries it links (libzstd, json-c, libcrypto), a release build, and the binary in $PREFIX/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! pkg-config --exists libzstd json-c libcrypto 2>/dev/null; then
  as_root apt-get update
  as_root apt-get install -y --no-install-recommends libzstd-dev libjson-c-dev libssl-dev zlib1g-dev pkg-config
fi
swift build -c release
# $PREFIX/bin may not exist yet (PREFIX=~/.local on a fresh account): create it where we may.
if [ ! -d "$PREFIX/bin" ]; then mkdir -p "$PREFIX/bin" 2>/dev/null || as_root mkdir -p "$PREFIX/bin"; fi
if [ -w "$PREFIX/bin" ]; then install -m 755 .build/release/moetool "$PREFIX/bin/moetool"
else as_root install -m 755 .build/release/moetool "$PREFIX/bin/moetool"; fi
echo "installed $PREFIX/bin/moetool"
