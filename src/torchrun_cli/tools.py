"""The one way a setup tool (git, pip, uv, sbatch, ...) runs, and the guards every child of
torchjob gets: argv only, its own process group, a hard time limit, no prompt, output appended
to setup.log with secrets masked, and death with torchjob even after kill -9.

Two guards make a child die with torchjob. PR_SET_PDEATHSIG (through `setpriv`, or a tiny
Python exec trampoline where util-linux is missing; never preexec_fn, unsafe with threads)
takes the child itself. A watchdog process, forked once per command, SIGKILLs every process
group registered with it when torchjob's end of its pipe closes: that takes the grandchildren
(pip's build backend, the upload-pack of a file:// clone) that PDEATHSIG alone leaves behind.
PDEATHSIG fires when the spawning *thread* ends: start children from the main thread.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from torchrun_cli.errors import TorchjobError
from torchrun_cli.masking import mask_argv, mask_secrets, mask_text

# argv: TRAMPOLINE PARENT_PID PROGRAM ARGS... ; PR_SET_PDEATHSIG is 1, SIGKILL is 9.
_TRAMPOLINE = """\
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(137)
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.stderr.write("torchjob: cannot start %s: %s\\n" % (sys.argv[2], e.strerror))
    os._exit(126 if e.errno in (13, 8) else 127)
