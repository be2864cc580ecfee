"""The `torchjob` command: flags to one call into the core, then render what comes back, and
map errors to exit statuses.

Only this module and commands/ (the other commands, merged in here) parse flags, print
(through console.py) and choose exit statuses. The options of `run` that set spec keys are made
from the key table (spec/keys.py), so a new key gets its flag, its help and its place in the
merge from one declaration.
"""

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.completion import completion_init  # type: ignore[attr-defined]
from typer.core import TyperGroup

from torchrun_cli import __version__, console, settings
from torchrun_cli.commands import (
    PIPELINE_FLAGS,
    AsJson,
    FailFast,
    FollowSteps,
    FromStep,
    MaxParallel,
    NoCache,
    RunsDir,
    Sweep,
    analysis,
    caches,
    completion,
    given_keys,
    reruns,
    runs,
    starting,
    usage,
    with_key_options,
)
from torchrun_cli.errors import TorchjobError, UsageError
from torchrun_cli.jobs import config


class _Group(TyperGroup):
    """The root command: `--debug` is accepted after a subcommand too, and in `torchjob run
    train.py ARGS` every word after the script is the script's, as with `python train.py`."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        obj = ctx.ensure_object(dict)
        if name == "run" and cmd is not None:
            probe = cmd.make_parser(ctx)  # the group's context: it stops at the first word
            with contextlib.suppress(Exception):  # a bad flag: run's own parse says so
                opts, after, _ = probe.parse_args(list(rest))
                if str(opts.get("spec_file")).endswith(".py"):
                    given = obj.get("trailing", [])
                    obj["trailing"] = [*after, *["--"] * bool(after and given), *given]
                    rest = rest[: len(rest) - len(after)]
        mine = [a for a in rest if a != "--debug" or name == "run"]
        obj["debug"] = bool(ctx.params.get("debug")) or "--debug" in rest
        return name, cmd, mine


def _app() -> typer.Typer:
    return typer.Typer(
        name="torchjob",
        cls=_Group,
        add_completion=False,
        epilog=usage.epilog(""),
        help="Run a PyTorch training project: logs, a record, clean stops, the script's exit "
        "status.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _app()
# `torchjob run ...` is parsed by an app that holds `run` alone: typer builds every command of
# an app on each start (9 ms for all of torchjob's), and `run` is the one that starts often.
_run_only = _app()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"torchjob {__version__}\n")
        raise typer.Exit()


@_run_only.callback()
@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "-V", "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run PyTorch training jobs locally: logs, a record, clean stops."""
    obj = ctx.ensure_object(dict)
    obj["debug"] = debug or obj.get("debug", False)
    if obj.get("trailing") and ctx.invoked_subcommand != "run":
        raise UsageError(
            "arguments after `--` are only for `torchjob run`",
            "remove them, or use `torchjob run ... -- ARGS`",
        )


def run(
    ctx: typer.Context,
    spec_file: Annotated[
        str | None,
        typer.Argument(
            metavar="SPEC.yaml | SCRIPT.py | DIR",
            help="A job spec (flags override its keys); a script, run in this folder with the "
            "words after it as its arguments; or a folder holding torchjob.yaml.",
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the environment afresh even when it is cached.")
    ] = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Start in the background and print the run id at once (Slurm: the job id).",
        ),
    ] = False,
    runs_dir: RunsDir = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the resolved plan and each value's origin; run nothing."
        ),
    ] = False,
    quiet: Annotated[
        bool | None,
        typer.Option(
            "--quiet/--no-quiet",
            "-q",
            help="Print nothing on success; the summary and log tail on failure. "
            "--no-quiet overrides `quiet = true` of a config file.",
            show_default=False,
        ),
    ] = None,
    sweep: Sweep = False,
    max_parallel: MaxParallel = None,
    fail_fast: FailFast = False,
    follow_steps: FollowSteps = False,
    start: FromStep = None,
    no_cache: NoCache = False,
    debug: Annotated[bool, typer.Option("--debug", hidden=True)] = False,  # see _Group
    **options: Any,
) -> None:
    """Run a job: `torchjob run SPEC.yaml [flags] [-- ARGS...]`, or `torchjob run train.py
    [ARGS...]`."""
    from torchrun_cli.spec.load import load, read_spec  # measured: run and validate only

    given = given_keys(options)
    spec_path = Path(spec_file) if spec_file else None
    if spec_file and spec_file.endswith(".py"):
        if "script" in given:
            raise UsageError(f"two scripts: {spec_file} and --script {given['script']}")
        given["script"], spec_path = spec_file, None
    elif spec_path:
        spec_path = _spec_in(spec_path)
    found = settings.read()
    quiet = found.quiet if quiet is None else quiet
    read = read_spec(spec_path)
    only_pipelines = (max_parallel, fail_fast, follow_steps, start, no_cache)
    if read is not None and spec_path is not None and "steps" in read[0]:
        from torchrun_cli.commands import pipeline  # measured: pipelines only

        trailing = list(ctx.obj.get("trailing", ()))
        pipeline.run(
            spec_path.absolute(),
            *read,
            given,
            pipeline.Flags(runs_dir, dry_run, quiet, rebuild, detach, *only_pipelines),
            trailing,
            found,
        )
        return
    if sweep or (read is not None and "sweep" in read[0]):
        from torchrun_cli.commands import pipeline, sweeps  # measured: sweeps only

        flags = pipeline.Flags(runs_dir, dry_run, quiet, rebuild, detach, *only_pipelines)
        sweeps.run(spec_path, read, given, flags, list(ctx.obj.get("trailing", ())), found)
        return
    if used := [
        f for f, v in zip(PIPELINE_FLAGS, only_pipelines, strict=True) if v not in (None, False)
    ]:
        raise UsageError(f"{used[0]} is for pipelines (a spec with `steps:`)", f"remove {used[0]}")
    spec = load(
        spec_path,
        given,
        Path.cwd(),
        found,
        tuple(ctx.obj.get("trailing", ())),
        read,
    )
    starting.start(
        spec, found, runs_dir, dry_run=dry_run, detach=detach, quiet=quiet, rebuild=rebuild
    )


