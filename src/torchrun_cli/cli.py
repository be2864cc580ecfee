"""The `torchjob` command: flags to overrides, call the core, render, map errors to exit codes.

Only this module parses flags, prints through console.py and chooses exit statuses.
"""

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from torchrun_cli import __version__, console, record, store
from torchrun_cli.errors import TorchjobError, UsageError

app = typer.Typer(
    name="torchjob",
    help="Run a PyTorch training project: logs, a record, clean stops, the script's exit status.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RunsDir = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Folder of run folders [default: $TORCHJOB_HOME/runs]."),
]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"torchjob {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")]
    = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run PyTorch training jobs locally: logs, a record, clean stops."""
    obj = ctx.ensure_object(dict)
    obj["debug"] = debug
    if obj.get("trailing") and ctx.invoked_subcommand != "run":
        raise UsageError("arguments after `--` are only for `torchjob run`",
                         "remove them, or use `torchjob run ... -- ARGS`")


@app.command(context_settings={"allow_interspersed_args": True})
def run(
    ctx: typer.Context,
    spec_file: Annotated[str | None, typer.Argument(
        metavar="SPEC.yaml", help="Job spec; flags override its keys.")] = None,
    script: Annotated[str | None, typer.Option(
        "-s", "--script", help="Entry script, relative to the project.")] = None,
    project: Annotated[str | None, typer.Option(
        "-p", "--project", help="Project: a folder, an archive, or a git URL[#subdir] "
        "[default: the spec's folder, else cwd].")] = None,
    ref: Annotated[str | None, typer.Option(
        "-r", "--ref", help="Git branch, tag or commit [default: the remote's default branch].",
    )] = None,
    file: Annotated[list[str] | None, typer.Option(
        "--file", help="A file or folder to copy next to the script (repeatable).")] = None,
    allow_insecure_source: Annotated[bool, typer.Option(
        "--allow-insecure-source", help="Allow http://, git:// and file:// sources.")] = False,
    python: Annotated[str | None, typer.Option(
        "--python", help="Interpreter [default: $PYTHON_LAUNCHER, else torchjob's own].")] = None,
    env_manager: Annotated[str | None, typer.Option(
        "--env-manager", help="none (the interpreter as is), virtualenv, uv or conda.")] = None,
    python_version: Annotated[str | None, typer.Option(
        "--python-version", help="Python version for the environment (conda, uv).")] = None,
    requirements: Annotated[str | None, typer.Option(
        "--requirements", help="Requirements file, relative to the project "
        "[default: requirements.txt when present].")] = None,
    pip: Annotated[list[str] | None, typer.Option(
        "--pip", help="A package to install into the environment (repeatable).")] = None,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="Build the environment afresh even when it is cached.")] = False,
    param: Annotated[list[str] | None, typer.Option(
        "-P", "--param", help="KEY=VALUE, passed as --KEY VALUE (true: bare flag).")] = None,
    env: Annotated[list[str] | None, typer.Option(
        "-E", "--env", help="KEY=VALUE environment variable for the script.")] = None,
    timeout: Annotated[str | None, typer.Option(
        "--timeout", help="Stop the job after this long: 90s, 15m, 2h (exit 124).")] = None,
    grace: Annotated[str | None, typer.Option(
        "--grace", help="Time between the stop signal and SIGKILL [default: 10s].")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name.")] = None,
    input_: Annotated[list[str] | None, typer.Option(
        "--input", help="NAME=PATH input channel, as $TORCHJOB_CHANNEL_NAME (repeatable).")]
    = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="Checkpoint to resume from ($TORCHJOB_RESUME_FROM), or `last`.")]
    = None,
    nproc_per_node: Annotated[str | None, typer.Option(
        "--nproc-per-node", help="Start a torchrun gang: processes per node (N or auto).")]
    = None,
    nnodes: Annotated[str | None, typer.Option(
        "--nnodes", help="torchrun nodes: N or MIN:MAX.")] = None,
    rdzv_endpoint: Annotated[str | None, typer.Option(
        "--rdzv-endpoint", help="torchrun rendezvous host:port (multi-node).")] = None,
    gpus: Annotated[str | None, typer.Option(
        "--gpus", help="GPU ids for the job, e.g. 0,1 (CUDA_VISIBLE_DEVICES).")] = None,
    backend: Annotated[str | None, typer.Option(
        "--backend", help="slurm: submit with sbatch (default: run here).")] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.")]
    = None,
    nodes: Annotated[str | None, typer.Option("--nodes", help="Slurm nodes.")] = None,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Slurm: print the job id and return at once.")] = False,
    compat: Annotated[str | None, typer.Option(
        "--compat", help="Also export SageMaker (sagemaker) or Tencent TI (ti) variables.")]
    = None,
    runs_dir: RunsDir = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the resolved plan; run nothing.")] = False,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", help="Print nothing on success; the summary and log tail on failure.",
    )] = False,
) -> None:
    """Run a job: `torchjob run [SPEC.yaml] [flags] [-- ARGS...]`."""
    from torchrun_cli import jobs, spec

    flags = spec.Overrides(
        script=script, project=project, python=python, name=name, timeout=timeout, grace=grace,
        params=tuple(param or ()), env=tuple(env or ()), args=tuple(ctx.obj.get("trailing", ())),
        ref=ref, files=tuple(file or ()), allow_insecure_source=allow_insecure_source,
        env_manager=env_manager, python_version=python_version, requirements=requirements,
        pip=tuple(pip or ()), inputs=tuple(input_ or ()), resume_from=resume, compat=compat,
        nproc_per_node=nproc_per_node, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, gpus=gpus,
        backend=backend, partition=partition, nodes=nodes)
    job = spec.load(Path(spec_file) if spec_file else None, flags, Path.cwd())
    plan = jobs.make_plan(job, store.runs_dir(runs_dir))
    if dry_run:
        from torchrun_cli import envs, source

        problem = jobs.launch_problem(plan.launch, plan.environment.interpreter)
        env_state = (envs.explain(job, plan.environment, plan.source.path, jobs.project_id(job),
                                  rebuild) if plan.source.kind == "local"
                     else "computed after the checkout")
        console.plan(plan, problem, source.cache_state(job), env_state)
        return

    def started(rec: record.RunRecord, run_dir: Path) -> None:
        if not quiet:
            console.header(rec, run_dir, plan)

    def stopping(signum: int | None) -> None:
        console.stopping(signum, job.grace, job.timeout)

    final, run_dir = jobs.execute(plan, echo=not quiet, on_start=started, on_stop=stopping,
                                  on_source=lambda src: None if quiet else console.source_line(src),
                                  on_progress=console.progress, rebuild=rebuild,
                                  detach=detach)
    if final.status == "running" and final.backend:
        sys.stdout.write(f"{final.backend['job_id']}\n")
        console.note(f"submitted Slurm job {final.backend['job_id']} as run {final.id}; "
                     f"follow it with `torchjob logs -f {final.id}`")
        return
    if not quiet and final.environment.get("key") and final.status != "setup_error":
        console.environment_line(final.environment)
    ok = final.status == "succeeded"
    if quiet and not ok:
        console.tail(run_dir / record.STDOUT_LOG)
    if final.phase == "launch" and final.error:
        console.error([final.error])
    if final.status == "setup_error":
        console.setup_failure(final, run_dir)
    if not (quiet and ok):
        console.summary(final, run_dir)
    raise typer.Exit(final.exit_code or 0)


@app.command()
def validate(
    spec_file: Annotated[str, typer.Argument(metavar="SPEC.yaml", help="The spec to check.")],
) -> None:
    """Check a spec and print every problem; run nothing (exit 2 on problems)."""
    from torchrun_cli import jobs, spec

    job = spec.load(Path(spec_file), spec.Overrides(), Path.cwd())
    plan = jobs.make_plan(job, Path(os.devnull))
    problem = jobs.launch_problem(plan.launch, plan.environment.interpreter)
    if problem is not None and job.project_kind == "local":
        console.warning(f"{problem.message} (a run would exit {problem.exit_code})")
    sys.stdout.write(f"ok: {spec_file}: script {job.script} in {job.project}\n")


@app.command()
def runs(
    name: Annotated[str | None, typer.Option("--name", help="Only runs with this name.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only runs with this status (succeeded, failed, running, ...).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: all).")]
    = 20,
    columns: Annotated[str | None, typer.Option(
        "--columns", help="Output parameters to show as columns, e.g. accuracy,loss.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Past runs, newest first."""
    found = [r for r in record.list_records(store.runs_dir(runs_dir))
             if (name is None or r.name == name)
             and (status is None or r.shown_status() == status)]
    found = found[:limit] if limit else found
    if as_json:
        rows = [{**asdict(r), "status": r.shown_status()} for r in found]
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        console.runs_table(found, [c for c in (columns or "").split(",") if c])


