"""The job's stdout into stdout.log inside the kernel, when nothing else wants its bytes (no
console copy: `-q`, `--detach`, pipeline steps, `> /dev/null`).

Why: Linux holds a pipe's lock for the whole copy of a read, so while torchjob copied 1 MiB out
of the job's pipe, the job could not write. A relay pipe of our own takes the pipe's pages by
reference (splice(2) from pipe to pipe moves no bytes), and a second splice copies them into the
log while the job writes on: 1.2x to 1.4x the read-and-write loop (bench/tee.py (b)).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import NamedTuple

CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031
_LINE_ENDS = (b"\n", b"\r")


class Moved(NamedTuple):
    """What one move took from the job's pipe."""

    size: int  # 0: the stream has ended
    line_ended: bool  # the log now ends with a line end (for the order of the two streams)
    unlogged: bytes  # what the log refused by splice: write it the ordinary way


def pipe() -> tuple[int, int]:
    """(read, write) ends of a pipe, 1 MiB deep where the kernel allows."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # over the user's limit: 64 KiB, in smaller chunks
        fcntl.fcntl(read_fd, _F_SETPIPE_SZ, CHUNK)
    return read_fd, write_fd


class Relay:
    """A relay pipe and a descriptor of stdout.log of its own: O_APPEND, which splice refuses,
    is replaced by a seek to the end before each move (a script may append to the log too)."""

    def __init__(self, log: Path) -> None:
        self.log = os.open(log, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.read_end, self.write_end = pipe()
        except OSError:
            os.close(self.log)
            raise

    def move(self, source: int) -> Moved:
        """What the job's pipe holds now, into the log. OSError when splice itself is refused
        (nothing was taken then: read the pipe instead)."""
        size = os.splice(source, self.write_end, CHUNK)
        if not size:
            return Moved(0, True, b"")
        left = size
        try:
            end = os.lseek(self.log, 0, os.SEEK_END) + size  # where the log ends after the move
            while left:
                wrote = os.splice(self.read_end, self.log, left)
                if not wrote:
                    raise OSError(errno.EIO, "splice into the log wrote nothing")
                left -= wrote
        except OSError:  # a full disk, a file system without splice: the rest as bytes
            rest = bytearray()
            while len(rest) < left:
                rest += os.read(self.read_end, left - len(rest))
            return Moved(size, rest.endswith(_LINE_ENDS), bytes(rest))
        try:
            last = os.pread(self.log, 1, end - 1)
        except OSError:
            return Moved(size, True, b"")
        return Moved(size, last in _LINE_ENDS, b"")

    def close(self) -> None:
        for fd in (self.read_end, self.write_end, self.log):
            os.close(fd)
