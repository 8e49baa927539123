"""Prometheus metrics of the task service (default registry, served at ``/metrics`` with the node's own)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SUBMITTED = Counter("p2p_tasks_submitted_total", "Tasks accepted from clients on this node", ["type"])
ASSIGNED = Counter("p2p_tasks_assigned_total", "Attempts sent to a worker (or run locally)", ["type"])
COMPLETED = Counter("p2p_tasks_completed_total", "Tasks completed with a verified result", ["type"])
FAILED = Counter("p2p_tasks_failed_total", "Tasks that failed for good", ["type"])
RETRIED = Counter("p2p_tasks_retried_total", "Attempts that failed and were rescheduled", ["type", "reason"])
LATE = Counter("p2p_tasks_late_results_total", "Results for an attempt that was no longer current (ignored)")
LATENCY = Histogram("p2p_task_latency_seconds", "Submission to final state",
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
QUEUE_DEPTH = Gauge("p2p_tasks_queue_depth", "Submitted tasks waiting for a worker")
RUNNING = Gauge("p2p_tasks_in_flight", "Attempts of our tasks running on workers")
EXECUTED = Counter("p2p_tasks_executed_total", "Attempts this node ran as a worker", ["type", "status"])
WORKER_RUNNING = Gauge("p2p_tasks_worker_running", "Tasks this worker is running now")
CREDITS = Gauge("p2p_credits", "Ledger totals of this node", ["kind"])
RECEIPTS_DUPLICATE = Counter("p2p_receipts_duplicate_total", "Receipts received again for a task already credited")
RECEIPTS_REJECTED = Counter("p2p_receipts_rejected_total", "Receipts refused (bad signature, wrong worker)")
LEDGER_BAD = Gauge("p2p_ledger_bad_entries", "Ledger entries whose signature failed the last verification "
                   "(GET /v1/ledger?verify=true, p2p-ctl ledger --verify)")
CREDIT_BALANCE = Gauge("p2p_credit_balance", "Bilateral credit balance of the peers with the largest balances or "
                       "debts (top 10 by size)", ["peer"])
REFUSED = Counter("p2p_tasks_refused_total", "Task requests this worker refused, by reason", ["reason"])
WRONG = Counter("p2p_tasks_wrong_results_total", "Results found wrong (by a verifier or outvoted by other workers)",
                ["by"])
EXCLUDED = Counter("p2p_workers_excluded_total", "Workers excluded from assignment for repeated wrong results")
REDUNDANT = Counter("p2p_tasks_redundant_total", "Redundant or spot-checked tasks decided, by outcome", ["outcome"])
POOL_BATCHES = Counter("p2p_tasks_pool_batches_total", "Batches of requests this worker handed to a pool child in one "
                       "write (a request that waited for nobody is a batch of one)")
POOL_BATCHED = Counter("p2p_tasks_pool_batched_total", "Requests this worker ran in those batches")
