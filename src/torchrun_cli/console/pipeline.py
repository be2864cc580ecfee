"""A pipeline on the console: a line as each step starts and ends (on stderr, like every line
of torchjob's own), the steps' output only with --follow-steps (on stdout, each line prefixed
with its step's name), and on a terminal a live table at the bottom: the running steps with
their elapsed time and a count of the steps in each state."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from torchrun_cli.pipeline_record import PipelineRecord, StepRecord

_SPIN = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_MARK = {
    "succeeded": "✓",
    "failed": "✗",
    "timeout": "✗",
    "setup_error": "✗",
    "lost": "✗",
    "cancelled": "·",
    "skipped": "·",
}
_COLOUR = {"✓": "32", "✗": "31", "·": "33", "▶": "36", "=": "36", "↻": "33"}


def _took(seconds: float | None) -> str:
    return "" if seconds is None else f" in {seconds:.1f}s"


class PipelineConsole:
    """The events of schedule.Events, printed. `live` draws the table (a terminal only)."""

    def __init__(self, quiet: bool, stream: TextIO | None = None, word: str = "pipeline") -> None:
        self.stream = stream or sys.stderr
        self.word, self.unit = word, "trial" if word == "sweep" else "step"
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.colour = self.live and "NO_COLOR" not in os.environ
        self.drawn = 0  # lines of the live table on screen
        self.frame = 0
        self.id = ""
        self.since: dict[str, float] = {}

    def _line(self, mark: str, text: str) -> None:
        if self.quiet:
            return
        self._clear()
        shown = f"\x1b[{_COLOUR[mark]}m{mark}\x1b[0m" if self.colour and mark in _COLOUR else mark
        self._write(f"torchjob: {shown} {text}\n")

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def _clear(self) -> None:
        if self.drawn:
            self._write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def started(self, rec: PipelineRecord, folder: Path) -> None:
        self.id = rec.id
        if not self.quiet:
            steps = len(rec.steps)
            self._write(
                f"torchjob: {self.word} {rec.id}: {steps} {self.unit}{'s' * (steps != 1)}, at most "
                f"{rec.max_parallel} at once\ntorchjob:   folder      {folder}\n"
            )

    def step(self, name: str, step: StepRecord, what: str) -> None:
        if what == "started":
            self.since[name] = time.monotonic()
            return
        if what == "run" and step.job_id:
            self._line("▶", f"{name} submitted: Slurm job {step.job_id} (run {step.run_id})")
        elif what == "run":
            attempt = len(step.attempts)
            again = f", attempt {attempt}" if attempt > 1 else ""
            self._line("▶", f"{name} (run {step.run_id}{again})")
        elif what == "retry":
            self.since[name] = time.monotonic()
        elif what == "reused":
            self._line("=", f"{name} reused: run {step.run_id} of {self.word} {step.reused_from}")
        elif what == "cached":
            self._line("=", f"{name} cached: run {step.run_id} succeeded with the same inputs")
        elif what in ("skipped", "cancelled"):
            self._line("·", f"{name} {what}: {step.error}")
        else:
            self._ended(name, step)

    def _ended(self, name: str, step: StepRecord) -> None:
        mark = _MARK.get(step.status, "✗")
        if step.status == "succeeded":
            self._line(mark, f"{name} succeeded{_took(step.duration_s)}")
            return
        why = f": {step.error}" if step.error and not step.error.startswith("the script") else ""
        logs = f"; logs: torchjob logs {self.id}/{name}" if step.run_dir else ""
        self._line(mark, f"{name} {step.status} (exit {step.exit_code}){why}{logs}")

    def output(self, name: str, fd: int, line: bytes) -> None:
        """A line of a step's output (--follow-steps), after its step's name; a step's last line
        without its newline gets one (the next line is another step's, or torchjob's)."""
        self._clear()
        line = line if line.endswith(b"\n") else line + b"\n"
        out = sys.stdout if fd == 1 else sys.stderr
        with contextlib.suppress(OSError, ValueError):
            out.flush()
            os.write(out.fileno(), name.encode() + b" | " + line)

    def tick(self, rec: PipelineRecord) -> None:
        """Redraw the live table: a line per running step, then the counts."""
        if not self.live:
            return
        self.frame += 1
        spin = _SPIN[self.frame % len(_SPIN)]
        now = time.monotonic()
        rows = [
            f"  {spin} {name}  {now - self.since.get(name, now):.1f}s"
            for name, step in rec.steps.items()
            if step.status == "running"
        ]
        rows.append(f"  {rec.counted(' · ')}")
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
        except (OSError, ValueError):
            width = 79
        self._clear()
        self._write("".join(row[:width] + "\n" for row in rows))
        self.drawn = len(rows)

    def stopping(self, signum: int) -> None:
        self._line("·", f"stopping every running {self.unit} ({signal.Signals(signum).name})")

    def ended(self, rec: PipelineRecord, folder: Path) -> None:
        """The pipeline's last line: its status, exit, the steps' counts and its folder."""
        self._clear()
        status = rec.shown_status().value
        text = (
            f"torchjob: {self.word} {rec.name} {status}{_took(rec.duration_s)} "
            f"(exit {rec.exit_code}): {rec.counted()}; folder: {folder}\n"
        )
        if self.quiet and status == "succeeded":
            return
        if self.colour:
            colour = "32" if status == "succeeded" else "31"
            text = f"\x1b[1;{colour}m{text[:-1]}\x1b[0m\n"
        self._write(text)
