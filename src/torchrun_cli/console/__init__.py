"""What torchjob itself prints: plain lines off a terminal, colour (via rich) only on one.

rich is imported only when stderr/stdout is a terminal, so cron, CI and the hot path of
`torchjob run` never pay for it. rich honours NO_COLOR by itself. Setup steps are drawn by
console/progress.py, GitHub Actions' annotations and summary written by console/github.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from torchrun_cli.console import github
from torchrun_cli.record import Status, value_text

if TYPE_CHECKING:
    from torchrun_cli.envs import Environment
    from torchrun_cli.record import RunDir, RunRecord
    from torchrun_cli.source import Source
    from torchrun_cli.steps import Steps

Row = tuple[str, str, "str | None"]  # label, value, where the value came from

_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "setup_error": "red",
    "cancelled": "yellow",
    "timeout": "yellow",
    "running": "cyan",
    "lost": "magenta",
}


def _fancy(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def _emit(text: str, *, err: bool = True, style: str | None = None) -> None:
    """One line (or block) to stderr or stdout; styled only on a terminal.

    Never raises: a console that went away (closed pipe, hung-up terminal) must not change
    what the run does or its exit status; the record and the logs still say everything.
    """
    stream = sys.stderr if err else sys.stdout
    try:
        if style and _fancy(stream):
            from rich.console import Console  # measured: 38 ms, on a terminal only
            from rich.text import Text

            Console(file=stream, highlight=False, soft_wrap=True).print(Text(text, style=style))
        else:
            stream.write(text + "\n")
            stream.flush()
    except (OSError, ValueError):
        pass


def error(lines: Sequence[str]) -> None:
    """Problems, one per line, prefixed so they stand out in a cron mail."""
    for line in lines:
        _emit(f"torchjob: error: {line}", style="bold red")


def note(line: str) -> None:
    _emit(f"torchjob: {line}")


def warning(line: str) -> None:
    _emit(f"torchjob: warning: {line}", style="yellow")


def header(rec: RunRecord) -> None:
    """The run's id and what will really run: the project with its #subdirectory and ref
    (the interpreter follows once the environment is known)."""
    _emit(f"torchjob: run {rec.id}", style="bold")
    src = rec.source
    where = str(src.get("url") or src.get("path") or rec.cwd)
    if src.get("subdirectory"):
        where += f"#{src['subdirectory']}"
    if src.get("kind") == "git":
        where += f" @ {src.get('ref') or '(the default branch)'}"
    _emit(f"torchjob:   project     {where}", style="dim")


def steps(quiet: bool) -> Steps:
    """How setup steps show: live on a terminal, plain lines elsewhere, nothing with -q."""
    from torchrun_cli.console import progress  # the step display: only runs need it
    from torchrun_cli.steps import Silent

    if quiet:
        return Silent()
    if _fancy(sys.stderr):
        return progress.TerminalSteps(sys.stderr)
    return progress.PlainSteps(sys.stderr, github.active())


def stopping(signum: int | None, grace: float, timeout: float | None) -> None:
    """Say that a stop began, and how to hurry it (tests wait for this line, too)."""
    why = f"timeout of {timeout:g}s reached" if signum is None else _signal_name(signum)
    _emit(
        f"torchjob: stopping the job ({why}); SIGKILL in {grace:g}s"
        + ("" if signum is None else ", Ctrl-C again to kill it now"),
        style="yellow",
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _reason(rec: RunRecord) -> str | None:
    """Why the run ended so, when its status and exit status do not say it all (`killed by
    SIGSEGV`, a setup error with its fix); its own line, so the status line keeps one shape."""
    if rec.status is Status.FAILED and rec.signal:
        return f"killed by {rec.signal}"
    if rec.error is None or rec.error.startswith("the script exited"):
        return None
    return rec.error


def summary(rec: RunRecord, run_dir: Path) -> None:
    """Why it ended (when the status does not say), then status, duration, exit status and the
    log folder: the line cron mails end with."""
    took = f"{rec.duration_s:.2f}s" if rec.duration_s is not None else "?"
    if rec.outputs:
        _emit(
            "torchjob:   outputs     "
            + " ".join(f"{k}={value_text(v)}" for k, v in rec.outputs.items()),
            style="dim",
        )
    status = rec.shown_status().value
    style = _STYLE.get(status, "")
    if (reason := _reason(rec)) is not None:
        _emit(f"torchjob: {reason}", style=style)
    _emit(
        f"torchjob: {status} in {took} (exit {rec.exit_code}); logs: {run_dir}",
        style=f"bold {style}",
    )


def setup_failure(run: RunDir) -> None:
    """Where to read what the tools printed."""
    if run.setup_log.exists():
        _emit(f"torchjob: the tools' output is in {run.setup_log}")


def ended(rec: RunRecord, run: RunDir, quiet: bool) -> None:
    """The end of `torchjob run`: the summary (with -q only on failure, after the log's last
    lines), where the tools' output is, and under GitHub Actions an annotation and the step
    summary."""
    ok = rec.status is Status.SUCCEEDED
    if quiet and not ok:
        tail(run.stdout_log)
    if rec.status is Status.SETUP_ERROR:
        setup_failure(run)
    if not (quiet and ok):
        summary(rec, run.path)
    if github.active():
        if not ok:
            github.error(sys.stderr, rec)
        github.summary(rec, run.path)


def tail(path: Path, lines: int = 50, max_bytes: int = 1 << 20) -> None:
    """The last lines of a log, raw bytes, to stderr (what --quiet shows on failure)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return
    if not data:
        return
    chunk = b"".join(data.splitlines(keepends=True)[-lines:])
    _emit(f"torchjob: last {lines} lines of {path}:")
    try:
        sys.stderr.buffer.write(chunk if chunk.endswith(b"\n") else chunk + b"\n")
        sys.stderr.buffer.flush()
    except (OSError, ValueError):
        pass


