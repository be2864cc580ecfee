"""What `runs`, `show`, `env list`, `cache list` and the prunes show, as rows of text for the
console: times in local time under one zone named in the header, human durations and sizes,
and a run's facts in the order a reader looks for them."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from torchrun_cli.pipeline_record import PipelineRecord, StepRecord
from torchrun_cli.record import RunDir, RunRecord, Status, value_text
from torchrun_cli.steps import plural

if TYPE_CHECKING:
    from torchrun_cli.envs.cache import CachedEnv
    from torchrun_cli.jobs.prune import Pruned
    from torchrun_cli.source.git import CachedRepo
    from torchrun_cli.store import Removed


Row = tuple[str, str]  # label, value


class Table(NamedTuple):
    """Columns and rows, and how to fit them to a narrow terminal: the columns in `shrink` are
    cut first (to their header's width, at least 8), then those in `drop` go, in that order.
    Every other column is shown whole: a run id is never cut. `status` colours one column."""

    heads: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    shrink: tuple[int, ...] = ()
    drop: tuple[int, ...] = ()
    status: int | None = None


def epoch(iso: str | None) -> float | None:
    """A record's timestamp (ISO 8601, UTC) as seconds since the epoch."""
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def local(ts: float | None, seconds: bool = False) -> str:
    """Local time, to the minute in tables (the run id has the second, in UTC)."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(ts))


def zone(stamps: Iterable[float | None]) -> str:
    """The local zone's name for these times (`CET`, or `CET/CEST` across a change)."""
    names = dict.fromkeys(time.strftime("%Z", time.localtime(t)) for t in stamps if t is not None)
    return "/".join(names) or time.strftime("%Z")


def took(seconds: float | None) -> str:
    """0.04s, 12.3s, 2m05s, 1h02m, 3d04h."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def cell(value: object) -> str:
    """A parameter's or an output's value as a spec writes it."""
    return str(value).lower() if isinstance(value, bool) else value_text(value)


def _elapsed(rec: RunRecord | PipelineRecord) -> float | None:
    """The duration of an ended run; for a running one, the time since it started."""
    if rec.status is not Status.RUNNING:
        return rec.duration_s
    start = epoch(rec.started_at)
    return None if start is None else max(0.0, time.time() - start)


def runs(records: Sequence[RunRecord | PipelineRecord], columns: Sequence[str] = ()) -> Table:
    """`torchjob runs`: on a narrow terminal NAME is cut, then dropped (the id holds its
    slug), then DURATION, EXIT and STARTED; the id, STATUS and the output columns asked for
    stay whole. A pipeline is one row; STEPS (shown when one is listed) counts its steps'
    states."""
    starts = [epoch(r.started_at) for r in records]
    piped = any(isinstance(r, PipelineRecord) for r in records)
    rows = [
        (
            r.id,
            r.name,
            r.shown_status().value,
            "" if r.exit_code is None else str(r.exit_code),
            local(start),
            took(_elapsed(r)) if r.shown_status() is not Status.LOST else "",
            *([steps(r)] if piped else []),
            *(cell(r.outputs.get(c)) for c in columns),
        )
        for r, start in zip(records, starts, strict=True)
    ]
    heads: tuple[str, ...] = ("ID", "NAME", "STATUS", "EXIT", f"STARTED ({zone(starts)})")
    heads += ("DURATION", *("STEPS",) * piped)
    shrink = (1, 6) if piped else (1,)
    return Table((*heads, *(c.upper() for c in columns)), rows, shrink, (1, 5, 3, 4), 2)


def steps(rec: RunRecord | PipelineRecord) -> str:
    """A pipeline's steps by state: `3 succeeded, 1 failed`; "" for a run."""
    if not isinstance(rec, PipelineRecord):
        return ""
    return rec.counted()


def pipeline(rec: PipelineRecord, folder: Path) -> tuple[list[Row], Table]:
    """`torchjob show PIPELINE`: what it is and how it stands, then a row per step."""
    start, end = epoch(rec.started_at), epoch(rec.ended_at)
    label = zone([start, end])
    status = rec.shown_status()
    rows: list[Row] = [("pipeline", rec.id), ("name", rec.name), ("status", status.value)]
    rows += _times(rec, status, start, end, label)
    rows += [("steps", steps(rec)), ("spec", rec.spec_file), ("folder", str(folder))]
    if rec.resumed_from:
        rows.append(("resumed from", rec.resumed_from))
    table = [
        (
            name,
            step.status,
            "" if step.exit_code is None else str(step.exit_code),
            took(step.duration_s),
            step.run_id or "",
            _step_note(step),
        )
        for name, step in rec.steps.items()
    ]
    heads = ("STEP", "STATUS", "EXIT", "DURATION", "RUN", "NOTE")
    return rows, Table(heads, table, (5,), (5, 3), 1)


def _step_note(step: StepRecord) -> str:
    if step.cached:
        return "cached"
    if step.reused_from:
        return f"reused from {step.reused_from}"
    if len(step.attempts) > 1:
        return f"attempt {len(step.attempts)}"
    return step.error or ""


def envs(found: Sequence[CachedEnv]) -> Table:
    """`torchjob env list`: PROJECTS is cut, then dropped, then CREATED."""
    label = zone([e.created or None for e in found] + [e.last_used for e in found])
    rows = [
        (
            e.key[:16] if e.ready else e.key[:16] + " (incomplete)",
            e.manager,
            e.python_version,
            size(e.size_bytes),
            local(e.created or None),
            local(e.last_used),
            ", ".join(e.projects),
        )
        for e in found
    ]
    heads = ("KEY", "MANAGER", "PYTHON", "SIZE", f"CREATED ({label})", f"LAST USED ({label})")
    return Table((*heads, "PROJECTS"), rows, (6,), (6, 4))


def mirrors(repos: Sequence[CachedRepo]) -> Table:
    """`torchjob cache list`."""
    label = zone(r.last_used for r in repos)
    rows = [(r.key, size(r.size_bytes), local(r.last_used), r.url) for r in repos]
    return Table(("KEY", "SIZE", f"LAST USED ({label})", "URL"), rows)


def pruned(done: Sequence[Pruned], dry_run: bool) -> list[str]:
    """A line per run a prune removed (or would), and the space that came (or would come)
    back."""
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {p.id} ({p.name}, {p.status}, {size(p.size_bytes)})" for p in done]
    if done:
        total = size(sum(p.size_bytes for p in done))
        verb = "would free" if dry_run else "freed"
        lines.append(f"{verb} {total} ({len(done)} {plural(len(done), 'run')})")
    return lines


def removed(done: Sequence[Removed]) -> list[str]:
    """A line per entry a prune or rm dealt with, and the space that came back."""
    lines = [
        f"removed {r.key[:16]} {r.what} ({size(r.size_bytes)})"
        if r.removed
        else f"kept (in use) {r.key[:16]} {r.what}: a running job holds it"
        for r in done
    ]
    gone = [r for r in done if r.removed]
    if gone:
        freed = size(sum(r.size_bytes for r in gone))
        lines.append(f"freed {freed} ({len(gone)} removed, {len(done) - len(gone)} kept)")
    return lines


def describe(
    rec: RunRecord,
    run: RunDir,
    outputs: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> list[Row]:
    """`torchjob show`: what a run is, how it stands, where its files are. `outputs` are read
    now for a running run."""
    status = rec.shown_status()
    start, end = epoch(rec.started_at), epoch(rec.ended_at)
    label = zone([start, end])
    rows: list[Row] = [("run", rec.id), ("name", rec.name)]
    rows.append(("status", status.value + (f" (killed by {rec.signal})" if rec.signal else "")))
    rows += _times(rec, status, start, end, label)
    if status is Status.LOST:
        rows.append(("error", _lost(rec)))
    elif rec.error and not rec.error.startswith("the script exited"):
        rows.append(("error", f"{rec.phase}: {rec.error}" if rec.phase else rec.error))
    rows += _source(rec.source)
    rows += [("script", str(rec.spec.get("script", ""))), ("command", shlex.join(rec.argv))]
    rows += _environment(rec.environment, rec.interpreter)
    rows.append(("params", _pairs(rec.params)))
    live = outputs is not None
    rows.append(
        ("outputs", _pairs(rec.outputs if outputs is None else outputs) + " (read now)" * live)
    )
    for key, m in (metrics or {}).items():  # a Summary: last, low, high, points
        rows.append(
            (
                f"metric {key}",
                f"last {cell(m.last)}, min {cell(m.low)}, max {cell(m.high)} "
                f"({m.points} {plural(m.points, 'point')})",
            )
        )
    rows += _extra(rec)
    logs = [p.name for p in (run.stdout_log, run.stderr_log, run.setup_log) if p.exists()]
    rows += [("run folder", str(run.path)), ("logs", ", ".join(logs) or "none")]
    rows += [("model", rec.model_dir or ""), ("output", rec.output_dir or "")]
    return [(k, v) for k, v in rows if v]


def _times(
    rec: RunRecord | PipelineRecord,
    status: Status,
    start: float | None,
    end: float | None,
    label: str,
) -> list[Row]:
    """exit, started, then ended and duration (or the time so far, while it runs)."""
    rows: list[Row] = [("exit", str(rec.exit_code))] if rec.exit_code is not None else []
    rows.append(("started", f"{local(start, True)} {label}"))
    if status is Status.RUNNING:
        rows.append(("elapsed", f"{took(_elapsed(rec))} (still running)"))
    elif end is not None:
        rows += [("ended", f"{local(end, True)} {label}"), ("duration", took(rec.duration_s))]
    return rows


def _lost(rec: RunRecord) -> str:
    return (
        f"the torchjob that ran it (pid {rec.pid} on {rec.host}) is gone: killed, or the "
        "machine restarted; how the job ended was never recorded"
    )


def _source(src: dict[str, Any]) -> list[Row]:
    kind = src.get("kind") or "local"
    where = src.get("url") or src.get("path") or ""
    if src.get("subdirectory") and "#" not in where:
        where += f"#{src['subdirectory']}"
    rows = [("source", f"{kind} {where}" + (f" (ref {src['ref']})" if src.get("ref") else ""))]
    if src.get("commit"):
        rows.append(
            ("commit", src["commit"] + " (with uncommitted changes)" * bool(src.get("dirty")))
        )
    return rows


def _environment(env: dict[str, Any], interpreter: str) -> list[Row]:
    """The manager, the cached environment (key, reused or built), the python; the
    interpreter's path says where the environment is."""
    what = str(env.get("manager") or "none")
    if env.get("key"):
        how = "reused" if env.get("reused") else f"built in {took(env.get('build_seconds'))}"
        what += f" {str(env['key'])[:16]} ({how})"
    if env.get("python_version"):
        what += f", python {env['python_version']}"
    return [("environment", what), ("interpreter", interpreter)]


def _pairs(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={cell(v)}" for k, v in values.items()) or "none"


def _extra(rec: RunRecord) -> list[Row]:
    rows = []
    if rec.backend:
        job = rec.backend.get("job_id")
        how = f"{rec.backend.get('type', 'slurm')} job {job}" if job else str(rec.backend)
        rows.append(("backend", how + " (detached)" * rec.detached))
    if rec.distributed:
        gang = rec.distributed
        failed = " ".join(f"{k}:{v}" for k, v in (gang.get("ranks") or {}).items())
        rows.append(
            (
                "distributed",
                f"world size {gang.get('world_size')} ({gang.get('nnodes')} node(s) x "
                f"{gang.get('nproc_per_node')}), restarts {gang.get('restarts', 0)}"
                + (f", failed ranks (rank:exit) {failed}" if failed else ""),
            )
        )
    rows.append(("host", f"{rec.host}, pid {rec.pid}"))
    if rec.resume_from:
        rows.append(("resumed from", rec.resume_from))
    return rows
