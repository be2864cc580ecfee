"""The local backend: the job as a child of torchjob, in its own session, with a byte-exact tee
of both pipes, signal forwarding, a timeout and escalation to SIGKILL.

Three guards keep the job from outliving torchjob: signals are forwarded to the child's process
group and escalated to SIGKILL after a grace period; the child is started through the exec
trampoline that sets PR_SET_PDEATHSIG (tools.trampoline, which also turns exec errors into
126/127); and the watchdog (tools.watchdog) kills the whole group if torchjob is killed, which
also takes grandchildren that PDEATHSIG alone would leave behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.errors import LaunchError, UsageError
from torchrun_cli.launch.base import Job, OnStop, signal_name
from torchrun_cli.record import End, RunDir, RunRecord, Status, this_host
from torchrun_cli.tools import kill_group, trampoline, watchdog

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031
_IDLE_S = 0.5  # an idle pump looks at whether the job has ended this often
_QUIET_S = 0.2  # once it has: stop when the pipe stays quiet this long
_DRAIN_S = 2.0  # and stop reading what escaped processes write after this long
_MAX_WAIT_MS = 3_600_000  # poll() takes an int of milliseconds


class Outcome(NamedTuple):
    """How the child ended and what torchjob had to do about it."""

    returncode: int
    pid: int
    interrupted_by: int | None
    timed_out: bool
    escalated: bool
    log_error: str | None


def _noop(signum: int, frame: Any) -> None:
    """Signals are read from the wakeup fd by the main loop; the handler only has to exist."""


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write everything; a non-blocking fd (a console someone set O_NONBLOCK on) is waited on."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


class _Pump(threading.Thread):
    """Drains one pipe in large chunks into log files and, optionally, a console fd.

    Logs are written before the console, and the pipe is read until EOF; once the job has
    ended (`ended` is set) it stops when the pipe stays quiet, so a process that escaped the
    process group and kept the pipe open cannot hold torchjob forever.
    """

    def __init__(self, src: int, logs: list[int], echo: int | None, ended: threading.Event) -> None:
        super().__init__(daemon=True)
        self.src, self.logs, self.echo, self.ended = src, logs, echo, ended
        self.error: str | None = None

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.src, select.POLLIN)
        stop_at: float | None = None
        while True:
            if stop_at is None and self.ended.is_set():
                stop_at = time.monotonic() + _DRAIN_S
            if stop_at is not None:
                left = stop_at - time.monotonic()
                if left <= 0 or not poller.poll(min(left, _QUIET_S) * 1000):
                    return
            elif not poller.poll(_IDLE_S * 1000):
                continue
            chunk = os.read(self.src, CHUNK)
            if not chunk:
                return
            for fd in self.logs:
                try:
                    _write_all(fd, chunk)
                except OSError as exc:  # keep draining, or the child would block
                    self.error = self.error or f"writing a log failed: {exc.strerror}"
            if self.echo is not None:
                try:
                    _write_all(self.echo, chunk)
                except OSError:  # console gone (closed pipe, hangup): logs still get everything
                    self.echo = None


@contextlib.contextmanager
def _signals_to_pipe() -> Iterator[int]:
    """Route SIGINT/SIGTERM/SIGHUP into a pipe the main loop polls; restore on exit."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # none lost while switching
    old = {s: signal.signal(s, _noop) for s in FORWARDED}
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        yield read_fd
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in old.items():
            signal.signal(s, handler)
        os.close(read_fd)
        os.close(write_fd)


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def _big_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, CHUNK)


