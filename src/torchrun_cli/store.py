"""Where torchjob keeps its data (runs) and caches, and nothing else."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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


CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This folder is a cache made by torchjob; backup tools may skip it.\n"
)
READY = ".ready"


def env_number(name: str, default: float) -> float:
    """A positive number from the environment (a time limit, a size): a bad value is the
    user's mistake, told as one line, not an internal error."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        from torchrun_cli.errors import UsageError

        raise UsageError(f"{name}={text!r} is not a positive number", f"unset {name} or fix it")
    return value


def cache_dir(kind: str) -> Path:
    """A folder under the cache root (`repos`, `archives`, `envs`), tagged as a cache."""
    root = cache_home()
    path = root / kind
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tag = root / "CACHEDIR.TAG"
        if not tag.exists():
            write_atomic(tag, CACHEDIR_TAG.encode())
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def mark_ready(folder: Path, note: str = "") -> None:
    """Written last: only a folder with this marker is a finished cache entry."""
    write_atomic(folder / READY, note.encode())


def is_ready(folder: Path) -> bool:
    return (folder / READY).is_file()


def remove_entry(folder: Path) -> None:
    """Delete a cache entry marker first: a kill in the middle of the delete leaves garbage
    that the next run removes, never a half-deleted tree that still says it is ready."""
    (folder / READY).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """An flock on `path` (created if needed): one writer, or many readers, per cache entry.

    The kernel drops the lock when the holder dies, so kill -9 never leaves it held.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def touch(path: Path) -> None:
    """Record a use cheaply: the file's mtime is the last-used time."""
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


def tree_size(path: Path) -> int:
    """Bytes used by the files under path (no symlink following)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
