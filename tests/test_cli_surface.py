"""What a user meets first: -V, --debug anywhere, each command's help ending with examples
that parse, choice options showing their choices, `torchjob run train.py ARGS` and
`torchjob run DIR`, `torchjob completion SHELL`, and what the prunes say they removed."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from tests.helpers import ROOT, Env, newest_record, torchjob, write
from tests.servers import make_bare_repo
from tests.terminal import Terminal
from torchrun_cli import __version__
from torchrun_cli.cli import app

ARGV = "import sys\nprint('argv', sys.argv[1:])\n"


def _leaves(group: Any, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command that does something, as the words that name it (a group that runs
    without a subcommand, as `runs` does, is one too)."""
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            if command.invoke_without_command:
                out.append((*words, name))
            out += _leaves(command, (*words, name))
        else:
            out.append((*words, name))
    return out


COMMANDS = _leaves(typer.main.get_command(app))


def test_version_short_and_long() -> None:
    for flag in ("-V", "--version"):
        res = torchjob(flag)
        assert (res.returncode, res.stdout) == (0, f"torchjob {__version__}\n".encode())


def test_debug_after_the_subcommand(iso: Env) -> None:
    assert torchjob("runs", "--debug").returncode == 0
    assert torchjob("env", "list", "--debug").returncode == 0
    quiet = torchjob("show", "nope")
    assert quiet.returncode == 2 and b"Traceback" not in quiet.stderr
    loud = torchjob("show", "nope", "--debug")  # with --debug, an error shows its traceback,
    assert b"Traceback" in loud.stderr and b"UsageError" in loud.stderr
    assert loud.returncode == 2 and loud.stderr.endswith(quiet.stderr)  # and still says it all


def test_the_commands_are_all_here() -> None:
    assert {" ".join(c) for c in COMMANDS} >= {
        "run",
        "validate",
        "runs",
        "runs prune",
        "rerun",
        "compare",
        "diff",
        "plot",
        "show",
        "logs",
        "cancel",
        "completion",
        "env list",
        "env prune",
        "env rm",
        "cache list",
        "cache prune",
    }


@pytest.mark.parametrize("words", [(), *COMMANDS], ids=lambda w: " ".join(w) or "torchjob")
def test_help_ends_with_examples_that_parse(words: tuple[str, ...]) -> None:
    res = torchjob(*words, "--help")
    assert res.returncode == 0
    help_text = res.stdout.decode()
    head, _, tail = help_text.rpartition("Examples:\n")
    assert head, help_text
    examples = [line.strip() for line in tail.splitlines() if line.strip()]
    assert 2 <= len(examples) <= 4, examples
    assert all(e.startswith(" ".join(("torchjob", *words))) for e in examples), examples
    assert all(len(line) <= 80 for line in help_text.splitlines()[-len(examples) :])
    for example in examples:
        argv = shlex.split(example.partition(" #")[0].partition(" > ")[0])[1:]
        _parse(argv)


def _parse(argv: list[str]) -> None:
    """Parse argv as torchjob does (click raises on a bad one), with no command run."""
    group = typer.main.get_command(app)
    stack = [group]
    while stack:
        command = stack.pop()
        if isinstance(command, TyperGroup):
            stack += command.commands.values()
        else:
            command.callback = lambda **_: None
    group.main(argv, "torchjob", standalone_mode=False, obj={"trailing": [], "debug": False})


def test_choice_options_show_their_choices() -> None:
    run_help = torchjob("run", "--help").stdout.decode()
    for shown in (
        "--env-manager [none|virtualenv|uv|conda]",
        "--tty [auto|always|never]",
        "--backend [slurm|local]",
    ):
        assert shown in run_help
    runs_help = " ".join(torchjob("runs", "--help").stdout.decode().split())
    assert "--status [running|succeeded|failed|cancelled|timeout|setup_error|lost]" in runs_help


def test_run_alone_names_spec_yaml(iso: Env) -> None:
    res = torchjob("run")
    assert res.returncode == 2
    assert b"torchjob run SPEC.yaml" in res.stderr and b"torchjob run train.py" in res.stderr