with_key_options(run)

app.command(context_settings={"allow_interspersed_args": True})(run)
_run_only.command(context_settings={"allow_interspersed_args": True})(run)
app.command(context_settings={"allow_interspersed_args": True})(reruns.rerun)


def _spec_in(path: Path) -> Path:
    """A spec file as given, or a folder's torchjob.yaml (`torchjob run DIR`)."""
    if not path.is_dir():
        return path
    if not (path / "torchjob.yaml").is_file():
        raise UsageError(
            f"{path} is a folder without a torchjob.yaml",
            f"write {path / 'torchjob.yaml'}, or give a spec file or a script.py",
        )
    return path / "torchjob.yaml"


@app.command()
def validate(
    spec_file: Annotated[
        str, typer.Argument(metavar="SPEC.yaml", help="The spec to check, or a folder with one.")
    ],
) -> None:
    """Check a spec and print every problem; run nothing (exit 2 on problems)."""
    from torchrun_cli.jobs import run as jobs  # measured: 10 ms that runs and show do not need
    from torchrun_cli.spec.load import load, read_spec

    found = settings.read()  # a bad setting is reported first, as for every command
    path = _spec_in(Path(spec_file))
    read = read_spec(path)
    if read is not None and "steps" in read[0]:
        from torchrun_cli.commands import pipeline  # as in run

        pipeline.validate(path.absolute(), *read, found)
        return
    if read is not None and "sweep" in read[0]:
        from torchrun_cli.commands import sweeps  # as in run

        sweeps.validate(path.absolute(), read, found)
        return
    spec = load(path, {}, Path.cwd(), found, read=read)
    if (warning := jobs.validate(spec, found)) is not None:
        console.warning(warning)
    sys.stdout.write(f"ok: {path}: script {spec.script} in {spec.project}\n")


@app.command("config")
def config_command(as_json: AsJson = False) -> None:
    """Effective settings and where each came from.

    The config files read or looked for, then every key a config file may set (settings, and
    defaults of spec keys) with its value and origin: default, config FILE:LINE, $VARIABLE."""
    found = settings.read()
    if as_json:
        console.data(config.data(found))
    else:
        console.plan(config.rows(found))


for _commands in (runs.app, analysis.app, caches.app, completion.app):
    app.add_typer(_commands)  # without a name: their commands are torchjob's own
for _info in (*app.registered_commands, *_run_only.registered_commands):
    _name = _info.name or (_info.callback.__name__ if _info.callback else "")
    _info.epilog = usage.epilog(_name)


def _standard_fds() -> None:
    """Started with stdin, stdout or stderr closed, the first file we open would take its
    number (and a log would receive the console copy): park /dev/null there first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: this one
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


# Commands that only read and print: like cat, they die quietly of SIGPIPE when the reader
# goes (`torchjob runs | head`), where click would print nothing and exit 1. `run` and the
# commands that delete keep Python's default, so they always finish what they started.
_READERS = {
    ("runs",),
    ("show",),
    ("logs",),
    ("validate",),
    ("config",),
    ("completion",),
    ("env", "list"),
    ("cache", "list"),
}


def _has_value(argv: list[str], i: int) -> bool:
    """Whether the option at i has its value after it (not another option, not the spec)."""
    after = argv[i + 1] if i + 1 < len(argv) else "-"
    return not after.startswith("-") and not after.endswith((".yaml", ".yml"))


def main() -> None:
    """Entry point: split off `-- ARGS`, run the app, turn errors into messages and statuses."""
    _standard_fds()
    argv = sys.argv[1:]
    words = tuple(a for a in argv if not a.startswith("-"))
    if (words[:1] in _READERS and words[:2] != ("runs", "prune")) or words[:2] in _READERS:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    trailing: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, trailing = argv[:cut], argv[cut + 1 :]
    if words[:1] == ("run",):  # `--resume` alone: the newest (checkpoint or pipeline)
        argv = [
            w
            for i, a in enumerate(argv)
            for w in (["--resume", "last"] if a == "--resume" and not _has_value(argv, i) else [a])
        ]
    obj: dict[str, Any] = {"trailing": trailing, "debug": "--debug" in argv}
    if "_TORCHJOB_COMPLETE" in os.environ:  # a shell asks for completions: typer's protocol
        completion_init()
    only_run = words[:1] == ("run",) and "_TORCHJOB_COMPLETE" not in os.environ
    try:
        (_run_only if only_run else app)(args=argv, prog_name="torchjob", obj=obj)
    except TorchjobError as exc:
        if obj.get("debug"):  # the traceback too, and still the documented exit status
            import traceback  # only --debug needs it

            traceback.print_exc()
        console.error(exc.lines())
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
    except Exception as exc:
        if obj.get("debug"):
            raise
        console.error([f"internal error: {exc!r}; run again with --debug to see the traceback"])
        sys.exit(1)
