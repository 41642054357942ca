#!/bin/sh
# Builds the self-contained restore-shim bundle (docs/shim-bundle.md) from the compiled tree.
#   scripts/build-shim-bundle.sh OUT_DIR [--no-strip] [--node PATH]
# Compiles first (npm run build) unless LOCKMIG_SKIP_BUILD=1.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [--no-strip] [--node PATH]" >&2; exit 2; }
out=$1; shift
[ "${LOCKMIG_SKIP_BUILD:-0}" = 1 ] || npm run build >&2
exec node dist/src/bundle/build.js --out "$out" "$@"
