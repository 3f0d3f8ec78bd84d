#!/usr/bin/env bash
# Builds compose.yaml's stack from images made on this machine and starts it: for a Debian 12
# host, as root, that reaches Debian's mirrors and PyPI but no image registry (CI).
#
#   scripts/compose-test.sh          build, start, wait until healthy, check, remove it all
#   scripts/compose-test.sh --keep   the same, but leave the stack running afterwards
#   scripts/compose-test.sh --down   only remove a stack left running (containers, volumes)
#
# Steps (each timed): install docker.io, docker-compose and debootstrap when missing; start
# dockerd when none runs (it keeps running afterwards; log in $STATE/dockerd.log); debootstrap
# a Debian 12 root (trusting the host's local CAs too) and import it as
# agritrace-local/base:bookworm (skipped when that image exists: delete it to rebuild); build
# the postgres, mosquitto and agritrace images of deploy/compose.local.yaml on it; `down -v`
# of anything an earlier run left; `up -d`; wait until init has finished and every service is
# healthy (or running, where it has no health check); print `docker-compose ps`; check that
# the ingest workers commit the simulator's readings; then scripts/compose_check.py: restarts
# of ingest-1 and mosquitto while the simulator sends, a verified scan with both witnesses, a
# bundle verified offline, every message receipted and logged once, `down`/`up` keeping the
# data. On exit, unless --keep, `down -v` removes the containers, the network and the volumes
# (the images stay, so the next run only rebuilds what changed).
#
# Environment: AGRITRACE_COMPOSE_STATE (default /var/tmp/agritrace-compose), DEBIAN_MIRROR,
# DEBIAN_SECURITY_MIRROR, DOCKERD_FLAGS (extra dockerd flags), AGRITRACE_COMPOSE_TIMEOUT
# (seconds a step may take before it fails, default 600), SIM_DURATION and SIM_SPEED (the
# simulator's wall time and scenario seconds per second: 3m and 600 here, 30m and 60 in
# compose.yaml; it must outlast the first checks), AGRITRACE_ADMIN_TOKEN (made up and kept in
# $STATE/admin-token when unset).
# Exit status 3: no Docker daemon could be started on this host (CI skips the stack then).
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
DOWN_ONLY=0
for arg in "$@"; do
  case $arg in
    --keep) KEEP=1 ;;
    --down) DOWN_ONLY=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "compose-test: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

STATE=${AGRITRACE_COMPOSE_STATE:-/var/tmp/agritrace-compose}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TIMEOUT=${AGRITRACE_COMPOSE_TIMEOUT:-600}
# The simulator: ten times compose.yaml's pace, so that hundreds of messages cross the
# restarts, for long enough to outlast the first checks by minutes.
export SIM_DURATION=${SIM_DURATION:-3m} SIM_SPEED=${SIM_SPEED:-600}
BASE_IMAGE=agritrace-local/base:bookworm  # the BASE build argument of deploy/compose.local.yaml
PROJECT=agritrace
mkdir -p "$STATE"

log() { echo "compose-test: $*" >&2; }

# compose refuses the files without an admin token (compose.yaml requires one); `--down` needs
# the same value only to read them, so one token is kept for every run.
if [ -z "${AGRITRACE_ADMIN_TOKEN:-}" ]; then
  if [ ! -s "$STATE/admin-token" ]; then
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/admin-token")
  fi
  AGRITRACE_ADMIN_TOKEN=$(cat "$STATE/admin-token")
fi
export AGRITRACE_ADMIN_TOKEN

compose() { docker-compose -p "$PROJECT" -f compose.yaml -f deploy/compose.local.yaml "$@"; }

TIMES=()
timed() {  # timed LABEL COMMAND...: runs the command, prints and records how long it took
  local label=$1 start=$SECONDS
  shift
  "$@" || return $?
  TIMES+=("$(printf '%-28s %4ds' "$label" $((SECONDS - start)))")
  log "$label: $((SECONDS - start))s"
}

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
}

