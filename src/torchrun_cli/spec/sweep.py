"""A spec's `sweep:` (and `run --sweep -P k=a,b`): the values each trial's params take, checked
with file:line, and the trials drawn from them: a grid's every combination, times `trials`
random draws when `random` is given (the same seed draws the same trials, so `--resume` finds
them again).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from torchrun_cli.errors import Problem, SpecError
from torchrun_cli.spec.keys import PARAM_KEY
from torchrun_cli.spec.yaml import Located

KEYS = ("grid", "random", "trials", "seed", "max_parallel", "objective")
MODES = ("max", "min")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
_CALL = re.compile(r"\s*([a-z]+)\s*\((.*)\)\s*")
DEFAULT_TRIALS = 10
MAX_TRIALS = 10_000


class Objective(NamedTuple):
    """The metric (or output parameter) the sweep ranks its trials by, and which way."""

    metric: str
    mode: str = "max"


class Draw(NamedTuple):
    """A random param: `loguniform(1e-4, 1e-1)`, `uniform(0, 1)`, `randint(1, 8)` (both ends
    included) or `choice(a, b, c)`."""

    kind: str
    args: tuple[str, ...]

    def sample(self, rng: random.Random) -> str | bool:
        if self.kind == "choice":  # true/false as -P reads them
            return _param(rng.choice(self.args))
        low, high = (float(a) for a in self.args)
        if self.kind == "randint":
            return str(rng.randint(int(low), int(high)))
        if self.kind == "loguniform":
            return f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}"
        return f"{rng.uniform(low, high):.4g}"


class SweepSpec(NamedTuple):
    grid: Mapping[str, tuple[str, ...]] = {}
    random: Mapping[str, Draw] = {}
    trials: int = DEFAULT_TRIALS  # random draws (per grid point)
    seed: int = 0
    max_parallel: int | None = None
    objective: Objective | None = None

    def size(self) -> int:
        """How many trials points() makes, without making them (a huge grid is refused)."""
        return math.prod(len(v) for v in self.grid.values()) * (self.trials if self.random else 1)

    def points(self) -> list[dict[str, str | bool]]:
        """Each trial's params, in a fixed order (true/false as -P reads them)."""
        names = list(self.grid)
        grid: list[dict[str, str | bool]] = [
            {n: _param(v) for n, v in zip(names, combo, strict=True)}
            for combo in itertools.product(*self.grid.values())
        ]
        if not self.random:
            return grid
        rng = random.Random(self.seed)  # noqa: S311 (trials to repeat, not secrets)
        return [
            {**point, **{k: d.sample(rng) for k, d in self.random.items()}}
            for point in grid
            for _ in range(self.trials)
        ]


