#!/usr/bin/env bash
# The test suite: unit tests, then integration tests on real PostgreSQL and a real store.
#   bash scripts/test.sh          # everything in the default suite
#   bash scripts/test.sh unit     # unit tests only (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser test needs Debian's Chromium; relevo itself does not.
if [ "${1:-all}" = unit ]; then bash scripts/ensure-env.sh; else bash scripts/ensure-env.sh chromium; fi
which=${1:-all}
case "$which" in
  unit|integration|all) ;;
  *) echo "usage: scripts/test.sh [unit|integration|all]" >&2; exit 2 ;;
esac
status=0
# Unit tests start no server: two files at a time, one per core.
if [ "$which" != integration ]; then
  node --test --test-concurrency=2 --test-reporter=spec dist/test/unit/*.test.js || status=$?
fi
# Integration tests start real servers: run files one at a time so they don't fight for 2 cores.
if [ "$which" != unit ]; then
  node --test --test-concurrency=1 --test-reporter=spec dist/test/integration/*.test.js || status=$?
fi
exit "$status"
