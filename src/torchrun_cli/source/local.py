"""Local projects: used in place, or, when files are added next to the script, run in a copy
(the user's folder is never written). Their git facts (HEAD, dirty) go into run.json."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchrun_cli.source.paths import clean_env
from torchrun_cli.tools import ToolFailed, run_tool


def git_facts(path: Path, log: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) when path is inside a git work tree, else (None, None).

    A cheap upward search for `.git` first, so a plain folder starts no git process at all.
    Dirty means tracked files differ from HEAD; untracked files (data, outputs) do not count.
    """
    probe = path
    while not (probe / ".git").exists():
        if probe.parent == probe:
            return None, None
        probe = probe.parent
    base = [
        "git",
        "--no-optional-locks",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
        "-C",
        str(path),
    ]
    env = clean_env()  # an inherited GIT_DIR would name another repository
    try:
        commit = run_tool(
            [*base, "rev-parse", "--verify", "HEAD"], env=env, timeout=10, log=log
        ).strip()
        status = run_tool(
            [*base, "status", "--porcelain", "--untracked-files=no"], env=env, timeout=30, log=log
        )
    except ToolFailed:  # no commit yet, or git missing: the run goes on without the facts
        return None, None
    return commit, bool(status.strip())


def copy_project(original: Path, tree: Path) -> None:
    """A copy of a local project to run in (without .git); relative links that led out of it
    (`data -> ../datasets`) are made absolute, to where they pointed from the original."""
    inside = tree.parent.resolve()  # the run folder: a runs folder in the project holds it

    def skipped(folder: str, names: list[str]) -> set[str]:
        out = {".git"} & set(names)
        return out | {n for n in names if inside.is_relative_to((Path(folder) / n).resolve())}

    shutil.copytree(original, tree, symlinks=True, ignore=skipped)
    for folder, dirs, files in os.walk(tree):
        for name in dirs + files:
            link = Path(folder) / name
            target = os.readlink(link) if link.is_symlink() else None
            if target is None or os.path.isabs(target):
                continue
            at = original / link.parent.relative_to(tree)
            where = os.path.normpath(at / target)
            if where != str(original) and not where.startswith(str(original) + os.sep):
                link.unlink()
                os.symlink(where, link)
