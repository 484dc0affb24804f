#!/usr/bin/env bash
# Builds the npm package (relevo-<version>.tgz) into DEST (default: the current directory).
# The package carries npm-shrinkwrap.json, a copy of package-lock.json: an installation gets
# exactly the dependency versions the tests ran with (and can install from the npm cache offline).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
dest="$(cd "${1:-.}" && pwd)"
cd "$here"
cp package-lock.json npm-shrinkwrap.json
trap 'rm -f "$here/npm-shrinkwrap.json"' EXIT
npm pack --pack-destination "$dest" --loglevel=error
