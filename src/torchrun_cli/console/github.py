"""GitHub Actions (GITHUB_ACTIONS=true): a failed run becomes an `::error::` annotation, and
every run appends a Markdown summary (status, exit, duration, outputs, logs) to the step's
summary page ($GITHUB_STEP_SUMMARY), so a CI reader sees how the training went without
opening the log."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TextIO

from torchrun_cli.record import RunRecord, Status, value_text


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape(text: str) -> str:
    """A workflow command's data: %, CR and LF escaped, as the runner expects."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def error(stream: TextIO, rec: RunRecord) -> None:
    """`::error title=...::why` for a run that did not succeed."""
    why = rec.error or f"exit {rec.exit_code}"
    title = f"torchjob: {rec.name} {rec.shown_status().value}"
    with contextlib.suppress(OSError, ValueError):
        stream.write(f"::error title={_escape(title)}::{_escape(why)}\n")
        stream.flush()


def _cell(value: object) -> str:
    """A table cell: a number as the console shows it (`1`, `0.1235`), no `|` or line break."""
    return value_text(value).replace("|", "\\|").replace("\n", " ")


def summary(rec: RunRecord, run_dir: Path) -> None:
    """The run as a Markdown table appended to $GITHUB_STEP_SUMMARY (if the runner set it)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    status = rec.shown_status().value
    mark = "✅" if rec.status is Status.SUCCEEDED else "❌"
    rows = [
        ("run", f"`{rec.id}`"),
        ("status", f"{status} (exit {rec.exit_code})"),
        ("duration", f"{rec.duration_s:.1f} s" if rec.duration_s is not None else "?"),
    ]
    if rec.error and rec.status is not Status.SUCCEEDED:
        rows.append(("error", _cell(rec.error)))
    if rec.source.get("commit"):
        rows.append(("commit", f"`{rec.source['commit']}`"))
    rows += [(f"output `{k}`", _cell(v)) for k, v in rec.outputs.items()]
    setup = ", `setup.log`" if (run_dir / "setup.log").exists() else ""  # no build, no file
    rows.append(("logs", f"`{run_dir / 'stdout.log'}` (both streams), `stderr.log`{setup}"))
    text = f"### {mark} torchjob: {_cell(rec.name)} {status}\n\n| | |\n|---|---|\n"
    text += "".join(f"| {label} | {value} |\n" for label, value in rows) + "\n"
    with contextlib.suppress(OSError), open(target, "a", encoding="utf-8") as fh:
        fh.write(text)
