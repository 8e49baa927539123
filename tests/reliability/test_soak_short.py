"""The soak's short version for CI (``scripts/soak.py`` runs the 30-minute one): a steady task rate for 20 s
through a bootstrap, a submitter and 3 workers, a worker killed (SIGKILL) every 6 s and restarted 3 s later. No
task lost, every task completed exactly once, the ledger consistent, descriptors flat, RSS bounded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import REPO, record

sys.path.insert(0, str(REPO / "scripts"))

import soak  # noqa: E402


def test_short_soak_with_periodic_worker_kills(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    rc = soak.main(["--duration", "20", "--rate", "15", "--workers", "3", "--kill-every", "6", "--min-kills", "3",
                    "--restart-after", "3",
                    "--sample-every", "4", "--drain-timeout", "60", "--max-rss-growth-mib", "60",
                    "--max-fd-growth", "8", "--workdir", str(tmp_path / "nodes"), "--json", str(out)])
    figures = json.loads(out.read_text())
    assert rc == 0, figures
    assert figures["lost"] == 0 and figures["kills"] >= 3
    assert figures["completed"] + figures["failed"] == figures["submitted"] >= 250
    record("soak_short", tasks=figures["submitted"], faults=figures["kills"], completed=figures["completed"],
           failed=figures["failed"], lost=figures["lost"],
           fds={n: [r["fds_start"], r["fds_end"]] for n, r in figures["resources"].items()},
           rss_mib={n: [r["rss_mib_start"], r["rss_mib_end"]] for n, r in figures["resources"].items()})