@app.command()
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique prefix, or last.")],
    as_json: Annotated[bool, typer.Option("--json", help="The raw run.json.")] = False,
    runs_dir: RunsDir = None,
) -> None:
    """One run's record."""
    run_dir = record.find_run(store.runs_dir(runs_dir), run_ref)
    if as_json:
        from torchrun_cli import jobs

        jobs.refresh(run_dir)
        sys.stdout.write((run_dir / record.RECORD).read_text(encoding="utf-8"))
        return
    from torchrun_cli import jobs

    console.show_record(jobs.refresh(run_dir), run_dir)


@app.command()
def logs(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique prefix, or last.")],
    follow: Annotated[bool, typer.Option(
        "-f", "--follow", help="Keep printing until the run ends.")] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Only the errors (stderr.log).")]
    = False,
    runs_dir: RunsDir = None,
) -> None:
    """A run's log: stdout.log (both streams), or stderr.log with --stderr."""
    run_dir = record.find_run(store.runs_dir(runs_dir), run_ref)
    path = run_dir / (record.STDERR_LOG if stderr else record.STDOUT_LOG)
    out = sys.stdout.buffer
    try:
        with path.open("rb") as fh:
            while True:
                chunk = fh.read(1 << 20)
                if chunk:
                    out.write(chunk)
                    continue
                out.flush()
                if not follow or not _refreshed(run_dir).is_live():
                    if follow:  # the run may have written its last bytes just now
                        out.write(fh.read())
                    break
                time.sleep(0.2)  # polling a file for growth; not synchronisation
    except FileNotFoundError as exc:
        raise UsageError(f"no log at {path}", "the run may have failed before it started") from exc
    out.flush()


