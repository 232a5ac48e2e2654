#!/usr/bin/env bash
# Prepares a Docker Engine for the docker provider's tests, idempotently: installs
# Debian's docker.io and busybox-static when missing, starts dockerd when nothing answers,
# builds the small local base images the tests use, and starts Debian's docker-registry on
# 127.0.0.1:5000 for the kubernetes target's tests (dockerd treats 127.0.0.0/8 registries
# as insecure, so no TLS is needed):
#   berth-test/busybox:1  FROM scratch + static busybox (sh, httpd, nc, ...)
#   berth-test/node:20    the machine's node binary, its shared libraries and busybox
# Safe to run concurrently: one run at a time holds a lock.
set -euo pipefail

LOG=${BERTH_DOCKERD_LOG:-/var/log/berth-dockerd.log}
exec 9>/tmp/berth-docker-test-env.lock
flock 9

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker >/dev/null || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v docker-registry >/dev/null || missing+=(docker-registry)
# The registry that requires authentication (tests/common/auth_registry.rs) gets a bcrypt
# htpasswd file made with python's bcrypt.
/usr/bin/python3 -c 'import bcrypt' 2>/dev/null || missing+=(python3-bcrypt)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# busybox-static replaces a dynamic busybox at the same path; make sure it is static.
if ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic'; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq busybox-static >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: $LOG)"
  # fd 9 (the lock) must not be inherited: dockerd would hold it for its lifetime.
  setsid nohup dockerd >>"$LOG" 2>&1 < /dev/null 9>&- &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see $LOG" >&2; tail -n 20 "$LOG" >&2; exit 1; }
fi

# What earlier runs left behind when they ended before their own clean-up (a killed run, a
# test whose clean-up ran too early): every org has a bridge network, and an engine has
# ranges for about 30, after which it refuses new networks. Only what is older than an hour
# goes, so a run beside this one keeps its own.
docker container prune -f --filter label=berth.owner --filter until=1h >/dev/null
docker network prune -f --filter label=berth.owner --filter until=1h >/dev/null
docker image prune -af --filter label=berth.owner --filter until=1h >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect berth-test/busybox:1 >/dev/null 2>&1; then
  echo "building berth-test/busybox:1"
  mkdir -p "$work/busybox"
  cp /bin/busybox "$work/busybox/busybox"
  cat > "$work/busybox/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /usr/bin /etc && chmod 1777 /tmp && echo 'nobody:x:65534:65534:nobody:/:/bin/sh' > /etc/passwd
ENV PATH=/usr/local/bin:/usr/bin:/bin
DOCKERFILE
  docker build -q -t berth-test/busybox:1 "$work/busybox" >/dev/null 2>&1
fi

if ! docker image inspect berth-test/node:20 >/dev/null 2>&1; then
  echo "building berth-test/node:20"
  node=$(readlink -f "$(command -v node)")
  root="$work/node"
  mkdir -p "$root/bin" "$root/usr/bin" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  cp "$node" "$root/usr/bin/node"
  # The loader and every shared library node links against, at their own paths.
  for lib in $(ldd "$node" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  echo 'nobody:x:65534:65534:nobody:/:/bin/sh' > "$root/etc/passwd"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'CMD ["/bin/sh"]' - berth-test/node:20 >/dev/null
fi
REGISTRY_LOG=${BERTH_REGISTRY_LOG:-/var/log/berth-registry.log}
if ! curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; then
  echo "starting docker-registry on 127.0.0.1:5000 (log: $REGISTRY_LOG)"
  mkdir -p /var/lib/berth-test-registry
  cat > /etc/berth-test-registry.yml <<'YAML'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/berth-test-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
  setsid nohup docker-registry serve /etc/berth-test-registry.yml >>"$REGISTRY_LOG" 2>&1 < /dev/null 9>&- &
  for _ in $(seq 1 30); do
    curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null && break
    sleep 1
  done
  curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ || { echo "docker-registry did not come up; see $REGISTRY_LOG" >&2; tail -n 20 "$REGISTRY_LOG" >&2; exit 1; }
fi
echo "docker test environment ready"