class Supervisor:
    """One child, from start to end; must run in the main thread (it owns signal handling).
    Signals are routed to a pipe from `start`, so none is lost before the loop reads them."""

    def __init__(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        run: RunDir,
        timeout: float | None,
        grace: float,
    ) -> None:
        self.argv, self.cwd, self.env, self.run = argv, cwd, env, run
        self.timeout, self.grace = timeout, grace
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        stack = self._stack
        try:
            self.out_fd = _open_log(self.run.stdout_log)
            stack.callback(os.close, self.out_fd)
            self.err_fd = _open_log(self.run.stderr_log)
            stack.callback(os.close, self.err_fd)
            self.wake_fd = stack.enter_context(_signals_to_pipe())
            self.proc = subprocess.Popen(
                trampoline(self.argv),
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                bufsize=0,
            )
            self.started = time.monotonic()
            stack.enter_context(watchdog().guard(self.proc.pid))
        except BaseException:
            stack.close()
            raise

    def wait(self, echo: bool, on_stop: OnStop) -> Outcome:
        """Stream the output until the child ends; stop it on a signal or the timeout."""
        with self._stack:
            return self._loop(echo, on_stop)

    def _loop(self, echo: bool, on_stop: OnStop) -> Outcome:
        proc, grace = self.proc, self.grace
        assert proc.stdout is not None and proc.stderr is not None
        pgid = proc.pid
        ended = threading.Event()
        pumps = []
        for pipe, logs, console in (
            (proc.stdout, [self.out_fd], 1),
            (proc.stderr, [self.out_fd, self.err_fd], 2),
        ):
            _big_pipe(pipe.fileno())
            pumps.append(_Pump(pipe.fileno(), logs, console if echo else None, ended))

        def stopping(signum: int | None) -> None:
            with contextlib.suppress(Exception):  # a failing display must not stop supervision
                on_stop(signum)

        done_r, done_w = os.pipe2(os.O_CLOEXEC)

        def wait_child() -> None:
            proc.wait()
            os.write(done_w, b"x")

        for t in (*pumps, threading.Thread(target=wait_child, daemon=True)):
            t.start()
        poller = select.poll()
        poller.register(self.wake_fd, select.POLLIN)
        poller.register(done_r, select.POLLIN)
        deadline = self.started + self.timeout if self.timeout else None
        kill_at: float | None = None
        interrupted_by: int | None = None
        timed_out = escalated = False
        while True:
            pending = [t for t in (deadline, kill_at) if t is not None]
            wait_ms = (
                min(_MAX_WAIT_MS, max(0.0, min(pending) - time.monotonic()) * 1000)
                if pending
                else None
            )
            ready = {fd for fd, _ in poller.poll(wait_ms)}
            now = time.monotonic()
            if self.wake_fd in ready:
                for signum in os.read(self.wake_fd, 64):
                    if interrupted_by is None and not timed_out:
                        interrupted_by, deadline, kill_at = signum, None, now + grace
                        kill_group(pgid, signum)
                        stopping(signum)
                    elif signum == signal.SIGINT:  # a second Ctrl-C: stop waiting
                        kill_group(pgid, signal.SIGKILL)
                        escalated, kill_at = True, None
                    else:
                        kill_group(pgid, signum)
            if deadline is not None and now >= deadline:
                timed_out, deadline, kill_at = True, None, now + grace
                kill_group(pgid, signal.SIGTERM)
                stopping(None)
            if kill_at is not None and now >= kill_at:
                kill_group(pgid, signal.SIGKILL)
                escalated, kill_at = True, None
            if done_r in ready:  # after the signals, so one that came with the exit still counts
                break
        returncode = proc.wait()
        ended.set()
        kill_group(pgid)  # the job is the script: nothing it started outlives it
        for pump in pumps:  # they end at EOF, or soon after the pipe goes quiet
            pump.join()
        for fd in (done_r, done_w):
            os.close(fd)
        proc.stdout.close()
        proc.stderr.close()
        log_error = next((p.error for p in pumps if p.error), None)
        return Outcome(returncode, proc.pid, interrupted_by, timed_out, escalated, log_error)


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
            job.launch.argv, job.launch.cwd, job.child_env(), job.run, spec.timeout, spec.grace
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