def _text(value: object) -> str | None:
    """A grid value as -P would give it (a boolean as true/false); None: not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or value is None:
        return None
    return str(value)


def _param(text: str) -> str | bool:
    """As -P reads a value: true is a bare flag, false no option at all."""
    return {"true": True, "false": False}.get(text, text)


GRID_FIX = "write `grid: {lr: [0.1, 0.01]}`"
RANDOM_FIX = "write uniform(a, b), loguniform(a, b) (0 < a < b), randint(a, b) or choice(x, y)"


class _Reader:
    """The checks of one `sweep:` mapping; every problem found is kept with its line."""

    def __init__(self, src: Located) -> None:
        self.src = src
        self.problems: list[Problem] = []

    def problem(self, node: object, key: object, message: str, fix: str, inner: str = "") -> None:
        """A problem with `key` of `node` (of section `inner` of the sweep, if given)."""
        path = f"sweep.{inner}.{key}" if inner else "sweep" if key == "sweep" else f"sweep.{key}"
        self.problems.append(Problem(self.src.where(node, key), path, message, fix))

    def whole(self, node: dict[str, Any], key: str, low: int, high: int) -> int | None:
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(node, key, f"bad value {value!r}", f"a whole number {low}..{high}")
            return None
        return value

    def grid(self, parent: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        node = parent["grid"]
        if not isinstance(node, dict):
            self.problem(parent, "grid", "not a mapping", GRID_FIX)
            return {}
        out = {}
        for name, values in node.items():
            items = values if isinstance(values, list) else [values]
            texts = [_text(v) for v in items]
            if not PARAM_KEY.fullmatch(str(name)):
                self.problem(node, name, "not a param name", "use letters, digits, _ . -", "grid")
            elif not items or None in texts:
                self.problem(node, name, "needs values", f"write `{name}: [0.1, 0.01]`", "grid")
            else:
                out[str(name)] = tuple(t for t in texts if t is not None)
        return out

    def random(self, parent: dict[str, Any]) -> dict[str, Draw]:
        node = parent["random"]
        if not isinstance(node, dict):
            self.problem(parent, "random", "not a mapping", RANDOM_FIX)
            return {}
        out = {}
        for name, text in node.items():
            draw = _draw(str(text))
            if draw is None or not PARAM_KEY.fullmatch(str(name)):
                self.problem(node, name, f"not a distribution: {text!r}", RANDOM_FIX, "random")
            else:
                out[str(name)] = draw
        return out

    def objective(self, parent: dict[str, Any]) -> Objective | None:
        node = parent["objective"]
        fix = "write `objective: {metric: accuracy, mode: max}`"
        if isinstance(node, str):
            return Objective(node)
        if not isinstance(node, dict) or not isinstance(node.get("metric"), str):
            self.problem(parent, "objective", "needs a metric", fix)
            return None
        for key in set(node) - {"metric", "mode"}:
            self.problem(node, key, "unknown key", fix, "objective")
        if (mode := node.get("mode", "max")) not in MODES:
            self.problem(node, "mode", f"unknown mode {mode!r}", "use max or min", "objective")
            return None
        return Objective(node["metric"], mode)


def _draw(text: str) -> Draw | None:
    """`loguniform(1e-4, 1e-1)` as a Draw; None when it is not one of DISTRIBUTIONS."""
    m = _CALL.fullmatch(text)
    if not m or m.group(1) not in DISTRIBUTIONS:
        return None
    kind, args = m.group(1), tuple(a.strip() for a in m.group(2).split(",") if a.strip())
    if kind == "choice":  # choice(adam, sgd) or choice("adam", 'sgd'): the words, unquoted
        words = tuple(
            a[1:-1] if len(a) > 1 and a[0] == a[-1] and a[0] in "'\"" else a for a in args
        )
        return Draw(kind, words) if words and all(words) else None
    try:
        low, high = (float(a) for a in args)
    except ValueError:
        return None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        return None
    if kind == "loguniform" and low <= 0:
        return None
    if kind == "randint" and not (low.is_integer() and high.is_integer()):
        return None
    return Draw(kind, args)


def parse(
    raw: object, src: Located, flag_grid: Mapping[str, tuple[str, ...]], top: object = None
) -> SweepSpec:
    """The sweep from the spec's `sweep:` mapping (None: only --sweep's -P lists) with -P's
    lists over its grid; raises SpecError with every problem, each with its file:line."""
    reader = _Reader(src)
    node: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if raw is not None and not isinstance(raw, dict):
        reader.problem(top, "sweep", "not a mapping", "write `sweep: {grid: {lr: [0.1, 0.01]}}`")
    for key in node:
        if key not in KEYS:
            reader.problem(node, key, "unknown key", f"use one of {', '.join(KEYS)}")
    found: dict[str, Any] = {}
    found["grid"] = {**(reader.grid(node) if "grid" in node else {}), **flag_grid}
    if "random" in node:
        found["random"] = reader.random(node)
    for key, low, high in (("trials", 1, MAX_TRIALS), ("seed", 0, 2**32), ("max_parallel", 1, 999)):
        if key in node and (value := reader.whole(node, key, low, high)) is not None:
            found[key] = value
    if "objective" in node:
        found["objective"] = reader.objective(node)
    spec = SweepSpec(**found)
    if not reader.problems and not spec.grid and not spec.random:
        fix = "give `grid` or `random`, or -P NAME=A,B with --sweep"
        if raw is None:  # --sweep, and no -P with a list
            reader.problems.append(Problem("command line", "--sweep", "nothing to vary", fix))
        else:
            reader.problem(top, "sweep", "nothing to vary", fix)
    elif not reader.problems and (count := spec.size()) > MAX_TRIALS:
        reader.problem(top, "sweep", f"{count} trials", f"at most {MAX_TRIALS}: a smaller grid")
    if reader.problems:
        raise SpecError(reader.problems)
    return spec
