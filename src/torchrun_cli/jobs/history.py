"""Past and running runs: find them, list them, bring a detached run's record up to date,
follow its logs, cancel it. Commands return data; the CLI renders it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from torchrun_cli import pipeline_record
from torchrun_cli.durations import parse_duration
from torchrun_cli.errors import UsageError
from torchrun_cli.jobs import STATUSES, SWEEP_PARTIAL
from torchrun_cli.pipeline_record import PipelineRecord
from torchrun_cli.record import (
    RunDir,
    RunRecord,
    Status,
    load_record,
    seconds_between,
    this_host,
    write_record,
)
from torchrun_cli.settings import Settings

if TYPE_CHECKING:
    from torchrun_cli.jobs.prune import Pruned
    from torchrun_cli.jobs.refs import AnyRecord, Found

LOST_EXIT = 1  # `logs -f` of a lost run: its real exit status was never recorded
SETUP_TAIL = 20  # lines of setup.log that `logs` shows for a run that failed in setup
_FOLLOW_POLL_S = 0.2  # polling a file for growth; not synchronisation
_BLOCK = 1 << 16


def find(settings: Settings, override: Path | None, ref: str) -> Found:
    """RUN: an id, a unique prefix or 4-hex suffix of one, a run name, `last` or `last~N`."""
    from torchrun_cli.jobs import refs  # measured: 1 ms that `torchjob run` does not pay

    return refs.resolve(settings.runs_dir(override), ref)


def complete(settings: Settings, override: Path | None, incomplete: str) -> list[tuple[str, str]]:
    """What a shell offers for RUN."""
    from torchrun_cli.jobs import refs  # as in find

    return refs.candidates(settings.runs_dir(override), incomplete)


def _check_status(status: str | None) -> None:
    """--status of runs and runs prune names one of the statuses (exit 2 otherwise)."""
    if status is not None and status not in STATUSES:
        raise UsageError(
            f"--status {status!r} is not a status", f"use one of {', '.join(STATUSES)}"
        )


def runs(
    settings: Settings,
    override: Path | None,
    name: str | None = None,
    status: str | None = None,
    limit: int = 0,
    sort: str | None = None,
) -> list[AnyRecord]:
    """Records (runs' and pipelines') newest first, filtered by name and shown status (`lost`
    included)."""
    _check_status(status)
    from torchrun_cli.jobs import refs  # as in find

    root = settings.runs_dir(override)
    seen = refs.newest(
        root,
        limit,
        lambda r: (
            (name is None or r.name == name)
            and (status is None or r.shown_status().value == status)
        ),
        name=name,
        status=status,
        by=sort,
    )
    return [s.record for s in seen]


def pruned(
    settings: Settings,
    override: Path | None,
    keep: int | None,
    older_than: str | None,
    status: str | None,
    name: str | None,
    dry_run: bool,
) -> list[Pruned]:
    """`runs prune`: the policy from the flags, applied to the runs folder."""
    from torchrun_cli.jobs.prune import Policy, prune  # measured: prune alone needs it

    _check_status(status)
    try:
        age = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise UsageError(f"--older-than {older_than}: {exc}", "write e.g. 30d, 12h, 90m") from None
    policy = Policy(keep, age, status, name)
    return prune(settings.runs_dir(override), policy, dry_run)


def reindex(settings: Settings, override: Path | None) -> tuple[int, float]:
    """`runs --reindex`: the index rebuilt from the run folders; (rows, seconds)."""
    from torchrun_cli.jobs import index  # as in find

    started = time.monotonic()
    root = settings.runs_dir(override)
    try:
        return index.rebuild(root), time.monotonic() - started
    except index.Unusable as exc:
        raise UsageError(f"cannot index {root}: {exc}", "check the runs folder") from None


def pipeline(run: RunDir) -> PipelineRecord | None:
    """The pipeline whose folder RUN named, or None for a run."""
    if not pipeline_record.is_pipeline_dir(run.path):
        return None
    try:
        pipe = pipeline_record.read(run.path)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"pipeline {run.id} has no readable pipeline.json ({exc})") from None
    return _refresh_detached(pipe, run) if pipe.detached and pipe.status is Status.RUNNING else pipe


def _refresh_detached(pipe: PipelineRecord, folder: RunDir) -> PipelineRecord:
    """A pipeline Slurm runs: each running step's state from its run (and Slurm); once none
    runs, the pipeline's end (the first step that failed gives its exit status), written."""
    for name, step in pipe.steps.items():
        if step.status != "running" or not step.run_dir:
            continue
        rec = refresh(RunDir(Path(step.run_dir)))
        if rec.status is not Status.RUNNING:
            pipe = pipe.step(
                name,
                status=rec.status.value,
                exit_code=rec.exit_code,
                error=rec.error,
                ended_at=rec.ended_at,
                duration_s=rec.duration_s,
            )
    if any(s.status == "running" for s in pipe.steps.values()):
        return pipe
    bad = sorted(
        (s for s in pipe.steps.values() if s.status not in ("succeeded", "skipped")),
        key=lambda s: s.ended_at or "",
    )
    failed = [s for s in bad if s.status != "cancelled"] or bad
    code = (failed[0].exit_code or 1) if failed else 0
    if (
        failed
        and pipe.sweep is not None
        and any(s.status == "succeeded" for s in pipe.steps.values())
    ):
        code = SWEEP_PARTIAL  # as a sweep that torchjob followed ends (README: Exit status)
    ended = max((s.ended_at or "" for s in pipe.steps.values()), default="") or None
    pipe = replace(
        pipe,
        status=Status.FAILED if failed else Status.SUCCEEDED,
        exit_code=code,
        ended_at=ended,
        duration_s=seconds_between(pipe.started_at, ended),
    )
    pipeline_record.write(folder.path, pipe)
    return pipe


