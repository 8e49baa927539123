"""The event bus behind ``GET /v1/events`` (``p2p_fast.core.events``) on its own: numbering, bounded history, gaps,
type filters, inline results, recording only while somebody watches, and dropping a subscriber that falls behind.
The HTTP side and real processes: tests/tasks/test_events.py."""

from __future__ import annotations

import base64
import json

import pytest
import trio

from p2p_fast.core import events
from p2p_fast.core.events import BUFFER, EventBus


def _frame(ev: events.Event, with_result: bool = False) -> tuple[str, str, dict]:
    lines = ev.encode(with_result).decode().rstrip("\n").split("\n")
    assert lines[0].startswith("id: ") and lines[1].startswith("event: ") and lines[2].startswith("data: ")
    return lines[0][4:], lines[1][7:], json.loads(lines[2][6:])


def test_nothing_is_kept_until_somebody_subscribes() -> None:
    bus = EventBus()
    assert not bus.recording
    bus.emit("task", {"n": 1})
    bus.skip()
    assert bus.seq == 2 and not bus.history and bus.oldest == 3
    sub, replay, gap = bus.subscribe(["task"], None, False)
    assert bus.recording and replay == [] and gap is False
    bus.emit("task", {"n": 3})
    assert [e.seq for e in bus.history] == [3] and sub.receive.receive_nowait().data == {"n": 3}


def test_history_is_bounded_and_resume_replays_what_is_left_or_says_gap() -> None:
    bus = EventBus(history=5)
    bus.subscribe(["peer"], None, False)  # keeps the bus recording
    for i in range(1, 9):
        bus.emit("task", {"n": i})
    assert bus.seq == 8 and bus.oldest == 4 and len(bus.history) == 5
    _, replay, gap = bus.subscribe(["task"], 5, False)
    assert [e.seq for e in replay] == [6, 7, 8] and gap is False
    _, replay, gap = bus.subscribe(["task"], 3, False)  # 4.. are there: nothing lost
    assert [e.seq for e in replay] == [4, 5, 6, 7, 8] and gap is False
    _, replay, gap = bus.subscribe(["task"], 2, False)  # 3 is gone
    assert gap is True and [e.seq for e in replay] == [4, 5, 6, 7, 8]
    _, replay, gap = bus.subscribe(["task"], 1000, False)  # an id this process never issued: another run
    assert gap is True and replay == []
    _, replay, gap = bus.subscribe(["gossip"], 3, False)  # only the types asked for
    assert replay == [] and gap is False


def test_types_filter_live_events() -> None:
    bus = EventBus()
    tasks, _, _ = bus.subscribe(["task"], None, False)
    both, _, _ = bus.subscribe(["task", "peer"], None, False)
    bus.emit("peer", {"p": 1})
    bus.emit("task", {"t": 1})
    assert [tasks.receive.receive_nowait().type] == ["task"]
    assert [both.receive.receive_nowait().type, both.receive.receive_nowait().type] == ["peer", "task"]
    with pytest.raises(trio.WouldBlock):
        tasks.receive.receive_nowait()


def test_results_inline_up_to_64_kib_only() -> None:
    bus = EventBus()
    bus.subscribe(["task"], None, True)
    bus.emit("task", {"id": "a"}, b"small")
    bus.emit("task", {"id": "b"}, b"x" * (64 * 1024 + 1))
    small, big = bus.history
    assert _frame(small, True) == ("1", "task", {"id": "a", "result": base64.b64encode(b"small").decode()})
    assert _frame(small, False) == ("1", "task", {"id": "a"})
    assert _frame(big, True)[2] == {"id": "b"}


def test_history_is_dropped_a_while_after_the_last_subscriber_left(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: now[0])
    bus = EventBus()
    sub, _, _ = bus.subscribe(["task"], None, False)
    bus.emit("task", {"n": 1})
    bus.unsubscribe(sub)
    now[0] += events.KEEP_AFTER_LAST - 1
    bus.emit("task", {"n": 2})  # a reload within the window misses nothing
    _, replay, gap = bus.subscribe(["task"], 1, False)
    assert [e.seq for e in replay] == [2] and gap is False
    bus.unsubscribe(bus.subscribers[0])
    now[0] += events.KEEP_AFTER_LAST + 1
    bus.emit("task", {"n": 3})
    assert not bus.recording and not bus.history
    _, replay, gap = bus.subscribe(["task"], 2, False)  # event 3 was never kept: resync
    assert gap is True and replay == []


def test_a_subscriber_that_falls_behind_is_dropped_without_blocking() -> None:
    async def main() -> None:
        bus = EventBus()
        slow, _, _ = bus.subscribe(["task"], None, False)
        fast, _, _ = bus.subscribe(["task"], None, False)
        for i in range(BUFFER + 10):
            bus.emit("task", {"n": i})
            if i % 100 == 0:
                while True:
                    try:
                        fast.receive.receive_nowait()
                    except trio.WouldBlock:
                        break
        assert slow.overflowed and not fast.overflowed and slow.dropped.is_set() and not fast.dropped.is_set()
        assert bus.subscribers == [fast] and bus.overflows == 1
        got = 0
        while True:
            try:
                slow.receive.receive_nowait()
                got += 1
            except trio.EndOfChannel:
                break
        assert got == BUFFER  # what was buffered, then the end: never more than BUFFER held for it

    trio.run(main)


def test_final_only_subscriber_gets_only_the_last_event_of_each_task_live_and_replayed() -> None:
    bus = EventBus()
    everything, _, _ = bus.subscribe(["task", "peer"], None, False)
    final, _, _ = bus.subscribe(["task", "peer"], None, True, final_only=True)
    for what in ("submitted", "assigned", "retry", "completed", "failed", "cancelled"):
        bus.emit("task", {"id": what, "event": what}, b"r" if what == "completed" else None)
    bus.emit("peer", {"event": "connected"})  # other types are not filtered by final=1

    def drain(sub: events.Subscriber) -> list[str]:
        out = []
        while True:
            try:
                ev = sub.receive.receive_nowait()
            except trio.WouldBlock:
                return out
            out.append(ev.data["event"])

    assert drain(everything) == ["submitted", "assigned", "retry", "completed", "failed", "cancelled", "connected"]
    assert drain(final) == ["completed", "failed", "cancelled", "connected"]
    _, replay, gap = bus.subscribe(["task"], 0, True, final_only=True)  # resuming from the start
    assert not gap and [e.data["event"] for e in replay] == ["completed", "failed", "cancelled"]
