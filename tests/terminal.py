"""torchjob on a real pseudo-terminal, as a user runs it in a terminal window: the terminal is
torchjob's controlling terminal, so typing Ctrl-C makes the kernel send SIGINT, and resizing
sends SIGWINCH, to torchjob's process group; what torchjob shows is read from the other side."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time
from collections.abc import Mapping
from pathlib import Path

from tests.helpers import TORCHJOB


class Terminal:
    """One torchjob process on its own terminal of rows x cols."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        rows: int = 24,
        cols: int = 80,
    ) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child: torchjob on the terminal
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                if cwd is not None:
                    os.chdir(cwd)
                os.execve(TORCHJOB[0], [*TORCHJOB, *args], dict(env))  # noqa: S606 - argv
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.shown = bytearray()
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        """Read what is there within timeout; False at the end (the terminal hung up)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every process on the terminal is gone
            return False
        self.shown += data
        return bool(data)

    def expect(self, needle: bytes, timeout: float = 60) -> bytes:
        """Read until needle has been shown; everything shown so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.shown:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{needle!r} not shown; got {bytes(self.shown)[-2000:]!r}")
        return bytes(self.shown)

    def send(self, data: bytes) -> None:
        """Type on the keyboard (b"\\x03" is Ctrl-C)."""
        os.write(self.fd, data)

    def resize(self, rows: int, cols: int) -> None:
        """Resize the window: the kernel sends SIGWINCH to the foreground process group."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self, timeout: float = 120) -> int:
        """Read to the end and return torchjob's exit status."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise AssertionError(f"torchjob still running; got {bytes(self.shown)[-2000:]!r}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status
