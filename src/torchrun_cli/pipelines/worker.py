"""One step, in a process of its own (forked by schedule.py): fill in its references, answer
from the step cache when it may, else run it as an ordinary run. It tells the scheduler what
it learns as JSON lines on a pipe (`run`: the run folder, once made; `key`; `cached`; `error`)
and exits with the run's exit status.

A process per step keeps steps apart as runs are apart: each has its own signal handling, its
own stop with its own grace, its own record; a crash in one is that step's failure only.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.errors import TorchjobError
from torchrun_cli.jobs import run as jobs
from torchrun_cli.launch.base import Stopped
from torchrun_cli.pipelines import cache, resolve
from torchrun_cli.record import RunDir, RunRecord
from torchrun_cli.settings import Settings
from torchrun_cli.spec.pipeline import Step

_PR_SET_PDEATHSIG = 1


class Task(NamedTuple):
    """What a step's process needs: the step, the run folders of the steps upstream of it
    (what its references may name), where its run goes, and the options of the pipeline."""

    pipeline_id: str
    pipeline_dir: Path
    runs_root: Path
    step: Step
    attempt: int
    upstream: Mapping[str, str]
    settings: Settings
    rebuild: bool = False
    use_cache: bool = False
    echo: bool = False
    data: tuple[Path, ...] = ()  # every input the pipeline's steps declare (see cache.project)


def start(task: Task, parent: int, tell_fd: int, out_fds: tuple[int, int] | None) -> None:
    """The forked child: its own process group (the terminal's Ctrl-C reaches the scheduler,
    which forwards it), SIGTERM when the scheduler dies, stdin from /dev/null, output to the
    scheduler's pipes (--follow-steps) or nowhere (the logs have it); never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the scheduler died before prctl took effect
            os._exit(128 + signal.SIGTERM)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, Stopped.handler)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(out_fds[0] if out_fds else null, 1)
        os.dup2(out_fds[1] if out_fds else null, 2)
        code = main(task, lambda fact: _tell(tell_fd, fact))
    except KeyboardInterrupt as exc:
        code = 128 + Stopped.signum_of(exc)
    except BaseException as exc:  # a bug: the scheduler records it as the step's failure
        _tell(tell_fd, {"error": f"internal error: {exc!r}"})
    finally:
        sys.stdout.flush()
        os._exit(code)


def _tell(fd: int, fact: dict[str, Any]) -> None:
    os.write(fd, json.dumps(fact).encode() + b"\n")


def main(task: Task, tell: Any) -> int:
    """Resolve, look up the cache, run; returns the exit status."""
    step = task.step
    upstream = {name: RunDir(Path(path)) for name, path in task.upstream.items()}
    try:
        spec = resolve.resolve(step.job, upstream, step.name)._replace(tty="never")
        digest = None
        if task.use_cache and step.cache:
            needs = {n: upstream[n] for n in step.needs}
            project = cache.project(spec, task.settings, task.runs_root, task.data)
            if project.startswith("git:"):  # run the very commit the key was made from
                spec = spec._replace(ref=project.removeprefix("git:"))
            digest = cache.key(step.job, spec, needs, project)
            if (hit := cache.lookup(task.runs_root, digest)) is not None:
                tell({"cached": str(hit.path), "key": digest})
                return 0
            tell({"key": digest})
        plan = jobs.make_plan(spec, task.settings, task.pipeline_dir)
        plan = plan._replace(
            pipeline={"id": task.pipeline_id, "step": step.name, "attempt": task.attempt}
        )

        def started(rec: RunRecord, run: RunDir) -> None:
            tell({"run": str(run.path)})

        final, _ = jobs.execute(
            plan, jobs.Display(started=started, echo=task.echo), rebuild=task.rebuild
        )
    except TorchjobError as exc:
        tell({"error": exc.lines()[0]})
        return exc.exit_code
    return final.exit_code if final.exit_code is not None else 1
