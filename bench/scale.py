#!/usr/bin/env python3
"""Scale-out latency: the first line of a 2-process torchrun gang through `torchjob run` against
torchrun by hand, and submit-to-start on a real local Slurm through torchjob against `sbatch`.

Why: a gang or a Slurm job pays torchjob's start-up once more than the engine alone, and issue 5
sets a goal of at most 150 ms more to the first line of a torchrun job. Each variant is started
as a process whose stdout pipe the bench reads in large chunks; the clock runs from just before
the process starts to the first complete stdout line holding the marker (from any rank). The
variants are interleaved, and their order rotates each round, so machine noise hits them alike.

A third variant in each part says where the time goes: torchrun by hand with torchjob's own
flags (per-rank log files tailed back by torchrun), and `--detach` (torchjob's submit path only).
Files the job writes (rank logs, Slurm's output file) are polled alongside, so the table shows
when the job wrote its line as well as when the bench read it.

Slurm reuses the one-node cluster of tests/slurm.py (munge, slurmctld, slurmd on localhost; it
needs root and Debian's slurm-wlm); without it that part is skipped with the reason. slurmctld
starts new jobs at a pass about once a second, so each Slurm round is staggered by an untimed
pause, the same set of pauses for every variant, and the mean is the figure to compare.

Usage: python bench/scale.py [--rounds 7] [--slurm-rounds 5] [--warmup 1] [--torchjob PATH]
                             [--no-slurm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common import find_torchjob, interpreter_of  # bench/ is the script's own folder

if TYPE_CHECKING:  # at run time imported late, with the repository put on sys.path
    from tests.slurm import Slurm

REPO = Path(__file__).resolve().parents[1]
GOAL_MS = 150.0
GANG_RATIO = 1.05
MARKER = b"torchjob-scale-marker"
JOB_TIMEOUT_S = 180.0
FILE_POLL_S = 0.005  # how often the bench looks at a job's output file (its resolution)
SLURM_TICK_S = 1.0  # slurmctld's background pass, which starts newly submitted jobs

DDP = f'''
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
print(f"{MARKER.decode()} rank {{dist.get_rank()}} sum {{t.item()}}", flush=True)
dist.destroy_process_group()
'''
HELLO = f'print("{MARKER.decode()}", flush=True)\n'


@dataclass(frozen=True)
class Timing:
    """One run, in ms from the start: the marker line read, the process's (or job's) end, and
    the marker seen in a file the bench polls alongside (a rank log, Slurm's output), if any."""

    first_ms: float
    total_ms: float
    in_file_ms: float | None = None


@dataclass(frozen=True)
class Variant:
    """One way to run the job; `run(work, slot)` does one timed run in a fresh folder of its
    own; slot (0..rounds-1, once each in the timed rounds) lets a variant stagger its start."""

    label: str
    run: Callable[[Path, int], Timing]


class BenchError(RuntimeError):
    """A variant failed: the message carries its command and the end of its stderr."""


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


class FileWatch:
    """Polls, in a thread, the files matching `pattern` under `folder` for a marker line: when
    did the job write the line, as against when the bench read it from a pipe."""

    def __init__(self, folder: Path, pattern: str, start: float) -> None:
        self.folder, self.pattern, self.start = folder, pattern, start
        self.found_ms: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for path in self.folder.glob(self.pattern):
                if _has_marker(path):
                    self.found_ms = (time.perf_counter() - self.start) * 1000.0
                    return
            self._stop.wait(FILE_POLL_S)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return self.found_ms


def _has_marker(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(MARKER in line for line in data.split(b"\n")[:-1])


def time_to_marker(
    argv: Sequence[str], cwd: Path, env: dict[str, str], work: Path, watch: str | None = None
) -> Timing:
    """Start argv, read its stdout pipe in 64 KiB chunks, note when the first complete line
    with the marker arrives, drain to EOF and wait for the exit. stderr goes to a file.
    `watch`: a glob under `work` whose files are polled for the marker meanwhile."""
    stderr_path = work / "bench-stderr.txt"
    with stderr_path.open("wb") as err:
        start = time.perf_counter()
        watcher = FileWatch(work, watch, start) if watch else None
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    # A hung job must not hang the bench: kill its whole process group at the deadline.
    killer = threading.Timer(JOB_TIMEOUT_S, lambda: _killpg(proc.pid))
    killer.start()
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        first: float | None = None
        pending = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if first is None:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if any(MARKER in line for line in complete):
                    first = time.perf_counter()
                    pending = b""
        code = proc.wait()
        total = time.perf_counter()
    finally:
        killer.cancel()
        in_file = watcher.stop() if watcher else None
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0 or first is None:
        why = f"exited {code}" if code != 0 else "printed no marker line"
        raise BenchError(f"{' '.join(argv)} {why}; stderr:\n{_tail(stderr_path)}")
    return Timing((first - start) * 1000.0, (total - start) * 1000.0, in_file)


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def wait_for_marker(path: Path, start: float, deadline_s: float = JOB_TIMEOUT_S) -> float:
    """Poll a file (every FILE_POLL_S) until a complete line holds the marker; ms from start."""
    deadline = start + deadline_s
    while time.perf_counter() < deadline:
        if _has_marker(path):
            return (time.perf_counter() - start) * 1000.0
        time.sleep(FILE_POLL_S)
    raise BenchError(f"no marker line in {path} after {deadline_s:.0f} s")


def interleave(
    variants: list[Variant], rounds: int, warmup: int, tmp: Path
) -> dict[str, list[Timing]]:
    """warmup untimed rounds, then `rounds` timed ones; the order rotates every round."""
    times: dict[str, list[Timing]] = {v.label: [] for v in variants}
    for i in range(warmup + rounds):
        shift = i % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            work = tmp / f"r{i}-{variants.index(variant)}"  # fresh folder per run, none deleted
            work.mkdir(parents=True)
            timing = variant.run(work, i % rounds)
            if i >= warmup:
                times[variant.label].append(timing)
        label = "warm-up" if i < warmup else f"round {i - warmup + 1}/{rounds}"
        print(f"  {label} done", file=sys.stderr, flush=True)
    return times


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}..{max(values):.0f}"


def print_table(
    header: str, file_column: str, variants: list[Variant], times: dict[str, list[Timing]]
) -> None:
    """Per variant: median, mean and range of the first line, the difference of medians to the
    first variant (the baseline), when the marker reached the watched file and the lag from
    there to the line read (medians of each run's figures), the total; then every round."""
    base = statistics.median(t.first_ms for t in times[variants[0].label])
    width = max(len(header), *(len(v.label) for v in variants))
    print(
        f"{header:<{width}}  {'first line':>10}  {'mean':>5}  {'min..max':>11}  "
        f"{'vs base':>7}  {file_column:>{len(file_column)}}  {'lag':>4}  {'total':>5}  "
        f"{'min..max':>11}"
    )
    for v in variants:
        runs = times[v.label]
        first = [t.first_ms for t in runs]
        total = [t.total_ms for t in runs]
        in_file = [t.in_file_ms for t in runs if t.in_file_ms is not None]
        lags = [t.first_ms - t.in_file_ms for t in runs if t.in_file_ms is not None]
        med = statistics.median(first)
        seen = f"{statistics.median(in_file):.0f}" if in_file else "-"
        lag = f"{statistics.median(lags):.0f}" if lags else "-"
        print(
            f"{v.label:<{width}}  {med:10.0f}  {statistics.mean(first):5.0f}  "
            f"{spread(first):>11}  {med - base:+7.0f}  {seen:>{len(file_column)}}  "
            f"{lag:>4}  {statistics.median(total):5.0f}  {spread(total):>11}"
        )
    print("(ms; first line in each round, in the order run:)")
    for v in variants:
        print(f"  {v.label:<{width}}  " + " ".join(f"{t.first_ms:5.0f}" for t in times[v.label]))


# ---------------------------------------------------------------- torchrun


def bench_torchrun(
    torchjob: Path, python: Path, env: dict[str, str], tmp: Path, rounds: int, warmup: int
) -> None:
    project = tmp / "ddp-project"
    project.mkdir()
    (project / "ddp.py").write_text(DDP)
    hand = [
        str(python),
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "ddp.py",
    ]
    argv_seen: list[list[str]] = []
    rank_logs = "**/attempt_0/*/stdout.log"  # torchrun's --log-dir layout

    def by_hand(work: Path, slot: int) -> Timing:
        return time_to_marker(hand, project, env, work)

    def by_hand_tee(work: Path, slot: int) -> Timing:
        # torchjob's own torchrun flags: per-rank logs in files, tailed back to the console
        flags = ["--log-dir", str(work / "ranks"), "--redirects", "3", "--tee", "3"]
        return time_to_marker([*hand[:-1], *flags, "ddp.py"], project, env, work, rank_logs)

    def through_torchjob(work: Path, slot: int) -> Timing:
        runs = work / "runs"
        timing = time_to_marker(
            [
                str(torchjob),
                "run",
                "-s",
                "ddp.py",
                "-p",
                str(project),
                "--nproc-per-node",
                "2",
                "--runs-dir",
                str(runs),
            ],
            project,
            env,
            work,
            rank_logs,
        )
        (run_json,) = runs.glob("*/run.json")
        argv_seen.append(json.loads(run_json.read_text())["argv"])
        return timing

    variants = [
        Variant("torchrun by hand (baseline)", by_hand),
        Variant("torchjob run --nproc-per-node 2", through_torchjob),
        Variant("torchrun by hand + torchjob's --tee", by_hand_tee),
    ]
    print("torchrun: running", file=sys.stderr, flush=True)
    times = interleave(variants, rounds, warmup, tmp / "torchrun")
    base_label, tj_label = variants[0].label, variants[1].label

    def med(label: str, total: bool = False) -> float:
        return statistics.median(t.total_ms if total else t.first_ms for t in times[label])

    print("== 1. first line of a 2-process torchrun gang (gloo, CPU) ==")
    print(f"baseline:  {' '.join(hand)}  (cwd: the project)")
    print(f"torchjob:  {torchjob} run -s ddp.py -p DIR --nproc-per-node 2 --runs-dir DIR")
    print(f"it ran:    {' '.join(argv_seen[-1]) if argv_seen else '?'}")
    print(
        f"rounds:    {rounds}, interleaved in rotating order, after {warmup} warm-up round(s);"
        " first line: the first stdout line with the marker, from any rank; rank log: the "
        f"marker in a rank's --log-dir stdout.log (polled every {FILE_POLL_S * 1000:.0f} ms); "
        "lag: from there to the line read; total: to the process's exit"
    )
    print()
    print_table("variant", "rank log", variants, times)
    diff = med(tj_label) - med(base_label)
    total_diff = med(tj_label, total=True) - med(base_label, total=True)
    paired = [
        t.first_ms - b.first_ms for t, b in zip(times[tj_label], times[base_label], strict=True)
    ]
    print(
        f"torchjob - baseline, first line: {diff:+.0f} ms (difference of medians; round by "
        f"round: median {statistics.median(paired):+.0f}, {spread(paired)}); total wall: "
        f"{total_diff:+.0f} ms"
    )
    print()
    # The issue compares with "torchrun run by hand with the same arguments": torchjob's
    # torchrun flags (--log-dir/--redirects/--tee, which the issue asks for) included.
    same = med(tj_label) - med(variants[2].label)
    verdict = "met" if same <= GOAL_MS else "NOT met"
    print(
        f"goal: first line through torchjob <= {GOAL_MS:.0f} ms after torchrun by hand with "
        f"the same arguments: {verdict} ({same:+.0f} ms; {diff:+.0f} ms against plain "
        "torchrun without torchjob's log flags)"
    )
    ratio = med(tj_label, total=True) / med(base_label, total=True)
    print(
        f"goal (issue 14): whole gang through torchjob <= {GANG_RATIO}x plain torchrun: "
        f"{'met' if ratio <= GANG_RATIO else 'NOT met'} ({ratio:.3f}x, total wall medians)"
    )
    print()


# ---------------------------------------------------------------- Slurm


def bench_slurm(
    torchjob: Path, python: Path, env: dict[str, str], tmp: Path, rounds: int, warmup: int
) -> None:
    print("== 2. submit-to-start on a local one-node Slurm ==")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from tests import slurm as cluster_mod
    except ImportError as e:  # pytest or the tests package missing
        print(f"SKIPPED: cannot import tests/slurm.py ({e})")
        return
    path = cluster_mod._search_path()
    problem = cluster_mod._problems(path)
    if problem:
        print(f"SKIPPED: Slurm cannot start here: {problem}")
        return
    # Not under tmp: munged (user munge) must reach its socket folder, as in the fixture.
    state = Path(tempfile.mkdtemp(prefix="torchjob-slurm-"))
    state.chmod(0o755)
    cluster = cluster_mod._Cluster(state, path)
    try:
        try:
            info = cluster.start()
        except (cluster_mod.SlurmStartError, OSError, subprocess.SubprocessError) as e:
            print(f"SKIPPED: Slurm did not start: {e}")
            return
        _slurm_rounds(info, torchjob, python, env, tmp, rounds, warmup)
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


def _slurm_rounds(
    info: Slurm,
    torchjob: Path,
    python: Path,
    env: dict[str, str],
    tmp: Path,
    rounds: int,
    warmup: int,
) -> None:
    senv = dict(info.env, **{k: v for k, v in env.items() if k.startswith("TORCHJOB_")})
    project = tmp / "hello-project"
    project.mkdir()
    (project / "hello.py").write_text(HELLO)
    submit_ms: dict[str, list[float]] = {"hand": [], "detach": []}

    def stagger(slot: int) -> None:
        # slurmctld starts submitted jobs at its next pass, about once a second, and each
        # round begins right after the previous job ended (itself on such a pass): without
        # this untimed pause every variant would meet the same phase of that tick, each a
        # different one. Slot k of N waits k/N s, the same set for every variant.
        time.sleep(SLURM_TICK_S * slot / rounds)

    def by_hand(work: Path, slot: int) -> Timing:
        out = work / "out.log"
        script = work / "job.sbatch"
        script.write_text(
            "\n".join(
                [
                    "#!/bin/bash",
                    "#SBATCH --job-name=bench-hand",
                    f"#SBATCH --output={out}",
                    f"#SBATCH --chdir={project}",
                    "#SBATCH --nodes=1",
                    "#SBATCH --ntasks-per-node=1",
                    f"exec {python} hello.py",
                    "",
                ]
            )
        )
        stagger(slot)
        start = time.perf_counter()
        done = subprocess.run(
            ["sbatch", "--parsable", str(script)],
            env=senv,
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        submitted = (time.perf_counter() - start) * 1000.0
        if done.returncode != 0:
            raise BenchError(f"sbatch refused the job: {done.stderr.strip()}")
        job_id = done.stdout.strip().split(";")[0]
        first = wait_for_marker(out, start)
        submit_ms["hand"].append(submitted)
        return Timing(first, _wait_done(info, job_id, start), first)

    def following(work: Path, slot: int) -> Timing:
        stagger(slot)
        return time_to_marker(
            [
                str(torchjob),
                "run",
                "-s",
                "hello.py",
                "-p",
                str(project),
                "--backend",
                "slurm",
                "--runs-dir",
                str(work / "runs"),
            ],
            project,
            senv,
            work,
            "runs/*/stdout.log",
        )

    def detached(work: Path, slot: int) -> Timing:
        # torchjob's submit path alone: returns after sbatch; the bench polls the run's log
        runs = work / "runs"
        argv = [
            str(torchjob),
            "run",
            "-s",
            "hello.py",
            "-p",
            str(project),
            "--backend",
            "slurm",
            "--detach",
            "--runs-dir",
            str(runs),
        ]
        stagger(slot)
        start = time.perf_counter()
        done = subprocess.run(
            argv,
            env=senv,
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        submitted = (time.perf_counter() - start) * 1000.0
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
        (run_dir,) = runs.iterdir()
        job_id = str(json.loads((run_dir / "run.json").read_text())["backend"]["job_id"])
        first = wait_for_marker(run_dir / "stdout.log", start)
        submit_ms["detach"].append(submitted)
        return Timing(first, _wait_done(info, job_id, start), first)

    variants = [
        Variant("sbatch --parsable by hand (baseline)", by_hand),
        Variant("torchjob run --backend slurm", following),
        Variant("torchjob run --backend slurm --detach", detached),
    ]
    print("slurm: running", file=sys.stderr, flush=True)
    times = interleave(variants, rounds, warmup, tmp / "slurm")
    print(
        f"cluster:   one node ({info.node}, {info.cpus} CPUs; tests/slurm.py's slurm.conf), "
        f"up in {info.startup_seconds:.1f} s"
    )
    print(
        f"baseline:  sbatch --parsable job.sbatch  (job.sbatch: exec {python} hello.py); "
        f"the bench polls its --output file every {FILE_POLL_S * 1000:.0f} ms"
    )
    print(
        f"torchjob:  {torchjob} run -s hello.py -p DIR --backend slurm --runs-dir DIR "
        "(marker read from its stdout pipe)"
    )
    print(
        "detach:    the same with --detach; the bench polls the run's stdout.log, as for the "
        "baseline"
    )
    print(
        f"rounds:    {rounds}, interleaved in rotating order, after {warmup} warm-up round(s);"
        f" each job ends before the next is submitted; round k of N starts after an untimed "
        f"k/N x {SLURM_TICK_S:.0f} s pause (the same set for every variant)"
    )
    print(
        "columns:   first line: from sbatch's or torchjob's start to the marker; job log: the "
        "marker in Slurm's --output file (the run's stdout.log for torchjob); lag: from there "
        "to the line read; total: torchjob's exit, or `scontrol show job` saying COMPLETED "
        "(polled every 0.1 s)"
    )
    print()
    print_table("variant", "job log", variants, times)
    print(
        f"sbatch --parsable returned after: median {statistics.median(submit_ms['hand']):.0f}"
        f" ms ({spread(submit_ms['hand'])}); torchjob run --detach returned after: median "
        f"{statistics.median(submit_ms['detach']):.0f} ms ({spread(submit_ms['detach'])})"
    )
    print()


def _wait_done(info: Slurm, job_id: str, start: float) -> float:
    """Wait until Slurm says the job ended (so the next round finds the node free); ms."""
    state = info.wait_job(job_id, timeout=JOB_TIMEOUT_S)
    if state.get("JobState") != "COMPLETED":
        raise BenchError(f"Slurm job {job_id} ended {state.get('JobState')}: {state}")
    return (time.perf_counter() - start) * 1000.0


# ---------------------------------------------------------------- main


def machine_line(python: Path) -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    torch = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({model}), {mem_kb / 2**20:.0f} GB RAM, kernel "
        f"{platform.release()}, Python {platform.python_version()}, torch {torch or '?'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Scale-out latency: torchrun and Slurm.")
    parser.add_argument("--rounds", type=int, default=7, help="timed torchrun rounds")
    parser.add_argument("--slurm-rounds", type=int, default=5, help="timed Slurm rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first, each part")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument("--no-slurm", action="store_true", help="skip the Slurm part")
    args = parser.parse_args()
    if args.rounds < 1 or args.slurm_rounds < 1 or args.warmup < 0:
        parser.error("rounds must be at least 1, --warmup at least 0")

    torchjob = find_torchjob(args.torchjob)
    python = interpreter_of(torchjob)
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-scale-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TORCHJOB_HOME"] = str(tmp / "home")  # fresh: no user cache or runs touched
    # Bytecode cached, as an installed torchjob has it (the editable dev install on this
    # machine, with PYTHONDONTWRITEBYTECODE=1, would compile torchjob's modules every start).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    print(f"machine:     {machine_line(python)}")
    print(f"torchjob:    {torchjob}")
    print(f"interpreter: {python} (from its shebang; every variant runs its jobs on it)")
    print(f"home:        TORCHJOB_HOME={env['TORCHJOB_HOME']} (fresh temp folder)")
    print()
    try:
        bench_torchrun(torchjob, python, env, tmp, args.rounds, args.warmup)
        if args.no_slurm:
            print("== 2. submit-to-start on a local one-node Slurm ==")
            print("SKIPPED: --no-slurm")
        else:
            bench_slurm(torchjob, python, env, tmp, args.slurm_rounds, args.warmup)
    except BenchError as e:
        sys.exit(f"bench: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
