"""`torchjob run PIPELINE.yaml` and `torchjob validate PIPELINE.yaml`: a spec with `steps:`.
The flags of `run` that set job keys set them in every step; -P sets the pipeline's params,
--name its name, --resume the pipeline it continues."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NamedTuple

import typer

from torchrun_cli import console
from torchrun_cli.console.pipeline import PipelineConsole
from torchrun_cli.errors import UsageError
from torchrun_cli.pipelines import plan, schedule
from torchrun_cli.settings import Settings
from torchrun_cli.spec.pipeline import load_pipeline
from torchrun_cli.spec.yaml import Located


class Flags(NamedTuple):
    """The options of `run` a pipeline reads besides the job keys."""

    runs_dir: Path | None = None
    dry_run: bool = False
    quiet: bool = False
    rebuild: bool = False
    detach: bool = False
    max_parallel: int | None = None
    fail_fast: bool = False
    follow: bool = False
    start: str | None = None
    no_cache: bool = False


def console_events(shown: PipelineConsole) -> schedule.Events:
    """What the scheduler tells the console of a pipeline or a sweep it runs."""
    tick = shown.tick if shown.live else None
    return schedule.Events(shown.started, shown.step, shown.output, tick, shown.stopping)


def run(
    path: Path,
    data: dict[str, Any],
    src: Located,
    given: dict[str, Any],
    flags: Flags,
    trailing: list[str],
    found: Settings,
) -> None:
    """Load, check, then run the steps; exits with the pipeline's status."""
    if trailing:
        raise UsageError(
            "arguments after `--` go to one script, and a pipeline has several",
            "set `args` or `params` in the steps instead",
        )
    resume = given.pop("resume_from", None)
    spec = load_pipeline(path, data, src, given, Path.cwd(), found)
    if flags.max_parallel is not None:
        spec = spec._replace(max_parallel=flags.max_parallel)
    warnings = plan.check(spec, found)
    if flags.dry_run:
        console.plan(plan.rows(spec))
        return
    for warning in warnings:
        console.warning(warning)
    root = found.runs_dir(flags.runs_dir)
    rerun = plan.rerun(spec, flags.start)
    previous = None
    if resume is not None or flags.start is not None:
        ref = Path(resume).name if resume is not None else "last"  # a flag's path: its name
        previous = plan.find(root, ref, spec.name)[1]
        console.note(f"resuming pipeline {previous.id}")
    shown = PipelineConsole(flags.quiet)
    if flags.detach:
        if previous is not None:
            raise UsageError("--detach starts a pipeline afresh", "drop --resume and --from")
        from torchrun_cli.pipelines import slurm  # measured: Slurm pipelines only

        events = schedule.Events(shown.started, shown.step)
        rec = slurm.submit(spec, found, root, flags.rebuild, events)
        sys.stdout.write(f"{rec.id}\n")
        console.note(
            f"submitted pipeline {rec.id} to Slurm; see it with `torchjob show {rec.id}`, "
            f"stop it with `torchjob cancel {rec.id}`"
        )
        return
    options = schedule.Options(
        spec.max_parallel,
        flags.fail_fast,
        flags.follow,
        flags.rebuild,
        not flags.no_cache,
        previous,
        rerun,
    )
    events = console_events(shown)
    rec = schedule.run(spec, found, root, options, events)
    shown.ended(rec, root / rec.id)
    sys.stdout.flush()
    raise typer.Exit(rec.exit_code or 0)


def validate(path: Path, data: dict[str, Any], src: Located, found: Settings) -> None:
    spec = load_pipeline(path, data, src, {}, Path.cwd(), found)
    for warning in plan.check(spec, found):
        console.warning(warning)
    waves = " → ".join(", ".join(wave) for wave in plan.order(spec))
    sys.stdout.write(f"ok: {path}: pipeline {spec.name}, {len(spec.steps)} steps: {waves}\n")
