"""The job spec: YAML (safe-loaded, with line numbers) merged with settings and flags, walked
by the key table, validated all at once.

Precedence is default < environment < file < flag, and every effective value keeps where it
came from. Every problem names where it is (file:line or the command line), the key path and a
fix, so a user corrects a spec in one pass instead of one error per run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrun_cli.errors import Problem, SpecError
from torchrun_cli.settings import Settings
from torchrun_cli.spec.checks import Checker
from torchrun_cli.spec.keys import (
    BY_PATH,
    CHANNEL,
    CONTROL,
    PARAM_KEY,
    Key,
    Kind,
    bad_sbatch_extra,
    children,
    with_flags,
)
from torchrun_cli.spec.model import (
    DEFAULT_GRACE_S,
    DISTRIBUTED_GRACE_S,
    BackendSpec,
    DistributedSpec,
    JobSpec,
    OutputsSpec,
    PythonSpec,
)
from torchrun_cli.spec.yaml import Located, read_yaml

Flags = Mapping[str, object]  # key path -> what its option said (only options that were given)
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*(://|::)|^[^/\s]+@[^/\s]+:|^-", re.IGNORECASE)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
COMMAND_LINE = "command line"


def project_kind(project: str) -> str:
    """`local` folder, `archive` (a local file or a URL), or `git`, from how it is written."""
    location = project.split("#", 1)[0]
    path = location.split("?", 1)[0] if "://" in location else location  # a signed URL
    is_archive = path.lower().endswith(ARCHIVE_SUFFIXES)
    if _REMOTE.search(project):
        return "archive" if is_archive and "://" in location else "git"
    return "archive" if is_archive else "local"


class _Merge:
    """The values found so far, each with its origin, and where problems go."""

    def __init__(self, check: Checker, src: Located, spec_dir: Path, cwd: Path) -> None:
        self.check, self.src = check, src
        self.spec_dir = spec_dir  # relative paths in the file start here
        self.cwd = cwd  # relative paths in flags start here
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def where(self, path: str) -> str:
        """file:line of a value from the file, else `command line`."""
        origin = self.origins.get(path, COMMAND_LINE)
        return COMMAND_LINE if origin.startswith(("flag", "default", "$")) else origin

    def label(self, path: str) -> str:
        """The key as the user wrote it: the option for a key's value from a flag (an entry
        of params, env or inputs keeps its path: `inputs.train`)."""
        origin = self.origins.get(path, "")
        flagged = origin.startswith("flag") and path in BY_PATH
        return origin.removeprefix("flag ") if flagged else path

    def problem(self, path: str, message: str, fix: str) -> None:
        self.check.add(self.where(path), self.label(path), message, fix)


def load(
    spec_file: Path | None,
    flags: Flags,
    cwd: Path,
    settings: Settings,
    extra_args: tuple[str, ...] = (),
) -> JobSpec:
    """Read, merge and validate; raises SpecError with every problem found."""
    problems: list[Problem] = []
    check = Checker(problems)
    data: dict[str, Any] = {}
    src = Located(None)
    if spec_file is not None:
        spec_file = (cwd / spec_file).absolute()
        data, src = read_yaml(spec_file, problems)
        if problems:  # an unreadable file: its other keys cannot be judged
            raise SpecError(problems)
    merge = _Merge(check, src, spec_file.parent if spec_file else cwd, cwd)
    _read_section(merge, data, "")
    for key in with_flags():
        if key.path in flags:
            _apply_flag(merge, key, flags[key.path])
    _defaults(merge, spec_file, settings)
    for i, arg in enumerate(extra_args):
        check.no_nul(arg, COMMAND_LINE, f"-- argument {i + 1}")
    _check_values(merge)
    kind = project_kind(merge.values["project"])
    location = _project_location(merge, kind)
    _check_relations(merge, kind, spec_file)
    if problems:
        raise SpecError(sorted(problems, key=_line_of))
    assert location is not None
    return _build(merge, location, kind, spec_file, extra_args)


def _read_section(merge: _Merge, data: dict[Any, Any], section: str) -> None:
    """The file's values of the keys in one section (recursively), each parsed by its kind."""
    keys = children(section)
    merge.check.unknown_keys(
        data, [k.name for k in keys], f"{section}." if section else "", merge.src
    )
    for key in keys:
        if key.name not in data:
            continue
        where = merge.src.where(data, key.name)
        raw = data[key.name]
        if key.kind is Kind.SECTION:
            entries = merge.check.mapping(raw, where, key.path)
            if entries is not None:
                merge.values[key.path], merge.origins[key.path] = True, where
                _read_section(merge, entries, key.path)
            continue
        if key.kind is Kind.DURATION and raw is None:
            merge.origins[key.path] = where  # null: no limit (the default)
            continue
        value = _from_file(merge, key, raw, where)
        if value is not None:
            merge.values[key.path], merge.origins[key.path] = value, where


