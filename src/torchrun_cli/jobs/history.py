"""Past and running runs: find them, list them, bring a detached run's record up to date,
follow its logs, cancel it. Commands return data; the CLI renders it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from torchrun_cli.errors import UsageError
from torchrun_cli.record import (
    RunDir,
    RunRecord,
    Status,
    find_run,
    list_records,
    load_record,
    write_record,
)
from torchrun_cli.settings import Settings

STATUSES = tuple(s.value for s in Status)
_FOLLOW_POLL_S = 0.2  # polling a file for growth; not synchronisation


def runs_dir(settings: Settings, override: Path | None) -> Path:
    return settings.runs_dir(override)


def find(settings: Settings, override: Path | None, ref: str) -> RunDir:
    """RUN: an id, a unique prefix of one, or `last`."""
    return find_run(runs_dir(settings, override), ref)


def runs(
    settings: Settings,
    override: Path | None,
    name: str | None = None,
    status: str | None = None,
    limit: int = 0,
) -> list[RunRecord]:
    """Records newest first, filtered by name and shown status (`lost` included)."""
    if status is not None and status not in STATUSES:
        raise UsageError(
            f"--status {status!r} is not a status", f"use one of {', '.join(STATUSES)}"
        )
    found = [
        r
        for r in list_records(runs_dir(settings, override))
        if (name is None or r.name == name) and (status is None or r.shown_status().value == status)
    ]
    return found[:limit] if limit else found


def refresh(run: RunDir) -> RunRecord:
    """A run's record; a detached run's, brought up to date (written once the job ended)."""
    rec = load_record(run)
    if rec.status is not Status.RUNNING or not rec.detached:
        return rec
    from torchrun_cli.launch import backend_of, conventions  # measured: `runs` stays light

    end = backend_of(rec.backend).conclude(rec, run)
    if end is None:
        return rec
    output_dir = Path(rec.output_dir) if rec.output_dir else run.output
    final = replace(rec, outputs=conventions.read_outputs(output_dir)).finish(end)
    write_record(run, final)
    return final


def follow(run: RunDir, stderr: bool, keep_following: bool) -> Iterator[bytes]:
    """The log's bytes as they come; with keep_following, until the run has ended."""
    path = run.stderr_log if stderr else run.stdout_log
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise UsageError(f"no log at {path}", "the run may have failed before it started") from exc
    with fh:
        while True:
            chunk = fh.read(1 << 20)
            if chunk:
                yield chunk
                continue
            if not keep_following or not refresh(run).is_live():
                if keep_following:  # the run may have written its last bytes just now
                    yield fh.read()
                return
            yield b""  # a flush point for the caller
            time.sleep(_FOLLOW_POLL_S)


def cancel(run: RunDir) -> str:
    """Stop a run: scancel a Slurm job, or SIGTERM the torchjob that supervises a local one
    (only on its own host, and only that very process)."""
    rec = refresh(run)
    if rec.status is not Status.RUNNING:
        raise UsageError(
            f"run {rec.id} is not running (it is {rec.shown_status()})", "nothing to cancel"
        )
    from torchrun_cli.launch import backend_of  # as in refresh

    return backend_of(rec.backend).cancel(rec, run)
