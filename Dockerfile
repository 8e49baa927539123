# syntax=docker/dockerfile:1
# p2p-fast pod image: one program, `p2p-node`, whose role comes from the mounted config (/app/config.yaml).
#
#   ./build.sh                                   docker where an engine runs, else podman (see docs/deploy.md)
#   docker build -t p2p-fast:latest .            base python:3.11-slim
#   podman build --build-arg BASE_IMAGE=localhost/p2p-fast-base:bookworm ...   a debootstrap'ed Debian bookworm
#
# Two stages: `build` compiles the wheels (the Cython extensions in p2p_fast/_ext and fastecdsa, which has no
# wheel for 3.11 and needs gcc + libgmp-dev) into a venv; `runtime` gets that venv, Python and libgmp, nothing else.
# The runtime runs as uid 10001, writes only to the data dir (/var/lib/p2p-fast) and /tmp (so it works with a
# read-only root filesystem), runs under tini (PID 1 reaps the task pool's children; the node handles SIGTERM)
# and reports health through /healthz.
#
# BASE_IMAGE must be Debian-based with apt: python:3.11-slim (Python in /usr/local) or plain Debian bookworm
# (Python 3.11 from Debian's python3 package, installed here when the base has no python3).

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN set -eux; \
    pkgs="build-essential libgmp-dev ca-certificates"; \
    command -v python3 >/dev/null || pkgs="$pkgs python3 python3-dev python3-venv"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*
# An optional CA bundle (build secret `ca_bundle`) for builders behind a TLS-intercepting proxy; absent elsewhere.
RUN --mount=type=secret,id=ca_bundle \
    set -eux; \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade pip setuptools wheel "Cython>=3.0"
WORKDIR /src
# Dependencies first (their wheels change less often than our code): the list comes from pyproject.toml.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca_bundle \
    set -eux; \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt; \
    /opt/venv/bin/pip wheel --wheel-dir /wheels -r /tmp/requirements.txt
COPY setup.py README.md LICENSE ./
COPY p2p_fast ./p2p_fast
# P2P_FAST_REQUIRE_EXTENSIONS: a failed Cython compile fails the build instead of shipping the pure-Python twins.
RUN set -eux; \
    P2P_FAST_REQUIRE_EXTENSIONS=1 /opt/venv/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .; \
    /opt/venv/bin/pip install --no-index --find-links /wheels p2p-fast; \
    /opt/venv/bin/pip uninstall -y Cython setuptools wheel pip; \
    cd / && /opt/venv/bin/python -c "import p2p_fast._ext as e; assert e.EXTENSIONS_ACTIVE, e.COMPILED; print('compiled:', e.COMPILED)"; \
    find /opt/venv/lib -path '*/p2p_fast/_ext/*' \( -name '*.pyx' -o -name '*.pxd' -o -name '*.c' \) -delete

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    pkgs="tini libgmp10"; \
    command -v python3 >/dev/null || pkgs="$pkgs python3"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log; \
    groupadd --gid 10001 p2p; \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /bin/bash p2p; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/p2p-fast; \
    install -d -m 0755 /app /app/configs
COPY --from=build /opt/venv /opt/venv
COPY node/bootstrap.yaml node/relay.yaml node/worker.yaml /app/configs/
COPY node/worker.yaml /app/config.yaml
# `./p2p-node --config /app/config.yaml` from /app, as the system's description shows it.
RUN ln -s /opt/venv/bin/p2p-node /app/p2p-node \
    && /opt/venv/bin/p2p-node --help >/dev/null
# P2P_DATA_DIR: the data dir of a config without node.data_dir (the system description's YAML has none), so
# `docker run -v $(pwd)/config.yaml:/app/config.yaml IMAGE` writes to the volume below, not under the root-owned /app.
ENV PATH=/opt/venv/bin:$PATH \
    P2P_DATA_DIR=/var/lib/p2p-fast \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    P2P_FAST_HEALTH_URL=http://127.0.0.1:8080/healthz
WORKDIR /app
# A declared volume: docker and podman give each container an anonymous volume here, created from this directory
# (owned by uid 10001), so a plain `docker run` has a writable data dir; Kubernetes mounts its own volume here.
VOLUME ["/var/lib/p2p-fast"]
USER 10001:10001
# 4001: libp2p (TCP); 8080: /healthz /readyz /metrics and the /v1 API.
EXPOSE 4001/tcp 8080/tcp
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['P2P_FAST_HEALTH_URL'], timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["p2p-node", "--config", "/app/config.yaml"]
