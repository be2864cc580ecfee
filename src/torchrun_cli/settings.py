"""torchjob's own settings (TORCHJOB_* variables, PYTHON_LAUNCHER), read once when a command
starts, each with where its value came from.

Why once, up front: a bad value stops the command with one clear line (exit 2) before anything
runs, instead of raising in the middle of a clone; and --dry-run can show every value with its
origin. The stages receive a Settings value; nothing else reads these variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from torchrun_cli.errors import SettingsError


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("not positive")
    return value


def _whole(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("not positive")
    return value


class Variable(NamedTuple):
    """One environment variable torchjob reads: its field, default and check."""

    field: str
    name: str
    default: object
    parse: Callable[[str], object]
    help: str
    expect: str = "a positive number"


VARIABLES = (
    Variable(
        "home",
        "TORCHJOB_HOME",
        None,
        str,
        "runs in $TORCHJOB_HOME/runs, caches in $TORCHJOB_HOME/cache",
    ),
    Variable(
        "git_timeout", "TORCHJOB_GIT_TIMEOUT", 600.0, _positive, "seconds one git command may take"
    ),
    Variable(
        "build_timeout",
        "TORCHJOB_BUILD_TIMEOUT",
        3600.0,
        _positive,
        "seconds one environment build step may take",
    ),
    Variable(
        "archive_max_bytes",
        "TORCHJOB_ARCHIVE_MAX_BYTES",
        4 << 30,
        _whole,
        "largest archive project, downloaded or unpacked",
        "a positive whole number",
    ),
    Variable("conda", "TORCHJOB_CONDA", None, str, "the conda executable to use"),
    Variable(
        "python_launcher",
        "PYTHON_LAUNCHER",
        None,
        str,
        "the default interpreter (DolphinScheduler's variable)",
    ),
)


class Settings(NamedTuple):
    """The values every stage may need, and each one's origin (`default` or `$NAME`)."""

    home: str | None = None
    git_timeout: float = 600.0
    build_timeout: float = 3600.0
    archive_max_bytes: int = 4 << 30
    conda: str | None = None
    python_launcher: str | None = None
    origins: Mapping[str, str] = MappingProxyType({})

    @property
    def data_home(self) -> Path:
        """`$TORCHJOB_HOME`, else the user data dir (e.g. ~/.local/share/torchjob)."""
        if self.home:
            return Path(self.home).expanduser().absolute()
        # platformdirs only when no TORCHJOB_HOME is set: a measured few ms off each start
        from platformdirs import user_data_path

        return user_data_path("torchjob", appauthor=False)

    @property
    def cache_home(self) -> Path:
        """`$TORCHJOB_HOME/cache` when set, else the user cache dir (e.g. ~/.cache/torchjob)."""
        if self.home:
            return Path(self.home).expanduser().absolute() / "cache"
        from platformdirs import user_cache_path  # as in data_home

        return user_cache_path("torchjob", appauthor=False)

    def runs_dir(self, override: Path | None = None) -> Path:
        """The folder that holds one folder per run."""
        return override.expanduser().absolute() if override else self.data_home / "runs"


def read(environ: Mapping[str, str] | None = None) -> Settings:
    """Every variable, checked at once: all bad values are reported together (exit 2)."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    bad: list[str] = []
    for var in VARIABLES:
        text = environ.get(var.name)
        if not text:
            origins[var.field] = "default"
            continue
        try:
            values[var.field] = var.parse(text)
        except ValueError:
            bad.append(
                f"{var.name}={text!r} is not {var.expect} ({var.help}); "
                f"fix: unset {var.name} or correct it"
            )
            continue
        origins[var.field] = f"${var.name}"
    if bad:
        raise SettingsError(bad)
    return Settings(**values, origins=origins)  # type: ignore[arg-type]
