"""A wheelhouse the tests build themselves, so environment tests install offline and fast:
tinya 1.0 and 2.0, tinyb 1.0 (needs tinya>=2), tinybroken, an sdist whose build fails, and
tinyslow, an sdist whose build backend writes its pid to $TINYSLOW_PIDFILE and then waits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = {
    ("tinya", "1.0"): [],
    ("tinya", "2.0"): [],
    ("tinyb", "1.0"): ["tinya>=2"],
}
FAILING_BACKEND = """
def build_wheel(*args, **kwargs):
    raise SystemExit("tinybroken: this build fails on purpose (a compile error, say)")
"""
SLOW_BACKEND = """
import os, time
def build_wheel(*args, **kwargs):
    with open(os.environ["TINYSLOW_PIDFILE"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(600)  # a long compile: the test kills torchjob meanwhile
"""


def _package(root: Path, name: str, version: str, deps: list[str]) -> Path:
    folder = root / f"{name}-{version}"
    (folder / name).mkdir(parents=True)
    imports = "".join(f"import {dep.split('>')[0]}\n" for dep in deps)  # as packages do
    (folder / name / "__init__.py").write_text(f"{imports}VALUE = '{name} {version}'\n")
    requires = ", ".join(f'"{d}"' for d in deps)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{requires}]\n'
    )
    return folder


def build(folder: Path) -> Path:
    """Wheels with pip and hatchling (already installed here: no network)."""
    wheels = folder / "wheels"
    src = folder / "src"
    for (name, version), deps in PACKAGES.items():
        pkg = _package(src, name, version, deps)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--no-cache-dir",  # not ~/.cache
                "-w",
                str(wheels),
                str(pkg),
            ],
            check=True,
        )
    for name, backend in (("tinybroken", FAILING_BACKEND), ("tinyslow", SLOW_BACKEND)):
        sdist = src / f"{name}-1.0"
        sdist.mkdir(parents=True)
        (sdist / "backend.py").write_text(backend)
        (sdist / "pyproject.toml").write_text(
            '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\n'
        )
        (sdist / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        subprocess.run(
            ["tar", "-czf", str(wheels / f"{name}-1.0.tar.gz"), "-C", str(src), f"{name}-1.0"],
            check=True,
        )
    return wheels


def offline_env(wheels: Path) -> dict[str, str]:
    """pip and uv install only from the wheelhouse: no index, no network."""
    return {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(wheels),
        "UV_OFFLINE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture
def offline(wheelhouse: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Every torchjob the test starts installs from the wheelhouse only."""
    env = offline_env(wheelhouse)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("UV_CACHE_DIR", str(wheelhouse.parent / "uv-cache"))
    yield {**os.environ}
