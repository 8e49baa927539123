#!/usr/bin/env bash
# Deploy p2p-fast to the current kubectl context (namespace net-test), wait for the rollout, print the status.
#
#   ./deploy.sh                      the `local` overlay (kind, minikube): image localhost/p2p-fast:latest
#   ./deploy.sh production           k8s/overlays/production (set its image first)
#   ./deploy.sh path/to/overlay      any kustomization directory
#   ./deploy.sh local --no-load      do not load the image into the cluster (see below)
#   ./deploy.sh local --image IMG    deploy another image (e.g. registry/p2p-fast:1.2.3)
#   ./deploy.sh --delete [overlay]   remove what the overlay created (the bootstrap identity Secret stays;
#                                    --purge removes it too, so the bootstrap gets a new peer ID next time)
#   ./deploy.sh identity-key FILE    write a new libp2p Ed25519 identity key (what the Secret holds) to FILE
#
# The bootstrap keeps its peer ID through the Secret p2p-bootstrap-identity (one key per bootstrap pod,
# `p2p-bootstrap-<n>.key`, mounted at /var/lib/p2p-fast/identity.key). It is created on the first deploy and never
# replaced; keys for more bootstrap pods are added when the overlay asks for more. Options: --timeout 300s
# (rollout wait), --context NAME (kubectl context). Needs kubectl (with kustomize, v1.14+).
#
# On a kind context (kind-NAME) or a minikube one (minikube, or a profile `minikube profile list` names) the image
# the overlay uses is loaded into the cluster first when this machine's docker or podman has it: kind load
# docker-image (docker) or kind load image-archive (podman save), minikube image load; pods cannot pull an image
# that only exists here. A localhost/ image that is not built stops the deploy (./build.sh first). --load insists on
# loading (fails on other contexts), --no-load skips it.
set -euo pipefail
cd "$(dirname "$0")"

NS=net-test
SECRET=p2p-bootstrap-identity
OVERLAY=local
TIMEOUT=300s
IMAGE=""
LOAD=auto
DELETE=0
PURGE=0
KUBECTL=(kubectl)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

# A libp2p private key as py-libp2p (and so the node) stores it: the protobuf PrivateKey{Type: Ed25519, Data: seed}
# = 08 01 12 20 followed by a 32-byte seed. Any 32 random bytes are a valid Ed25519 seed.
identity_key() {
    local out="$1"
    ( umask 077; { printf '\010\001\022\040'; head -c 32 /dev/urandom; } > "$out" )
}

if [[ "${1:-}" == "identity-key" ]]; then
    [[ $# -eq 2 ]] || die "usage: ./deploy.sh identity-key FILE"
    identity_key "$2"
    exit 0
fi

while (( $# )); do
    case "$1" in
        --delete) DELETE=1; shift ;;
        --purge) PURGE=1; shift ;;
        --load) LOAD=1; shift ;;
        --no-load) LOAD=0; shift ;;
        --image) IMAGE="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --context) KUBECTL=(kubectl --context "$2"); shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) OVERLAY="$1"; shift ;;
    esac
done

if [[ -d "$OVERLAY" ]]; then DIR="$OVERLAY"; else DIR="k8s/overlays/$OVERLAY"; fi
[[ -f "$DIR/kustomization.yaml" ]] || die "no kustomization in $DIR (overlays: $(ls k8s/overlays | tr '\n' ' '))"
command -v kubectl >/dev/null || die "kubectl is not installed"
CONTEXT=$("${KUBECTL[@]}" config current-context 2>/dev/null) || die "no current kubectl context (kubectl config use-context ...)"
"${KUBECTL[@]}" version >/dev/null 2>&1 || die "the cluster of context '$CONTEXT' does not answer (kubectl version)"
log "context: $CONTEXT, overlay: $DIR"

