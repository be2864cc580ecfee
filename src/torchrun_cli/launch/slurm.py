"""The Slurm backend: a readable batch script in the run folder, `sbatch --parsable`, then either
follow the job (output into stdout.log/stderr.log and the console, exit with its status) or
return at once (`--detach`) and let `logs -f`, `show` and `cancel` find it again.

Every value in the batch script is quoted with shlex.quote; extra sbatch options come from an
allow-list and go into `#SBATCH` lines, never into shell text.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrun_cli.errors import SetupError, UsageError
from torchrun_cli.launch.base import Job, OnStop, Stopped, signal_name
from torchrun_cli.masking import is_secret
from torchrun_cli.record import End, RunDir, RunRecord, Status
from torchrun_cli.spec.keys import CONTROL
from torchrun_cli.spec.model import BackendSpec, DistributedSpec
from torchrun_cli.tools import ToolFailed, run_tool

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
}
_POLL_S = 0.5
_FIRST_POLL_S = 0.05  # the first line comes ~1 s after sbatch: poll fast, then slow down


def duration_hms(seconds: float) -> str:
    """Slurm's --time as D-HH:MM:SS, rounded up to the minute torchjob's timeout falls in."""
    total = max(60, int(-(-seconds // 60)) * 60)
    days, rest = divmod(total, 86400)
    return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:00"


def batch_script(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    run: RunDir,
    name: str,
    backend: BackendSpec,
    timeout: float | None,
    distributed: DistributedSpec | None,
    lease: Path | None = None,
    hidden: Mapping[str, str] | None = None,
) -> str:
    """The batch script: #SBATCH lines, the job's variables, then the command (through srun
    and a c10d rendezvous on the allocation's first node for multi-node torchrun)."""
    q = shlex.quote
    nodes = backend.node_count
    values = [v for v in backend._asdict().values() if isinstance(v, str)]
    for value in (name, str(cwd), str(run.path), *values, *backend.extra_args):
        if CONTROL.search(value):
            raise SetupError(
                f"refused {value!r} in the batch script: a control character",
                "rename it without newlines or control characters",
                phase="backend",
            )
    output = str(run.stdout_log).replace("%", "%%")  # % starts a Slurm file pattern
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={q(name)}",
        f"#SBATCH --output={q(output)}",
        f"#SBATCH --chdir={q(str(cwd))}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    for key, option in (
        ("partition", "partition"),
        ("cpus_per_task", "cpus-per-task"),
        ("mem", "mem"),
        ("account", "account"),
        ("qos", "qos"),
        ("constraint", "constraint"),
    ):
        if (value := getattr(backend, key)) is not None:
            lines.append(f"#SBATCH --{option}={q(value)}")
    if backend.gpus_per_node:
        lines.append(f"#SBATCH --gres=gpu:{int(backend.gpus_per_node)}")
    if timeout:
        lines.append(f"#SBATCH --time={duration_hms(timeout)}")
    lines += [f"#SBATCH {arg}" for arg in backend.extra_args]
    lines += ["", "# written by torchjob: the job's environment, then the command", "set -u"]
    if lease is not None:  # as a local run does: env prune/rm leave the environment alone
        lines.append(f"exec 9<>{q(str(lease))} && flock -s 9")
    hidden = hidden or {}
    lines += [f"export {k}={q(v)}" for k, v in sorted(env.items()) if k not in hidden]
    lines += [
        f': "${{{k}?torchjob: {k} did not reach the job: sbatch must pass the '
        f'environment (--export=ALL)}}"'
        for k in sorted(hidden)
    ]
    if distributed is not None and nodes > 1:
        # torchrun reads its rendezvous from PET_* variables: the command itself stays quoted
        # word for word, and a port per job lets two jobs share a head node.
        lines += [
            'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"export PET_NNODES={nodes} PET_RDZV_BACKEND=c10d",
            'export PET_RDZV_ID="$SLURM_JOB_ID" '
            'PET_RDZV_ENDPOINT="$head:$((20000 + SLURM_JOB_ID % 20000))"',
        ]
        command = f"srun --kill-on-bad-exit=1 {_command(argv, hidden)}"
    else:
        command = _command(argv, hidden)
    # stderr goes to stderr.log and stdout to a stdout-only file (for the console copies);
    # both also reach Slurm's output, stdout.log. Pipes, so the script waits for every tee.
    err, out = q(str(run.stderr_log)), q(str(run.slurm_stdout))
    lines += [
        f'{{ {command} 2>&1 1>&3 3>&- | tee -a {err} >&2; exit "${{PIPESTATUS[0]}}"; }} '
        f"3>&1 | tee -a {out}",
        "code=${PIPESTATUS[0]}",
        # Slurm forgets a finished job after MinJobAge and sacct needs accounting:
        # the script keeps the job's status in the run folder itself.
        f'echo "$code" > {q(str(run.slurm_exit))}.tmp && '
        f"mv -f {q(str(run.slurm_exit))}.tmp {q(str(run.slurm_exit))}",
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def secret_variables(
    env: Mapping[str, str], argv: Sequence[str], secrets: Sequence[str]
) -> dict[str, str]:
    """The job's variables, and arguments (as TORCHJOB_ARG_<i>), that are or hold a secret:
    they reach the job through sbatch's own environment (its --export=ALL default), never as
    text in job.sbatch, which Slurm keeps and may show its admins (sacct --batch-script)."""
    values = [v for v in [*secrets, *(v for k, v in env.items() if is_secret(k))] if len(v) >= 4]
    hidden = {k: v for k, v in env.items() if is_secret(k) or any(s in v for s in values)}
    hidden.update(
        {f"TORCHJOB_ARG_{i}": a for i, a in enumerate(argv) if any(s in a for s in values)}
    )
    return hidden


def _command(argv: Sequence[str], hidden: Mapping[str, str]) -> str:
    """argv as shell words: quoted, or a quoted reference to the variable that carries it."""
    return " ".join(
        f'"${{TORCHJOB_ARG_{i}}}"' if f"TORCHJOB_ARG_{i}" in hidden else shlex.quote(a)
        for i, a in enumerate(argv)
    )


def submit(script: Path, log: Path, hidden: Mapping[str, str] | None = None) -> str:
    """sbatch --parsable: the job id, or a setup error with Slurm's own message."""
    try:
        out = run_tool(
            ["sbatch", "--parsable", str(script)],
            timeout=120,
            log=log,
            env={**os.environ, **(hidden or {})},
            secrets=list((hidden or {}).values()),
        )
    except ToolFailed as exc:
        if exc.missing:
            raise SetupError(
                "sbatch is not on PATH: no Slurm here",
                "run where Slurm is installed, or drop backend: slurm",
                phase="backend",
            ) from None
        raise SetupError(
            f"Slurm refused the job: {exc.tail(5).strip()}",
            f"check the backend settings; the script is {script}",
            phase="backend",
        ) from None
    return out.strip().split(";")[0]


@dataclass(frozen=True)
class JobState:
    """What Slurm says about a job."""

    state: str
    exit_code: int | None
    signal: int | None
    reason: str

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


class SlurmUnavailable(Exception):
    """Slurm did not answer (its controller is down or busy): the job's state is unknown, not
    ended; ask again later."""


def query(job_id: str, run: RunDir | None = None) -> JobState | None:
    """From `scontrol show job` (accounting off), else `sacct`, else the exit code the batch
    script left in the run folder; None if Slurm has forgotten the job and nothing else knows
    it. Raises SlurmUnavailable when Slurm could not be asked."""
    forgotten = False
    try:
        out = run_tool(["scontrol", "show", "job", "-o", job_id], timeout=30, log=None)
        fields: dict[str, str] = {}
        for key, value in re.findall(r"(?:^|\s)(\w+)=(\S*)", out):
            fields.setdefault(key, value)  # the first: a later WorkDir=... cannot override
        status, _, sig = fields.get("ExitCode", "0:0").partition(":")
        return JobState(
            fields.get("JobState", "UNKNOWN"),
            int(status or 0),
            int(sig or 0),
            fields.get("Reason", ""),
        )
    except ToolFailed as exc:
        forgotten = "Invalid job id" in exc.output
    try:
        out = run_tool(
            ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode"], timeout=30, log=None
        )
        m = re.match(r"^(\w+)[^|]*\|(\d+):(\d+)$", out.strip().splitlines()[0])
        if m:
            return JobState(m.group(1), int(m.group(2)), int(m.group(3)), "")
    except (ToolFailed, IndexError):
        pass
    try:
        code = int(run.slurm_exit.read_text()) if run else None
    except (OSError, ValueError):
        code = None
    if code is None:
        if not forgotten:
            raise SlurmUnavailable(f"scontrol could not tell the state of job {job_id}")
        return None
    return JobState("COMPLETED" if code == 0 else "FAILED", code, 0, "from the batch script")


def cancel(job_id: str, log: Path | None = None) -> None:
    try:
        run_tool(["scancel", job_id], timeout=60, log=log)
    except ToolFailed as exc:
        raise UsageError(f"scancel {job_id} failed: {exc.tail(3)}", "see squeue") from None


def follow(job_id: str, run: RunDir, echo: bool, on_stop: OnStop) -> tuple[JobState, int | None]:
    """Wait for the job, copying its output files to the console as they grow; Ctrl-C or
    SIGTERM cancel the job (scancel) and wait for it to end. Returns its end and the signal."""
    caught: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    streams = {run.slurm_stdout: 1, run.stderr_log: 2}  # file -> console fd
    offsets = dict.fromkeys(streams, 0)
    cancelled_by = None
    delay = _FIRST_POLL_S
    try:
        while True:
            if caught and cancelled_by is None:
                cancelled_by = caught[0]
                on_stop(cancelled_by)
                cancel(job_id, run.setup_log)
            for path, fd in streams.items():
                offsets[path] = _copy_new(path, offsets[path], fd if echo else None)
            try:
                state = query(job_id, run)
            except SlurmUnavailable:  # a blip of the controller: the job goes on
                time.sleep(_POLL_S)  # polling Slurm, not synchronisation
                continue
            if state is None or state.done:
                time.sleep(_POLL_S)  # the last lines may still be in flight from the node
                for path, fd in streams.items():
                    _copy_new(path, offsets[path], fd if echo else None)
                return state or JobState("UNKNOWN", None, None, "forgotten by Slurm"), cancelled_by
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_S)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _copy_new(log: Path, offset: int, fd: int | None) -> int:
    """Write what the file gained since offset to the console fd; the new offset."""
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    if data and fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, data)
    return offset + len(data)


