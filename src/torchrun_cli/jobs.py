"""The run pipeline: spec -> source -> environment -> launch -> supervise -> record."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from torchrun_cli import conventions, envs, record, source, supervise
from torchrun_cli.errors import LaunchError, SetupError, UsageError
from torchrun_cli.masking import is_secret, mask_argv, mask_mapping
from torchrun_cli.spec import JobSpec

SETUP_LOG = "setup.log"


@dataclass(frozen=True)
class Launch:
    """The exact process to start: argv, folder and the variables torchjob adds."""

    script_path: Path
    argv: list[str]
    cwd: Path
    env_overlay: Mapping[str, str]

    def child_env(self, run_id: str, run_dir: Path,
                  conventions: Mapping[str, str] | None = None) -> dict[str, str]:
        """The inherited environment, the conventions' variables, the spec's on top, and where
        the run's folder is (TORCHJOB_RUN_ID, TORCHJOB_RUN_DIR)."""
        return {**os.environ, **(conventions or {}), **self.env_overlay,
                "TORCHJOB_RUN_ID": run_id, "TORCHJOB_RUN_DIR": str(run_dir)}

    def shown_argv(self) -> list[str]:
        """argv with secret parameter values masked."""
        return mask_argv(self.argv)

    def shown_env(self) -> dict[str, str]:
        """The variables torchjob sets, secret values masked."""
        return {k: str(v) for k, v in mask_mapping(self.env_overlay).items()}


def make_launch(spec: JobSpec, env: envs.Environment, src: source.Source,
                run_dir: Path) -> Launch:
    """argv and environment for the job, once the source folder is known: the script itself,
    or torchrun starting a gang of it."""
    script_path = src.path / spec.script
    overlay = {"PYTHONUNBUFFERED": "1", **spec.env}
    inherited = overlay.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    overlay["PYTHONPATH"] = os.pathsep.join(p for p in (str(src.path), inherited) if p)
    launcher: list[str] = []
    if spec.distributed is not None:
        from torchrun_cli import distributed

        ranks = run_dir / distributed.RANKS
        launcher = distributed.torchrun_args(spec.distributed, job_gpus(spec), ranks,
                                             int((spec.backend or {}).get("nodes") or 1))
        overlay["TORCHELASTIC_ERROR_FILE"] = str(ranks / "error.json")
    if spec.gpus is not None:
        overlay["CUDA_VISIBLE_DEVICES"] = spec.gpus
    argv = [env.interpreter, *launcher, str(script_path), *spec.script_argv()]
    return Launch(script_path, argv, src.path, overlay)


@dataclass(frozen=True)
class Plan:
    """Everything resolved that needs no network: the spec, the source as described, the
    environment, and the launch as it would be (paths under the run's tree for remote sources)."""

    spec: JobSpec
    source: source.Source
    environment: envs.Environment
    launch: Launch
    runs_dir: Path
    resume: str | None = None


def make_plan(spec: JobSpec, runs_dir: Path) -> Plan:
    """Check the source (refusals happen here, before any git process) and the interpreter."""
    described = source.describe(spec, runs_dir / "<run-id>" / source.TREE)
    env = envs.prepare(spec)
    if described.kind == "local":
        for key, name in (("python.requirements", spec.requirements),
                          ("python.conda_file", spec.conda_file)):
            if name is not None and not (described.path / name).is_file():
                raise UsageError(f"{key}: {described.path / name} does not exist",
                                 f"check `{key}` (it is relative to the project)")
    resume = conventions.resume_checkpoint(spec, runs_dir)
    launch = make_launch(spec, env, described, runs_dir / "<run-id>")
    return Plan(spec, described, env, launch, runs_dir, resume)


def project_id(spec: JobSpec) -> str:
    """How environments remember which projects used them."""
    return spec.project if spec.project_kind != "local" else str(Path(spec.project))


def launch_problem(launch: Launch, interpreter: str) -> LaunchError | None:
    """Interpreter or script missing (127) or not runnable (126), found before starting."""
    if not os.path.isabs(interpreter) or not os.path.exists(interpreter):
        return LaunchError(f"interpreter not found: {interpreter}", 127,
                           "pass --python PATH or set python.interpreter in the spec")
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        return LaunchError(f"interpreter is not executable: {interpreter}", 126,
                           f"chmod +x {interpreter}, or choose another with --python")
    script = launch.script_path
    if not script.exists():
        return LaunchError(f"script not found: {script}", 127,
                           f"check `script` (it is relative to the project {launch.cwd})")
    if not script.is_file() or not os.access(script, os.R_OK):
        return LaunchError(f"script is not a readable file: {script}", 126,
                           "point `script` at a Python file")
    return None


def job_gpus(spec: JobSpec) -> int:
    """GPUs per node the job gets: for Slurm what it asks of Slurm (the submitting host's
    GPUs say nothing about the node's), here the visible ones."""
    if spec.backend is not None:
        return int(spec.backend.get("gpus_per_node") or 0)
    return conventions.gpu_count(spec.gpus)


