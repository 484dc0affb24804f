#!/usr/bin/env bash
# Installs what relevo needs on a fresh Debian 12 machine, only when missing:
# Debian packages (PostgreSQL 15, etcd, plus any named as arguments), npm
# packages from the lockfile, and the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || packages+=(postgresql-15)
command -v etcd >/dev/null 2>&1 || packages+=(etcd-server)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || packages+=("$extra")
done
if [ ${#packages[@]} -gt 0 ]; then
  echo "relevo: installing Debian packages: ${packages[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi

if [ -L node_modules ]; then
  # A shared node_modules (a symlink): `npm ci` would empty the directory it points to for
  # every checkout using it. Only say so; whoever owns it installs.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "relevo: node_modules is a shared link ($(readlink node_modules)) older than package-lock.json; not reinstalling through it" >&2
  fi
elif [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "relevo: installing npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test bench tsconfig.json package-lock.json -newer "$stamp" -print -quit)" ]; then
  echo "relevo: building" >&2
  npx tsc -p tsconfig.json >&2
  touch "$stamp"
fi
