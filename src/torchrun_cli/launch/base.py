"""What every backend shares: the exact process to start (Launch), what a backend is given to run
(Job), and the Backend protocol: start, follow to the end, cancel from another torchjob, and
conclude a detached run. Each ends in an End (record.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from torchrun_cli.masking import mask_argv, mask_mapping
from torchrun_cli.record import End, RunDir, RunRecord
from torchrun_cli.settings import Settings
from torchrun_cli.spec.model import JobSpec

OnStop = Callable[[int | None], None]  # a stop began: the signal, or None for the timeout


class Launch(NamedTuple):
    """The exact process to start: argv, folder and the variables torchjob adds."""

    script_path: Path
    argv: list[str]
    cwd: Path
    env_overlay: Mapping[str, str]

    def shown_argv(self) -> list[str]:
        """argv with secret parameter values masked."""
        return mask_argv(self.argv)

    def shown_env(self) -> dict[str, str]:
        """The variables torchjob sets, secret values masked."""
        return {k: str(v) for k, v in mask_mapping(self.env_overlay).items()}


class Job(NamedTuple):
    """What a backend runs: the launch, the run folder, the variables the conventions add, and
    the spec's rules for stopping."""

    spec: JobSpec
    launch: Launch
    run: RunDir
    conventions: Mapping[str, str]
    settings: Settings
    lease: Path | None = None  # the environment's lock a remote job must hold too

    def variables(self) -> dict[str, str]:
        """What torchjob sets for the job: conventions, the spec's env, the run's folder."""
        return {
            **self.conventions,
            **self.launch.env_overlay,
            "TORCHJOB_RUN_ID": self.run.id,
            "TORCHJOB_RUN_DIR": str(self.run.path),
        }

    def child_env(self) -> dict[str, str]:
        """The inherited environment with torchjob's variables on top."""
        return {**os.environ, **self.variables()}


class Backend(Protocol):
    """Where a job runs. One object per run: `start` then `follow`, or, from another torchjob,
    `cancel` and `conclude`."""

    info: dict[str, Any] | None  # run.json's `backend` (a Slurm job id), once started

    def start(self, job: Job) -> None:
        """Spawn or submit the job; fills `info`. A stop signal meanwhile raises Stopped."""

    def follow(self, job: Job, echo: bool, on_stop: OnStop) -> End:
        """Wait for the end, copying the output to the console when echo."""

    def details(self, job: Job, end: End) -> tuple[End, dict[str, Any]]:
        """After the end: the End as the backend understands it, and more fields for
        run.json (torchrun's gang summary)."""

    def cancel(self, record: RunRecord, run: RunDir) -> str:
        """Stop a run started by another torchjob; what was done, for the user."""

    def conclude(self, record: RunRecord, run: RunDir) -> End | None:
        """A detached run's end as known now, or None while it still runs."""


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP while setting up or submitting: unwinds like Ctrl-C, so each tool's
    process group is killed, no half-built cache entry is kept, and run.json says cancelled."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @staticmethod
    def handler(signum: int, frame: object) -> None:
        """A signal handler: SIGTERM or SIGHUP unwinds like Ctrl-C."""
        raise Stopped(signum)

    @staticmethod
    def signum_of(exc: KeyboardInterrupt) -> int:
        """The signal a stop came by: Stopped's own, SIGINT for Ctrl-C."""
        return exc.signum if isinstance(exc, Stopped) else signal.SIGINT


def signal_name(signum: int) -> str:
    """`SIGSEGV` for 11; `signal 33` when Python has no name for it (glibc's RT signals)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
