"""Metrics: scalars a job reports as it trains, as series by step. A job writes JSON lines to
`$TORCHJOB_METRICS` (`{"step": 10, "loss": 0.31}`); with `metrics: {from_output: true}` (or a
`pattern`), `key=value` and `key: value` in its stdout count too (MLflow's and Guild's two
ways). The series are read from the run folder whenever they are asked for, so `show` and
`plot` see a running job's so far; when the run ends, the last value of each joins its
outputs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.record import RunDir

FILE = "metrics.jsonl"
MAX_LINE = 1 << 16  # a longer line is not a metric
# `loss=0.31`, `acc: 91.2`, several per line (`epoch=1 loss=0.3`); a name, then a number.
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
DEFAULT_PATTERN = rf"(?P<key>[A-Za-z_][A-Za-z0-9_./-]*)\s*[=:]\s*(?P<value>{NUMBER})(?![\w.:/])"


class Summary(NamedTuple):
    """One metric of a run: its last value, its least and greatest, how many points."""

    last: float
    low: float
    high: float
    points: int


Series = dict[str, list[tuple[int, float]]]  # metric -> (step, value), in the order reported


def variables(run: RunDir) -> dict[str, str]:
    return {"TORCHJOB_METRICS": str(run.path / FILE)}


def series(run: RunDir, settings: Mapping[str, Any] | None = None) -> Series:
    """Every metric of a run: its metrics file, then (when the spec asked) its stdout."""
    out: Series = {}
    _add(out, _from_file(run.path / FILE))
    settings = settings or {}
    if settings.get("from_output") or settings.get("pattern"):
        pattern = re.compile(str(settings.get("pattern") or DEFAULT_PATTERN))
        _add(out, _from_output(run.stdout_log, pattern))
    return out


def _add(into: Series, points: Iterable[tuple[str, int | None, float]]) -> None:
    for key, step, value in points:
        found = into.setdefault(key, [])
        found.append((len(found) if step is None else step, value))


def _lines(path: Path) -> Iterator[bytes]:
    """A file's lines (none when it cannot be opened), an overlong one left out."""
    try:
        fh = path.open("rb")
    except OSError:
        return
    with fh:  # a progress bar's \r-joined updates are lines of their own
        yield from (piece for raw in fh for piece in raw.split(b"\r") if len(piece) <= MAX_LINE)


def _from_file(path: Path) -> Iterator[tuple[str, int | None, float]]:
    """JSON objects, one per line; `step` (an integer) places the line's other numbers."""
    for raw in _lines(path):
        try:
            data = json.loads(raw)
        except ValueError:
            continue  # a line being written, or not JSON: skipped
        if not isinstance(data, dict):
            continue
        step = data.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else None
        for key, value in data.items():
            if key != "step" and _number(value):
                yield str(key), step, float(value)


def _from_output(log: Path, pattern: re.Pattern[str]) -> Iterator[tuple[str, int | None, float]]:
    """`key=value` pairs in each stdout line; a `step` among them places the others."""
    for raw in _lines(log):
        line = raw.decode("utf-8", "replace")
        found = [
            (m["key"], v) for m in pattern.finditer(line) if (v := _float(m["value"])) is not None
        ]
        steps = [int(v) for k, v in found if k == "step" and v.is_integer()]
        for key, value in found:
            if key != "step":
                yield key, steps[0] if steps else None, value


def _float(text: str) -> float | None:
    """A user's pattern may match anything as its value: a finite number, else None."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _number(value: object) -> bool:
    """A finite int or float (an int too large for a float is not one)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def summaries(found: Series) -> dict[str, Summary]:
    return {
        key: Summary(
            points[-1][1], min(v for _, v in points), max(v for _, v in points), len(points)
        )
        for key, points in found.items()
        if points
    }


def last_values(found: Series) -> dict[str, float]:
    """What joins the run's outputs when it ends."""
    return {key: points[-1][1] for key, points in found.items() if points}
