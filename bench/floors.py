"""The benchmark gate's floors: one baseline per machine, and the verdicts the gate draws from them.

Pure logic, no measuring (``bench/gate.py`` measures), so it can be tested with real floors files alone.

Why per machine: a speed-up ratio bound by dict and memory work moves with the CPU (``SeenCache.add_new`` measured
3.0x on one CI machine and 2.0x on another with no code change). A single floor, the lowest over all machines, lets
a fast machine lose a third of its speed-up unnoticed; a floor per machine holds each machine to its own figures.

A machine is its CPU model (the first ``model name`` in ``/proc/cpuinfo``) and its core count (the ``processor``
entries there). The floors file (``bench/baseline.json``)::

    {"format": 2, "tolerance": 0.25,
     "machines": [{"cpu_model": "Intel(R) Xeon(R) Processor", "cores": 2, "how": "...",
                   "ratios": {"micro.framing.encode_frame": 19.1, ...}, "runs": [{...}, ...]}, ...]}

An entry with ``"cpu_model": null`` is a machine whose model was not recorded: it never matches, and counts only
for unknown machines. **An unknown machine** (no entry with its model and core count) is held, per ratio, to the
lowest baseline of all recorded machines: the most conservative floor the file knows, the one a single
all-machines floor used to give. The gate prints a note saying so, and how to record the machine's own floors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 2
TOLERANCE = 0.25


class FloorsError(Exception):
    """The floors file is missing or not in the expected form; the message says which and what to run."""


@dataclass(frozen=True)
class Machine:
    """What a floor is kept for: the CPU model and the number of cores the kernel lists."""

    cpu_model: str
    cores: int

    def __str__(self) -> str:
        return f"{self.cpu_model}, {self.cores} cores"


def machine_from_cpuinfo(text: str) -> Machine:
    """The machine described by the text of ``/proc/cpuinfo`` (first ``model name``; ARM kernels may only give
    ``Hardware`` or ``CPU part``; neither: ``cpu unknown``)."""
    model = ""
    cores = 0
    fallback = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cores += 1
        elif key == "model name" and not model:
            model = value
        elif key in ("Hardware", "CPU part") and not fallback:
            fallback = f"{key} {value}"
    return Machine(model or fallback or "cpu unknown", cores or (os.cpu_count() or 1))


def this_machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> Machine:
    try:
        return machine_from_cpuinfo(cpuinfo.read_text())
    except OSError:
        return Machine("cpu unknown", os.cpu_count() or 1)


def load(path: Path) -> dict[str, Any]:
    """The floors file; :class:`FloorsError` when it is missing or not format 2."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FloorsError(f"no floors file at {path}; run: python bench/gate.py --write-baseline") from None
    except ValueError as exc:
        raise FloorsError(f"{path} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("machines"), list):
        raise FloorsError(f"{path}: expected a floors file of format {FORMAT} (a list of machines, each with its "
                          "own ratios); run: python bench/gate.py --write-baseline")
    for i, m in enumerate(doc["machines"]):
        if not isinstance(m, dict) or not isinstance(m.get("ratios"), dict) or not isinstance(m.get("cores"), int):
            raise FloorsError(f"{path}: machine {i + 1} needs \"cpu_model\", \"cores\" and \"ratios\"")
    return doc


def _matches(entry: dict[str, Any], machine: Machine) -> bool:
    return entry.get("cpu_model") == machine.cpu_model and entry.get("cores") == machine.cores


def baseline_for(doc: dict[str, Any], machine: Machine, source: str = "the floors file") -> tuple[dict[str, float],
                                                                                                    str | None]:
    """This machine's baseline ratios, and a note when it has none of its own (then, per ratio, the lowest of every
    recorded machine: the most conservative floor). :class:`FloorsError` when the file records no machine."""
    machines = doc["machines"]
    if not machines:
        raise FloorsError(f"{source} records no machine; run: python bench/gate.py --write-baseline")
    for entry in machines:
        if _matches(entry, machine):
            return dict(entry["ratios"]), None
    names = dict.fromkeys(name for m in machines for name in m["ratios"])
    lowest = {name: min(m["ratios"][name] for m in machines if name in m["ratios"]) for name in names}
    note = (f"gate: note: this machine ({machine}) has no floors of its own in {source}; each ratio is held to the "
            f"lowest baseline of the {len(machines)} recorded machine(s), the most conservative floor. Record this "
            f"machine's own: python bench/gate.py --write-baseline")
    return lowest, note


def record_machine(doc: dict[str, Any] | None, machine: Machine, how: str, ratios: dict[str, float],
                   runs: list[dict[str, float]], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The floors file with this machine's entry replaced by a new measurement; other machines are kept. Ratios the
    new measurement lacks (a ``--skip-macro`` run has no macro ratios) keep this machine's old values."""
    doc = {"format": FORMAT, "tolerance": tolerance, "machines": []} if doc is None else dict(doc)
    old = next((m for m in doc["machines"] if _matches(m, machine)), None)
    merged = {**(old["ratios"] if old else {}), **ratios}
    entry = {"cpu_model": machine.cpu_model, "cores": machine.cores, "how": how, "ratios": merged, "runs": runs}
    doc["machines"] = [m for m in doc["machines"] if m is not old] + [entry]
    return doc


def below_floor(measured: dict[str, float], baseline: dict[str, float], tolerance: float) -> list[str]:
    """Names of the ratios measured below ``(1 - tolerance) x baseline``."""
    return [name for name, base in baseline.items() if name in measured and measured[name] < base * (1 - tolerance)]


def lost_rounds(rounds: list[dict[str, dict[str, Any]]], what: str) -> list[str]:
    """One line per macro round and stack that lost messages. A capacity round cannot drop for want of queue
    space, so any loss is a fault (a dropped subscription buffer, a broken stream), never noise to average away."""
    out = []
    for i, rnd in enumerate(rounds, 1):
        for stack, got in rnd.items():
            if got.get("lost", 0) > 0:
                out.append(f"macro round {i} of {len(rounds)} ({stack} pair, {what}): {got['lost']} of "
                           f"{got['sent']} messages lost")
    return out
