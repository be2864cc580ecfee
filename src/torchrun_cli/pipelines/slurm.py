"""`torchjob run PIPELINE.yaml --detach` on Slurm: Slurm runs the DAG, not a process of ours.
Every step is submitted at once, in an order where its needs come first, with
`--dependency=afterok:<their job ids>` and `--kill-on-invalid-dep=yes` (a failed step's
downstream jobs are cancelled by Slurm instead of pending for ever); then torchjob returns.

References to an upstream step's folders are known when it is submitted (its run folder
exists) and are filled in then; its output parameters exist only once it has run, so a job that
names one starts through launch/fill.py, which reads them from the upstream step's output folder.
`show` and `runs` read the steps' records (and ask Slurm) to tell how the pipeline stands.

Not in a detached pipeline: retries and the step cache (both need a process that waits).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from torchrun_cli import pipeline_record as records
from torchrun_cli.errors import TorchjobError, UsageError
from torchrun_cli.jobs import run as jobs
from torchrun_cli.launch.fill import UPSTREAM
from torchrun_cli.pipeline_record import SKIPPED, PipelineRecord
from torchrun_cli.pipelines import plan, resolve
from torchrun_cli.pipelines.schedule import Events
from torchrun_cli.record import RunDir, RunRecord, Status, create_run_dir, now_iso, read_record
from torchrun_cli.settings import Settings
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.pipeline import PipelineSpec
from torchrun_cli.spec.refs import has_refs


def submit(
    spec: PipelineSpec, settings: Settings, root: Path, rebuild: bool, events: Events
) -> PipelineRecord:
    """Submit every step; returns the pipeline's record (running, detached)."""
    local = [name for name, step in spec.steps.items() if step.job.backend is None]
    if local:
        raise UsageError(
            f"--detach hands the pipeline to Slurm, but step {', '.join(local)} runs here",
            "set `backend: {type: slurm}` under defaults (or in those steps), or run without "
            "--detach",
        )
    folder = create_run_dir(root, spec.name).path
    needs = {n: list(s.needs) for n, s in spec.steps.items()}
    rec = replace(
        records.new(folder, spec.name, spec.file, spec.max_parallel, needs), detached=True
    )
    records.write(folder, rec)
    events.started(rec, folder)
    for wave in plan.order(spec):
        for name in wave:
            rec = _submit_step(spec, name, rec, folder, settings, rebuild, events)
            records.write(folder, rec)
    return rec


def _submit_step(
    spec: PipelineSpec,
    name: str,
    rec: PipelineRecord,
    folder: Path,
    settings: Settings,
    rebuild: bool,
    events: Events,
) -> PipelineRecord:
    """Submit one step after the jobs of its needs; a step whose need was not submitted is
    skipped, one that cannot be submitted failed (its downstream steps are skipped then)."""
    step = spec.steps[name]
    before = [rec.steps[n] for n in step.needs]
    if any(b.status != "running" for b in before):
        rec = rec.step(name, status=SKIPPED, error="a step it needs was not submitted")
        events.step(name, rec.steps[name], "skipped")
        return rec
    upstream = {
        n: RunDir(Path(str(rec.steps[n].run_dir)))
        for n in spec.upstream(name)
        if rec.steps[n].run_dir
    }
    try:
        job = resolve.resolve(step.job, upstream, name, later=True)
        if any(has_refs(v) for v in (*job.script_argv(), *job.env.values())):
            outputs = {n: _output_dir(run) for n, run in upstream.items()}
            job = job._replace(env={**job.env, UPSTREAM: json.dumps(outputs)})
    except TorchjobError as exc:
        return _failed(rec, name, exc, events)
    after = tuple(str(b.job_id) for b in before)
    rec, handed = detached_run(job, name, rec, folder, settings, rebuild, after, events)
    if handed is None:
        return rec
    job_id = str((handed[1].backend or {}).get("job_id"))
    rec = rec.step(name, status="running", started_at=now_iso(), job_id=job_id)
    events.step(name, rec.steps[name], "run")
    return rec


def detached_run(
    job: JobSpec,
    name: str,
    rec: PipelineRecord,
    folder: Path,
    settings: Settings,
    rebuild: bool,
    after: tuple[str, ...],
    events: Events,
) -> tuple[PipelineRecord, tuple[RunDir, RunRecord] | None]:
    """A step's run handed to Slurm after the jobs `after` (or, after=(DEFERRED,), prepared
    for a job array): the pipeline's record with the step's run in it, and the run and its
    record when Slurm has it (None: it failed before, and the step records why)."""
    try:
        planned = jobs.make_plan(job._replace(tty="never"), settings, folder)
        planned = planned._replace(pipeline={"id": rec.id, "step": name, "attempt": 1}, after=after)
        done, run = jobs.execute(planned, jobs.Display(echo=False), rebuild=rebuild, detach=True)
    except TorchjobError as exc:
        return _failed(rec, name, exc, events), None
    rec = rec.step(name, run_id=run.id, run_dir=str(run.path), attempts=[run.id])
    if done.status is Status.RUNNING:
        return rec, (run, done)
    rec = rec.step(name, status=done.status.value, exit_code=done.exit_code)
    rec = rec.step(name, error=done.error, ended_at=now_iso())  # it failed before Slurm had it
    events.step(name, rec.steps[name], "ended")
    return rec, None


def _failed(rec: PipelineRecord, name: str, exc: TorchjobError, events: Events) -> PipelineRecord:
    rec = rec.step(name, status="failed", exit_code=exc.exit_code, error=exc.lines()[0])
    events.step(name, rec.steps[name], "ended")
    return rec


def _output_dir(run: RunDir) -> str:
    rec = read_record(run)
    return rec.output_dir or str(run.output)
