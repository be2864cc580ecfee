"""Run the child: own session, byte-exact tee of both pipes, signal forwarding, timeout, escalation.

Three guards keep the job from outliving torchjob: signals are forwarded to the child's process
group and escalated to SIGKILL after a grace period; the child is started through a tiny exec
trampoline that sets PR_SET_PDEATHSIG (no preexec_fn, which is unsafe with threads); and a forked
watchdog kills the whole group when torchjob's end of a pipe closes without a goodbye (kill -9),
which also takes grandchildren that PDEATHSIG alone would leave behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrun_cli.proc import trampoline

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031
_IDLE_S = 0.5  # an idle pump looks at whether the job has ended this often
_QUIET_S = 0.2  # once it has: stop when the pipe stays quiet this long
_DRAIN_S = 2.0  # and stop reading what escaped processes write after this long
_MAX_WAIT_MS = 3_600_000  # poll() takes an int of milliseconds



@dataclass(frozen=True)
class Outcome:
    """How the child ended and what torchjob had to do about it."""

    returncode: int
    pid: int
    interrupted_by: int | None
    timed_out: bool
    escalated: bool
    log_error: str | None


def _noop(signum: int, frame: Any) -> None:
    """Signals are read from the wakeup fd by the main loop; the handler only has to exist."""


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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

    def __init__(self, src: int, logs: list[int], echo: int | None,
                 ended: threading.Event) -> None:
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


def _start_watchdog(pgid: int) -> tuple[int, int]:
    """Fork a process that SIGKILLs the group if torchjob dies; returns (pid, pipe to it)."""
    read_fd, write_fd = os.pipe()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked watchdog
        try:
            for s in FORWARDED:
                signal.signal(s, signal.SIG_IGN)
            signal.set_wakeup_fd(-1)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, read_fd)
            os.closerange(read_fd + 1, 1 << 16)
            while True:
                try:
                    said = os.read(read_fd, 1)
                    break
                except InterruptedError:
                    continue
            if not said:
                _killpg(pgid, signal.SIGKILL)
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(read_fd)
    return pid, write_fd


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def _big_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, CHUNK)


def supervise(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdout_log: Path,
    stderr_log: Path,
    echo: bool,
    timeout: float | None,
    grace: float,
    on_stop: Callable[[int | None], None] = lambda signum: None,
) -> Outcome:
    """Run argv to the end; must be called from the main thread (it owns signal handling).

    on_stop(signum) is called once when stopping starts: the signal, or None for the timeout.
    """
    out_fd, err_fd = _open_log(stdout_log), _open_log(stderr_log)
    try:
        with _signals_to_pipe() as wake_fd:
            return _run(argv, cwd, env, out_fd, err_fd, echo, timeout, grace, wake_fd, on_stop)
    finally:
        os.close(out_fd)
        os.close(err_fd)


def _run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    out_fd: int,
    err_fd: int,
    echo: bool,
    timeout: float | None,
    grace: float,
    wake_fd: int,
    on_stop: Callable[[int | None], None],
) -> Outcome:
    started = time.monotonic()
    proc = subprocess.Popen(
        trampoline(argv),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        bufsize=0,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pgid = proc.pid
    watchdog_pid, watchdog_fd = _start_watchdog(pgid)
    pumps = []
    ended = threading.Event()
    for pipe, logs, console in (
        (proc.stdout, [out_fd], 1),
        (proc.stderr, [out_fd, err_fd], 2),
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
    poller.register(wake_fd, select.POLLIN)
    poller.register(done_r, select.POLLIN)
    deadline = started + timeout if timeout else None
    kill_at: float | None = None
    interrupted_by: int | None = None
    timed_out = escalated = False
    while True:
        pending = [t for t in (deadline, kill_at) if t is not None]
        wait_ms = (min(_MAX_WAIT_MS, max(0.0, min(pending) - time.monotonic()) * 1000)
                   if pending else None)
        ready = {fd for fd, _ in poller.poll(wait_ms)}
        now = time.monotonic()
        if wake_fd in ready:
            for signum in os.read(wake_fd, 64):
                if interrupted_by is None and not timed_out:
                    interrupted_by, deadline, kill_at = signum, None, now + grace
                    _killpg(pgid, signum)
                    stopping(signum)
                elif signum == signal.SIGINT:  # a second Ctrl-C: stop waiting
                    _killpg(pgid, signal.SIGKILL)
                    escalated, kill_at = True, None
                else:
                    _killpg(pgid, signum)
        if deadline is not None and now >= deadline:
            timed_out, deadline, kill_at = True, None, now + grace
            _killpg(pgid, signal.SIGTERM)
            stopping(None)
        if kill_at is not None and now >= kill_at:
            _killpg(pgid, signal.SIGKILL)
            escalated, kill_at = True, None
        if done_r in ready:  # after the signals, so one that came with the exit still counts
            break

    returncode = proc.wait()
    ended.set()
    _killpg(pgid, signal.SIGKILL)  # the job is the script: nothing it started outlives it
    os.write(watchdog_fd, b"x")
    os.close(watchdog_fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(watchdog_pid, 0)
    for pump in pumps:  # they end at EOF, or soon after the pipe goes quiet
        pump.join()
    for fd in (done_r, done_w):
        os.close(fd)
    proc.stdout.close()
    proc.stderr.close()
    log_error = next((p.error for p in pumps if p.error), None)
    return Outcome(returncode, proc.pid, interrupted_by, timed_out, escalated, log_error)


def signal_name(signum: int) -> str:
    """`SIGSEGV` for 11; the number as text when Python has no name for it."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
