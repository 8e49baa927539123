"""k8s/ offline: kustomize renders, every object passes strict schema validation for two Kubernetes versions, the
layout is the one users expect (namespace net-test, role= labels, service names), pods meet the restricted Pod
Security profile, and what the pods mount is a valid node config that agrees with the manifests around it."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from k8s_render import OVERLAYS, REPO, objects, render

from p2p_fast.core.config import load_config

# Two supported Kubernetes minor versions: the oldest and the newest we promise to run on.
K8S_VERSIONS = ("1.33.0", "1.37.0")
NAMESPACE = "net-test"
ROLES = ("bootstrap", "relay", "worker")
DATA_DIR = "/var/lib/p2p-fast"
PSA_VOLUME_TYPES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI",
                    "ephemeral", "csi"}


def _kv() -> Any:
    return pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")


def _pod_specs(target: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, sts in objects(target, "StatefulSet").items():
        yield name, sts, sts["spec"]["template"]["spec"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- rendering and schemas ------------------------------------------------------------------------------------------

def test_kustomize_renders_the_expected_objects(target: str) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render(target))
    names = {name for _, name in kinds}
    assert {"p2p-bootstrap", "p2p-relay", "p2p-worker", NAMESPACE, "p2p-fast"} <= names
    counts = {kind: sum(1 for k, _ in kinds if k == kind) for kind, _ in kinds}
    assert counts == {"Namespace": 1, "ServiceAccount": 1, "ConfigMap": 3, "Service": 3, "StatefulSet": 3,
                      "PodDisruptionBudget": 3, "HorizontalPodAutoscaler": 1, "NetworkPolicy": 2}, counts
    for obj in render(target):
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "p2p-fast"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_passes_strict_validation(target: str, version: str) -> None:
    kv = _kv()
    problems = []
    for obj in render(target):
        try:
            kv.validate(obj, version, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError, kv.InvalidSchemaError) as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The validator is not a rubber stamp: an unknown field in a pod template fails it."""
    kv = _kv()
    sts = copy.deepcopy(objects("local", "StatefulSet")["p2p-worker"])
    sts["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(sts, K8S_VERSIONS[-1], strict=True)


# --- layout ---------------------------------------------------------------------------------------------------------

def test_services_statefulsets_and_role_labels(target: str) -> None:
    services, sets = objects(target, "Service"), objects(target, "StatefulSet")
    assert set(sets) == {f"p2p-{r}" for r in ROLES}
    for role in ROLES:
        sts, svc = sets[f"p2p-{role}"], services[f"p2p-{role}"]
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["role"] == role and sts["metadata"]["labels"]["role"] == role
        assert _matches(sts["spec"]["selector"]["matchLabels"], pod_labels)
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
        assert _matches(svc["spec"]["selector"], pod_labels)
        for other in ROLES:  # each Service selects its own role only
            if other != role:
                other_labels = sets[f"p2p-{other}"]["spec"]["template"]["metadata"]["labels"]
                assert not _matches(svc["spec"]["selector"], other_labels)
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert ports["p2p"]["port"] == 4001 and ports["http"]["port"] == 8080
    assert services["p2p-bootstrap"]["spec"].get("type", "ClusterIP") == "ClusterIP"
    worker = services["p2p-worker"]["spec"]
    assert worker["clusterIP"] == "None" and worker["publishNotReadyAddresses"] is True
    relay_type = services["p2p-relay"]["spec"].get("type", "ClusterIP")
    assert relay_type == ("LoadBalancer" if target == "production" else "ClusterIP")


def test_pods_run_the_node_entrypoint_with_its_probes(target: str) -> None:
    for name, sts, spec in _pod_specs(target):
        (c,) = spec["containers"]
        assert c["args"][:3] == ["p2p-node", "--config", "/app/config.yaml"], c["args"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"p2p": 4001, "http": 8080}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        # A slow start may take a minute before liveness counts.
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 60
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, (name, c["resources"])
        ann = sts["spec"]["template"]["metadata"]["annotations"]
        assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
        assert spec["terminationGracePeriodSeconds"] >= 10  # the node stops within STOP_GRACE_S (4 s)


def test_images_per_overlay() -> None:
    for overlay, image in (("local", "localhost/p2p-fast:latest"), ("production", "registry.example.com/p2p-fast:0.1.0")):
        for name, _, spec in _pod_specs(overlay):
            assert spec["containers"][0]["image"] == image, (overlay, name)


# --- security -------------------------------------------------------------------------------------------------------

def test_pods_meet_the_restricted_pod_security_profile(target: str) -> None:
    ns = objects(target, "Namespace")[NAMESPACE]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, _, spec in _pod_specs(target):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), (name, key)
        assert {next(k for k in v if k != "name") for v in spec.get("volumes", [])} <= PSA_VOLUME_TYPES
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc.get("privileged") is not True
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not any("hostPort" in p for p in c["ports"])


