#!/usr/bin/env python3
"""Throughput and memory of torchjob's output tee: a child writing --mb MiB of lines, fast.

Why: a training script can print a lot; torchjob drains the child's pipes and copies every byte
into stdout.log (and to its own stdout). That copy must not slow the job much (goal: >= 0.8x
the child writing straight to a file) and memory must stay flat however much is printed.

Variants, timed interleaved (a, b, c, a, b, c, ...), each from a clean page cache state (`sync`
before each, untimed), each in a fresh folder:
  (a) python writer.py > file                       the baseline
  (b) torchjob run --quiet -s writer.py > /dev/null   stdout spliced into stdout.log (no console)
  (c) torchjob run -s writer.py > file                 read, into stdout.log and a console file
  (d) torchjob run --tty always -s writer.py > file    (c) with the job on a pseudo-terminal
  (e) writer.py on a bare pty, read into a file         the pty's own ceiling, no torchjob
  (f) python writer.py | cat > file                     any pipe reader's ceiling (GNU cat)
  (g) python writer.py | tee log > /dev/null            (b) done by GNU tee, for comparison
  (h) python writer.py | tee log > file                  (c) done by GNU tee, for comparison
  (k) python writer.py > file, copied to log as it grows (sendfile), the job never waiting
  (i), (j): (b) and (c) with the torchjob given by --before, for an A/B in the same rounds
A pty hands out at most 4 KiB per read, so (d) is held to (e), the kernel's ceiling, not (a).
(f) to (h) are not goals: they show what a reader of a pipe (a C program, one copy out of the
pipe into one or two files) reaches on this machine against (a), and where the 0.8 of (b) and
(c) lies. (k) is the ceiling of any tee that leaves the bytes in two files: no pipe, the writer
writes its file at full speed and a second process copies each new range in the kernel (what a
torchjob could do at best; a prototype that did it reached 1.3x (c), see bench/RESULTS.md).
Peak RSS: wait4()'s ru_maxrss (max over torchjob and the processes it waited for, the child
included) and the torchjob process's own VmHWM, read from /proc while it runs.

Usage: python bench/tee.py [--mb 500] [--repeat 3] [--small-mb 50] [--keep] [--torchjob PATH]
                           [--before PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import find_torchjob, interpreter_of, run_folders  # bench/ is the script's own folder

MIB = 1 << 20
GOAL_RATIO = 0.8

REPO = Path(__file__).resolve().parents[1]

# 1 MiB of 64-byte lines, built once, written --mb times; partial writes (raw pipes) handled.
WRITER = """\
import sys
MB = {mb}
line = b"%010d " + b"x" * 52 + b"\\n"
block = b"".join(line % i for i in range(16384))
assert len(block) == 1 << 20
write = sys.stdout.buffer.write
for _ in range(MB):
    view = memoryview(block)
    while view:
        view = view[write(view) or 0 :]
sys.stdout.buffer.flush()
"""


@dataclass(frozen=True)
class Variant:
    """One way of running the writer."""

    key: str
    label: str
    torchjob: bool
    console_to_file: bool
    tty: bool = False
    via: str = ""  # (f), (g): the C program that reads the writer's pipe
    before: bool = False  # (i), (j): run by the --before torchjob


@dataclass(frozen=True)
class Result:
    """One measured run."""

    seconds: float
    in_run_seconds: float | None  # run.json duration_s: torchjob's start-up left out
    tree_rss_kib: int  # wait4 ru_maxrss: max over the process and its waited-for descendants
    own_hwm_kib: int | None  # the torchjob process's own VmHWM
    cpu_seconds: float  # user + system, of the process and its waited-for descendants


VARIANTS = [
    Variant("a", "python writer.py > file (baseline)", torchjob=False, console_to_file=True),
    Variant("b", "torchjob run --quiet > /dev/null", torchjob=True, console_to_file=False),
    Variant("c", "torchjob run > file", torchjob=True, console_to_file=True),
    Variant("d", "torchjob run --tty always > file", True, True, tty=True),
    Variant("e", "writer.py on a bare pty > file", False, True, tty=True),
    Variant("f", "python writer.py | cat > file", False, True, via="cat"),
    Variant("g", "python writer.py | tee log > /dev/null", False, False, via="tee"),
    Variant("h", "python writer.py | tee log > file", False, True, via="tee"),
    Variant("k", "python writer.py > file, sendfile to log", False, True, via="sendfile"),
]
BEFORE = [
    Variant("i", "(b) by the --before torchjob", True, False, before=True),
    Variant("j", "(c) by the --before torchjob", True, True, before=True),
]
# (f), (g): the writer's stdout piped into cat, or into tee writing argv[3]; no shell.
PIPED = """\
import subprocess, sys
tool = ["cat"] if sys.argv[1] == "cat" else ["tee", sys.argv[3]]
writer = subprocess.Popen([sys.executable, sys.argv[2]], stdout=subprocess.PIPE)
reader = subprocess.Popen(tool, stdin=writer.stdout)
writer.stdout.close()
sys.exit(writer.wait() or reader.wait())
"""
# (k): the writer writes this script's stdout (a file); each new range of it goes to argv[2] by
# sendfile as the shared offset moves (polled every 0.5 ms while nothing is new).
TAILED = """\
import os, subprocess, sys, time
source = os.open("/proc/self/fd/1", os.O_RDONLY)
log = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
done = os.lseek(1, 0, os.SEEK_CUR)
writer = subprocess.Popen([sys.executable, sys.argv[1]])
while True:
    ended = writer.poll() is not None
    size = min(os.lseek(1, 0, os.SEEK_CUR) - done, 8 << 20)
    if size > 0:
        done += os.sendfile(log, source, done, size)
    elif ended:
        break
    else:
        time.sleep(0.0005)
