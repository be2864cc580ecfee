"""A pipeline's folder and its record, pipeline.json: the DAG, each step's status, run id and
timings. The folder sits in the runs folder like a run's (its id has a run id's form, so the
history orders both alike) and holds the step runs' folders.

The record is written by the one process that schedules the steps, atomically, after every
change; a detached Slurm pipeline has no such process, so its steps' states are read from their
run records instead (see `refresh` in pipelines/).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torchrun_cli import __version__
from torchrun_cli.record import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    Listed,
    RunDir,
    RunRecord,
    Status,
    now_iso,
    process_start_ticks,
    read_record,
    running_and_owned,
    this_host,
)
from torchrun_cli.store import read_small, write_atomic

RECORD = "pipeline.json"
WAITING, SKIPPED = "waiting", "skipped"  # a step's states besides a run's statuses
DONE = frozenset({"succeeded", "failed", "cancelled", "timeout", "setup_error", SKIPPED, "lost"})


@dataclass(frozen=True)
class StepRecord:
    """One step as the pipeline saw it. `run_dir` is the latest attempt's run folder: one of
    this pipeline's, or an earlier pipeline's when the step was reused (`--resume`) or its
    outputs came from the step cache (`cached`)."""

    name: str
    needs: list[str]
    status: str = WAITING
    run_id: str | None = None
    run_dir: str | None = None
    exit_code: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    attempts: list[str] = field(default_factory=list)  # run ids, oldest first
    cached: bool = False
    reused_from: str | None = None  # the pipeline whose run was reused
    cache_key: str | None = None
    job_id: str | None = None  # a detached Slurm step's job
    error: str | None = None


@dataclass(frozen=True)
class PipelineRecord(Listed):
    """What pipeline.json holds; it lists in `runs` like a run (id, name, status, exit,
    started, duration)."""

    schema_version: int
    id: str
    name: str
    status: Status
    started_at: str
    spec_file: str
    max_parallel: int
    steps: dict[str, StepRecord]
    kind: str = "pipeline"
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    resumed_from: str | None = None
    detached: bool = False  # submitted to Slurm as a whole: no torchjob process follows it
    torchjob_version: str = __version__
    host: str = field(default_factory=this_host)
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None  # a sweep: its objective and each trial's params

    def is_live(self) -> bool:
        return running_and_owned(self.status, self.detached, self.host, self.pid, self.pid_start)

    def counted(self, sep: str = ", ") -> str:
        """The steps by state, as a line says them: `3 succeeded, 1 failed`."""
        return sep.join(f"{n} {state}" for state, n in self.counts().items())

    def counts(self) -> dict[str, int]:
        """How many steps stand in each state, in the order a reader wants them."""
        out: dict[str, int] = {}
        for step in self.steps.values():
            out[step.status] = out.get(step.status, 0) + 1
        return out

    def step(self, name: str, **changes: Any) -> PipelineRecord:
        """The record with one step changed."""
        return replace(self, steps={**self.steps, name: replace(self.steps[name], **changes)})


def is_pipeline_dir(path: Path) -> bool:
    return (path / RECORD).is_file()


def write(path: Path, record: PipelineRecord, durable: bool = True) -> None:
    """Atomically; `durable=False` skips the fsync (the scheduler's writes on the way: the last
    one is durable). Built from the fields by hand: asdict's deep copy was most of the cost."""
    data = {**vars(record), "steps": {n: vars(s) for n, s in record.steps.items()}}
    text = json.dumps(data, indent=1, ensure_ascii=True).encode() + b"\n"
    write_atomic(path / RECORD, text, sync=durable)


def read(path: Path) -> PipelineRecord:
    """Parse a pipeline.json; raises ValueError, TypeError or OSError when it is broken."""
    raw = json.loads(read_small(path / RECORD, MAX_RECORD_BYTES))
    if not isinstance(raw, dict) or raw.get("kind") != "pipeline":
        raise ValueError("not a pipeline record")
    known = PipelineRecord.__dataclass_fields__
    values = {k: v for k, v in raw.items() if k in known}
    values["status"] = Status(values.get("status"))
    step_fields = StepRecord.__dataclass_fields__
    values["steps"] = {
        name: StepRecord(**{k: v for k, v in step.items() if k in step_fields})
        for name, step in dict(values.get("steps") or {}).items()
    }
    return PipelineRecord(**values)


def new(
    path: Path, name: str, spec_file: Path, max_parallel: int, needs: dict[str, list[str]]
) -> PipelineRecord:
    return PipelineRecord(
        schema_version=SCHEMA_VERSION,
        id=path.name,
        name=name,
        status=Status.RUNNING,
        started_at=now_iso(),
        spec_file=str(spec_file),
        max_parallel=max_parallel,
        steps={n: StepRecord(n, list(ns)) for n, ns in needs.items()},
        pid_start=process_start_ticks(os.getpid()),
    )


def read_listed(path: Path) -> RunRecord | PipelineRecord:
    """A folder of the runs folder: a run's record, else a pipeline's."""
    try:
        return read_record(RunDir(path))
    except FileNotFoundError:
        return read(path)


def step_runs(pipe: PipelineRecord) -> list[RunDir]:
    """The run folder of each step that has one, in the pipeline's order."""
    return [RunDir(Path(s.run_dir)) for s in pipe.steps.values() if s.run_dir]
