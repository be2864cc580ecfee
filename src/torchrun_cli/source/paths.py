"""Paths of a run's tree and the environment of the git commands that make it, shared by git,
archive and local sources: nothing the user wrote may lead outside the tree, and no inherited
GIT_* variable may redirect a git command to another repository."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchrun_cli.errors import SetupError

# Environment variables of the user's that git may keep; every other GIT_* is dropped so an
# inherited GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE or GIT_CONFIG_* cannot redirect our commands.
# (GIT_TRACE is harmless: tools.run_tool parses stdout only, and trace lines go to stderr.)
_GIT_ENV_KEEP = (
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "GIT_SSL_CERT",
    "GIT_SSL_KEY",
    "GIT_HTTP_USER_AGENT",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_EXEC_PATH",
    "GIT_TRACE",
    "GIT_CURL_VERBOSE",
    "GIT_HTTP_LOW_SPEED_LIMIT",
    "GIT_HTTP_LOW_SPEED_TIME",
)


def inside(root: Path, relative: str, what: str) -> Path:
    """root/relative, refused when it resolves outside root (through a symlink, say)."""
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise SetupError(
            f"refused {what} {relative!r}: it leads outside the checkout",
            "point it at a folder inside the repository",
            phase="source",
        )
    return target


def clean_env() -> dict[str, str]:
    """The user's environment without the GIT_* variables that could redirect our commands
    (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, GIT_CONFIG_*): an allow-list keeps the rest."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _GIT_ENV_KEEP}


def place(item: Path, target: Path) -> None:
    """Copy a dependency file or folder to target (Tencent's component does the same). Never
    through a link: one in the way (from the checkout, say) is replaced, not followed."""
    real_dir = target.is_dir() and not target.is_symlink()
    merge = real_dir and item.is_dir() and not item.is_symlink()  # folder into folder
    if real_dir and not merge:
        shutil.rmtree(target)
    elif not real_dir and (target.exists() or target.is_symlink()):
        target.unlink()
    if item.is_symlink():
        os.symlink(os.readlink(item), target)
    elif item.is_dir():
        target.mkdir(exist_ok=True)
        for child in item.iterdir():
            place(child, target / child.name)
    else:
        shutil.copy2(item, target)