render() {
    if [[ -z "$IMAGE" ]]; then
        "${KUBECTL[@]}" kustomize "$DIR"
        return
    fi
    # Another image: a throw-away overlay on top of the chosen one retags whatever image it uses.
    local tmp current
    tmp=$(mktemp -d)
    current=$("${KUBECTL[@]}" kustomize "$DIR" | awk '/^ *image: /{print $2; exit}')
    cat > "$tmp/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$tmp" "$DIR")
images:
  - name: ${current%:*}
    newName: ${IMAGE%:*}
    newTag: "$( [[ "$IMAGE" == *:* ]] && echo "${IMAGE##*:}" || echo latest )"
EOF
    "${KUBECTL[@]}" kustomize --load-restrictor LoadRestrictionsNone "$tmp"
    rm -rf "$tmp"
}

MANIFESTS=$(mktemp)
trap 'rm -f "$MANIFESTS"' EXIT
render > "$MANIFESTS"

if (( DELETE )); then
    log "deleting the objects of $DIR"
    "${KUBECTL[@]}" delete --ignore-not-found --wait=true -f "$MANIFESTS" | grep -v '^namespace' || true
    if (( PURGE )); then
        "${KUBECTL[@]}" -n "$NS" delete --ignore-not-found secret "$SECRET"
        "${KUBECTL[@]}" delete --ignore-not-found namespace "$NS"
    fi
    exit 0
fi

# kind-NAME -> "kind NAME"; a minikube profile -> "minikube PROFILE"; else nothing.
local_cluster() {
    if [[ "$CONTEXT" == kind-* ]]; then
        echo "kind ${CONTEXT#kind-}"
    elif [[ "$CONTEXT" == minikube ]]; then
        echo "minikube minikube"
    elif command -v minikube >/dev/null && minikube profile list -o json 2>/dev/null \
            | grep -q "\"Name\": *\"$CONTEXT\""; then
        echo "minikube $CONTEXT"
    fi
}

# Which engine on this machine has the image: docker, podman, or nothing.
image_engine() {
    if command -v docker >/dev/null && docker image inspect "$1" >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null && podman image exists "$1" 2>/dev/null; then
        echo podman
    fi
}

