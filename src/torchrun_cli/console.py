"""What torchjob itself prints: plain lines off a terminal, colour (via rich) only on one.

rich is imported only when stderr/stdout is a terminal, so cron, CI and the hot path of
`torchjob run` never pay for it. rich honours NO_COLOR by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from torchrun_cli.record import Status

if TYPE_CHECKING:
    from torchrun_cli.envs.cache import CachedEnv
    from torchrun_cli.record import RunDir, RunRecord
    from torchrun_cli.source import Source
    from torchrun_cli.source.git import CachedRepo
    from torchrun_cli.store import Removed

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
    """Run id, interpreter and project, before the job's first line."""
    _emit(f"torchjob: run {rec.id}", style="bold")
    _emit(f"torchjob:   interpreter {rec.interpreter}", style="dim")
    where = rec.source.get("url") or rec.cwd
    _emit(f"torchjob:   project     {where}", style="dim")


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


def _outcome(rec: RunRecord) -> str:
    """`failed: killed by SIGSEGV`, `setup_error: <why>`; a plain exit status needs no words
    (the line shows it)."""
    status = rec.shown_status().value
    if rec.status is Status.FAILED and rec.signal:
        return f"failed: killed by {rec.signal}"
    if rec.error is None or rec.error.startswith("the script exited"):
        return status
    return f"{status}: {rec.error}"


def summary(rec: RunRecord, run_dir: Path) -> None:
    """Status, duration, exit status and the log folder: the line cron mails end with."""
    took = f"{rec.duration_s:.2f}s" if rec.duration_s is not None else "?"
    if rec.outputs:
        _emit(
            "torchjob:   outputs     "
            + " ".join(f"{k}={_cell(v)}" for k, v in rec.outputs.items()),
            style="dim",
        )
    _emit(
        f"torchjob: {_outcome(rec)} in {took} (exit {rec.exit_code}); logs: {run_dir}",
        style=f"bold {_STYLE.get(rec.shown_status().value, '')}",
    )


def setup_failure(run: RunDir) -> None:
    """Where to read what the tools printed."""
    if run.setup_log.exists():
        _emit(f"torchjob: the tools' output is in {run.setup_log}")


def cache_table(repos: Sequence[CachedRepo]) -> None:
    """`torchjob cache list` on stdout."""
    heads = ("KEY", "SIZE", "LAST USED", "URL")
    rows = [
        (
            r.key,
            f"{r.size_bytes / 1e6:.1f} MB",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.last_used)),
            r.url,
        )
        for r in repos
    ]
    widths = [max(len(x) for x in col) for col in zip(heads, *rows, strict=False)]
    for row in (heads, *rows):
        line = "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=False))
        sys.stdout.write(line.rstrip() + "\n")


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
    for label, value, origin in rows:
        src = f"  [{origin}]" if origin else ""
        sys.stdout.write(f"{label + ':' if label else '':<13} {value}{src}\n")
    sys.stdout.flush()


def progress(line: str) -> None:
    """While an environment builds: the step or the tool's current line, on a terminal only."""
    if _fancy(sys.stderr) and line.strip():
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns - 1
            sys.stderr.write("\r\x1b[K" + f"torchjob: building: {line.strip()}"[:width])
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def environment_line(env: dict[str, object]) -> None:
    """Which environment the job ran in, and whether it was built for this run."""
    how = "reused" if env.get("reused") else f"built in {env.get('build_seconds')}s"
    if _fancy(sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("\r\x1b[K")
    _emit(
        f"torchjob:   environment {env.get('manager')} {str(env.get('key'))[:16]} ({how})",
        style="dim",
    )


def env_table(envs: Sequence[CachedEnv]) -> None:
    """`torchjob env list` on stdout."""
    heads = ("KEY", "MANAGER", "PYTHON", "SIZE", "CREATED", "LAST USED", "PROJECTS")
    rows = [
        (
            e.key[:16] if e.ready else e.key[:16] + " (incomplete)",
            e.manager,
            e.python_version,
            f"{e.size_bytes / 1e6:.1f} MB",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)) if e.created else "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)),
            ", ".join(e.projects),
        )
        for e in envs
    ]
    widths = [max(len(x) for x in col) for col in zip(heads, *rows, strict=False)]
    for row in (heads, *rows):
        line = "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=False))
        sys.stdout.write(line.rstrip() + "\n")


def source_line(src: Source) -> None:
    """After a checkout: which commit, and whether the network was needed."""
    if src.kind == "git":
        how = "cached, no network" if src.cached else "fetched"
        _emit(
            f"torchjob:   commit      {src.commit} ({src.ref}; {how}; {src.seconds:.2f}s)",
            style="dim",
        )
    elif src.kind == "archive":
        _emit(f"torchjob:   extracted   {src.url}", style="dim")


def runs_table(records: Sequence[RunRecord], columns: Sequence[str] = ()) -> None:
    """The `torchjob runs` table on stdout; `columns` are output parameters to add."""
    rows = [
        (
            r.id,
            r.name,
            r.shown_status().value,
            "" if r.exit_code is None else str(r.exit_code),
            r.started_at[:19].replace("T", " "),
            "" if r.duration_s is None else f"{r.duration_s:.1f}s",
            *(_cell(r.outputs.get(c)) for c in columns),
        )
        for r in records
    ]
    heads = (
        "ID",
        "NAME",
        "STATUS",
        "EXIT",
        "STARTED (UTC)",
        "DURATION",
        *(c.upper() for c in columns),
    )
    if _fancy(sys.stdout):
        from rich.console import Console  # measured: 38 ms, on a terminal only
        from rich.table import Table

        table = Table(*heads, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row[:2], f"[{_STYLE.get(row[2], '')}]{row[2]}[/]", *row[3:])
        Console(highlight=False).print(table)
        return
    widths = [max(len(x) for x in col) for col in zip(heads, *rows, strict=False)]
    for row in (heads, *rows):
        line = "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=False))
        sys.stdout.write(line.rstrip() + "\n")


def _cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show_record(rec: RunRecord, run_dir: Path) -> None:
    """`torchjob show`: the record as aligned `key: value` lines."""
    data: dict[str, Any] = rec.shown()
    data["run_dir"] = str(run_dir)
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        sys.stdout.write(f"{key + ':':<17} {'' if value is None else value}\n")


def removals(done: Sequence[Removed]) -> None:
    """What a prune or rm removed (or kept, in use), and the space that came back."""
    freed = sum(r.size_bytes for r in done if r.removed)
    for r in done:
        word = "removed" if r.removed else "kept (in use)"
        sys.stdout.write(f"{word} {r.key[:16]} {r.what} ({_size(r.size_bytes)})\n")
    if freed:
        sys.stdout.write(f"freed {_size(freed)}\n")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def data(value: Any) -> None:
    """JSON for machines on stdout (`--json`)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def raw(chunk: bytes) -> None:
    """Bytes of a log, as they are, to stdout (a closed reader ends the command: SIGPIPE)."""
    out = sys.stdout.buffer
    if chunk:
        out.write(chunk)
    else:
        out.flush()
