"""The `torchjob` command: flags to one call into the core, then render what comes back, and
map errors to exit statuses.

Only this module parses flags, prints (through console.py) and chooses exit statuses. The
options of `run` that set spec keys are made from the key table (spec/keys.py), so a new key
gets its flag, its help and its place in the merge from one declaration.
"""

import inspect
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from torchrun_cli import __version__, console, settings
from torchrun_cli.errors import TorchjobError, UsageError
from torchrun_cli.jobs import history
from torchrun_cli.spec.keys import Key, Kind, with_flags

app = typer.Typer(
    name="torchjob",
    help="Run a PyTorch training project: logs, a record, clean stops, the script's exit status.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RunsDir = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Folder of run folders [default: $TORCHJOB_HOME/runs]."),
]
RunRef = Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique prefix, or last.")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON for machines.")]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"torchjob {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run PyTorch training jobs locally: logs, a record, clean stops."""
    obj = ctx.ensure_object(dict)
    obj["debug"] = debug
    if obj.get("trailing") and ctx.invoked_subcommand != "run":
        raise UsageError(
            "arguments after `--` are only for `torchjob run`",
            "remove them, or use `torchjob run ... -- ARGS`",
        )


def _option(key: Key) -> inspect.Parameter:
    """The `run` option of a spec key: repeatable for lists and KEY=VALUE pairs, a switch for
    booleans, a value otherwise; its help and choices from the table."""
    repeat = key.kind in (Kind.LIST, Kind.PATHS, Kind.PARAMS, Kind.ENV, Kind.CHANNELS)
    listed = all(choice in key.help for choice in key.choices)
    help_text = key.help if listed else f"{key.help} One of: {', '.join(key.choices)}."
    kind: Any = bool if key.kind is Kind.BOOL else list[str] | None if repeat else str | None
    default = typer.Option(
        False if key.kind is Kind.BOOL else None, *key.flags, help=help_text, metavar=key.metavar
    )
    return inspect.Parameter(
        key.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
    )


def run(
    ctx: typer.Context,
    spec_file: Annotated[
        str | None, typer.Argument(metavar="SPEC.yaml", help="Job spec; flags override its keys.")
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the environment afresh even when it is cached.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Slurm: print the job id and return at once.")
    ] = False,
    runs_dir: RunsDir = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the resolved plan and each value's origin; run nothing."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q",
            "--quiet",
            help="Print nothing on success; the summary and log tail on failure.",
        ),
    ] = False,
    **options: Any,
) -> None:
    """Run a job: `torchjob run [SPEC.yaml] [flags] [-- ARGS...]`."""
    from torchrun_cli.jobs import run as jobs  # measured: 10 ms that runs and show do not need
    from torchrun_cli.spec.load import load

    given = {
        key.path: options[key.param]
        for key in with_flags()
        if options[key.param] not in (None, False, [], ())
    }
    found = settings.read()
    spec = load(
        Path(spec_file) if spec_file else None,
        given,
        Path.cwd(),
        found,
        tuple(ctx.obj.get("trailing", ())),
    )
    plan = jobs.make_plan(spec, found, found.runs_dir(runs_dir))
    if dry_run:
        console.plan(jobs.plan_rows(plan, rebuild))
        return
    display = jobs.Display(
        started=lambda rec, run: None if quiet else console.header(rec),
        source=lambda src: None if quiet else console.source_line(src),
        progress=console.progress,
        stopping=lambda signum: console.stopping(signum, spec.grace, spec.timeout),
        echo=not quiet,
    )
    final, run_dir = jobs.execute(plan, display, rebuild=rebuild, detach=detach)
    if final.detached and final.backend:
        sys.stdout.write(f"{final.backend['job_id']}\n")
        console.note(
            f"submitted Slurm job {final.backend['job_id']} as run {final.id}; "
            f"follow it with `torchjob logs -f {final.id}`"
        )
        return
    ok = final.status.value == "succeeded"
    if not quiet and final.environment.get("key") and final.status.value != "setup_error":
        console.environment_line(final.environment)
    if quiet and not ok:
        console.tail(run_dir.stdout_log)
    if final.status.value == "setup_error":
        console.setup_failure(run_dir)
    if not (quiet and ok):
        console.summary(final, run_dir.path)
    raise typer.Exit(final.exit_code or 0)


_RUN_SIGNATURE = inspect.Signature(
    [*list(inspect.signature(run).parameters.values())[:-1], *map(_option, with_flags())]
)
run.__signature__ = _RUN_SIGNATURE  # type: ignore[attr-defined]  # typer reads the options here
app.command(context_settings={"allow_interspersed_args": True})(run)


@app.command()
def validate(
    spec_file: Annotated[str, typer.Argument(metavar="SPEC.yaml", help="The spec to check.")],
) -> None:
    """Check a spec and print every problem; run nothing (exit 2 on problems)."""
    from torchrun_cli.jobs import run as jobs  # as in run
    from torchrun_cli.spec.load import load

    found = settings.read()
    spec = load(Path(spec_file), {}, Path.cwd(), found)
    if (warning := jobs.validate(spec, found)) is not None:
        console.warning(warning)
    sys.stdout.write(f"ok: {spec_file}: script {spec.script} in {spec.project}\n")


