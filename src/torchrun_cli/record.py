"""The run folder and its record: unique ids, atomic run.json writes, listing and lookup."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torchrun_cli import __version__
from torchrun_cli.errors import UsageError
from torchrun_cli.store import write_atomic

SCHEMA_VERSION = 1
RECORD = "run.json"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
STATUSES = ("running", "succeeded", "failed", "cancelled", "timeout", "setup_error")


def now_iso() -> str:
    """UTC timestamp with milliseconds, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks: with the pid, it tells a live run from reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class RunRecord:
    """What run.json holds; `schema_version` comes first in the file."""

    schema_version: int
    id: str
    name: str
    status: str
    started_at: str
    argv: list[str]
    cwd: str
    interpreter: str
    source: dict[str, Any]
    environment: dict[str, Any]
    params: dict[str, Any]
    spec: dict[str, Any]
    exit_code: int | None = None
    signal: str | None = None
    phase: str | None = None
    error: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    torchjob_version: str = __version__
    host: str = field(default_factory=lambda: os.uname().nodename)
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    model_dir: str | None = None
    output_dir: str | None = None
    resume_from: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    distributed: dict[str, Any] | None = None
    backend: dict[str, Any] | None = None

    def finish(self, **changes: Any) -> RunRecord:
        """A copy with the end fields set."""
        return replace(self, **changes)

    def is_live(self) -> bool:
        """True while the torchjob process that owns this running record is still alive, or,
        for a detached Slurm job, until a refresh finds it ended."""
        if self.status != "running":
            return False
        if self.backend and self.backend.get("detached"):
            return True
        if self.host != os.uname().nodename:
            return True  # cannot tell from here; trust the record
        return process_start_ticks(self.pid) == self.pid_start

    def shown_status(self) -> str:
        """`lost` for a record left `running` by a torchjob that died (kill -9, power loss)."""
        return "lost" if self.status == "running" and not self.is_live() else self.status


def slug(name: str) -> str:
    """A name safe for a folder: letters, digits, '.', '_', '-'; at most 40 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "job"


def create_run_dir(runs_dir: Path, name: str) -> tuple[str, Path]:
    """Make a new run folder; mkdir is atomic, so concurrent runs never share one."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(f"cannot use {runs_dir} as the runs folder: {exc.strerror}",
                         "give --runs-dir a folder you can write") from None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for _ in range(1000):
        run_id = f"{stamp}-{slug(name)}-{os.urandom(2).hex()}"
        path = runs_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot create a run folder in {runs_dir}: {exc.strerror}",
                             "give --runs-dir a folder you can write") from None
        return run_id, path
    raise OSError(f"could not create a unique run folder in {runs_dir}")


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Atomic write: readers see the old or the new record, whole."""
    # ASCII with escapes: paths that are not valid UTF-8 still make valid JSON.
    data = json.dumps(asdict(record), indent=2, ensure_ascii=True).encode() + b"\n"
    write_atomic(run_dir / RECORD, data)


def read_record(run_dir: Path) -> RunRecord:
    """Parse one run.json; raises ValueError or OSError on a broken or missing record."""
    raw = json.loads((run_dir / RECORD).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("run.json is not an object")
    known = {f for f in RunRecord.__dataclass_fields__}
    return RunRecord(**{k: v for k, v in raw.items() if k in known})


def load_record(run_dir: Path) -> RunRecord:
    """read_record for commands: a missing or broken record is a clear error (exit 2)."""
    try:
        return read_record(run_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"run {run_dir.name} has no readable run.json ({exc})",
                         "it may be from a torchjob that was killed while starting") from None


def iter_records(runs_dir: Path) -> Iterator[RunRecord]:
    """Every readable record under runs_dir, in no particular order."""
    try:
        entries = list(os.scandir(runs_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            try:
                yield read_record(Path(entry.path))
            except (OSError, ValueError, TypeError):
                continue


def list_records(runs_dir: Path) -> list[RunRecord]:
    """Newest first."""
    return sorted(iter_records(runs_dir), key=lambda r: (r.started_at, r.id), reverse=True)


def find_run(runs_dir: Path, ref: str) -> Path:
    """The folder of RUN: an id, a unique prefix of one, or `last`."""
    if ref == "last":
        records = list_records(runs_dir)
        if not records:
            raise UsageError(f"no runs yet in {runs_dir}", "start one with `torchjob run`")
        return runs_dir / records[0].id
    if "/" in ref or ref in ("", ".", ".."):
        raise UsageError(f"{ref!r} is not a run id", "give an id from `torchjob runs`, or `last`")
    if (runs_dir / ref / RECORD).is_file():
        return runs_dir / ref
    try:
        names = sorted(n for n in os.listdir(runs_dir) if n.startswith(ref))
    except FileNotFoundError:
        names = []
    if len(names) == 1:
        return runs_dir / names[0]
    if not names:
        raise UsageError(f"no run matches {ref!r} in {runs_dir}", "list runs with `torchjob runs`")
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise UsageError(f"{ref!r} matches {len(names)} runs: {shown}", "give more of the id")
