"""The commands that look at runs and caches, as typer apps cli.py merges into `torchjob`
(runs.py: runs, show, logs, cancel; caches.py: env, cache; completion.py), and the option
types they share with cli.py. Like cli.py, each command is flags, one call into jobs/, then
console.py; the examples its help ends with are in usage.py."""

import contextlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from torchrun_cli import settings
from torchrun_cli.errors import TorchjobError
from torchrun_cli.spec.keys import Key, Kind, with_flags


def choices(values: Sequence[str]) -> Callable[[str], list[str]]:
    """What a shell completes for an option with these values."""
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


def _runs(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """What a shell completes for RUN: `last`, run names and ids (see jobs/refs.py)."""
    from torchrun_cli.jobs import history  # measured: 6-9 ms that `run` does not need

    given = ctx.params.get("runs_dir")  # as typed: completion does not convert values
    with contextlib.suppress(TorchjobError):  # bad settings: nothing to offer, no traceback
        return history.complete(settings.read(), Path(given) if given else None, incomplete)
    return []


RunsDir = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Folder of run folders [default: $TORCHJOB_HOME/runs]."),
]
RunRef = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        help="An id, its start or last 4 characters, a run name (its newest run), last, last~N.",
        autocompletion=_runs,
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON for machines.")]

# The options of `run` that only a pipeline (or a sweep) reads.
Sweep = Annotated[
    bool,
    typer.Option(
        "--sweep", help="A trial per combination of -P lists (-P lr=0.1,0.01 -P batch=32,64)."
    ),
]
MaxParallel = Annotated[
    int | None,
    typer.Option(
        "--max-parallel", min=1, help="Pipeline or sweep: steps at once [default: its own]."
    ),
]
FailFast = Annotated[
    bool, typer.Option("--fail-fast", help="Pipeline or sweep: a failure stops every step.")
]
FollowSteps = Annotated[
    bool,
    typer.Option("--follow-steps", help="Pipeline or sweep: show the steps' output, prefixed."),
]
FromStep = Annotated[
    str | None,
    typer.Option("--from", metavar="STEP", help="Pipeline: rerun STEP and the steps after it."),
]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Pipeline: run every step, cached or not.")
]
PIPELINE_FLAGS = ("--max-parallel", "--fail-fast", "--follow-steps", "--from", "--no-cache")


def key_option(key: Key) -> inspect.Parameter:
    """The `run` option of a spec key: repeatable for lists and KEY=VALUE pairs, a switch for
    booleans, a value otherwise; its help and choices (shown as its metavar, completed by the
    shells) from the table."""
    repeat = key.kind in (Kind.LIST, Kind.PATHS, Kind.PARAMS, Kind.ENV, Kind.CHANNELS)
    kind: Any = bool if key.kind is Kind.BOOL else list[str] | None if repeat else str | None
    default = typer.Option(
        False if key.kind is Kind.BOOL else None,
        *key.flags,
        help=key.help,
        metavar=key.metavar or ("[" + "|".join(key.choices) + "]" if key.choices else None),
        autocompletion=choices(key.choices) if key.choices else None,
    )
    return inspect.Parameter(
        key.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
    )


def with_key_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command`'s signature (its last parameter, **options, left out) with an option per
    spec key that has flags: typer reads a command's options from its signature."""
    own = list(inspect.signature(command).parameters.values())[:-1]
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*own, *map(key_option, with_flags())]
    )
    return command


def given_keys(options: dict[str, Any]) -> dict[str, Any]:
    """The spec keys whose flags were given (by key path), from a command's **options."""
    return {
        key.path: options[key.param]
        for key in with_flags()
        if options[key.param] not in (None, False, [], ())
    }
