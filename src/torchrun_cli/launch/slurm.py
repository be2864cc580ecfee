"""The Slurm backend: a readable batch script in the run folder, `sbatch --parsable`, then either
follow the job (output into stdout.log/stderr.log and the console, exit with its status) or
return at once (`--detach`) and let `logs -f`, `show` and `cancel` find it again.

The batch script itself is written by sbatch.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrun_cli.errors import SetupError, UsageError
from torchrun_cli.launch.base import Job, OnStop, Stopped, signal_name
from torchrun_cli.launch.fill import WRAPPER
from torchrun_cli.launch.sbatch import batch_script, secret_variables
from torchrun_cli.launch.streams import same_file
from torchrun_cli.masking import is_secret
from torchrun_cli.record import End, RunDir, RunRecord, Status, now_iso
from torchrun_cli.spec.refs import has_refs
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
REQUEUED_AFTER = {"TIMEOUT", "PREEMPTED", "NODE_FAIL"}  # with backend.requeue
DEFERRED = "deferred"  # as a backend's `after`: write job.sbatch, a job array submits it
# A deferred script's secret variables, by script path, for the array's sbatch: kept in this
# process only (never in a record or a file), taken once.
_SECRETS: dict[str, dict[str, str]] = {}


def deferred_secrets(script: Path) -> dict[str, str]:
    """The secret variables a deferred job.sbatch expects in sbatch's environment."""
    return _SECRETS.pop(str(script), {})


_FIRST_POLL_S = 0.05  # the first line comes ~1 s after sbatch: poll fast, then slow down


def submit(
    script: Path, log: Path, hidden: Mapping[str, str] | None = None, after: Sequence[str] = ()
) -> str:
    """sbatch --parsable: the job id, or a setup error with Slurm's own message. `after`: the
    jobs that must succeed first (a pipeline's needs); if one fails, Slurm cancels this one
    rather than leave it pending for ever."""
    order = [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"] * bool(after)
    try:
        out = run_tool(
            ["sbatch", "--parsable", *order, str(script)],
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


def follow(
    job_id: str,
    run: RunDir,
    echo: bool,
    on_stop: OnStop,
    again: Callable[[JobState], bool] = lambda state: False,
) -> tuple[JobState, int | None]:
    """Wait for the job, copying its output files to the console as they grow; Ctrl-C or
    SIGTERM cancel the job (scancel) and wait for it to end. `again` may requeue an ended job
    (True: it did, follow on). Returns its end and the signal."""
    caught: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    streams = {run.slurm_stdout: 1, run.stderr_log: 2}  # file -> console fd
    offsets = dict.fromkeys(streams, 0)
    ends = dict.fromkeys(streams, b"\n")  # the last byte each has shown

    def copy() -> None:
        for path, fd in streams.items():
            new = _copy_new(path, offsets[path], fd if echo else None)
            offsets[path] += len(new)
            ends[path] = new[-1:] or ends[path]

    cancelled_by = None
    delay = _FIRST_POLL_S
    try:
        while True:
            if caught and cancelled_by is None:
                cancelled_by = caught[0]
                on_stop(cancelled_by)
                cancel(job_id, run.setup_log)
            copy()
            try:
                state = query(job_id, run)
            except SlurmUnavailable:  # a blip of the controller: the job goes on
                time.sleep(_POLL_S)  # polling Slurm, not synchronisation
                continue
            if state is not None and state.done and cancelled_by is None and again(state):
                continue
            if state is None or state.done:
                time.sleep(_POLL_S)  # the last lines may still be in flight from the node
                copy()
                shown = (run.stderr_log, run.slurm_stdout) if same_file(1, 2) else (run.stderr_log,)
                if echo and any(ends[path] != b"\n" for path in shown):
                    with contextlib.suppress(OSError):  # torchjob's status line starts its own
                        os.write(2, b"\n")
                return state or JobState("UNKNOWN", None, None, "forgotten by Slurm"), cancelled_by
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_S)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _copy_new(log: Path, offset: int, fd: int | None) -> bytes:
    """What the file gained since offset, written to the console fd."""
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return b""
    if data and fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, data)
    return data


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

    def __init__(self, detach: bool = False, after: Sequence[str] = ()) -> None:
        self.detach, self.after = detach, tuple(after)

    def start(self, job: Job) -> None:
        """Write job.sbatch and submit it. A SIGTERM or SIGHUP meanwhile waits for sbatch's
        answer, so the job id is never lost: the job is then cancelled, and Stopped raised."""
        spec, launch, run = job.spec, job.launch, job.run
        assert spec.backend is not None
        variables = job.variables()
        argv = list(launch.argv)
        if any(has_refs(w) for w in (*argv, *variables.values())):  # outputs of earlier steps
            argv = [sys.executable, *WRAPPER, *argv]
        hidden = secret_variables(
            variables,
            argv,
            [v for k, v in spec.params.items() if is_secret(k) and isinstance(v, str)],
        )
        run.sbatch.write_text(
            batch_script(
                argv,
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
        if self.after == (DEFERRED,):  # a task of a sweep's array (pipelines/array.py)
            self.info = {"type": "slurm", "job_id": None, "script": str(run.sbatch)}
            self.info["detached"] = True
            _SECRETS[str(run.sbatch)] = dict(hidden)
            return
        with _deferred_signals() as caught:
            job_id = submit(run.sbatch, run.setup_log, hidden, self.after)
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
        job_id = str(self.info["job_id"])
        left = job.spec.retries.count if job.spec.backend and job.spec.backend.requeue else 0
        requeues: list[dict[str, str]] = []

        def again(state: JobState) -> bool:
            if state.state not in REQUEUED_AFTER or len(requeues) >= left:
                return False
            run_tool(["scontrol", "requeue", job_id], timeout=60, log=job.run.setup_log)
            requeues.append({"after": state.state, "at": now_iso()})
            assert self.info is not None
            self.info["requeues"] = requeues  # run.json shows each one
            return True

        state, cancelled_by = follow(job_id, job.run, echo, on_stop, again)
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