# Without systemd (a VM started without it, a CI runner) nothing starts dockerd. Its defaults
# work on the Debian 12 VMs this was made on: the overlay2 storage driver (ext4 underneath),
# iptables rules for the bridge network and its NAT to the outside (iptables-nft), cgroup v1.
# DOCKERD_FLAGS adds flags where a host needs others, e.g. `--storage-driver=vfs` on a root
# that is itself an overlay, or `--iptables=false` without netfilter.
start_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  log "starting dockerd (log: $STATE/dockerd.log)"
  # shellcheck disable=SC2086  # DOCKERD_FLAGS is a list of flags
  setsid dockerd ${DOCKERD_FLAGS:-} >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -n 40 "$STATE/dockerd.log" >&2
  log "dockerd did not answer within 60 s"
  return 1
}

# A Debian 12 root made with debootstrap, imported as an image: what the public images would be
# built on, without a registry. Its Python (3.11) is Debian's.
build_base() {
  local root="$STATE/rootfs"
  if findmnt -rn -o TARGET | grep -q "^$root"; then
    log "$root has mounts left from an earlier run; unmount them first"
    return 1
  fi
  rm -rf "$root"
  log "debootstrap bookworm from $MIRROR (log: $STATE/debootstrap.log)"
  if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" \
    >"$STATE/debootstrap.log" 2>&1; then
    tail -n 40 "$STATE/debootstrap.log" >&2
    return 1
  fi
  cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
  # Packages installed in a build must not start their services (postgresql's and mosquitto's
  # install scripts would); Debian's official images carry the same policy.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  # The host's own certificate authorities, as the host trusts them: where outgoing TLS passes
  # through an inspecting proxy, pip in a build reaches PyPI only with its CA. A host without
  # local CAs copies nothing.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >&2
  fi
  chroot "$root" apt-get clean
  rm -rf "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/log/*.log "${root:?}"/dev/*
  # An imported image has no environment: without PATH, `ENV PATH=...:$PATH` in a Dockerfile
  # would lose the system's directories.
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

build_image() {  # build_image SERVICE: builds the image of a service (build log in $STATE)
  if ! compose build "$1" >"$STATE/build-$1.log" 2>&1; then
    tail -n 60 "$STATE/build-$1.log" >&2
    log "building $1 failed (log: $STATE/build-$1.log)"
    return 1
  fi
}

# Each service's state: NAME STATUS EXITCODE HEALTH (HEALTH "none" without a health check).
service_states() {
  local ids
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086  # one argument per container id
  docker inspect --format \
    '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
    $ids
}

# Until init has exited 0 and every other service is healthy (or running, without a health
# check); fails at once when a container has stopped.
wait_healthy() {
  local deadline=$((SECONDS + TIMEOUT)) services pending name status code health
  services=$(compose config --services)
  while :; do
    pending=()
    local states
    states=$(service_states)
    for name in $services; do
      read -r _ status code health < <(grep "^$name " <<<"$states" || echo "$name absent 0 none")
      if [ "$name" = init ]; then
        [ "$status" = exited ] && [ "$code" = 0 ] && continue
      elif [ "$health" = healthy ] || { [ "$health" = none ] && [ "$status" = running ]; }; then
        continue
      fi
      if [ "$status" = exited ] || [ "$status" = dead ]; then
        log "$name stopped (exit code $code)"
        return 1
      fi
      pending+=("$name:$status/$health")
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS > deadline)); then
      log "not ready after ${TIMEOUT}s: ${pending[*]}"
      return 1
    fi
    sleep 2
  done
}

http_get() {  # http_get URL [TOKEN]: the body, or fails (python3 comes with docker-compose)
  python3 - "$@" <<'EOF'
import sys, urllib.request

request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", f"Bearer {sys.argv[2]}")
with urllib.request.urlopen(request, timeout=10) as response:
    sys.stdout.write(response.read().decode())
EOF
}

