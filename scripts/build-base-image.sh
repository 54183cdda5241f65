#!/usr/bin/env bash
# Provide the base images the Dockerfiles name, on a machine where no registry can be reached.
#
# For each of debian:bookworm-slim and the Dockerfile's PYTHON_IMAGE (python:3.11-slim-bookworm):
# use the local image if present, else pull it, else build an equivalent locally:
#   debian:bookworm-slim  <- debootstrap --variant=minbase bookworm, then `docker import`
#   python:3.11-slim-...  <- debian:bookworm-slim + Debian's python3 (3.11), venv and pip, `python` on PATH
# The stand-ins carry the label org.convzoo.base=local so they are never mistaken for the originals.
#
# Usage: scripts/build-base-image.sh [--force]
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), PULL_TIMEOUT_S (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

force=0
[ "${1:-}" = "--force" ] && force=1
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
pull_timeout=${PULL_TIMEOUT_S:-60}
debian_image=debian:bookworm-slim
python_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile | head -n1)
[ -n "$python_image" ] || { echo "no 'ARG PYTHON_IMAGE=' line in Dockerfile" >&2; exit 1; }

log() { printf '[base %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
have() { [ "$force" -eq 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
try_pull() { [ "$force" -eq 0 ] && timeout "$pull_timeout" docker pull -q "$1" >/dev/null 2>&1; }

build_debian() {
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    local rootfs
    rootfs=$(mktemp -d /var/tmp/convzoo-rootfs.XXXXXX)
    # Remove the rootfs however this function ends.
    trap 'rm -rf "'"$rootfs"'"' RETURN
    log "debootstrap bookworm (minbase) from $mirror"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; return 1; }
    rm -f "$rootfs.log"
    # Trim as the official slim image does: no apt lists, caches, docs or man pages.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
        "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
    log "docker import -> $debian_image"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'LABEL org.convzoo.base=local' \
        --change 'CMD ["bash"]' - "$debian_image" >/dev/null
}

build_python() {
    log "building $python_image on $debian_image"
    # Same layout as the official image where it matters: `python`, `python3` and `pip` on PATH,
    # the venv module available, UTF-8 locale, CA certificates.
    docker build --network host -q -t "$python_image" --label org.convzoo.base=local - >/dev/null <<'DOCKERFILE'
FROM debian:bookworm-slim
ENV LANG=C.UTF-8
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip ca-certificates netbase tzdata \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
DOCKERFILE
}

if have "$python_image" || try_pull "$python_image"; then
    log "$python_image present"
else
    if have "$debian_image" || try_pull "$debian_image"; then
        log "$debian_image present"
    else
        build_debian
    fi
    build_python
fi
# The load balancer's Dockerfile builds on plain Debian.
if ! { have "$debian_image" || try_pull "$debian_image"; }; then
    build_debian
fi
log "base images ready: $python_image, $debian_image"
