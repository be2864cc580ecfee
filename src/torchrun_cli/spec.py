"""The job spec: YAML (safe-loaded, with line numbers) merged with flags, validated all at once.

Precedence is default < file < flag. Every problem names where it is (file:line or the flag),
the key path and a fix, so a user corrects a spec in one pass instead of one error per run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrun_cli.errors import Problem, SpecError
from torchrun_cli.masking import hide_query, mask_argv, mask_mapping, mask_text
from torchrun_cli.speccheck import ENV_NAME, PARAM_KEY, Checker
from torchrun_cli.yamlfile import Located, read_yaml

TOP_KEYS = ("name", "project", "ref", "script", "args", "params", "python", "env", "timeout",
            "grace", "files", "allow_insecure_source", "git_token_env", "submodules", "inputs",
            "outputs", "resume_from", "compat", "distributed", "gpus", "backend")
OUTPUT_KEYS = ("model_dir", "output_dir")
DIST_KEYS = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id",
             "max_restarts", "monitor_interval")
COMPAT = ("sagemaker", "ti")
_CHANNEL = re.compile(r"[A-Za-z0-9_]+")
PYTHON_KEYS = ("interpreter", "manager", "version", "requirements", "packages", "conda_file",
               "system_site_packages")
MANAGERS = ("none", "virtualenv", "uv", "conda")
DEFAULT_GRACE_S = 10.0
DISTRIBUTED_GRACE_S = 45.0  # torchrun gives its workers 30 s after SIGTERM

_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*(://|::)|^[^/\s]+@[^/\s]+:|^-", re.IGNORECASE)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def project_kind(project: str) -> str:
    """`local` folder, `archive` (a local file or a URL), or `git`, from how it is written."""
    location = project.split("#", 1)[0]
    path = location.split("?", 1)[0] if "://" in location else location  # a signed URL
    is_archive = path.lower().endswith(ARCHIVE_SUFFIXES)
    if _REMOTE.search(project):
        return "archive" if is_archive and "://" in location else "git"
    return "archive" if is_archive else "local"


@dataclass(frozen=True)
class Overrides:
    """What the flags of `run` say; None or empty means the flag was not given."""

    script: str | None = None
    project: str | None = None
    python: str | None = None
    name: str | None = None
    timeout: str | None = None
    grace: str | None = None
    params: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    ref: str | None = None
    files: tuple[str, ...] = ()
    allow_insecure_source: bool = False
    inputs: tuple[str, ...] = ()
    resume_from: str | None = None
    compat: str | None = None
    nproc_per_node: str | None = None
    nnodes: str | None = None
    rdzv_endpoint: str | None = None
    gpus: str | None = None
    backend: str | None = None
    partition: str | None = None
    nodes: str | None = None
    env_manager: str | None = None
    python_version: str | None = None
    requirements: str | None = None
    pip: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """The merged, validated job: plain values, with where each came from."""

    name: str
    project: str
    project_kind: str
    script: str
    args: tuple[str, ...]
    params: Mapping[str, str | bool]
    extra_args: tuple[str, ...]
    interpreter: str | None
    interpreter_base: Path
    manager: str
    env: Mapping[str, str]
    timeout: float | None
    grace: float
    spec_file: Path | None
    origins: Mapping[str, str] = field(default_factory=dict)
    ref: str | None = None
    files: tuple[Path, ...] = ()
    inputs: Mapping[str, Path] = field(default_factory=dict)
    outputs: Mapping[str, Path] = field(default_factory=dict)
    resume_from: str | None = None
    compat: str | None = None
    distributed: Mapping[str, Any] | None = None
    gpus: str | None = None
    backend: Mapping[str, Any] | None = None
    allow_insecure_source: bool = False
    git_token_env: str | None = None
    submodules: bool = False
    python_version: str | None = None
    requirements: str | None = None
    packages: tuple[str, ...] = ()
    conda_file: str | None = None
    system_site_packages: bool = False

    def script_argv(self) -> list[str]:
        """Arguments for the script: spec args, then params as `--key value`, then `-- ARGS`."""
        out = list(self.args)
        for key, value in self.params.items():
            if value is True:
                out.append(f"--{key}")
            elif value is not False:
                out += [f"--{key}", value]
        return out + list(self.extra_args)

    def masked(self) -> dict[str, Any]:
        """The effective spec for run.json and --dry-run, secret values replaced by ****."""
        return {
            "name": self.name,
            "project": hide_query(mask_text(self.project)),
            "ref": self.ref,
            "script": self.script,
            "args": mask_argv(self.args),
            "params": mask_mapping(self.params),
            "extra_args": mask_argv(self.extra_args),
            "python": {"interpreter": self.interpreter, "manager": self.manager,
                       "version": self.python_version, "requirements": self.requirements,
                       "packages": list(self.packages), "conda_file": self.conda_file,
                       "system_site_packages": self.system_site_packages},
            "env": mask_mapping(self.env),
            "timeout": self.timeout,
            "grace": self.grace,
            "spec_file": str(self.spec_file) if self.spec_file else None,
            "files": [str(f) for f in self.files],
            "inputs": {k: str(v) for k, v in self.inputs.items()},
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "resume_from": self.resume_from,
            "compat": self.compat,
            "distributed": dict(self.distributed) if self.distributed is not None else None,
            "gpus": self.gpus,
            "backend": dict(self.backend) if self.backend is not None else None,
            "allow_insecure_source": self.allow_insecure_source,
            "git_token_env": self.git_token_env,
            "submodules": self.submodules,
        }


def load(spec_file: Path | None, flags: Overrides, cwd: Path) -> JobSpec:
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
    base = spec_file.parent if spec_file else cwd
    check.unknown_keys(data, TOP_KEYS, "", src)
    origins: dict[str, str] = {}

    def from_file(key: str, getter: Callable[[], Any]) -> Any:
        if key not in data:
            return None
        origins[key] = src.where(data, key)
        return getter()

    name = from_file("name", lambda: check.string(data, "name", "name", src))
    project = from_file("project", lambda: check.string(data, "project", "project", src))
    ref = from_file("ref", lambda: check.string(data, "ref", "ref", src))
    script = from_file("script", lambda: check.string(data, "script", "script", src))
    args = from_file("args", lambda: check.args(data, src)) or ()
    timeout = from_file(
        "timeout", lambda: check.duration(data["timeout"], src.where(data, "timeout"), "timeout"))
    grace = from_file(
        "grace", lambda: check.duration(data["grace"], src.where(data, "grace"), "grace"))
    insecure = from_file("allow_insecure_source",
                         lambda: check.boolean(data, "allow_insecure_source", src))
    submodules = from_file("submodules", lambda: check.boolean(data, "submodules", src))
    token_env = from_file("git_token_env",
                          lambda: check.string(data, "git_token_env", "git_token_env", src))
    if token_env is not None and not ENV_NAME.fullmatch(token_env):
        check.add(src.where(data, "git_token_env"), "git_token_env",
                  "must name an environment variable", "write e.g. `git_token_env: GH_TOKEN`")
    files = [(base / os.path.expanduser(f), origins["files"]) for f in
             from_file("files", lambda: check.string_list(data, "files", src)) or ()]
    params: dict[str, str | bool] = {}
    env: dict[str, str] = {}
    if "params" in data and (entries := check.mapping(data, "params", src)) is not None:
        check.param_entries(entries, src, params)
    if "env" in data and (entries := check.mapping(data, "env", src)) is not None:
        check.env_entries(entries, src, env)
    py_values = _python_section(data, src, check, origins)
    interpreter = py_values.get("interpreter")
    interpreter_base = base

    # Flags override the file.
    for flag, value in (("--name", flags.name), ("--project", flags.project),
                        ("--script", flags.script), ("--python", flags.python),
                        ("--ref", flags.ref)):
        if value is not None and not value.strip():
            check.add("command line", flag, "is empty", f"give a value to {flag}, or leave it out")
    if flags.name is not None:
        name, origins["name"] = flags.name, "flag --name"
    if name is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        check.add(origins["name"] if not origins["name"].startswith("flag") else "command line",
                  "name", "holds control characters (a newline, say)", "use a one-line name")
    if flags.project is not None:
        project, origins["project"] = flags.project, "flag --project"
        base = cwd
    if flags.ref is not None:
        ref, origins["ref"] = flags.ref, "flag --ref"
    if flags.allow_insecure_source:
        insecure, origins["allow_insecure_source"] = True, "flag --allow-insecure-source"
    if flags.files:
        files = [(cwd / os.path.expanduser(f), "command line") for f in flags.files]
        origins["files"] = "flag --file"
    inputs, outputs = _channels_and_outputs(data, src, check, base, origins)
    for key, value in check.pairs(flags.inputs, "--input", "train=./data"):
        inputs[key] = (cwd / os.path.expanduser(value), "command line")
    for name, (path, where) in inputs.items():
        if not _CHANNEL.fullmatch(name):
            check.add(where, f"inputs.{name}", "a channel name is letters, digits and '_'",
                      "rename it, e.g. train")
        elif not path.exists():
            check.add(where, f"inputs.{name}", f"{path} does not exist",
                      "give an existing file or folder")
    resume = from_file("resume_from",
                       lambda: check.string(data, "resume_from", "resume_from", src))
    compat = from_file("compat", lambda: check.string(data, "compat", "compat", src))
    if flags.resume_from is not None:
        resume, origins["resume_from"] = flags.resume_from, "flag --resume"
    if flags.compat is not None:
        compat, origins["compat"] = flags.compat, "flag --compat"
    if compat is not None and compat not in COMPAT:
        check.add(_where(origins, "compat"), "compat", f"unknown compat {compat!r}",
                  f"use one of {', '.join(COMPAT)}")
    if resume is not None and resume != "last":
        base_dir = cwd if origins["resume_from"].startswith("flag") else base
        resume = str((base_dir / os.path.expanduser(resume)).absolute())
        if not Path(resume).exists():
            check.add(_where(origins, "resume_from"), "resume_from",
                      f"checkpoint {resume} does not exist", "give a checkpoint path, or last")
    dist, gpus = _distributed_section(data, src, check, origins, flags)
    backend = _backend_section(data, src, check, flags)
    if backend is not None:
        _nodes_agree(dist, backend, src.where(data, "backend") if "backend" in data
                     else "command line", check)
    for path, where in files:
        if not path.exists():
            check.add(where, "--file" if where == "command line" else "files",
                      f"{path} does not exist", "give existing files or folders to copy")
    if flags.script is not None:
        script, origins["script"] = flags.script, "flag --script"
    if flags.python is not None:
        interpreter, origins["python.interpreter"] = flags.python, "flag --python"
        interpreter_base = cwd
    for key, value, flag in (("manager", flags.env_manager, "--env-manager"),
                             ("version", flags.python_version, "--python-version"),
                             ("requirements", flags.requirements, "--requirements")):
        if value is not None:
            py_values[key], origins[f"python.{key}"] = value, f"flag {flag}"
    if flags.pip:
        py_values["packages"], origins["python.packages"] = list(flags.pip), "flag --pip"
    manager = py_values.get("manager") or "none"
    if manager not in MANAGERS:
        check.add(_where(origins, "python.manager"), "python.manager",
                  f"unknown manager {manager!r}", f"use one of {', '.join(MANAGERS)}")
    if manager == "conda" and not py_values.get("version"):
        check.add(_where(origins, "python.manager"), "python.version",
                  "conda needs a python version", 'add `version: "3.11"` under python, or '
                  "pass --python-version 3.11")
    if flags.timeout is not None:
        timeout, origins["timeout"] = check.duration(flags.timeout, "command line",
                                                     "--timeout"), "flag --timeout"
    if flags.grace is not None:
        grace, origins["grace"] = check.duration(flags.grace, "command line",
                                                 "--grace"), "flag --grace"
    for key, value in check.pairs(flags.params, "-P/--param", "lr=0.01"):
        if not PARAM_KEY.fullmatch(key):
            check.add("command line", f"-P {key}", "a parameter name must be letters, digits, "
                      "'_', '-', '.'", "rename the parameter, e.g. -P lr=0.01")
            continue
        params[key] = {"true": True, "false": False}.get(value, value)
        origins[f"params.{key}"] = "flag -P"
    for key, value in check.pairs(flags.env, "-E/--env", "OMP_NUM_THREADS=4"):
        check._env_one(key, value, "command line", f"-E {key}", env)
    for i, arg in enumerate(flags.args):
        check._no_nul(arg, "command line", f"-- argument {i + 1}")

    kind = project_kind(project) if project else "local"
    location = _project_location(project, kind, base, origins, check)
    if ref is not None and kind != "git":
        check.add(origins["ref"] if not origins["ref"].startswith("flag") else "command line",
                  "ref", "a ref applies to git projects only",
                  "remove it, or give a git URL as the project")
    if not script and not problems and "script" not in check.guessed:
        where = f"{spec_file}:1" if spec_file else "command line"
        check.add(where, "script", "no script to run",
                  "add `script: train.py` to the spec or pass --script train.py")
    if problems:
        raise SpecError(sorted(problems, key=_line_of))
    assert location is not None and script
    return JobSpec(
        name=name or Path(script).stem or "job",
        project=location,
        project_kind=kind,
        script=script,
        args=tuple(args),
        params=params,
        extra_args=tuple(flags.args),
        interpreter=interpreter,
        interpreter_base=interpreter_base,
        manager=manager,
        python_version=py_values.get("version"),
        requirements=py_values.get("requirements"),
        packages=tuple(py_values.get("packages") or ()),
        conda_file=py_values.get("conda_file"),
        system_site_packages=bool(py_values.get("system_site_packages")),
        env=env,
        timeout=timeout,
        grace=grace if grace is not None else (DISTRIBUTED_GRACE_S if dist else DEFAULT_GRACE_S),
        spec_file=spec_file,
        origins=origins,
        ref=ref,
        files=tuple(path.absolute() for path, _ in files),
        inputs={k: p.absolute() for k, (p, _) in inputs.items()},
        outputs=outputs,
        resume_from=resume,
        compat=compat,
        distributed=dist,
        gpus=gpus,
        backend=backend,
        allow_insecure_source=bool(insecure),
        git_token_env=token_env,
        submodules=bool(submodules),
    )


def _where(origins: dict[str, str], key: str) -> str:
    where = origins.get(key, "command line")
    return "command line" if where.startswith("flag") else where


def _channels_and_outputs(
    data: dict[str, Any], src: Located, check: Checker, base: Path, origins: dict[str, str]
) -> tuple[dict[str, tuple[Path, str]], dict[str, Path]]:
    """`inputs:` (channel name -> path) and `outputs:` (model_dir, output_dir), from the file."""
    inputs: dict[str, tuple[Path, str]] = {}
    outputs: dict[str, Path] = {}
    if "inputs" in data and (entries := check.mapping(data, "inputs", src)) is not None:
        origins["inputs"] = src.where(data, "inputs")
        for name, value in entries.items():
            text = check.scalar_text(value, src.where(entries, name), f"inputs.{name}")
            if text is not None:
                inputs[str(name)] = (base / os.path.expanduser(text), src.where(entries, name))
    if "outputs" in data and (entries := check.mapping(data, "outputs", src)) is not None:
        check.unknown_keys(entries, OUTPUT_KEYS, "outputs.", src)
        for key in OUTPUT_KEYS:
            if key in entries:
                text = check.string(entries, key, f"outputs.{key}", src)
                if text is not None:
                    outputs[key] = (base / os.path.expanduser(text)).absolute()
    return inputs, outputs


def _distributed_section(data: dict[str, Any], src: Located, check: Checker,
                         origins: dict[str, str], flags: Overrides
                         ) -> tuple[dict[str, Any] | None, str | None]:
    """`distributed:` (torchrun's settings) and `gpus:`, with their flags on top."""
    dist: dict[str, Any] | None = None
    if "distributed" in data and (entries := check.mapping(data, "distributed", src)) is not None:
        check.unknown_keys(entries, DIST_KEYS, "distributed.", src)
        dist = {}
        for key in DIST_KEYS:
            if key in entries:
                text = check.scalar_text(entries[key], src.where(entries, key),
                                         f"distributed.{key}")
                if text is not None:
                    dist[key] = text
    for key, value in (("nproc_per_node", flags.nproc_per_node), ("nnodes", flags.nnodes),
                       ("rdzv_endpoint", flags.rdzv_endpoint)):
        if value is not None:
            dist = {**(dist or {}), key: value}
            origins[f"distributed.{key}"] = f"flag --{key.replace('_', '-')}"
    for key, pattern in (("nproc_per_node", r"auto|[1-9]\d*"),
                         ("nnodes", r"[1-9]\d*(:[1-9]\d*)?"),
                         ("node_rank", r"\d+"), ("max_restarts", r"\d+"),
                         ("monitor_interval", r"\d+(\.\d+)?")):
        if dist and key in dist and not re.fullmatch(pattern, str(dist[key])):
            check.add(_where(origins, f"distributed.{key}") if f"distributed.{key}" in origins
                      else (src.where(data, "distributed") if "distributed" in data
                            else "command line"), f"distributed.{key}",
                      f"bad value {dist[key]!r}", "see `torchjob run --help` for the forms")
    low, _, high = str((dist or {}).get("nnodes", "1")).partition(":")
    if high.isdigit() and low.isdigit() and int(low) > int(high):
        check.add(_where(origins, "distributed.nnodes") if "distributed.nnodes" in origins
                  else src.where(data, "distributed"), "distributed.nnodes",
                  f"{low}:{high} has its minimum above its maximum", "write MIN:MAX")
    gpus = data.get("gpus") if isinstance(data.get("gpus"), str) else None
    if "gpus" in data and gpus is None:
        gpus = check.scalar_text(data["gpus"], src.where(data, "gpus"), "gpus")
    if flags.gpus is not None:
        gpus = flags.gpus
    if gpus is not None and not re.fullmatch(r"\d+(,\d+)*", gpus):
        check.add(src.where(data, "gpus") if flags.gpus is None else "command line", "gpus",
                  f"bad GPU list {gpus!r}", 'write GPU ids like "0,1"')
    return dist, gpus


def _nodes_agree(dist: dict[str, Any] | None, backend: dict[str, Any], where: str,
                 check: Checker) -> None:
    """Slurm's node count and torchrun's must be one number: other nodes would idle, or the
    rendezvous would wait for nodes that never come."""
    nodes = str(backend.get("nodes") or 1)
    if not nodes.isdigit():
        return  # reported by _backend_section
    if dist is None and nodes != "1":
        check.add(where, "backend.nodes", f"{nodes} nodes, but only torchrun (`distributed:`) "
                  "runs on more than one", "add `distributed:`, or use nodes: 1")
    elif dist is not None and "nnodes" in dist and str(dist["nnodes"]) != nodes:
        check.add(where, "distributed.nnodes", f"nnodes {dist['nnodes']} but Slurm nodes "
                  f"{nodes}", "leave distributed.nnodes out: under Slurm it is backend.nodes")


def _backend_section(data: dict[str, Any], src: Located, check: Checker,
                     flags: Overrides) -> dict[str, Any] | None:
    """`backend: {type: slurm, partition, nodes, ...}` and --backend/--partition/--nodes."""
    if "backend" not in data and flags.backend is None and flags.partition is None \
            and flags.nodes is None:
        return None
    from torchrun_cli.slurm import CONTROL, KEYS, check_extra

    backend: dict[str, Any] | None = None
    where = src.where(data, "backend") if "backend" in data else "command line"
    if "backend" in data and (entries := check.mapping(data, "backend", src)) is not None:
        check.unknown_keys(entries, KEYS, "backend.", src)
        backend = {}
        for key in KEYS:
            if key == "extra_args" and key in entries:
                backend[key] = check.string_list(entries, key, src, "backend.extra_args") or []
            elif key in entries:
                backend[key] = check.scalar_text(entries[key], src.where(entries, key),
                                                 f"backend.{key}")
    for key, value in (("type", flags.backend), ("partition", flags.partition),
                       ("nodes", flags.nodes)):
        if value is not None:
            backend = {**(backend or {}), key: value}
    if backend is None:
        return None
    if backend.get("type") not in ("slurm", "local"):
        check.add(where, "backend.type", f"unknown backend {backend.get('type')!r}",
                  "use `type: slurm` (or leave backend out to run here)")
    if backend.get("type") == "local":
        return None
    if bad := check_extra(backend.get("extra_args") or []):
        check.add(where, "backend.extra_args", f"not allowed: {' '.join(bad)}",
                  "use --option=value forms of sbatch options torchjob allows (see README)")
    for key, value in backend.items():  # each becomes an #SBATCH line: one line, no comment
        if isinstance(value, str) and (CONTROL.search(value) or "#" in value):  # Slurm: a comment
            check.add(where, f"backend.{key}", f"{value!r} holds a control character or '#'",
                      "write it on one line, without '#'")
    for key in ("nodes", "gpus_per_node", "cpus_per_task"):
        if backend.get(key) is not None and not re.fullmatch(r"[1-9]\d*", str(backend[key])):
            check.add(where, f"backend.{key}", f"bad value {backend[key]!r}",
                      "write a whole number")
    return backend


def _python_section(data: dict[str, Any], src: Located, check: Checker,
                    origins: dict[str, str]) -> dict[str, Any]:
    """The `python:` mapping: interpreter, manager and what goes into the environment."""
    out: dict[str, Any] = {}
    if "python" not in data or (py := check.mapping(data, "python", src)) is None:
        return out
    check.unknown_keys(py, PYTHON_KEYS, "python.", src)
    for key in ("interpreter", "manager", "version", "requirements", "conda_file"):
        if key in py:
            origins[f"python.{key}"] = src.where(py, key)
            out[key] = check.string(py, key, f"python.{key}", src)
    if "packages" in py:
        origins["python.packages"] = src.where(py, "packages")
        out["packages"] = check.string_list(py, "packages", src, "python.packages")
    if "system_site_packages" in py:
        out["system_site_packages"] = check.boolean(py, "system_site_packages", src)
    return out


def _line_of(problem: Problem) -> int:
    """Sort key: file problems by line, command-line problems after them."""
    head, _, line = problem.where.rpartition(":")
    return int(line) if head and line.isdigit() else 1 << 30


def _project_location(
    project: str | None,
    kind: str,
    base: Path,
    origins: dict[str, str],
    check: Checker,
) -> str | None:
    """An absolute path for a local folder or archive (which must exist), else the URL as is.

    Relative paths start at the spec's folder, or at the current folder for --project.
    """
    if project is None:
        return None if "project" in origins else str(base)
    if kind == "git" or "://" in project:
        return project
    where = origins.get("project", "command line")
    where = "command line" if where.startswith("flag") else where
    key = "--project" if where == "command line" else "project"
    location, sep, subdir = project.partition("#")
    path = (base / os.path.expanduser(location)).resolve()
    ok = path.is_file() if kind == "archive" else path.is_dir()
    if not ok:
        what = "does not exist" if not path.exists() else (
            "is not a file" if kind == "archive" else "is not a folder")
        check.add(where, key, f"project {kind} {path} {what}",
                  "give an existing folder or archive (relative paths start at the spec's folder)")
        return None
    return f"{path}{sep}{subdir}"
