"""The local scheduler: start each step when the steps it needs have succeeded, at most
`max_parallel` at once, in one event loop that waits on the steps' processes (pidfds), what
they tell (a pipe each), their output (--follow-steps) and signals (a wakeup fd) together, so
nothing is polled and an ending step is seen the moment it ends.

A step that fails stops the steps downstream of it (`skipped`) and leaves the others running
(`--fail-fast` stops them too); Ctrl-C, SIGTERM and SIGHUP are forwarded to every running step,
which stops by its own rules (grace, record), and the steps not started are `cancelled`. The
pipeline exits with the status of the first step that failed, or 128+N for a signal N.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli import pipeline_record as records
from torchrun_cli.pipeline_record import SKIPPED, WAITING, PipelineRecord, StepRecord
from torchrun_cli.pipelines import cache, plan, worker
from torchrun_cli.record import RunDir, Status, create_run_dir, now_iso, read_record
from torchrun_cli.record import seconds_between as between
from torchrun_cli.settings import Settings
from torchrun_cli.spec.pipeline import PipelineSpec
from torchrun_cli.spec.refs import has_refs
from torchrun_cli.tools import signals_to_pipe

_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Options(NamedTuple):
    """How a pipeline runs: the flags of `torchjob run PIPELINE.yaml`."""

    max_parallel: int
    fail_fast: bool = False
    follow: bool = False
    rebuild: bool = False
    use_cache: bool = True
    resume: PipelineRecord | None = None  # reuse its succeeded steps
    rerun: frozenset[str] = frozenset()  # --from STEP: these run even if they succeeded
    partial_exit: int | None = None  # a sweep: the status when some steps failed, not all


class Events(NamedTuple):
    """What the console is told (only the CLI prints). `step` gets the step's name, its
    record, and what happened: started, ended, retry, cached, reused, skipped, cancelled."""

    started: Callable[[PipelineRecord, Path], None] = lambda rec, path: None
    step: Callable[[str, StepRecord, str], None] = lambda name, step, what: None
    output: Callable[[str, int, bytes], None] = lambda name, fd, line: None
    tick: Callable[[PipelineRecord], None] | None = None  # the live table, 10 times a second
    stopping: Callable[[int], None] = lambda signum: None


class _Child:
    """A running step's process and the pipes it talks through."""

    def __init__(self, name: str, pid: int, tell: int, outs: dict[int, int]) -> None:
        self.name, self.pid, self.tell, self.outs = name, pid, tell, outs
        self.pidfd = os.pidfd_open(pid)
        self.told = b""
        self.partial: dict[int, bytes] = {fd: b"" for fd in outs}
        self.facts: dict[str, Any] = {}


def run(
    spec: PipelineSpec, settings: Settings, runs_root: Path, options: Options, events: Events
) -> PipelineRecord:
    """Run the pipeline to its end; returns its final record (pipeline.json has it too)."""
    return _Scheduler(spec, settings, runs_root, options, events).run()


