"""What the benchmarks read from ``/proc``: a process's CPU time, its threads' CPU, its children and descendants,
its program, its RSS; and how idle the machine's CPUs were.

One reader for all of them, so every benchmark counts CPU the same way (utime + stime, fields 14 and 15 of
``stat``, read after the command name, which may hold spaces and parentheses). Linux only, as the benchmarks are.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str | Path) -> list[str]:
    """The fields of a ``stat`` file after the command name (``state`` first)."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def cpu_ticks(pid: int, tid: int | None = None) -> int:
    """utime + stime of a process (or of one of its threads) in clock ticks; ``OSError`` once it is gone."""
    fields = _stat_fields(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    return int(fields[11]) + int(fields[12])


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds; ``OSError`` once it is gone."""
    return cpu_ticks(pid) / CLK_TCK


def total_ticks(pids: list[int]) -> int:
    """The summed CPU ticks of ``pids``; those already gone count 0."""
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks(pid)
        except OSError:
            pass
    return total


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks of each of ``pid``'s threads, keyed ``"<name> <tid>"``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = text[text.index("(") + 1:text.rindex(")")]
        out[f"{name} {tid}"] = cpu_ticks(pid, int(tid))
    return out


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` now."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(f"/proc/{entry}/stat")[1]) == pid:
                    out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return out


def descendants(pid: int) -> list[int]:
    """Every pid below ``pid`` now: its children, theirs, and so on."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def program(pid: int) -> str:
    """The file name of the program ``pid`` runs (``cmdline``'s first word); "?" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1]
    except OSError:
        return "?"


def idle_ticks() -> tuple[int, int]:
    """(idle + iowait, total) ticks of all CPUs so far (the first line of ``/proc/stat``)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the CPUs' time that was idle between two :func:`idle_ticks` readings."""
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (``VmRSS``); NaN for a process without one (a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
