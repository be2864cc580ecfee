"""`torchjob run --detach` of a local job: the run goes on in a process of its own, as TI's
and SageMaker's `fit(wait=False)`; `logs -f`, `show` and `cancel` attach to it later."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torchrun_cli.errors import SetupError
from torchrun_cli.jobs import concurrency
from torchrun_cli.jobs.run import Display, Plan, execute
from torchrun_cli.record import RunDir, RunRecord


def detach(plan: Plan, rebuild: bool, note: Callable[[str], None] = lambda t: None) -> RunDir:
    """Start the run in the background, as TI's and SageMaker's `fit(wait=False)`: a child
    in a session of its own (no terminal: Ctrl-C and a closed window leave it alone) runs it
    with its output in the logs only. Returns the run folder once its record exists; `logs -f`,
    `show` and `cancel` then attach to it by id or name."""
    held = concurrency.hold(plan.spec.concurrency, plan.runs_dir, plan.spec.name, note)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the background supervisor (tests see its effects)
        code = 1
        try:
            os.close(read_fd)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)

            def started(rec: RunRecord, run: RunDir) -> None:
                os.write(write_fd, os.fsencode(run.path) + b"\n")
                os.close(write_fd)

            final, _ = execute(
                plan._replace(spec=plan.spec._replace(tty="never")),
                Display(started=started, echo=False),
                rebuild=rebuild,
                held=held,
            )
            code = final.exit_code or 0
        finally:
            os._exit(code)
    os.close(write_fd)
    if held is not None:
        os.close(held)  # the run's process holds the lock now
    with os.fdopen(read_fd, "rb") as said:
        path = said.read().strip()
    if not path:
        os.waitpid(pid, 0)
        raise SetupError(
            "the background run did not start",
            "run it without --detach to see why",
            phase="launch",
        )
    return RunDir(Path(os.fsdecode(path)))
