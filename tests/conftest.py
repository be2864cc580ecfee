"""Shared fixtures: every test runs with its own TORCHJOB_HOME, HOME and XDG folders, and fails
if anything it started wrote to the real user data or cache folders (see
helpers.check_untouched for how a write is told to be the test's). Helpers the tests share
live in tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest

from tests.helpers import ROOT, Env, check_untouched, snapshot

# Real servers (git, ssh, https), an offline wheelhouse, and a one-node Slurm cluster.
pytest_plugins = ["tests.servers", "tests.wheelhouse", "tests.slurm"]

# Resolved before any test changes HOME or XDG_*: the folders a careless run would write to.
# $TORCHJOB_HOME/cache is listed too, so its entries are looked at as deep as the user cache's.
_HOME = os.environ.get("TORCHJOB_HOME")
REAL_DIRS = [
    platformdirs.user_data_path("torchjob", appauthor=False),
    platformdirs.user_cache_path("torchjob", appauthor=False),
    *([Path(_HOME), Path(_HOME) / "cache"] if _HOME else []),
]


@pytest.fixture(autouse=True)
def iso(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    before = snapshot(REAL_DIRS)
    home = tmp_path / "tjhome"
    monkeypatch.setenv("TORCHJOB_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    # the suite run as a GitHub Actions step: torchjob would add ::group:: lines and a summary
    for var in (
        "PYTHON_LAUNCHER",
        "NO_COLOR",
        "PYTHONPATH",
        "GITHUB_ACTIONS",
        "GITHUB_STEP_SUMMARY",
    ):
        monkeypatch.delenv(var, raising=False)
    yield Env(tmp_path, home, home / "runs")
    check_untouched(REAL_DIRS, before, [tmp_path_factory.getbasetemp(), ROOT])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty local project folder."""
    path = tmp_path / "proj"
    path.mkdir()
    return path