def _from_file(merge: _Merge, key: Key, raw: object, where: str) -> Any:
    check, path = merge.check, key.path
    if key.kind is Kind.STR:
        return _relative(merge, key, check.string(raw, where, path), merge.spec_dir)
    if key.kind is Kind.TEXT:
        return check.text(raw, where, path)
    if key.kind is Kind.BOOL:
        return check.boolean(raw, where, path)
    if key.kind is Kind.LIST:
        found = check.string_list(raw, where, path)
        return None if found is None else tuple(found)
    if key.kind is Kind.PATHS:
        found = check.string_list(raw, where, path)
        return (
            None if found is None else tuple(merge.spec_dir / os.path.expanduser(p) for p in found)
        )
    if key.kind is Kind.ARGS:
        return check.args(raw, where, path)
    if key.kind is Kind.DURATION:
        return check.duration(raw, where, path)
    entries = check.mapping(raw, where, path)
    if entries is None:
        return None
    out: dict[str, Any] = {}
    for name, value in entries.items():
        at, sub = merge.src.where(entries, name), f"{path}.{name}"
        item: Any
        if key.kind is Kind.PARAMS:
            item = check.param(name, value, at, sub)
        elif key.kind is Kind.ENV:
            item = check.env_var(name, value, at, sub)
        else:  # CHANNELS: name -> path
            text = check.text(value, at, sub)
            item = None if text is None else merge.spec_dir / os.path.expanduser(text)
        if item is not None:
            out[str(name)] = item
            merge.origins[sub] = at
    return out


def _relative(merge: _Merge, key: Key, text: str | None, base: Path) -> str | None:
    """A path key's value made absolute; `resume_from: last` and bare interpreter names (found
    on PATH) stay as they are."""
    if text is None or not key.relative or (text == "last" and key.path == "resume_from"):
        return text
    if key.path == "python.interpreter" and os.sep not in text:
        return text
    return str((base / os.path.expanduser(text)).absolute())


def _apply_flag(merge: _Merge, key: Key, raw: object) -> None:
    """A flag's value over the file's: replaces it, or for -P/-E/--input merges into it."""
    check, flag = merge.check, key.flags[-1]
    origin = f"flag {flag}"
    if key.kind is Kind.BOOL:
        value: Any = bool(raw)
    elif key.kind in (Kind.LIST, Kind.PATHS):
        items = tuple(str(x) for x in raw) if isinstance(raw, (tuple, list)) else (str(raw),)
        value = (
            items
            if key.kind is Kind.LIST
            else tuple(merge.cwd / os.path.expanduser(p) for p in items)
        )
    elif key.kind is Kind.DURATION:
        value = check.duration(raw, COMMAND_LINE, flag)
    elif key.kind in (Kind.PARAMS, Kind.ENV, Kind.CHANNELS):
        value = dict(merge.values.get(key.path, {}))
        _merge_pairs(merge, key, raw, value)
    else:
        text = str(raw)
        if not text.strip():
            check.add(COMMAND_LINE, flag, "is empty", f"give a value to {flag}, or leave it out")
            return
        value = _relative(merge, key, text, merge.cwd)
    if value is None:
        return
    merge.values[key.path], merge.origins[key.path] = value, origin
    if key.section:
        merge.values.setdefault(key.section, True)
        merge.origins.setdefault(key.section, origin)


def _merge_pairs(merge: _Merge, key: Key, raw: object, into: dict[str, Any]) -> None:
    """-P k=v, -E K=V and --input name=PATH, each checked like its entry in a file."""
    check = merge.check
    flag = "/".join(key.flags)
    example = {Kind.PARAMS: "lr=0.01", Kind.ENV: "OMP_NUM_THREADS=4"}.get(key.kind, "train=./data")
    items = raw if isinstance(raw, (tuple, list)) else (raw,)
    short = key.flags[0]
    for name, text in check.pairs((str(i) for i in items), flag, example):
        if key.kind is Kind.PARAMS:
            if not PARAM_KEY.fullmatch(name):
                check.add(
                    COMMAND_LINE,
                    f"{short} {name}",
                    "a parameter name must be letters, digits, '_', '-', '.'",
                    f"rename the parameter, e.g. {short} lr=0.01",
                )
                continue
            value: Any = {"true": True, "false": False}.get(text, text)
            value = (
                value
                if isinstance(value, bool)
                else check.no_nul(value, COMMAND_LINE, f"{short} {name}")
            )
        elif key.kind is Kind.ENV:
            value = check.env_var(name, text, COMMAND_LINE, f"{short} {name}")
        else:
            value = merge.cwd / os.path.expanduser(text)
        if value is not None:
            into[name] = value
            merge.origins[f"{key.path}.{name}"] = f"flag {key.flags[-1]}"


