"""The environment cache: one folder per key, one builder per key, a marker written last, and
a shared lock held by every job that uses an environment so it is never removed under it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli import store

ENV = "env"


def root(cache_home: Path) -> Path:
    """The folder of all environments (created, and tagged as a cache)."""
    return store.cache_dir(cache_home, "envs")


def folder_of(envs: Path, key: str) -> Path:
    return envs / key[:24]


def marker(folder: Path) -> dict[str, Any]:
    """What the ready marker says (an empty dict when there is none or it is unreadable)."""
    try:
        meta = json.loads((folder / store.READY).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def env_path(folder: Path) -> Path:
    """The environment inside a ready folder, as its marker names it."""
    return folder / str(marker(folder).get("env", ENV))


class Lease:
    """A shared lock on an environment, held while a job runs in it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Obtained(NamedTuple):
    path: Path
    reused: bool
    seconds: float
    lease: Lease


def _lock_path(folder: Path, kind: str = "lock") -> Path:
    return folder.parent / f"{folder.name}.{kind}"


def lease_file(envs: Path, key: str) -> Path:
    """The lock a job holds shared while it runs in the environment (a Slurm batch script
    takes it too, with flock -s)."""
    return _lock_path(folder_of(envs, key))


def _lock_fd(folder: Path, kind: str = "lock") -> int:
    return os.open(_lock_path(folder, kind), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _note_use(folder: Path, project: str) -> None:
    """Last-used time (an mtime) and the projects that used it (one line each)."""
    store.touch(folder / "used")
    projects = folder / "projects"
    try:
        known = projects.read_text().splitlines()
    except FileNotFoundError:
        known = []
    if project not in known:
        with projects.open("a") as fh:
            fh.write(project + "\n")


def obtain(
    envs: Path,
    key: str,
    meta: dict[str, Any],
    project: str,
    rebuild: bool,
    build: Callable[[Path], None],
) -> Obtained:
    """A ready environment for key: reused, or built once while other runs wait.

    Two locks per key, so none is ever converted: `.lock` is the lease (shared, held while a
    job runs; prune and rm need it exclusive), `.build` admits one builder at a time. A run
    waiting to build therefore never waits for another run's job, only for its build.
    """
    folder = folder_of(envs, key)
    fd = _lock_fd(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # the lease, from the start: nothing removes it now
        if not rebuild and store.is_ready(folder):
            _note_use(folder, project)
            return Obtained(env_path(folder), True, 0.0, Lease(fd))
        started = time.monotonic()
        waited_from = time.time()
        build_fd = _lock_fd(folder, "build")
        try:
            fcntl.flock(build_fd, fcntl.LOCK_EX)  # one builder per key
            ready = store.is_ready(folder)
            if ready and (not rebuild or (folder / store.READY).stat().st_mtime >= waited_from):
                _note_use(folder, project)  # another run built it while we waited
                return Obtained(env_path(folder), True, 0.0, Lease(fd))
            if not ready:  # half-built leftovers: no job can be using them
                store.remove_entry(folder)
            folder.mkdir(parents=True, exist_ok=True)
            # A fresh name per build: a tool left over from a killed build can only ever
            # write into its own folder; a rebuild leaves the environment that running jobs
            # use in place, and prune removes it once they are done.
            name = f"{ENV}-{os.getpid()}-{os.urandom(3).hex()}"
            try:
                build(folder / name)
            except BaseException:  # nothing half-built stays; a rebuild's old env does
                if ready:
                    shutil.rmtree(folder / name, ignore_errors=True)
                else:
                    store.remove_entry(folder)
                raise
            seconds = round(time.monotonic() - started, 3)
            store.mark_ready(
                folder,
                json.dumps({**meta, "env": name, "created": time.time(), "build_seconds": seconds}),
            )
        finally:
            os.close(build_fd)
        _note_use(folder, project)
        return Obtained(folder / name, False, seconds, Lease(fd))
    except BaseException:
        os.close(fd)
        raise


def donors(envs: Path, manager: str, inputs: dict[str, Any], limit: int = 5) -> list[Path]:
    """The newest ready environments of manager for the same interpreter: a new build may
    reuse their compiled bytecode (envs/bytecode.py checks every file it takes)."""
    base = envs
    found: list[tuple[float, Path]] = []
    for folder in base.iterdir() if base.is_dir() else []:
        meta = marker(folder)
        other = meta.get("inputs") or {}
        if meta.get("manager") == manager and all(
            other.get(k) == inputs.get(k) for k in ("interpreter", "python_version")
        ):
            found.append((float(meta.get("created", 0.0)), folder / str(meta.get("env", ENV))))
    return [path for _, path in sorted(found, reverse=True)[:limit]]


@dataclass(frozen=True)
class CachedEnv:
    """One environment, for `torchjob env list`."""

    key: str
    manager: str
    python_version: str
    size_bytes: int
    created: float
    last_used: float
    projects: list[str]
    ready: bool
    inputs: dict[str, Any]


def list_envs(envs: Path) -> list[CachedEnv]:
    """Every environment folder, ready or not (a folder without its marker is garbage)."""
    base = envs
    out = []
    for folder in sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []:
        ready = store.is_ready(folder)
        meta = marker(folder) if ready else {}
        try:
            used = folder / "used"
            last_used = used.stat().st_mtime if used.exists() else folder.stat().st_mtime
            projects = folder / "projects"
            listed = list(
                dict.fromkeys(  # two first uses at once may both append a line
                    projects.read_text().splitlines() if projects.exists() else []
                )
            )
        except OSError:  # removed meanwhile by a prune or a build's clean-up
            continue
        out.append(
            CachedEnv(
                key=meta.get("key", folder.name),
                manager=meta.get("manager", "?"),
                python_version=meta.get("python_version", "?"),
                size_bytes=store.tree_size(folder),
                created=meta.get("created", 0.0),
                last_used=last_used,
                projects=listed,
                ready=ready,
                inputs=meta.get("inputs", {}),
            )
        )
    return out


def remove(envs: Path, env: CachedEnv) -> bool:
    """Remove one environment unless a job holds it; True when removed."""
    return _with_no_lease(folder_of(envs, env.key), store.remove_entry)


def tidy(envs: Path, env: CachedEnv) -> bool:
    """Remove what a rebuild replaced (or a killed build left) beside the environment the
    marker names, unless a job holds the key; True when nothing was in use."""

    def clear(folder: Path) -> None:
        current = marker(folder).get("env", ENV)
        for old in folder.glob(f"{ENV}*"):
            if old.name != current:
                shutil.rmtree(old, ignore_errors=True)

    return _with_no_lease(folder_of(envs, env.key), clear)


def _with_no_lease(folder: Path, action: Callable[[Path], None]) -> bool:
    fd = _lock_fd(folder)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # in use by a running job (or being built)
        action(folder)
        return True
    finally:
        os.close(fd)
