"""The environment stage: the interpreter as it is (`none`), or an environment built by
virtualenv, uv or conda, cached by a key over everything that goes into it.

The builders, the key and the cache are imported only when a managed environment is asked
for (measured: virtualenv's and configparser's imports are not paid by `--env-manager none`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from torchrun_cli import store
from torchrun_cli.envs.interpreter import resolve_interpreter
from torchrun_cli.errors import SetupError
from torchrun_cli.masking import mask_argv
from torchrun_cli.record import RunDir
from torchrun_cli.settings import Settings
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.steps import Steps

if TYPE_CHECKING:
    from torchrun_cli.envs.builders import BuildRequest
    from torchrun_cli.envs.cache import Lease

_VERSION = "import platform; print(platform.python_version())"


class Environment(NamedTuple):
    """The interpreter a job runs with and how it was obtained (for run.json and --dry-run)."""

    manager: str
    interpreter: str
    origin: str
    python_version: str | None
    key: str | None = None
    path: str | None = None
    reused: bool | None = None
    build_seconds: float | None = None

    def record(self) -> dict[str, Any]:
        """The `environment` object of run.json."""
        data = self._asdict()
        data.pop("origin")
        return data


def prepare(spec: JobSpec) -> Environment:
    """The base interpreter; for a managed environment the key needs the project's files."""
    interpreter, version = resolve_interpreter(spec.python.interpreter)
    origin = spec.origins.get("python.interpreter", "torchjob's own interpreter")
    if spec.python.manager == "none":
        return Environment("none", interpreter, origin, version, path=interpreter)
    return Environment(spec.python.manager, interpreter, origin, spec.python.version or version)


class Planned(NamedTuple):
    """The key of a managed environment and what it is made from."""

    key: str
    inputs: dict[str, Any]
    request: BuildRequest


def plan(spec: JobSpec, base: Environment, project_dir: Path, settings: Settings) -> Planned:
    """Compute the key: a hash of every input, reading files but starting nothing new."""
    from torchrun_cli.envs import key as keys  # see the module's docstring
    from torchrun_cli.envs.builders import BUILDERS, BuildRequest

    py = spec.python
    builder = BUILDERS[py.manager](settings)
    req_path = _project_file(py.requirements, project_dir, "python.requirements")
    default = project_dir / "requirements.txt"
    if req_path is None and py.requirements is None and default.is_file():
        req_path = default
    conda_file = _project_file(py.conda_file, project_dir, "python.conda_file")
    facts = (
        None
        if builder.name == "conda"
        else keys.interpreter_facts(base.interpreter, settings.cache_home)
    )
    wanted = py.version
    if facts and wanted and not (facts["version"] + ".").startswith(wanted + "."):
        raise SetupError(
            f"python.version is {wanted}, but {base.interpreter} is Python "
            f"{facts['version']}; {builder.name} builds from that interpreter",
            f"pass --python with a Python {wanted} interpreter, or drop --python-version",
            phase="environment",
        )
    inputs = {
        "schema": keys.SCHEMA,
        "manager": builder.name,
        "manager_version": builder.version(),
        "interpreter": facts,
        "python_version": py.version,
        "requirements": keys.requirement_files(req_path) if req_path else [],
        "packages": mask_argv(py.packages),  # kept in the cache's record: no password
        "conda_file": keys.file_digest(conda_file) if conda_file else None,
        **({"conda_packages": mask_argv(py.conda_packages)} if py.conda_packages else {}),
        "system_site_packages": py.system_site_packages,
        "installer": keys.installer_config(builder.name, project_dir, os.environ),
    }
    # the python a launcher script ran for the key (a pyenv shim), so the build uses that one
    interpreter = (facts or {}).get("executable") or base.interpreter
    request = BuildRequest(
        interpreter,
        py.version,
        req_path,
        py.packages,
        conda_file,
        py.system_site_packages,
        project=project_dir,
        conda_packages=py.conda_packages,
    )
    return Planned(keys.canonical_hash(inputs), inputs, request)


