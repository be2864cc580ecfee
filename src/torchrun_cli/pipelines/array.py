"""A sweep on Slurm (`run --sweep ... --detach` with `backend: slurm`): one job array,
`--array=0-(N-1)%max_parallel`, not N jobs, so Slurm paces the trials and `squeue` shows one
line. Each trial is prepared as a detached Slurm run (folder, record, environment, job.sbatch)
but not submitted; array.sbatch in the sweep's folder runs trial i's job.sbatch as task i, its
output into that trial's stdout.log. Each trial's record then gets its task's job id
(`ARRAY_i`), which scontrol, sacct, `show`, `logs -f` and `cancel` understand.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from torchrun_cli import pipeline_record as records
from torchrun_cli.errors import SetupError, TorchjobError, UsageError
from torchrun_cli.launch.slurm import DEFERRED, deferred_secrets
from torchrun_cli.launch.slurm import submit as sbatch
from torchrun_cli.pipeline_record import PipelineRecord
from torchrun_cli.pipelines.schedule import Events
from torchrun_cli.pipelines.slurm import detached_run
from torchrun_cli.record import (
    End,
    RunDir,
    RunRecord,
    Status,
    create_run_dir,
    now_iso,
    write_record,
)
from torchrun_cli.settings import Settings
from torchrun_cli.spec.pipeline import PipelineSpec

SCRIPT = "array.sbatch"
_OWN = ("#SBATCH --job-name=", "#SBATCH --output=", "#SBATCH --chdir=")  # the array sets these


def submit(
    spec: PipelineSpec, settings: Settings, root: Path, rebuild: bool, events: Events
) -> PipelineRecord:
    """Prepare every trial, submit the array; the sweep's record (running, detached)."""
    if any(step.job.backend is None for step in spec.steps.values()):
        raise UsageError(
            "--detach hands a sweep to Slurm as a job array, but its job runs here",
            "set `backend: {type: slurm}` in the spec, or run without --detach",
        )
    folder = create_run_dir(root, spec.name).path
    needs: dict[str, list[str]] = {n: [] for n in spec.steps}
    rec = records.new(folder, spec.name, spec.file, spec.max_parallel, needs)
    rec = replace(rec, detached=True, sweep=dict(spec.sweep or {}))
    records.write(folder, rec)
    events.started(rec, folder)
    tasks: list[tuple[str, RunDir, RunRecord]] = []  # each trial's record as execute left it
    for name, step in spec.steps.items():
        prepared = (DEFERRED,)  # the job array submits them all at once
        rec, handed = detached_run(step.job, name, rec, folder, settings, rebuild, prepared, events)
        if handed is not None:
            tasks.append((name, *handed))
    if tasks:
        rec = _submit(rec, folder, tasks, spec, events)
    records.write(folder, rec)
    return rec


def _submit(
    rec: PipelineRecord,
    folder: Path,
    tasks: list[tuple[str, RunDir, RunRecord]],
    spec: PipelineSpec,
    events: Events,
) -> PipelineRecord:
    script = folder / SCRIPT
    script.write_text(array_script(spec.name, [run for _, run, _ in tasks], spec.max_parallel))
    secrets: dict[str, str] = {}
    try:
        for _, run, _ in tasks:  # one sbatch environment carries them: the same for every trial
            for name, value in deferred_secrets(run.sbatch).items():
                if secrets.setdefault(name, value) != value:
                    raise SetupError(
                        f"{name} carries a secret and differs between trials, and a job "
                        "array has one environment for all of them",
                        "keep secrets out of a Slurm sweep's params: pass them with -E NAME=VALUE",
                        phase="backend",
                    )
        array_id = sbatch(script, folder / "setup.log", secrets)
    except TorchjobError as exc:  # nothing of it runs: each trial ends as a setup error
        for name, run, done in tasks:
            end = End(Status.SETUP_ERROR, exc.exit_code, phase="backend", error=exc.lines()[0])
            write_record(run, done.finish(end))
            rec = rec.step(name, status="setup_error", exit_code=exc.exit_code, error=end.error)
        records.write(folder, replace(rec, status=Status.SETUP_ERROR, exit_code=exc.exit_code))
        raise
    for index, (name, run, done) in enumerate(tasks):
        job_id = f"{array_id}_{index}"
        write_record(run, replace(done, backend={**(done.backend or {}), "job_id": job_id}))
        rec = rec.step(name, status="running", started_at=now_iso(), job_id=job_id)
        events.step(name, rec.steps[name], "run")
    return rec


def array_script(name: str, runs: list[RunDir], parallel: int) -> str:
    """The array's batch script: the first trial's resources (every trial has the same), the
    throttle, and task i running trial i's own job.sbatch in its own working folder."""
    q = shlex.quote
    scripts = [run.sbatch.read_text().splitlines() for run in runs]  # each read once
    first = scripts[0]
    output = str(runs[0].path.parent).replace("%", "%%") + "/slurm-%a.out"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={q(name)}",
        f"#SBATCH --array=0-{len(runs) - 1}%{parallel}",
        f"#SBATCH --output={q(output)}",
        *(line for line in first if line.startswith("#SBATCH ") and not line.startswith(_OWN)),
        "",
        "# written by torchjob: task i is trial i; each trial's job.sbatch is its whole job",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for index, (run, text) in enumerate(zip(runs, scripts, strict=True)):
        chdir = next(line for line in text if line.startswith("#SBATCH --chdir="))
        cwd = shlex.split(chdir.partition("=")[2])[0]
        lines.append(
            f"  {index}) cd -- {q(cwd)} && exec bash {q(str(run.sbatch))} "
            f">> {q(str(run.stdout_log))} 2>&1 ;;"
        )
    lines += ["esac", 'echo "torchjob: no trial $SLURM_ARRAY_TASK_ID" >&2', "exit 2"]
    return "\n".join(lines) + "\n"