sys.exit(writer.returncode)
"""
PTY_GOAL = 0.7
# (e): the writer on a raw pty, its master read in 1 MiB reads and written to stdout.
BARE_PTY = """\
import os, subprocess, sys, tty
master, slave = os.openpty()
tty.setraw(slave)
child = subprocess.Popen([sys.executable, sys.argv[1]], stdout=slave)
os.close(slave)
while True:
    try:
        data = os.read(master, 1 << 20)
    except OSError:  # EIO: the writer has gone
        break
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
sys.exit(child.wait())
"""


class HwmWatcher(threading.Thread):
    """Polls /proc/PID/status for VmHWM (a high-water mark, so polling misses little)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/status"
        self.stop = threading.Event()
        self.peak_kib: int | None = None

    def sample(self) -> None:
        try:
            with open(self.path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        kib = int(line.split()[1])
                        self.peak_kib = max(self.peak_kib or 0, kib)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.sample()


class Bench:
    """Runs the variants in fresh folders under one temp root and checks what they wrote."""

    def __init__(
        self, torchjob: Path, root: Path, quiet_echoes: bool, before: Path | None = None
    ) -> None:
        self.torchjob, self.root, self.quiet_echoes = torchjob, root, quiet_echoes
        self.before = before
        self.python = interpreter_of(torchjob)
        self.env = dict(os.environ, TORCHJOB_HOME=str(root / "home"), PYTHONUNBUFFERED="1")
        self.project = root / "proj"
        self.project.mkdir()

    def writer(self, mb: int) -> str:
        name = f"writer_{mb}.py"
        path = self.project / name
        if not path.exists():
            path.write_text(WRITER.format(mb=mb))
        return name

    def argv(self, variant: Variant, mb: int, runs_dir: Path) -> list[str]:
        script = self.writer(mb)
        if variant.via:
            log = str(runs_dir.parent / "tee.log")
            if variant.via == "sendfile":
                return [str(self.python), "-c", TAILED, script, log]
            return [str(self.python), "-c", PIPED, variant.via, script, log]
        if not variant.torchjob:
            bare = ["-c", BARE_PTY] if variant.tty else []
            return [str(self.python), *bare, script]
        quiet = ["--quiet"] if not variant.console_to_file or self.quiet_echoes else []
        tty = ["--tty", "always"] if variant.tty else ["--tty", "never"]
        torchjob = self.before if variant.before else self.torchjob
        return [str(torchjob), "run", *quiet, *tty, "--runs-dir", str(runs_dir), "-s", script]

    def measure(self, variant: Variant, mb: int, folder: Path) -> Result:
        """Run once in `folder` (created here); verify byte counts and the exit status."""
        folder.mkdir(parents=True)
        runs_dir, console, errors = folder / "runs", folder / "console.out", folder / "stderr.txt"
        argv = self.argv(variant, mb, runs_dir)
        os.sync()  # leave no dirty pages of the last run for this one to compete with
        with (
            open(console if variant.console_to_file else os.devnull, "wb") as out,
            open(errors, "wb") as err,
        ):
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                cwd=self.project,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            watcher = HwmWatcher(proc.pid)
            if variant.torchjob:
                watcher.start()
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            watcher.stop.set()
        if proc.returncode != 0:
            sys.exit(
                f"bench: {' '.join(argv)} exited {proc.returncode}:\n"
                f"{errors.read_text(errors='replace')[-2000:]}"
            )
        want = mb * MIB
        in_run: float | None = None
        if variant.torchjob:
            (run_dir,) = run_folders(runs_dir)
            check_size(run_dir / "stdout.log", want)
            record = json.loads((run_dir / "run.json").read_text())
            if record.get("status") != "succeeded":
                sys.exit(f"bench: {run_dir}/run.json says {record.get('status')!r}")
            in_run = float(record["duration_s"])
        if variant.console_to_file:
            check_size(console, want)
        if variant.via in ("tee", "sendfile"):
            check_size(folder / "tee.log", want)
        return Result(
            seconds, in_run, usage.ru_maxrss, watcher.peak_kib, usage.ru_utime + usage.ru_stime
        )


def check_size(path: Path, want: int) -> None:
    got = path.stat().st_size
    if got != want:
        sys.exit(f"bench: {path} holds {got} bytes, expected {want}")


def quiet_echoes(torchjob: Path, root: Path) -> bool:
    """Does `torchjob run --quiet` still copy the child's stdout to its own stdout?"""
    probe = root / "probe"
    probe.mkdir()
    (probe / "probe.py").write_text('print("probe-output")\n')
    out = subprocess.run(
        [str(torchjob), "run", "--quiet", "--runs-dir", str(probe / "runs"), "-s", "probe.py"],
        cwd=probe,
        env=dict(os.environ, TORCHJOB_HOME=str(root / "home")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    return b"probe-output" in out.stdout


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description="Throughput and memory of torchjob's tee.")
    parser.add_argument("--mb", type=int, default=500, help="MiB the child writes")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds of all variants")
    parser.add_argument("--small-mb", type=int, default=50, help="MiB of the small RSS run")
    parser.add_argument("--dir", help="parent of the temp root [default: the system temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the files (for a look)")
    parser.add_argument(
        "--delete-each",
        action="store_true",
        help="delete each round's files after measuring (forced if disk is short)",
    )
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument("--before", help="another torchjob for (i) and (j), an A/B")
    args = parser.parse_args()
    variants = VARIANTS + (BEFORE if args.before else [])

    torchjob = find_torchjob(args.torchjob)
    root = Path(tempfile.mkdtemp(prefix="torchjob-bench-tee-", dir=args.dir))
    # per round: (a) a file, (b) stdout.log, (c) and (d) stdout.log and a console file, (e), (f)
    # and (g) a file, (h) and (k) two; (i) and (j) three more
    per_round = (16 if args.before else 13) * args.mb * MIB
    need = args.repeat * per_round + 4 * 2 * args.small_mb * MIB
    free = shutil.disk_usage(root).free
    delete_each = args.delete_each or free < need + (2 << 30)
    try:
        before = Path(args.before) if args.before else None
        bench = Bench(torchjob, root, quiet_echoes(torchjob, root), before)
        for v in variants:  # warm-up, not reported
            bench.measure(v, args.small_mb, root / "warmup" / v.key)
        results: dict[str, list[Result]] = {v.key: [] for v in variants}
        for i in range(args.repeat):
            for v in variants:
                folder = root / f"round{i}" / v.key
                results[v.key].append(bench.measure(v, args.mb, folder))
                print(
                    f"  round {i + 1}/{args.repeat} {v.key}: "
                    f"{args.mb / results[v.key][-1].seconds:7.1f} MB/s",
                    file=sys.stderr,
                )
            if delete_each:
                shutil.rmtree(root / f"round{i}")
        small = {v.key: bench.measure(v, args.small_mb, root / "small" / v.key) for v in variants}
        written = folder_bytes(root)
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    report(args, torchjob, bench.quiet_echoes, free, delete_each, written, results, small)


def report(
    args: argparse.Namespace,
    torchjob: Path,
    quiet_echoed: bool,
    free: int,
    delete_each: bool,
    written: int,
    results: dict[str, list[Result]],
    small: dict[str, Result],
) -> None:
    """Print the throughput table, the goal verdicts and the memory table."""
    mb: int = args.mb
    variants = [v for v in VARIANTS + BEFORE if v.key in results]
    print(f"torchjob:   {torchjob}")
    print(
        f"child:      {interpreter_of(torchjob)} writing {mb} MiB of 64-byte lines in 1 MiB "
        f"blocks; {args.repeat} rounds, interleaved; MB = MiB"
    )
    print(
        f"disk:       {free / (1 << 30):.1f} GiB free at start; "
        + (
            "each round's files deleted right after it was measured"
            if delete_each
            else f"all files kept until the end ({written / (1 << 30):.1f} GiB), then deleted"
        )
    )
    if args.before:
        print(f"before:     {args.before} for (i) and (j)")
    if not quiet_echoed:
        print(
            "note:       `run --quiet` does not copy the child's output to torchjob's stdout, "
            "so (b) measures the tee into the logs only, and (c) runs without --quiet "
            "(torchjob's own lines go to stderr, so the console file is the child's bytes)"
        )
    print()
    # medians, once: MB/s over the whole command, and in-run (torchjob's variants only)
    rate = {k: statistics.median(mb / r.seconds for r in rs) for k, rs in results.items()}
    looped = {
        k: statistics.median(mb / r.in_run_seconds for r in rs if r.in_run_seconds)
        for k, rs in results.items()
        if any(r.in_run_seconds for r in rs)
    }
    base = rate["a"]
    names = {v.key: f"({v.key}) {v.label}" for v in variants}
    width = max(len(n) for n in names.values())
    print(
        f"{'variant':<{width}}  {'median MB/s':>11}  {'min..max MB/s':>15}  {'ratio':>5}  "
        f"{'in-run MB/s':>11}  {'median s':>8}  {'CPU s':>5}"
    )
    for v in variants:
        rates = [mb / r.seconds for r in results[v.key]]
        med = rate[v.key]
        in_run = f"{looped[v.key]:11.1f}" if v.key in looped else "-".rjust(11)
        spread = f"{min(rates):.0f}..{max(rates):.0f}"
        seconds = statistics.median(r.seconds for r in results[v.key])
        cpu = statistics.median(r.cpu_seconds for r in results[v.key])
        print(
            f"{names[v.key]:<{width}}  {med:11.1f}  {spread:>15}  {med / base:5.2f}  "
            f"{in_run}  {seconds:8.2f}  {cpu:5.2f}"
        )
    print("(in-run MB/s: the size over run.json's duration_s, i.e. without torchjob's start-up;")
    print(" CPU s: user + system seconds of the writer, and of torchjob with all it waited for)")
    print()
    for key in "bc":
        ratio = rate[key] / base
        verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
        print(
            f"goal: ({key}) >= {GOAL_RATIO} x baseline: {verdict} ({ratio:.2f}; in-run, "
            f"without torchjob's start-up: {looped[key] / base:.2f})"
        )
    ratio = rate["d"] / rate["e"]
    verdict = "met" if ratio >= PTY_GOAL else "NOT met"
    print(f"goal: (d) >= {PTY_GOAL} x (e), the pty's ceiling: {verdict} ({ratio:.2f})")
    print(
        f"ceiling: GNU cat reading the pipe (f) reaches {rate['f'] / base:.2f} of (a); GNU tee "
        f"(g) {rate['g'] / base:.2f}, to two files (h) {rate['h'] / base:.2f}; torchjob's (b) "
        f"is {rate['b'] / rate['g']:.2f}x GNU tee's (g), (c) {rate['c'] / rate['h']:.2f}x (h); "
        f"two files at best (k): {rate['k'] / base:.2f} ((c) is {rate['c'] / rate['k']:.2f}x (k))"
    )
    if "i" in results:
        print(
            f"A/B: (b) is {rate['b'] / rate['i']:.2f}x the --before torchjob's (i), in-run "
            f"{looped['b'] / looped['i']:.2f}x; (c) {rate['c'] / rate['j']:.2f}x (j), in-run "
            f"{looped['c'] / looped['j']:.2f}x"
        )
    print()
    print(f"peak RSS, MiB: {args.small_mb} MiB run vs median of the {mb} MiB runs")
    print(
        f"{'variant':<{width}}  {'own ' + str(args.small_mb):>8}  {'own ' + str(mb):>8}  "
        f"{'tree ' + str(args.small_mb):>9}  {'tree ' + str(mb):>9}"
    )
    for v in variants:
        own_big = [r.own_hwm_kib for r in results[v.key] if r.own_hwm_kib]
        own_small = small[v.key].own_hwm_kib
        tree_big = statistics.median(r.tree_rss_kib for r in results[v.key]) / 1024
        own = [
            f"{kib / 1024:8.1f}" if kib else "-".rjust(8)
            for kib in (own_small, statistics.median(own_big) if own_big else None)
        ]
        print(
            f"{names[v.key]:<{width}}  {own[0]}  {own[1]}  "
            f"{small[v.key].tree_rss_kib / 1024:9.1f}  {tree_big:9.1f}"
        )
    print(
        "(own: the torchjob process's VmHWM; tree: wait4 ru_maxrss, the largest of torchjob, the "
        "child and the watchdog; for (a) the writer alone)"
    )


if __name__ == "__main__":
    main()
