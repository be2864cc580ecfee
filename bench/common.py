"""What the benchmarks share: finding the torchjob under test and the interpreter it runs on."""

from __future__ import annotations

import os
import shutil
import sys
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
