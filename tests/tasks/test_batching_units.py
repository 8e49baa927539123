"""Batching on its own: the Merkle tree of batch receipts (every leaf verifies, any change is caught), batch-signed
receipts in the ledger (credited once, re-verified from the rows, tampering caught, both forms side by side), the
before-commit hook that signs them in the completion's transaction, and the process pool running a batch of calls in
one child (answers in order, a timeout in the middle kills the child and the rest still run, an abandoned call)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2p_fast.protocols.messages import TaskReceipt
from p2p_fast.protocols.tasks import merkle
from p2p_fast.protocols.tasks.journal import Database
from p2p_fast.protocols.tasks.ledger import Ledger, sign_receipt, sign_receipt_batch, verify_receipt
from p2p_fast.protocols.tasks.pool import PoolCall, PoolClosed, ProcessPool, TaskFailed

BUILTINS = "p2p_fast.protocols.tasks.builtins"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=70, unique=True))  # receipts differ: task ids
def test_every_leaf_leads_to_the_root_and_nothing_else_does(data: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(d) for d in data]
    root, paths = merkle.build(leaves)
    n = len(leaves)
    for i, (leaf, path) in enumerate(zip(leaves, paths)):
        assert len(path) <= max(1, (n - 1).bit_length())
        assert merkle.root_from_path(leaf, i, n, path) == root
        assert merkle.root_from_path(merkle.leaf_hash(data[i] + b"x"), i, n, path) != root
        if n > 1:
            assert merkle.root_from_path(leaf, (i + 1) % n, n, path) != root
        assert merkle.root_from_path(leaf, i, n, path + [b"\0" * 32]) is None
        assert merkle.root_from_path(leaf, n, n, path) is None
    if n == 1:
        assert root == leaves[0] and paths == [[]]


def test_build_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError):
        merkle.build([])


def _receipts(sub_id: str, wrk_id: str, n: int, prefix: str = "t") -> list[TaskReceipt]:
    return [TaskReceipt(f"{prefix}{i}", 1, sub_id, wrk_id, 1 + i % 3, "ab" * 32, 1000.0 + i, b"") for i in range(n)]


def test_batch_signed_receipts_verify_alone_and_in_the_ledger(tmp_path: Path) -> None:
    submitter, worker, other = create_new_key_pair(), create_new_key_pair(), create_new_key_pair()
    sub_id, wrk_id = str(ID.from_pubkey(submitter.public_key)), str(ID.from_pubkey(worker.public_key))
    signed = sign_receipt_batch(_receipts(sub_id, wrk_id, 37), submitter.private_key)
    assert all(verify_receipt(r, submitter.public_key) for r in signed)
    assert not any(verify_receipt(r, other.public_key) for r in signed)
    r = signed[5]
    # Another amount, another task id, another receipt's path: all refused.
    for forged in (TaskReceipt(r.task_id, r.attempt, r.submitter, r.worker, 99, r.result_digest, r.issued_at,
                               r.signature),
                   TaskReceipt("t999", r.attempt, r.submitter, r.worker, r.reward, r.result_digest, r.issued_at,
                               r.signature),
                   TaskReceipt(r.task_id, r.attempt, r.submitter, r.worker, r.reward, r.result_digest, r.issued_at,
                               signed[6].signature),
                   TaskReceipt(r.task_id, r.attempt, r.submitter, r.worker, r.reward, r.result_digest, r.issued_at,
                               r.signature[:-1]),
                   TaskReceipt(r.task_id, r.attempt, r.submitter, r.worker, r.reward, r.result_digest, r.issued_at,
                               r.signature[:-32])):
        assert not verify_receipt(forged, submitter.public_key)

    async def main() -> None:
        sub_db, wrk_db = Database(tmp_path / "s.sqlite3"), Database(tmp_path / "w.sqlite3")
        sub, wrk = Ledger(sub_db, sub_id), Ledger(wrk_db, wrk_id)
        assert sub.record_spent_many(signed, submitter.public_key.serialize()) == 37
        assert sub.record_spent_many(signed[:3], submitter.public_key.serialize()) == 0  # each task paid once
        single = sign_receipt(_receipts(sub_id, wrk_id, 1, prefix="s")[0], submitter.private_key)
        for receipt in [*signed, *signed[:4], single]:
            assert wrk.record_earned(receipt, submitter.public_key) is None
        total = sum(x.reward for x in signed) + single.reward
        assert (sub.spent, sub.n_spent) == (total - single.reward, 37)
        assert (wrk.earned, wrk.n_earned) == (total, 38)
        sub_db.commit_now()
        wrk_db.commit_now()
        assert wrk.verify_all() == {"verified": 38, "bad": 0}
        assert sub.verify_all() == {"verified": 37, "bad": 0}
        wrk_db.conn.execute("UPDATE ledger SET amount=amount+1 WHERE task_id IN ('t3', 't30')")
        assert wrk.verify_all() == {"verified": 36, "bad": 2}
        sub_db.close()
        wrk_db.close()

    trio.run(main)


def test_before_commit_hooks_write_in_the_commit_they_precede(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "j.sqlite3")
        ran: list[int] = []

        def hook() -> None:
            ran.append(db.commits)
            db.conn.execute("INSERT INTO reputation (peer_id) VALUES (?)", (f"p{len(ran)}",))
            db.touch()

        db.before_commit(hook)
        after: list[int] = []
        db.touch()
        db.after_commit(lambda: after.append(db.commits))
        db.commit_now()
        assert ran == [0] and after == [1] and not db.dirty
        other = Database(tmp_path / "j.sqlite3")  # another connection sees the hook's row: it was committed
        assert other.conn.execute("SELECT peer_id FROM reputation").fetchall() == [("p1",)]
        other.close()
        db.close()

    trio.run(main)


def test_a_batch_runs_in_one_child_and_a_timeout_in_it_spares_the_rest() -> None:
    async def main() -> None:
        pool = ProcessPool(1)
        try:
            calls = [PoolCall(f"{BUILTINS}:echo", b"%d" % i, 5) for i in range(20)]
            await pool.run_batch(calls)
            assert [await c.result() for c in calls] == [b"%d" % i for i in range(20)]
            assert pool.batches == 1 and pool.started == 1
            assert all(c.elapsed is not None and c.elapsed >= 0 for c in calls)

            # The 3rd call overstays its timeout: it alone times out, its child is killed, the rest go to a new one.
            calls = [PoolCall(f"{BUILTINS}:echo", b"a", 5), PoolCall(f"{BUILTINS}:echo", b"b", 5),
                     PoolCall(f"{BUILTINS}:sleep", b"30", 0.5), PoolCall(f"{BUILTINS}:sleep", b"soon", 5),
                     PoolCall(f"{BUILTINS}:echo", b"c", 5)]
            t0 = time.monotonic()
            await pool.run_batch(calls)
            assert time.monotonic() - t0 < 5
            assert [await c.result() for c in calls[:2]] == [b"a", b"b"]
            with pytest.raises(trio.TooSlowError):
                await calls[2].result()
            with pytest.raises(TaskFailed) as info:
                await calls[3].result()
            assert info.value.invalid
            assert await calls[4].result() == b"c"
            assert pool.killed == 1 and pool.started == 2

            # A caller that leaves while its call runs stops it (the child is killed); the next call still runs.
            calls = [PoolCall(f"{BUILTINS}:sleep", b"30", 60), PoolCall(f"{BUILTINS}:echo", b"after", 5)]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.run_batch, calls)
                await trio.sleep(0.3)
                calls[0].abandon()
            with pytest.raises(PoolClosed):
                await calls[0].result()
            assert await calls[1].result() == b"after"
            assert pool.killed == 2
            # One abandoned before its batch is sent is never run.
            calls = [PoolCall(f"{BUILTINS}:echo", b"x", 5), PoolCall(f"{BUILTINS}:echo", b"y", 5)]
            calls[0].abandon()
            await pool.run_batch(calls)
            assert await calls[1].result() == b"y"
        finally:
            await pool.aclose()

    trio.run(main)


def test_a_batch_takes_only_waiters_that_fit_its_budget_in_priority_order() -> None:
    from p2p_fast.protocols.tasks.credit import PriorityGate
    from p2p_fast.protocols.tasks.worker import BATCH_TIME_S, BatchBudget

    learned = {"fast": 0.0004, "slow": 0.3}
    call = lambda key: PoolCall(f"{BUILTINS}:echo", b"", 5, key)  # noqa: E731
    budget = BatchBudget(learned, "fast")
    taken = 0
    while budget.fits(call("fast")):
        taken += 1
    assert taken == int((BATCH_TIME_S - 0.0004) / 0.0004 + 1e-9)
    assert not BatchBudget(learned, "fast").fits(call("slow"))
    assert not BatchBudget(learned, "fast").fits(call("never-run"))
    assert not BatchBudget(learned, "slow").fits(call("fast"))  # a slow leader's batch is itself alone
    assert not BatchBudget(learned, "never-run").fits(call("fast"))

    async def main() -> None:
        gate = PriorityGate(1)
        assert await gate.acquire(0)  # the slot is taken
        jobs = [call(k) for k in ("fast", "fast", "slow", "fast")]
        got: dict[int, bool] = {}  # job -> acquire's answer: True, a permit; False, taken into a batch

        async def wait(i: int, prio: float) -> None:
            got[i] = await gate.acquire(prio, jobs[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(jobs)):
                nursery.start_soon(wait, i, 10 - i)  # priority in list order
            await trio.testing.wait_all_tasks_blocked()
            # The two fast ones come along; the slow one stops the batch, and the fast one behind it keeps waiting.
            assert gate.take(31, BatchBudget(learned, "fast").fits) == jobs[:2]
            assert gate.waiting == 2
            gate.release()  # the slot passes to the slow one, which then holds a permit of its own
            await trio.testing.wait_all_tasks_blocked()
            assert got == {0: False, 1: False, 2: True}
            assert gate.take(31, BatchBudget(learned, "slow").fits) == []
            gate.release()
        assert got == {0: False, 1: False, 2: True, 3: True}

    trio.run(main)