env_app = typer.Typer(help="The environment cache.", no_args_is_help=True)
app.add_typer(env_app, name="env")


@env_app.command("list")
def env_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
) -> None:
    """Cached environments: key, manager, python, size, created, last used, projects."""
    from torchrun_cli.envs import cache as env_cache

    found = env_cache.list_envs()
    if as_json:
        sys.stdout.write(json.dumps([asdict(e) for e in found], indent=2) + "\n")
    else:
        console.env_table(found)


@env_app.command("prune")
def env_prune(
    unused_for: Annotated[str | None, typer.Option(
        "--unused-for", help="Remove environments not used for this long (30d, 12h).")] = None,
    keep: Annotated[int | None, typer.Option(
        "--keep", min=0, help="Keep only the N most recently used.")] = None,
) -> None:
    """Remove old environments; one in use by a running job is never removed."""
    from torchrun_cli.envs import cache as env_cache
    from torchrun_cli.speccheck import parse_duration

    if unused_for is None and keep is None:
        raise UsageError("say what to prune", "pass --unused-for 30d and/or --keep N")
    try:
        seconds = parse_duration(unused_for) if unused_for else None
    except ValueError as exc:
        raise UsageError(f"--unused-for {unused_for!r}: {exc}", "write e.g. 30d") from None
    found = sorted(env_cache.list_envs(), key=lambda e: e.last_used, reverse=True)
    now = time.time()
    rank = 0  # among ready environments: a half-built folder is not one of the N kept
    for env in found:
        old = seconds is not None and now - env.last_used >= seconds
        extra = keep is not None and rank >= keep
        rank += env.ready
        if not env.ready or old or extra:
            removed = env_cache.remove(env)
            word = "removed" if removed else "kept (in use)"
            sys.stdout.write(f"{word} {env.key[:16]} {env.manager} ({env.size_bytes} bytes)\n")
        else:
            env_cache.tidy(env)  # what a --rebuild replaced, once no job uses it


