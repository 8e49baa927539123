#!/usr/bin/env bash
# Fetch the go-libp2p daemon (`p2pd`) used by the interop tests, idempotently, and print its path.
#
# The binary ships inside the PyPI wheel hivemind==1.1.12 (hivemind/hivemind_cli/p2pd, linux x86_64). We download
# the wheel without its dependencies and extract only that one file; hivemind itself is never installed.
#
#   P2PD_CACHE   cache directory (default: <repo>/.cache/p2pd); the binary lands at $P2PD_CACHE/p2pd
#   PY           python with pip to download with (default: the repo's .venv, else python3)
#
# Exits 0 at once, printing the path, when the binary is already there. Exits non-zero (and prints why on stderr)
# when it cannot be fetched; ./test.sh then carries on and the interop tests skip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${P2PD_CACHE:-$ROOT/.cache/p2pd}"
BIN="$CACHE/p2pd"
WHEEL_SPEC="hivemind==1.1.12"
MEMBER="hivemind/hivemind_cli/p2pd"

if [[ -x "$BIN" && -s "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *)
        echo "fetch-p2pd: $WHEEL_SPEC ships p2pd for Linux x86_64 only (this is $(uname -s)-$(uname -m))" >&2
        exit 1
        ;;
esac

if [[ -n "${PY:-}" && -x "${PY:-}" ]]; then
    python="$PY"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    python="$ROOT/.venv/bin/python"
else
    python="$(command -v python3)"
fi

mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --only-binary: never fall back to the sdist (preparing its metadata would try to build the daemon with Go).
if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 \
        --dest "$work" "$WHEEL_SPEC" >"$work/pip.log" 2>&1; then
    echo "fetch-p2pd: pip download $WHEEL_SPEC failed:" >&2
    tail -n 20 "$work/pip.log" >&2
    exit 1
fi

"$python" - "$work" "$MEMBER" "$BIN" <<'PY'
import glob, os, shutil, sys, zipfile

work, member, dest = sys.argv[1:4]
wheels = glob.glob(os.path.join(work, "hivemind-*.whl"))
if not wheels:
    sys.exit("fetch-p2pd: no hivemind wheel was downloaded")
with zipfile.ZipFile(wheels[0]) as zf:
    try:
        info = zf.getinfo(member)
    except KeyError:
        sys.exit(f"fetch-p2pd: {member} is not in {os.path.basename(wheels[0])}")
    tmp = os.path.join(work, "p2pd.part")
    with zf.open(info) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)  # atomic: a concurrent or interrupted run never leaves a half-written binary
PY

echo "$BIN"