def test_writable_paths_are_only_the_data_dir_and_tmp(target: str) -> None:
    for name, sts, spec in _pod_specs(target):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        mounts = spec["containers"][0]["volumeMounts"]
        for m in mounts:  # every mount has exactly one source
            assert (m["name"] in volumes) != (m["name"] in claims), (name, m["name"])
        writable = {m["mountPath"] for m in mounts if not m.get("readOnly")}
        assert writable == {DATA_DIR, "/tmp"}, (name, writable)
        data = next(m for m in mounts if m["mountPath"] == DATA_DIR)
        assert data["name"] in claims or "emptyDir" in volumes[data["name"]], (name, data)
        tmp = next(m for m in mounts if m["mountPath"] == "/tmp")
        assert "emptyDir" in volumes[tmp["name"]]


def test_bootstrap_identity_comes_from_the_secret_per_pod(target: str) -> None:
    sts = objects(target, "StatefulSet")["p2p-bootstrap"]
    spec = sts["spec"]["template"]["spec"]
    c = spec["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "identity")
    assert mount == {"name": "identity", "mountPath": f"{DATA_DIR}/identity.key", "subPathExpr": "$(POD_NAME).key",
                     "readOnly": True}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    vol = next(v for v in spec["volumes"] if v["name"] == "identity")
    assert vol["secret"]["secretName"] == "p2p-bootstrap-identity"
    assert vol["secret"].get("optional") is not True  # no key, no start: never a random identity
    assert vol["secret"]["defaultMode"] == 0o440  # readable by fsGroup 10001 only
    for other in ("p2p-relay", "p2p-worker"):
        spec = objects(target, "StatefulSet")[other]["spec"]["template"]["spec"]
        assert all(v["name"] != "identity" for v in spec["volumes"])


def test_deploy_sh_identity_keys_are_node_identities(tmp_path: Path) -> None:
    from libp2p.peer.id import ID

    from p2p_fast.stack.identity import load_or_create_identity

    ids = []
    for n in range(2):
        d = tmp_path / f"pod{n}"
        d.mkdir()
        subprocess.run([str(REPO / "deploy.sh"), "identity-key", str(d / "identity.key")], check=True, timeout=30)
        assert (d / "identity.key").stat().st_mode & 0o077 == 0
        first = ID.from_pubkey(load_or_create_identity(d).public_key)
        assert ID.from_pubkey(load_or_create_identity(d).public_key) == first  # read, never replaced
        ids.append(first)
    assert ids[0] != ids[1]


def test_network_policy(target: str) -> None:
    pols = objects(target, "NetworkPolicy")
    main = pols["p2p-fast"]["spec"]
    assert main["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "p2p-fast"}
    assert set(main["policyTypes"]) == {"Ingress", "Egress"}
    ours = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "p2p-fast"}}}

    def rule(rules: list[dict[str, Any]], port: int) -> dict[str, Any]:
        return next(r for r in rules if any(p["port"] == port for p in r["ports"]))

    libp2p_in = rule(main["ingress"], 4001)
    assert libp2p_in["from"] == [ours] and libp2p_in["ports"] == [{"protocol": "TCP", "port": 4001}]
    metrics_in = rule(main["ingress"], 8080)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in metrics_in["from"]
    dns = rule(main["egress"], 53)
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert rule(main["egress"], 4001)["to"] == [ours]
    relay = pols["p2p-relay-public"]["spec"]
    assert relay["podSelector"]["matchLabels"]["role"] == "relay"
    assert relay["ingress"] == [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                 "ports": [{"protocol": "TCP", "port": 4001}]}]