def _lease_file(env: envs.Environment) -> Path | None:
    if env.key is None:
        return None
    from torchrun_cli.envs import cache

    return cache.lease_file(env.key)


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP while git, pip or uv run: unwinds like Ctrl-C, so each tool's process
    group is killed, no half-built cache entry is kept, and run.json says cancelled."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    import signal

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _check_checkout(spec: JobSpec, src: source.Source) -> None:
    """For git and archive sources the script must be a file inside the checkout: 125."""
    if src.kind == "local":
        return
    from torchrun_cli.gitsource import inside

    script = inside(src.path, spec.script, "script")
    if not script.is_file():
        raise SetupError(f"script {spec.script!r} is not in the checkout of {src.url}",
                         "check `script` (relative to the repository and its #subdirectory)",
                         phase="source")


def _conclude(outcome: supervise.Outcome, spec: JobSpec) -> dict[str, object]:
    """Status, exit code and signal, as DESIGN.md's exit-status table says."""
    rc = outcome.returncode
    died_by = supervise.signal_name(-rc) if rc < 0 else None
    if outcome.interrupted_by is not None:
        name = supervise.signal_name(outcome.interrupted_by)
        return {"status": "cancelled", "exit_code": 128 + outcome.interrupted_by,
                "signal": died_by, "error": f"torchjob was interrupted by {name}"}
    if outcome.timed_out:
        return {"status": "timeout", "exit_code": 124, "signal": died_by,
                "error": f"timed out after {spec.timeout:g}s"}
    if rc < 0:
        return {"status": "failed", "exit_code": 128 - rc, "signal": died_by,
                "error": f"killed by {died_by}"}
    return {"status": "succeeded" if rc == 0 else "failed", "exit_code": rc}


