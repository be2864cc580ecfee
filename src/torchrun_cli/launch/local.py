"""The local backend: the job as torchjob's own child, supervised to its end
(launch/supervise.py), and the End its outcome means."""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

from torchrun_cli.errors import LaunchError, UsageError
from torchrun_cli.launch.base import Job, OnStop, signal_name
from torchrun_cli.launch.supervise import Outcome, Supervisor
from torchrun_cli.record import End, RunDir, RunRecord, Status, this_host


def wants_tty(setting: str) -> bool:
    """`tty: auto` gives the job a pseudo-terminal when torchjob's stdout is a terminal."""
    return setting == "always" or (setting == "auto" and os.isatty(1))


def conclude(outcome: Outcome, timeout: float | None) -> End:
    """Status, exit code and signal, as DESIGN.md's exit-status table says."""
    rc = outcome.returncode
    died_by = signal_name(-rc) if rc < 0 else None
    if outcome.interrupted_by is not None:
        name = signal_name(outcome.interrupted_by)
        end = End(
            Status.CANCELLED,
            128 + outcome.interrupted_by,
            died_by,
            error=f"torchjob was interrupted by {name}",
        )
    elif outcome.timed_out:
        end = End(Status.TIMEOUT, 124, died_by, error=f"timed out after {timeout:g}s")
    elif rc < 0:
        end = End(Status.FAILED, 128 - rc, died_by, error=f"killed by {died_by}")
    elif rc == 0:
        end = End(Status.SUCCEEDED, 0)
    else:
        end = End(Status.FAILED, rc, error=f"the script exited with status {rc}")
    if outcome.log_error:
        end = End(end.status, end.exit_code, end.signal, end.phase, outcome.log_error)
    return end


class LocalBackend:
    """The job as torchjob's own child."""

    info: dict[str, Any] | None = None

    def start(self, job: Job) -> None:
        spec = job.spec
        self.supervisor = Supervisor(
            job.launch.argv,
            job.launch.cwd,
            job.child_env(),
            job.run,
            spec.timeout,
            spec.grace,
            tty=wants_tty(spec.tty),
        )
        try:
            self.supervisor.start()
        except OSError as exc:  # the trampoline itself could not start
            if exc.errno == errno.E2BIG:
                raise LaunchError(
                    "the job's arguments and environment are too long for one process (E2BIG)",
                    126,
                    "pass large values in a file",
                ) from None
            raise LaunchError(
                f"cannot start the job: {exc}", 126 if exc.errno == errno.EACCES else 127
            ) from None

    def follow(self, job: Job, echo: bool, on_stop: OnStop) -> End:
        return conclude(self.supervisor.wait(echo, on_stop), job.spec.timeout)

    def details(self, job: Job, end: End) -> tuple[End, dict[str, Any]]:
        return end, {}

    def cancel(self, record: RunRecord, run: RunDir) -> str:
        """SIGTERM to the torchjob that supervises the run, which stops the job like Ctrl-C:
        only on this host, and only the very process that wrote the record."""
        if record.host != this_host():
            raise UsageError(
                f"run {record.id} runs on host {record.host}, not here",
                f"run `torchjob cancel {record.id}` on {record.host}",
            )
        if not record.owned_by_a_live_process():
            raise UsageError(f"run {record.id} is lost (its torchjob is gone)", "nothing to cancel")
        os.kill(record.pid, signal.SIGTERM)
        return f"sent SIGTERM to torchjob (pid {record.pid}); it stops the job"

    def conclude(self, record: RunRecord, run: RunDir) -> End | None:
        return None  # a local run's own torchjob writes its end