def test_disruption_budgets_and_autoscaler(target: str) -> None:
    sets = objects(target, "StatefulSet")
    for name, pdb in objects(target, "PodDisruptionBudget").items():
        labels = sets[name]["spec"]["template"]["metadata"]["labels"]
        assert _matches(pdb["spec"]["selector"]["matchLabels"], labels)
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    hpa = objects(target, "HorizontalPodAutoscaler")["p2p-worker"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "p2p-worker"}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert hpa["minReplicas"] <= sets["p2p-worker"]["spec"]["replicas"] <= hpa["maxReplicas"]
    pdb = objects(target, "PodDisruptionBudget")["p2p-worker"]["spec"]
    if "minAvailable" in pdb:  # a drain must be possible at the autoscaler's minimum
        assert pdb["minAvailable"] < hpa["minReplicas"]


def test_production_overlay_persists_data_and_spreads_pods() -> None:
    sets = objects("production", "StatefulSet")
    assert sets["p2p-bootstrap"]["spec"]["replicas"] == 2
    for name in ("p2p-bootstrap", "p2p-worker"):
        (claim,) = sets[name]["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert all(v["name"] != "data" for v in sets[name]["spec"]["template"]["spec"]["volumes"])
    assert sets["p2p-worker"]["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete"
    for name, sts in sets.items():
        assert sts["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--log-format", "json"]


# --- the configs the pods mount ---------------------------------------------------------------------------------------

def test_base_configs_are_the_node_configs() -> None:
    for role in ROLES:
        copy_ = REPO / "k8s" / "base" / "config" / f"{role}.yaml"
        assert copy_.read_bytes() == (REPO / "node" / f"{role}.yaml").read_bytes(), (
            f"{copy_} differs from node/{role}.yaml: cp node/{role}.yaml {copy_}")


def test_mounted_configs_are_valid_and_agree_with_the_manifests(target: str, tmp_path: Path) -> None:
    config_maps = objects(target, "ConfigMap")
    services = objects(target, "Service")
    for name, _, spec in _pod_specs(target):
        role = name.removeprefix("p2p-")
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == "/app/config.yaml")
        vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        cm = config_maps[vol["configMap"]["name"]]  # the generated, hash-suffixed name resolves
        assert re.fullmatch(rf"p2p-{role}-config-[a-z0-9]{{10}}", cm["metadata"]["name"])
        path = tmp_path / f"{name}.yaml"
        path.write_text(cm["data"][mount["subPath"]])
        cfg = load_config(path)
        assert cfg.node.role == role
        assert cfg.node.data_dir == DATA_DIR
        assert cfg.node.listen_port == 4001
        assert cfg.http.listen == "0.0.0.0:8080"  # the probes and Prometheus reach it on the pod IP
        for addr in cfg.network.bootstrap_peers:
            m = re.fullmatch(r"/dns4/([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local/tcp/(\d+)", addr)
            assert m, f"{name}: bootstrap address {addr} is not a cluster Service name"
            svc, ns, port = m.groups()
            assert ns == NAMESPACE and svc in services
            assert int(port) in {p["port"] for p in services[svc]["spec"]["ports"]}
        if role != "bootstrap":
            assert cfg.network.bootstrap_peers, f"{name} has no way into the network"


def _admits_mdns(policies: dict[str, dict[str, Any]], labels: dict[str, str]) -> bool:
    """Whether the NetworkPolicies selecting pods with these labels let mDNS (UDP 5353) out and in."""
    selecting = [p["spec"] for p in policies.values() if _matches(p["spec"]["podSelector"].get("matchLabels", {}),
                                                                   labels)]
    if not selecting:
        return True  # no policy: everything is allowed

    def allows(spec: dict[str, Any], direction: str) -> bool:
        if direction.capitalize() not in spec.get("policyTypes", []):
            return True
        return any(not r.get("ports") or any(p.get("protocol") == "UDP" and p.get("port") == 5353
                                             for p in r["ports"]) for r in spec.get(direction, []))

    return all(any(allows(s, d) for s in selecting) for d in ("egress", "ingress"))


def test_mdns_in_the_configs_agrees_with_the_network_policy(target: str, tmp_path: Path) -> None:
    """A pod config with mDNS on needs a policy that admits UDP 5353; ours keep it off and say why next to it."""
    config_maps = objects(target, "ConfigMap")
    policies = objects(target, "NetworkPolicy")
    for name, sts, spec in _pod_specs(target):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == "/app/config.yaml")
        vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        text = config_maps[vol["configMap"]["name"]]["data"][mount["subPath"]]
        (tmp_path / "c.yaml").write_text(text)
        mdns = load_config(tmp_path / "c.yaml").network.enable_mdns
        assert not mdns or _admits_mdns(policies, labels), (
            f"{name}: network.enable_mdns is true but the NetworkPolicy admits no UDP 5353")
        if not mdns and name == "p2p-worker":
            assert "NetworkPolicy" in text and "multicast" in text  # the reason is written next to the setting
    assert "UDP 5353" in (REPO / "docs" / "deploy.md").read_text()


