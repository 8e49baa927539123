#!/usr/bin/env bash
# Start a local p2p-fast network on 127.0.0.1 — 1 bootstrap, 1 relay, 3 workers — show that the nodes see each
# other, run tasks through it, and keep it running until Ctrl-C. Sets itself up on a fresh machine (venv, package).
#   ./run.sh            run until Ctrl-C
#   ./run.sh --once     run the demo, then stop everything and exit (0 when it all worked)
#   ./run.sh --workers 5
#   ./run.sh --quiet    no demo tasks every 5 s (they keep the dashboard at <node>/ui moving)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-env.sh
exec "$PY" scripts/local_network.py "$@"
