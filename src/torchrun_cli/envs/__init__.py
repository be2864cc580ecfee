"""Python environments for a job. This version has one manager: `none`, the interpreter as is."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torchrun_cli.envs.system import resolve_interpreter
from torchrun_cli.spec import JobSpec


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
    """Resolve the environment for spec; for `none` this costs a PATH lookup at most."""
    interpreter, origin, version = resolve_interpreter(spec.interpreter, spec.interpreter_base)
    origin = spec.origins.get("python.interpreter", origin)
    return Environment("none", interpreter, origin, version, path=interpreter)
