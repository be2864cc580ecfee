"""`torchjob run job.yaml --sweep -P lr=0.1,0.01` and a spec with `sweep:`: a trial per point,
run as a pipeline of independent steps, then the trials ranked by the objective and the best
named. Exit 0 when every trial succeeded, 3 when some failed, a failed trial's status when all
did; 130 after Ctrl-C."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from torchrun_cli import console
from torchrun_cli.commands.pipeline import Flags, console_events
from torchrun_cli.console.pipeline import PipelineConsole
from torchrun_cli.errors import Problem, SpecError, UsageError
from torchrun_cli.jobs import SWEEP_PARTIAL
from torchrun_cli.pipelines import plan, schedule, sweep
from torchrun_cli.settings import Settings
from torchrun_cli.spec import sweep as sweeps
from torchrun_cli.spec.keys import PARAM_KEY
from torchrun_cli.spec.load import load
from torchrun_cli.spec.pipeline import PipelineSpec
from torchrun_cli.spec.rules import COMMAND_LINE
from torchrun_cli.spec.sweep import SweepSpec
from torchrun_cli.spec.yaml import Located


def _flag_grid(given: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """-P NAME=A,B,C under --sweep: the values of NAME's trials (taken out of the job's -P)."""
    grid: dict[str, tuple[str, ...]] = {}
    kept, problems = [], []
    for item in given.get("params") or ():
        name, eq, value = str(item).partition("=")
        if not (eq and "," in value):
            kept.append(item)
        elif not PARAM_KEY.fullmatch(name) or not all(value.split(",")):
            fix = "write -P NAME=A,B,C: a param name, and values that are not empty"
            problems.append(Problem(COMMAND_LINE, f"-P {item}", "not a list of values", fix))
        else:
            grid[name] = tuple(value.split(","))
    if problems:
        raise SpecError(problems)
    if "params" in given:
        given["params"] = kept
    return grid


def _shown(value: object) -> str:
    """A trial's value in --dry-run's table: true/false as the spec writes them."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _fixed_and_varied(given: dict[str, Any], varied: SweepSpec) -> None:
    """A plain -P of a param the sweep varies would be silently overridden: refused."""
    for item in given.get("params") or ():
        name = str(item).partition("=")[0]
        if name in varied.grid or name in varied.random:
            raise UsageError(
                f"-P {item}: the sweep varies {name}",
                f"give its values as -P {name}=A,B, or leave it to the spec's sweep",
            )


def _load(
    path: Path | None,
    read: tuple[dict[str, Any], Located] | None,
    given: dict[str, Any],
    trailing: list[str],
    found: Settings,
    max_parallel: int | None,
) -> PipelineSpec:
    """The sweep's `sweep:` and -P lists, and the job (every key but `sweep`), checked; the
    trials as a pipeline."""
    data, src = read if read is not None else ({}, Located(None))
    had = "sweep" in data
    raw = data.pop("sweep", None)  # from the mapping itself: its keys' lines stay known
    if had and raw is None:  # `sweep:` with nothing under it
        raw = {}
    spec_sweep = sweeps.parse(raw, src, _flag_grid(given), data)
    _fixed_and_varied(given, spec_sweep)
    base = load(path, given, Path.cwd(), found, tuple(trailing), (data, src) if path else None)
    parallel = max_parallel or spec_sweep.max_parallel or os.cpu_count() or 1
    return sweep.pipeline(base, spec_sweep, path or Path.cwd(), parallel)


def validate(path: Path, read: tuple[dict[str, Any], Located], found: Settings) -> None:
    """`torchjob validate` of a spec with `sweep:`: the sweep and its job checked."""
    spec = _load(path, read, {}, [], found, None)
    job = next(iter(spec.steps.values())).job
    sys.stdout.write(
        f"ok: {path}: sweep {spec.name}, {len(spec.steps)} trials of {job.script} in "
        f"{job.project}\n"
    )


def run(
    path: Path | None,
    read: tuple[dict[str, Any], Located] | None,
    given: dict[str, Any],
    flags: Flags,
    trailing: list[str],
    found: Settings,
) -> None:
    """Check the sweep and the job, then run the trials; exits with the sweep's status."""
    if flags.start is not None:
        raise UsageError("--from is not for sweeps", "remove it; --resume continues a sweep")
    resume = given.pop("resume_from", None)
    spec = _load(path, read, given, trailing, found, flags.max_parallel)
    if flags.dry_run:
        trials = spec.sweep["trials"] if spec.sweep else {}
        names = list(dict.fromkeys(k for p in trials.values() for k in p))
        rows = [(t, *(_shown(p.get(k, "")) for k in names)) for t, p in trials.items()]
        console.table(("TRIAL", *names), rows)
        return
    root = found.runs_dir(flags.runs_dir)
    shown = PipelineConsole(flags.quiet, word="sweep")
    if flags.detach:
        if resume is not None:
            raise UsageError("--detach starts a sweep afresh", "drop --resume")
        from torchrun_cli.pipelines import array  # measured: Slurm sweeps only

        rec = array.submit(spec, found, root, flags.rebuild, schedule.Events(shown.started))
        sys.stdout.write(f"{rec.id}\n")
        job = next((s.job_id for s in rec.steps.values() if s.job_id), None)
        console.note(
            f"submitted sweep {rec.id} to Slurm as job array {str(job).partition('_')[0]}; "
            f"see it with `torchjob show {rec.id}`, compare its trials with `torchjob compare "
            f"{rec.id}`"
        )
        return
    previous = None
    if resume is not None:
        previous = plan.find(root, Path(resume).name, spec.name)[1]
        if previous.sweep is None or previous.name != spec.name:
            raise UsageError(
                f"--resume {resume}: {previous.id} is not a sweep of {spec.name}",
                f"give a sweep of {spec.name} (see `torchjob runs --name {spec.name}`)",
            )
        console.note(f"resuming sweep {previous.id}")
    options = schedule.Options(
        spec.max_parallel,
        flags.fail_fast,
        flags.follow,
        flags.rebuild,
        use_cache=False,
        resume=previous,
        rerun=sweep.changed(spec, previous) if previous else frozenset(),
        partial_exit=SWEEP_PARTIAL,
    )
    ran = schedule.run(spec, found, root, options, console_events(shown))
    rec, ranking = sweep.finish(root / ran.id, ran)
    shown.ended(rec, root / rec.id)
    if not flags.quiet or rec.exit_code:
        console.table(ranking.heads, ranking.rows, status=len(ranking.heads) - 2)
        if ranking.best is not None:
            name, best = ranking.best
            metric = ranking.heads[-3]
            console.note(f"best trial {name}: {metric} {best.outputs.get(metric)}; run {best.id}")
    sys.stdout.flush()
    raise typer.Exit(rec.exit_code or 0)
