"""A worker stopped (SIGTERM) while its submitter's receipts keep arriving exits 0 without an error: a receipt read
after the task journal closed used to raise ``sqlite3.ProgrammingError: Cannot operate on a closed database`` and
log an ERROR with a traceback (seen in a 60-node scale run, bench/RESULTS.md). The receipt is not recorded then:
the task stream ends, and the submitter sends what that stream carried again to the next one."""

from __future__ import annotations

from harness import Cluster, node_config
from conftest import Api, wait_for_workers, worker_config  # tests/tasks/conftest.py


def test_a_worker_stopped_while_receipts_arrive_exits_0_and_logs_no_error(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    worker = cluster.start("w", worker_config(boot, ["compute"], slots=2))
    wait_for_workers(boot, "compute", 1)
    api = Api(boot)
    try:
        for _ in range(3):  # a receipt follows every result: keep both flowing while the worker stops
            api.submit_batch([{"type": "sleep", "payload": "0", "max_retries": 0} for _ in range(400)])
        code = worker.stop()
    finally:
        api.close()
    text = worker.stderr()
    assert code == 0, text[-3000:]
    assert " ERROR " not in text and "Traceback" not in text, text[-3000:]
