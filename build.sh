#!/usr/bin/env bash
# Build the p2p-fast pod image (Dockerfile).
#
#   ./build.sh                      docker where a Docker engine answers, else podman (set up here, see below)
#   ./build.sh --engine podman      force an engine
#   ./build.sh --tag p2p-fast:dev   image name (default: $P2P_FAST_IMAGE or localhost/p2p-fast:latest)
#   ./build.sh --base IMAGE         base image (default: python:3.11-slim with docker; with podman a Debian bookworm
#                                   made by debootstrap from Debian's mirror and cached, for machines without a
#                                   container registry)
#   ./build.sh --save FILE.tar      also write the image to an archive (`kind load image-archive`, `podman load`)
#   ./build.sh --no-cache           rebuild every layer
#
# podman without a Docker engine (as on our CI machines): runc as the runtime (crun fails on hybrid cgroups there),
# cgroupfs, low default ulimits and `--network host` for RUN steps, through a containers.conf in the cache dir
# ($P2P_FAST_CACHE, default .cache/p2p-fast) that CONTAINERS_CONF points to. Missing Debian packages (podman, runc,
# debootstrap) are installed when running as root.
set -euo pipefail
cd "$(dirname "$0")"

IMAGE="${P2P_FAST_IMAGE:-localhost/p2p-fast:latest}"
ENGINE="${P2P_FAST_ENGINE:-}"
BASE=""
SAVE=""
EXTRA=()
CACHE="${P2P_FAST_CACHE:-$PWD/.cache/p2p-fast}"
LOCAL_BASE="localhost/p2p-fast-base:bookworm"
SUITE="bookworm"

while (( $# )); do
    case "$1" in
        --engine) ENGINE="$2"; shift 2 ;;
        --tag) IMAGE="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --save) SAVE="$2"; shift 2 ;;
        --no-cache) EXTRA+=(--no-cache); shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '== %s\n' "$*" >&2; }

apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "build.sh: need the Debian packages: $* (install them as root)" >&2
        exit 1
    fi
    log "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

debian_mirror() {
    # The machine's own Debian mirror (deb822 or one-line sources), else deb.debian.org.
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [[ -n "$uri" ]] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    echo "${uri:-http://deb.debian.org/debian}"
}

setup_podman() {
    local need=()
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    (( ${#need[@]} )) && apt_install "${need[@]}"
    mkdir -p "$CACHE"
    if [[ -z "${CONTAINERS_CONF:-}" ]]; then
        cat > "$CACHE/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
        export CONTAINERS_CONF="$CACHE/containers.conf"
    fi
}

make_local_base() {
    # A minimal Debian bookworm root filesystem as a base image, cached in podman's store and as a tarball.
    if podman image exists "$LOCAL_BASE"; then
        return
    fi
    local tarball="$CACHE/base-$SUITE-minbase.tar"
    if [[ ! -s "$tarball" ]]; then
        command -v debootstrap >/dev/null || apt_install debootstrap
        local mirror rootfs t0=$SECONDS
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        log "debootstrap --variant=minbase $SUITE from $mirror (once; cached in $tarball)"
        debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" > "$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        # Small and reproducible enough: no apt lists, no caches, no logs.
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
               "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
        log "debootstrap done in $((SECONDS - t0)) s"
    fi
    log "importing $tarball as $LOCAL_BASE"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
}

# What goes into the image (the files .dockerignore lets through), hashed: stored as a label so tests can tell a
# stale image from one built from this tree (tests/cluster/podcluster.py computes the same digest).
source_digest() {
    { printf '%s\n' pyproject.toml setup.py README.md
      find p2p_fast node -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' \
          ! -name '*.pyc' ! -name '*.so' ! -name '*.c'
    } | LC_ALL=C sort | while IFS= read -r f; do
        printf '%s  %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
    done | sha256sum | cut -d' ' -f1
}
LABEL=(--label "p2p-fast.source-digest=$(source_digest)")

if [[ -z "$ENGINE" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        ENGINE=podman
    fi
fi

SECRET=()
# Hand the machine's CA bundle to pip inside the build (a build secret, never stored in a layer): needed behind
# TLS-intercepting proxies, harmless elsewhere.
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [[ -s "$ca" ]]; then SECRET=(--secret "id=ca_bundle,src=$ca"); break; fi
done

t0=$SECONDS
case "$ENGINE" in
    docker)
        BASE="${BASE:-python:3.11-slim}"
        log "docker build $IMAGE (base $BASE)"
        DOCKER_BUILDKIT=1 docker build --build-arg "BASE_IMAGE=$BASE" "${SECRET[@]}" "${LABEL[@]}" "${EXTRA[@]}" -t "$IMAGE" .
        [[ -n "$SAVE" ]] && docker save -o "$SAVE" "$IMAGE"
        ;;
    podman)
        setup_podman
        if [[ -z "$BASE" ]]; then
            make_local_base
            BASE="$LOCAL_BASE"
        fi
        log "podman build $IMAGE (base $BASE)"
        # --format docker keeps HEALTHCHECK (the OCI format has no field for it).
        podman build --network host --format docker --layers --build-arg "BASE_IMAGE=$BASE" \
            "${SECRET[@]}" "${LABEL[@]}" "${EXTRA[@]}" -t "$IMAGE" .
        [[ -n "$SAVE" ]] && { rm -f "$SAVE"; podman save --format docker-archive -o "$SAVE" "$IMAGE"; }
        ;;
    *) echo "build.sh: unknown engine $ENGINE (docker or podman)" >&2; exit 2 ;;
esac
log "built $IMAGE with $ENGINE in $((SECONDS - t0)) s"
