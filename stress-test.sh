#!/usr/bin/env bash
# Stress the task API with locust (stress/locustfile.py): users submit tasks and wait for each; every task's
# end-to-end latency is a locust request. Prints tasks/s, p50/p95/p99 and the failure rate; exits 1 when more than
# --max-failure-rate percent of the tasks failed. Reports (CSV + HTML) go to stress/reports/ (gitignored).
#
#   ./stress-test.sh                           start the test-bed cluster (root: network namespaces, cluster DNS,
#                                              1 bootstrap, 1 relay, 3 workers) and run against it
#   ./stress-test.sh --cluster                 run against the cluster ./deploy.sh deployed, in kubectl's current
#                                              context (--context NAME for another): a kubectl port-forward to
#                                              svc/p2p-bootstrap's API is started on a free local port and stopped
#                                              at the end
#   ./stress-test.sh --urls http://127.0.0.1:8080[,URL...]   run against task APIs you reach yourself
#
# Options (defaults): --users 20 (at most 500)  --spawn-rate 5  --run-time 60s (at most 30m)  --workers 3
#   --task-type compute  --payload 'sha256 2000 {user}-{n}'  --max-failure-rate 1.0 (percent)
#   --locust-workers 0 (N > 0: distributed locust, a master and N worker processes)  --runtime auto|process|podman
#   --targets services|all (test bed: submit to the bootstrap and relay Services, or to every node)
#   --reports DIR (stress/reports)
# Distributed over machines: see docs/deploy.md ("Stress tests").
set -euo pipefail
cd "$(dirname "$0")"

USERS=20
SPAWN_RATE=5
RUN_TIME=60s
WORKERS=3
URLS=""
TASK_TYPE=compute
PAYLOAD='sha256 2000 {user}-{n}'
MAX_FAIL=1.0
LOCUST_WORKERS=0
RUNTIME=auto
TARGETS=services
REPORTS=stress/reports
CLUSTER=0
KUBECTL=(kubectl)
NS=net-test

die() { printf 'stress-test.sh: %s\n' "$*" >&2; exit 2; }
while (( $# )); do
    case "$1" in
        --users) USERS="$2"; shift 2 ;;
        --spawn-rate) SPAWN_RATE="$2"; shift 2 ;;
        --run-time) RUN_TIME="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --urls) URLS="$2"; shift 2 ;;
        --task-type) TASK_TYPE="$2"; shift 2 ;;
        --payload) PAYLOAD="$2"; shift 2 ;;
        --max-failure-rate) MAX_FAIL="$2"; shift 2 ;;
        --locust-workers) LOCUST_WORKERS="$2"; shift 2 ;;
        --runtime) RUNTIME="$2"; shift 2 ;;
        --targets) TARGETS="$2"; shift 2 ;;
        --reports) REPORTS="$2"; shift 2 ;;
        --cluster) CLUSTER=1; shift ;;
        --context) KUBECTL=(kubectl --context "$2"); shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done