def plan(rows: Sequence[Row]) -> None:
    """The resolved plan of --dry-run, on stdout, each value with where it came from."""
    width = max([13, *(len(label) + 1 for label, _, _ in rows)])
    for label, value, origin in rows:
        src = f"  [{origin}]" if origin else ""
        sys.stdout.write(f"{label + ':' if label else '':<{width}} {value}{src}\n")
    sys.stdout.flush()


def environment(env: Environment) -> None:
    """The interpreter the job runs on, and its environment (reused or built), before the
    job's first byte."""
    version = f" (Python {env.python_version})" if env.python_version else ""
    if env.key is not None:
        how = "reused" if env.reused else f"built in {env.build_seconds:.1f}s"
        _emit(f"torchjob:   environment {env.manager} {env.key[:16]} ({how})", style="dim")
    _emit(f"torchjob:   interpreter {env.interpreter}{version}", style="dim")


def source_line(src: Source) -> None:
    """After a checkout: which commit, and whether it was cloned, fetched or already cached."""
    if src.kind == "git":
        how = "cloned" if src.cloned else "cached, no network" if src.cached else "fetched"
        _emit(
            f"torchjob:   commit      {src.commit} ({src.ref}; {how}; {src.seconds:.2f}s)",
            style="dim",
        )
    elif src.kind == "archive":
        _emit(f"torchjob:   extracted   {src.url}", style="dim")


def table(
    heads: Sequence[str],
    rows: Sequence[Sequence[str]],
    shrink: Sequence[int] = (),
    drop: Sequence[int] = (),
    status: int | None = None,
) -> None:
    """A table on stdout, fitted to the terminal's width (off a terminal, never cut: a pipe
    or a file gets every column whole): the columns in `shrink` are cut first, then those in
    `drop` go, in order; the others are shown whole. On a terminal the `status` column is
    coloured."""
    widths = [max(map(len, col)) for col in zip(heads, *rows, strict=True)]
    shown = list(range(len(heads)))
    room = _columns()
    for col in shrink:
        over = sum(widths) + 2 * len(widths) - 2 - room
        if room and over > 0:
            widths[col] = max(min(widths[col], max(len(heads[col]), 8)), widths[col] - over)
    for col in drop:
        if room and sum(widths[c] + 2 for c in shown) - 2 > room:
            shown.remove(col)
    lines = [[_cut(row[c], widths[c]).ljust(widths[c]) for c in shown] for row in (heads, *rows)]
    if not _fancy(sys.stdout):
        sys.stdout.write("".join("  ".join(cells).rstrip() + "\n" for cells in lines))
        return
    from rich.console import Console  # measured: 38 ms, on a terminal only
    from rich.text import Text

    out = Console(highlight=False, soft_wrap=True)
    at = shown.index(status) if status in shown else None
    for i, cells in enumerate(lines):
        line = Text("  ".join(cells).rstrip(), style="bold" if i == 0 else "")
        if at is not None and i:
            start = sum(len(c) + 2 for c in cells[:at])
            line.stylize(_STYLE.get(cells[at].strip(), ""), start, start + len(cells[at]))
        out.print(line)


def _columns() -> int:
    """The width to fit a table to: the terminal's; 0 (any) off a terminal."""
    with contextlib.suppress(OSError, ValueError):
        if sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    return 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def show_record(rows: Sequence[tuple[str, str]], status: str) -> None:
    """`torchjob show`: `label: value` lines, the status coloured on a terminal."""
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        line = f"{label + ':':<{width}}{value}"
        if label == "status":
            _emit(line, err=False, style=_STYLE.get(status))
        else:
            sys.stdout.write(line + "\n")
    sys.stdout.flush()


def removals(lines: Sequence[str]) -> None:
    """What a prune or rm removed (or kept, in use), and the space that came back; on a
    terminal, that there was nothing to remove (cron mails stay empty)."""
    for line in lines:
        sys.stdout.write(line + "\n")
    if not lines and _fancy(sys.stderr):
        note("nothing to remove")


def followed(rec: RunRecord, run_dir: Path) -> None:
    """The line `logs -f` ends with: the run's summary, or what is known of a lost run."""
    if rec.shown_status() is Status.LOST:
        _emit(
            f"torchjob: lost: the torchjob that ran it (pid {rec.pid} on {rec.host}) is gone, "
            f"so how the job ended is unknown; logs: {run_dir}",
            style=f"bold {_STYLE['lost']}",
        )
    else:
        summary(rec, run_dir)


def data(value: Any) -> None:
    """JSON for machines on stdout (`--json`)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def end_line(last: bytes) -> None:
    """After a log whose last bytes end inside a line: a line break, when torchjob's next line
    (on stderr) would land on the same console; a log sent elsewhere keeps its bytes."""
    if not last or last.endswith(b"\n"):
        return
    from torchrun_cli.launch.streams import same_file  # measured: launch costs every command 17 ms

    if same_file(1, 2):
        raw(b"\n")
        raw(b"")


def raw(chunk: bytes) -> None:
    """Bytes of a log, as they are, to stdout (a closed reader ends the command: SIGPIPE)."""
    out = sys.stdout.buffer
    if chunk:
        out.write(chunk)
    else:
        out.flush()