@env_app.command("rm")
def env_rm(
    key: Annotated[str, typer.Argument(help="An environment key, or a unique prefix of one.")],
) -> None:
    """Remove one environment (not while a job uses it)."""
    from torchrun_cli.envs import cache as env_cache

    matches = [e for e in env_cache.list_envs() if e.key.startswith(key)]
    if len(matches) != 1:
        raise UsageError(f"{key!r} matches {len(matches)} environments",
                         "give a longer key prefix (see `torchjob env list`)")
    if not env_cache.remove(matches[0]):
        raise UsageError(f"environment {key} is in use by a running job",
                         "try again when the job has ended")
    sys.stdout.write(f"removed {matches[0].key[:16]}\n")


cache_app = typer.Typer(help="The cache of git mirrors.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("list")
def cache_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
) -> None:
    """Cached git mirrors: size and last use."""
    from torchrun_cli import gitsource

    repos = gitsource.list_mirrors()
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in repos], indent=2) + "\n")
    else:
        console.cache_table(repos)


@cache_app.command("prune")
def cache_prune(
    unused_for: Annotated[str, typer.Option(
        "--unused-for", help="Remove mirrors not used for this long (30d, 12h, 0 for all).")]
    = "30d",
) -> None:
    """Remove mirrors not used recently, and any left incomplete by a killed clone."""
    from torchrun_cli import gitsource
    from torchrun_cli.speccheck import parse_duration

    try:
        seconds = 0.0 if unused_for.strip() == "0" else parse_duration(unused_for)
    except ValueError as exc:
        raise UsageError(f"--unused-for {unused_for!r}: {exc}", "write e.g. 30d or 12h") from None
    for repo in gitsource.prune(seconds):
        sys.stdout.write(f"removed {repo.key} {repo.url} ({repo.size_bytes} bytes)\n")


def _refreshed(run_dir: Path) -> record.RunRecord:
    from torchrun_cli import jobs

    return jobs.refresh(run_dir)


@app.command()
def cancel(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique prefix, or last.")],
    runs_dir: RunsDir = None,
) -> None:
    """Stop a running job: scancel a Slurm job, or stop a local one like Ctrl-C would."""
    from torchrun_cli import jobs

    sys.stdout.write(jobs.cancel(record.find_run(store.runs_dir(runs_dir), run_ref)) + "\n")


def _standard_fds() -> None:
    """Started with stdin, stdout or stderr closed, the first file we open would take its
    number (and a log would receive the console copy): park /dev/null there first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: this one
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


# Commands that only read and print: like cat, they die quietly of SIGPIPE when the reader
# goes (`torchjob runs | head`), where click would print nothing and exit 1. `run` and the
# commands that delete keep Python's default, so they always finish what they started.
_READERS = {("runs",), ("show",), ("logs",), ("validate",), ("env", "list"), ("cache", "list")}


def main() -> None:
    """Entry point: split off `-- ARGS`, run the app, turn errors into messages and statuses."""
    _standard_fds()
    argv = sys.argv[1:]
    words = tuple(a for a in argv if not a.startswith("-"))
    if words[:1] in _READERS or words[:2] in _READERS:
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    trailing: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, trailing = argv[:cut], argv[cut + 1 :]
    obj: dict[str, Any] = {"trailing": trailing, "debug": "--debug" in argv}
    try:
        app(args=argv, prog_name="torchjob", obj=obj)
    except TorchjobError as exc:
        if obj.get("debug"):
            raise
        console.error(exc.lines())
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
    except Exception as exc:
        if obj.get("debug"):
            raise
        console.error([f"internal error: {exc!r}; run again with --debug to see the traceback"])
        sys.exit(1)