def conclude(state: JobState, cancelled_by: int | None) -> End:
    """Status and exit code as the table says, from Slurm's view of the job."""
    if cancelled_by is not None:
        return End(
            Status.CANCELLED,
            128 + cancelled_by,
            error=f"torchjob was interrupted by {signal_name(cancelled_by)}; "
            "the Slurm job was cancelled",
        )
    if state.state == "TIMEOUT":
        return End(Status.TIMEOUT, 124, error="Slurm's time limit")
    if state.state == "CANCELLED":  # scancel sends SIGTERM
        return End(Status.CANCELLED, 128 + (state.signal or 15), error="cancelled in Slurm")
    if state.signal:
        return End(
            Status.FAILED,
            128 + state.signal,
            signal_name(state.signal),
            error=f"killed by {signal_name(state.signal)}",
        )
    code = state.exit_code if state.exit_code is not None else 1
    if state.state == "OUT_OF_MEMORY":  # the kernel's SIGKILL
        return End(
            Status.FAILED, code or 137, error="the job ran out of memory (Slurm's OUT_OF_MEMORY)"
        )
    if state.state in ("NODE_FAIL", "BOOT_FAIL") or (
        state.state == "FAILED" and "launch" in state.reason.lower()
    ):
        return End(
            Status.SETUP_ERROR,
            125,
            phase="backend",
            error=f"the Slurm job failed to start: {state.state} {state.reason}",
        )
    if state.state == "COMPLETED" and code == 0:
        return End(Status.SUCCEEDED, 0)
    return End(
        Status.FAILED,
        code or 1,  # PREEMPTED, DEADLINE: never a 0
        error=f"the script exited with status {code}"
        if code
        else f"Slurm ended the job as {state.state}",
    )


