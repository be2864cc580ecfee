"""Manager `none`: the interpreter as it is, chosen by flag/spec, $PYTHON_LAUNCHER, or our own."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path


def resolve_interpreter(given: str | None, base: Path) -> tuple[str, str, str | None]:
    """(absolute path or the bare name when not on PATH, where it came from, version if cheap)."""
    if given:
        origin = "spec"
    elif os.environ.get("PYTHON_LAUNCHER"):  # an environment variable: relative to cwd
        given, origin, base = os.environ["PYTHON_LAUNCHER"], "$PYTHON_LAUNCHER", Path.cwd()
    else:
        return sys.executable, "torchjob's own interpreter", platform.python_version()
    if os.sep in given:
        # No realpath: a venv's python is a symlink whose location selects the venv.
        path = str(base / os.path.expanduser(given))
    else:
        path = shutil.which(given) or given
    return path, origin, cheap_version(path)


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
