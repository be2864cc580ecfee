"""A run's folder and its record: every name in the folder, how a run ended (Status, End), the
record itself (run.json, written atomically), and the history of runs (listing; RUN's lookup
is jobs/refs.py)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli import __version__
from torchrun_cli.errors import UsageError
from torchrun_cli.store import read_small, write_atomic

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 64 << 20


class Status(str, Enum):
    """How a run stands; `lost` is never written: it is how a `running` record whose torchjob
    died is shown."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    SETUP_ERROR = "setup_error"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


class End(NamedTuple):
    """How a run ended: what run.json records and the exit status torchjob gives."""

    status: Status
    exit_code: int
    signal: str | None = None
    phase: str | None = None  # where a setup error or a launch failure happened
    error: str | None = None


class RunDir(NamedTuple):
    """Every file and folder name of a run folder, in one place."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    @property
    def stdout_log(self) -> Path:
        """The whole console log: both streams in arrival order."""
        return self.path / "stdout.log"

    @property
    def stderr_log(self) -> Path:
        return self.path / "stderr.log"

    @property
    def setup_log(self) -> Path:
        """What git, pip, uv, virtualenv, conda and sbatch printed."""
        return self.path / "setup.log"

    @property
    def tree(self) -> Path:
        """The project's files for git and archive sources (and copied local ones)."""
        return self.path / "src"

    @property
    def git_index(self) -> Path:
        return self.path / ".git-index"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def config(self) -> Path:
        """compat pai: hyperparameters.json, where PAI_CONFIG_DIR points."""
        return self.path / "config"

    @property
    def ranks(self) -> Path:
        """torchrun's per-rank logs."""
        return self.path / "ranks"

    @property
    def sbatch(self) -> Path:
        """The Slurm batch script."""
        return self.path / "job.sbatch"

    @property
    def slurm_exit(self) -> Path:
        """The exit status the batch script leaves (Slurm forgets finished jobs)."""
        return self.path / "slurm-exit-code"

    @property
    def slurm_stdout(self) -> Path:
        """The job's stdout alone, for the console copy of a followed Slurm job."""
        return self.path / "slurm-stdout"


def value_text(value: object) -> str:
    """An output's (or a parameter's) value as every view shows it: nothing for None, a float
    to 4 significant digits."""
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def now_iso() -> str:
    """UTC timestamp with milliseconds, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def seconds_between(start: str | None, end: str | None) -> float | None:
    """The seconds from one record timestamp to another (None when one is missing)."""
    if start is None or end is None:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks: with the pid, it tells a live run from reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def this_host() -> str:
    return os.uname().nodename


class Listed:
    """What a run's and a pipeline's records share: a `running` one whose torchjob died shows
    as `lost`."""

    status: Status

    def is_live(self) -> bool:
        raise NotImplementedError

    def shown_status(self) -> Status:
        """`lost` for a record left `running` by a torchjob that died (kill -9, power loss)."""
        if self.status is Status.RUNNING and not self.is_live():
            return Status.LOST
        return self.status

    def shown(self) -> dict[str, Any]:
        """The record as `runs --json` and `show --json` print it: the status as shown."""
        return {**asdict(self), "status": self.shown_status().value}  # type: ignore[call-overload]


@dataclass(frozen=True)
class RunRecord(Listed):
    """What run.json holds; `schema_version` comes first in the file."""

    schema_version: int
    id: str
    name: str
    status: Status
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
    host: str = field(default_factory=this_host)
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    model_dir: str | None = None
    output_dir: str | None = None
    resume_from: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    distributed: dict[str, Any] | None = None
    backend: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None  # a step's run: the pipeline's id, the step, attempt
    attempts: list[dict[str, Any]] = field(default_factory=list)  # with retries: each attempt

    def finish(self, end: End, duration_s: float | None = None) -> RunRecord:
        """The record of a run that ended this way, now."""
        return replace(
            self,
            status=end.status,
            exit_code=end.exit_code,
            signal=end.signal,
            phase=end.phase,
            error=end.error,
            ended_at=now_iso(),
            duration_s=duration_s if duration_s is not None else self.duration_s,
        )

    @property
    def detached(self) -> bool:
        """A Slurm job torchjob returned from: only a refresh can find its end."""
        return bool(self.backend and self.backend.get("detached"))

    def is_live(self) -> bool:
        return running_and_owned(self.status, self.detached, self.host, self.pid, self.pid_start)

    def owned_by_a_live_process(self) -> bool:
        """This host's process `pid`, started when the record says: not a reused pid."""
        return owner_alive(self.host, self.pid, self.pid_start)