def _defaults(merge: _Merge, spec_file: Path | None, settings: Settings) -> None:
    """What is not in the file or the flags: the environment's, then torchjob's own."""
    values, origins = merge.values, merge.origins
    if "python.interpreter" not in values and settings.python_launcher:
        launcher = settings.python_launcher  # a variable's relative path starts at the cwd
        values["python.interpreter"] = (
            launcher if os.sep not in launcher else str((merge.cwd / launcher).absolute())
        )
        origins["python.interpreter"] = "$PYTHON_LAUNCHER"
    if "project" not in values:
        values["project"] = str(merge.spec_dir)
        origins["project"] = (
            "default (the spec's folder)" if spec_file else "default (the current folder)"
        )
    if "script" in values and "name" not in values:
        values["name"] = Path(values["script"]).stem or "job"
        origins["name"] = "default (the script's name)"
    if "grace" not in values:
        distributed = "distributed" in values
        values["grace"] = DISTRIBUTED_GRACE_S if distributed else DEFAULT_GRACE_S
        origins["grace"] = "default (torchrun's 30 s, and more)" if distributed else "default"
    for key, default in (("python.manager", "none"), ("timeout", None)):
        if key not in values:
            values[key] = default
            origins.setdefault(key, "default")


def _check_values(merge: _Merge) -> None:
    """Each value against its key's choices or pattern, and the one-line rules."""
    values = merge.values
    for path, value in list(values.items()):
        key = BY_PATH.get(path)
        if key is None or not isinstance(value, str):
            continue
        if (bad := key.check(value)) is not None:
            merge.problem(path, *bad)
    name = values.get("name")
    if isinstance(name, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        merge.problem("name", "holds control characters (a newline, say)", "use a one-line name")
    for path, value in values.get("inputs", {}).items():
        sub = f"inputs.{path}"
        if not CHANNEL.fullmatch(path):
            merge.problem(sub, "a channel name is letters, digits and '_'", "rename it, e.g. train")
        elif not value.exists():
            merge.problem(sub, f"{value} does not exist", "give an existing file or folder")
    for path in values.get("files", ()):
        if not path.exists():
            merge.problem(
                "files", f"{path} does not exist", "give existing files or folders to copy"
            )
    resume = values.get("resume_from")
    if resume is not None and resume != "last" and not Path(resume).exists():
        merge.problem(
            "resume_from", f"checkpoint {resume} does not exist", "give a checkpoint path, or last"
        )


def _check_relations(merge: _Merge, kind: str, spec_file: Path | None) -> None:
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
    low, _, high = str(values.get("distributed.nnodes", "1")).partition(":")
    if high.isdigit() and low.isdigit() and int(low) > int(high):
        merge.problem(
            "distributed.nnodes", f"{low}:{high} has its minimum above its maximum", "write MIN:MAX"
        )
    if values.get("backend.type") not in (None, "local") or (
        "backend" in values and "backend.type" not in values
    ):
        _check_slurm(merge)
    if "script" not in values and not merge.check.problems and "script" not in merge.check.guessed:
        merge.check.add(
            f"{spec_file}:1" if spec_file else COMMAND_LINE,
            "script",
            "no script to run",
            "add `script: train.py` to the spec or pass --script train.py",
        )


def _check_slurm(merge: _Merge) -> None:
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


def _project_location(merge: _Merge, kind: str) -> str | None:
    """An absolute path for a local folder or archive (which must exist), else the URL as is.
    Relative paths start at the spec's folder, or at the current folder for --project."""
    project = merge.values["project"]
    if kind == "git" or "://" in project:
        return str(project)
    base = merge.cwd if merge.origins["project"].startswith("flag") else merge.spec_dir
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
            "give an existing folder or archive (relative paths start at the spec's folder)",
        )
        return None
    return f"{path}{sep}{subdir}"


def _section(values: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The values of one section's keys, by field name."""
    return {k.name: values[k.path] for k in children(section) if k.path in values}


def _build(
    merge: _Merge, location: str, kind: str, spec_file: Path | None, extra_args: tuple[str, ...]
) -> JobSpec:
    values = merge.values
    outputs = {k: Path(v) for k, v in _section(values, "outputs").items()}
    backend = None
    if "backend" in values and values.get("backend.type", "slurm") != "local":
        backend = BackendSpec(**_section(values, "backend"))
    top = {
        k.name: values[k.path]
        for k in children("")
        if k.path in values and k.kind is not Kind.SECTION
    }
    top.update(project=location, resume_from=values.get("resume_from"))
    return JobSpec(
        **top,
        project_kind=kind,
        spec_file=spec_file,
        extra_args=extra_args,
        python=PythonSpec(**_section(values, "python")),
        outputs=OutputsSpec(**outputs),
        distributed=DistributedSpec(**_section(values, "distributed"))
        if "distributed" in values
        else None,
        backend=backend,
        origins=dict(merge.origins),
    )


def _line_of(problem: Problem) -> int:
    """Sort key: file problems by line, command-line problems after them."""
    head, _, line = problem.where.rpartition(":")
    return int(line) if head and line.isdigit() else 1 << 30
