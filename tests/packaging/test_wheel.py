"""The wheel holds the product and nothing else: the package (its Python, the Cython sources and compiled
extensions, the dashboard's static files) and its metadata with the licence. The test harnesses (``testing/``),
the tests, the benchmarks and the stress tools stay in the checkout; the pod image gets only what the wheel does."""

from __future__ import annotations

import re
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DIST_INFO = re.compile(r"^p2p_fast-[^/]+\.dist-info/")


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def _package_sources() -> set[str]:
    """The package's files in the checkout that must ship: Python modules, .pyx/.pxd, the UI's static files."""
    out = set()
    for path in (REPO / "p2p_fast").rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(REPO).as_posix()
        if path.suffix in (".py", ".pyx", ".pxd") or rel.startswith("p2p_fast/app/ui/"):
            out.add(rel)
    return out


def test_wheel_holds_only_the_package_and_its_metadata(built_wheel: Path) -> None:
    names = _names(built_wheel)
    strays = [n for n in names if not n.startswith("p2p_fast/") and not DIST_INFO.match(n)]
    assert not strays, f"files outside the package in the wheel: {strays[:20]}"
    for harness in ("testing/", "tests/", "bench/", "stress/", "scripts/", "k8s/"):
        found = [n for n in names if f"/{harness}" in "/" + n]
        assert not found, f"{harness} in the wheel: {found[:10]}"
    generated_c = [n for n in names if n.endswith(".c")]
    assert not generated_c, f"Cython's generated C in the wheel: {generated_c}"


def test_wheel_holds_every_source_the_package_needs(built_wheel: Path) -> None:
    names = set(_names(built_wheel))
    missing = sorted(_package_sources() - names)
    assert not missing, f"package files missing from the wheel: {missing}"
    assert any(n.startswith("p2p_fast/app/ui/") and n.endswith(".html") for n in names), "no dashboard page"
    for pyx in (REPO / "p2p_fast" / "_ext").glob("*.pyx"):  # built with P2P_FAST_REQUIRE_EXTENSIONS=1
        assert any(n.startswith(f"p2p_fast/_ext/{pyx.stem}.") and n.endswith(".so") for n in names), \
            f"{pyx.name} not compiled into the wheel"


def test_wheel_metadata_licence_and_entry_points(built_wheel: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(built_wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if DIST_INFO.match(n) and n.endswith("/METADATA"))).decode()
        licence = [n for n in names if DIST_INFO.match(n) and n.endswith("/licenses/LICENSE")]
        assert licence, "LICENSE is not in the wheel's metadata"
        text = zf.read(licence[0]).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert project["license"] == "MIT" and f"License-Expression: {project['license']}" in meta
    assert text.startswith("MIT License") and "the p2p-fast authors" in text
    assert text == (REPO / "LICENSE").read_text()
    for script, target in project["scripts"].items():
        assert f"{script} = {target}" in entry_points
    declared = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [d for d in declared if "extra ==" not in d]
    assert sorted(runtime) == sorted(project["dependencies"])


# -- the pod image -----------------------------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore matching (Go filepath.Match plus ``**``), for the patterns this repository uses."""
    out = ""
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "(?:/.*)?$")  # a directory's pattern covers everything below it


def build_context(files: list[str]) -> list[str]:
    """The files a ``docker build .`` sends, after .dockerignore (the last matching pattern decides)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _dockerignore_regex(line.lstrip("!"))))
    sent = []
    for name in files:
        included = True
        for keep, rx in rules:
            if rx.match(name):
                included = keep
        if included:
            sent.append(name)
    return sent


def test_dockerignore_matcher_reads_the_patterns_as_docker_does() -> None:
    files = ["p2p_fast/app/node.py", "p2p_fast/_ext/_seen_c.c", "p2p_fast/x/__pycache__/a.pyc", "testing/a.py",
             "tests/conftest.py", "node/worker.yaml", "README.md", "bench/gate.py", "p2p_fast.egg-info/PKG-INFO"]
    assert build_context(files) == ["p2p_fast/app/node.py", "node/worker.yaml", "README.md"]


def test_image_gets_only_the_product() -> None:
    """The build context holds no test harness, test, benchmark or stress tool, and the Dockerfile copies the
    package, its build files and the role configs only."""
    tracked = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*")
               if p.is_file() and not {".git", ".venv", ".cache"} & set(p.relative_to(REPO).parts)]
    sent = build_context(tracked)
    for outside in ("testing/", "tests/", "bench/", "stress/", "scripts/", "k8s/", "docs/"):
        assert not [n for n in sent if n.startswith(outside)], f"{outside} is in the image's build context"
    assert "p2p_fast/app/node.py" in sent and "pyproject.toml" in sent and "LICENSE" in sent
    copies = re.findall(r"^COPY (?!--from)(.+)$", (REPO / "Dockerfile").read_text(), re.M)
    sources = {word.rstrip("/") for line in copies for word in line.split()[:-1] if not word.startswith("--")}
    assert sources <= {"pyproject.toml", "setup.py", "README.md", "LICENSE", "p2p_fast", "node/bootstrap.yaml",
                       "node/relay.yaml", "node/worker.yaml"}, sources
