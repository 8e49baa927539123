"""What a fuzz module's properties observed, so that its summary reports counts it saw rather than constants.

A property wrapped with :meth:`Observed.watch` counts every input it is called with, and every call that raised:
an ``AssertionError`` is a *violation* (the property found a wrong answer: an unknown error reason, a frame over its
limit, a round trip that changed a value), any other exception a *crash* (the code under test raised something
other than its own error type, what would stop a node). Hypothesis calls a failing property again while it shrinks
the input, so a failure counts once per call: any figure above 0 is a failure, not a rate.

The module's last test (``test_zz_figures``) records :meth:`Observed.figures` with ``harness.record`` (a
``FIGURES {...}`` line on stdout, and the file named by ``P2P_FAST_FIGURES``) and then asserts the behaviour:
no crash, no violation.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Callable, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])


class Observed:
    """Inputs, violations and crashes per property of one fuzz module."""

    def __init__(self) -> None:
        self.inputs: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.crashes: Counter[str] = Counter()

    def watch(self, name: str) -> Callable[[F], F]:
        """Decorator (innermost, under ``@given``): count this property's inputs and failures under ``name``."""

        def wrap(fn: F) -> F:
            @functools.wraps(fn)  # keeps the signature that pytest and hypothesis read
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.inputs[name] += 1
                try:
                    return fn(*args, **kwargs)
                except AssertionError:
                    self.violations[name] += 1
                    raise
                except Exception:
                    self.crashes[name] += 1
                    raise

            return counted  # type: ignore[return-value]

        return wrap

    def figures(self) -> dict[str, Any]:
        """The summary: totals and per-property counts, as observed in this session."""
        return {"inputs": sum(self.inputs.values()), "by_property": dict(self.inputs),
                "crashes": sum(self.crashes.values()), "violations": sum(self.violations.values()),
                "failing": {k: {"crashes": self.crashes[k], "violations": self.violations[k]}
                            for k in sorted(set(self.crashes) | set(self.violations))}}

    def require_inputs(self) -> None:
        """Skip the summary when no property of the module ran in this session (``-k`` chose the summary alone):
        a summary of nothing would read as a clean run."""
        if not self.inputs:
            pytest.skip("no fuzz property of this module ran in this session: nothing to summarise")
