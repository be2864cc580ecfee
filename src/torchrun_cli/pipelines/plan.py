"""What `run`, `validate` and `--dry-run` do with a pipeline before any step starts: check
every step's plan as a single run's is checked, find the pipeline `--resume` continues, name
the steps `--from STEP` reruns, and list the plan."""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from torchrun_cli import pipeline_record as records
from torchrun_cli.errors import UsageError, did_you_mean
from torchrun_cli.jobs import run as jobs
from torchrun_cli.jobs.refs import newest, resolve
from torchrun_cli.pipeline_record import PipelineRecord, StepRecord
from torchrun_cli.record import RunDir, read_record
from torchrun_cli.settings import Settings
from torchrun_cli.spec.pipeline import PipelineSpec


def check(spec: PipelineSpec, settings: Settings) -> list[str]:
    """Each step's plan, as `validate` checks a job's (a refused source, a missing
    requirements file: exit 2); returns the warnings (a local script that is missing)."""
    warnings = []
    for name, step in spec.steps.items():
        try:
            warning = jobs.validate(step.job, settings)
        except UsageError as exc:
            raise UsageError(f"step {name}: {exc.message}", exc.fix) from None
        if warning:
            warnings.append(f"step {name}: {warning}")
    return warnings


def order(spec: PipelineSpec) -> list[list[str]]:
    """The steps in waves: each wave needs only the waves before it."""
    done: set[str] = set()
    waves = []
    while len(done) < len(spec.steps):
        wave = [n for n, s in spec.steps.items() if n not in done and set(s.needs) <= done]
        waves.append(wave)
        done.update(wave)
    return waves


def rows(spec: PipelineSpec) -> list[tuple[str, str, str | None]]:
    """--dry-run of a pipeline: each step, what it needs and the command it would run (with
    its references as written: they are filled in when it starts)."""
    out: list[tuple[str, str, str | None]] = [
        ("dry run", "nothing was started", None),
        ("pipeline", f"{spec.name} ({len(spec.steps)} steps)", str(spec.file)),
        ("parallel", f"at most {spec.max_parallel} steps at once", None),
    ]
    for wave in order(spec):
        for name in wave:
            step = spec.steps[name]
            needs = f" after {', '.join(step.needs)}" if step.needs else ""
            tries = step.job.retries.count
            extra = f", retries {tries}" * bool(tries) + ", cache" * step.cache
            argv = shlex.join([step.job.script, *step.job.script_argv()])
            out.append((f"step {name}", f"{argv}{needs}{extra}", step.where))
    return out


def find(runs_root: Path, ref: str, name: str) -> tuple[Path, PipelineRecord]:
    """The pipeline `--resume` continues: `last` (the newest pipeline of this name), or any
    form a RUN takes."""
    if ref == "last":
        found = newest(
            runs_root,
            1,
            lambda r: isinstance(r, PipelineRecord) and r.name == name,
            name=name,
        )
        if found and isinstance(found[0].record, PipelineRecord):
            return found[0].run.path, found[0].record
        raise UsageError(
            f"--resume: no pipeline named {name!r} in {runs_root}",
            "run it once without --resume, or give the pipeline's id",
        )
    path = resolve(runs_root, ref).run.path
    try:
        return path, records.read(path)
    except (OSError, ValueError, TypeError):
        raise UsageError(
            f"--resume: {ref} is not a pipeline (no readable pipeline.json in {path})",
            "give a pipeline's id (see `torchjob runs`)",
        ) from None


def rerun(spec: PipelineSpec, start: str | None) -> frozenset[str]:
    """--from STEP: the step and every step downstream of it."""
    if start is None:
        return frozenset()
    if start not in spec.steps:
        raise UsageError(
            f"--from {start}: the pipeline has no such step",
            did_you_mean(start, spec.steps, f"use one of {', '.join(spec.steps)}"),
        )
    return frozenset({start} | spec.downstream(start))


def reusable(
    spec: PipelineSpec, old: PipelineRecord, rerun: frozenset[str]
) -> dict[str, StepRecord]:
    """--resume: the steps of `old` that succeeded, whose runs are still there and that are
    not to run again, as this pipeline records them (reused from the first pipeline that ran
    them)."""
    out = {}
    for name in spec.steps:
        was = old.steps.get(name)
        if was is None or was.status != "succeeded" or name in rerun:
            continue
        if was.run_dir and Path(was.run_dir).is_dir():
            out[name] = replace(
                was, needs=list(spec.steps[name].needs), reused_from=was.reused_from or old.id
            )
    return out


def outputs(spec: PipelineSpec, rec: PipelineRecord) -> dict[str, Any]:
    """The pipeline's output parameters: those of its last steps (the ones no step needs), so
    `runs --columns test-accuracy` shows the pipeline's result."""
    needed = {n for step in spec.steps.values() for n in step.needs}
    out: dict[str, Any] = {}
    for name, step in rec.steps.items():
        if name not in needed and step.status == "succeeded" and step.run_dir:
            with contextlib.suppress(OSError, ValueError, TypeError):
                out.update(read_record(RunDir(Path(step.run_dir))).outputs)
    return out
