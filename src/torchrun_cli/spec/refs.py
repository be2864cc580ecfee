"""References in spec values, GitHub Actions' way: `${{ steps.NAME.outputs.KEY }}`,
`${{ steps.NAME.output_dir }}` (`model_dir`, `run_dir`), `${{ inputs.NAME }}`,
`${{ params.NAME }}`. A reference is replaced by text, inside the one value that holds it: the
result reaches the script as that one argv word or variable, never through a shell.

Only params, args, env and inputs may hold references; anywhere else they are refused, since a
project, a script or an interpreter chosen by an upstream step could not be checked before the
pipeline starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

REF = re.compile(r"\$\{\{(.*?)\}\}")
STEP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_FORMS = (
    re.compile(r"steps\.(?P<step>[A-Za-z_][A-Za-z0-9_-]*)\.outputs\.(?P<key>[A-Za-z0-9_.-]+)"),
    re.compile(
        r"steps\.(?P<step>[A-Za-z_][A-Za-z0-9_-]*)\.(?P<folder>output_dir|model_dir|run_dir)"
    ),
    re.compile(r"(?P<scope>inputs|params)\.(?P<name>[A-Za-z0-9_.-]+)"),
)
FORMS = (
    "steps.NAME.outputs.KEY, steps.NAME.output_dir, steps.NAME.model_dir, steps.NAME.run_dir, "
    "inputs.NAME or params.NAME"
)
HOLDERS = ("params", "args", "env", "inputs")  # the keys whose values may hold references


class Scope(NamedTuple):
    """What references in one job spec may name. A single job's `params.NAME` is its own
    param; a pipeline step's is the pipeline's (`params:` at its top, set with -P), and it may
    name the steps upstream of it."""

    prefix: str = ""  # `steps.train.`: how the step's problems name its keys
    where: str | None = None  # file:line of the step
    steps: tuple[str, ...] | None = None  # the pipeline's steps; None: a single job
    step: str = ""
    upstream: frozenset[str] = frozenset()
    params: Mapping[str, str] | None = None  # the pipeline's params


class Ref(NamedTuple):
    """One parsed reference. `scope` is steps, inputs or params; for steps, `name` is the step
    and `field` is `outputs` (with `key`) or a folder's name."""

    scope: str
    name: str
    field: str = ""
    key: str = ""

    def __str__(self) -> str:
        if self.scope != "steps":
            return f"{self.scope}.{self.name}"
        return f"steps.{self.name}.{self.field}" + (f".{self.key}" if self.key else "")


def parse(expression: str) -> Ref | None:
    """The reference an expression (the text between `${{` and `}}`) names, or None."""
    text = expression.strip()
    for form in _FORMS:
        if (m := form.fullmatch(text)) is None:
            continue
        found = m.groupdict()
        if "scope" in found:
            return Ref(found["scope"], found["name"])
        if found.get("key"):
            return Ref("steps", found["step"], "outputs", found["key"])
        return Ref("steps", found["step"], found["folder"])
    return None


def has_refs(value: str) -> bool:
    return "${{" in value


def written(ref: Ref) -> str:
    """A reference as it is kept for later (one resolved when its step starts)."""
    return "${{ " + str(ref) + " }}"


def found_in(value: str) -> Iterator[tuple[str, Ref | None]]:
    """(the text of each `${{ ... }}` in a value, what it names or None)."""
    for m in REF.finditer(value):
        yield m.group(0), parse(m.group(1))


def substitute(value: str, lookup: Callable[[Ref], str]) -> str:
    """The value with every reference replaced by what `lookup` gives for it; the text around
    stays as written."""

    def replace(m: re.Match[str]) -> str:
        ref = parse(m.group(1))
        if ref is None:  # checked when the spec was read; kept as written if not
            return m.group(0)
        return lookup(ref)

    return REF.sub(replace, value)
