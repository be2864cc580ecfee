"""The job spec: YAML (safe-loaded, with line numbers) merged with settings and flags, walked
by the key table, validated all at once.

Precedence is default < config file < environment < file < flag, and every effective value
keeps where it came from. Every problem names where it is (file:line or the command line), the
key path and a fix, so a user corrects a spec in one pass instead of one error per run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.errors import Problem, SpecError
from torchrun_cli.settings import Settings
from torchrun_cli.spec import forms
from torchrun_cli.spec.checks import Checker
from torchrun_cli.spec.keys import (
    PARAM_KEY,
    Key,
    Kind,
    children,
    with_flags,
)
from torchrun_cli.spec.model import (
    DEFAULT_GRACE_S,
    DISTRIBUTED_GRACE_S,
    BackendSpec,
    DistributedSpec,
    JobSpec,
    MetricsSpec,
    OutputsSpec,
    PythonSpec,
    RetentionSpec,
)
from torchrun_cli.spec.refs import Scope
from torchrun_cli.spec.rules import (
    COMMAND_LINE,
    Merge,
    check_relations,
    check_values,
    link,
    project_location,
)
from torchrun_cli.spec.yaml import Located, read_yaml

Flags = Mapping[str, object]  # key path -> what its option said (only options that were given)
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*(://|::)|^[^/\s]+@[^/\s]+:|^-", re.IGNORECASE)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
SINGLE = Scope()  # a single job: references name its own inputs and params


def project_kind(project: str) -> str:
    """`local` folder, `archive` (a local file or a URL), or `git`, from how it is written."""
    location = project.split("#", 1)[0]
    path = location.split("?", 1)[0] if "://" in location else location  # a signed URL
    is_archive = path.lower().endswith(ARCHIVE_SUFFIXES)
    if _REMOTE.search(project):
        return "archive" if is_archive and "://" in location else "git"
    return "archive" if is_archive else "local"


class Layer(NamedTuple):
    """One mapping of spec keys (a file, a pipeline's defaults or step) and where relative
    paths in it start. Later layers override earlier ones key by key; params, env and inputs
    merge entry by entry."""

    data: dict[str, Any]
    src: Located
    base: Path


def load(
    spec_file: Path | None,
    flags: Flags,
    cwd: Path,
    settings: Settings,
    extra_args: tuple[str, ...] = (),
    read: tuple[dict[str, Any], Located] | None = None,
) -> JobSpec:
    """Read (unless `read` holds the file's mapping and lines), merge and validate; raises
    SpecError with every problem found."""
    problems: list[Problem] = []
    layers = []
    if spec_file is not None:
        spec_file = (cwd / spec_file).absolute()
        data, src = read or read_yaml(spec_file, problems)
        if problems:  # an unreadable file: its other keys cannot be judged
            raise SpecError(problems)
        layers.append(Layer(data, src, spec_file.parent))
    spec = build(layers, flags, cwd, settings, problems, spec_file, extra_args)
    if problems:
        raise SpecError(sorted(problems, key=line_of))
    assert spec is not None
    return spec


def read_spec(path: Path | None) -> tuple[dict[str, Any], Located] | None:
    """A spec file's mapping and lines, read once (`steps:` makes it a pipeline); raises
    SpecError when it cannot be read."""
    if path is None:
        return None
    problems: list[Problem] = []
    data, src = read_yaml(path.absolute(), problems)
    if problems:
        raise SpecError(problems)
    return data, src


def build(
    layers: list[Layer],
    flags: Flags,
    cwd: Path,
    settings: Settings,
    problems: list[Problem],
    spec_file: Path | None,
    extra_args: tuple[str, ...] = (),
    scope: Scope = SINGLE,
) -> JobSpec | None:
    """One job spec from its layers, the flags and the settings; problems are added to the
    list (None when there are any). `scope` says what references may name: a pipeline step's
    steps and the pipeline's params, or (by default) a single job's own inputs and params."""
    check = Checker(problems, scope.prefix)
    merge = Merge(check, Located(None), spec_file.parent if spec_file else cwd, cwd)
    merge.anchor = scope.where
    for layer in layers:
        merge.src, merge.spec_dir = layer.src, layer.base
        _read_section(merge, layer.data, "")
    merge.spec_dir = spec_file.parent if spec_file else cwd
    for key in with_flags():
        if key.path in flags:
            _apply_flag(merge, key, flags[key.path])
    _defaults(merge, spec_file, settings)
    for i, arg in enumerate(extra_args):
        check.no_nul(arg, COMMAND_LINE, f"-- argument {i + 1}")
    link(merge, scope)
    check_values(merge)
    kind = project_kind(merge.values["project"])
    location = project_location(merge, kind)
    check_relations(merge, kind, spec_file)
    if check.problems_added:
        return None
    assert location is not None
    return _build(merge, location, kind, spec_file, extra_args)


def _read_section(merge: Merge, data: dict[Any, Any], section: str) -> None:
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
        if key.path == "retries":
            raw = forms.retries_mapping(merge, raw, where)
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
            if key.kind in (Kind.PARAMS, Kind.ENV, Kind.CHANNELS):  # a later layer adds
                value = {**merge.values.get(key.path, {}), **value}
            merge.values[key.path], merge.origins[key.path] = value, where
            merge.bases[key.path] = merge.spec_dir


def _from_file(merge: Merge, key: Key, raw: object, where: str) -> Any:
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
        found = check.string_list(forms.files(merge, raw, where, path), where, path)
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
        else:  # CHANNELS: name -> path, or {path, arg}
            item = forms.channel(merge, value, at, sub)
        if item is not None:
            out[str(name)] = item
            merge.origins[sub] = at
    return out


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _relative(merge: Merge, key: Key, text: str | None, base: Path) -> str | None:
    """A path key's value made absolute; `resume_from: last` and bare interpreter names (found
    on PATH) stay as they are."""
    if text is None or not key.relative or (text == "last" and key.path == "resume_from"):
        return text
    if merge.anchor and key.section == "outputs" and not os.path.isabs(os.path.expanduser(text)):
        return text  # a step's: inside its run folder, as every run of it has its own
    if key.path == "python.interpreter":  # DolphinScheduler's `${PYTHON_LAUNCHER}`, and only here
        text = _VARIABLE.sub(lambda m: os.environ.get(m[1] or m[2], m[0]), text)
        if os.sep not in text or "$" in text:  # a name on PATH; an unset variable: see rules
            return text
    return str((base / os.path.expanduser(text)).absolute())


def _apply_flag(merge: Merge, key: Key, raw: object) -> None:
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


def _merge_pairs(merge: Merge, key: Key, raw: object, into: dict[str, Any]) -> None:
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
                    "a parameter name is letters, digits, '_', '-', '.' (or an option: -v, --x)",
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


def _defaults(merge: Merge, spec_file: Path | None, settings: Settings) -> None:
    """What is not in the file or the flags: the environment's, then the config files', then
    torchjob's own."""
    values, origins = merge.values, merge.origins
    if "python.interpreter" not in values and settings.python_launcher:
        launcher = settings.python_launcher  # a variable's relative path starts at the cwd
        values["python.interpreter"] = (
            launcher if os.sep not in launcher else str((merge.cwd / launcher).absolute())
        )
        origins["python.interpreter"] = "$PYTHON_LAUNCHER"
    configured = {
        "python.interpreter": ("python", settings.python),
        "python.manager": ("env_manager", settings.env_manager),
        "tty": ("tty", settings.tty),
    }
    for path, (name, value) in configured.items():
        if path not in values and value is not None:
            values[path], origins[path] = value, settings.origins[name]
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
        least = DISTRIBUTED_GRACE_S if distributed else DEFAULT_GRACE_S
        if settings.grace is not None and (settings.grace >= least or not distributed):
            values["grace"], origins["grace"] = settings.grace, settings.origins["grace"]
        else:  # a config's shorter grace would kill torchrun before its workers stop
            values["grace"] = least
            origins["grace"] = "default"
            if distributed:
                less = (
                    "" if settings.grace is None else f"; the config's {settings.grace:g}s is less"
                )
                origins["grace"] = f"default (torchrun's 30 s, and more{less})"
    defaults = (("python.manager", "none"), ("timeout", None), ("tty", "auto"))
    for key, default in (*defaults, ("concurrency", "allow")):
        if key not in values:
            values[key] = default
            origins.setdefault(key, "default")


def _section(values: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The values of one section's keys, by field name."""
    return {k.name: values[k.path] for k in children(section) if k.path in values}


def _build(
    merge: Merge, location: str, kind: str, spec_file: Path | None, extra_args: tuple[str, ...]
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
    files = [str(f) for f in values.get("files", ())]
    top["files"] = tuple(Path(f.removesuffix(forms.UNPACK)) for f in files)
    top["unpack"] = tuple(
        Path(f.removesuffix(forms.UNPACK)) for f in files if f.endswith(forms.UNPACK)
    )
    top["input_args"] = {k: v for k, v in merge.input_args.items() if k in values.get("inputs", {})}
    return JobSpec(
        **top,
        project_kind=kind,
        spec_file=spec_file,
        extra_args=extra_args,
        python=PythonSpec(**_section(values, "python")),
        outputs=OutputsSpec(**outputs),
        retries=forms.retries(values),
        metrics=MetricsSpec(**_section(values, "metrics")),
        retention=RetentionSpec(
            int(values["retention.keep"]) if "retention.keep" in values else None,
            values.get("retention.max_age"),
        ),
        distributed=DistributedSpec(**_section(values, "distributed"))
        if "distributed" in values
        else None,
        backend=backend,
        origins=dict(merge.origins),
    )


def line_of(problem: Problem) -> int:
    """Sort key: file problems by line, command-line problems after them."""
    head, _, line = problem.where.rpartition(":")
    return int(line) if head and line.isdigit() else 1 << 30
