"""Fixtures of the offline deployment tests: the kustomize targets (see k8s_render)."""

from __future__ import annotations

import pytest
from k8s_render import OVERLAYS, TARGETS


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: runs the pod image built by ./build.sh (podman)")
