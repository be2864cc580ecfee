#!/usr/bin/env python3
"""Time to a ready working tree for a git project: torchjob's first run, second run at a pinned
commit and second run at a branch, beside a plain `git clone` and a bare `git checkout` from a
local clone, all of the same generated repository served by a real `git daemon`.

Why: issue 3 asks that a second run of a pinned commit cost at most 1.2x a bare `git checkout`
of that tree from a local clone, with no network, and that a branch cost one fetch. The
repository (2,000 files of a few KB in nested folders, 50 commits, a `main.py` that exits 0) is
generated deterministically with `git fast-import`, so every run of this script times the same
commits. The cases run interleaved, one round at a time (a b c f e d g and a b e c f d g in turn,
so the two the goal compares take turns right after a big write), each round with a fresh
TORCHJOB_HOME (an empty cache for the first run) and a fresh folder for every tree, since
deleting big trees slows this VM's file creation for a while (DESIGN.md section 7); everything
is deleted at the end.

  (a) git clone URL DEST                                   baseline of the first run
  (b) torchjob run -p URL (empty cache)                    clone into the mirror + checkout
  (c) torchjob run -p URL -r <full sha> (mirror exists)    must be cached, no fetch, no network
  (d) torchjob run -p URL -r main (mirror exists)          exactly one fetch
  (e) GIT_INDEX_FILE=<new> git --git-dir=CLONE/.git --work-tree=NEW checkout -f <sha> -- .
      the checkout of that tree from (a)'s local clone into a fresh folder, with a private
      index: the same work torchjob's `read-tree --reset -u` does, and nothing else
  (f) the read-tree command (c)'s setup.log shows, run by hand into a fresh folder (not a goal
      case: it splits (c)'s source stage into git's work and torchjob's own time around it)
  (g) torchjob run -p URL#pkg00 -r <full sha> (mirror exists): a `#subdirectory` run, whose
      run folder must hold that folder only (issue 14's disk goal); its size on disk (blocks
      allocated) is reported beside (c)'s whole-repository run folder

For torchjob the table shows the whole command and run.json's `source.seconds` (clone or fetch,
ref resolution and checkout, without Python start-up); "git (setup.log)" adds up the times
setup.log gives for the git commands it lists (the quiet rev-parse probes are not listed), and
run.json's `duration_s` (from the run folder's creation to the job's end: the whole command less
Python start-up, imports and planning). The daemon runs with --verbose, and its "Request
upload-pack" lines count the network requests of each case.

Usage: python bench/source.py [--rounds 7] [--warmup 1] [--torchjob PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import find_torchjob, run_folders  # bench/ is the script's own folder

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SEED = 20261123
FILES = 2000
COMMITS = 50
CHANGED_PER_COMMIT = 40
FILE_BYTES = (1500, 6000)  # each file's size is drawn from this range
BRANCH = "main"
REPO_NAME = "bench.git"
GOAL = 1.2
READY_TIMEOUT_S = 15.0
CASES = {
    "a": "(a) git clone (baseline, first run)",
    "b": "(b) torchjob first run (empty cache)",
    "c": "(c) torchjob -r <sha> (second run)",
    "d": "(d) torchjob -r main (second run)",
    "e": "(e) git checkout from local clone",
    "f": "(f) (c)'s read-tree, run by hand",
    "g": "(g) torchjob -r <sha> #pkg00 (second)",
}
TORCHJOB_CASES = ("b", "c", "d", "g")
SUBDIR = "pkg00"  # 200 of the files, and a train.py
WORDS = (
    "loss",
    "model",
    "batch",
    "optimizer",
    "step",
    "epoch",
    "tensor",
    "grad",
    "layer",
    "weight",
    "bias",
    "dataset",
    "loader",
    "device",
    "config",
    "metric",
    "scale",
    "shape",
    "input",
    "output",
    "hidden",
    "dropout",
    "norm",
    "seed",
    "rank",
    "world",
    "state",
    "dict",
)


# ---------------------------------------------------------------- the repository


def git_env() -> dict[str, str]:
    """The environment for every command here, torchjob included: no user or system git
    config (torchjob passes GIT_CONFIG_GLOBAL and GIT_CONFIG_NOSYSTEM through), no other GIT_*
    variable, no prompt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def run(
    argv: list[str], *, env: dict[str, str], cwd: Path | None = None, stdin: bytes | None = None
) -> str:
    """Run a command to the end; exit the benchmark with its output if it fails."""
    proc = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(
            f"bench: `{shlex.join(argv)}` exited {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout.decode()


def source_line(rng: random.Random) -> str:
    a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    return f"    {a}_{rng.randrange(1000)} = {b}({rng.randrange(10**6)}, {c}={rng.random():.6f})\n"


def file_text(rng: random.Random, size: int) -> list[str]:
    lines = [f'"""Generated module {rng.randrange(10**9)}."""\n', "\n", "def build():\n"]
    total = sum(len(line) for line in lines)
    while total < size:
        lines.append(source_line(rng))
        total += len(lines[-1])
    return lines


def fast_import_stream() -> bytes:
    """All blobs and commits for `git fast-import`: commit 1 adds every file, each later commit
    rewrites a few lines of CHANGED_PER_COMMIT files; fixed seed, names and dates."""
    rng = random.Random(SEED)
    paths = [f"pkg{i // 200:02d}/sub{i // 20 % 10:02d}/mod{i % 20:02d}.py" for i in range(FILES)]
    files = {p: file_text(rng, rng.randrange(*FILE_BYTES)) for p in paths}
    out: list[bytes] = []
    mark = 0

    def blob(data: bytes) -> int:
        nonlocal mark
        mark += 1
        out.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
        return mark

    for n in range(1, COMMITS + 1):
        if n == 1:
            changed = [*paths, "main.py", f"{SUBDIR}/train.py"]
            files["main.py"] = files[f"{SUBDIR}/train.py"] = ["import sys\n", "sys.exit(0)\n"]
        else:
            changed = sorted(rng.sample(paths, CHANGED_PER_COMMIT))
            for p in changed:
                lines = files[p]
                for _ in range(3):
                    lines[rng.randrange(3, len(lines))] = source_line(rng)
                lines.append(source_line(rng))
        marks = {p: blob("".join(files[p]).encode()) for p in changed}
        message = f"Commit {n}: {len(changed)} files\n".encode()
        who = b"Bench <bench@torchjob.invalid> %d +0000" % (1_700_000_000 + 3600 * n)
        out.append(
            b"commit refs/heads/%s\nauthor %s\ncommitter %s\ndata %d\n%s"
            % (BRANCH.encode(), who, who, len(message), message)
        )
        out.extend(b"M 100644 :%d %s\n" % (marks[p], p.encode()) for p in changed)
        out.append(b"\n")
    return b"".join(out)


@dataclass(frozen=True)
class Repo:
    path: Path
    head: str
    commits: int
    files: int
    raw_bytes: int
    pack_bytes: int
    subdir_files: int


def make_repo(path: Path, env: dict[str, str]) -> Repo:
    """The bare repository the daemon serves, packed as `git gc` leaves a real server's."""
    run(["git", "init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(path)], env=env)
    run(["git", f"--git-dir={path}", "fast-import", "--quiet"], env=env, stdin=fast_import_stream())
    run(["git", f"--git-dir={path}", "gc", "--quiet", "--prune=now"], env=env)
    head = run(["git", f"--git-dir={path}", "rev-parse", f"refs/heads/{BRANCH}"], env=env).strip()
    commits = int(run(["git", f"--git-dir={path}", "rev-list", "--count", head], env=env))
    tree = run(["git", f"--git-dir={path}", "ls-tree", "-r", "-l", head], env=env).splitlines()
    raw = sum(int(line.split()[3]) for line in tree)
    pack = sum(p.stat().st_size for p in (path / "objects" / "pack").glob("*.pack"))
    sub = sum(1 for line in tree if line.split("\t", 1)[1].startswith(f"{SUBDIR}/"))
    return Repo(path, head, commits, len(tree), raw, pack, sub)


# ---------------------------------------------------------------- the server


@dataclass
class Daemon:
    """A `git daemon` on 127.0.0.1; its --verbose log counts the requests it served."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self) -> str:
        return f"git://{HOST}:{self.port}/{REPO_NAME}"

    def requests(self) -> int:
        """upload-pack requests so far. The daemon's per-connection child logs the request
        before it serves anything, so a client that has exited has its line in the log."""
        return self.log.read_text(errors="replace").count("Request upload-pack")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Poll connect until the daemon accepts (True) or exits (False, e.g. port taken)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.005)  # poll interval, not a wait for something to happen
    return False


@contextmanager
def git_daemon(root: Path, log: Path, env: dict[str, str]) -> Iterator[Daemon]:
    for _ in range(5):
        port = free_port()
        argv = [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={root}",
            f"--listen={HOST}",
            f"--port={port}",
            "--verbose",
            "--log-destination=stderr",
            str(root),
        ]
        with log.open("ab") as fh:  # O_APPEND: the daemon's children write to it too
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=fh,
                start_new_session=True,
            )
        if wait_listening(proc, port):
            break
        stop(proc)
    else:
        sys.exit(f"bench: git daemon did not start:\n{log.read_text(errors='replace')}")
    try:
        yield Daemon(proc, port, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's process group (it and any per-connection child), then wait."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


# ---------------------------------------------------------------- one measurement


@dataclass
class Sample:
    """One timed command: wall time, and for torchjob what run.json and setup.log say."""

    whole_s: float
    requests: int
    source_s: float | None = None
    git_logged_s: float | None = None
    git_commands: list[str] = field(default_factory=list)
    checkout_argv: list[str] = field(default_factory=list)  # the read-tree setup.log shows
    record: dict[str, Any] = field(default_factory=dict)
    disk_bytes: int = 0  # the run folder's src/, in allocated blocks
    files: int = 0


def timed(argv: list[str], env: dict[str, str], cwd: Path, daemon: Daemon) -> Sample:
    before = daemon.requests()
    start = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(
            f"bench: `{shlex.join(argv)}` exited {proc.returncode}:\n"
            f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}"
        )
    return Sample(elapsed, daemon.requests() - before)


def git_subcommands(setup_log: str) -> tuple[list[str], float, list[str]]:
    """The git subcommands setup.log lists, the sum of the times it gives for them, and the
    argv of the (last) read-tree."""
    commands: list[str] = []
    read_tree: list[str] = []
    for line in setup_log.splitlines():
        if not line.startswith("$ git "):
            continue
        argv = shlex.split(line[2:])
        skip = False
        for word in argv[1:]:
            if skip:
                skip = False
            elif word == "-c":
                skip = True
            elif not word.startswith("-"):
                commands.append(word)
                if word == "read-tree":
                    read_tree = argv
                break
    seconds = sum(
        float(s) for s in re.findall(r"^\[exit 0 after ([0-9.]+)s\]$", setup_log, re.MULTILINE)
    )
    return commands, seconds, read_tree


def disk_usage(tree: Path) -> int:
    """Bytes allocated to a folder's files and folders (what `du` counts)."""
    total = 0
    for top, dirs, files in os.walk(tree):
        for name in dirs + files:
            total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def count_files(tree: Path) -> int:
    """Files in a working tree, not counting a .git folder."""
    total = 0
    for _, dirs, files in os.walk(tree):
        if ".git" in dirs:
            dirs.remove(".git")
        total += len(files)
    return total


class Round:
    """One round: a fresh TORCHJOB_HOME and fresh folders for every tree."""

    def __init__(
        self, root: Path, torchjob: Path, daemon: Daemon, repo: Repo, env: dict[str, str]
    ) -> None:
        root.mkdir()
        self.root = root
        self.torchjob = torchjob
        self.daemon = daemon
        self.repo = repo
        self.env = env
        self.home = root / "home"
        self.tj_env = dict(env, TORCHJOB_HOME=str(self.home))
        self.clone = root / "clone-a"
        self.problems: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)

    def a_clone(self) -> Sample:
        sample = timed(
            ["git", "clone", "--quiet", self.daemon.url(), str(self.clone)],
            self.env,
            self.root,
            self.daemon,
        )
        self.check(count_files(self.clone) == self.repo.files, "(a) clone has the wrong files")
        return sample

    def torchjob_run(self, case: str, ref: str | None, subdir: str | None = None) -> Sample:
        runs = self.home / "runs"
        before = set(run_folders(runs))
        argv = [
            str(self.torchjob),
            "run",
            "-q",
            "-s",
            "train.py" if subdir else "main.py",
            "-p",
            f"{self.daemon.url()}#{subdir}" if subdir else self.daemon.url(),
            "--allow-insecure-source",
            *(["-r", ref] if ref else []),
        ]
        sample = timed(argv, self.tj_env, self.root, self.daemon)
        new = sorted(set(run_folders(runs)) - before)
        if len(new) != 1:
            sys.exit(f"bench: ({case}) made {len(new)} run folders: {new}")
        run_dir = new[0]
        rec: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
        setup_log = run_dir / "setup.log"
        commands, logged, read_tree = git_subcommands(
            setup_log.read_text() if setup_log.exists() else ""
        )
        src = rec["source"]
        sample.record, sample.git_commands, sample.git_logged_s = rec, commands, logged
        sample.checkout_argv = read_tree
        sample.source_s = float(src["seconds"])
        self.check(rec.get("exit_code") == 0, f"({case}) run.json exit_code {rec.get('exit_code')}")
        self.check(src.get("commit") == self.repo.head, f"({case}) commit {src.get('commit')}")
        sample.files = count_files(run_dir / "src")
        sample.disk_bytes = disk_usage(run_dir / "src")
        want = self.repo.subdir_files if subdir else self.repo.files
        self.check(sample.files == want, f"({case}) working tree has the wrong files")
        return sample

    def b_first(self) -> Sample:
        sample = self.torchjob_run("b", None)
        self.check(sample.git_commands.count("clone") == 1, "(b) did not clone exactly once")
        self.check(sample.record["source"].get("cached") is False, "(b) cached is not false")
        return sample

    def c_pinned(self) -> Sample:
        sample = self.torchjob_run("c", self.repo.head)
        self.check(sample.record["source"].get("cached") is True, "(c) cached is not true")
        self.check(
            not {"fetch", "clone"} & set(sample.git_commands),
            f"(c) setup.log shows network commands: {sample.git_commands}",
        )
        self.check(sample.requests == 0, f"(c) the daemon served {sample.requests} requests")
        return sample

    def d_branch(self) -> Sample:
        sample = self.torchjob_run("d", BRANCH)
        fetches = sample.git_commands.count("fetch")
        self.check(fetches == 1, f"(d) setup.log shows {fetches} fetches, not 1")
        self.check("clone" not in sample.git_commands, "(d) cloned again")
        return sample

    def g_subdir(self) -> Sample:
        sample = self.torchjob_run("g", self.repo.head, SUBDIR)
        self.check(sample.requests == 0, f"(g) the daemon served {sample.requests} requests")
        return sample

    def e_checkout(self) -> Sample:
        tree = self.root / "checkout-e"
        index = self.root / "index-e"
        tree.mkdir()  # git needs the folder; one mkdir is microseconds, torchjob makes its own
        argv = [
            "git",
            f"--git-dir={self.clone / '.git'}",
            f"--work-tree={tree}",
            "checkout",
            "-q",
            "-f",
            self.repo.head,
            "--",
            ".",
        ]
        sample = timed(argv, dict(self.env, GIT_INDEX_FILE=str(index)), self.root, self.daemon)
        self.check(count_files(tree) == self.repo.files, "(e) checkout has the wrong files")
        self.check(sample.requests == 0, "(e) used the network")
        return sample

    def f_by_hand(self, c: Sample) -> Sample:
        """The read-tree (c) ran, argv for argv from its setup.log, into a fresh folder: git's
        own share of (c)'s source stage, without torchjob's Python around it."""
        tree = self.root / "checkout-f"
        index = self.root / "index-f"
        tree.mkdir()
        argv = [
            f"--work-tree={tree}" if a.startswith("--work-tree=") else a for a in c.checkout_argv
        ]
        sample = timed(argv, dict(self.env, GIT_INDEX_FILE=str(index)), self.root, self.daemon)
        self.check(count_files(tree) == self.repo.files, "(f) read-tree has the wrong files")
        return sample

    def all(self, c_first: bool) -> dict[str, Sample]:
        """a, b, then the pair the goal compares back to back (c e, or e c) with (f) after
        (c), then d."""
        out = {"a": self.a_clone(), "b": self.b_first()}
        if c_first:
            out["c"] = self.c_pinned()
            out["f"] = self.f_by_hand(out["c"])
            out["e"] = self.e_checkout()
        else:
            out["e"] = self.e_checkout()
            out["c"] = self.c_pinned()
            out["f"] = self.f_by_hand(out["c"])
        out["d"] = self.d_branch()
        out["g"] = self.g_subdir()
        return out


# ---------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def report(samples: dict[str, list[Sample]], rounds: int, orders: list[bool]) -> None:
    print(
        f"{'case':<38}  {'whole ms':>8}  {'min..max':>11}  {'source.seconds ms':>17}  "
        f"{'git (setup.log) ms':>18}  {'duration_s ms':>13}  {'whole - source ms':>17}  "
        f"{'requests':>8}"
    )
    for key, label in CASES.items():
        rows = samples[key]
        whole = [s.whole_s for s in rows]
        line = (
            f"{label:<38}  {ms(statistics.median(whole)):>8}  "
            f"{ms(min(whole)) + '..' + ms(max(whole)):>11}  "
        )
        if key in TORCHJOB_CASES:
            src = statistics.median(s.source_s or 0.0 for s in rows)
            logged = statistics.median(s.git_logged_s or 0.0 for s in rows)
            duration = statistics.median(float(s.record["duration_s"]) for s in rows)
            rest = statistics.median(s.whole_s - (s.source_s or 0.0) for s in rows)
            line += f"{ms(src):>17}  {ms(logged):>18}  {ms(duration):>13}  {ms(rest):>17}  "
        else:
            line += f"{'-':>17}  {'-':>18}  {'-':>13}  {'-':>17}  "
        reqs = sorted({s.requests for s in rows})
        print(line + f"{'/'.join(map(str, reqs)):>8}")
    print(
        f"(medians of {rounds} rounds; git (setup.log): the git commands setup.log lists, "
        "with its times; duration_s: run.json's, from the run folder's creation to the end of "
        "the job; requests: upload-pack requests the daemon logged per command)"
    )
    print()
    for key in TORCHJOB_CASES:
        commands = samples[key][0].git_commands
        print(f"{CASES[key][:3]} git commands in setup.log: {' '.join(commands)}")
    print()

    def med(key: str, source: bool = False) -> float:
        return statistics.median((s.source_s or 0.0) if source else s.whole_s for s in samples[key])

    e = med("e")
    for text, value in (
        ("(c) source.seconds / (e)", med("c", True) / e),
        ("(c) whole command  / (e)", med("c") / e),
    ):
        verdict = "met" if value <= GOAL else "NOT met"
        print(f"goal (c) <= {GOAL}x (e): {text} = {value:.2f}x: {verdict}")
    print(
        f"(b) source.seconds / (a) = {med('b', True) / med('a'):.2f}x, "
        f"(b) whole / (a) = {med('b') / med('a'):.2f}x"
    )
    print(
        f"(d) source.seconds / (e) = {med('d', True) / e:.2f}x, "
        f"(d) whole / (e) = {med('d') / e:.2f}x"
    )
    waiting = statistics.median(
        (c.source_s or 0.0) - f.whole_s for c, f in zip(samples["c"], samples["f"], strict=True)
    )
    print(
        f"(c) source.seconds - (f), per round, median: {waiting * 1000:.0f} ms of torchjob's "
        "own time around the checkout (lock, SHA lookup, waiting for git's exit)"
    )
    spread = max(s.whole_s for s in samples["e"]) / min(s.whole_s for s in samples["e"])
    if spread > 1.5:
        print(
            f"warning: (e) varied {spread:.1f}x between rounds: this VM's file creation was not "
            "steady (other load, or a big delete in the last minutes); rerun when idle"
        )
    c_disk, g_disk = samples["c"][0].disk_bytes, samples["g"][0].disk_bytes
    print(
        f"disk per run folder: (c) whole repository {c_disk / 2**20:.1f} MiB "
        f"({samples['c'][0].files:,} files), (g) #{SUBDIR} {g_disk / 2**20:.2f} MiB "
        f"({samples['g'][0].files:,} files) = {g_disk / c_disk:.2f}x; "
        f"(g) source.seconds / (e) = {med('g', True) / e:.2f}x"
    )
    per_round = [
        f"{(c.source_s or 0.0) / e_.whole_s:.2f} ({'c' if first else 'e'} first)"
        for c, e_, first in zip(samples["c"], samples["e"], orders, strict=True)
    ]
    print(f"(c) source.seconds / (e) per round: {', '.join(per_round)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Time to a ready working tree for git projects.")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds [default: 7]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first [default: 1]")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")

    torchjob = find_torchjob(args.torchjob)
    env = git_env()
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-source-"))
    samples: dict[str, list[Sample]] = {k: [] for k in CASES}
    problems: list[str] = []
    orders: list[bool] = []  # per timed round: did (c) run before (e)?
    try:
        served = tmp / "served"
        served.mkdir()
        started = time.perf_counter()
        repo = make_repo(served / REPO_NAME, env)
        made_in = time.perf_counter() - started
        with git_daemon(served, tmp / "daemon.log", env) as daemon:
            print(f"torchjob:  {torchjob}")
            print(
                f"git:       {run(['git', '--version'], env=env).strip()}; "
                "GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 for every command"
            )
            print(
                f"repo:      {repo.files} files ({repo.raw_bytes / 2**20:.1f} MiB at HEAD), "
                f"{repo.commits} commits, pack {repo.pack_bytes / 2**20:.1f} MiB, "
                f"HEAD {repo.head} (seed {SEED}; generated in {made_in:.1f} s)"
            )
            print(f"served:    {daemon.url()} by `git daemon` (git:// protocol, real TCP)")
            print(
                f"rounds:    {args.rounds} timed after {args.warmup} warm-up, the cases "
                "interleaved: a b c f e d g and a b e c f d g in turn, so (c) and (e) take turns "
                "right after a big write; a fresh TORCHJOB_HOME and fresh folders per round; "
                "all deleted at the end"
            )
            print(
                "(e) is:    GIT_INDEX_FILE=<new file> git --git-dir=<(a)'s clone>/.git "
                "--work-tree=<new folder> checkout -q -f <sha> -- ."
            )
            print()
            for i in range(args.warmup + args.rounds):
                one = Round(tmp / f"round-{i}", torchjob, daemon, repo, env)
                c_first = (i - args.warmup) % 2 == 0
                results = one.all(c_first)
                problems += [f"round {i}: {p}" for p in one.problems]
                if i >= args.warmup:
                    for key, sample in results.items():
                        samples[key].append(sample)
                    orders.append(c_first)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report(samples, args.rounds, orders)
    print()
    if problems:
        print("checks FAILED:")
        for p in problems:
            print(f"  {p}")
        sys.exit(1)
    print(
        "checks: every tree has all files of HEAD; (b) cloned once, cached false; (c) cached "
        "true, no fetch or clone in setup.log, 0 daemon requests; (d) exactly one fetch in "
        "setup.log; (g) holds only #pkg00, no network; every run.json exit_code 0 at HEAD's "
        "commit: all passed"
    )


if __name__ == "__main__":
    main()
