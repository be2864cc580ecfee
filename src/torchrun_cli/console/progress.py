"""Setup steps on the console. On a terminal, one live line per step, redrawn in place
(`⠹ installing 12 packages  3.1s  collecting torch (4)`) and finished before the job's first
byte (`✓ installing 12 packages (3.2s)`). Off a terminal (CI, cron without -q), a plain line as
each step starts and as it ends, so a log never sits silent through a long build; under GitHub
Actions the steps sit inside a `::group::`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from torchrun_cli.steps import Step

_SPIN = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_FRAME_S = 0.1


class _Shown:
    """A step as shown: its name (which may improve on the way), detail and start."""

    def __init__(self, name: str) -> None:
        self.name, self.note = name, ""
        self.started = time.monotonic()

    def detail(self, text: str) -> None:
        self.note = text

    def rename(self, name: str) -> None:
        self.name = name

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _write(stream: TextIO, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a console gone must not stop the setup
        stream.write(text)
        stream.flush()


class TerminalSteps:
    """Live lines on a terminal; colour unless NO_COLOR."""

    detailed = True

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        plain = "NO_COLOR" in os.environ
        self.good = "✓" if plain else "\x1b[32m✓\x1b[0m"
        self.bad = "✗" if plain else "\x1b[31m✗\x1b[0m"

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        shown = _Shown(name)
        stop = threading.Event()
        animate = threading.Thread(target=self._animate, args=(shown, stop), daemon=True)
        self._draw(shown, 0)
        animate.start()
        ok = False
        try:
            yield shown
            ok = True
        finally:
            stop.set()
            animate.join()
            mark = self.good if ok else self.bad
            with self.lock:
                _write(self.stream, f"\r\x1b[K{mark} {shown.name} ({shown.seconds():.1f}s)\n")

    def _animate(self, shown: _Shown, stop: threading.Event) -> None:
        frame = 0
        while not stop.wait(_FRAME_S):
            frame += 1
            self._draw(shown, frame)

    def _draw(self, shown: _Shown, frame: int) -> None:
        line = f"{_SPIN[frame % len(_SPIN)]} {shown.name}  {shown.seconds():.1f}s"
        if shown.note:
            line += f"  {shown.note}"
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
        except (OSError, ValueError):
            width = 79
        with self.lock:
            _write(self.stream, "\r\x1b[K" + line[:width])

    def close(self) -> None:
        """Nothing to close on a terminal: each step finished its own line."""


class PlainSteps:
    """A line as each step starts and ends; under GitHub Actions inside a collapsed group."""

    detailed = False

    def __init__(self, stream: TextIO, github: bool) -> None:
        self.stream, self.github = stream, github
        self.grouped = False

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        if self.github and not self.grouped:
            _write(self.stream, "::group::torchjob setup\n")
            self.grouped = True
        _write(self.stream, f"torchjob: {name} ...\n")
        shown = _Shown(name)
        ok = False
        try:
            yield shown
            ok = True
        finally:
            how = "done" if ok else "failed"
            _write(self.stream, f"torchjob: {shown.name}: {how} in {shown.seconds():.1f}s\n")

    def close(self) -> None:
        """The setup is over (the job starts, or the run failed): end the group."""
        if self.grouped:
            _write(self.stream, "::endgroup::\n")
            self.grouped = False
