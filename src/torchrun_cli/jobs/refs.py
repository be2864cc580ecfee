"""RUN on the command line: which run an id, a unique prefix, a 4-hex suffix, a run name, `last`
or `last~N` names; the newest records without reading every run.json; what completion offers.

Run ids are `YYYYMMDD-HHMMSS-<slug of the name>-<4 hex>` (UTC, made by record.create_run_dir),
so the folder names alone order the runs and narrow a name down; run.json is read only for the
candidates.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.errors import UsageError, did_you_mean
from torchrun_cli.jobs import index
from torchrun_cli.pipeline_record import PipelineRecord, read_listed
from torchrun_cli.pipeline_record import read as read_pipeline
from torchrun_cli.record import RunDir, RunRecord, slug

AnyRecord = RunRecord | PipelineRecord  # what the runs folder holds: runs and pipelines

_ID = re.compile(r"(\d{8}-\d{6})-(.+)-([0-9a-f]{4})")
_LAST = re.compile(r"last(?:~(\d+))?")
_SUFFIX = re.compile(r"[0-9a-f]{4}")
_SHOWN = 5  # candidates an ambiguity error lists
FORMS = (
    "an id, a unique prefix, its last 4 characters, a run name, last or last~N; "
    "a pipeline's step as PIPELINE/STEP"
)


class Entry(NamedTuple):
    """A run folder as its name tells it; `stamp` is "" for a name torchjob did not make."""

    name: str
    stamp: str = ""
    slug: str = ""
    suffix: str = ""


class Seen(NamedTuple):
    """A record (a run's or a pipeline's) and the folder it was read from."""

    record: AnyRecord
    run: RunDir


class Found(NamedTuple):
    """The run RUN names, and a note when another reading of RUN lost (see resolve)."""

    run: RunDir
    note: str | None = None


def entries(runs_dir: Path) -> list[Entry]:
    """The run folders, newest first by the UTC second in their names; folders whose names
    carry none come first, since only their run.json can say how old they are."""
    try:
        found = [e.name for e in os.scandir(runs_dir) if e.is_dir() and e.name[:1] != "."]
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = [Entry(n, *m.groups()) if (m := _ID.fullmatch(n)) else Entry(n) for n in found]
    return sorted(out, key=lambda e: (e.stamp == "", e.stamp, e.name), reverse=True)


def _order(seen: Seen) -> tuple[str, str, str]:
    """Newest first: the second the folder was made, then started_at (a second's runs)."""
    rec = seen.record
    stamp = _ID.fullmatch(seen.run.id)
    second = stamp.group(1) if stamp else re.sub(r"\D", "", rec.started_at)[:14]
    return second.replace("-", ""), rec.started_at, rec.id


def newest(
    runs_dir: Path,
    count: int = 0,
    keep: Callable[[AnyRecord], bool] | None = None,
    *,
    name: str | None = None,
    status: str | None = None,
    by: str | None = None,
) -> list[Seen]:
    """The `count` newest records (0: all) that `keep` accepts, newest first (or by the
    output `by`; `-by`: greatest first), of this name and status when given. From the index
    (jobs/index.py): `runs --limit 20` reads about 20 run.json files however many runs there
    are; without one, from the folders' names."""
    try:
        with index.fresh(runs_dir) as db:
            return _indexed(db, runs_dir, count, keep, name, status, by)
    except index.Unusable:
        among = named(runs_dir, name) if name is not None else None
        found = _scanned(runs_dir, 0 if by else count, keep, among)
        return (_by_output(found, by) if by else found)[: count or None]


def _by_output(found: list[Seen], by: str) -> list[Seen]:
    key, greatest = by.lstrip("-"), by.startswith("-")
    has = [s for s in found if isinstance(s.record.outputs.get(key), (int, float))]
    has.sort(key=lambda s: s.record.outputs[key], reverse=greatest)
    return has + [s for s in found if s not in has]


def _indexed(
    db: Any,
    runs_dir: Path,
    count: int,
    keep: Callable[[AnyRecord], bool] | None,
    name: str | None,
    status: str | None,
    by: str | None = None,
) -> list[Seen]:
    """Page through the index's ids in order, reading each record (the truth)."""
    recorded = "running" if status in ("running", "lost") else status  # lost: judged below
    found: list[Seen] = []
    page, offset = (max(count, 20) if count else 0), 0
    while True:
        batch = index.ids(db, name, recorded, page, offset, by=by)
        for folder in batch:
            run = RunDir(runs_dir / folder)
            try:
                rec = read_listed(run.path)
            except (OSError, ValueError, TypeError):
                continue
            if keep is None or keep(rec):
                found.append(Seen(rec, run))
                if count and len(found) >= count:
                    return found
        if not page or len(batch) < page:
            return found
        offset += page


def _scanned(
    runs_dir: Path,
    count: int,
    keep: Callable[[AnyRecord], bool] | None,
    among: Iterable[Entry] | None,
) -> list[Seen]:
    """Without an index: folders newest first by the second in their names; the reading
    stops at the first one older than the count-th found."""
    found: list[Seen] = []
    bound = ""  # the second of the count-th newest found so far
    for entry in entries(runs_dir) if among is None else among:
        if bound and entry.stamp and entry.stamp.replace("-", "") < bound:
            break
        run = RunDir(runs_dir / entry.name)
        try:
            rec = read_listed(run.path)
        except (OSError, ValueError, TypeError):
            continue  # a torchjob killed while starting left no readable record
        if keep is None or keep(rec):
            found.append(Seen(rec, run))
            if count and len(found) >= count:
                found.sort(key=_order, reverse=True)
                bound = _order(found[count - 1])[0]
    found.sort(key=_order, reverse=True)
    return found[:count] if count else found


def named(runs_dir: Path, name: str, every: list[Entry] | None = None) -> list[Entry]:
    """The folders that may hold runs of this name: the slug in the id is the name's (a name
    is still confirmed from run.json: two names can have one slug)."""
    wanted = slug(name)
    return [e for e in every or entries(runs_dir) if e.slug == wanted or not e.stamp]


def resolve(runs_dir: Path, ref: str) -> Found:
    """The run folder of RUN. In order: `last` and `last~N` (N runs before the newest); an
    exact id; a run name (its newest run), even when it is also the start or the end of other
    ids (a note says so); a 4-hex suffix; a unique prefix. A suffix or a prefix that matches
    several runs is an error listing them."""
    if (last := _LAST.fullmatch(ref)) is not None:
        back = int(last.group(1) or 0)
        seen = newest(runs_dir, back + 1)
        if not seen:
            raise UsageError(f"no runs yet in {runs_dir}", "start one with `torchjob run`")
        if len(seen) <= back:
            raise UsageError(
                f"{ref}: there are only {len(seen)} runs in {runs_dir}",
                "last is the newest run, last~1 the one before it",
            )
        return Found(seen[back].run)
    if ref.startswith("last~") or ref in ("", ".", ".."):
        raise UsageError(f"{ref!r} names no run", f"RUN is {FORMS}")
    if "/" in ref:
        return _step(runs_dir, *ref.rsplit("/", 1))
    if ref[:1] != "." and (runs_dir / ref).is_dir():  # an exact id
        return Found(RunDir(runs_dir / ref))
    by_suffix, by_prefix, pipelines = _matches(runs_dir, ref)
    by_name = newest(runs_dir, 1, lambda r: r.name == ref, name=ref)
    if by_name:
        run = by_name[0].run
        others = sorted(set(by_suffix + by_prefix) - {run.id})
        note = (
            f"{ref!r} is a run name and also {_match(others)}; this is the newest run named {ref}"
            if others
            else None
        )
        return Found(run, note)
    for matches, how in ((by_suffix, "end"), (by_prefix, "start")):
        if len(matches) == 1:
            return Found(RunDir(runs_dir / matches[0]))
        if matches:
            raise UsageError(
                f"{ref!r} matches {len(matches)} runs (the {how} of their ids): "
                + _listed(matches),
                "give more of the id (see `torchjob runs`)",
            )
    inner = []  # a step's (or trial's) run, by its id or its id's end, in its pipeline's folder
    for folder in pipelines:
        if (runs_dir / folder / ref / "run.json").is_file():
            return Found(RunDir(runs_dir / folder / ref))
        if _SUFFIX.fullmatch(ref):
            with contextlib.suppress(OSError):
                inner += [e.path for e in os.scandir(runs_dir / folder) if e.name[-5:] == f"-{ref}"]
    if len(inner) == 1:
        return Found(RunDir(Path(inner[0])))
    if inner:
        raise UsageError(
            f"{ref!r} matches {len(inner)} runs of pipelines or sweeps: "
            + _listed(sorted(Path(p).name for p in inner)),
            "give more of the id (see `torchjob show PIPELINE`)",
        )
    raise UsageError(
        f"no run matches {ref!r} in {runs_dir}", f"RUN is {FORMS}; list runs with `torchjob runs`"
    )


def _step(runs_dir: Path, pipeline: str, step: str) -> Found:
    """PIPELINE/STEP: the run of that step (its latest attempt, or the run it reused)."""
    found = resolve(runs_dir, pipeline)
    try:
        rec = read_pipeline(found.run.path)
    except (OSError, ValueError, TypeError):
        raise UsageError(
            f"{pipeline!r} is not a pipeline", "PIPELINE/STEP needs a pipeline's id or name"
        ) from None
    if step not in rec.steps:
        raise UsageError(
            f"pipeline {rec.id} has no step {step!r}",
            did_you_mean(step, rec.steps, f"its steps: {', '.join(rec.steps)}"),
        )
    done = rec.steps[step]
    if not done.run_dir:
        why = f": {done.error}" if done.error else ""
        raise UsageError(f"step {step} of {rec.id} has no run ({done.status}{why})")
    return Found(RunDir(Path(done.run_dir)), found.note)


def _matches(runs_dir: Path, ref: str) -> tuple[list[str], list[str], list[str]]:
    """The ids that end with ref (4 hex), that start with it, and the folders that may hold
    pipelines: from the index, else from the folders' names."""
    suffix = ref if _SUFFIX.fullmatch(ref) else ""
    try:
        with index.fresh(runs_dir) as db:
            ends = index.matching(db, suffix=suffix) if suffix else []
            return ends, index.matching(db, prefix=ref), index.ids(db, kind="pipeline")
    except index.Unusable:
        every = entries(runs_dir)
        ends = [e.name for e in every if e.suffix == ref] if suffix else []
        starts = [e.name for e in every if e.name.startswith(ref)]
        return ends, starts, [e.name for e in every]


def _match(ids: list[str]) -> str:
    return f"the start or end of {len(ids)} other run id{'s' * (len(ids) > 1)} ({_listed(ids)})"


def _listed(ids: list[str]) -> str:
    ids = sorted(ids, reverse=True)
    more = len(ids) - _SHOWN
    return ", ".join(ids[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def candidates(runs_dir: Path, incomplete: str, limit: int = 200) -> list[tuple[str, str]]:
    """(value, help) for a shell completing RUN: `last`, run names and ids that start with
    `incomplete` (typer offers nothing else)."""
    try:
        with index.fresh(runs_dir) as db:
            ids = index.matching(db, prefix=incomplete)[:limit]
            names = index.names(db, incomplete, limit)
            anything = bool(ids) or bool(index.ids(db, limit=1))
    except index.Unusable:
        every = entries(runs_dir)
        prefix = slug(incomplete) if incomplete else ""
        maybe = [e for e in every if e.slug.startswith(prefix) or not e.stamp][:limit]
        found = _scanned(runs_dir, 0, lambda r: r.name.startswith(incomplete), maybe)
        names = list(dict.fromkeys(seen.record.name for seen in found))
        ids = [e.name for e in every if e.name.startswith(incomplete)][:limit]
        anything = bool(every)
    out = [("last", "the newest run")] if "last".startswith(incomplete) and anything else []
    plain = [n for n in names if n != "last" and shlex.quote(n) == n]  # a shell splits others
    out += [(name, f"the newest run named {name}") for name in plain]
    return out + [(i, "") for i in ids]
