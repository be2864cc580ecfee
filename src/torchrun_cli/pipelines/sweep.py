"""A sweep as a pipeline of independent trials: each trial an ordinary run of the job with its
params, in the sweep's folder (the sweep id tags it), run by the pipeline scheduler (so
max_parallel, --fail-fast, Ctrl-C, --resume and the live table are the pipeline's); at the end
the trials ranked by the objective.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.jobs.views import cell
from torchrun_cli.pipeline_record import PipelineRecord, write
from torchrun_cli.record import RunDir, RunRecord, read_record
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.pipeline import PipelineSpec, Step
from torchrun_cli.spec.sweep import SweepSpec

PARTIAL_EXIT = 3  # some trials failed, at least one succeeded (README: Exit status)


def pipeline(base: JobSpec, sweep: SweepSpec, file: Path, max_parallel: int) -> PipelineSpec:
    """The trials as steps `t01`, `t02`, ...: the job with each trial's params over its own.
    The sweep paces them, so a trial never waits on the job's concurrency lock."""
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
    trials = {name: dict(point) for name, point in zip(steps, points, strict=True)}
    return PipelineSpec(
        base.name, file, steps, {}, max_parallel, sweep={"objective": objective, "trials": trials}
    )


def changed(spec: PipelineSpec, old: PipelineRecord) -> frozenset[str]:
    """--resume: the trials whose params differ from the stopped sweep's (a changed grid or
    seed): they run again, whatever they did then."""
    before = (old.sweep or {}).get("trials", {})
    now = (spec.sweep or {}).get("trials", {})
    return frozenset(name for name, params in now.items() if before.get(name) != params)


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


def rank(rec: PipelineRecord) -> Ranking:
    """The trials ranked by the objective (succeeded ones with a value, best first; then the
    others in trial order)."""
    sweep = rec.sweep or {}
    trials: dict[str, dict[str, str]] = sweep.get("trials", {})
    objective = sweep.get("objective")
    metric = objective["metric"] if objective else None
    varied = [k for k in dict.fromkeys(k for p in trials.values() for k in p)]
    done: list[tuple[str, RunRecord | None]] = []
    for name in trials:
        step = rec.steps.get(name)
        run: RunRecord | None = None
        if step is not None and step.run_dir:
            with contextlib.suppress(OSError, ValueError, TypeError):
                run = read_record(RunDir(Path(step.run_dir)))
        done.append((name, run))

    def value(item: tuple[str, RunRecord | None]) -> float | None:
        run = item[1]
        if metric is None or run is None or run.status.value != "succeeded":
            return None
        return _number(run.outputs.get(metric))

    sign = -1 if objective and objective.get("mode", "max") == "max" else 1
    scored = sorted((i for i in done if value(i) is not None), key=lambda i: sign * (value(i) or 0))
    rest = [i for i in done if value(i) is None]
    ranked = scored + rest
    heads = ("TRIAL", *varied, *([metric] if metric else []), "STATUS", "RUN")
    rows = []
    for name, run in ranked:
        status = run.shown_status().value if run else rec.steps[name].status
        shown = [cell(trials[name].get(k)) for k in varied]
        score = [cell(run.outputs.get(metric)) if run and metric else ""] if metric else []
        rows.append((name, *shown, *score, status, run.id if run else ""))
    best = scored[0] if scored else None
    return Ranking(heads, rows, (best[0], best[1]) if best and best[1] else None)


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
