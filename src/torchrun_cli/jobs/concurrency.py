"""`concurrency:` (Kubernetes CronJob's policy, for cron and CI): what a run does when another
run of the same name is running in the same runs folder. `allow` starts anyway; `forbid` does
not start (exit 75, nothing run, no run folder: cron must not pile runs up); `queue` waits for
the running one to end; `replace` stops it cleanly (as `torchjob cancel` does) and then starts.

An flock on `<runs-dir>/.locks/<name>.lock` held for the whole run: it holds across shells,
users' cron and detached runs, and the kernel drops it when its holder dies, so a crashed run
never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from torchrun_cli.errors import TorchjobError, UsageError
from torchrun_cli.record import RunDir, RunRecord, slug

BUSY_EXIT = 75  # EX_TEMPFAIL: "try again later", what a cron wrapper can tell from a failure


class Busy(TorchjobError):
    """`concurrency: forbid` and a run of that name is running."""

    exit_code = BUSY_EXIT


def hold(
    policy: str, runs_dir: Path, name: str, note: Callable[[str], None] = lambda text: None
) -> int | None:
    """Take the name's lock as the policy says; the fd to keep open for the run (None when an
    `allow` run starts beside an exclusive holder)."""
    folder = runs_dir / ".locks"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(folder / f"{slug(name)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot use {runs_dir} as the runs folder: {exc.strerror}",
            "give --runs-dir a folder you can write",
        ) from None
    try:
        if policy == "allow":
            if _try(fd, fcntl.LOCK_SH):
                return fd
            os.close(fd)
            return None
        if _try(fd, fcntl.LOCK_EX):
            return fd
        running = _running(runs_dir, name)
        which = ", ".join(f"{r.id} (pid {r.pid})" for r in running) or "another run"
        if policy == "forbid":
            raise Busy(
                f"a run named {name!r} is running: {which}; concurrency: forbid, so this one "
                "did not start",
                "let it finish, or use --concurrency queue (wait) or replace (stop it)",
            )
        if policy == "replace":
            from torchrun_cli.jobs import history  # only replace stops other runs

            for rec in running:
                note(f"stopping run {rec.id} (concurrency: replace)")
                history.cancel(RunDir(runs_dir / rec.id))
        else:
            note(f"waiting for {which} to end (concurrency: queue)")
        fcntl.flock(fd, fcntl.LOCK_EX)  # a Ctrl-C here raises: nothing has started
        return fd
    except BaseException:
        os.close(fd)
        raise


def _try(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _running(runs_dir: Path, name: str) -> list[RunRecord]:
    from torchrun_cli.jobs import refs  # the history: only when the lock is taken

    found = refs.newest(
        runs_dir,
        0,
        lambda r: isinstance(r, RunRecord) and r.name == name and r.is_live(),
        name=name,
        status="running",
    )
    return [s.record for s in found if isinstance(s.record, RunRecord)]
