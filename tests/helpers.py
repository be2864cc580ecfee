"""Helpers the test modules share (conftest.py holds the fixtures): running `torchjob`, reading
run records, waiting without sleeps, processes, background servers, and the guard that keeps the
tests out of the real user folders."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]  # the repository
_BIN = Path(sys.executable).with_name("torchjob")
TORCHJOB = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "torchrun_cli"]


# ---------------------------------------------------------------- torchjob, files, run records


def torchjob(
    *args: str, cwd: Path | None = None, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run the real `torchjob` command and capture its output as bytes."""
    return subprocess.run(
        [*TORCHJOB, *args], cwd=cwd, capture_output=True, timeout=timeout, check=False, **kw
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_dirs(runs: Path) -> list[Path]:
    """The run folders in a runs folder, by name (not torchjob's own hidden files: the index,
    the concurrency locks, the step cache)."""
    if not runs.exists():
        return []
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))


def run_records(runs: Path) -> list[dict[str, Any]]:
    """Every run.json in a runs folder, in the order of run_dirs()."""
    return [json.loads((d / "run.json").read_text()) for d in run_dirs(runs)]


def newest_record(runs: Path, *, only: bool = False) -> dict[str, Any]:
    """The run.json of the newest run in a runs folder, by start time (two runs started in one
    second have ids that do not sort); with only=True, the folder must hold exactly one run."""
    if only:
        dirs = run_dirs(runs)
        assert len(dirs) == 1, dirs
    return max(run_records(runs), key=lambda r: (r["started_at"], r["id"]))


def setup_log(runs: Path, rec: dict[str, Any]) -> str:
    """A run's setup.log ('' when the run has none)."""
    path = runs / rec["id"] / "setup.log"
    return path.read_text() if path.exists() else ""


@dataclass
class Env:
    """Paths of the isolated environment a test runs in: what conftest.py's `iso` fixture
    gives (defined here so that test modules can name the type without importing conftest)."""

    tmp: Path
    home: Path
    runs: Path

    def run_dirs(self) -> list[Path]:
        return run_dirs(self.runs)

    def only_run(self) -> tuple[Path, dict[str, Any]]:
        rec = newest_record(self.runs, only=True)
        return self.runs / rec["id"], rec


def other_interpreter() -> str | None:
    """A python whose real binary is not this one's, for launcher tests."""
    mine = os.path.realpath(sys.executable)
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3", shutil.which("python3.12")):
        if candidate and os.path.exists(candidate) and os.path.realpath(candidate) != mine:
            return candidate
    return None


# ---------------------------------------------------------------- waiting and processes


def wait_until(
    pred: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.05,
) -> T:
    """Call `pred` every `interval` seconds until it gives a truthy value, and return that value.
    When `timeout` seconds pass first, fail the test saying it waited for `what` (a text, or a
    function that makes one, e.g. with the state last seen). An exception from `pred` (say, an
    assert that the process being watched still runs) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() >= deadline:
            pytest.fail(
                f"gave up after {timeout:g} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(interval)
    return value


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie is not)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pids: list[int], seconds: float) -> bool:
    """Whether every pid is gone within `seconds` (polling /proc)."""
    try:
        wait_until(
            lambda: not any(alive(p) for p in pids), seconds, f"{pids} to end", interval=0.02
        )
    except pytest.fail.Exception:
        return False
    return True


# ---------------------------------------------------------------- background servers


def unavailable(reason: str, deps: str = ".ci/system-deps.sh") -> NoReturn:
    """Skip a test whose server (or cluster) cannot run here, except under CI=true, where it is
    a failure; `deps` is the script that installs what it needs."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this must run in CI; see {deps})")
    pytest.skip(reason)


