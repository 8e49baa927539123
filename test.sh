#!/usr/bin/env bash
# Install everything the suite needs (system packages, a venv, the package with its Cython extensions, the go-libp2p
# daemon for interop tests) and run the whole suite. Usage:
#   ./test.sh                 install and run every test, then the benchmark regression gate
#   ./test.sh -k mdns         extra arguments go to pytest
#   ./test.sh --cluster       smoke tests against a deployed Kubernetes cluster (see k8s/)
set -euo pipefail
cd "$(dirname "$0")"
P2P_FAST_EXTRAS=test,stress P2P_FAST_FETCH_P2PD=1 P2P_FAST_BROWSER=1 source scripts/setup-env.sh

if [[ "${1:-}" == "--cluster" ]]; then
    shift
    exec "$PY" -m pytest -p no:cacheprovider tests/cluster_smoke "$@"
fi

# The pod image, so that the image tests and the pod test bed (tests/cluster) run the image itself rather than
# processes: ./build.sh on a full run (no pytest arguments) or when P2P_FAST_BUILD_IMAGE=1; P2P_FAST_BUILD_IMAGE=0
# leaves it out (the test bed then runs pods as processes and the image tests skip, saying why). About 6 min from
# nothing on our machines (debootstrap, apt and pip inside the build), under a minute with cached layers. A failed
# build fails the run: it is our product's image, not an optional extra.
build_image="${P2P_FAST_BUILD_IMAGE:-auto}"
if [[ "$build_image" == auto ]]; then
    build_image=0
    can_podman=0  # podman present, or installable (build.sh installs it as root)
    command -v podman >/dev/null && can_podman=1
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null && can_podman=1
    [[ $# -eq 0 && $can_podman == 1 ]] && build_image=1
fi
if [[ "$build_image" == 1 ]]; then
    echo "== pod image (./build.sh) =="
    mkdir -p .cache
    if ! ./build.sh > .cache/build-image.log 2>&1; then
        echo "./build.sh failed once; retrying (last lines below)" >&2
        tail -5 .cache/build-image.log >&2
        if ! ./build.sh > .cache/build-image.log 2>&1; then
            tail -40 .cache/build-image.log >&2
            echo "./build.sh failed (log: .cache/build-image.log)" >&2
            exit 1
        fi
    fi
    tail -1 .cache/build-image.log
fi
export P2P_FAST_BUILD_IMAGE=done  # built above or deliberately not; the image tests do not build it again

echo "== tests (extensions: compiled) =="
set +e
"$PY" -m pytest -p no:cacheprovider -ra --durations=15 "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "no tests were collected" >&2
    exit 1
fi
if [[ $rc -ne 0 ]]; then
    exit $rc
fi
if [[ -f bench/gate.py && $# -eq 0 ]]; then
    echo "== benchmark regression gate =="
    "$PY" bench/gate.py
fi