def owner_alive(host: str, pid: int, pid_start: int | None) -> bool:
    """This host's process `pid`, started when the record says: not a reused pid."""
    return host == this_host() and pid_start is not None and process_start_ticks(pid) == pid_start


def running_and_owned(
    status: Status, detached: bool, host: str, pid: int, pid_start: int | None
) -> bool:
    """A run's or a pipeline's record: True while the torchjob that owns it (running) is alive;
    a detached Slurm job, or a record of another host, until a refresh finds it ended."""
    if status is not Status.RUNNING:
        return False
    if detached or host != this_host():
        return True  # cannot tell from here; trust the record
    return owner_alive(host, pid, pid_start)


def slug(name: str) -> str:
    """A name safe for a folder: letters, digits, '.', '_', '-'; at most 40 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "job"


def create_run_dir(runs_dir: Path, name: str) -> RunDir:
    """Make a new run folder; mkdir is atomic, so concurrent runs never share one."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(
            f"cannot use {runs_dir} as the runs folder: {exc.strerror}",
            "give --runs-dir a folder you can write",
        ) from None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for _ in range(1000):
        path = runs_dir / f"{stamp}-{slug(name)}-{os.urandom(2).hex()}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(
                f"cannot create a run folder in {runs_dir}: {exc.strerror}",
                "give --runs-dir a folder you can write",
            ) from None
        return RunDir(path)
    raise UsageError(
        f"could not create a unique run folder in {runs_dir}",
        "remove old runs, or give another --runs-dir",
    )


def write_record(run: RunDir, record: RunRecord) -> None:
    """Atomic write: readers see the old or the new record, whole."""
    # ASCII with escapes: paths that are not valid UTF-8 still make valid JSON.
    data = json.dumps(asdict(record), indent=2, ensure_ascii=True).encode() + b"\n"
    write_atomic(run.record, data)


_FIELDS = frozenset(RunRecord.__dataclass_fields__)


def read_record(run: RunDir) -> RunRecord:
    """Parse one run.json; raises ValueError or OSError on a broken or missing record."""
    raw = json.loads(read_small(run.record, MAX_RECORD_BYTES))  # a FIFO is refused, not waited on
    if not isinstance(raw, dict):
        raise ValueError("run.json is not an object")
    values = {k: v for k, v in raw.items() if k in _FIELDS}
    values["status"] = Status(values.get("status"))
    return RunRecord(**values)


def load_record(run: RunDir) -> RunRecord:
    """read_record for commands: a missing or broken record is a clear error (exit 2)."""
    try:
        return read_record(run)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(
            f"run {run.id} has no readable run.json ({exc})",
            "it may be from a torchjob that was killed while starting",
        ) from None


def iter_records(runs_dir: Path) -> Iterator[RunRecord]:
    """Every readable record under runs_dir, in no particular order."""
    try:
        entries = list(os.scandir(runs_dir))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            try:
                yield read_record(RunDir(Path(entry.path)))
            except (OSError, ValueError, TypeError):
                continue


def list_records(runs_dir: Path) -> list[RunRecord]:
    """Newest first."""
    return sorted(iter_records(runs_dir), key=lambda r: (r.started_at, r.id), reverse=True)