def execute(
    plan: Plan,
    *,
    echo: bool,
    on_start: Callable[[record.RunRecord, Path], None],
    on_stop: Callable[[int | None], None],
    on_source: Callable[[source.Source], None] = lambda src: None,
    on_progress: Callable[[str], None] = lambda line: None,
    rebuild: bool = False,
    detach: bool = False,
) -> tuple[record.RunRecord, Path]:
    """Create the run folder and record, prepare the source, run the job, write the end."""
    spec = plan.spec
    run_id, run_dir = record.create_run_dir(plan.runs_dir, spec.name)
    started = time.monotonic()
    rec = record.RunRecord(
        schema_version=record.SCHEMA_VERSION,
        id=run_id,
        name=spec.name,
        status="running",
        started_at=record.now_iso(),
        argv=plan.launch.shown_argv(),
        cwd=str(plan.launch.cwd),
        interpreter=plan.environment.interpreter,
        source=plan.source.record(),
        environment=plan.environment.record(),
        params=dict(mask_mapping(spec.params)),
        spec=spec.masked(),
        pid_start=record.process_start_ticks(os.getpid()),
    )
    model_dir, output_dir = conventions.folders(spec, run_dir)
    rec = rec.finish(model_dir=str(model_dir), output_dir=str(output_dir),
                     resume_from=plan.resume)
    stdout_log, stderr_log = run_dir / record.STDOUT_LOG, run_dir / record.STDERR_LOG
    stdout_log.touch()  # `torchjob logs -f` works from the first moment
    stderr_log.touch()
    record.write_record(run_dir, rec)
    on_start(rec, run_dir)
    end: dict[str, object]
    lease = None
    if spec.distributed is not None or spec.backend is not None:  # only jobs that need them
        from torchrun_cli import distributed, slurm
    try:
        with _stoppable():  # SIGTERM/SIGHUP during setup: like Ctrl-C, the tools' groups go
            src = source.materialize(spec, run_dir, run_dir / SETUP_LOG)
            rec = rec.finish(source=src.record())
            on_source(src)
            _check_checkout(spec, src)
            env, lease = envs.materialize(spec, plan.environment, src.path, project_id(spec),
                                          run_dir / SETUP_LOG, rebuild, on_progress)
        rec = rec.finish(environment=env.record(), interpreter=env.interpreter)
        launch = make_launch(spec, env, src, run_dir)
        rec = rec.finish(argv=launch.shown_argv(), cwd=str(launch.cwd))
        problem = launch_problem(launch, env.interpreter)
        if problem is not None:
            end = {"status": "failed", "exit_code": problem.exit_code, "phase": "launch",
                   "error": problem.message}
        else:
            model_dir.mkdir(parents=True, exist_ok=True)
            output_dir.mkdir(parents=True, exist_ok=True)
            gpus = job_gpus(spec)
            extra = conventions.job_env(spec, model_dir, output_dir, plan.resume, gpus)
            if spec.backend is not None:
                script = run_dir / slurm.SCRIPT
                variables = {**extra, **launch.env_overlay, "TORCHJOB_RUN_ID": run_id,
                             "TORCHJOB_RUN_DIR": str(run_dir)}
                hidden = slurm.secret_variables(variables, launch.argv, [
                    v for k, v in spec.params.items() if is_secret(k) and isinstance(v, str)])
                script.write_text(slurm.batch_script(
                    launch.argv, cwd=launch.cwd, env=variables, run_dir=run_dir,
                    name=spec.name, backend=spec.backend, timeout=spec.timeout,
                    distributed=spec.distributed, lease=_lease_file(env), hidden=hidden))
                job_id = slurm.submit(script, run_dir / SETUP_LOG, hidden)
                rec = rec.finish(backend={"type": "slurm", "job_id": job_id,
                                          "script": str(script), "detached": detach})
                if detach:
                    record.write_record(run_dir, rec)
                    return rec, run_dir
                state, cancelled_by = slurm.follow(job_id, run_dir, echo, on_stop)
                end = slurm.conclude(state, cancelled_by)
            else:
                outcome = supervise.supervise(
                    launch.argv, cwd=launch.cwd, env=launch.child_env(run_id, run_dir, extra),
                    stdout_log=stdout_log, stderr_log=stderr_log, echo=echo,
                    timeout=spec.timeout, grace=spec.grace, on_stop=on_stop)
                end = _conclude(outcome, spec)
                if outcome.log_error:
                    end["error"] = outcome.log_error
            end["outputs"] = conventions.read_outputs(output_dir)
            if spec.distributed is not None and spec.backend is None and \
                    distributed.torch_missing(end, run_dir / distributed.RANKS, stderr_log):
                end = {"status": "setup_error", "exit_code": 125, "phase": "launch",
                       "error": f"torch is not importable by {env.interpreter}, so torchrun "
                                "could not start; fix: add torch to the environment "
                                "(`--pip torch==2.13.0` or requirements.txt, pinned)"}
            elif spec.distributed is not None and spec.backend is None:
                gang = distributed.summarize(run_dir / distributed.RANKS, stderr_log,
                                             spec.distributed, gpus)
                end["distributed"] = gang
                if gang["root_cause"] and end["status"] == "failed":
                    end["error"] = gang["root_cause"]
    except SetupError as exc:
        end = {"status": "setup_error", "exit_code": exc.exit_code, "phase": exc.phase,
               "error": exc.lines()[0]}
    except OSError as exc:  # the trampoline itself could not start (cwd gone, no fork)
        end = {"status": "failed", "exit_code": 126 if exc.errno == errno.EACCES else 127,
               "phase": "launch", "error": f"cannot start the job: {exc}"}
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM before the supervisor took over
        signum = exc.signum if isinstance(exc, _Stopped) else 2
        end = {"status": "cancelled", "exit_code": 128 + signum,
               "error": f"interrupted by {supervise.signal_name(signum)} before launch"}
    finally:
        if lease is not None:
            lease.close()
    final = rec.finish(
        ended_at=record.now_iso(), duration_s=round(time.monotonic() - started, 3), **end)
    record.write_record(run_dir, final)
    return final, run_dir


def refresh(run_dir: Path) -> record.RunRecord:
    """A detached Slurm run's record, brought up to date (written once the job has ended)."""
    rec = record.load_record(run_dir)
    backend = rec.backend or {}
    if rec.status != "running" or not backend.get("detached"):
        return rec
    from torchrun_cli import slurm

    try:
        state = slurm.query(str(backend["job_id"]), run_dir)
    except slurm.SlurmUnavailable:  # unknown is not ended: the record stays as it is
        return rec
    if state is not None and not state.done:
        return rec
    end = slurm.conclude(state or slurm.JobState("UNKNOWN", None, None, "forgotten"), None)
    output_dir = Path(rec.output_dir) if rec.output_dir else run_dir / conventions.OUTPUT
    final = rec.finish(ended_at=record.now_iso(), outputs=conventions.read_outputs(output_dir),
                       **end)
    record.write_record(run_dir, final)
    return final


def cancel(run_dir: Path) -> str:
    """Stop a run: scancel a Slurm job, or SIGTERM the torchjob that supervises a local one."""
    import signal as signals

    rec = refresh(run_dir)
    if rec.status != "running":
        raise UsageError(f"run {rec.id} is not running (it is {rec.shown_status()})",
                         "nothing to cancel")
    if rec.backend and rec.backend.get("job_id"):
        from torchrun_cli import slurm

        slurm.cancel(str(rec.backend["job_id"]))
        return f"cancelled Slurm job {rec.backend['job_id']}"
    if not rec.is_live():
        raise UsageError(f"run {rec.id} is lost (its torchjob is gone)", "nothing to cancel")
    os.kill(rec.pid, signals.SIGTERM)
    return f"sent SIGTERM to torchjob (pid {rec.pid}); it stops the job"

