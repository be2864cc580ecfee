"""`retries:` between the attempts of one run: whether the ending is retried, the row each
attempt leaves in run.json, and the pause (a marker line in both logs, the delay with its
backoff). A stop torchjob itself was asked for is never retried."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from torchrun_cli.launch.base import Stopped, signal_name
from torchrun_cli.record import End, RunDir, Status
from torchrun_cli.spec.model import JobSpec


def again(spec: JobSpec, end: End, attempt: int) -> bool:
    """Whether `retries` runs the job again after this ending: never after a stop torchjob
    itself was asked for (Ctrl-C, SIGTERM), nor after the last attempt."""
    if attempt > spec.retries.count or end.status.value not in spec.retries.on:
        return False
    if spec.backend is not None and spec.backend.requeue:  # Slurm requeued it: retries spent
        return False
    return not (end.status is Status.CANCELLED and "interrupted by" in (end.error or ""))


def row(attempt: int, at: str, seconds: float, end: End) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "status": end.status.value,
        "exit_code": end.exit_code,
        "started_at": at,
        "duration_s": seconds,
        "error": end.error,
    }


def pause(
    spec: JobSpec, run: RunDir, note: Callable[[str], None], end: End, attempt: int
) -> End | None:
    """Between two attempts: a marker line in both logs and on the console, then the delay
    (a stop meanwhile ends the run as cancelled: the End returned)."""
    wait = spec.retries.wait(attempt + 1)
    text = (
        f"torchjob: attempt {attempt} {end.status.value} (exit {end.exit_code}); "
        f"attempt {attempt + 1} of {spec.retries.count + 1}" + (f" in {wait:g}s" if wait else "")
    )
    for log in (run.stdout_log, run.stderr_log):
        with log.open("ab+") as fh:
            fh.seek(0, os.SEEK_END)
            last = fh.tell() and (fh.seek(-1, os.SEEK_END), fh.read(1))[1]
            fh.write(b"\n" * (last not in (0, b"\n")) + f"--- {text} ---\n".encode())
    note(text)
    try:
        with stoppable():
            time.sleep(wait)  # the delay the spec asks for, not synchronisation
    except KeyboardInterrupt as exc:
        signum = Stopped.signum_of(exc)
        return End(
            Status.CANCELLED,
            128 + signum,
            error=f"interrupted by {signal_name(signum)} before attempt {attempt + 1}",
        )
    return None


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Stopped, as Ctrl-C raises KeyboardInterrupt."""
    old = {s: signal.signal(s, Stopped.handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
