"""torchjob's own settings, read once when a command starts, each with where its value came
from: the user's config file, the project's `[tool.torchjob]` table, then the TORCHJOB_*
variables and PYTHON_LAUNCHER.

Why once, up front: a bad value stops the command with one clear line per problem (exit 2)
before anything runs, instead of raising in the middle of a clone; and `--dry-run` and
`torchjob config` can show every value with its origin. The stages receive a Settings value;
nothing else reads these files or variables. With no config file this costs a few stats.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from torchrun_cli.durations import parse_duration
from torchrun_cli.errors import Problem, SettingsError
from torchrun_cli.settings.files import CONFIG_KEYS, ConfigFile, project_config, user_config


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
    expect: str = "seconds or a duration (90s, 15m, 2h)"


VARIABLES = (
    Variable(
        "home",
        "TORCHJOB_HOME",
        None,
        str,
        "runs in $TORCHJOB_HOME/runs, caches in $TORCHJOB_HOME/cache",
    ),
    Variable(
        "git_timeout",
        "TORCHJOB_GIT_TIMEOUT",
        600.0,
        parse_duration,
        "seconds one git command may take",
    ),
    Variable(
        "build_timeout",
        "TORCHJOB_BUILD_TIMEOUT",
        3600.0,
        parse_duration,
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
    """The values every stage may need, and `origins`: config key (or variable field) ->
    `default`, `config FILE:LINE` or `$NAME`. env_manager, python, grace and tty are the
    config's defaults for spec keys (None: not configured)."""

    home: str | None = None
    git_timeout: float = 600.0
    build_timeout: float = 3600.0
    archive_max_bytes: int = 4 << 30
    conda: str | None = None
    python_launcher: str | None = None
    runs_path: str | None = None  # the config's `runs_dir`
    quiet: bool = False
    env_manager: str | None = None
    python: str | None = None
    grace: float | None = None
    tty: str | None = None
    origins: Mapping[str, str] = MappingProxyType({})
    files: tuple[ConfigFile, ...] = ()

    @property
    def data_home(self) -> Path:
        """`$TORCHJOB_HOME`, else the user data dir (e.g. ~/.local/share/torchjob)."""
        if self.home:
            return Path(self.home).expanduser().absolute()
        if sys.platform == "linux":
            return xdg_path("XDG_DATA_HOME", "~/.local/share")
        from platformdirs import user_data_path  # measured: 7 ms of each start; not on Linux

        return user_data_path("torchjob", appauthor=False)

    @property
    def cache_home(self) -> Path:
        """`$TORCHJOB_HOME/cache` when set, else the user cache dir (e.g. ~/.cache/torchjob)."""
        if self.home:
            return Path(self.home).expanduser().absolute() / "cache"
        if sys.platform == "linux":
            return xdg_path("XDG_CACHE_HOME", "~/.cache")
        from platformdirs import user_cache_path  # as in data_home

        return user_cache_path("torchjob", appauthor=False)

    def runs_dir(self, override: Path | None = None) -> Path:
        """The folder that holds one folder per run: --runs-dir, else `runs_dir` of a config
        file, else `runs/` in the home."""
        if override:
            return override.expanduser().absolute()
        return Path(self.runs_path) if self.runs_path else self.data_home / "runs"


def xdg_path(variable: str, default: str) -> Path:
    """torchjob's folder under an XDG base directory, as platformdirs gives it on Linux: the
    variable when it is an absolute path, else the default (tests/test_config.py compares)."""
    base = os.environ.get(variable, "")  # a relative one is not valid XDG: the default then
    return Path(base if os.path.isabs(base) else os.path.expanduser(default)) / "torchjob"


def read(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Config files, then variables; every bad value of either is reported at once (exit 2)."""
    environ = os.environ if environ is None else environ
    problems: list[Problem] = []
    files: list[ConfigFile] = []
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for layer in (user_config(environ, files, problems), project_config(cwd, files, problems)):
        for name, (value, origin) in layer.items():
            values[name], origins[name] = value, origin
    bad: list[str] = []
    for var in VARIABLES:
        text = environ.get(var.name)
        if not text:
            origins.setdefault(var.field, "default")
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
    if problems or bad:
        raise SettingsError([str(p) for p in problems] + bad)
    for key in CONFIG_KEYS:
        origins.setdefault(key.name, "default")
    if "runs_dir" in values:
        values["runs_path"] = values.pop("runs_dir")
    return Settings(**values, origins=origins, files=tuple(files))  # type: ignore[arg-type]
