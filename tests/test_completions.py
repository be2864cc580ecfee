"""Completion scripts: committed, current, and they really complete."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Env, write

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


def _record(runs: Path, run_id: str, name: str) -> None:
    """A finished run as its folder and run.json have it (what completion reads)."""
    write(
        runs / run_id / "run.json",
        json.dumps(
            {
                "schema_version": 1,
                "id": run_id,
                "name": name,
                "status": "succeeded",
                "started_at": f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T00:00:00.000+00:00",
                "argv": [],
                "cwd": "/",
                "interpreter": sys.executable,
                "source": {},
                "environment": {},
                "params": {},
                "spec": {},
                "exit_code": 0,
            }
        ),
    )


# Sourced by a real bash: what `complete -p` registered for torchjob, then one completion per
# line of stdin, as bash makes it at a Tab: the function `-F` names, with COMP_WORDS and
# COMP_CWORD set, run through `compgen -F` (which, like a Tab, keeps what the function offers
# without filtering it); each answer sorted, with a line `--` after it.
BASH = r"""
source <(torchjob completion bash)
spec=$(complete -p torchjob) || exit 3
echo "$spec"
func=${spec#*-F }; func=${func%% *}
at_tab() { COMP_WORDS=("${words[@]}"); COMP_CWORD=$(( ${#words[@]} - 1 )); "$func" torchjob; }
while IFS= read -r line; do
    read -ra words <<< "$line"
    [[ $line == *" " ]] && words+=("")
    compgen -F at_tab -- "${words[-1]}" 2>/dev/null | LC_ALL=C sort
    echo --
done
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_runs_names_and_the_values_of_choices(iso: Env) -> None:
    _record(iso.runs, "20260101-000000-alpha-aaaa", "alpha")
    _record(iso.runs, "20260102-000000-alpha-bbbb", "alpha")
    _record(iso.runs, "20260103-000000-beta-cccc", "beta")
    _record(iso.runs, "20260104-000000-my-job-dddd", "my job")  # would need quoting
    other = iso.tmp / "elsewhere"
    _record(other, "20250101-000000-gamma-eeee", "gamma")
    lines = [
        "torchjob show ",
        "torchjob logs al",
        "torchjob logs 2026010",
        "torchjob cancel last",
        "torchjob show --runs-dir " + str(other) + " ",
        "torchjob run --env-manager ",
        "torchjob run --tty a",
        "torchjob run --backend ",
        "torchjob runs --status s",
        "torchjob completion ",
        "torchjob lo",
    ]
    bindir = str(Path(sys.executable).parent)
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH],
        input="\n".join(lines) + "\n",
        env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    registered, _, rest = res.stdout.partition("\n")
    assert registered == "complete -o default -F _torchjob_completion torchjob"
    answers = [block.split() for block in rest.split("--\n")][: len(lines)]
    show, logs_al, logs_prefix, cancel, elsewhere, managers, tty, backend, status, shells, lo = (
        answers
    )
    assert show == sorted(
        [
            "20260101-000000-alpha-aaaa",
            "20260102-000000-alpha-bbbb",
            "20260103-000000-beta-cccc",
            "20260104-000000-my-job-dddd",
            "alpha",
            "beta",
            "last",
        ]
    )
    assert logs_al == ["alpha"]
    assert logs_prefix == [
        "20260101-000000-alpha-aaaa",
        "20260102-000000-alpha-bbbb",
        "20260103-000000-beta-cccc",
        "20260104-000000-my-job-dddd",
    ]
    assert cancel == ["last"]
    assert elsewhere == ["20250101-000000-gamma-eeee", "gamma", "last"]
    assert managers == ["conda", "none", "uv", "virtualenv"]
    assert tty == ["always", "auto"]
    assert backend == ["local", "slurm"]
    assert status == ["setup_error", "succeeded"]
    assert shells == ["bash", "fish", "zsh"]
    assert lo == ["logs"]


def test_zsh_and_fish_protocols_complete_runs(iso: Env) -> None:
    _record(iso.runs, "20260101-000000-alpha-aaaa", "alpha")
    zsh = _complete(
        {"_TORCHJOB_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "torchjob show al"}
    )
    assert '"alpha":"the newest run named alpha"' in zsh
    fish = _complete(
        {
            "_TORCHJOB_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "torchjob run --env-manager ",
        }
    )
    assert fish.split() == ["none", "virtualenv", "uv", "conda"]
