"""The incentive pieces on their own, with a clock the test moves: credit balances (grant, limit, decay, persistence),
the priority gate, reputation (decay, exclusion, persistence), the compute verifier, the new config keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import yaml

from p2p_fast.core.config import ConfigError, TasksSection, load_config_text
from p2p_fast.protocols.tasks.builtins import compute, verify_compute
from p2p_fast.protocols.tasks.credit import CREDIT_REFUSAL, CreditBook, PriorityGate
from p2p_fast.protocols.tasks.journal import Database
from p2p_fast.protocols.tasks.redundancy import Redundancy
from p2p_fast.protocols.tasks.reputation import Reputation


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_credit_grant_limit_decay_and_persistence(tmp_path: Path) -> None:
    clock = Clock()
    cfg = TasksSection(initial_credit=3, debt_limit=2, debt_decay=100.0)

    async def main() -> None:
        db = Database(tmp_path / "c.sqlite3")
        book = CreditBook(db, "me", cfg, clock)
        admitted = 0
        for _ in range(10):  # grant 3 + limit 2: five tasks, counted while in flight
            if book.admit("rider", 1) is None:
                admitted += 1
        assert admitted == 5
        refusal = book.admit("rider", 1)
        assert refusal is not None and refusal.startswith(CREDIT_REFUSAL) and "tasks.debt_limit" in refusal
        for _ in range(5):
            book.settle("rider", 1, ok=True)
        assert book.balance("rider") == -2
        assert book.admit("rider", 1) is not None
        # A debt halves every debt_decay seconds: after two half-lives -0.5, and one more task fits.
        clock.t += 200
        assert book.balance("rider") == pytest.approx(-0.5)
        assert book.admit("rider", 1) is None
        book.settle("rider", 1, ok=False)  # not served after all: no debt
        assert book.balance("rider") == pytest.approx(-0.5)
        # Work for us raises the balance; a reward of 0 still costs 1 when served.
        book.received("rider", 4)
        book.settle("rider", 0, ok=True)
        assert book.balance("rider") == pytest.approx(2.5)
        # The node itself comes first, then peers by balance (a stranger has its grant of 3).
        assert book.priority("me") == float("inf") and book.priority("stranger") > book.priority("rider")
        book.flush()
        db.commit_now()
        doc = book.doc()["peers"]["rider"]
        assert (doc["served"], doc["received"], doc["refused"]) == (6, 1, 7)
        db.close()
        db = Database(tmp_path / "c.sqlite3")
        again = CreditBook(db, "me", cfg, clock)
        assert again.balance("rider") == pytest.approx(2.5) and again.doc()["peers"]["rider"]["served"] == 6
        db.close()

    trio.run(main)


def test_a_debt_at_a_limit_of_one_fades_enough_for_the_next_task(tmp_path: Path) -> None:
    clock = Clock()

    async def main() -> None:
        db = Database(tmp_path / "c.sqlite3")
        book = CreditBook(db, "me", TasksSection(initial_credit=0, debt_limit=1, debt_decay=10.0), clock)
        assert book.admit("p", 1) is None
        book.settle("p", 1, ok=True)
        assert book.admit("p", 1) is not None  # debt 1: the limit is reached
        clock.t += 1  # a tenth of a half-life
        assert book.admit("p", 1) is None
        db.close()

    trio.run(main)


def test_no_debt_limit_means_never_refused(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "c.sqlite3")
        book = CreditBook(db, "me", TasksSection(initial_credit=0, debt_limit=0), Clock())
        for _ in range(1000):
            assert book.admit("p", 1) is None
            book.settle("p", 1, ok=True)
        assert book.balance("p") == -1000
        db.close()

    trio.run(main)


def test_priority_gate_serves_the_highest_balance_first_and_survives_cancellation() -> None:
    order: list[str] = []

    async def main() -> None:
        gate = PriorityGate(1)
        await gate.acquire(0)  # the slot is busy

        async def want(name: str, prio: float, scope: trio.CancelScope | None = None) -> None:
            await gate.acquire(prio)
            order.append(name)
            gate.release()

        async with trio.open_nursery() as n:
            for name, prio in (("rider1", -5.0), ("worker", 10.0), ("rider2", -5.0), ("stranger", 0.0)):
                n.start_soon(want, name, prio)
                await trio.sleep(0.01)
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                await gate.acquire(100)  # gave up before its turn: must not hold the slot
            gate.release()
        assert order == ["worker", "stranger", "rider1", "rider2"]
        assert gate.free == 1 and gate.waiting == 0

    trio.run(main)


def test_reputation_decays_excludes_after_repeated_wrong_results_and_persists(tmp_path: Path) -> None:
    clock = Clock()
    cfg = TasksSection(ban_after=2, ban_duration=50, reputation_half_life=10)

    async def main() -> None:
        db = Database(tmp_path / "r.sqlite3")
        rep = Reputation(db, cfg, clock)
        assert rep.score("new") == 0.5
        rep.note("cheat", "wrong")
        assert not rep.banned("cheat")
        clock.t += 10  # one half-life: the first wrong result counts 0.5, the next brings it to 1.5 < 2
        rep.note("cheat", "wrong")
        assert not rep.banned("cheat")
        rep.note("cheat", "wrong")
        assert rep.banned("cheat") and rep.doc()["cheat"]["excluded_for_s"] == 50
        for _ in range(5):
            rep.note("good", "success")
        assert rep.score("good") > 0.8 > 0.2 > rep.score("cheat")
        rep.flush()
        db.commit_now()
        db.close()
        db = Database(tmp_path / "r.sqlite3")
        rep = Reputation(db, cfg, clock)
        assert rep.banned("cheat") and rep.doc()["cheat"]["wrong"] == 2.5
        clock.t += 51
        assert not rep.banned("cheat")
        clock.t += 100  # ten half-lives: the record has faded
        assert rep.score("cheat") > 0.45
        db.close()

    trio.run(main)


def test_reputation_table_of_an_older_journal_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE reputation (peer_id TEXT PRIMARY KEY, successes INTEGER NOT NULL DEFAULT 0, "
                 "failures INTEGER NOT NULL DEFAULT 0, timeouts INTEGER NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO reputation VALUES ('w', 4, 1, 0)")
    conn.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, type TEXT NOT NULL, capability TEXT NOT NULL, payload "
                 "BLOB NOT NULL, reward INTEGER NOT NULL, timeout_s REAL NOT NULL, max_retries INTEGER NOT NULL, "
                 "created REAL NOT NULL, updated REAL NOT NULL, finished REAL, state TEXT NOT NULL, worker TEXT, "
                 "result BLOB, error TEXT, attempts TEXT NOT NULL DEFAULT '[]')")
    conn.commit()
    conn.close()

    async def main() -> None:
        db = Database(path)
        rep = Reputation(db, TasksSection(), Clock())
        assert rep.doc()["w"]["successes"] == 4 and rep.doc()["w"]["wrong"] == 0
        cols = {r[1] for r in db.conn.execute("PRAGMA table_info(tasks)")}
        assert "redundancy" in cols
        db.close()

    trio.run(main)


def test_compute_verifier_recomputes_small_work_and_checks_the_shape_of_large() -> None:
    for payload in (b"primes 1 1000", b'{"op": "primes", "lo": 5000, "hi": 90000}', b"sha256 100 abc"):
        right = compute(payload).encode()
        assert verify_compute(payload, right) is True
        head, _, value = right.decode().rpartition("=")
        wrong = (head + "=" + (str(int(value) + 1) if value.isdigit() else "0" * 64)).encode()
        assert verify_compute(payload, wrong) is False
    big = b"primes 0 5000000"
    assert verify_compute(big, b"primes[0,5000000)=348513") is None  # too large to recount here: shape only
    assert verify_compute(big, b"primes[0,5000000)=9999999") is False  # more primes than numbers
    assert verify_compute(big, b"garbage") is False
    assert verify_compute(b"test_payload", b"sha256^100000=" + b"a" * 64) is None
    assert verify_compute(b"test_payload", b"sha256^100000=xyz") is False


def test_redundancy_requests_are_checked() -> None:
    assert Redundancy.check("compute", None) is None and Redundancy.check("compute", 3) is None
    assert "within" in (Redundancy.check("compute", 17) or "")
    assert "side effects" in (Redundancy.check("storage", 2) or "")


@pytest.mark.parametrize("key,value,problem", [
    ("debt_limit", -1, ">= 0"), ("verify_rate", 1.5, "<= 1"), ("initial_credit", "x", "integer"),
    ("max_replicas", 0, ">= 1"), ("ban_after", 0, ">= 1"), ("debt_decay", float("nan"), "finite"),
    ("reputation_half_life", -5, ">= 0"), ("ban_duration", True, "number"),
])
def test_incentive_config_keys_are_validated(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(yaml.safe_dump({"tasks": {key: value}}), "test.yaml")
    assert f"tasks.{key}" in str(err.value) and problem in str(err.value)


def test_the_per_peer_credit_gauge_stays_bounded(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from p2p_fast.protocols.tasks.credit import TOP_N

    async def main() -> None:
        db = Database(tmp_path / "c.sqlite3")
        book = CreditBook(db, "me", TasksSection(initial_credit=0), Clock())
        for i in range(3 * TOP_N):
            book.settle(f"peer{i}", i, ok=True)  # peer{i} owes max(i, 1)
        book.flush()
        samples = [s for m in REGISTRY.collect() if m.name == "p2p_credit_balance" for s in m.samples]
        assert len(samples) == TOP_N
        assert {s.labels["peer"] for s in samples} == {f"peer{i}" for i in range(2 * TOP_N, 3 * TOP_N)}
        db.close()

    trio.run(main)


def test_a_full_queue_gives_way_to_a_higher_balance() -> None:
    from p2p_fast.protocols.tasks.credit import GaveWay

    outcome: dict[str, str] = {}

    async def main() -> None:
        gate = PriorityGate(1)
        await gate.acquire(0)

        async def want(name: str, prio: float) -> None:
            try:
                await gate.acquire(prio)
            except GaveWay:
                outcome[name] = "gave way"
                return
            outcome[name] = "ran"
            gate.release()

        async with trio.open_nursery() as n:
            n.start_soon(want, "rider-a", -5.0)
            await trio.sleep(0.01)
            n.start_soon(want, "rider-b", -5.0)
            await trio.sleep(0.01)
            assert not gate.give_way(-5.0)  # an equal never pushes anyone out
            assert gate.give_way(3.0)  # the latest of the lowest gives way
            n.start_soon(want, "worker", 3.0)
            await trio.sleep(0.01)
            assert gate.waiting == 2
            gate.release()
        assert outcome == {"rider-b": "gave way", "worker": "ran", "rider-a": "ran"}
        assert gate.free == 1 and gate.waiting == 0

    trio.run(main)
