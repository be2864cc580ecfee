"""A pseudo-terminal for the job, so that `isatty()` is true for it as under `uv run`: rich,
tqdm, Lightning and Hugging Face bars and colour work live while torchjob still tees every byte.

The pty is put in raw mode (no `\\n` -> `\\r\\n`, no echo, no signals from its input), so the
logs stay byte-exact. Its window size is torchjob's terminal's, kept current: torchjob relays
SIGWINCH to the job's process group (the job has no controlling terminal of its own, so the
kernel would not). The job's stdin stays torchjob's: the user's terminal, so input() and pdb
work.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
import tty

_DEFAULT_SIZE = (24, 80)  # rows, columns, when torchjob is not on a terminal (--tty always)


def window_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal at fd, else of $LINES/$COLUMNS, else 24x80."""
    with contextlib.suppress(OSError):
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        if rows and cols:
            return rows, cols
    try:
        return int(os.environ["LINES"]), int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        return _DEFAULT_SIZE


def open_pty(size: tuple[int, int]) -> tuple[int, int]:
    """(master, slave) of a new raw pseudo-terminal of that size; both close on exec."""
    master, slave = os.openpty()
    for fd in (master, slave):
        os.set_inheritable(fd, False)
    tty.setraw(slave)
    resize(slave, size)
    return master, slave


def resize(fd: int, size: tuple[int, int]) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