class SlurmBackend:
    """The job as a Slurm batch job: submitted, then followed or left running (detached)."""

    info: dict[str, Any] | None = None

    def __init__(self, detach: bool = False) -> None:
        self.detach = detach

    def start(self, job: Job) -> None:
        """Write job.sbatch and submit it. A SIGTERM or SIGHUP meanwhile waits for sbatch's
        answer, so the job id is never lost: the job is then cancelled, and Stopped raised."""
        spec, launch, run = job.spec, job.launch, job.run
        assert spec.backend is not None
        variables = job.variables()
        hidden = secret_variables(
            variables,
            launch.argv,
            [v for k, v in spec.params.items() if is_secret(k) and isinstance(v, str)],
        )
        run.sbatch.write_text(
            batch_script(
                launch.argv,
                cwd=launch.cwd,
                env=variables,
                run=run,
                name=spec.name,
                backend=spec.backend,
                timeout=spec.timeout,
                distributed=spec.distributed,
                lease=job.lease,
                hidden=hidden,
            )
        )
        with _deferred_signals() as caught:
            job_id = submit(run.sbatch, run.setup_log, hidden)
        self.info = {
            "type": "slurm",
            "job_id": job_id,
            "script": str(run.sbatch),
            "detached": self.detach,
        }
        if caught:
            cancel(job_id, run.setup_log)
            raise Stopped(caught[0])

    def follow(self, job: Job, echo: bool, on_stop: OnStop) -> End:
        assert self.info is not None
        state, cancelled_by = follow(str(self.info["job_id"]), job.run, echo, on_stop)
        return conclude(state, cancelled_by)

    def details(self, job: Job, end: End) -> tuple[End, dict[str, Any]]:
        return end, {}

    def cancel(self, record: RunRecord, run: RunDir) -> str:
        job_id = str((record.backend or {})["job_id"])
        cancel(job_id, None)
        return f"cancelled Slurm job {job_id}"

    def conclude(self, record: RunRecord, run: RunDir) -> End | None:
        try:
            state = query(str((record.backend or {})["job_id"]), run)
        except SlurmUnavailable:  # unknown is not ended: the record stays as it is
            return None
        if state is not None and not state.done:
            return None
        return conclude(state or JobState("UNKNOWN", None, None, "forgotten"), None)


@contextlib.contextmanager
def _deferred_signals() -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP are noted, not acted on, until the block ends."""
    caught: list[int] = []

    def note(signum: int, frame: Any) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield caught
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
