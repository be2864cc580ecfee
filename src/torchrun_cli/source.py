"""Where the project's files come from. This version resolves local folders only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchrun_cli.spec import JobSpec


@dataclass(frozen=True)
class Source:
    """The project folder the job runs in, and what run.json says about its origin."""

    kind: str
    path: Path
    url: str | None = None
    ref: str | None = None
    commit: str | None = None
    subdirectory: str | None = None

    def record(self) -> dict[str, Any]:
        """The `source` object of run.json."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def resolve(spec: JobSpec) -> Source:
    """A local project is used in place; the spec loader has checked that it exists."""
    return Source("local", spec.project)