# Bounded load: a stress run must stop by itself and stay on this machine's scale.
[[ "$USERS" =~ ^[0-9]+$ ]] && (( USERS >= 1 && USERS <= 500 )) || die "--users must be 1..500"
[[ "$SPAWN_RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--spawn-rate must be a number"
[[ "$LOCUST_WORKERS" =~ ^[0-9]+$ ]] && (( LOCUST_WORKERS <= 8 )) || die "--locust-workers must be 0..8"
if [[ "$RUN_TIME" =~ ^([0-9]+)(s|m)?$ ]]; then
    secs=${BASH_REMATCH[1]}; [[ "${BASH_REMATCH[2]}" == m ]] && secs=$((secs * 60))
    (( secs >= 5 && secs <= 1800 )) || die "--run-time must be between 5s and 30m"
else
    die "--run-time looks like 60s or 2m"
fi

(( CLUSTER )) && [[ -n "$URLS" ]] && die "--cluster and --urls exclude each other"

# --cluster: a port-forward to the bootstrap Service's API for the length of the run (stopped on any exit).
PF_PID=""
stop_port_forward() {
    if [[ -n "$PF_PID" ]]; then
        kill "$PF_PID" 2>/dev/null || true
        wait "$PF_PID" 2>/dev/null || true
        echo "== port-forward stopped"
    fi
}
if (( CLUSTER )); then
    command -v kubectl >/dev/null || die "--cluster needs kubectl"
    CONTEXT=$("${KUBECTL[@]}" config current-context 2>/dev/null) || die "no current kubectl context"
    "${KUBECTL[@]}" -n "$NS" get service p2p-bootstrap >/dev/null 2>&1 \
        || die "no Service p2p-bootstrap in namespace $NS of context $CONTEXT: ./deploy.sh first"
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PF_LOG=$(mktemp)
    trap 'stop_port_forward; rm -f "$PF_LOG"' EXIT
    echo "== context $CONTEXT: kubectl -n $NS port-forward svc/p2p-bootstrap $PORT:8080"
    "${KUBECTL[@]}" -n "$NS" port-forward --address 127.0.0.1 svc/p2p-bootstrap "$PORT:8080" > "$PF_LOG" 2>&1 &
    PF_PID=$!
    for ((i = 0; i < 150; i++)); do  # 30 s at most
        if ! kill -0 "$PF_PID" 2>/dev/null; then
            PF_PID=""
            die "kubectl port-forward exited: $(tail -5 "$PF_LOG")"
        fi
        if python3 -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/readyz', timeout=2)" \
                2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    (( i < 150 )) || die "the bootstrap's API is not ready through the port-forward after 30 s: $(tail -5 "$PF_LOG")"
    URLS="http://127.0.0.1:$PORT"
fi

source scripts/setup-env.sh
if ! "$PY" -c "import locust" 2>/dev/null; then
    echo "== installing locust into $VENV"
    "$VENV/bin/pip" install -q locust
fi

mkdir -p "$REPORTS"
PREFIX="$REPORTS/$(date +%Y%m%d-%H%M%S)-$TASK_TYPE"
export P2P_TASK_TYPE="$TASK_TYPE" P2P_TASK_PAYLOAD="$PAYLOAD"
LOCUST=("$VENV/bin/locust" -f stress/locustfile.py --headless -u "$USERS" -r "$SPAWN_RATE" -t "$RUN_TIME"
        --stop-timeout 60 --csv "$PREFIX" --csv-full-history --html "$PREFIX.html" --only-summary
        --exit-code-on-error 0 --loglevel WARNING)

if (( LOCUST_WORKERS > 0 )); then
    # Distributed: a master (no load of its own) and N worker processes on this machine, the same roles as on many.
    RUNNER=(bash -c '
        set -euo pipefail
        n=$1; shift
        pids=()
        for ((i = 0; i < n; i++)); do
            "$0" -f stress/locustfile.py --worker --master-host 127.0.0.1 --loglevel WARNING &
            pids+=($!)
        done
        rc=0
        "$0" "$@" --master --master-bind-host 127.0.0.1 --expect-workers "$n" || rc=$?
        wait "${pids[@]}" || true
        exit $rc' "$VENV/bin/locust" "$LOCUST_WORKERS" "${LOCUST[@]:1}")
else
    RUNNER=("${LOCUST[@]}")
fi

t0=$SECONDS
if [[ -n "$URLS" ]]; then
    echo "== locust against $URLS: $USERS users, spawn rate $SPAWN_RATE/s, $RUN_TIME"
    P2P_API_URLS="$URLS" "${RUNNER[@]}"
else
    [[ $(id -u) -eq 0 ]] || die "the test-bed cluster needs root (network namespaces); or give --urls"
    echo "== locust against the test-bed cluster: $USERS users, spawn rate $SPAWN_RATE/s, $RUN_TIME, $WORKERS workers"
    "$PY" stress/bed.py --workers "$WORKERS" --runtime "$RUNTIME" --targets "$TARGETS" --timeout $((secs + 600)) \
        -- "${RUNNER[@]}"
fi
echo "== reports: $PREFIX.html, ${PREFIX}_stats.csv ($((SECONDS - t0)) s)"
rc=0
"$PY" stress/summary.py "$PREFIX" --max-failure-rate "$MAX_FAIL" || rc=$?
exit $rc