class Daemon:
    """A server process in its own session, so its process group is its own and stop() takes
    its children too.

    With `log`, its stdout and stderr are appended to that file and it runs in the file's
    folder. Without, its stderr is collected line by line in `lines`, and wait_ready() returns
    once a line holds `ready` (the server's own readiness output: no sleeps)."""

    def __init__(
        self,
        argv: list[str],
        *,
        ready: str = "",
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        user: pwd.struct_passwd | None = None,
        name: str = "",
        stop_timeout: float = 5.0,
    ) -> None:
        self.argv = argv
        self.name = name or Path(argv[0]).name
        self.log = log
        self.stop_timeout = stop_timeout
        self.lines: list[str] = []
        self._marker = ready
        self._ready = threading.Event()
        sink = log.open("ab") if log else None
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink or subprocess.DEVNULL,
                stderr=subprocess.STDOUT if sink else subprocess.PIPE,
                env=None if env is None else dict(env),
                cwd=log.parent if log else None,
                start_new_session=True,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        finally:
            if sink:
                sink.close()
        self._reader: threading.Thread | None = None
        if self.proc.stderr is not None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if self._marker and self._marker in line:
                self._ready.set()
        self._ready.set()  # end of output: the process is gone

    def wait_ready(self, timeout: float) -> bool:
        """Whether the server said it is ready within `timeout` s (and still runs)."""
        return self._ready.wait(timeout) and self.alive()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of its output."""
        if self.log is None:
            return "\n".join(self.lines[-lines:])
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after `stop_timeout` s, then SIGKILL what is
        left of the group (per-connection children, helpers like slurmstepd). Idempotent."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=self.stop_timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


# ---------------------------------------------------------------- the real user folders


def snapshot(folders: list[Path], depth: int = 3) -> dict[str, dict[str, int]]:
    """For each folder, the mtime of everything down to `depth` levels below it: enough to see a
    new run folder or cache entry, and a changed run.json, `projects` file or marker in it."""
    state: dict[str, dict[str, int]] = {}

    def visit(path: Path, left: int, entries: dict[str, int]) -> None:
        try:  # an entry may go while we look (another process's prune)
            info = path.lstat()
            entries[str(path)] = info.st_mtime_ns
            children = list(path.iterdir()) if left and stat.S_ISDIR(info.st_mode) else []
        except OSError:
            return
        for child in children:
            visit(child, left - 1, entries)

    for folder in folders:
        state[str(folder)] = {}
        visit(folder, depth, state[str(folder)])
    return state


def _field(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _claims(folder: Path) -> list[str]:
    """The paths and URLs an entry's own files say it is for: a run folder's run.json (cwd,
    source.path, spec.spec_file, spec.project), an environment's `projects` file and `.ready`
    marker ("project"), a git mirror's `.ready` (its URL), an archive's meta.json ("url")."""
    found: list[Any] = []
    for name in ("run.json", "meta.json", ".ready", "projects"):
        try:
            text = (folder / name).read_text()
        except (OSError, ValueError):  # none here (or folder is a file), or unreadable
            continue
        if name == "projects" or (name == ".ready" and not text.startswith("{")):
            found.append(text)  # project paths, one a line; a mirror's or archive's URL
            continue
        with suppress(ValueError):
            data = json.loads(text)
            found += [
                _field(data, key)
                for key in (
                    "cwd",
                    "source.path",
                    "spec.spec_file",
                    "spec.project",
                    "project",
                    "url",
                )
            ]
    return [claim for claim in found if isinstance(claim, str)]


def check_untouched(
    folders: list[Path], before: dict[str, dict[str, int]], roots: list[Path]
) -> None:
    """Fail when the test's own processes wrote to one of `folders` since `before`.

    The folders are the user's real ones, and any other process of the user (a real job in
    another terminal) may write there while the tests run. So a new or changed entry counts
    only when its content says it is the test's: when a run.json, `projects` file, `.ready`
    marker or meta.json of the entry or of a folder above it (see _claims) names a path under
    one of `roots` (the session's base temp folder; the repository, whose examples/ some tests
    run). Entries that cannot be attributed either way are ignored: unreadable ones, ones with
    no such file (a half-made entry, a lock file, a parent folder's mtime) and shared files any
    run updates (interpreters.json, CACHEDIR.TAG). So are removed entries."""
    marks = {f"{path}/" for root in roots for path in (root, root.resolve())}

    def the_tests(path: Path, top: Path) -> bool:
        for folder in (path, *path.parents):
            if folder == top:
                return False
            if any(mark in f"{claim}/" for claim in _claims(folder) for mark in marks):
                return True
        return False

    after = snapshot(folders)
    changed = [
        path
        for top, entries in after.items()
        for path, mtime in entries.items()
        if before.get(top, {}).get(path) != mtime and the_tests(Path(path), Path(top))
    ]
    if changed:  # shown by their top-most changed folder
        shown = [path for path in changed if str(Path(path).parent) not in changed]
        pytest.fail(f"the test wrote to the real user folders {shown}; use TORCHJOB_HOME")


# A job that leaves a line open longer than the console holds it, paced by lines on its stdin
# (the test reads what is shown, then presses Enter): tests/test_console_edges, test_terminal.
HELD_TOO_LONG = """\
import os, sys
def step(stream, text):  # write, then wait until the test saw it on the console
    stream.write(text)
    stream.flush()
    sys.stdin.readline()
step(sys.stdout, "part-A ")  # a line left open longer than the console holds it
step(sys.stderr, "ERRLINE\\n")
step(sys.stdout, "part-B\\n")
end = sys.stdout if os.environ.get("HELD_END") == "stdout" else sys.stderr
end.write("tail")  # the run ends inside a line
"""
