"""Processes inside test-bed namespaces: started with logs to files, awaited with deadlines, always reaped.

Every process is started in its own session (its own process group), so stopping it also stops whatever it forked.
`ProcessTracker.stop_all()` is what the test bed calls at teardown: SIGTERM to every group at once, one shared grace
period, then SIGKILL, then reap; nothing outlives the bed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from testing.testbed._system import TestbedError, netns_exec_argv, tool_env

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """`wait_until` ran out of time; the message names what was awaited (and the last error seen, if any)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    what: str = "condition",
    interval: float = 0.02,
    max_interval: float = 0.25,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate()` until it returns something truthy, and return that; at most `timeout` seconds.

    Exceptions of the types in `ignore` count as "not yet" (handy for `ConnectionRefusedError` while a server
    starts); the last one is named in the `WaitTimeout` raised when the deadline passes. The predicate is always
    tried at least once, and once more right at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as exc:
            last_error = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class ManagedProcess:
    """A long-running process in a namespace, its stdout and stderr going to files in the bed's work directory."""

    def __init__(self, popen: subprocess.Popen[Any], name: str, ns: str, argv: Sequence[str],
                 stdout_path: Path, stderr_path: Path) -> None:
        self.popen = popen
        self.name = name
        self.ns = ns
        self.argv = list(argv)
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} ns={self.ns} {state}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        """The last lines of stdout and stderr, for failure messages."""
        out = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = path.read_text(errors="replace") if path.exists() else ""
            last = text.splitlines()[-lines:]
            out.append(f"--- {self.name} {label} ({path}) ---" + ("\n" + "\n".join(last) if last else " (empty)"))
        return "\n".join(out)

    def wait_for_output(self, pattern: str | re.Pattern[str], timeout: float = 10.0, *,
                        stream: str = "stdout") -> re.Match[str]:
        """Wait until `pattern` (a regex) appears in the process's `stream` ("stdout", "stderr" or "both").

        Fails at once, with the log tails, if the process exits before printing it.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def check() -> re.Match[str] | None:
            text = {"stdout": self.stdout, "stderr": self.stderr,
                    "both": lambda: self.stdout() + self.stderr()}[stream]()
            match = regex.search(text)
            if match is None and not self.running:
                raise TestbedError(
                    f"{self.name} exited {self.returncode} before printing {regex.pattern!r}\n{self.tail()}")
            return match

        try:
            return wait_until(check, timeout, what=f"{self.name} to print {regex.pattern!r} on {stream}")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.tail()}") from None

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit and return its exit code; `WaitTimeout` if it is still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {self.name} (pid {self.pid}) to exit"
                              ) from None

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process's whole group (it and whatever it forked)."""
        if self.running:
            _signal_group(self.pid, sig)

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit code."""
        self.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL (kill -9) the process group and reap it."""
        _signal_group(self.pid, signal.SIGKILL)
        return self.popen.wait(5.0)


class ProcessTracker:
    """Starts processes in namespaces and remembers every one, so teardown can stop and reap them all."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.managed: list[ManagedProcess] = []
        self.raw: list[subprocess.Popen[Any]] = []
        self._names: dict[str, int] = {}

    def _unique(self, name: str) -> str:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}.{n}"

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen` of `argv` inside `ns`; tracked and killed at teardown. Own session unless told."""
        kwargs.setdefault("start_new_session", True)
        kwargs["env"] = tool_env(kwargs.get("env"))
        proc = subprocess.Popen(netns_exec_argv(ns, argv), **kwargs)
        self.raw.append(proc)
        return proc

    def spawn(self, ns: str, argv: Sequence[str], *, name: str | None = None, env: dict[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None, stdin: int | IO[Any] | None = subprocess.DEVNULL,
              ) -> ManagedProcess:
        """Start a long-running process in `ns`, stdout and stderr to `<logdir>/<name>.{out,err}`."""
        name = self._unique(name or Path(str(argv[0])).name)
        out_path = self.logdir / f"{name}.out"
        err_path = self.logdir / f"{name}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(netns_exec_argv(ns, argv), stdout=out, stderr=err, stdin=stdin,
                                     start_new_session=True, env=tool_env(env), cwd=cwd)
        proc = ManagedProcess(popen, name, ns, argv, out_path, err_path)
        self.managed.append(proc)
        return proc

    def stop_all(self, grace: float = 3.0) -> list[str]:
        """SIGTERM every tracked process group, wait up to `grace` seconds in all, SIGKILL the rest, reap all.

        Returns a description of each process that had to be killed with SIGKILL or could not be reaped.
        """
        problems: list[str] = []
        popens: list[tuple[str, subprocess.Popen[Any], bool]] = [
            (p.name, p.popen, True) for p in self.managed] + [
            (" ".join(map(str, p.args)) if isinstance(p.args, (list, tuple)) else str(p.args), p,
             # A raw Popen made in our own session cannot be signalled as a group without hitting ourselves.
             os.getpgid(0) != _pgid_or_none(p.pid)) for p in self.raw]
        for _, p, group in popens:
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGTERM) if group else p.terminate()
        deadline = time.monotonic() + grace
        for name, p, group in popens:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problems.append(f"{name} (pid {p.pid}) ignored SIGTERM for {grace:.0f}s; killed")
            # Also kill what the process left in its group, even if the leader already exited.
            _signal_group(p.pid, signal.SIGKILL) if group else p.kill()
            try:
                p.wait(5.0)
            except subprocess.TimeoutExpired:
                problems.append(f"{name} (pid {p.pid}) survived SIGKILL")
        for p in self.raw:
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
        return problems

    def tails(self, lines: int = 20) -> str:
        return "\n".join(p.tail(lines) for p in self.managed)


def _pgid_or_none(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
