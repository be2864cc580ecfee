"""What the benchmarks share: finding the torchjob under test and the interpreter it runs on,
timing a command, and listing the run folders of a runs folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_torchjob(explicit: str | None) -> Path:
    """The console script: --torchjob, else next to this interpreter, the repo venv, or PATH."""
    if explicit:
        return Path(explicit).resolve()
    candidates = [Path(sys.executable).parent / "torchjob", REPO / ".venv" / "bin" / "torchjob"]
    found = shutil.which("torchjob")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    sys.exit("bench: no torchjob console script found; pass --torchjob PATH")


def interpreter_of(console_script: Path) -> Path:
    """The interpreter named on the console script's shebang: the one torchjob really runs on."""
    with console_script.open("rb") as f:
        first = f.readline().decode().strip()
    if not first.startswith("#!"):
        sys.exit(f"bench: {console_script} has no shebang line")
    return Path(first[2:].split()[0])


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    """Wall seconds of one command; aborts the benchmark when its exit status is not in ok."""
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    took = time.perf_counter() - began
    if done.returncode not in ok:
        sys.exit(f"bench: {' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return took


def run_folders(runs: Path) -> list[Path]:
    """The run folders in a runs folder: not the .index, .locks and other dot-folders
    torchjob keeps there."""
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
