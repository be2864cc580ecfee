"""Shared fixtures: every test runs with its own TORCHJOB_HOME, HOME and XDG folders, and fails
if anything it started wrote to the real user data or cache folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pytest

# Real servers (git, ssh, https), an offline wheelhouse, and a one-node Slurm cluster.
pytest_plugins = ["tests.servers", "tests.wheelhouse", "tests.slurm"]

_BIN = Path(sys.executable).with_name("torchjob")
TORCHJOB = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "torchrun_cli"]

# Resolved before any test changes HOME or XDG_*: the folders a careless run would write to.
REAL_DIRS = [
    platformdirs.user_data_path("torchjob", appauthor=False),
    platformdirs.user_cache_path("torchjob", appauthor=False),
    *([Path(os.environ["TORCHJOB_HOME"])] if os.environ.get("TORCHJOB_HOME") else []),
]


def snapshot(paths: list[Path]) -> dict[str, Any]:
    """Names and mtimes two levels deep: enough to notice a new run folder or cache entry."""
    state: dict[str, Any] = {}
    for root in paths:
        if not root.exists():
            state[str(root)] = None
            continue
        entries = {str(root): root.stat().st_mtime_ns}
        for child in root.iterdir():
            entries[str(child)] = child.lstat().st_mtime_ns
            if child.is_dir() and not child.is_symlink():
                for grandchild in child.iterdir():
                    entries[str(grandchild)] = grandchild.lstat().st_mtime_ns
        state[str(root)] = entries
    return state


def check_untouched(paths: list[Path], before: dict[str, Any]) -> None:
    """Fail when a real folder changed since `before`."""
    after = snapshot(paths)
    if after != before:
        changed = [p for p in after if after[p] != before.get(p)]
        pytest.fail(f"the test wrote to the real user folders {changed}; use TORCHJOB_HOME")


@dataclass
class Env:
    """Paths of the isolated environment a test runs in."""

    tmp: Path
    home: Path
    runs: Path

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.runs.iterdir()) if self.runs.exists() else []

    def only_run(self) -> tuple[Path, dict[str, Any]]:
        dirs = self.run_dirs()
        assert len(dirs) == 1, dirs
        return dirs[0], json.loads((dirs[0] / "run.json").read_text())


@pytest.fixture(autouse=True)
def iso(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    before = snapshot(REAL_DIRS)
    home = tmp_path / "tjhome"
    monkeypatch.setenv("TORCHJOB_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    for var in ("PYTHON_LAUNCHER", "NO_COLOR", "PYTHONPATH"):
        monkeypatch.delenv(var, raising=False)
    yield Env(tmp_path, home, home / "runs")
    check_untouched(REAL_DIRS, before)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty local project folder."""
    path = tmp_path / "proj"
    path.mkdir()
    return path


def torchjob(
    *args: str, cwd: Path | None = None, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run the real `torchjob` command and capture its output as bytes."""
    return subprocess.run(
        [*TORCHJOB, *args], cwd=cwd, capture_output=True, timeout=timeout, check=False, **kw
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