def _project_file(name: str | None, project_dir: Path, key: str) -> Path | None:
    if name is None:
        return None
    path = project_dir / name
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise SetupError(
            f"{key}: {path} {what}", f"check `{key}` (relative to the project)", phase="environment"
        )
    return path


def materialize(
    spec: JobSpec,
    base: Environment,
    project_dir: Path,
    project: str,
    run: RunDir,
    settings: Settings,
    rebuild: bool,
    steps: Steps,
) -> tuple[Environment, Lease | None]:
    """The environment the job runs in, built if needed, and the lease that keeps it alive."""
    py = spec.python
    if py.manager == "none":
        return base, None
    from torchrun_cli.envs import cache  # see the module's docstring
    from torchrun_cli.envs.builders import BUILDERS, python_of, step

    planned = plan(spec, base, project_dir, settings)
    builder = BUILDERS[py.manager](settings)
    expected = py.version or (base.python_version if py.manager != "conda" else None)
    envs = cache.root(settings.cache_home)

    def build(env: Path) -> None:
        donors = cache.donors(envs, py.manager, planned.inputs) if py.manager == "uv" else []
        builder.build(env, replace(planned.request, donors=tuple(donors)), run.setup_log, steps)
        health = [str(python_of(env)), "-I", "-c", _VERSION]
        version = step("health check", health, run.setup_log, steps, settings.build_timeout)
        version = version.strip()
        if expected and not (version == expected or version.startswith(expected + ".")):
            raise SetupError(
                f"the new environment runs Python {version}, not {expected}",
                "check python.version and the interpreter",
                phase="environment",
            )
        builder.check(env, run.setup_log, steps)
        meta["python_version"] = version  # what it runs, for run.json and env list

    meta = {
        "key": planned.key,
        "manager": py.manager,
        "project": project,
        "python_version": expected or "?",
        "inputs": planned.inputs,
    }
    got = cache.obtain(envs, planned.key, meta, project, rebuild, build)
    version = cache.marker(got.path.parent).get("python_version")
    known = version if isinstance(version, str) and version != "?" else expected
    return base._replace(
        interpreter=str(python_of(got.path)),
        python_version=known,
        key=planned.key,
        path=str(got.path),
        reused=got.reused,
        build_seconds=got.seconds,
    ), got.lease


def lease_file(settings: Settings, env: Environment) -> Path | None:
    """The lock a job in this environment holds (None for the interpreter as it is)."""
    if env.key is None:
        return None
    from torchrun_cli.envs import cache  # see the module's docstring

    return cache.lease_file(cache.root(settings.cache_home), env.key)


def explain(
    spec: JobSpec,
    base: Environment,
    project_dir: Path,
    project: str,
    settings: Settings,
    rebuild: bool = False,
) -> str:
    """For --dry-run: the key, hit or miss, and on a miss which inputs differ from the newest
    environment built for the same project and manager."""
    if spec.python.manager == "none":
        return "the interpreter as it is"
    from torchrun_cli.envs import cache  # see the module's docstring

    planned = plan(spec, base, project_dir, settings)
    envs = cache.root(settings.cache_home)
    if rebuild:
        return f"key {planned.key[:16]}: built afresh (--rebuild)"
    if store.is_ready(cache.folder_of(envs, planned.key)):
        return f"key {planned.key[:16]}: hit (reused, nothing installed)"
    same = [
        e
        for e in cache.list_envs(envs)
        if e.ready and e.manager == spec.python.manager and project in e.projects
    ]
    if not same:
        return f"key {planned.key[:16]}: miss (no environment built for this project yet)"
    newest = max(same, key=lambda e: e.created)
    differ = sorted(k for k in planned.inputs if planned.inputs[k] != newest.inputs.get(k))
    return (
        f"key {planned.key[:16]}: miss ({', '.join(differ) or 'unknown'} changed since "
        f"{newest.key[:16]})"
    )