class _Scheduler:
    def __init__(
        self,
        spec: PipelineSpec,
        settings: Settings,
        runs_root: Path,
        options: Options,
        events: Events,
    ) -> None:
        self.spec, self.settings, self.root = spec, settings, runs_root
        self.options, self.events = options, events
        self.folder = create_run_dir(runs_root, spec.name).path
        needs = {n: list(s.needs) for n, s in spec.steps.items()}
        self.rec = records.new(self.folder, spec.name, spec.file, options.max_parallel, needs)
        if options.resume is not None:
            self.rec = replace(self.rec, resumed_from=options.resume.id)
        if spec.sweep is not None:
            self.rec = replace(self.rec, sweep=dict(spec.sweep))
        self.children: dict[int, _Child] = {}  # by pidfd
        self.sel = selectors.DefaultSelector()
        self.signum: int | None = None
        self.first_failure: int | None = None
        self.began = time.monotonic()
        self.dirty = True
        self.data = tuple(
            path
            for step in spec.steps.values()
            for path in step.job.inputs.values()
            if not has_refs(str(path))
        )

    def run(self) -> PipelineRecord:
        self._flush()
        self.events.started(self.rec, self.folder)
        self._reuse()
        with signals_to_pipe(_STOPS) as wake_r:
            self.sel.register(wake_r, selectors.EVENT_READ, "signal")
            try:
                self._loop(wake_r)
            finally:
                self.sel.close()
        return self._finish()

    def _loop(self, wake_r: int) -> None:
        tick = self.events.tick
        while True:
            if self.signum is None:
                self._start_ready()
            self._flush()  # once per turn of the loop, whatever happened in it
            if not self.children:
                return
            for key, _ in self.sel.select(0.1 if tick else None):
                if key.data == "signal":
                    self._signals(wake_r)
                elif isinstance(key.data, tuple):
                    self._read(*key.data)
                else:
                    self._ended(key.data)
            if tick:
                tick(self.rec)

    # -- starting -------------------------------------------------------------------------

    def _reuse(self) -> None:
        """--resume: the steps that succeeded in that pipeline (and are not to run again)
        keep its runs: their outputs feed the steps that run now."""
        old = self.options.resume
        if old is None:
            return
        for name, step in plan.reusable(self.spec, old, self.options.rerun).items():
            self.rec = replace(self.rec, steps={**self.rec.steps, name: step})
            self.events.step(name, step, "reused")
        self._save()

    def _start_ready(self) -> None:
        steps = self.rec.steps
        for name, step in self.spec.steps.items():
            if len(self.children) >= self.options.max_parallel:
                return
            if steps[name].status == WAITING and all(
                steps[n].status == "succeeded" for n in step.needs
            ):
                self._spawn(name)

    def _spawn(self, name: str) -> None:
        step = self.spec.steps[name]
        attempt = len(self.rec.steps[name].attempts) + 1
        upstream = {
            n: str(self.rec.steps[n].run_dir)
            for n in self.spec.upstream(name)
            if self.rec.steps[n].run_dir
        }
        task = worker.Task(
            self.rec.id,
            self.folder,
            self.root,
            step,
            attempt,
            upstream,
            self.settings,
            self.options.rebuild,
            self.options.use_cache,
            self.options.follow,
            self.data,
        )
        tell_r, tell_w = os.pipe2(os.O_CLOEXEC)
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(2)] if self.options.follow else []
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()  # a child must not inherit and repeat buffered text
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the step's process (tests see its effects)
            os.close(tell_r)
            worker.start(task, parent, tell_w, (pipes[0][1], pipes[1][1]) if pipes else None)
        os.close(tell_w)
        outs = {}
        for fd_number, (r, w) in enumerate(pipes, start=1):
            os.close(w)
            os.set_blocking(r, False)
            outs[r] = fd_number
        os.set_blocking(tell_r, False)
        child = _Child(name, pid, tell_r, outs)
        self.children[child.pidfd] = child
        self.sel.register(child.pidfd, selectors.EVENT_READ, child)
        self.sel.register(tell_r, selectors.EVENT_READ, (child, tell_r))
        for r in outs:
            self.sel.register(r, selectors.EVENT_READ, (child, r))
        now = self.rec.steps[name].started_at or now_iso()
        self.rec = self.rec.step(name, status="running", started_at=now, error=None)
        self._save()
        self.events.step(name, self.rec.steps[name], "started" if attempt == 1 else "retry")

    # -- what the children say ------------------------------------------------------------

    def _read(self, child: _Child, fd: int) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(fd)
            return
        if fd == child.tell:
            child.told += data
            self._facts(child)
            return
        lines = (child.partial[fd] + data).split(b"\n")
        child.partial[fd] = lines.pop()
        for line in lines:
            self.events.output(child.name, child.outs[fd], line + b"\n")

    def _facts(self, child: _Child) -> None:
        *whole, child.told = child.told.split(b"\n")
        for line in whole:
            fact = json.loads(line)
            child.facts.update(fact)
            if "run" in fact:
                run = RunDir(Path(fact["run"]))
                step = self.rec.steps[child.name]
                self.rec = self.rec.step(
                    child.name,
                    run_id=run.id,
                    run_dir=str(run.path),
                    attempts=[*step.attempts, run.id],
                )
                self._save()
                self.events.step(child.name, self.rec.steps[child.name], "run")

    def _ended(self, child: _Child) -> None:
        _, status = os.waitpid(child.pid, 0)
        for fd in (child.tell, *child.outs):
            while True:  # what it wrote before it ended
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                if fd == child.tell:
                    child.told += data
                else:
                    child.partial[fd] += data
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fd)
            os.close(fd)
        self._facts(child)
        for fd, rest in child.partial.items():
            for line in rest.splitlines(keepends=True):
                self.events.output(child.name, child.outs[fd], line)
        self.sel.unregister(child.pidfd)
        os.close(child.pidfd)
        del self.children[child.pidfd]
        self._conclude(child, os.waitstatus_to_exitcode(status))

    def _conclude(self, child: _Child, code: int) -> None:
        """The step's end from its run record (or what it told, when it made no run)."""
        name, facts = child.name, child.facts
        fields: dict[str, Any] = {"ended_at": now_iso(), "cache_key": facts.get("key")}
        if "cached" in facts:
            run = RunDir(Path(facts["cached"]))
            fields.update(
                status="succeeded",
                exit_code=0,
                cached=True,
                run_id=run.id,
                run_dir=str(run.path),
            )
        elif self.rec.steps[name].run_dir and "run" in facts:
            try:
                done = read_record(RunDir(Path(facts["run"])))
                shown = done.shown_status().value
                fields.update(status=shown, exit_code=done.exit_code, error=done.error)
            except (OSError, ValueError, TypeError):
                fields.update(status="failed", exit_code=code, error="the run left no record")
        else:
            cancelled = code < 0 or code - 128 in _STOPS
            fields.update(
                status="cancelled" if cancelled else "failed",
                exit_code=code if code >= 0 else 128 - code,
                error=facts.get("error") or "the step ended before its run started",
            )
        start = self.rec.steps[name].started_at
        fields["duration_s"] = between(start, fields["ended_at"])
        self.rec = self.rec.step(name, **fields)
        step = self.rec.steps[name]
        if step.status == "succeeded":
            if step.cache_key and not step.cached and step.run_dir:
                cache.remember(self.root, step.cache_key, RunDir(Path(step.run_dir)))
            self._save()
            self.events.step(name, step, "cached" if step.cached else "ended")
            return
        if self.first_failure is None and self.signum is None:
            self.first_failure = step.exit_code if step.exit_code else 1
        self.events.step(name, step, "ended")
        self._skip_downstream(name, step.status)
        if self.options.fail_fast and self.signum is None:
            self._stop_all(signal.SIGTERM, "cancelled by --fail-fast")
        self._save()

    def _skip_downstream(self, name: str, status: str) -> None:
        below = self.spec.downstream(name)
        for other in self.spec.steps:
            if other in below and self.rec.steps[other].status == WAITING:
                self.rec = self.rec.step(
                    other, status=SKIPPED, error=f"needs {name}, which ended {status}"
                )
                self.events.step(other, self.rec.steps[other], "skipped")

    # -- stopping -------------------------------------------------------------------------

    def _signals(self, wake_r: int) -> None:
        try:
            data = os.read(wake_r, 64)
        except BlockingIOError:
            return
        for signum in data:
            if signum not in _STOPS:
                continue
            first = self.signum is None
            self.signum = self.signum or signum
            if first:
                self.events.stopping(signum)
            self._stop_all(signum, f"cancelled by {signal.Signals(signum).name}")
        self._save()

    def _stop_all(self, signum: int, why: str) -> None:
        """Forward the stop to every running step; the steps not started are cancelled."""
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)
        for name, step in self.rec.steps.items():
            if step.status == WAITING:
                self.rec = self.rec.step(name, status="cancelled", error=why)
                self.events.step(name, self.rec.steps[name], "cancelled")

    def _finish(self) -> PipelineRecord:
        for name, step in self.rec.steps.items():  # not reachable: a need never succeeded
            if step.status == WAITING:
                self.rec = self.rec.step(name, status=SKIPPED, error="a step it needs did not run")
        if self.signum is not None:
            status, code = Status.CANCELLED, 128 + self.signum
            sig: str | None = signal.Signals(self.signum).name
        elif self.first_failure is not None:
            status, code, sig = Status.FAILED, self.first_failure, None
            if self.options.partial_exit is not None and "succeeded" in self.rec.counts():
                code = self.options.partial_exit
        else:
            status, code, sig = Status.SUCCEEDED, 0, None
        self.rec = replace(
            self.rec,
            status=status,
            exit_code=code,
            signal=sig,
            # a sweep's are its best trial's: pipelines/sweep.py reads the trials once, after
            outputs=plan.outputs(self.spec, self.rec) if self.spec.sweep is None else {},
            ended_at=now_iso(),
            duration_s=round(time.monotonic() - self.began, 3),
        )
        self._flush(durable=True)
        return self.rec

    def _save(self) -> None:
        """pipeline.json is due: written at the end of the loop's turn (a turn may hold many
        changes, and a write per change made a pipeline's cost grow with its steps squared)."""
        self.dirty = True

    def _flush(self, durable: bool = False) -> None:
        if self.dirty or durable:
            records.write(self.folder, self.rec, durable)
            self.dirty = False