@app.command()
def runs(
    name: Annotated[str | None, typer.Option("--name", help="Only runs with this name.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help=f"Only runs with this status: {', '.join(history.STATUSES)}."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: all).")] = 20,
    columns: Annotated[
        str | None,
        typer.Option("--columns", help="Output parameters to show as columns, e.g. accuracy,loss."),
    ] = None,
    as_json: AsJson = False,
    runs_dir: RunsDir = None,
) -> None:
    """Past runs, newest first."""
    found = history.runs(settings.read(), runs_dir, name, status, limit)
    if as_json:
        console.data([r.shown() for r in found])
    else:
        console.runs_table(found, [c for c in (columns or "").split(",") if c])


@app.command()
def show(
    run_ref: RunRef,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="The record, as run.json has it (a dead run's status shown as lost)."
        ),
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """One run's record."""
    run = history.find(settings.read(), runs_dir, run_ref)
    rec = history.refresh(run)
    if as_json:
        console.data(rec.shown())
    else:
        console.show_record(rec, run.path)


@app.command()
def logs(
    run_ref: RunRef,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing until the run ends.")
    ] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Only the errors (stderr.log).")] = False,
    runs_dir: RunsDir = None,
) -> None:
    """A run's log: stdout.log (both streams), or stderr.log with --stderr."""
    run = history.find(settings.read(), runs_dir, run_ref)
    for chunk in history.follow(run, stderr, follow):
        console.raw(chunk)
    console.raw(b"")


env_app = typer.Typer(help="The environment cache.", no_args_is_help=True)
app.add_typer(env_app, name="env")


@env_app.command("list")
def env_list(as_json: AsJson = False) -> None:
    """Cached environments: key, manager, python, size, created, last used, projects."""
    from torchrun_cli.jobs import caches  # measured: the cache code only for these commands

    found = caches.envs(settings.read())
    if as_json:
        console.data([vars(e) for e in found])
    else:
        console.env_table(found)


@env_app.command("prune")
def env_prune(
    unused_for: Annotated[
        str | None,
        typer.Option("--unused-for", help="Remove environments not used for this long (30d, 12h)."),
    ] = None,
    keep: Annotated[
        int | None, typer.Option("--keep", min=0, help="Keep only the N most recently used.")
    ] = None,
) -> None:
    """Remove old environments; one in use by a running job is never removed."""
    from torchrun_cli.jobs import caches  # measured: the cache code only for these commands

    console.removals(caches.prune_envs(settings.read(), unused_for, keep))


@env_app.command("rm")
def env_rm(
    key: Annotated[str, typer.Argument(help="An environment key, or a unique prefix of one.")],
) -> None:
    """Remove one environment (not while a job uses it)."""
    from torchrun_cli.jobs import caches  # measured: the cache code only for these commands

    console.removals([caches.remove_env(settings.read(), key)])


cache_app = typer.Typer(help="The cache of git mirrors.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("list")
def cache_list(as_json: AsJson = False) -> None:
    """Cached git mirrors: size and last use."""
    from torchrun_cli.jobs import caches  # measured: the cache code only for these commands

    repos = caches.mirrors(settings.read())
    if as_json:
        console.data([vars(r) for r in repos])
    else:
        console.cache_table(repos)


@cache_app.command("prune")
def cache_prune(
    unused_for: Annotated[
        str,
        typer.Option(
            "--unused-for", help="Remove mirrors not used for this long (30d, 12h, 0 for all)."
        ),
    ] = "30d",
) -> None:
    """Remove mirrors not used recently, and any left incomplete by a killed clone."""
    from torchrun_cli.jobs import caches  # measured: the cache code only for these commands

    console.removals(caches.prune_mirrors(settings.read(), unused_for))


@app.command()
def cancel(run_ref: RunRef, runs_dir: RunsDir = None) -> None:
    """Stop a running job: scancel a Slurm job, or stop a local one like Ctrl-C would."""
    sys.stdout.write(history.cancel(history.find(settings.read(), runs_dir, run_ref)) + "\n")


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
_READERS = {("runs",), ("show",), ("logs",), ("validate",), ("env", "list"), ("cache", "list")}


def main() -> None:
    """Entry point: split off `-- ARGS`, run the app, turn errors into messages and statuses."""
    _standard_fds()
    argv = sys.argv[1:]
    words = tuple(a for a in argv if not a.startswith("-"))
    if words[:1] in _READERS or words[:2] in _READERS:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    trailing: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, trailing = argv[:cut], argv[cut + 1 :]
    obj: dict[str, Any] = {"trailing": trailing, "debug": "--debug" in argv}
    try:
        app(args=argv, prog_name="torchjob", obj=obj)
    except TorchjobError as exc:
        if obj.get("debug"):
            raise
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
