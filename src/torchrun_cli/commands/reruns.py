"""`torchjob rerun RUN [flags]`: a run again, from what run.json says (jobs/rerun.py), with
the flags of `run` over it."""

from pathlib import Path
from typing import Annotated, Any

import typer

from torchrun_cli import console, settings
from torchrun_cli.commands import RunRef, RunsDir, given_keys, starting, with_key_options
from torchrun_cli.errors import SpecError, UsageError


def rerun(
    run_ref: RunRef,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the environment afresh even when it is cached.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start in the background and print the run id.")
    ] = False,
    runs_dir: RunsDir = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved plan; run nothing.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    **options: Any,
) -> None:
    """Run a run again: its spec, its source commit (so its environment), with the flags of
    `run` over them (`-P lr=0.01`)."""
    from torchrun_cli.jobs import history  # measured: rerun alone needs them
    from torchrun_cli.jobs import rerun as reruns  # as above
    from torchrun_cli.spec.load import Layer, build  # as above
    from torchrun_cli.spec.yaml import Located  # as above

    given = given_keys(options)
    found = settings.read()
    run = history.find(found, runs_dir, run_ref).run
    if history.pipeline(run) is not None:
        raise UsageError(
            f"rerun takes one run, and {run_ref} is a pipeline (or a sweep)",
            f"rerun one of its runs (ID/STEP), or run its spec again with --resume {run.id}",
        )
    rec = history.refresh(run)
    data, extra = reruns.layer(rec)
    problems: list[Any] = []
    spec = build(
        [Layer(data, Located(run.record), run.path)],
        given,
        Path.cwd(),
        found,
        problems,
        None,
        extra,
    )
    if spec is None:
        raise SpecError(problems)
    if hidden := reruns.hidden(spec):
        raise UsageError(
            f"run {rec.id} recorded {', '.join(hidden)} masked (a secret)",
            "give the value again: -E NAME=VALUE, -P NAME=VALUE, --pip SPEC for every package "
            "(or rerun from the spec file)",
        )
    console.note(f"rerunning {rec.id}" + (f" at commit {spec.ref}" if spec.ref else ""))
    starting.start(
        spec, found, runs_dir, dry_run=dry_run, detach=detach, quiet=quiet, rebuild=rebuild
    )


with_key_options(rerun)
