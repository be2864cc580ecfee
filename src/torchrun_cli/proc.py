"""The one helper that runs a setup tool (git, pip, ...): argv only, own process group, a hard
time limit, no prompt, output appended to setup.log with secrets masked."""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torchrun_cli.errors import TorchjobError

MASK = "****"

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


def trampoline(argv: Sequence[str]) -> list[str]:
    """argv started through a tiny exec trampoline that sets PR_SET_PDEATHSIG (SIGKILL), so
    the process dies with torchjob even after kill -9; no preexec_fn (unsafe with threads)."""
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]


class ToolFailed(TorchjobError):
    """A tool exited non-zero, timed out, or could not start; carries its masked output."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str,
                 *, timed_out: bool = False, missing: bool = False) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        self.timed_out = timed_out
        self.missing = missing
        what = ("not found" if missing else "timed out" if timed_out
                else f"exited with status {returncode}")
        super().__init__(f"`{shlex.join(self.argv[:3])} ...` {what}")

    def tail(self, lines: int = 20) -> str:
        """The last lines of the tool's output, for the error summary."""
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


def mask(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret value (long enough to be one) with ****."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
    log: Path | None,
    secrets: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
    die_with_parent: bool = False,
    stdin_text: str | None = None,
) -> str:
    """Run argv to the end and return its output (stdout and stderr merged, masked).

    on_line, when given, sees each output line as it arrives (for progress on a terminal).
    die_with_parent: for long tools (builds, clones), which must not outlive a killed torchjob.
    """
    started = time.monotonic()
    shown = mask(shlex.join(argv), secrets)
    command = list(argv)
    if die_with_parent:
        exe = shutil.which(command[0])
        if exe is None:
            _log(log, shown, f"{command[0]}: not found\n", None, 0.0)
            raise ToolFailed(argv, None, f"{command[0]}: not found", missing=True)
        command = trampoline([exe, *command[1:]])
    try:
        proc = subprocess.Popen(
            command, env=dict(env) if env is not None else None, cwd=cwd,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
    except (FileNotFoundError, PermissionError) as exc:
        _log(log, shown, f"{exc}\n", None, 0.0)
        raise ToolFailed(argv, None, str(exc), missing=True) from exc
    chunks: list[bytes] = []

    def drain() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            chunks.append(raw)
            if on_line is not None:
                with contextlib.suppress(Exception):
                    on_line(mask(raw.decode("utf-8", errors="replace").rstrip(), secrets))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    if stdin_text is not None and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin_text.encode())
        proc.stdin.close()
    timed_out = False
    try:
        if not exited_within(proc, timeout):
            timed_out = True
            _kill_group(proc)
        proc.wait()
    except BaseException:  # Ctrl-C: the tool's whole group goes, then we re-raise
        _kill_group(proc)
        proc.wait()
        raise
    reader.join(10)  # a tool's escaped grandchild may hold the pipe: do not wait for it
    output = mask(b"".join(chunks).decode("utf-8", errors="replace"), secrets)
    _log(log, shown, output, proc.returncode, time.monotonic() - started)
    if timed_out or proc.returncode != 0:
        raise ToolFailed(argv, proc.returncode, output, timed_out=timed_out)
    return output


def exited_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether proc exits within timeout seconds, noticed the moment it does (it is left for
    wait() to reap). Popen.wait(timeout) polls with sleeps growing to 50 ms, which made every
    git command of a ready mirror up to 50 ms late; a pidfd wakes select() at the exit."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: the polling wait is correct, if late
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return bool(ready)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _log(log: Path | None, shown: str, output: str, code: int | None, seconds: float) -> None:
    if log is None:
        return
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shown}\n{output}")
        if output and not output.endswith("\n"):
            fh.write("\n")
        fh.write(f"[exit {code} after {seconds:.2f}s]\n")
