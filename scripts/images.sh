#!/usr/bin/env bash
# Every service image from the one deploy/Dockerfile (the list is deploy/services.toml), on the
# project's own Docker daemon (scripts/dockerd.sh; started here and stopped at exit unless it was
# already running). Idempotent: the layers are cached in the daemon's data root under .loom/docker.
#   scripts/images.sh            build every image, check each, print its size
#   scripts/images.sh NAME...    only these services (names as in services.toml)
# The base image: $LOOM_BASE_IMAGE if set, else the official python:3.11-slim-bookworm when it is
# present or can be pulled, else a local one made once from a debootstrap bookworm minbase rootfs
# (Debian's Python 3.11) imported with `docker import`. The package index comes from the
# machine's pip configuration (global.index-url), passed as a build argument.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OFFICIAL_BASE="python:3.11-slim-bookworm"
LOCAL_BASE="${LOOM_LOCAL_BASE_IMAGE:-loom/python-base:3.11-bookworm}"
ROOTFS="${LOOM_BASE_ROOTFS:-$ROOT/.loom/images/bookworm-rootfs}"
PULL_TIMEOUT_S="${LOOM_PULL_TIMEOUT_S:-60}"
BUILD_TIMEOUT_S="${LOOM_BUILD_TIMEOUT_S:-900}"
LOGS="$ROOT/.loom/images"
mkdir -p "$LOGS"

log() { printf '[images] %s\n' "$*" >&2; }

# --------------------------------------------------------------------------- the daemon
DOCKER_HOST="$(bash "$ROOT/scripts/dockerd.sh" host)"
export DOCKER_HOST
export DOCKER_BUILDKIT=0 # the legacy builder: no BuildKit frontend image to fetch
if ! bash "$ROOT/scripts/dockerd.sh" status; then
  bash "$ROOT/scripts/dockerd.sh" up
  trap 'bash "$ROOT/scripts/dockerd.sh" down' EXIT
fi

# --------------------------------------------------------------------------- the base image
mirror() {
  # The machine's own Debian mirror, read from its apt sources (never written into the repo).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
  [ -n "$uri" ] || { log "no Debian mirror found in the apt sources"; exit 1; }
  printf '%s' "$uri"
}

local_base() {
  docker image inspect "$LOCAL_BASE" >/dev/null 2>&1 && return 0
  if [ ! -f "$ROOTFS/.debootstrap-done" ]; then
    command -v debootstrap >/dev/null || {
      apt-get -o DPkg::Lock::Timeout=300 update -qq
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
    }
    log "debootstrap bookworm minbase + Python 3.11 into $ROOTFS (once)"
    rm -rf "$ROOTFS"
    mkdir -p "$ROOTFS"
    debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates,passwd \
      bookworm "$ROOTFS" "$(mirror)" >"$ROOTFS.log" 2>&1 || {
      log "debootstrap failed; the end of $ROOTFS.log:"; tail -n 20 "$ROOTFS.log" >&2; exit 1
    }
    touch "$ROOTFS/.debootstrap-done"
  fi
  # This machine's extra certificate authorities (e.g. of an egress proxy), so that builds on
  # top of this base reach the package index as the machine does. They stay in this local image.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" /usr/sbin/update-ca-certificates >/dev/null 2>&1
  fi
  log "importing $ROOTFS as $LOCAL_BASE"
  tar -C "$ROOTFS" -c \
    --exclude=./.debootstrap-done --exclude=./var/lib/apt/lists/* --exclude=./var/cache/apt/* \
    --exclude=./usr/share/doc/* --exclude=./usr/share/man/* --exclude=./usr/share/locale/* \
    --exclude=./usr/share/info/* --exclude=./var/log/* --exclude=./debootstrap \
    --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      --message "debootstrap bookworm minbase + python3 (Debian), made by scripts/images.sh" \
      - "$LOCAL_BASE" >/dev/null
}

pick_base() {
  if [ -n "${LOOM_BASE_IMAGE:-}" ]; then printf '%s' "$LOOM_BASE_IMAGE"; return; fi
  if docker image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 ||
    timeout "$PULL_TIMEOUT_S" docker pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    printf '%s' "$OFFICIAL_BASE"; return
  fi
  log "$OFFICIAL_BASE cannot be pulled: using the local base $LOCAL_BASE"
  local_base
  printf '%s' "$LOCAL_BASE"
}

# --------------------------------------------------------------------------- the services
services() {
  # name image dir package module port, one service a line, from deploy/services.toml
  python3 - "$@" <<'PY'
import sys, tomllib
wanted = set(sys.argv[1:])
with open("deploy/services.toml", "rb") as f:
    services = tomllib.load(f)["service"]
unknown = wanted - {s["name"] for s in services}
if unknown:
    sys.exit(f"unknown services: {sorted(unknown)}")
for s in services:
    if not wanted or s["name"] in wanted:
        print(s["name"], s["image"], s["dir"].split("/", 1)[1], s["package"], s["module"], s["port"])
PY
}

index_args=()
index_url="$(pip config get global.index-url 2>/dev/null || true)"
case "$index_url" in
  http://* | https://*) index_args=(--build-arg "PIP_INDEX_URL=$index_url" --build-arg "UV_INDEX_URL=$index_url") ;;
esac

BASE="$(pick_base)"
log "base image: $BASE"
lines="$(services "$@")"
started=$SECONDS
while read -r name image dir package module port; do
  t0=$SECONDS
  log "building $image ($name)"
  if ! timeout "$BUILD_TIMEOUT_S" docker build --network host -f deploy/Dockerfile -t "$image:latest" \
    --build-arg "BASE_IMAGE=$BASE" --build-arg "SERVICE=$dir" --build-arg "PACKAGE=$package" \
    --build-arg "MODULE=$module" --build-arg "PORT=$port" "${index_args[@]}" . >"$LOGS/$name.build.log" 2>&1; then
    log "building $image failed; the end of $LOGS/$name.build.log:"; tail -n 30 "$LOGS/$name.build.log" >&2; exit 1
  fi
  # Runs as non-root, and imports its application (every runtime dependency installed) with a
  # read-only root filesystem.
  user="$(docker image inspect -f '{{.Config.User}}' "$image:latest")"
  case "$user" in "" | root | 0 | 0:*) log "$image runs as root (USER '$user')"; exit 1 ;; esac
  timeout 60 docker run --rm --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
    --entrypoint python "$image:latest" -c "import importlib, importlib.util as u; m = '$module'; \
importlib.import_module(m + '.app' if u.find_spec(m + '.app') else m)" ||
    { log "$image: importing $module(.app) fails (read-only root, no capabilities)"; exit 1; }
  size="$(docker image inspect -f '{{.Size}}' "$image:latest")"
  awk -v i="$image:latest" -v s="$size" -v u="$user" -v t=$((SECONDS - t0)) \
    'BEGIN { printf "%-24s %5.0f MB  user %s  built in %ss\n", i, s / 1e6, u, t }'
done <<<"$lines"
# The legacy builder's cache is its untagged intermediate images: keep a week of them.
docker image prune -f --filter until=168h >/dev/null
log "done in $((SECONDS - started))s"
