"""Every command in the README runs, from the repository root, with the exit status the README
says (a trailing `# exit N`, else 0). The set-up commands are what CI itself runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import Env

ROOT = Path(__file__).resolve().parents[1]


def tour_commands() -> list[tuple[str, int]]:
    """Every line of every bash block after the set-up one, in order."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)[1:]
    assert blocks
    out = []
    for line in "\n".join(blocks).splitlines():
        command, _, comment = line.partition(" # ")
        if command.strip():
            m = re.search(r"exit (\d+)", comment)
            out.append((command.strip(), int(m.group(1)) if m else 0))
    return out


def test_tour_commands_run_with_the_documented_status(iso: Env) -> None:
    commands = tour_commands()
    assert len(commands) >= 25
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command, expected in commands:
        res = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        assert res.returncode == expected, (command, res.stderr.decode()[-2000:])
        assert b"Traceback" not in res.stderr or expected != 0, command
    assert len(iso.run_dirs()) >= 10
