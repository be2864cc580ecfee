"""Where torchjob keeps its data (runs) and caches, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """`$TORCHJOB_HOME`, else the user data dir (e.g. ~/.local/share/torchjob)."""
    home = os.environ.get("TORCHJOB_HOME")
    if home:
        return Path(home).expanduser().absolute()
    from platformdirs import user_data_path

    return user_data_path("torchjob", appauthor=False)


def cache_home() -> Path:
    """`$TORCHJOB_HOME/cache` when set, else the user cache dir (e.g. ~/.cache/torchjob)."""
    home = os.environ.get("TORCHJOB_HOME")
    if home:
        return Path(home).expanduser().absolute() / "cache"
    from platformdirs import user_cache_path

    return user_cache_path("torchjob", appauthor=False)


def runs_dir(override: Path | None = None) -> Path:
    """The folder that holds one folder per run."""
    return override.expanduser().absolute() if override else data_home() / "runs"
