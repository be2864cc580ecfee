"""What the merged values of a spec must satisfy: each value its key's check, and the rules
between keys (a ref needs git, conda a version, Slurm's nodes torchrun's). Every problem is
collected with where the value came from, so all of them are reported at once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrun_cli.errors import did_you_mean
from torchrun_cli.spec.checks import Checker
from torchrun_cli.spec.keys import BY_PATH, CHANNEL, CONTROL, bad_sbatch_extra, children
from torchrun_cli.spec.refs import (
    FORMS,
    HOLDERS,
    Ref,
    Scope,
    found_in,
    has_refs,
    substitute,
    written,
)
from torchrun_cli.spec.yaml import Located

COMMAND_LINE = "command line"


class Merge:
    """The values found so far, each with its origin, and where problems go."""

    def __init__(self, check: Checker, src: Located, spec_dir: Path, cwd: Path) -> None:
        self.check, self.src = check, src
        self.spec_dir = spec_dir  # relative paths in the file start here
        self.cwd = cwd  # relative paths in flags start here
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.bases: dict[str, Path] = {}  # where a file value's relative paths start
        self.input_args: dict[str, str] = {}  # input name -> the option it is passed after
        self.anchor: str | None = None  # file:line of a pipeline's step
        self.keep: list[object] = []  # mappings made here whose lines are looked up by id

    def where(self, path: str) -> str:
        """file:line of a value from the spec or a config file, else `command line`."""
        origin = self.origins.get(path, COMMAND_LINE)
        if origin.startswith(("flag", "default", "$")):
            return COMMAND_LINE
        return origin.removeprefix("config ")

    def label(self, path: str) -> str:
        """The key as the user wrote it: the option for a key's value from a flag (an entry
        of params, env or inputs keeps its path: `inputs.train`)."""
        origin = self.origins.get(path, "")
        flagged = origin.startswith("flag") and path in BY_PATH
        return origin.removeprefix("flag ") if flagged else path

    def problem(self, path: str, message: str, fix: str) -> None:
        self.check.add(self.where(path), self.label(path), message, fix)


def check_values(merge: Merge) -> None:
    """Each value against its key's choices or pattern, and the one-line rules."""
    values = merge.values
    for path, value in list(values.items()):
        key = BY_PATH.get(path)
        if key is None or not isinstance(value, (str, tuple)):
            continue
        for item in (value,) if isinstance(value, str) else value if key.choices else ():
            if isinstance(item, str) and (bad := key.check(item)) is not None:
                merge.problem(path, *bad)
    name = values.get("name")
    if isinstance(name, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        merge.problem("name", "holds control characters (a newline, say)", "use a one-line name")
    for path, value in values.get("inputs", {}).items():
        sub = f"inputs.{path}"
        if not CHANNEL.fullmatch(path):
            merge.problem(sub, "a channel name is letters, digits and '_'", "rename it, e.g. train")
        elif not has_refs(str(value)) and not value.exists():
            merge.problem(sub, f"{value} does not exist", "give an existing file or folder")
    for path in values.get("files", ()):
        if not Path(str(path).removesuffix(":unpack")).exists():
            merge.problem(
                "files", f"{path} does not exist", "give existing files or folders to copy"
            )
    interpreter = values.get("python.interpreter")
    if isinstance(interpreter, str) and "$" in interpreter:  # what load could not expand
        odd = re.search(r"\$\{(?!\w+\})[^}]*\}?", interpreter)
        unset = re.search(r"\$\{(\w+)\}|\$(\w+)", interpreter)
        if odd:
            merge.problem(
                "python.interpreter",
                f"{odd[0]}: only ${{NAME}} and $NAME are expanded",
                "write ${NAME} (set NAME first), or the interpreter's path",
            )
        elif unset:
            name = unset[1] or unset[2]
            merge.problem(
                "python.interpreter",
                f"${name} is not set",
                f"set {name} in the environment, or give the interpreter's path",
            )
    if (pattern := values.get("metrics.pattern")) is not None:
        try:
            groups = re.compile(pattern).groupindex
        except re.error as exc:
            groups = {}
            merge.problem("metrics.pattern", f"not a regular expression: {exc}", "fix the regex")
        else:
            if not {"key", "value"} <= set(groups):
                merge.problem(
                    "metrics.pattern",
                    "needs the groups (?P<key>...) and (?P<value>...)",
                    r"write e.g. `pattern: '(?P<key>\w+)=(?P<value>[-\d.e]+)'`",
                )
    resume = values.get("resume_from")
    if resume is not None and resume != "last" and not Path(resume).exists():
        merge.problem(
            "resume_from", f"checkpoint {resume} does not exist", "give a checkpoint path, or last"
        )


def check_relations(merge: Merge, kind: str, spec_file: Path | None) -> None:
    """Rules between keys: a ref needs git, conda a version, Slurm's nodes torchrun's."""
    values = merge.values
    if "ref" in values and kind != "git":
        merge.problem(
            "ref",
            "a ref applies to git projects only",
            "remove it, or give a git URL as the project",
        )
    if values["python.manager"] == "conda" and "python.version" not in values:
        merge.check.add(
            merge.where("python.manager"),
            "python.version",
            "conda needs a python version",
            'add `version: "3.11"` under python, or pass --python-version 3.11',
        )
    if any(p.startswith("-") for p in values.get("python.conda_packages", ())):
        merge.problem(
            "python.conda_packages", "a package may not start with '-'", "write e.g. numpy=1.26"
        )
    elif values.get("python.conda_packages") and values["python.manager"] != "conda":
        merge.problem(
            "python.conda_packages",
            f"conda packages need python.manager conda (it is {values['python.manager']})",
            "set `manager: conda` under python, or list them under python.packages for pip",
        )
    low, _, high = str(values.get("distributed.nnodes", "1")).partition(":")
    if high.isdigit() and low.isdigit() and int(low) > int(high):
        merge.problem(
            "distributed.nnodes", f"{low}:{high} has its minimum above its maximum", "write MIN:MAX"
        )
    if values.get("backend.type") not in (None, "local") or (
        "backend" in values and "backend.type" not in values
    ):
        check_slurm(merge)
    if "script" not in values and not merge.check.problems and "script" not in merge.check.guessed:
        merge.check.add(
            merge.anchor or (f"{spec_file}:1" if spec_file else COMMAND_LINE),
            "script",
            "no script to run",
            "add `script: train.py` to the step (or to its `spec:` file)"
            if merge.anchor
            else "add `script: train.py` to the spec or pass --script train.py"
            if spec_file
            else "give a job spec (`torchjob run SPEC.yaml`), a script (`torchjob run train.py "
            "[ARGS]`) or --script; see `torchjob run --help`",
        )


def check_slurm(merge: Merge) -> None:
    """Each backend value becomes an #SBATCH line: one line, no comment, allowed options."""
    values = merge.values
    if "backend.type" not in values:
        merge.problem(
            "backend",
            "backend.type is missing",
            "write `type: slurm` (or leave backend out to run here)",
        )
    if bad := bad_sbatch_extra(values.get("backend.extra_args", ())):
        merge.problem(
            "backend.extra_args",
            f"not allowed: {' '.join(bad)}",
            "use --option=value forms of sbatch options torchjob allows (see README)",
        )
    for key in children("backend"):
        value = values.get(key.path)
        if isinstance(value, str) and (CONTROL.search(value) or "#" in value):
            merge.problem(
                key.path,
                f"{value!r} holds a control character or '#'",
                "write it on one line, without '#'",
            )
    nodes = str(values.get("backend.nodes") or 1)
    if not nodes.isdigit():
        return  # reported with its pattern
    if "distributed" not in values and nodes != "1":
        merge.problem(
            "backend.nodes",
            f"{nodes} nodes, but only torchrun (`distributed:`) runs on more than one",
            "add `distributed:`, or use nodes: 1",
        )
    elif "distributed.nnodes" in values and str(values["distributed.nnodes"]) != nodes:
        merge.problem(
            "distributed.nnodes",
            f"nnodes {values['distributed.nnodes']} but Slurm nodes {nodes}",
            "leave distributed.nnodes out: under Slurm it is backend.nodes",
        )


def project_location(merge: Merge, kind: str) -> str | None:
    """An absolute path for a local folder or archive (which must exist), else the URL as is.
    Relative paths start at the spec's folder, or at the current folder for --project."""
    project = merge.values["project"]
    if kind == "git" or "://" in project:
        return str(project)
    flagged = merge.origins["project"].startswith("flag")
    base = merge.cwd if flagged else merge.bases.get("project", merge.spec_dir)
    location, sep, subdir = project.partition("#")
    path = (base / os.path.expanduser(location)).resolve()
    ok = path.is_file() if kind == "archive" else path.is_dir()
    if not ok:
        what = (
            "does not exist"
            if not path.exists()
            else ("is not a file" if kind == "archive" else "is not a folder")
        )
        merge.problem(
            "project",
            f"project {kind} {path} {what}",
            "give an existing folder or archive (relative paths start at "
            + ("the current folder)" if flagged else "the spec's folder)"),
        )
        return None
    return f"{path}{sep}{subdir}"


def link(merge: Merge, scope: Scope) -> None:
    """Check every reference and resolve those the spec alone can answer (inputs, params);
    references to steps stay as written until their step starts. Inputs are resolved first,
    so a param or an argument may name an input whose path came from a param."""
    values = merge.values
    for path, value in values.items():
        texts = [value] if isinstance(value, str) else value if isinstance(value, tuple) else ()
        if path.partition(".")[0] not in HOLDERS and any(has_refs(str(t)) for t in texts):
            merge.problem(
                path,
                "holds a reference (${{ ... }})",
                f"references work in {', '.join(HOLDERS)} only: write this value out",
            )
    inputs: dict[str, Any] = values.get("inputs", {})
    own: dict[str, Any] = values.get("params", {})
    params = own if scope.params is None else scope.params
    base = merge.bases.get("inputs", merge.spec_dir)

    def resolve(path: str, text: str, allowed: tuple[str, ...]) -> str:
        for shown, ref in found_in(text):
            if (problem := _judge(ref, allowed, inputs, params, scope)) is not None:
                merge.problem(path, f"{shown}: {problem[0]}", problem[1])

        def lookup(ref: Ref) -> str:
            if ref.scope == "inputs" and ref.name in inputs:
                return str(inputs[ref.name])
            if ref.scope == "params" and ref.name in params:
                value = params[ref.name]
                return str(value).lower() if isinstance(value, bool) else str(value)
            return written(ref)

        return substitute(text, lookup)

    for name, where in list(inputs.items()):
        if has_refs(text := str(where)):
            found = resolve(f"inputs.{name}", text, ("params", "steps"))
            inputs[name] = Path(found) if has_refs(found) else base / found
    mine = ("inputs", "steps") if scope.params is None else ("inputs", "params", "steps")
    for name, value in own.items():
        if isinstance(value, str) and has_refs(value):
            own[name] = resolve(f"params.{name}", value, mine)
    if any(has_refs(a) for a in values.get("args", ())):
        values["args"] = tuple(
            resolve("args", a, ("inputs", "params", "steps")) for a in values["args"]
        )
    for name, value in values.get("env", {}).items():
        if has_refs(value):
            values["env"][name] = resolve(f"env.{name}", value, ("inputs", "params", "steps"))


def _judge(
    ref: Ref | None,
    allowed: tuple[str, ...],
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
    scope: Scope,
) -> tuple[str, str] | None:
    """What is wrong with one reference here, and the fix; None when it is fine."""
    if ref is None:
        return "not a reference torchjob knows", f"write one of {FORMS}"
    if ref.scope not in allowed:
        return (
            f"a value of {ref.scope} cannot name {ref.scope}",
            "write the value itself",
        )
    if ref.scope != "steps":
        known = inputs if ref.scope == "inputs" else params
        if ref.name in known:
            return None
        what = "input" if ref.scope == "inputs" else "param"
        where = "the pipeline's `params:`" if ref.scope == "params" and scope.steps else ref.scope
        fix = did_you_mean(ref.name, known, f"declare it in {where}")
        return f"no {what} named {ref.name!r}", fix
    if scope.steps is None:
        return "names a step, but this spec is not a pipeline", "give the value itself"
    if ref.name not in scope.steps:
        return f"no step named {ref.name!r}", did_you_mean(ref.name, scope.steps, "check the name")
    if ref.name == scope.step:
        return "a step cannot use its own outputs", "name a step it needs"
    if ref.name not in scope.upstream:
        return (
            f"step {ref.name!r} is not upstream of {scope.step!r}",
            f"add {ref.name} to `needs` of {scope.step}",
        )
    return None
