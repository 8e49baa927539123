# Sourced by ./test.sh and ./run.sh: make this machine able to build and run p2p-fast, idempotently.
# Sets PY (the venv's python) and VENV. Installs Debian packages when run as root and they are missing.

VENV="${P2P_FAST_VENV:-$PWD/.venv}"

_need_pkgs=()
for pair in "gcc:build-essential" "ip:iproute2" "iptables:iptables" "dnsmasq:dnsmasq-base" "tc:iproute2" "unzip:unzip" \
            "protoc:protobuf-compiler"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || _need_pkgs+=("$pkg")
done
# The dashboard's browser test (tests/ui): Debian's Chromium and its WebDriver, and a font (only recommended by
# chromium, and --no-install-recommends below). ./test.sh asks for them; ./run.sh does not need them.
if [[ "${P2P_FAST_BROWSER:-0}" == 1 ]]; then
    for pair in "chromium:chromium" "chromedriver:chromium-driver"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || _need_pkgs+=("${pair#*:}")
    done
    [[ -d /usr/share/fonts/truetype/dejavu ]] || _need_pkgs+=(fonts-dejavu-core)
fi
[[ -e /usr/include/gmp.h || -e /usr/include/x86_64-linux-gnu/gmp.h || -e /usr/include/aarch64-linux-gnu/gmp.h ]] || _need_pkgs+=(libgmp-dev)
if (( ${#_need_pkgs[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing system packages: ${_need_pkgs[*]} =="
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${_need_pkgs[@]}" >/dev/null
    else
        echo "warning: missing system packages (${_need_pkgs[*]}); install them as root" >&2
    fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "== creating venv $VENV =="
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip setuptools wheel Cython
fi
PY="$VENV/bin/python"

_stamp="$VENV/.p2p-fast-installed"
_extras="${P2P_FAST_EXTRAS:-test}"  # ./test.sh adds stress: the stress-test script's own tests run locust
_hash=$(echo "$_extras"; cat pyproject.toml setup.py p2p_fast/_ext/*.pyx 2>/dev/null | sha256sum | cut -d' ' -f1)
if [[ ! -f "$_stamp" || "$(cat "$_stamp")" != "$_hash" ]]; then
    echo "== installing p2p-fast and its test dependencies =="
    "$VENV/bin/pip" install -q -e ".[$_extras]"
    echo "$_hash" > "$_stamp"
fi
# Build the Cython extensions in place (the editable install imports from the source tree); a failure is an error.
P2P_FAST_REQUIRE_EXTENSIONS=1 "$PY" setup.py -q build_ext --inplace >/dev/null

# The go-libp2p daemon for interop tests (from the hivemind wheel on PyPI; only the binary is extracted).
if [[ "${P2P_FAST_FETCH_P2PD:-0}" == 1 && -x scripts/fetch-p2pd.sh ]]; then
    scripts/fetch-p2pd.sh || echo "warning: could not fetch the go-libp2p daemon; interop tests will skip" >&2
fi
export PATH="$VENV/bin:$PATH"
