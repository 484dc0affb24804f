#!/usr/bin/env bash
# Builds the npm package (relevo-<version>.tgz) into DEST (default: the current directory).
#   scripts/pack.sh [DEST] [--prebuilt]   --prebuilt: dist/ was just built from these sources (the
#   test suite's package test), so npm's prepack compile is skipped.
# The package carries npm-shrinkwrap.json, a copy of package-lock.json: an installation gets
# exactly the dependency versions the tests ran with (and can install from the npm cache offline).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
prebuilt=
args=()
for a in "$@"; do [ "$a" = --prebuilt ] && prebuilt=--ignore-scripts || args+=("$a"); done
dest="$(cd "${args[0]:-.}" && pwd)"
cd "$here"
cp package-lock.json npm-shrinkwrap.json
trap 'rm -f "$here/npm-shrinkwrap.json"' EXIT
npm pack $prebuilt --pack-destination "$dest" --loglevel=error
