"""Manager `none`: the interpreter as it is, chosen by flag, spec or $PYTHON_LAUNCHER (the
spec loader has resolved those), else the interpreter running torchjob."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path


def resolve_interpreter(given: str | None) -> tuple[str, str | None]:
    """(absolute path, or the bare name when it is not on PATH; its version when cheap)."""
    if not given:
        return sys.executable, platform.python_version()
    # No realpath: a venv's python is a symlink whose location selects the venv.
    path = given if os.sep in given else (shutil.which(given) or given)
    return path, cheap_version(path)


def cheap_version(path: str) -> str | None:
    """The version without starting the interpreter: ours, or the one its pyvenv.cfg names."""
    if os.path.abspath(path) == os.path.abspath(sys.executable):
        return platform.python_version()
    cfg = Path(path).parent.parent / "pyvenv.cfg"
    try:
        lines = cfg.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    values = dict(line.partition("=")[::2] for line in lines if "=" in line)
    values = {k.strip(): v.strip() for k, v in values.items()}
    found = values.get("version_info") or values.get("version")
    return ".".join(found.split(".")[:3]) if found else None
