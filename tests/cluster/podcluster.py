"""A Kubernetes-like cluster on one machine, built on the network test bed (``testing.testbed``).

What k8s/ deploys, emulated closely enough to test the network's behaviour in it:

- one network namespace per pod (``p2p-bootstrap-0``, ``p2p-relay-0``, ``p2p-worker-<n>``) on a bridge, like a
  pod network;
- cluster DNS (dnsmasq): ``p2p-bootstrap.net-test.svc.cluster.local`` and ``p2p-relay...`` (a Service; here its A
  records are the pods' addresses instead of a virtual ClusterIP), the headless ``p2p-worker...`` with one A record
  per live worker pod (published before the pod is ready, as ``publishNotReadyAddresses`` does), per-pod names
  ``p2p-worker-<n>.p2p-worker...``, and the pods' search domains;
- every pod runs the image's entrypoint ``p2p-node --config /app/config.yaml`` with the ConfigMap content from
  k8s/base/config/<role>.yaml, and the bootstrap's identity from a "Secret" (a key file made like ./deploy.sh makes
  it). Runtime ``podman``: the image built by ./build.sh, with the pod's security settings (uid 10001, read-only
  root, no capabilities, no new privileges, memory/pids limits), in the pod's namespace. Runtime ``process``: the
  same entrypoint and config as a process in the pod's namespace. ``auto`` picks podman when the image is present
  and built from the current source tree, else processes;
- a StatefulSet's life: scale workers up and down (DNS follows), kill a pod (SIGKILL), restart it (same name, same
  data dir, same identity), cut it off the network and plug it back in; outsiders on hosts behind NAT routers.

Used by tests/cluster and by ./stress-test.sh (stress/bed.py). Needs root (see ``testing.testbed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import httpx

from testing.testbed import Host, NatRouter, Testbed, call_in_netns, wait_until
from testing.testbed.process import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "k8s" / "base" / "config"
DOMAIN = "net-test.svc.cluster.local"
BOOTSTRAP_SVC, RELAY_SVC, WORKER_SVC = "p2p-bootstrap", "p2p-relay", "p2p-worker"
DEFAULT_IMAGE = os.environ.get("P2P_FAST_IMAGE", "localhost/p2p-fast:latest")
P2P_PORT, HTTP_PORT = 4001, 8080
POD_DATA_DIR = "/var/lib/p2p-fast"
SOURCE_LABEL = "p2p-fast.source-digest"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


# --- the image ------------------------------------------------------------------------------------------------------

def source_digest(repo: Path = REPO) -> str:
    """A digest of what goes into the image (the files .dockerignore lets through); ./build.sh computes the same
    in bash and stores it as the image label ``p2p-fast.source-digest``, so a stale image can be told apart."""
    files = ["pyproject.toml", "setup.py", "README.md"]
    for top in ("p2p_fast", "node"):
        for path in (repo / top).rglob("*"):
            rel = path.relative_to(repo).as_posix()
            if not path.is_file() or "__pycache__" in path.parts or ".egg-info" in rel:
                continue
            if path.suffix in (".pyc", ".so", ".c"):
                continue
            files.append(rel)
    lines = "".join(f"{hashlib.sha256((repo / f).read_bytes()).hexdigest()}  {f}\n" for f in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def containers_conf_path() -> Path:
    """A containers.conf for podman on our machines (runc, cgroupfs, low ulimits), as ./build.sh writes it."""
    env = os.environ.get("CONTAINERS_CONF")
    if env:
        return Path(env)
    path = Path(os.environ.get("P2P_FAST_CACHE", REPO / ".cache" / "p2p-fast")) / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINERS_CONF)
    return path


def podman(*args: str, check: bool = True, timeout: float = 60, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(containers_conf_path())}
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def image_problem(image: str = DEFAULT_IMAGE) -> str | None:
    """None when ``image`` exists in podman's store and was built from this source tree; else why not."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    if os.geteuid() != 0:
        return "podman pods need root here"
    try:
        proc = podman("image", "inspect", "--format", "{{json .Labels}}", image, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman does not answer: {exc}"
    if proc.returncode != 0:
        return f"image {image} is not built (./build.sh)"
    labels = json.loads(proc.stdout or "null") or {}
    if labels.get(SOURCE_LABEL) != source_digest():
        return f"image {image} was built from other sources than this tree (./build.sh rebuilds it)"
    return None


def choose_runtime(runtime: str = "auto", image: str = DEFAULT_IMAGE) -> tuple[str, str]:
    """("podman" | "process", why). ``auto``: podman when the image is there and fresh; env P2P_FAST_POD_RUNTIME
    overrides ``auto``."""
    runtime = os.environ.get("P2P_FAST_POD_RUNTIME", runtime) if runtime == "auto" else runtime
    if runtime == "process":
        return "process", "asked for processes"
    problem = image_problem(image)
    if runtime == "podman":
        if problem:
            raise RuntimeError(f"pods cannot run as containers: {problem}")
        return "podman", f"image {image}"
    return ("process", problem) if problem else ("podman", f"image {image}")


def make_identity_key(path: Path) -> Path:
    """A libp2p Ed25519 private key file exactly as ./deploy.sh makes one for the bootstrap Secret."""
    proc = subprocess.run([str(REPO / "deploy.sh"), "identity-key", str(path)], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"deploy.sh identity-key failed: {proc.stderr}")
    return path


# --- pods -----------------------------------------------------------------------------------------------------------

class Pod:
    """One pod: a network namespace (kept for the pod's whole life, like its name) and the node running in it."""

    def __init__(self, cluster: PodCluster, name: str, role: str, host: Host) -> None:
        self.cluster = cluster
        self.name = name
        self.role = role
        self.host = host
        self.ip = host.ip
        self.dir = cluster.workdir / name
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "config.yaml"
        self.proc: ManagedProcess | None = None  # process runtime
        self.container: str | None = None  # podman runtime
        self.restarts = -1

    def __repr__(self) -> str:
        return f"<Pod {self.name} {self.ip} {'running' if self.running else 'stopped'}>"

    @property
    def ordinal(self) -> int:
        return int(self.name.rsplit("-", 1)[1])

    @property
    def fqdn(self) -> str:
        svc = {"bootstrap": BOOTSTRAP_SVC, "relay": RELAY_SVC, "worker": WORKER_SVC}[self.role]
        return f"{self.name}.{svc}.{DOMAIN}"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{HTTP_PORT}"

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def start(self) -> Pod:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        shutil.copyfile(CONFIG_DIR / f"{self.role}.yaml", self.config_path)  # the ConfigMap
        with suppress(FileNotFoundError):
            (self.data_dir / "node.json").unlink()  # a dead pod's runtime file must not look like a live node
        key = self.cluster.identity_key(self) if self.role == "bootstrap" else None
        self.restarts += 1
        if self.cluster.runtime == "podman":
            self._start_container(key)
        else:
            self._start_process(key)
        return self

    def _start_process(self, key: Path | None) -> None:
        if key is not None:  # the Secret, mounted at <data_dir>/identity.key in the pod
            shutil.copyfile(key, self.data_dir / "identity.key")
            os.chmod(self.data_dir / "identity.key", 0o400)
        exe = Path(sys.executable).with_name("p2p-node")
        entry = [str(exe)] if exe.exists() else [sys.executable, "-m", "p2p_fast"]
        argv = [*entry, "--config", str(self.config_path), "--data-dir", str(self.data_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = self.host.spawn(argv, name=f"{self.name}.{self.restarts}", env=env, cwd=str(self.dir))

    def _start_container(self, key: Path | None) -> None:
        name = f"{self.cluster.bed.id}-{self.name}"
        podman("rm", "-f", "--ignore", name, check=False)
        os.chmod(self.dir, 0o755)
        argv = [
            "run", "-d", "--name", name, "--network", f"ns:/run/netns/{self.host.ns}",
            "--hostname", self.name, "--no-healthcheck",
            # the pod's securityContext and limits (k8s/base)
            "--user", "10001:10001", "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
            "--memory", "1g", "--pids-limit", "512",
            "--tmpfs", "/tmp:rw,size=64m",
            "-v", f"{self.data_dir}:{POD_DATA_DIR}:U",
            "-v", f"{self.config_path}:/app/config.yaml:ro",
            "-v", f"/etc/netns/{self.host.ns}/resolv.conf:/etc/resolv.conf:ro",
            "--label", f"p2p-fast.testbed={self.cluster.bed.id}",
        ]
        if key is not None:
            argv += ["-v", f"{key}:{POD_DATA_DIR}/identity.key:ro"]
        argv += [self.cluster.image, "p2p-node", "--config", "/app/config.yaml"]
        podman(*argv)
        self.container = name

    def stop(self, grace: float = 15.0) -> int | None:
        """Graceful stop: SIGTERM, SIGKILL after ``grace`` seconds (the pod's terminationGracePeriodSeconds)."""
        if self.container:
            podman("stop", "-t", str(int(grace)), self.container, check=False, timeout=grace + 30)
            code = self._container_exit_code()
            self._remove_container()
            return code
        if self.proc is not None and self.proc.running:
            return self.proc.terminate(timeout=grace)
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        """kill -9 everything in the pod (a crashed node, an OOM kill, a node failure)."""
        if self.container:
            podman("kill", "-s", "KILL", self.container, check=False)
            self._remove_container()
        elif self.proc is not None and self.proc.running:
            self.proc.kill()

    def restart(self) -> Pod:
        self.stop()
        return self.start()

    def _container_exit_code(self) -> int | None:
        proc = podman("inspect", "--format", "{{.State.ExitCode}}", self.container or "", check=False)
        return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else None

    def _remove_container(self) -> None:
        if self.container:
            with suppress(Exception):
                log = podman("logs", self.container, check=False).stderr
                (self.dir / f"container.{self.restarts}.log").write_text(log)
            podman("rm", "-f", "--ignore", self.container, check=False)
            self.container = None

    @property
    def running(self) -> bool:
        if self.container:
            proc = podman("inspect", "--format", "{{.State.Running}}", self.container, check=False)
            return proc.stdout.strip() == "true"
        return self.proc is not None and self.proc.running

    def logs(self, lines: int = 40) -> str:
        if self.container:
            proc = podman("logs", "--tail", str(lines), self.container, check=False)
            return f"--- {self.name} (container) ---\n{proc.stdout}{proc.stderr}"
        return self.proc.tail(lines) if self.proc else f"--- {self.name}: never started ---"

    # -- the network ----------------------------------------------------------------------------------------------
    def cut_off(self) -> None:
        """Unplug the pod's link: it keeps running, nothing gets in or out (a network partition)."""
        self.host.link_down()

    def reconnect(self) -> None:
        self.host.link_up()

    # -- the node's HTTP API (from inside the pod's namespace) --------------------------------------------------
    def _http(self, method: str, path: str, timeout: float = 10, **kw: Any) -> httpx.Response:
        def call() -> httpx.Response:
            # The client's sockets must be created inside the namespace: a fresh client per call.
            with httpx.Client(base_url=self.url, timeout=timeout) as client:
                return client.request(method, path, **kw)

        return call_in_netns(self.host.ns, call, timeout=timeout + 5)

    def get(self, path: str, timeout: float = 10, **kw: Any) -> Any:
        r = self._http("GET", path, timeout=timeout, **kw)
        r.raise_for_status()
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

    def post(self, path: str, body: Any, timeout: float = 30, **kw: Any) -> httpx.Response:
        return self._http("POST", path, timeout=timeout, json=body, **kw)

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")

    def peer_ids(self) -> set[str]:
        return {p["peer_id"] for p in self.get("/v1/peers")}

    @property
    def peer_id(self) -> str:
        return self.status()["peer_id"]

    def is_ready(self) -> bool:
        try:
            return self._http("GET", "/readyz", timeout=3).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def wait_ready(self, timeout: float = 60) -> Pod:
        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"{self.name} is not running:\n{self.logs()}")
            return self.is_ready()

        try:
            wait_until(ready, timeout, what=f"{self.name} to be ready (/readyz)", interval=0.25,
                       ignore=(httpx.HTTPError, OSError))
        except Exception as exc:
            raise type(exc)(f"{exc}\n{self.logs()}") from None
        return self


# --- the cluster ----------------------------------------------------------------------------------------------------

class PodCluster:
    """Pods of the three StatefulSets on one test bed; see the module docstring."""

    def __init__(self, bed: Testbed, workdir: Path, *, runtime: str = "auto", image: str = DEFAULT_IMAGE) -> None:
        self.bed = bed
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.image = image
        self.runtime, self.runtime_reason = choose_runtime(runtime, image)
        self.pods: dict[str, Pod] = {}
        self.replicas: dict[str, int] = {"bootstrap": 0, "relay": 0, "worker": 0}
        self._keys: dict[str, Path] = {}
        self.dns = bed.dns or bed.add_dns({})

    # -- building -----------------------------------------------------------------------------------------------
    def deploy(self, workers: int = 3, relays: int = 1, bootstraps: int = 1, timeout: float = 90) -> PodCluster:
        """What ./deploy.sh does: bootstrap, relay and worker StatefulSets; waits until every pod is ready."""
        self.scale("bootstrap", bootstraps, wait=False)
        for pod in self.role_pods("bootstrap"):
            pod.wait_ready(timeout)
        self.scale("relay", relays, wait=False)
        self.scale("worker", workers, wait=False)
        for pod in self.live_pods():
            pod.wait_ready(timeout)
        return self

    def identity_key(self, pod: Pod) -> Path:
        """The bootstrap Secret's key for this pod (made once, like ./deploy.sh does, then reused)."""
        if pod.name not in self._keys:
            secrets = self.workdir / "secret-p2p-bootstrap-identity"
            secrets.mkdir(exist_ok=True)
            self._keys[pod.name] = make_identity_key(secrets / f"{pod.name}.key")
            os.chmod(self._keys[pod.name], 0o444)  # the container user reads it (defaultMode 0440 + fsGroup)
        return self._keys[pod.name]

    def _pod(self, role: str, ordinal: int) -> Pod:
        name = f"p2p-{role}-{ordinal}"
        if name not in self.pods:
            self.pods[name] = Pod(self, name, role, self.bed.add_host(name))
        return self.pods[name]

    def role_pods(self, role: str) -> list[Pod]:
        return [self._pod(role, i) for i in range(self.replicas[role])]

    def live_pods(self) -> list[Pod]:
        return [p for role in ("bootstrap", "relay", "worker") for p in self.role_pods(role)]

    @property
    def workers(self) -> list[Pod]:
        return self.role_pods("worker")

    @property
    def bootstrap(self) -> Pod:
        return self.role_pods("bootstrap")[0]

    @property
    def relay(self) -> Pod:
        return self.role_pods("relay")[0]

    def scale(self, role: str, replicas: int, *, wait: bool = True, timeout: float = 90) -> list[Pod]:
        """Set a StatefulSet's replicas: new pods get the next ordinals, scaling down removes the highest first
        (SIGTERM, grace period). DNS changes as Kubernetes changes it: a new pod's record appears when it is
        created (publishNotReadyAddresses), a removed pod's record goes before it is stopped."""
        old = self.replicas[role]
        started: list[Pod] = []
        if replicas > old:
            new = [self._pod(role, i) for i in range(old, replicas)]
            self.replicas[role] = replicas
            self._publish(role)
            for pod in new:
                pod.start()
            started = new
        elif replicas < old:
            gone = [self._pod(role, i) for i in range(old - 1, replicas - 1, -1)]
            self.replicas[role] = replicas
            self._publish(role)
            for pod in gone:
                pod.stop()
        if wait:
            for pod in started:
                pod.wait_ready(timeout)
        return started

    def _publish(self, role: str) -> None:
        svc = {"bootstrap": BOOTSTRAP_SVC, "relay": RELAY_SVC, "worker": WORKER_SVC}[role]
        live = self.role_pods(role)
        self.dns.set_records(svc, [p.ip for p in live])
        for pod in (p for p in self.pods.values() if p.role == role):
            self.dns.set_records(f"{pod.name}.{svc}", [pod.ip] if pod in live else [])

    def add_outsider(self, name: str = "outsider") -> tuple[NatRouter, Host]:
        """A machine outside the cluster behind a NAT router (MASQUERADE, no way in)."""
        router = self.bed.add_nat(f"{name}-nat")
        return router, router.add_host(name)

    # -- looking ------------------------------------------------------------------------------------------------
    def peer_ids(self, pods: Iterable[Pod]) -> dict[str, Pod]:
        return {p.peer_id: p for p in pods}

    def logs(self, lines: int = 30) -> str:
        return "\n".join(p.logs(lines) for p in self.pods.values() if p.proc or p.container)

    # -- teardown -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        for pod in self.pods.values():
            with suppress(Exception):
                pod.stop(grace=5)
            with suppress(Exception):
                pod.kill()
        if self.runtime == "podman":
            remove_containers(self.bed.id)


def remove_containers(bed_id: str | None = None) -> None:
    """Remove the test beds' containers (of one bed, or of every bed: stale ones after a crash)."""
    if shutil.which("podman") is None:
        return
    label = f"p2p-fast.testbed={bed_id}" if bed_id else "p2p-fast.testbed"
    proc = podman("ps", "-a", "-q", "--filter", f"label={label}", check=False)
    ids = proc.stdout.split()
    if ids:
        podman("rm", "-f", *ids, check=False, timeout=120)


# --- tasks ----------------------------------------------------------------------------------------------------------

FINAL = ("completed", "failed", "cancelled")


def submit_tasks(pod: Pod, tasks: Sequence[dict[str, Any]]) -> list[str]:
    r = pod.post("/v1/tasks/batch", {"tasks": list(tasks)})
    if r.status_code != 202:
        raise AssertionError(f"batch submit to {pod.name}: {r.status_code} {r.text}")
    return r.json()["ids"]


def lookup(pod: Pod, ids: Sequence[str], wait_s: float = 0, results: bool = True) -> list[dict[str, Any]]:
    r = pod.post("/v1/tasks/lookup", {"ids": list(ids), "wait_s": wait_s, "results": results},
                 timeout=wait_s + 30)
    if r.status_code != 200:
        raise AssertionError(f"lookup on {pod.name}: {r.status_code} {r.text}")
    return r.json()["tasks"]


def wait_tasks(pod: Pod, ids: Sequence[str], timeout: float) -> list[dict[str, Any]]:
    """Every task final (bounded), full records."""
    def all_final() -> bool:
        return all(d["state"] in FINAL for d in lookup(pod, ids, wait_s=min(5.0, timeout), results=False))

    wait_until(all_final, timeout, what=f"{len(ids)} tasks on {pod.name} to finish", interval=0.2)
    return lookup(pod, ids)


def eventually(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    return wait_until(predicate, timeout, what=what, interval=interval, ignore=(httpx.HTTPError, OSError))

