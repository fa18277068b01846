#!/usr/bin/env bash
# The project's own Docker daemon: Debian's docker.io, run as root with everything it keeps
# (images, containers, its containerd, its socket, its pid file) under .loom/docker, no bridge
# and no iptables rules (containers use --network host). It never touches a system daemon or
# /var/run/docker.sock.
#   scripts/dockerd.sh up      install docker.io if missing, start the daemon unless it answers
#   scripts/dockerd.sh down    stop the daemon this project started (by its pid file)
#   scripts/dockerd.sh status  exit 0 when the daemon answers
#   scripts/dockerd.sh host    print the DOCKER_HOST of the daemon (unix://...)
# Other scripts: `export DOCKER_HOST=$(scripts/dockerd.sh host)`.
# With LOOM_DOCKER_HOST set (e.g. unix:///var/run/docker.sock on a workstation), that daemon is
# used instead: `up` only checks that it answers and `down` leaves it alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${LOOM_DOCKER_STATE:-$ROOT/.loom/docker}"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
START_TIMEOUT_S="${LOOM_DOCKERD_START_TIMEOUT_S:-60}"
STOP_TIMEOUT_S="${LOOM_DOCKERD_STOP_TIMEOUT_S:-60}"

log() { printf '[dockerd] %s\n' "$*" >&2; }

# A unix socket path must fit in 108 bytes (containerd's own sockets live below exec-root):
# when the checkout's path is long, both go below /run under a name derived from it.
short_dir() { printf '/run/loom-docker-%s' "$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"; }
if [ "${#STATE}" -le 60 ]; then
  SOCK="$STATE/docker.sock"
  EXEC_ROOT="$STATE/exec"
else
  SOCK="$(short_dir)/docker.sock"
  EXEC_ROOT="$(short_dir)/exec"
fi
export DOCKER_HOST="unix://$SOCK"

answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

our_pid() {
  # The pid in our pid file, if that process is a dockerd that is still alive.
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q dockerd "/proc/$pid/comm" 2>/dev/null || return 1
  printf '%s' "$pid"
}

install() {
  command -v dockerd >/dev/null && command -v containerd >/dev/null && command -v docker >/dev/null && return 0
  [ "$(id -u)" -eq 0 ] || { log "docker.io is missing and only root can install it"; exit 1; }
  log "installing Debian's docker.io (once)"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    docker.io >/dev/null
}

up() {
  if answers; then return 0; fi
  [ "$(id -u)" -eq 0 ] || { log "the daemon runs as root: run this as root"; exit 1; }
  install
  mkdir -p "$STATE/data" "$EXEC_ROOT" "$(dirname "$SOCK")"
  # Its own (empty) config file: /etc/docker/daemon.json of the machine does not apply.
  [ -f "$STATE/daemon.json" ] || printf '{}\n' >"$STATE/daemon.json"
  log "starting dockerd ($DOCKER_HOST, data in $STATE/data)"
  setsid dockerd \
    --config-file "$STATE/daemon.json" \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --data-root "$STATE/data" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
    -H "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
  local pid=$! deadline=$((SECONDS + START_TIMEOUT_S))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited; the end of $LOG:"; tail -n 20 "$LOG" >&2; exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "dockerd did not answer within ${START_TIMEOUT_S}s; the end of $LOG:"; tail -n 20 "$LOG" >&2
      kill "$pid" 2>/dev/null || true; exit 1
    fi
    sleep 0.2
  done
  log "up: $(docker version --format 'engine {{.Server.Version}}'), storage $(docker info --format '{{.Driver}}')"
}

down() {
  local pid
  pid="$(our_pid)" || { rm -f "$PIDFILE"; return 0; }
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while [ -d "/proc/$pid" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "dockerd did not stop within ${STOP_TIMEOUT_S}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; break
    fi
    sleep 0.2
  done
  # dockerd leaves its default network namespace bind-mounted below exec-root
  if mountpoint -q "$EXEC_ROOT/netns/default" 2>/dev/null; then umount "$EXEC_ROOT/netns/default" || true; fi
  rm -f "$PIDFILE" "$SOCK"
}

if [ -n "${LOOM_DOCKER_HOST:-}" ]; then
  export DOCKER_HOST="$LOOM_DOCKER_HOST"
  case "${1:-up}" in
    up) answers || { log "no Docker daemon answers at $DOCKER_HOST (LOOM_DOCKER_HOST)"; exit 1; } ;;
    down) ;;
    status) answers ;;
    host) printf '%s\n' "$DOCKER_HOST" ;;
    *) echo "usage: $0 up|down|status|host" >&2; exit 2 ;;
  esac
  exit 0
fi

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) answers ;;
  host) printf '%s\n' "$DOCKER_HOST" ;;
  *) echo "usage: $0 up|down|status|host" >&2; exit 2 ;;
esac