load_image() {
    local image cluster tool name engine archive
    image=$(awk '/^ *image: /{print $2; exit}' "$MANIFESTS")
    cluster=$(local_cluster)
    if [[ -z "$cluster" ]]; then
        if [[ "$LOAD" == 1 ]]; then
            die "--load knows kind and minikube contexts, not '$CONTEXT': push $image to a registry"
        fi
        log "context $CONTEXT is neither kind nor minikube: its nodes pull $image themselves"
        return
    fi
    read -r tool name <<< "$cluster"
    local how_docker="minikube image load" how_archive="minikube image load"
    [[ "$tool" == kind ]] && { how_docker="kind load docker-image"; how_archive="kind load image-archive"; }
    engine=$(image_engine "$image")
    if [[ -z "$engine" ]]; then
        if [[ "$image" == localhost/* ]]; then
            die "image $image is not built here and $tool cannot pull it: ./build.sh first"
        fi
        if [[ "$LOAD" == 1 ]]; then
            die "--load: image $image is not in docker or podman here"
        fi
        log "image $image is not in docker or podman here: the $tool cluster pulls it from its registry"
        return
    fi
    command -v "$tool" >/dev/null \
        || die "$CONTEXT is a $tool cluster but $tool is not installed: install it or load $image and --no-load"
    if [[ "$engine" == docker ]]; then
        log "loading $image (docker) into $tool cluster $name"
        case "$tool" in
            kind) kind load docker-image "$image" --name "$name" ;;
            minikube) minikube -p "$name" image load "$image" ;;
        esac
        log "loaded $image into $tool cluster $name ($how_docker)"
        return
    fi
    archive=$(mktemp --suffix=.tar)
    log "saving $image from podman to $archive"
    rm -f "$archive"
    podman save --format docker-archive -o "$archive" "$image" >/dev/null
    case "$tool" in
        kind) kind load image-archive "$archive" --name "$name" ;;
        minikube) minikube -p "$name" image load "$archive" ;;
    esac
    rm -f "$archive"
    log "loaded $image into $tool cluster $name ($how_archive from podman save)"
}

if [[ "$LOAD" != 0 ]]; then
    load_image
fi

# How many bootstrap pods the overlay runs: each needs its own key in the Secret.
BOOTSTRAPS=$(awk '
    /^---/ { kind = ""; name = ""; next }
    /^kind: / { kind = $2 }
    /^  name: / && name == "" { name = $2 }
    /^  replicas: / && kind == "StatefulSet" && name == "p2p-bootstrap" { print $2; exit }
' "$MANIFESTS")
BOOTSTRAPS=${BOOTSTRAPS:-1}

log "namespace $NS"
"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null

keydir=$(mktemp -d)
trap 'rm -f "$MANIFESTS"; rm -rf "$keydir"' EXIT
if ! "${KUBECTL[@]}" -n "$NS" get secret "$SECRET" >/dev/null 2>&1; then
    log "creating Secret $SECRET (bootstrap identities for $BOOTSTRAPS pod(s); kept across deploys)"
    args=()
    for ((i = 0; i < BOOTSTRAPS; i++)); do
        identity_key "$keydir/p2p-bootstrap-$i.key"
        args+=(--from-file="p2p-bootstrap-$i.key=$keydir/p2p-bootstrap-$i.key")
    done
    "${KUBECTL[@]}" -n "$NS" create secret generic "$SECRET" "${args[@]}" >/dev/null
    "${KUBECTL[@]}" -n "$NS" label secret "$SECRET" app.kubernetes.io/part-of=p2p-fast role=bootstrap >/dev/null
else
    for ((i = 0; i < BOOTSTRAPS; i++)); do
        key="p2p-bootstrap-$i.key"
        have=$("${KUBECTL[@]}" -n "$NS" get secret "$SECRET" -o "jsonpath={.data.${key//./\\.}}")
        if [[ -z "$have" ]]; then
            log "adding $key to Secret $SECRET"
            identity_key "$keydir/$key"
            b64=$(base64 -w0 < "$keydir/$key")
            "${KUBECTL[@]}" -n "$NS" patch secret "$SECRET" --type merge -p "{\"data\":{\"$key\":\"$b64\"}}" >/dev/null
        fi
    done
fi

log "applying $(grep -c '^kind:' "$MANIFESTS") objects"
"${KUBECTL[@]}" apply -f "$MANIFESTS"

log "waiting for the rollout (timeout $TIMEOUT each)"
for sts in p2p-bootstrap p2p-relay p2p-worker; do
    "${KUBECTL[@]}" -n "$NS" rollout status "statefulset/$sts" --timeout="$TIMEOUT"
done

log "status"
"${KUBECTL[@]}" -n "$NS" get pods -o wide -L role
"${KUBECTL[@]}" -n "$NS" get services,hpa,pdb
boot=$("${KUBECTL[@]}" -n "$NS" get pods -l role=bootstrap -o jsonpath='{.items[0].metadata.name}')
log "bootstrap $boot (through its console: echo status | ./p2p-node --config /app/config.yaml)"
"${KUBECTL[@]}" -n "$NS" exec "$boot" -- sh -c 'echo status | ./p2p-node --config /app/config.yaml' 2>/dev/null \
    | grep -E '^(role|peer id|peers|capabilities|ready):' || echo "(could not read the bootstrap's status)"
cat >&2 <<EOF
== next
  ./test.sh --cluster                      smoke tests against this deployment
  ./stress-test.sh --cluster               locust against this deployment (its own port-forward)
  kubectl -n $NS exec <pod> -- p2p-node doctor --config /app/config.yaml   a pod's way into the network
EOF