def step_runs(settings: Settings, override: Path | None, ref: str) -> list[RunRecord]:
    """`runs --pipeline ID`: the run of each step that has one, in the pipeline's order."""
    found = find(settings, override, ref).run
    pipe = pipeline(found)
    if pipe is None:
        raise UsageError(f"{ref} is a run, not a pipeline", "give a pipeline's id or name")
    out = []
    for run in pipeline_record.step_runs(pipe):
        try:
            out.append(refresh(run))
        except UsageError:
            continue
    return out


def follow_pipeline(
    folder: RunDir, which: str, keep_following: bool, tail: int | None
) -> Iterator[bytes]:
    """Each step's log after a `==> STEP (run ID) <==` line (on a line of its own), in the order
    the steps started; with keep_following, each step's until it ends, until the pipeline has."""
    shown: set[str] = set()
    last = b"\n"
    pipe = pipeline_record.read(folder.path)
    while True:
        started = sorted(
            (s.started_at or "", name, RunDir(Path(s.run_dir)))
            for name, s in pipe.steps.items()
            if s.run_dir and name not in shown
        )
        for _, name, run in started:
            yield (b"" if last.endswith(b"\n") else b"\n") + f"==> {name} ({run.id}) <==\n".encode()
            for chunk in follow(run, which, keep_following, tail):
                yield chunk
                last = chunk or last
            shown.add(name)
        if not keep_following or not pipe.is_live():
            return
        time.sleep(_FOLLOW_POLL_S)  # polled, as the logs are
        pipe = pipeline_record.read(folder.path)


def pipeline_outcome(pipe: PipelineRecord) -> str:
    """`failed (exit 3): 1 succeeded, 1 failed`."""
    return f"{pipe.shown_status().value} (exit {pipe.exit_code}): {pipe.counted()}"


def cancel_pipeline(pipe: PipelineRecord) -> str:
    """Stop a pipeline as Ctrl-C would: SIGTERM to the torchjob that schedules it (only on its
    own host, and only that very process); it stops every running step. A pipeline Slurm runs:
    scancel each of its jobs not ended."""
    if not pipe.is_live():
        raise UsageError(
            f"pipeline {pipe.id} is not running (it is {pipe.shown_status()})", "nothing to cancel"
        )
    if pipe.detached:
        said = [
            cancel(RunDir(Path(s.run_dir)))
            for s in pipe.steps.values()
            if s.status == "running" and s.run_dir
        ]
        return "; ".join(said) or f"pipeline {pipe.id}: no step is running"
    if pipe.host != this_host():
        raise UsageError(
            f"pipeline {pipe.id} runs on {pipe.host}", f"cancel it there: torchjob cancel {pipe.id}"
        )
    os.kill(pipe.pid, signal.SIGTERM)
    return f"stopping pipeline {pipe.id} (SIGTERM to torchjob pid {pipe.pid})"


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
    final = replace(rec, outputs=conventions.final_outputs(run, output_dir, rec.spec)).finish(end)
    write_record(run, final)
    return final


