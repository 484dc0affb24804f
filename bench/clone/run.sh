#!/usr/bin/env bash
# Clone time of one primary: relevo's own base backup (dist/src/postgres/basebackup-main.js)
# against pg_basebackup -X stream -c fast (what relevo runs), alternating, same data.
#   bash bench/clone/run.sh [SIZE_MB] [ROUNDS] [PORT]      (as root, under the heavy lock)
# A 15 primary (Debian) for the comparison, then a 17 primary (scripts/fetch-postgres.sh 17)
# with relevo's client only (Debian's pg_basebackup 15 refuses 17). Writes bench/results/clone-<stamp>.md.
set -euo pipefail
SIZE=${1:-200}; ROUNDS=${2:-3}; PORT=${3:-56160}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STAMP=$(date -u +%Y-%m-%dT%H-%M-%S); OUT=$ROOT/bench/results/clone-$STAMP.md
W=$(mktemp -d /tmp/relevo-clone-bench.XXXXXX); chmod 755 $W; chown postgres:postgres $W
BIN15=/usr/lib/postgresql/15/bin; BIN17=$(bash $ROOT/scripts/fetch-postgres.sh 17)
CUR=""
cleanup() { [ -n "$CUR" ] && su postgres -c "$CUR/pg_ctl -D $W/p -m immediate -w stop" >/dev/null 2>&1 || true; rm -rf $W; }
trap cleanup EXIT
PSQL="$BIN15/psql -h $W -p $PORT -U postgres -d postgres -qAt"
{ echo "# Clone time: relevo's own base backup vs pg_basebackup"; echo; echo "$STAMP UTC, ${SIZE} MB of table data, $ROUNDS rounds each, loopback, no TLS, fast checkpoint, fsync of every file by both."; echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)"; echo; echo "| server | client | round | data dir MB | seconds |"; echo "|---|---|---:|---:|---:|"; } > $OUT
primary() {
  CUR=$1
  rm -rf $W/p; su postgres -c "$1/initdb -D $W/p -A trust -U postgres >/dev/null"
  printf "port=$PORT\nlisten_addresses='127.0.0.1'\nunix_socket_directories='$W'\nwal_level=replica\nmax_wal_senders=5\nmax_wal_size=2GB\n" >> $W/p/postgresql.conf
  sed -i "1i host replication replicator 127.0.0.1/32 scram-sha-256" $W/p/pg_hba.conf
  su postgres -c "$1/pg_ctl -D $W/p -l $W/p.log -w start >/dev/null"
  su postgres -c "$PSQL -c \"CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'bench-pw'; SELECT pg_create_physical_replication_slot('r1', true); CREATE TABLE t AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, $((SIZE * 1024 * 1024 / 140))) g; CHECKPOINT;\"" >/dev/null
}
clone() { # server client round
  rm -rf $W/r; mkdir -m 700 $W/r; chown postgres:postgres $W/r; sync
  local start end
  start=$(date +%s.%N)
  if [ "$2" = relevo ]; then
    echo "{\"host\":\"127.0.0.1\",\"port\":$PORT,\"user\":\"replicator\",\"password\":\"bench-pw\",\"applicationName\":\"r1\",\"dataDir\":\"$W/r\",\"label\":\"bench\",\"fastCheckpoint\":true,\"showProgress\":false}" | su postgres -c "node $ROOT/dist/src/postgres/basebackup-main.js" >/dev/null
  else
    su postgres -c "PGPASSWORD=bench-pw $BIN15/pg_basebackup -h 127.0.0.1 -p $PORT -U replicator -D $W/r -X stream -S r1 -c fast --no-password"
  fi
  end=$(date +%s.%N)
  echo "| $1 | $2 | $3 | $(du -sm $W/r | cut -f1) | $(echo "$end - $start" | bc | xargs printf '%.2f') |" >> $OUT
}
primary $BIN15
for i in $(seq 1 $ROUNDS); do clone 15 relevo $i; clone 15 pg_basebackup $i; done
su postgres -c "$BIN15/pg_ctl -D $W/p -m fast -w stop >/dev/null"
primary $BIN17
for i in $(seq 1 $ROUNDS); do clone 17 relevo $i; done
su postgres -c "$BIN17/pg_ctl -D $W/p -m fast -w stop >/dev/null"; CUR=""
echo >> $OUT; echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT
cat $OUT
