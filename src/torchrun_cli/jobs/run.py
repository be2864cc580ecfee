"""One run as a short list of stage calls: spec -> source -> environment -> launch -> record.

Every stage is a plain function over plain data; this module calls them in order, keeps
run.json up to date, and turns whatever ends the run (the job's exit, a setup error, a signal,
a bug) into an End written before torchjob exits: a crash never leaves a record `running`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from torchrun_cli import envs, launch, record, source
from torchrun_cli.envs import Environment
from torchrun_cli.errors import LaunchError, SetupError, TorchjobError, UsageError
from torchrun_cli.jobs import concurrency, retries
from torchrun_cli.launch import conventions, metrics
from torchrun_cli.launch.base import Backend, Job, Launch, OnStop, Stopped, signal_name
from torchrun_cli.masking import mask_mapping
from torchrun_cli.record import End, RunDir, RunRecord, Status
from torchrun_cli.settings import Settings
from torchrun_cli.source import Source
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.steps import Silent, Steps

if TYPE_CHECKING:
    from torchrun_cli.envs.cache import Lease

RUN_ID = "<run-id>"


class Plan(NamedTuple):
    """Everything resolved that needs no network: the spec, the source as described, the
    environment, and the launch as it would be (paths under the run's tree for remote sources).
    `resume_problem` says why `resume_from: last` has nothing to resume, when it has not."""

    spec: JobSpec
    settings: Settings
    runs_dir: Path
    source: Source
    environment: Environment
    launch: Launch
    resume: str | None = None
    resume_problem: str | None = None
    pipeline: dict[str, Any] | None = None  # a step's run: which pipeline, step and attempt
    after: tuple[str, ...] = ()  # Slurm jobs that must succeed first (a detached pipeline)


def make_plan(spec: JobSpec, settings: Settings, runs_dir: Path | None) -> Plan:
    """Check the source (refusals happen here, before any git process), the interpreter, the
    local project's environment files and the size of the command. Without a runs folder
    (validate) `resume_from: last` is not looked up: it depends on the runs, not the spec."""
    planned = RunDir((runs_dir or Path("runs")) / RUN_ID)
    described = source.describe(spec, planned.tree)
    env = envs.prepare(spec)
    if described.kind == "local":
        _check_project_files(spec, described.path)
    resume, problem = spec.resume_from, None
    if runs_dir is not None and spec.resume_from == "last":
        try:
            resume = conventions.resume_checkpoint(spec, runs_dir)
        except UsageError as exc:
            resume, problem = None, exc.lines()[0]
    plan_launch = launch.make_launch(spec, env.interpreter, described.path, planned.ranks)
    launch.check_size(plan_launch)
    return Plan(
        spec,
        settings,
        runs_dir or planned.path.parent,
        described,
        env,
        plan_launch,
        resume,
        problem,
    )


def validate(spec: JobSpec, settings: Settings) -> str | None:
    """`torchjob validate`: the plan's checks (exit 2 on a problem), and a warning when a local
    script or interpreter is missing (the spec is valid; the run would fail)."""
    plan = make_plan(spec, settings, None)
    problem = launch.launch_problem(plan.launch, plan.environment.interpreter)
    if problem is None or spec.project_kind != "local":
        return None
    return f"{problem.message} (a run would exit {problem.exit_code})"


def _check_project_files(spec: JobSpec, project: Path) -> None:
    """A local project's requirements and conda file exist and are readable: exit 2 now,
    rather than a setup error after the run started."""
    for key, name in (
        ("python.requirements", spec.python.requirements),
        ("python.conda_file", spec.python.conda_file),
    ):
        if name is None:
            continue
        path = project / name
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise UsageError(
                f"{key}: {path} {what}", f"check `{key}` (it is relative to the project)"
            )
    if spec.python.manager != "none":
        from torchrun_cli.envs import key as env_key  # measured: managed environments only

        requirements = project / (spec.python.requirements or "requirements.txt")
        try:
            if requirements.is_file():
                env_key.requirement_files(requirements)
        except SetupError as exc:
            raise UsageError(exc.message, exc.fix) from None


def project_id(spec: JobSpec) -> str:
    """How environments remember which projects used them."""
    return spec.project if spec.project_kind != "local" else str(Path(spec.project))


class Display(NamedTuple):
    """What the console is told while a run goes on (only the CLI prints): the header, each
    setup step, where the source came from, the environment the job runs in (before its first
    byte), notes, a stop that began; and whether the job's output is echoed."""

    started: Callable[[RunRecord, RunDir], None] = lambda rec, run: None
    source: Callable[[Source], None] = lambda src: None
    environment: Callable[[Environment], None] = lambda env: None
    note: Callable[[str], None] = lambda text: None
    steps: Steps = Silent()
    stopping: OnStop = lambda signum: None
    echo: bool = True


def execute(
    plan: Plan,
    display: Display,
    *,
    rebuild: bool = False,
    detach: bool = False,
    held: int | None = None,
) -> tuple[RunRecord, RunDir]:
    """Take the name's concurrency lock (unless `held`: the lock taken for it), create the run
    folder and record, run the stages, write the end."""
    if plan.resume_problem is not None:
        raise UsageError(plan.resume_problem)
    spec = plan.spec
    if held is None and not (detach and spec.backend):  # a detached Slurm job has no holder
        held = concurrency.hold(spec.concurrency, plan.runs_dir, spec.name, display.note)
    try:
        done = _execute(plan, display, rebuild, detach)
    finally:
        if held is not None:
            os.close(held)
    kept = spec.retention
    wanted = kept.keep is not None or kept.max_age is not None
    if plan.pipeline is None and done[0].ended_at and wanted:
        from torchrun_cli.jobs import prune  # measured: 10 ms, for specs with retention: only

        prune.retain(plan.runs_dir, spec.name, kept, display.note)  # not a step: in its pipeline
    return done


def _execute(plan: Plan, display: Display, rebuild: bool, detach: bool) -> tuple[RunRecord, RunDir]:
    spec = plan.spec
    run = record.create_run_dir(plan.runs_dir, spec.name)
    rec = _first_record(plan, run)
    run.stdout_log.touch()  # `torchjob logs -f` works from the first moment
    run.stderr_log.touch()
    record.write_record(run, rec)
    display.started(rec, run)
    started = time.monotonic()
    stage = _Stage(rec)
    attempt = 0
    while True:  # an attempt, and more while `retries` says so
        attempt = stage.attempt = attempt + 1
        backend = launch.backend_for(spec, detach, plan.after)
        began, at = time.monotonic(), record.now_iso()
        end = _attempt(plan, run, backend, display, rebuild, stage, started)
        if end is None:  # detached: the job runs on; refresh() writes its end later
            rec = replace(stage.record, backend=backend.info)
            record.write_record(run, rec)
            return rec, run
        if spec.retries.count:
            stage.learn(
                attempts=[*stage.record.attempts, retries.row(attempt, at, _since(began), end)]
            )
        if not retries.again(spec, end, attempt):
            break
        if (stopped := retries.pause(spec, run, display.note, end, attempt)) is not None:
            end = stopped
            break
    final = replace(stage.record, backend=backend.info).finish(end, _since(started))
    record.write_record(run, final)
    return final, run


def _attempt(
    plan: Plan,
    run: RunDir,
    backend: Backend,
    display: Display,
    rebuild: bool,
    stage: _Stage,
    started: float,
) -> End | None:
    """One attempt of the stages, however it ends: an End (None when detached)."""
    try:
        return _stages(plan, run, backend, display, rebuild, stage)
    except SetupError as exc:
        return End(Status.SETUP_ERROR, exc.exit_code, phase=exc.phase, error=exc.lines()[0])
    except LaunchError as exc:
        return End(Status.FAILED, exc.exit_code, phase="launch", error=exc.lines()[0])
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP before the job took over
        signum = Stopped.signum_of(exc)
        return End(
            Status.CANCELLED,
            128 + signum,
            error=f"interrupted by {signal_name(signum)} during {stage.name}",
        )
    except BaseException as exc:  # a bug: the record still says how the run ended
        status = Status.FAILED if stage.name == "the job" else Status.SETUP_ERROR
        what = exc.lines()[0] if isinstance(exc, TorchjobError) else f"internal error: {exc!r}"
        final = replace(stage.record, backend=backend.info).finish(
            End(status, 1, phase=stage.phase, error=what), _since(started)
        )
        record.write_record(run, final)
        raise
    finally:
        if stage.lease is not None:
            stage.lease.close()
            stage.lease = None


class _Stage:
    """Where the run is and what is known of it so far, for the record of whatever ends it
    (an error, an interruption, a crash); and the environment's lease, released however the
    run ends."""

    name, phase = "setup", "setup"
    lease: Lease | None = None
    attempt = 1

    def __init__(self, rec: RunRecord) -> None:
        self.record = rec

    def enter(self, name: str, phase: str) -> None:
        self.name, self.phase = name, phase

    def learn(self, **facts: Any) -> None:
        """More of the record: the source once checked out, the environment once built..."""
        self.record = replace(self.record, **facts)


def _stages(
    plan: Plan, run: RunDir, backend: Backend, display: Display, rebuild: bool, stage: _Stage
) -> End | None:
    """source -> environment -> launch -> follow; returns the End (None when detached)."""
    spec, settings = plan.spec, plan.settings
    with retries.stoppable():  # SIGTERM/SIGHUP during setup: like Ctrl-C, the tools' groups go
        stage.enter("the checkout", "source")
        with _setup_phase("source"):
            src = source.materialize(spec, run, settings, display.steps)
        stage.learn(source=src.record())
        display.source(src)
        if (note := _not_installed(spec, src.path)) is not None:
            display.note(note)
        stage.enter("the environment build", "environment")
        with _setup_phase("environment"):
            env, stage.lease = envs.materialize(
                spec,
                plan.environment,
                src.path,
                project_id(spec),
                run,
                settings,
                rebuild,
                display.steps,
            )
        stage.learn(environment=env.record(), interpreter=env.interpreter)
        display.environment(env)
        stage.enter("the launch", "launch")
        job_launch = launch.make_launch(spec, env.interpreter, src.path, run.ranks)
        stage.learn(argv=job_launch.shown_argv(), cwd=str(job_launch.cwd))
        problem = launch.launch_problem(job_launch, env.interpreter)
        if problem is not None:
            raise problem
        model_dir, output_dir = conventions.folders(spec, run)
        with _setup_phase("launch"):
            model_dir.mkdir(parents=True, exist_ok=True)
            output_dir.mkdir(parents=True, exist_ok=True)
        resume = plan.resume
        if stage.attempt > 1 and spec.resume_from == "last":  # from the attempt before
            resume = conventions.newest_checkpoint(model_dir) or resume
        gpus = launch.job_gpus(spec)
        variables = conventions.job_env(spec, model_dir, output_dir, resume, gpus, run.config)
        variables["TORCHJOB_ATTEMPT"] = str(stage.attempt)
        variables.update(metrics.variables(run))
        job = Job(spec, job_launch, run, variables, settings, envs.lease_file(settings, env))
    stage.enter("the submission" if spec.backend else "the start", "launch")
    backend.start(job)
    if backend.info and backend.info.get("detached"):
        return None
    stage.enter("the job", "job")
    end = backend.follow(job, display.echo, display.stopping)
    end, extra = backend.details(job, end)
    stage.learn(outputs=conventions.final_outputs(run, output_dir, stage.record.spec), **extra)
    return end


def _not_installed(spec: JobSpec, project: Path) -> str | None:
    """The one line for a project with a requirements.txt that runs with the interpreter as
    it is: nothing is installed, and how to have it installed."""
    if spec.python.manager != "none" or not (project / "requirements.txt").is_file():
        return None
    return (
        "requirements.txt is not installed: the job runs on the interpreter as it is; "
        "pass --env-manager uv (or virtualenv), or set python.manager in the spec, to have it "
        "installed into an environment of its own"
    )


def _first_record(plan: Plan, run: RunDir) -> RunRecord:
    spec = plan.spec
    model_dir, output_dir = conventions.folders(spec, run)
    return RunRecord(
        schema_version=record.SCHEMA_VERSION,
        id=run.id,
        name=spec.name,
        status=Status.RUNNING,
        started_at=record.now_iso(),
        argv=plan.launch.shown_argv(),
        cwd=str(plan.launch.cwd),
        interpreter=plan.environment.interpreter,
        source=plan.source.record(),
        environment=plan.environment.record(),
        params=dict(mask_mapping(spec.params)),
        spec=spec.masked(),
        pid_start=record.process_start_ticks(os.getpid()),
        model_dir=str(model_dir),
        output_dir=str(output_dir),
        resume_from=plan.resume,
        pipeline=plan.pipeline,
    )


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


@contextlib.contextmanager
def _setup_phase(phase: str) -> Iterator[None]:
    """An OSError while preparing (a cache path that is a file, a full disk) is a setup error
    of that phase: exit 125, never a launch failure."""
    try:
        yield
    except OSError as exc:
        raise SetupError(
            f"{phase} failed: {exc}", "check the paths and the free space", phase=phase
        ) from None
