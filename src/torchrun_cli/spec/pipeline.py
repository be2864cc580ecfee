"""A pipeline spec: named steps, each a job spec plus `needs`, with `defaults` merged under
every step and references between them. Everything that can be known before a step runs is
checked here, all at once (exit 2): unknown steps in `needs` (with a did-you-mean), a cycle
(named, `train → eval → train`), a reference to a step that is not upstream, every job key of
every step. Whether an upstream step writes the output a reference names is known only when it
has run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.errors import Problem, SpecError, did_you_mean
from torchrun_cli.settings import Settings
from torchrun_cli.spec.checks import Checker
from torchrun_cli.spec.keys import PARAM_KEY, children
from torchrun_cli.spec.load import Flags, Layer, build, line_of
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.refs import STEP_NAME, Scope
from torchrun_cli.spec.rules import COMMAND_LINE
from torchrun_cli.spec.yaml import Located, read_yaml

TOP_KEYS = ("name", "steps", "defaults", "params", "max_parallel", "cache")
STEP_KEYS = ("needs", "spec", "cache")  # besides every key of a job spec


class Step(NamedTuple):
    """One step: its job (references to other steps still as written; its `retries` are the
    run's own), the steps it needs, whether it may reuse an earlier run's outputs, where it is."""

    name: str
    job: JobSpec
    needs: tuple[str, ...] = ()
    cache: bool = False
    where: str = ""


class PipelineSpec(NamedTuple):
    """The steps in the file's order, the pipeline's params (what `${{ params.NAME }}`
    names, set with -P), how many steps run at once."""

    name: str
    file: Path
    steps: Mapping[str, Step]
    params: Mapping[str, str]
    max_parallel: int
    sweep: Mapping[str, Any] | None = None  # a sweep's objective and trials' params

    def upstream(self, name: str) -> frozenset[str]:
        """Every step `name` needs, directly or through others."""
        return _closure(name, {n: s.needs for n, s in self.steps.items()})

    def downstream(self, name: str) -> frozenset[str]:
        """Every step that needs `name`, directly or through others."""
        users: dict[str, list[str]] = {n: [] for n in self.steps}
        for step in self.steps.values():
            for need in step.needs:
                users[need].append(step.name)
        return _closure(name, users)


def load_pipeline(
    path: Path, data: dict[str, Any], src: Located, flags: Flags, cwd: Path, settings: Settings
) -> PipelineSpec:
    """Every step's job spec with the defaults under it and the flags over it (-P sets the
    pipeline's params, --name its name); raises SpecError with every problem found."""
    problems: list[Problem] = []
    check = Checker(problems)
    check.unknown_keys(data, TOP_KEYS, "", src)
    steps_data = check.mapping(data.get("steps"), src.where(data, "steps"), "steps") or {}
    if not steps_data:
        check.add(src.where(data, "steps"), "steps", "no steps", "add `steps:` with a step")
    name = _name(check, data, src, flags, path)
    params = _params(check, data, src, flags)
    defaults = check.mapping(data.get("defaults"), src.where(data, "defaults"), "defaults") or {}
    base = path.parent
    needs = {n: _needs(check, n, s, src, steps_data) for n, s in steps_data.items()}
    _cycles(check, needs, steps_data, src)
    shared = _flags_for_steps(flags)
    everywhere = _flag(check, data, src, "cache", False)
    parallel = _max_parallel(check, data, src)
    kept: list[object] = []  # copies whose line numbers are looked up by id
    steps: dict[str, Step] = {}
    for step_name, raw in steps_data.items():
        where = src.where(steps_data, step_name)
        if not isinstance(raw, dict):
            check.add(where, f"steps.{step_name}", "a step is a mapping", "write `script: x.py`")
            continue
        known = job_keys()
        check.unknown_keys(raw, known, f"steps.{step_name}.", src)
        unknown = tuple(k for k in raw if k not in known)
        layers = [_layer(defaults, src, base, kept)]
        if "spec" in raw:
            layers += _spec_layer(check, raw, src, base, f"steps.{step_name}", kept)
        layers.append(_layer(raw, src, base, kept, drop=STEP_KEYS + unknown))
        if "name" in raw:
            check.add(
                src.where(raw, "name"),
                f"steps.{step_name}.name",
                "a step's run name is its key under steps",
                "remove `name` (rename the step instead)",
            )
        scope = Scope(
            f"steps.{step_name}.",
            where,
            tuple(steps_data),
            step_name,
            _closure(step_name, needs),
            params,
        )
        named = {**shared, "name": step_name}
        job = build(layers, named, cwd, settings, problems, path, (), scope)
        cache = _flag(check, raw, src, f"steps.{step_name}.cache", everywhere)
        if job is not None:
            steps[step_name] = Step(step_name, job, needs[step_name], cache, where)
    if problems:
        raise SpecError(sorted(_unique(problems, path), key=line_of))
    return PipelineSpec(name, path, steps, params, parallel)


def _layer(
    data: dict[str, Any], src: Located, base: Path, kept: list[object], drop: tuple[str, ...] = ()
) -> Layer:
    """A layer of keys (without the step's own keys); the copy keeps the original's lines."""
    copy = {k: v for k, v in data.items() if k not in drop}
    src.key_lines[id(copy)] = src.key_lines.get(id(data), {})
    kept.append(copy)
    return Layer(copy, src, base)


def _spec_layer(
    check: Checker, raw: dict[str, Any], src: Located, base: Path, path: str, kept: list[object]
) -> list[Layer]:
    """`spec: other.yaml`: a job spec file under the step's own keys (its name is not used:
    the step's is)."""
    where = src.where(raw, "spec")
    text = check.string(raw["spec"], where, f"{path}.spec")
    if text is None:
        return []
    file = (base / os.path.expanduser(text)).absolute()
    problems: list[Problem] = []
    data, other = read_yaml(file, problems)
    for p in problems:
        check.add(where, f"{path}.spec", f"{file}: {p.message}", p.fix)
    if "steps" in data:
        check.add(where, f"{path}.spec", f"{file} is a pipeline", "give a job spec file")
        return []
    return [_layer(data, other, file.parent, kept, drop=("name",))]


def _name(
    check: Checker, data: dict[str, Any], src: Located, flags: Flags, path: str | Path
) -> str:
    if "name" in flags:
        return str(flags["name"])
    if "name" not in data:
        return Path(path).stem
    return check.string(data["name"], src.where(data, "name"), "name") or "pipeline"


def _params(check: Checker, data: dict[str, Any], src: Located, flags: Flags) -> dict[str, str]:
    """The pipeline's params: `params:` of the file, then -P NAME=VALUE (a name the file
    declares: a typo would otherwise pass unnoticed)."""
    raw = check.mapping(data.get("params"), src.where(data, "params"), "params") or {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        found = check.param(key, value, src.where(raw, key), f"params.{key}")
        if found is not None:
            out[str(key)] = str(found).lower() if isinstance(found, bool) else found
    items = flags.get("params")
    for given in items if isinstance(items, (list, tuple)) else ():
        key, sep, value = str(given).partition("=")
        if not sep or not PARAM_KEY.fullmatch(key):
            check.add(COMMAND_LINE, "-P", "a value is not NAME=VALUE", "write -P lr=0.01")
        elif key not in out:
            fix = did_you_mean(key, out, f"declare `{key}` under `params:`")
            check.add(COMMAND_LINE, f"-P {key}", "the pipeline has no such param", fix)
        else:
            out[key] = value
    return out


def _flags_for_steps(flags: Flags) -> dict[str, object]:
    """The flags that set a key in every step: all but -P (the pipeline's params) and --name
    (the pipeline's)."""
    return {k: v for k, v in flags.items() if k not in ("params", "name")}


def _needs(
    check: Checker, name: str, raw: object, src: Located, steps: dict[str, Any]
) -> tuple[str, ...]:
    """A step's `needs`: steps of this pipeline, not itself."""
    if not STEP_NAME.fullmatch(str(name)):
        check.add(
            src.where(steps, name),
            f"steps.{name}",
            "a step name is letters, digits, '_' and '-', not starting with a digit or '-'",
            "rename the step, e.g. train_b",
        )
    if not isinstance(raw, dict) or "needs" not in raw:
        return ()
    where = src.where(raw, "needs")
    found = check.string_list(raw["needs"], where, f"steps.{name}.needs") or []
    out = []
    for need in found:
        if need == name:
            check.add(where, f"steps.{name}.needs", "a step cannot need itself", "remove it")
        elif need not in steps:
            fix = did_you_mean(need, steps, f"use one of {', '.join(steps)}")
            check.add(where, f"steps.{name}.needs", f"no step named {need!r}", fix)
        else:
            out.append(need)
    return tuple(dict.fromkeys(out))


def _cycles(
    check: Checker, needs: dict[str, tuple[str, ...]], steps: dict[str, Any], src: Located
) -> None:
    """Each cycle of `needs`, named from the step where it was found: `a → b → a`."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for need in needs.get(name, ()):
            if state.get(need) == 1:
                loop = [*path[path.index(need) :], need]
                raw = steps.get(loop[0])
                where = src.where(raw, "needs") if isinstance(raw, dict) else src.where()
                check.add(
                    where,
                    f"steps.{loop[0]}.needs",
                    f"a cycle: {' → '.join(loop)}",
                    "remove one of these needs",
                )
            elif need not in state:
                visit(need)
        path.pop()
        state[name] = 2

    for name in needs:
        if name not in state:
            visit(name)


def _closure(name: str, edges: Mapping[str, tuple[str, ...] | list[str]]) -> frozenset[str]:
    seen: set[str] = set()
    todo = list(edges.get(name, ()))
    while todo:
        if (nxt := todo.pop()) not in seen:
            seen.add(nxt)
            todo += edges.get(nxt, ())
    return frozenset(seen - {name})


def _flag(check: Checker, raw: dict[str, Any], src: Located, path: str, default: bool) -> bool:
    """A true/false key (`cache`) of the pipeline or a step."""
    key = path.rpartition(".")[2]
    if key not in raw:
        return default
    return bool(check.boolean(raw[key], src.where(raw, key), path))


def _max_parallel(check: Checker, data: dict[str, Any], src: Located) -> int:
    """How many steps run at once [default: the CPUs]."""
    value = data.get("max_parallel", os.cpu_count() or 1)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    where = src.where(data, "max_parallel")
    check.add(where, "max_parallel", f"expected a whole number ≥ 1, got {value!r}", "write 2")
    return 1


def _unique(problems: list[Problem], path: Path) -> list[Problem]:
    """A problem of `defaults` (or of a spec file steps share) is found once per step: keep
    one, named as `defaults.KEY` (or the shared file's KEY)."""
    seen: dict[tuple[str, str, str], Problem] = {}
    for p in problems:
        same = (p.where, p.message, p.fix)
        if same in seen and seen[same].key != p.key:
            key = p.key.split(".", 2)[2] if p.key.startswith("steps.") else p.key
            shared = "defaults." if p.where.startswith(f"{path}:") else ""
            seen[same] = p._replace(key=shared + key)
        else:
            seen.setdefault(same, p)
    return list(seen.values())


def job_keys() -> tuple[str, ...]:
    """The keys a step may have: every top-level key of a job spec, and the step's own."""
    return tuple(k.name for k in children("")) + STEP_KEYS
