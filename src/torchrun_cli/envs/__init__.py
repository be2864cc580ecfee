"""Python environments for a job: the interpreter as it is (`none`), or one built by virtualenv,
uv or conda, cached by a key over everything that goes into it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrun_cli import store
from torchrun_cli.envs.system import resolve_interpreter
from torchrun_cli.errors import SetupError
from torchrun_cli.spec import JobSpec

if TYPE_CHECKING:  # the builders and the cache load only when a managed environment is asked for
    from torchrun_cli.envs.builders import BuildRequest, Progress
    from torchrun_cli.envs.cache import Lease

_VERSION = "import platform; print(platform.python_version())"


@dataclass(frozen=True)
class Environment:
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
        data = asdict(self)
        data.pop("origin")
        return data


def prepare(spec: JobSpec) -> Environment:
    """The base interpreter; for a managed environment the key needs the project's files."""
    interpreter, origin, version = resolve_interpreter(spec.interpreter, spec.interpreter_base)
    origin = spec.origins.get("python.interpreter", origin)
    if spec.manager == "none":
        return Environment("none", interpreter, origin, version, path=interpreter)
    return Environment(spec.manager, interpreter, origin, spec.python_version or version)


@dataclass(frozen=True)
class Planned:
    """The key of a managed environment and what it is made from."""

    key: str
    inputs: dict[str, Any]
    request: BuildRequest


def plan(spec: JobSpec, base: Environment, project_dir: Path) -> Planned:
    """Compute the key: a hash of every input, reading files but starting nothing new."""
    from torchrun_cli.envs.builders import BUILDERS, BuildRequest
    from torchrun_cli.envs.inputs import (
        SCHEMA,
        canonical_hash,
        file_digest,
        interpreter_facts,
        requirement_files,
    )

    builder = BUILDERS[spec.manager]()
    req_path = _project_file(spec.requirements, project_dir, "python.requirements")
    default = project_dir / "requirements.txt"
    if req_path is None and spec.requirements is None and default.is_file():
        req_path = default
    conda_file = _project_file(spec.conda_file, project_dir, "python.conda_file")
    facts = None if builder.name == "conda" else interpreter_facts(base.interpreter)
    wanted = spec.python_version
    if facts and wanted and not (facts["version"] + ".").startswith(wanted + "."):
        raise SetupError(f"python.version is {wanted}, but {base.interpreter} is Python "
                         f"{facts['version']}; {builder.name} builds from that interpreter",
                         f"pass --python with a Python {wanted} interpreter, or drop "
                         "--python-version", phase="environment")
    inputs = {
        "schema": SCHEMA,
        "manager": builder.name,
        "manager_version": builder.version(),
        "interpreter": facts,
        "python_version": spec.python_version,
        "requirements": requirement_files(req_path) if req_path else [],
        "packages": list(spec.packages),
        "conda_file": file_digest(conda_file) if conda_file else None,
        "system_site_packages": spec.system_site_packages,
    }
    # the python a launcher script ran for the key (a pyenv shim), so the build uses that one
    interpreter = (facts or {}).get("executable") or base.interpreter
    request = BuildRequest(interpreter, spec.python_version, req_path, spec.packages,
                           conda_file, spec.system_site_packages, project=project_dir)
    return Planned(canonical_hash(inputs), inputs, request)


def _project_file(name: str | None, project_dir: Path, key: str) -> Path | None:
    if name is None:
        return None
    path = project_dir / name
    if not path.is_file():
        raise SetupError(f"{key}: {path} does not exist", f"check `{key}` (relative to the "
                         "project)", phase="environment")
    return path


def materialize(spec: JobSpec, base: Environment, project_dir: Path, project: str, log: Path,
                rebuild: bool, progress: Progress) -> tuple[Environment, Lease | None]:
    """The environment the job runs in, built if needed, and the lease that keeps it alive."""
    if spec.manager == "none":
        return base, None
    from torchrun_cli.envs import cache
    from torchrun_cli.envs.builders import BUILDERS, python_of, step
    planned = plan(spec, base, project_dir)
    builder = BUILDERS[spec.manager]()
    expected = spec.python_version or (base.python_version if spec.manager != "conda" else None)

    def build(env: Path) -> None:
        donors = cache.donors(spec.manager, planned.inputs) if spec.manager == "uv" else []
        builder.build(env, replace(planned.request, donors=tuple(donors)), log, progress)
        version = step("health check", [str(python_of(env)), "-I", "-c", _VERSION], log,
                       progress).strip()
        if expected and not (version == expected or version.startswith(expected + ".")):
            raise SetupError(f"the new environment runs Python {version}, not {expected}",
                             "check python.version and the interpreter", phase="environment")
        builder.check(env, log)
        meta["python_version"] = version  # what it runs, for run.json and env list

    meta = {"key": planned.key, "manager": spec.manager, "project": project,
            "python_version": expected or "?", "inputs": planned.inputs}
    got = cache.obtain(planned.key, meta, project, rebuild, build)
    version = _recorded_version(got.path.parent) or expected
    return replace(base, interpreter=str(python_of(got.path)), python_version=version,
                   key=planned.key, path=str(got.path), reused=got.reused,
                   build_seconds=got.seconds), got.lease


def _recorded_version(folder: Path) -> str | None:
    from torchrun_cli.envs import cache

    version = cache.marker(folder).get("python_version")
    return version if isinstance(version, str) and version != "?" else None


def explain(spec: JobSpec, base: Environment, project_dir: Path, project: str,
            rebuild: bool = False) -> str:
    """For --dry-run: the key, hit or miss, and on a miss which inputs differ from the newest
    environment built for the same project and manager."""
    if spec.manager == "none":
        return "the interpreter as it is"
    from torchrun_cli.envs import cache
    planned = plan(spec, base, project_dir)
    if rebuild:
        return f"key {planned.key[:16]}: built afresh (--rebuild)"
    if store.is_ready(cache.folder_of(planned.key)):
        return f"key {planned.key[:16]}: hit (reused, nothing installed)"
    same = [e for e in cache.list_envs() if e.ready and e.manager == spec.manager
            and project in e.projects]
    if not same:
        return f"key {planned.key[:16]}: miss (no environment built for this project yet)"
    newest = max(same, key=lambda e: e.created)
    differ = sorted(k for k in planned.inputs if planned.inputs[k] != newest.inputs.get(k))
    return f"key {planned.key[:16]}: miss ({', '.join(differ) or 'unknown'} changed since " \
           f"{newest.key[:16]})"