def test_run_a_script_in_this_folder_with_its_arguments(tmp_path: Path, iso: Env) -> None:
    write(tmp_path / "train.py", ARGV)
    cases = [
        (["--lr", "0.1", "--debug", "-q"], "['--lr', '0.1', '--debug', '-q']"),
        (["--", "--lr", "1"], "['--lr', '1']"),  # `--` right after the script is optional
        (["a", "--", "b"], "['a', '--', 'b']"),  # later ones are the script's
    ]
    for args, shown in cases:
        res = torchjob("run", "train.py", *args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode() == f"argv {shown}\n"
    rec = newest_record(iso.runs)
    assert (rec["name"], rec["cwd"], rec["spec"]["script"]) == ("train", str(tmp_path), "train.py")
    # torchjob's own flags go before the script
    res = torchjob("run", "-q", "--name", "n1", "train.py", "x", cwd=tmp_path)
    assert (res.returncode, res.stdout, newest_record(iso.runs)["name"]) == (0, b"", "n1")
    res = torchjob("run", "-s", "other.py", "train.py", cwd=tmp_path)
    assert res.returncode == 2 and b"two scripts" in res.stderr


def test_run_a_folder_uses_its_torchjob_yaml(tmp_path: Path, iso: Env) -> None:
    """`run DIR` and `validate DIR` read DIR/torchjob.yaml, or say it is missing."""
    folder = tmp_path / "proj"
    write(folder / "train.py", ARGV)
    for command in ("run", "validate"):
        res = torchjob(command, "proj", cwd=tmp_path)
        assert res.returncode == 2
        assert b"without a torchjob.yaml" in res.stderr and b"proj/torchjob.yaml" in res.stderr
    write(folder / "torchjob.yaml", "name: fromdir\nscript: train.py\nargs: [x]\n")
    res = torchjob("validate", "proj", cwd=tmp_path)
    shown = f"ok: proj/torchjob.yaml: script train.py in {folder}\n"
    assert (res.returncode, res.stdout.decode()) == (0, shown)
    res = torchjob("run", "-q", "proj", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert newest_record(iso.runs)["name"] == "fromdir"
    assert (iso.runs / newest_record(iso.runs)["id"] / "stdout.log").read_bytes() == (
        b"argv ['x']\n"
    )


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_committed_script(shell: str) -> None:
    names = {"bash": "torchjob.bash", "zsh": "_torchjob", "fish": "torchjob.fish"}
    res = torchjob("completion", shell)
    assert res.returncode == 0
    assert res.stdout.decode() == (ROOT / "completions" / names[shell]).read_text()


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    res = torchjob("completion", "tcsh")
    assert res.returncode == 2 and b"bash, zsh or fish" in res.stderr


def test_env_prune_says_what_it_removed_and_the_space(iso: Env) -> None:
    half = write(iso.home / "cache" / "envs" / ("f" * 24) / "env-1-abc" / "half", "x" * 1500)
    res = torchjob("env", "prune", "--keep", "0")
    assert res.returncode == 0
    lines = res.stdout.decode().splitlines()
    assert re.fullmatch(r"removed f{16} \S+ \(1\.\d kB\)", lines[0]), lines
    assert re.fullmatch(r"freed 1\.\d kB \(1 removed, 0 kept\)", lines[1]), lines
    assert not half.exists()
    again = torchjob("env", "prune", "--keep", "0")  # nothing: nothing said (cron stays quiet)
    assert (again.returncode, again.stdout, again.stderr) == (0, b"", b"")
    term = Terminal(["env", "prune", "--keep", "0"], {**os.environ, "TERM": "xterm"})
    assert term.wait() == 0 and b"torchjob: nothing to remove" in term.shown  # a person is told


def test_cache_prune_says_what_it_removed_and_the_space(tmp_path: Path, iso: Env) -> None:
    make_bare_repo(tmp_path / "r.git", [{"main.py": "print('hi')\n"}])
    url = f"file://{tmp_path / 'r.git'}"
    res = torchjob("run", "-q", "-s", "main.py", "-p", url, "--allow-insecure-source")
    assert res.returncode == 0, res.stderr
    (mirror,) = json.loads(torchjob("cache", "list", "--json").stdout)
    out = torchjob("cache", "prune", "--unused-for", "0").stdout.decode().splitlines()
    assert out[0].startswith(f"removed {mirror['key'][:16]} {url} (") and out[0].endswith("B)")
    assert re.fullmatch(r"freed [\d.]+ (bytes|kB|MB) \(1 removed, 0 kept\)", out[1]), out
