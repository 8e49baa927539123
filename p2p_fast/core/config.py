"""Node configuration: one YAML file per role, validated strictly.

The fields follow the system's original description (``node.role``, ``node.listen_port``, ``node.capabilities``,
``node.max_connections``, ``node.heartbeat_interval``, ``network.protocol_version``, ``network.mesh_network``,
``network.enable_mdns``, ``network.enable_relay``, ``network.connection_timeout``) plus what a real node needs
(bootstrap addresses, data dir, HTTP listener, security, gossip tuning, logging, tasks).

Validation is strict because a typo in a config must never turn into a silently different node: an unknown key, a
wrong type or an out-of-range value raises :class:`ConfigError` naming the file, the dotted key and the problem, and
the CLI turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, get_args, get_origin, get_type_hints

import yaml

ROLES = ("bootstrap", "relay", "worker")
DATA_DIR_ENV = "P2P_DATA_DIR"
SECURITY_PROTOCOLS = ("noise", "tls")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DHT_MODES = ("auto", "server", "client")
_CAPABILITY_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_PROTOCOL_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration problem a user can fix: says which file, which key and what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


def _rng(lo: float | None = None, hi: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if lo is not None and value < lo:
            return f"must be >= {lo}, got {value!r}"
        if hi is not None and value > hi:
            return f"must be <= {hi}, got {value!r}"
        return None

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}; got {value!r}"

    return check


def _host_port(value: Any) -> str | None:
    if value == "":
        return None
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"must look like HOST:PORT (e.g. 127.0.0.1:8080), got {value!r}"
    return None


def _check(fn: Callable[[Any], str | None] | None = None, **kw: Any) -> Any:
    meta = {"check": fn} if fn else {}
    return field(metadata=meta, **kw)


@dataclass
class NodeSection:
    role: str = _check(_choice(ROLES), default="worker")
    listen_port: int = _check(_rng(0, 65535), default=4001)
    listen_host: str = "0.0.0.0"
    capabilities: list[str] = field(default_factory=list)
    max_connections: int = _check(_rng(1, 100_000), default=100)
    heartbeat_interval: float = _check(_rng(0.1, 3600), default=30.0)
    data_dir: str = ""


@dataclass
class NetworkSection:
    protocol_version: str = "p2p-network"
    mesh_network: bool = True
    enable_mdns: bool = False
    enable_relay: bool = True
    connection_timeout: float = _check(_rng(0.5, 3600), default=30.0)
    bootstrap_peers: list[str] = field(default_factory=list)
    announce_addrs: list[str] = field(default_factory=list)
    security: list[str] = field(default_factory=lambda: ["noise", "tls"])
    dht_mode: str = _check(_choice(DHT_MODES), default="auto")
    rebootstrap_interval: float = _check(_rng(0.5, 3600), default=5.0)
    relay_addrs: list[str] = field(default_factory=list)
    psk_file: str = ""
    # Connection manager (p2p_fast.stack.connmgr): above conn_high peers, close unprotected ones down to conn_low; discovery
    # stops dialing at conn_low. Both are capped by node.max_connections; conn_grace_period protects new connections.
    conn_low: int = _check(_rng(0, 100_000), default=16)
    conn_high: int = _check(_rng(1, 100_000), default=24)
    conn_grace_period: float = _check(_rng(0, 3600), default=30.0)


@dataclass
class GossipSection:
    # A node receives each message about once per mesh peer and forwards it to the others, and grafts from other
    # nodes keep a mesh near degree_high: with go's 6 / 4 (5) / 12 the 100-node benchmark's meshes held 8 peers on
    # average and relaying presence was most of an idle node's cost. IHAVE gossip (below) and the presence pulls
    # cover what a smaller mesh misses.
    degree: int = _check(_rng(1, 64), default=4)
    degree_low: int = _check(_rng(1, 64), default=3)
    degree_high: int = _check(_rng(1, 128), default=6)
    # IHAVE gossip per topic and heartbeat goes to max(lazy_degree, 25 % of the non-mesh peers) (go-libp2p's D_lazy
    # and gossip factor), naming the ids of the last gossip_window heartbeats. At rest IHAVE was most of what a node
    # wrote with go's D_lazy of 6 (bench/RESULTS.md, "The idle node, task by task").
    lazy_degree: int = _check(_rng(0, 64), default=3)
    gossip_window: int = _check(_rng(1, 64), default=3)
    # Mesh repair, IHAVE gossip and the message cache's shift run once a heartbeat; a message itself is pushed at
    # once whatever the interval. go's 1 s cost a 100-node network's idle nodes ~0.05 % of a core each (the
    # heartbeat and half the IHAVE it sends); 2 s keeps repair within two seconds (bench/RESULTS.md, "The idle
    # node's timers").
    heartbeat_interval: float = _check(_rng(0.05, 600), default=2.0)
    seen_ttl: float = _check(_rng(1, 3600), default=120.0)
    max_message_size: int = _check(_rng(256, 64 * 1024 * 1024), default=1024 * 1024)


@dataclass
class HttpSection:
    listen: str = _check(_host_port, default="127.0.0.1:8080")
    max_body_bytes: int = _check(_rng(1024, 64 * 1024 * 1024), default=1024 * 1024)
    # Bearer token for the API (file with the token; env P2P_API_TOKEN overrides). Empty: no token needed.
    token_file: str = ""
    # With a token: false puts /metrics behind it too (/healthz and /readyz always stay open).
    metrics_public: bool = True
    # The task lane (app/api/lane.py): a TCP listener on http.listen's host that p2p_fast.client uses for its
    # submissions and completions instead of an HTTP request per batch and the event stream. False: HTTP only.
    task_lane: bool = True
    # Its port; 0 picks a free one (told in GET /v1/tasks/limits and node.json, where the client finds it).
    task_lane_port: int = _check(_rng(0, 65535), default=0)


@dataclass
class LoggingSection:
    level: str = _check(_choice(LOG_LEVELS), default="info")
    format: str = _check(_choice(LOG_FORMATS), default="text")


@dataclass
class TasksSection:
    slots: int = _check(_rng(0, 1024), default=2)
    default_timeout: float = _check(_rng(0.1, 86400), default=30.0)
    max_retries: int = _check(_rng(0, 100), default=3)
    default_reward: int = _check(_rng(0, 10**12), default=1)
    # Tasks waiting for a free slot on this worker beyond ``slots`` (more are answered "busy"). Submitters learn it
    # from the responses and queue short tasks this deep to keep the slots busy (protocols/tasks/window.py).
    queue_limit: int = _check(_rng(0, 100_000), default=64)
    # Largest task payload (and result) this node sends or accepts, in bytes.
    max_payload_bytes: int = _check(_rng(1024, 64 * 1024 * 1024), default=1024 * 1024)
    # First retry delay in seconds; doubles per attempt (with jitter), capped at 10 s.
    retry_backoff: float = _check(_rng(0, 60), default=0.2)
    # How long a submitted task may wait for any capable worker before it fails.
    assign_timeout: float = _check(_rng(0.1, 86400), default=60.0)
    # Copies of each stored blob kept on distinct storage workers (the first one included).
    storage_replicas: int = _check(_rng(1, 16), default=2)
    # Peer IDs whose tasks this worker runs; empty: any peer of the network (the PSK decides who that is).
    allowed_submitters: list[str] = field(default_factory=list)
    # Task requests per second each submitting peer may send this worker (token bucket); 0: no limit.
    submit_rate: float = _check(_rng(0, 1_000_000), default=2000.0)
    # Requests a submitter may send at once above the rate (the bucket's size).
    submit_burst: int = _check(_rng(1, 1_000_000), default=10000)
    # Bilateral credit (tasks/credit.py): what a stranger may take from this worker before it gives anything back.
    initial_credit: int = _check(_rng(0, 10**12), default=100)
    # Debt (credits this worker gave a peer beyond the grant and what the peer did for it, counting tasks in flight)
    # at which the peer's requests are refused with "busy: credit"; 0: never refused (queued requests are still served
    # by balance).
    debt_limit: int = _check(_rng(0, 10**12), default=0)
    # Half-life of a debt in seconds (a refused peer is served again after a while); 0: debts never fade.
    debt_decay: float = _check(_rng(0, 10**9), default=3600.0)
    # Share of tasks without redundancy that also run on a second worker to check the first (spot checks).
    verify_rate: float = _check(_rng(0, 1), default=0.0)
    # Most workers one redundant task may run on: a disagreement without a majority adds workers up to this.
    max_replicas: int = _check(_rng(1, 32), default=5)
    # Wrong results (decayed count) after which a worker gets no tasks from this node for ban_duration seconds.
    ban_after: float = _check(_rng(1, 10_000), default=3.0)
    ban_duration: float = _check(_rng(0, 10**8), default=600.0)
    # Half-life in seconds of every reputation count (old behaviour weighs less); 0: never decays.
    reputation_half_life: float = _check(_rng(0, 10**9), default=86400.0)
    # Run Python functions (and the packages they ship) submitted by allowed_submitters (or, with no list, by the
    # members of a network with a PSK). Running one is running the submitter's code: off by default.
    accept_functions: bool = False
    # Sign receipts in batches (one signature and a Merkle path per receipt, docs/protocol.md "Receipts") for
    # workers that take them, and take them as a worker (task protocol 1.1.0). false: one signature per receipt, and
    # only task protocol 1.0.0 is offered -- as nodes of releases before batch receipts do.
    receipt_batches: bool = True


@dataclass
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    gossip: GossipSection = field(default_factory=GossipSection)
    http: HttpSection = field(default_factory=HttpSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    tasks: TasksSection = field(default_factory=TasksSection)
    source: str = field(default="<defaults>", metadata={"internal": True})

    # -- derived names -------------------------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """Our gossip topics live under ``protocol_version`` so separate networks never mix."""
        return f"{self.network.protocol_version}/{name}"

    def protocol_id(self, name: str, version: str = "1.0.0") -> str:
        return f"/{self.network.protocol_version}/{name}/{version}"

    @property
    def data_path(self) -> Path:
        """``node.data_dir``; when unset, ``$P2P_DATA_DIR`` (the pod image sets it to its volume, so a config
        without a data dir still runs there as a non-root user), else ``data/<role>`` under the working dir."""
        default = os.environ.get(DATA_DIR_ENV, "").strip() or os.path.join("data", self.node.role)
        return Path(self.node.data_dir or default).expanduser()


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer too big for a float
            raise ConfigError(source, key, f"must be a finite number, got {value!r}") from None
        if not math.isfinite(number):  # NaN passes every range check: refuse it (and infinities) here
            raise ConfigError(source, key, f"must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"must be a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - schema bug


def _build_section(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, f"must be a mapping of keys, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(source, f"{prefix}.{unknown[0]}" if prefix else unknown[0],
                          f"unknown key (known keys here: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build_section(tp, raw[name], source, key)
            continue
        value = _coerce(raw[name], tp, source, key)
        check = f.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(source, key, problem)
        values[name] = value
    return cls(**values)


def _cross_checks(cfg: Config) -> None:
    src = cfg.source
    for i, cap in enumerate(cfg.node.capabilities):
        if not _CAPABILITY_RE.match(cap):
            raise ConfigError(src, f"node.capabilities[{i}]",
                              f"{cap!r} is not a capability name (lowercase letters, digits, _ . -; up to 64)")
    if len(set(cfg.node.capabilities)) != len(cfg.node.capabilities):
        raise ConfigError(src, "node.capabilities", "lists a capability twice")
    if not _PROTOCOL_VERSION_RE.match(cfg.network.protocol_version):
        raise ConfigError(src, "network.protocol_version",
                          f"{cfg.network.protocol_version!r} must be letters, digits, _ . - (up to 64), no slashes")
    if not cfg.network.security:
        raise ConfigError(src, "network.security", "must name at least one of noise, tls")
    for i, sec in enumerate(cfg.network.security):
        if sec not in SECURITY_PROTOCOLS:
            raise ConfigError(src, f"network.security[{i}]", f"must be one of noise, tls; got {sec!r}")
    g = cfg.gossip
    if not g.degree_low <= g.degree <= g.degree_high:
        raise ConfigError(src, "gossip.degree",
                          f"needs degree_low <= degree <= degree_high, got {g.degree_low} <= {g.degree} <= "
                          f"{g.degree_high}")
    if cfg.network.conn_low > cfg.network.conn_high:
        raise ConfigError(src, "network.conn_low",
                          f"must be <= network.conn_high, got {cfg.network.conn_low} > {cfg.network.conn_high}")
    from p2p_fast.core.multiaddrs import parse_peer_multiaddr  # local import: keeps config importable without libp2p

    for name in ("bootstrap_peers", "relay_addrs", "announce_addrs"):
        for i, text in enumerate(getattr(cfg.network, name)):
            try:
                parse_peer_multiaddr(text, require_peer_id=(name == "relay_addrs"))
            except ValueError as exc:
                raise ConfigError(src, f"network.{name}[{i}]", str(exc)) from None
    for i, text in enumerate(cfg.tasks.allowed_submitters):
        if not _is_peer_id(text):
            raise ConfigError(src, f"tasks.allowed_submitters[{i}]",
                              f"{text!r} is not a peer ID (base58, e.g. 12D3KooW...)")


def _is_peer_id(text: str) -> bool:
    """A base58 peer ID: the multihash of a public key (sha2-256, or identity for small keys like Ed25519)."""
    import base58  # a py-libp2p dependency

    try:
        raw = base58.b58decode(text)
    except ValueError:
        return False
    if len(raw) == 34 and raw[:2] == b"\x12\x20":
        return True
    return len(raw) > 2 and raw[0] == 0 and raw[1] == len(raw) - 2 and raw[1] < 128


def load_config_text(text: str, source: str = "<string>") -> Config:
    """Parse and validate a YAML document; raise :class:`ConfigError` on any problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, "", f"is not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    cfg: Config = _build_section(Config, raw, source, "")
    cfg.source = source
    _cross_checks(cfg)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a config file; unreadable files are a :class:`ConfigError` too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(p), "", "is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot be read: {exc}") from None
    return load_config_text(text, str(p))


def apply_overrides(cfg: Config, **overrides: Any) -> Config:
    """Apply command-line overrides (already typed by argparse) and re-run the cross checks."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, name = dotted.partition(".")
        target = getattr(cfg, section)
        f = next(f for f in dataclasses.fields(target) if f.name == name)
        check = f.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError("command line", dotted, problem)
        setattr(target, name, value)
    _cross_checks(cfg)
    return cfg
