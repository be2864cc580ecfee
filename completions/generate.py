#!/usr/bin/env python3
"""Write bash, zsh and fish completion scripts for torchjob: what `torchjob completion SHELL`
prints (an installed torchjob prints the same, for pip and pipx installs).

The scripts call back into `torchjob` at completion time, so commands, flags, choices and run
ids stay current; tests/test_completions.py fails when the committed files differ from what
this writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FILES = {"bash": "torchjob.bash", "zsh": "_torchjob", "fish": "torchjob.fish"}


def generate(shell: str) -> str:
    """The completion script for shell, as `torchjob completion SHELL` prints it."""
    return subprocess.run(
        [sys.executable, "-m", "torchrun_cli", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def main() -> None:
    here = Path(__file__).parent
    for shell, name in FILES.items():
        (here / name).write_text(generate(shell))
        print(f"wrote {here / name}")


if __name__ == "__main__":
    main()
