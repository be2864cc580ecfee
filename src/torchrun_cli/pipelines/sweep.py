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
from torchrun_cli.record import RunDir, RunRecord, read_record
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.pipeline import PipelineSpec, Step
from torchrun_cli.spec.sweep import SweepSpec

PARTIAL_EXIT = 3  # some trials failed, at least one succeeded (README: Exit status)


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