ingest_accepted() {  # ingest_accepted SERVICE: the messages an ingest worker has committed
  compose exec -T "$1" python -c "import urllib.request as u
print(u.urlopen('http://127.0.0.1:8001/metrics', timeout=5).read().decode())" \
    | awk '$1 == "agritrace_ingest_accepted_total" { print int($2) }'
}

# The simulator's readings travel through mosquitto (its gateways' passwords and the ACL) to
# the ingest workers, which commit them to PostgreSQL: their counters and the log grow.
readings_arrive() {
  local deadline=$((SECONDS + 180)) one two entries
  while :; do
    one=$(ingest_accepted ingest-1 2>/dev/null || true)
    two=$(ingest_accepted ingest-2 2>/dev/null || true)
    entries=$(http_get http://127.0.0.1:8000/metrics 2>/dev/null \
      | awk '$1 == "agritrace_log_entries" { print int($2) }' || true)
    if [ $((${one:-0} + ${two:-0})) -gt 0 ] && [ "${entries:-0}" -gt 0 ]; then
      log "readings committed: ${one:-0} by ingest-1, ${two:-0} by ingest-2; the log holds $entries entries"
      return 0
    fi
    if ((SECONDS > deadline)); then
      log "no reading committed within 180 s (ingest-1 ${one:-?}, ingest-2 ${two:-?}, log ${entries:-?})"
      return 1
    fi
    sleep 3
  done
}

# ---- End-to-end checks -------------------------------------------------------------------
# Runs once the stack is healthy; the stack is up on this host (API on 127.0.0.1:8000, broker
# on 127.0.0.1:1883, $AGRITRACE_ADMIN_TOKEN set; `compose exec SERVICE ...` reaches inside).
# Add checks here, each a function that fails the run by returning non-zero.
end_to_end_checks() {
  timed "readings committed" readings_arrive
  # Restarts, a verified scan with both witnesses, a bundle verified offline, counts after the
  # simulator's end, down/up with the volumes kept (scripts/compose_check.py says each step).
  timed "end-to-end checks" python3 scripts/compose_check.py \
    --compose "docker-compose -p $PROJECT -f compose.yaml -f deploy/compose.local.yaml" \
    --up-at "$UP_AT" --within "$TIMEOUT"
}
# ------------------------------------------------------------------------------------------

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    compose ps >&2 || true
    compose logs --no-color --tail=60 >&2 || true
  fi
  log "times:"
  printf '  %s\n' "${TIMES[@]}" >&2
  if ((KEEP)); then
    log "the stack keeps running; remove it with: $0 --down"
  else
    compose down --volumes --remove-orphans >&2 || true
  fi
  exit "$rc"
}

timed "install packages" install_packages
if ! timed "start dockerd" start_dockerd; then
  log "no Docker daemon could be started on this host (see above); the stack was not tested"
  exit 3
fi
if ((DOWN_ONLY)); then
  compose down --volumes --remove-orphans
  exit 0
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "$BASE_IMAGE exists; not rebuilt"
  TIMES+=("$(printf '%-28s %5s' "base image (debootstrap)" cached)")
else
  timed "base image (debootstrap)" build_base
fi
timed "image postgres" build_image postgres
timed "image mosquitto" build_image mosquitto
timed "image agritrace" build_image init  # the image of every agritrace service

trap cleanup EXIT
# A clean start: what an earlier `--keep` run left (containers, volumes) would change the counts.
compose down --volumes --remove-orphans >&2
start=$SECONDS
UP_AT=$(date +%s)
compose up -d --no-build
wait_healthy
TIMES+=("$(printf '%-28s %4ds' "up to all healthy" $((SECONDS - start)))")
log "up to all healthy: $((SECONDS - start))s"
compose ps

end_to_end_checks