"""
_LINE_END = re.compile(rb"\r\n|\r|\n")
_DRAIN_S = 2.0  # after a tool exits: how long to read what an escaped process still writes
_CHUNK = 1 << 16


def trampoline(argv: Sequence[str]) -> list[str]:
    """argv started through the Python exec trampoline: PR_SET_PDEATHSIG (SIGKILL), and a
    check that torchjob was still alive once it was set (8 ms: one interpreter start). For the
    job itself, whose exec errors it turns into 126/127."""
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    """argv under `setpriv --pdeathsig KILL` (under 1 ms), else the Python trampoline. A kill
    in the microsecond before setpriv's prctl is caught by the watchdog's group kill."""
    setpriv = _setpriv()
    if setpriv is None:
        return trampoline(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@functools.cache
def _setpriv() -> str | None:
    """setpriv, if it has --pdeathsig (util-linux 2.33 and later; RHEL 8's 2.32 has not, and
    would refuse the option): its getopt table names the option, so reading the program tells
    without starting it."""
    found = shutil.which("setpriv")
    try:
        return found if found and b"pdeathsig" in Path(found).read_bytes() else None
    except OSError:
        return None


class Watchdog:
    """A forked process that SIGKILLs the process groups registered with it once torchjob's end
    of the pipe closes: normal exits unregister first, so only a killed torchjob triggers it."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        blocked = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked watchdog: only os-level calls from here
            try:
                for s in blocked:
                    signal.signal(s, signal.SIG_IGN)
                signal.set_wakeup_fd(-1)
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, read_fd)
                os.closerange(read_fd + 1, 1 << 16)
                _watch(read_fd)
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(read_fd)
        self.pid, self._fd = pid, write_fd
        atexit.register(self.close)

    def close(self) -> None:
        """Let the watchdog go (nothing is registered any more) and reap it. Done before
        torchjob's interpreter tears down: while a forked child shares its memory, each page the
        teardown writes is copied first (copy-on-write), which cost ~3 ms per command."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)

    def _say(self, line: str) -> None:
        os.write(self._fd, line.encode())  # short lines: one atomic pipe write each

    @contextlib.contextmanager
    def guard(self, pgid: int) -> Iterator[None]:
        """While inside, a kill -9 of torchjob takes the whole group `pgid`."""
        self._say(f"+{pgid}\n")
        try:
            yield
        finally:
            self._say(f"-{pgid}\n")


def _watch(fd: int) -> None:  # pragma: no cover - runs in the forked watchdog
    groups: set[int] = set()
    pending = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            elif line[:1] == b"-":
                groups.discard(int(line[1:]))
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


@functools.cache
def watchdog() -> Watchdog:
    """This process's watchdog, forked on first use (one per command, not one per child), and
    let go at exit."""
    return Watchdog()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ToolFailed(TorchjobError):
    """A tool exited non-zero, timed out, or could not start; carries its masked command line
    (as setup.log shows it) and its masked output."""

    def __init__(
        self,
        argv: Sequence[str],
        command: str,
        returncode: int | None,
        output: str,
        *,
        timed_out: bool = False,
        missing: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.command = command
        self.returncode = returncode
        self.output = output
        self.timed_out = timed_out
        self.missing = missing
        what = (
            "not found"
            if missing
            else "timed out"
            if timed_out
            else f"exited with status {returncode}"
        )
        super().__init__(f"`{shlex.join(self.argv[:3])} ...` {what}")

    def tail(self, lines: int = 20) -> str:
        """The last lines of the tool's output, for the error summary."""
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
    log: Path | None,
    secrets: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
    stdin_text: str | None = None,
) -> str:
    """Run argv to the end and return its stdout, masked. stderr is never parsed (GIT_TRACE or
    a warning must not become a commit id); both streams, in arrival order, go to the log and
    into the error. on_line sees each output line as it arrives (progress on a terminal).

    The tool and everything it starts die with torchjob, and its process group is killed when
    it exits, so nothing it left behind outlives the step.
    """
    started = time.monotonic()
    shown = _masked(shlex.join(mask_argv(argv)), secrets)
    exe = shutil.which(argv[0], path=(env or os.environ).get("PATH")) if argv else None
    if exe is None:
        _log(log, shown, f"{argv[0]}: not found\n", None, 0.0)
        raise ToolFailed(argv, shown, None, f"{argv[0]}: not found", missing=True)
    guard = watchdog()
    try:
        proc = subprocess.Popen(
            _die_with_parent([exe, *argv[1:]]),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        _log(log, shown, f"{exc}\n", None, 0.0)
        raise ToolFailed(argv, shown, None, str(exc), missing=True) from exc
    with guard.guard(proc.pid):
        try:
            out, both, timed_out = _collect(proc, timeout, stdin_text, secrets, on_line)
        finally:  # Ctrl-C, SIGTERM, a time limit, or the end: the tool's whole group goes
            kill_group(proc.pid)
            proc.wait()
    output = _masked(both.decode("utf-8", errors="replace"), secrets)
    _log(log, shown, output, proc.returncode, time.monotonic() - started)
    if timed_out or proc.returncode != 0:
        raise ToolFailed(argv, shown, proc.returncode, output, timed_out=timed_out)
    return mask_secrets(out.decode("utf-8", errors="replace"), secrets)


def _masked(text: str, secrets: Sequence[str]) -> str:
    """A tool's text as setup.log and the console show it: URL credentials and the step's own
    secrets masked."""
    return mask_secrets(mask_text(text), secrets)


def _collect(
    proc: subprocess.Popen[bytes],
    timeout: float,
    stdin_text: str | None,
    secrets: Sequence[str],
    on_line: Callable[[str], None] | None,
) -> tuple[bytes, bytes, bool]:
    """Read both pipes in one loop until the tool has exited and its pipes are drained (or the
    deadline passes): (stdout, both in arrival order, timed out)."""
    assert proc.stdout is not None and proc.stderr is not None
    if stdin_text is not None and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin_text.encode())
        proc.stdin.close()
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    exit_fd = _pidfd(proc.pid)
    poller = select.poll()
    for fd in (out_fd, err_fd, *(() if exit_fd is None else (exit_fd,))):
        poller.register(fd, select.POLLIN)
    out, both, partial = bytearray(), bytearray(), b""
    open_fds = {out_fd, err_fd}
    deadline = time.monotonic() + timeout
    drain_until: float | None = None  # set once the tool has exited
    try:
        while True:
            now = time.monotonic()
            if drain_until is None and exit_fd is None and proc.poll() is not None:
                drain_until = now + _DRAIN_S
            if drain_until is not None and (not open_fds or now >= drain_until):
                return bytes(out), bytes(both), False
            if drain_until is None and now >= deadline:
                return bytes(out), bytes(both), True
            wait = (drain_until or deadline) - now
            if exit_fd is None and drain_until is None:
                wait = min(wait, 0.05)  # no pidfd: look at the process this often
            for fd, _ in poller.poll(wait * 1000):
                if fd == exit_fd:
                    poller.unregister(fd)
                    drain_until = time.monotonic() + _DRAIN_S
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                both += chunk
                if fd == out_fd:
                    out += chunk
                if on_line is not None:  # `\r` too: git's progress redraws one line
                    *lines, partial = _LINE_END.split(partial + chunk)
                    for line in lines:
                        with contextlib.suppress(Exception):  # a display must not fail a step
                            on_line(
                                _masked(line.decode("utf-8", errors="replace").rstrip(), secrets)
                            )
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def _noop(signum: int, frame: object) -> None:
    """Signals are read from the wakeup fd by the main loop; the handler only has to exist."""


@contextlib.contextmanager
def signals_to_pipe(signals: tuple[int, ...]) -> Iterator[int]:
    """Route the signals into a pipe an event loop polls (supervise, the pipeline scheduler);
    restore on exit."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # none lost while switching
    old = {s: signal.signal(s, _noop) for s in signals}
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


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when pid exits (Linux >= 5.3), else None (polled)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def exited_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether proc exits within timeout seconds, noticed the moment it does (it is left for
    wait() to reap): Popen.wait(timeout) polls with sleeps growing to 50 ms."""
    exit_fd = _pidfd(proc.pid)
    if exit_fd is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        ready, _, _ = select.select([exit_fd], [], [], timeout)
    finally:
        os.close(exit_fd)
    return bool(ready)


def _log(log: Path | None, shown: str, output: str, code: int | None, seconds: float) -> None:
    if log is None:
        return
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shown}\n{output}")
        if output and not output.endswith("\n"):
            fh.write("\n")
        fh.write(f"[exit {code} after {seconds:.2f}s]\n")
