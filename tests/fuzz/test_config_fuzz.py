"""Config fuzzing: YAML documents, well-formed and not, near our schema and far from it. ``load_config_text`` must
answer every one with a valid :class:`Config` or a :class:`ConfigError` naming the problem, nothing else, and what it
accepts must be usable (numbers finite and within their ranges)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import record
from observed import Observed
from p2p_fast.core.config import Config, ConfigError, load_config_text

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if not f.metadata.get("internal")}
KEYS = {name: [f.name for f in dataclasses.fields(getattr(Config(), name))] for name in SECTIONS}
SEEN = Observed()
ACCEPTED = {"docs": 0}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-5, 70000), st.integers(-2**1100, 2**1100),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
    st.text(max_size=30),
    st.sampled_from(["worker", "bootstrap", "relay", "noise", "tls", "debug", "json", "auto", "127.0.0.1:0",
                     "0.0.0.0:8080", "/ip4/127.0.0.1/tcp/4001", "/dns4/a.b.c/tcp/1/p2p/12D3KooW",
                     "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWGzJ9dZcbkV8mUqMvDuKPRNrBjSJMRtZSqZGdHxRyS8LZ", "compute",
                     "12D3KooWGzJ9dZcbkV8mUqMvDuKPRNrBjSJMRtZSqZGdHxRyS8LZ", "", "~", "1e999", ".nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def near_schema(draw: st.DrawFn) -> Any:
    """Mostly real sections and keys, with values of every type; now and then a typo or a foreign shape."""
    doc: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=6, unique=True)):
        if draw(st.integers(0, 15)) == 0:
            doc[section] = draw(values)
            continue
        body = {}
        for key in draw(st.lists(st.sampled_from(KEYS[section]), max_size=5, unique=True)):
            body[key] = draw(values)
        if draw(st.integers(0, 10)) == 0:
            body[draw(st.text(max_size=10))] = draw(values)
        doc[section] = body
    if draw(st.integers(0, 20)) == 0:
        doc[draw(scalars)] = draw(values)
    return doc


@SEEN.watch("documents")
def _check(text: str) -> None:
    """One YAML text through the loader: a ``Config`` whose numbers are finite and in range, or a ``ConfigError``
    naming the file; counted (inputs, crashes, violations) for the summary."""
    try:
        cfg = load_config_text(text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml"), str(exc)
        return
    ACCEPTED["docs"] += 1
    for name in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, name)):
            value = getattr(getattr(cfg, name), f.name)
            if isinstance(value, float):
                assert math.isfinite(value), (name, f.name, value)
            check = f.metadata.get("check")
            if check is not None:
                assert check(value) is None, (name, f.name, value)


@settings(max_examples=300, deadline=None)
@given(doc=near_schema())
def test_yaml_near_the_schema_is_accepted_or_a_config_error(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    _check(text)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.sampled_from(["node:", "  role: worker", "network:", "  bootstrap_peers:",
                                                "    - ", "- ", "[", "]", "{", "}", ": ", "&a", "*a", "!!python/",
                                                "!!binary", "---", "...", "\t", "%YAML 1.1", "? ", "|", ">", "'",
                                                '"', "#", "\n", "1e999", ".inf", "0x1F", "0o17", "~", "<<: *a"]),
                               max_size=30).map("".join)))
def test_arbitrary_text_is_accepted_or_a_config_error(text: str) -> None:
    _check(text)


def test_every_number_field_refuses_nan_and_infinity() -> None:
    """Found by this fuzzer: ``heartbeat_interval: .nan`` passed every range check (NaN compares false)."""
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(Config(), section)):
            if f.type not in ("float", float):
                continue
            for bad in (".nan", ".inf", "-.inf", "1" + "0" * 400):
                _refuses(section, f.name, bad)


@SEEN.watch("nan-and-infinity")
def _refuses(section: str, key: str, bad: str) -> None:
    try:
        load_config_text(f"{section}: {{{key}: {bad}}}", "fuzz.yaml")
    except ConfigError as exc:
        assert f"{section}.{key}" in str(exc)
    else:
        raise AssertionError(f"{section}.{key}: {bad} accepted")


def test_zz_figures() -> None:
    """Runs last in this module: records what the tests above observed (documents tried and accepted, crashes:
    anything but a ``Config`` or a ``ConfigError``, violations), then requires no crash and no violation."""
    SEEN.require_inputs()
    figures = SEEN.figures()
    record("config_fuzz", accepted=ACCEPTED["docs"], **figures)
    assert figures["crashes"] == 0 and figures["violations"] == 0, figures["failing"]
