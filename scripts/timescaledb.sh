#!/usr/bin/env bash
# TimescaleDB for local development and tests: PostgreSQL 17 + timescaledb from Debian trixie
# in a debootstrap chroot, listening on 127.0.0.1:$LOOM_TSDB_PORT. Built once, reused after.
#   scripts/timescaledb.sh up      build if missing, start if stopped, create the database
#   scripts/timescaledb.sh down    stop the cluster
#   scripts/timescaledb.sh status  exit 0 when the extension answers
set -euo pipefail

ROOT="${LOOM_TSDB_ROOT:-/var/lib/loom/tsdb-root}"
PORT="${LOOM_TSDB_PORT:-5433}"
DB="${LOOM_TSDB_DB:-loom}"
PG_VERSION=17

log() { printf '[timescaledb] %s\n' "$*" >&2; }

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

psql_root() { in_root su postgres -c "PGOPTIONS=--client-min-messages=warning psql -X -q -v ON_ERROR_STOP=1 -p $PORT $*"; }

mirror() {
  # The machine's own Debian mirror, read from its apt sources (never written into the repo).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
  fi
  [ -n "$uri" ] || { log "no Debian mirror found in the apt sources"; exit 1; }
  printf '%s' "$uri"
}

ensure_proc() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
}

build() {
  [ -x "$ROOT/usr/lib/postgresql/$PG_VERSION/bin/postgres" ] && \
    [ -f "$ROOT/usr/share/postgresql/$PG_VERSION/extension/timescaledb.control" ] && return 0
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    log "debootstrap trixie into $ROOT (once)"
    rm -rf "$ROOT"; mkdir -p "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$(mirror)" >/dev/null
  fi
  ensure_proc
  # no daemons may start inside the chroot during package installation
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
  log "installing postgresql-$PG_VERSION and timescaledb in the chroot"
  in_root apt-get update -qq
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "postgresql-$PG_VERSION" "postgresql-$PG_VERSION-timescaledb" locales-all >/dev/null
}

configure() {
  local conf="$ROOT/etc/postgresql/$PG_VERSION/main"
  [ -d "$conf" ] || in_root pg_createcluster "$PG_VERSION" main >/dev/null
  mkdir -p "$conf/conf.d"
  cat > "$conf/conf.d/loom.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
shared_buffers = 256MB
synchronous_commit = on
# loopback only: TLS would cost CPU on both ends of every connection and protect nothing
ssl = off
# the load harness reads when each event's row became visible (pg_xact_commit_timestamp)
track_commit_timestamp = on
CONF
  if ! grep -q 'loom-local' "$conf/pg_hba.conf"; then
    # local development database on loopback only: trust, as the machine's own PostgreSQL does
    printf 'host all all 127.0.0.1/32 trust # loom-local\n' > "$conf/pg_hba.conf.new"
    cat "$conf/pg_hba.conf" >> "$conf/pg_hba.conf.new"
    mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
  fi
}

running() { in_root pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -qx online; }

start() {
  ensure_proc
  mkdir -p "$ROOT/run/postgresql"; in_root chown postgres:postgres /run/postgresql
  if ! running; then
    log "starting PostgreSQL $PG_VERSION on 127.0.0.1:$PORT"
    in_root pg_ctlcluster "$PG_VERSION" main start
  fi
  for _ in $(seq 1 60); do
    in_root su postgres -c "pg_isready -q -h 127.0.0.1 -p $PORT" && break
    sleep 0.5
  done
  psql_root "-tAc \"SELECT 1 FROM pg_database WHERE datname='$DB'\"" | grep -q 1 || psql_root "-c 'CREATE DATABASE $DB'"
  psql_root "-d $DB -c 'CREATE EXTENSION IF NOT EXISTS timescaledb'" >/dev/null
}

case "${1:-up}" in
  up) build; configure; start; log "ready: postgresql://postgres@127.0.0.1:$PORT/$DB" ;;
  down) if [ -d "$ROOT/etc/postgresql" ] && running; then in_root pg_ctlcluster "$PG_VERSION" main stop -m fast; fi ;;
  status) running && psql_root "-d $DB -tAc \"SELECT extversion FROM pg_extension WHERE extname='timescaledb'\"" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
