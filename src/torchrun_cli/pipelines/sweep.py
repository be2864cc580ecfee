"""A sweep as a pipeline of independent trials: each trial an ordinary run of the job with its
params, in the sweep's folder (the sweep id tags it), run by the pipeline scheduler (so
max_parallel, --fail-fast, Ctrl-C, --resume and the live table are the pipeline's); at the end
the trials ranked by the objective.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.errors import UsageError
from torchrun_cli.jobs.views import cell
from torchrun_cli.masking import mask_mapping
from torchrun_cli.pipeline_record import PipelineRecord, write
from torchrun_cli.record import RunDir, RunRecord, Status, read_record
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.pipeline import PipelineSpec, Step
from torchrun_cli.spec.sweep import SweepSpec


def pipeline(base: JobSpec, sweep: SweepSpec, file: Path, max_parallel: int) -> PipelineSpec:
    """The trials as steps `t01`, `t02`, ...: the job with each trial's params over its own.
    The sweep paces them, so a trial never waits on the job's concurrency lock."""
    base = _own_folders(base, base.spec_file.parent if base.spec_file else Path.cwd())
    points = sweep.points()
    width = len(str(len(points)))
    steps = {
        f"t{i:0{width}}": Step(
            f"t{i:0{width}}",
            base._replace(params={**base.params, **point}, concurrency="allow"),
            where=str(file),
        )
        for i, point in enumerate(points, 1)
    }
    objective = sweep.objective._asdict() if sweep.objective else None
    trials = {name: dict(mask_mapping(point)) for name, point in zip(steps, points, strict=True)}
    shown = json.dumps(base.masked(), sort_keys=True, default=str).encode()
    payload = {"objective": objective, "trials": trials, "base": hashlib.sha256(shown).hexdigest()}
    return PipelineSpec(base.name, file, steps, {}, max_parallel, sweep=payload)


def _own_folders(base: JobSpec, spec_dir: Path) -> JobSpec:
    """Placed output and model folders go inside each trial's run folder, as a pipeline step's
    do: trials sharing one would overwrite each other's outputs (and the ranking read them)."""
    placed: dict[str, Path] = {}
    for name, path in base.outputs._asdict().items():
        if path is None:
            continue
        if not path.is_absolute() or path.is_relative_to(spec_dir):
            placed[name] = path.relative_to(spec_dir) if path.is_absolute() else path
            continue
        raise UsageError(
            f"outputs.{name}: {path} is outside the spec's folder, and every trial would write "
            "into it",
            f"give a folder relative to the spec (then inside each trial's run), or drop {name}",
        )
    return base._replace(outputs=base.outputs._replace(**placed))


def changed(spec: PipelineSpec, old: PipelineRecord) -> frozenset[str]:
    """--resume: the trials whose params differ from the stopped sweep's (a changed grid or
    seed), or all of them when anything else of the job changed (a fixed -P, a key): they run
    again, whatever they did then."""
    before, now = old.sweep or {}, spec.sweep or {}
    if before.get("base") != now.get("base"):  # the job itself changed: every trial again
        return frozenset(spec.steps)
    then = before.get("trials", {})
    return frozenset(n for n, params in now.get("trials", {}).items() if then.get(n) != params)


class Ranking(NamedTuple):
    """The trials' table, best first, and the best trial (None: no objective, or no trial
    that succeeded with a number for it)."""

    heads: tuple[str, ...]
    rows: list[tuple[str, ...]]
    best: tuple[str, RunRecord] | None


def _number(value: Any) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        number = float(value)
        return None if math.isnan(number) else number
    return None


def _trial_run(rec: PipelineRecord, name: str) -> RunRecord | None:
    """A trial's run record, when it got one and it is readable."""
    step = rec.steps.get(name)
    if step is not None and step.run_dir:
        with contextlib.suppress(OSError, ValueError, TypeError):
            return read_record(RunDir(Path(step.run_dir)))
    return None


def rank(rec: PipelineRecord) -> Ranking:
    """The trials ranked by the objective (succeeded ones with a value, best first; then the
    others in trial order)."""
    sweep = rec.sweep or {}
    trials: dict[str, dict[str, str]] = sweep.get("trials", {})
    objective = sweep.get("objective")
    metric = objective["metric"] if objective else None
    varied = list(dict.fromkeys(k for p in trials.values() for k in p))
    runs = {name: _trial_run(rec, name) for name in trials}
    scores = {
        name: _number(run.outputs.get(metric))
        for name, run in runs.items()
        if metric is not None and run is not None and run.status is Status.SUCCEEDED
    }
    scored = [n for n, s in scores.items() if s is not None]
    sign = -1 if objective and objective.get("mode", "max") == "max" else 1
    scored.sort(key=lambda n: sign * (scores[n] or 0.0))
    heads = ("TRIAL", *varied, *([metric] if metric else []), "STATUS", "RUN")
    rows = []
    for name in scored + [n for n in trials if n not in scored]:
        run = runs[name]
        status = run.shown_status().value if run else rec.steps[name].status
        score = [cell(run.outputs.get(metric)) if run else ""] if metric else []
        shown = (cell(trials[name].get(k)) for k in varied)
        rows.append((name, *shown, *score, status, run.id if run else ""))
    best = runs[scored[0]] if scored else None
    return Ranking(heads, rows, (scored[0], best) if best is not None else None)


def finish(folder: Path, rec: PipelineRecord) -> tuple[PipelineRecord, Ranking]:
    """The ended sweep ranked; its outputs (pipeline.json, `runs --columns`) are the best
    trial's, with `best_trial` naming it."""
    ranking = rank(rec)
    outputs: dict[str, Any] = {}  # no objective (or no trial with it): no result to name
    if ranking.best is not None:
        name, best = ranking.best
        outputs = {**best.outputs, "best_trial": name, "best_run": best.id}
    rec = replace(rec, outputs=outputs)
    write(folder, rec)
    return rec, ranking
