"""`torchjob runs`, `show`, `logs` and `cancel`: RUN is found by jobs/refs.py, the rows are
made by jobs/views.py, console.py prints them."""

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from torchrun_cli import console, settings
from torchrun_cli.commands import AsJson, RunRef, RunsDir, choices
from torchrun_cli.commands.usage import epilog
from torchrun_cli.errors import UsageError
from torchrun_cli.jobs import STATUSES

if TYPE_CHECKING:
    from torchrun_cli.jobs.refs import Found

app = typer.Typer()
runs_app = typer.Typer(invoke_without_command=True, epilog=epilog("runs"))
app.add_typer(runs_app, name="runs")


def _find(runs_dir: RunsDir, ref: str) -> "Found":
    """RUN's folder; the note on a name that is also part of other ids goes to stderr."""
    from torchrun_cli.jobs import history  # measured: 6-9 ms that `run` does not need

    found = history.find(settings.read(), runs_dir, ref)
    if found.note:
        console.note(found.note)
    return found


def _status(text: str) -> Any:
    """--status of runs and runs prune: one of the statuses, shown and completed."""
    metavar = "[" + "|".join(STATUSES) + "]"
    return typer.Option("--status", help=text, metavar=metavar, autocompletion=choices(STATUSES))


@runs_app.callback()
def runs(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only runs with this name.")] = None,
    status: Annotated[str | None, _status("Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: all).")] = 20,
    columns: Annotated[
        str | None,
        typer.Option("--columns", help="Output parameters to show as columns, e.g. accuracy,loss."),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            metavar="[-]OUTPUT",
            help="By an output, least first (-accuracy: greatest first); newest first otherwise.",
        ),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", metavar="PIPELINE", help="The runs of a pipeline's steps."),
    ] = None,
    reindex: Annotated[
        bool,
        typer.Option("--reindex", help="Rebuild the history's index from the run folders first."),
    ] = False,
    as_json: AsJson = False,
    runs_dir: RunsDir = None,
) -> None:
    """Past runs and pipelines (one row each), newest first; times in local time (the zone is
    in the header). `runs prune` removes old ones."""
    from torchrun_cli.jobs import history  # as in _find

    if ctx.invoked_subcommand is not None:
        return
    from torchrun_cli.jobs import views  # measured: 0.5 ms that `torchjob run` does not pay

    found_settings = settings.read()
    if reindex:
        count, seconds = history.reindex(found_settings, runs_dir)
        console.note(f"reindexed {count} runs in {seconds:.1f}s")
    if pipeline is not None:
        found: list[Any] = history.step_runs(found_settings, runs_dir, pipeline)
    else:
        found = history.runs(found_settings, runs_dir, name, status, limit, sort)
    if as_json:
        console.data([r.shown() for r in found])
    else:
        console.table(*views.runs(found, [c for c in (columns or "").split(",") if c]))


@runs_app.command("prune", epilog=epilog("runs prune"))
def prune(
    keep: Annotated[
        int | None, typer.Option("--keep", min=0, help="Keep the newest N of each name.")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", metavar="AGE", help="Remove runs that ended before: 30d."),
    ] = None,
    status: Annotated[str | None, _status("Remove runs of this status only.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only runs of this name.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Remove run folders (and pipelines') a policy no longer keeps; never a running one."""
    from torchrun_cli.jobs import history, views  # as in _find and runs

    found = history.pruned(settings.read(), runs_dir, keep, older_than, status, name, dry_run)
    console.removals(views.pruned(found, dry_run))


@app.command(epilog=epilog("show"))
def show(
    run_ref: RunRef = "last",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="The record, as run.json has it (a dead run's status shown as lost)."
        ),
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """One run: status, exit, duration (elapsed while it runs), source and commit, environment
    and interpreter, params, outputs (read live while it runs), paths."""
    from torchrun_cli.jobs import history, views  # as in _find and runs

    run = _find(runs_dir, run_ref).run
    if (pipe := history.pipeline(run)) is not None:
        if as_json:
            console.data(pipe.shown())
            return
        rows, steps = views.pipeline(pipe, run.path)
        console.show_record(rows, pipe.shown_status().value)
        console.table(*steps)
        return
    rec = history.refresh(run)
    if as_json:
        console.data(rec.shown())
    else:
        found = history.metric_summaries(rec, run)
        rows = views.describe(rec, run, history.live_outputs(rec, run), found)
        console.show_record(rows, rec.shown_status().value)


@app.command(epilog=epilog("logs"))
def logs(
    run_ref: RunRef = "last",
    follow: Annotated[
        bool,
        typer.Option(
            "-f", "--follow", help="Until the run ends; then its status line and exit status."
        ),
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("-n", "--tail", min=0, metavar="N", help="Only the last N lines."),
    ] = None,
    stderr: Annotated[bool, typer.Option("--stderr", help="Only the errors (stderr.log).")] = False,
    setup: Annotated[
        bool, typer.Option("--setup", help="What git, pip, uv... printed (setup.log).")
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """A run's log: stdout.log (both streams), stderr.log or setup.log; for a run that failed
    in setup, the end of setup.log too."""
    from torchrun_cli.jobs import history  # as in _find

    if stderr and setup:
        raise UsageError("--stderr and --setup name two logs", "give one of them")
    run = _find(runs_dir, run_ref).run
    which = "setup" if setup else "stderr" if stderr else "stdout"
    if history.pipeline(run) is not None:  # each step's log, in the order they started
        last = _shown(history.follow_pipeline(run, which, follow, tail))
        if follow and (pipe := history.pipeline(run)) is not None:
            console.end_line(last)
            console.note(f"pipeline {pipe.id} {history.pipeline_outcome(pipe)}")
            raise typer.Exit(history.LOST_EXIT if pipe.exit_code is None else pipe.exit_code)
        return
    last = _shown(history.follow(run, which, follow, tail))
    rec = history.refresh(run)
    if which == "stdout" and (failed := history.setup_tail(rec, run, tail)):
        console.end_line(last)
        console.note(failed[0])
        last = _shown([failed[1]]) or last
    if follow:
        console.end_line(last)
        console.followed(rec, run.path)
        raise typer.Exit(history.exit_status(rec))


def _shown(chunks: Iterable[bytes]) -> bytes:
    """A log's bytes to stdout as they come; the last of them (does the log end a line?)."""
    last = b""
    for chunk in chunks:
        console.raw(chunk)
        last = chunk or last
    console.raw(b"")
    return last


@app.command(epilog=epilog("cancel"))
def cancel(run_ref: RunRef, runs_dir: RunsDir = None) -> None:
    """Stop a running job or pipeline: scancel a Slurm job, or SIGTERM to a local one's
    torchjob, which stops the job cleanly (exit 143)."""
    from torchrun_cli.jobs import history  # as in _find

    run = _find(runs_dir, run_ref).run
    pipe = history.pipeline(run)
    said = history.cancel(run) if pipe is None else history.cancel_pipeline(pipe)
    sys.stdout.write(said + "\n")
