"""Files torchjob keeps: atomic writes, ready markers, locks, cache folders."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple


class Removed(NamedTuple):
    """One cache entry a prune or rm dealt with."""

    key: str
    what: str  # the manager, or the mirror's URL
    size_bytes: int
    removed: bool  # False: kept, because a running job uses it


CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This folder is a cache made by torchjob; backup tools may skip it.\n"
)
READY = ".ready"


def cache_dir(root: Path, kind: str) -> Path:
    """A folder under the cache root (`repos`, `archives`, `envs`), tagged as a cache."""
    path = root / kind
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tag = root / "CACHEDIR.TAG"
        if not tag.exists():
            write_atomic(tag, CACHEDIR_TAG.encode())
    return path


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """Temp file in the same folder, fsync (unless `sync` is False: a record that is written
    again soon), rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        if sync:
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


class NotReadable(ValueError):
    """A file torchjob reads (a spec, a requirements file) that is not a regular file, or is
    too large: a FIFO would block forever, /dev/zero would never end."""


def read_small(path: Path, limit: int) -> bytes:
    """The content of a regular file of at most `limit` bytes. Opened without blocking, so a
    FIFO is refused at once instead of waiting for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise NotReadable(f"is {kind}")
        if st.st_size > limit:
            raise NotReadable(f"is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:  # grew while we read it
            raise NotReadable(f"is larger than {limit} bytes")
        return data
    finally:
        os.close(fd)
