"""Cost of the event bus on the dispatcher's hot path (``p2p_fast.core.events.EventBus.emit``), per event.

Timed in one run: the dispatcher's path when nobody watches (``recording`` false: one attribute test and
``skip()``, no event built), building the event dict alone, ``emit`` while recording with nobody subscribed (the
``KEEP_AFTER_LAST`` window after the last subscriber left), with one subscriber that takes ``task`` events (its
channel drained every 1000, as the HTTP handler does) and with one that filters them out. The event is the dict
the dispatcher builds for a transition. Figures go to bench/RESULTS.md with the command.

    .venv/bin/python bench/event_bus.py [--rounds 5] [--n 200000]
"""

from __future__ import annotations

import argparse
import os
import time

import trio

from p2p_fast.core.events import EventBus


def _event(i: int) -> dict[str, object]:
    return {"id": "%032x" % i, "type": "echo", "event": "completed", "state": "completed", "worker": "12D3KooW" + "x" * 44,
            "attempt": 1, "error": None, "ts": 1.0, "created": 1.0}


async def _time(bus: EventBus, n: int, drain: object | None) -> float:
    result = b"r" * 64
    t0 = time.perf_counter()
    for i in range(n):
        bus.emit("task", _event(i), result)
        if drain is not None and i % 1000 == 999:
            while True:
                try:
                    drain.receive_nowait()  # type: ignore[attr-defined]
                except trio.WouldBlock:
                    break
    return (time.perf_counter() - t0) / n * 1e6


async def _idle(n: int) -> float:
    bus = EventBus()
    t0 = time.perf_counter()
    for i in range(n):
        if bus.recording:
            bus.emit("task", _event(i))
        else:
            bus.skip()
    return (time.perf_counter() - t0) / n * 1e6


async def _build_only(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        _event(i)
    return (time.perf_counter() - t0) / n * 1e6


async def main(rounds: int, n: int) -> None:
    rows: dict[str, list[float]] = {"nobody watching (recording false)": [], "build the event dict only": [],
                                    "emit, recording, no subscriber": [],
                                    "emit, 1 subscriber taking it": [], "emit, 1 subscriber filtering it out": []}
    for _ in range(rounds):
        rows["nobody watching (recording false)"].append(await _idle(n))
        rows["build the event dict only"].append(await _build_only(n))
        bus = EventBus()
        bus.unsubscribe(bus.subscribe(["task"], None, False)[0])  # just left: still recording
        rows["emit, recording, no subscriber"].append(await _time(bus, n, None))
        bus = EventBus()
        sub, _, _ = bus.subscribe(["task"], None, False)
        rows["emit, 1 subscriber taking it"].append(await _time(bus, n, sub.receive))
        bus = EventBus()
        bus.subscribe(["peer"], None, False)
        rows["emit, 1 subscriber filtering it out"].append(await _time(bus, n, None))
    print(f"per event, microseconds, min-max over {rounds} rounds of {n} (load {os.getloadavg()[0]:.1f}):")
    for name, vals in rows.items():
        print(f"  {name:38} {min(vals):.2f}-{max(vals):.2f} us")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    trio.run(main, args.rounds, args.n)