def live_outputs(rec: RunRecord, run: RunDir) -> dict[str, Any] | None:
    """A running run's output parameters as its files hold them now (None once it ended: the
    record has them)."""
    if rec.status is not Status.RUNNING:
        return None
    from torchrun_cli.launch import conventions  # measured: 12 ms that `show` of an ended run skips

    return conventions.read_outputs(Path(rec.output_dir) if rec.output_dir else run.output)


def selection(
    settings: Settings, override: Path | None, refs: list[str], limit: int
) -> list[tuple[RunRecord, RunDir]]:
    """The runs `compare`, `diff` and `plot` look at: each RUN's, a pipeline's steps' runs,
    and for a single run name its newest `limit` runs."""
    from torchrun_cli.jobs import refs as lookup  # as in find

    root = settings.runs_dir(override)
    if len(refs) == 1:
        named = lookup.newest(
            root, limit, lambda r: isinstance(r, RunRecord) and r.name == refs[0], name=refs[0]
        )
        if len(named) > 1:
            return [(s.record, s.run) for s in named if isinstance(s.record, RunRecord)]
    out: list[tuple[RunRecord, RunDir]] = []
    for ref in refs:
        found = find(settings, override, ref).run
        if (pipe := pipeline(found)) is not None:
            out += [(refresh(run), run) for run in pipeline_record.step_runs(pipe)]
        else:
            out.append((refresh(found), found))
    return out


def series_of(chosen: list[tuple[RunRecord, RunDir]]) -> list[dict[str, list[tuple[int, float]]]]:
    """Each run's metric series, read now from its folder."""
    from torchrun_cli.launch import metrics  # as in metric_summaries

    return [metrics.series(run, rec.spec.get("metrics")) for rec, run in chosen]


def metric_summaries(rec: RunRecord, run: RunDir) -> dict[str, Any]:
    """Each metric's last, least and greatest value (read now: a running job's so far)."""
    from torchrun_cli.launch import metrics  # measured: only show, compare and plot read series

    return dict(metrics.summaries(metrics.series(run, rec.spec.get("metrics"))))


def follow(
    run: RunDir, which: str, keep_following: bool, tail: int | None = None
) -> Iterator[bytes]:
    """A log's bytes (its last `tail` lines) as they come; with keep_following, until the
    run has ended."""
    path = {"stderr": run.stderr_log, "setup": run.setup_log}.get(which, run.stdout_log)
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        why = (
            "it ran no setup tools" if which == "setup" else "it may have failed before it started"
        )
        raise UsageError(f"run {run.id} has no {path.name}", why) from exc
    with fh:
        if tail is not None:
            fh.seek(_tail_offset(fh, tail))
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


def _tail_offset(fh: BinaryIO, lines: int) -> int:
    """Where the last `lines` lines of an open file start (a last line without a newline is
    a line, as for `tail -n`)."""
    end = fh.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    pos, seen = end, 0
    fh.seek(max(0, end - 1))
    if fh.read(1) == b"\n":
        pos -= 1  # the file's last newline ends the last line; it starts none
    while pos > 0:
        start = max(0, pos - _BLOCK)
        fh.seek(start)
        block = fh.read(pos - start)
        at = len(block)
        while (at := block.rfind(b"\n", 0, at)) != -1:
            seen += 1
            if seen == lines:
                return start + at + 1
        pos = start
    return 0


def setup_tail(rec: RunRecord, run: RunDir, lines: int | None) -> tuple[str, bytes] | None:
    """For a run that failed in setup (its stdout.log is then empty): a note saying so, and the
    last lines of setup.log, where the tools' output went."""
    if rec.status is not Status.SETUP_ERROR:
        return None
    why = f"run {rec.id} failed in setup" + (f" ({rec.phase}): {rec.error}" if rec.error else "")
    lines = SETUP_TAIL if lines is None else lines
    try:
        with run.setup_log.open("rb") as fh:
            fh.seek(_tail_offset(fh, lines))
            data = fh.read()
    except FileNotFoundError:
        return f"{why}; it has no setup.log", b""
    return (
        f"{why}; the last {lines} lines of setup.log follow "
        f"(all of it: torchjob logs {rec.id} --setup)",
        data,
    )


def exit_status(rec: RunRecord) -> int:
    """What `logs -f` exits with: the run's own status; LOST_EXIT for a lost run."""
    if rec.shown_status() is Status.LOST or rec.exit_code is None:
        return LOST_EXIT
    return rec.exit_code


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
