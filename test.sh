#!/usr/bin/env bash
# Install everything the suite needs (system packages, a venv, the package with its Cython extensions, the go-libp2p
# daemon for interop tests) and run the whole suite. Usage:
#   ./test.sh                 install and run every test, then the benchmark regression gate
#   ./test.sh -k mdns         extra arguments go to pytest
#   ./test.sh --cluster       smoke tests against a deployed Kubernetes cluster (see k8s/)
set -euo pipefail
cd "$(dirname "$0")"
P2P_FAST_FETCH_P2PD=1 source scripts/setup-env.sh

if [[ "${1:-}" == "--cluster" ]]; then
    shift
    exec "$PY" -m pytest -p no:cacheprovider tests/cluster_smoke "$@"
fi

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
