"""Completion scripts: committed, current, and they really complete."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gen", ROOT / "completions" / "generate.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


@pytest.mark.parametrize("shell", sorted(gen.FILES))
def test_committed_completion_is_current(shell: str) -> None:
    committed = (ROOT / "completions" / gen.FILES[shell]).read_text()
    assert committed == gen.generate(shell), "run: python completions/generate.py"


def _complete(env: dict[str, str]) -> str:
    bindir = str(Path(sys.executable).parent)
    full = {**os.environ, **env, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    return subprocess.run(["torchjob"], env=full, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_script_completes_commands_and_flags() -> None:
    bindir = str(Path(sys.executable).parent)
    script = ROOT / "completions" / "torchjob.bash"
    out = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{script}"; COMP_WORDS=(torchjob ru); COMP_CWORD=1; '
            '_torchjob_completion torchjob; printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["run", "runs"]


def test_zsh_and_fish_protocols_offer_run_flags() -> None:
    """zsh and fish are not installed here: their scripts' callback protocol is exercised."""
    zsh = _complete(
        {"_TORCHJOB_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "torchjob run --time"}
    )
    assert "--timeout" in zsh
    fish = _complete(
        {
            "_TORCHJOB_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "torchjob ru",
        }
    )
    assert [line.split("\t")[0] for line in fish.splitlines()] == ["run", "runs"]
