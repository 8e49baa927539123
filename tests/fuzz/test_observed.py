"""The fuzz summaries count what happened: a property that crashes or breaks is counted as such (so a summary's
``crashes: 0`` is an observation, not a constant), under hypothesis as the fuzz modules run it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observed import Observed


def test_crashes_violations_and_inputs_are_counted_per_property() -> None:
    seen = Observed()

    @settings(max_examples=50, deadline=None, database=None)
    @given(n=st.integers(0, 1000))
    @seen.watch("clean")
    def clean(n: int) -> None:
        assert n >= 0

    @settings(max_examples=50, deadline=None, database=None)
    @given(data=st.binary(min_size=1, max_size=8))
    @seen.watch("crashing")
    def crashing(data: bytes) -> None:
        if data[0] > 100:
            raise KeyError("a decoder raising something other than its own error")

    @settings(max_examples=50, deadline=None, database=None)
    @given(n=st.integers(0, 1000))
    @seen.watch("violating")
    def violating(n: int) -> None:
        assert n < 500, "a property broken"

    clean()
    with pytest.raises(KeyError):
        crashing()
    with pytest.raises(AssertionError):
        violating()
    got = seen.figures()
    assert got["by_property"]["clean"] == 50
    assert got["crashes"] >= 1 and got["violations"] >= 1
    assert got["failing"] == {"crashing": {"crashes": seen.crashes["crashing"], "violations": 0},
                              "violating": {"crashes": 0, "violations": seen.violations["violating"]}}
    assert got["inputs"] == sum(seen.inputs.values()) > 50


def test_a_summary_of_nothing_is_skipped_not_reported_clean() -> None:
    with pytest.raises(pytest.skip.Exception, match="nothing to summarise"):
        Observed().require_inputs()
