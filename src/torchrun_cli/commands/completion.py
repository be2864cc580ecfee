"""`torchjob completion SHELL`: the script a shell sources, so that a pip or pipx install has
it too (completions/ holds the same scripts, made by completions/generate.py from this).

The scripts are typer's: at each Tab they run `torchjob` with `_TORCHJOB_COMPLETE` set, and
it answers with commands, options, the choices of choice options and RUN's runs."""

import sys
from typing import Annotated

import typer
from typer.completion import get_completion_script  # type: ignore[attr-defined]

from torchrun_cli.commands import choices
from torchrun_cli.commands.usage import epilog
from torchrun_cli.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
app = typer.Typer()


@app.command(epilog=epilog("completion"))
def completion(
    shell: Annotated[
        str,
        typer.Argument(metavar="SHELL", help="bash, zsh or fish.", autocompletion=choices(SHELLS)),
    ],
) -> None:
    """Print the completion script for a shell: commands, options, the choices of --env-manager,
    --tty, --backend and --status, and RUN's ids and names."""
    if shell not in SHELLS:
        raise UsageError(f"no completion for {shell!r}", "use bash, zsh or fish")
    script = get_completion_script(
        prog_name="torchjob", complete_var="_TORCHJOB_COMPLETE", shell=shell
    )
    sys.stdout.write(script + "\n")
