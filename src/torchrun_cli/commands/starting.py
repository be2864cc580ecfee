"""The end of `torchjob run` and `torchjob rerun`: from a loaded spec to the run's end on the
console (or its --dry-run plan, or a run started in the background), and the exit status."""

import sys
from pathlib import Path
from typing import Any

import typer

from torchrun_cli import console
from torchrun_cli.settings import Settings
from torchrun_cli.spec.model import JobSpec


def start(
    spec: JobSpec,
    found: Settings,
    runs_dir: Path | None,
    *,
    dry_run: bool,
    detach: bool,
    quiet: bool,
    rebuild: bool,
) -> None:
    """Plan, then print the plan, start in the background, or run and exit with its status."""
    from torchrun_cli.jobs import run as jobs  # measured: 10 ms that runs and show do not need

    plan = jobs.make_plan(spec, found, found.runs_dir(runs_dir))
    if dry_run:
        from torchrun_cli.jobs import dryrun  # only --dry-run needs it

        console.plan(dryrun.plan_rows(plan, rebuild))
        return
    if detach and spec.backend is None:
        from torchrun_cli.jobs import background  # only --detach needs it

        run = background.detach(plan, rebuild, console.note)
        sys.stdout.write(f"{run.id}\n")
        console.note(
            f"started run {run.id} in the background; follow it with `torchjob logs -f "
            f"{run.id}`, stop it with `torchjob cancel {run.id}`"
        )
        return
    steps = console.steps(quiet)

    def environment(env: Any) -> None:  # envs.Environment, shown by console.environment
        steps.close()  # the setup is over: the job's first byte comes next
        if not quiet:
            console.environment(env)

    display = jobs.Display(
        started=lambda rec, run: None if quiet else console.header(rec),
        source=lambda src: None if quiet else console.source_line(src),
        environment=environment,
        note=lambda text: None if quiet else console.note(text),
        steps=steps,
        stopping=lambda signum: console.stopping(signum, spec.grace, spec.timeout),
        echo=not quiet,
    )
    try:
        final, run_dir = jobs.execute(plan, display, rebuild=rebuild, detach=detach)
    finally:
        steps.close()
    if final.detached and final.backend:
        sys.stdout.write(f"{final.backend['job_id']}\n")
        console.note(
            f"submitted Slurm job {final.backend['job_id']} as run {final.id}; "
            f"follow it with `torchjob logs -f {final.id}`"
        )
        return
    console.ended(final, run_dir, quiet)
    raise typer.Exit(final.exit_code or 0)