def test_the_mdns_policy_check_sees_a_blocking_policy() -> None:
    deny = {"p": {"spec": {"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Egress"],
                           "egress": [{"ports": [{"protocol": "TCP", "port": 4001}]}]}}}
    assert not _admits_mdns(deny, {"a": "b"})
    assert _admits_mdns(deny, {"a": "other"})
    deny["p"]["spec"]["egress"].append({"ports": [{"protocol": "UDP", "port": 5353}]})
    assert _admits_mdns(deny, {"a": "b"})


# --- image and scripts ----------------------------------------------------------------------------------------------

def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0].startswith("ARG BASE_IMAGE=python:3.11-slim")
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE} AS runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "USER 10001:10001" in runtime
    assert re.search(r"HEALTHCHECK .*\n?.*P2P_FAST_HEALTH_URL", runtime) and "/healthz" in runtime
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in runtime
    assert 'CMD ["p2p-node", "--config", "/app/config.yaml"]' in runtime
    assert "build-essential" not in runtime and "libgmp-dev" not in runtime  # compilers stay in the build stage
    ignore = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ignore[0] == "*" and "**/*.so" in ignore and "**/*.c" in ignore  # extensions are built in the image


@pytest.mark.parametrize("script", ["build.sh", "deploy.sh", "stress-test.sh"])
def test_scripts_parse(script: str) -> None:
    path = REPO / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    help_ = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
    assert help_.returncode == 0 and script in help_.stdout, help_.stderr


def test_overlays_listed_in_docs() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    for overlay in OVERLAYS:
        assert f"k8s/overlays/{overlay}" in doc
    assert "kubectl kustomize" in doc


def test_rendered_yaml_round_trips(overlay: str) -> None:
    """What deploy.sh pipes to kubectl apply is plain YAML (no kustomize-only leftovers such as $patch)."""
    text = yaml.safe_dump_all(render(overlay))
    assert "$patch" not in text and "kustomize.config.k8s.io" not in text
