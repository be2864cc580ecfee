"""One child from start to end: its own session, one loop that reads both output streams in
order of arrival (launch/streams.py), forwards signals, enforces the timeout and escalates to
SIGKILL after the grace period; on a pseudo-terminal when asked (launch/terminal.py). When no
console copy is wanted (-q, --detach, pipeline steps, `> /dev/null`), stdout is spliced into
stdout.log in the kernel instead of being read (launch/relay.py).

Three guards keep the job from outliving torchjob: signals are forwarded to the child's process
group and escalated to SIGKILL after a grace period; the child is started through the exec
trampoline that sets PR_SET_PDEATHSIG (tools.trampoline, which also turns exec errors into
126/127); and the watchdog (tools.watchdog) kills the whole group if torchjob is killed, which
also takes grandchildren that PDEATHSIG alone would leave behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

from torchrun_cli.launch.base import OnStop
from torchrun_cli.launch.relay import CHUNK, Relay, pipe
from torchrun_cli.launch.streams import STDERR, STDOUT, Console, write_logs
from torchrun_cli.record import RunDir
from torchrun_cli.tools import kill_group, signals_to_pipe, trampoline, watchdog

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PTY_READ = 1 << 16
_QUIET_S = 0.2  # once the job has ended: stop when its streams stay quiet this long
_DRAIN_S = 2.0  # and stop reading what escaped processes write after this long
_MAX_WAIT_S = 3600.0
_FAIR_S = 0.005  # a stream inside a line is read first, but the other waits at most this
_IN = select.POLLIN | select.POLLHUP | select.POLLERR


class Outcome(NamedTuple):
    """How the child ended and what torchjob had to do about it."""

    returncode: int
    pid: int
    interrupted_by: int | None
    timed_out: bool
    escalated: bool
    log_error: str | None


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


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
        tty: bool = False,
    ) -> None:
        self.argv, self.cwd, self.env, self.run = argv, cwd, env, run
        self.timeout, self.grace, self.tty = timeout, grace, tty
        self._stack = contextlib.ExitStack()
        self.streams: dict[int, int] = {}  # our read end -> STDOUT or STDERR
        self.terminals: list[int] = []  # pty masters, resized on SIGWINCH

    def start(self) -> None:
        stack = self._stack
        try:
            self.out_log = _open_log(self.run.stdout_log)
            stack.callback(os.close, self.out_log)
            self.err_log = _open_log(self.run.stderr_log)
            stack.callback(os.close, self.err_log)
            signals = FORWARDED + ((signal.SIGWINCH,) if self.tty else ())
            self.wake_fd = stack.enter_context(signals_to_pipe(signals))
            ends = [self._stream_ends(stream) for stream in (STDOUT, STDERR)]
            try:
                self.proc = subprocess.Popen(
                    trampoline(self.argv),
                    cwd=self.cwd,
                    env=self.env,
                    stdout=ends[0][1],
                    stderr=ends[1][1],
                    start_new_session=True,
                )
            finally:
                for _, child_end in ends:
                    os.close(child_end)
            self.started = time.monotonic()
            stack.enter_context(watchdog().guard(self.proc.pid))
        except BaseException:
            stack.close()
            raise

    def _stream_ends(self, stream: int) -> tuple[int, int]:
        """(ours, the child's) for one stream: a pty pair on a terminal, else a pipe."""
        if self.tty and (stream == STDOUT or os.isatty(STDERR)):
            from torchrun_cli.launch import terminal  # measured: only --tty runs need termios

            ours, childs = terminal.open_pty(terminal.window_size(STDOUT))
            os.set_blocking(ours, False)  # read until it has no more (see _Loop._take)
            self.terminals.append(ours)
        else:
            ours, childs = pipe()
        self._stack.callback(os.close, ours)
        self.streams[ours] = stream
        return ours, childs

    def wait(self, echo: bool, on_stop: OnStop) -> Outcome:
        """Stream the output until the child ends; stop it on a signal or the timeout."""
        with self._stack:
            return _Loop(self, Console(echo), on_stop).run()


class _Loop:
    """The supervisor's event loop: the child's streams, signals, the child's exit, the
    console's queue and the timers, all in one poll."""

    def __init__(self, sup: Supervisor, console: Console, on_stop: OnStop) -> None:
        self.sup, self.console, self.on_stop = sup, console, on_stop
        self.proc = sup.proc
        self.pgid = sup.proc.pid
        self.reads = dict(sup.streams)
        self.logs = {STDOUT: [sup.out_log], STDERR: [sup.out_log, sup.err_log]}
        self.partial: int | None = None  # the stream whose last chunk ended inside a line
        self.deadline = sup.started + sup.timeout if sup.timeout else None
        self.kill_at: float | None = None
        self.interrupted_by: int | None = None
        self.timed_out = self.escalated = False
        self.log_error: str | None = None
        self.returncode: int | None = None
        self.drain_until = self.quiet_until = 0.0
        self.deferred_until = 0.0  # how long the other stream may wait for a line to end
        self.relay = self._relay()

    def run(self) -> Outcome:
        exit_fd = self._exit_fd()
        try:
            while not self._done(time.monotonic()):
                self._turn(exit_fd)
        finally:
            os.close(exit_fd)
            self._end_relay()
        self.console.finish(self.sup.wake_fd)
        if self.returncode is None:  # pragma: no cover - _done() returns only after the exit
            self.returncode = self.proc.wait()
        return Outcome(
            self.returncode,
            self.proc.pid,
            self.interrupted_by,
            self.timed_out,
            self.escalated,
            self.log_error,
        )

    def _exit_fd(self) -> int:
        """A descriptor that becomes readable when the child exits: a pidfd, or (before Linux
        5.3) a pipe a waiting thread writes to."""
        with contextlib.suppress(AttributeError, OSError):
            return os.pidfd_open(self.proc.pid)
        done_r, done_w = os.pipe2(os.O_CLOEXEC)

        def wait_child() -> None:
            self.proc.wait()
            os.write(done_w, b"x")
            os.close(done_w)

        threading.Thread(target=wait_child, daemon=True).start()
        return done_r

    def _done(self, now: float) -> bool:
        """After the exit: the streams ended, stayed quiet, or an escaped process kept them
        open too long."""
        if self.returncode is None:
            return False
        return not self.reads or now >= self.drain_until or now >= self.quiet_until

    def _turn(self, exit_fd: int) -> None:
        console = self.console
        polled = select.poll()
        if not console.full or self.returncode is not None:  # after the exit: all to the logs
            for fd in self.reads:
                polled.register(fd, select.POLLIN)
        polled.register(self.sup.wake_fd, select.POLLIN)
        if self.returncode is None:
            polled.register(exit_fd, select.POLLIN)
        writing = console.pending()
        if writing is not None:
            polled.register(writing, select.POLLOUT)
        events = dict(polled.poll(self._wait_ms(time.monotonic())))
        now = time.monotonic()
        ready = [fd for fd in self.reads if events.get(fd, 0) & _IN]
        ready.sort(key=lambda fd: self.reads[fd] != self.partial)
        for fd in ready:
            if self.partial not in (None, self.reads.get(fd)) and now < self.deferred_until:
                break  # the other stream is inside a line: let it end it first (briefly)
            self._read(fd, now)
        if writing is not None:
            console.write(writable=bool(events.get(writing, 0) & select.POLLOUT))
        console.release(now)
        if self.sup.wake_fd in events:
            self._signals(now)
        self._timers(now)
        if self.returncode is None and exit_fd in events:
            self.returncode = self.proc.wait()
            kill_group(self.pgid)  # the job is the script: nothing it started outlives it
            self.drain_until = now + _DRAIN_S
            self.quiet_until = now + _QUIET_S

    def _wait_ms(self, now: float) -> int:
        timers = [self.deadline, self.kill_at, self.console.next_release()]
        if self.returncode is not None:
            timers += [self.drain_until, self.quiet_until]
        due = [t for t in timers if t is not None]
        left = min(due) - now if due else _MAX_WAIT_S
        return max(0, int(min(left, _MAX_WAIT_S) * 1000) + 1)

    def _relay(self) -> Relay | None:
        """stdout's way into stdout.log when no console copy needs its bytes and it is a pipe."""
        stdout_pipe = all(self.sup.streams[fd] != STDOUT for fd in self.sup.terminals)
        if hasattr(os, "splice") and stdout_pipe and self.console.targets[STDOUT] is None:
            with contextlib.suppress(OSError):  # no descriptors left: read it as always
                return Relay(self.sup.run.stdout_log)
        return None

    def _read(self, fd: int, now: float) -> None:
        stream = self.reads[fd]
        moved = self._splice(fd, self.relay) if stream == STDOUT and self.relay else None
        if moved is not None:
            size, line_ended = moved
            closed = not size
        else:
            chunk, closed = self._take(fd)
            size, line_ended = len(chunk), chunk.endswith((b"\n", b"\r"))
            if chunk:
                self._log(self.logs[stream], chunk)
                self.console.feed(stream, chunk, now)
        if closed:
            del self.reads[fd]
        if not size:
            return
        if not line_ended and self.partial != stream:
            self.deferred_until = now + _FAIR_S
        self.partial = None if line_ended else stream
        self.quiet_until = now + _QUIET_S

    def _splice(self, fd: int, relay: Relay) -> tuple[int, bool] | None:
        """stdout into stdout.log by the relay: (size, ends a line); None when the system
        refuses splice (the relay is then dropped and the pipe read)."""
        try:
            moved = relay.move(fd)
        except OSError:
            self._end_relay()
            return None
        if moved.unlogged:  # the log refused the splice: the rest of the run writes as always
            self._end_relay()
            self._log([self.sup.out_log], moved.unlogged)
        return moved.size, moved.line_ended

    def _log(self, fds: list[int], data: bytes) -> None:
        """data into the logs; after a failed write the next ones are still tried (a full disk
        may have room again; stderr.log still takes what stdout.log refused)."""
        error = write_logs(fds, data)
        self.log_error = self.log_error or error

    def _end_relay(self) -> None:
        if self.relay is not None:
            self.relay.close()
        self.relay = None

    def _take(self, fd: int) -> tuple[bytes, bool]:
        """What the stream has now, and whether it has ended. A pipe gives up to 1 MiB at
        once; a pty at most 4 KiB, so it is read (non-blocking) until it has no more or 1 MiB
        has come: 100 to 140 MB/s in 4 KiB turns of the loop, ~1 GB/s like this."""
        parts: list[bytes] = []
        size = 0
        terminal = fd in self.sup.terminals
        # a pty's reads are small: asking 1 MiB for each made malloc carve (and keep) a 1 MiB
        # block per 4 KiB read, 59 MiB of RSS for 500 MiB of output (bench/tee.py (d))
        ask = _PTY_READ if terminal else CHUNK
        while True:
            try:
                part = os.read(fd, ask)
            except BlockingIOError:
                return b"".join(parts), False
            except OSError as exc:  # a pty master reads EIO once every writer has gone
                if exc.errno != errno.EIO:
                    raise
                part = b""
            if not part:
                return b"".join(parts), True
            parts.append(part)
            size += len(part)
            if not terminal or size >= CHUNK:
                return b"".join(parts) if len(parts) > 1 else part, False

    def _signals(self, now: float) -> None:
        for signum in os.read(self.sup.wake_fd, 64):
            if signum == signal.SIGWINCH:
                self._resize()
            elif self.interrupted_by is None and not self.timed_out:
                self.interrupted_by, self.deadline = signum, None
                self.kill_at = now + self.sup.grace
                kill_group(self.pgid, signum)
                self._stopping(signum)
            elif signum == signal.SIGINT:  # a second Ctrl-C: stop waiting
                kill_group(self.pgid, signal.SIGKILL)
                self.escalated, self.kill_at = True, None
            else:
                kill_group(self.pgid, signum)

    def _resize(self) -> None:
        """torchjob's terminal changed size: so do the job's, and the job is told."""
        from torchrun_cli.launch import terminal  # as in Supervisor._stream_ends

        size = terminal.window_size(STDOUT)
        for fd in self.sup.terminals:
            terminal.resize(fd, size)
        kill_group(self.pgid, signal.SIGWINCH)

    def _timers(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.timed_out, self.deadline = True, None
            self.kill_at = now + self.sup.grace
            kill_group(self.pgid, signal.SIGTERM)
            self._stopping(None)
        if self.kill_at is not None and now >= self.kill_at:
            kill_group(self.pgid, signal.SIGKILL)
            self.escalated, self.kill_at = True, None

    def _stopping(self, signum: int | None) -> None:
        with contextlib.suppress(Exception):  # a failing display must not stop supervision
            self.on_stop(signum)
