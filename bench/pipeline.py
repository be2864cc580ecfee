#!/usr/bin/env python3
"""Scheduling overhead of pipelines: a chain of trivial steps and a wide fan-out, against the same
steps run as separate `torchjob run` calls in a shell loop.

Why: issue 12 runs each step of a pipeline as an ordinary run in a process forked by the
scheduler. Its goals: a 50-step chain of trivial steps no slower than 50 `torchjob run` calls in
a shell loop, and a 50-wide fan-out limited only by max_parallel, i.e. a wall time of about
ceil(50 / max_parallel) x one step's time.

Variants, each step's script is `pass` (or `time.sleep(0.2)`) in a temp project folder, each run
with a fresh --runs-dir of its own, timed interleaved (a, a1, b, c1, c2, c4, d1, ...) round after
round so machine noise hits them alike:
  (a)  torchjob run --quiet chain.yaml          50 steps, each needing the one before
  (a1) torchjob run --quiet one.yaml            a 1-step pipeline: the fixed cost of a pipeline
  (b)  bash: for ...; torchjob run --quiet -s noop.py; done   the baseline, one bash started once
  (cN) torchjob run --quiet --max-parallel N fan.yaml         50 independent steps
  (dN) the same, each step sleeping 0.2 s: parallelism independent of the CPUs
The ideal of (cN) is ceil(50/N) x (a)'s time per step; of (dN), ceil(50/N) x 0.2 s. With 2 cores
and steps that are mostly interpreter start-up, (cN) is also bound by CPU: its CPU seconds over
min(N, cores) is printed beside it. Each pipeline's pipeline.json (and each step's run.json) is
read after the run to check it succeeded, to count the steps that ran at once, and to split a
chain step's time into the run itself and the scheduler's gap between one step and the next.

Usage: python bench/pipeline.py [--repeat 5] [--warmup 1] [--steps 50] [--parallel 1,2,4]
                                [--sleep 0.2] [--no-sleep] [--dir DIR] [--keep] [--torchjob PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common import find_torchjob, interpreter_of, run_folders  # bench/ is the script's own folder

REPO = Path(__file__).resolve().parents[1]
CHAIN_GOAL = 1.0  # chain / loop
SAVE_RUNS = 30  # timed writes of pipeline.json in the "where the time goes" part

# bash started once, the loop inside it: $1 steps, $2 torchjob, $3 the runs folder
LOOP = 'for ((i = 0; i < $1; i++)); do "$2" run --quiet -s noop.py --runs-dir "$3" || exit 1; done'

# Times one durable pipeline.json write of a pipeline's record (json of the whole record, then
# write_atomic: temp file, fsync, rename); run on torchjob's interpreter.
SAVE_PROBE = """\
import statistics, sys, time
from pathlib import Path
from torchrun_cli import pipeline_record as records
folder, runs = Path(sys.argv[1]), int(sys.argv[2])
rec = records.read(folder)
out = folder / "probe"
out.mkdir()
times = []
for _ in range(runs):
    start = time.perf_counter()
    records.write(out, rec)
    times.append((time.perf_counter() - start) * 1000.0)
print(statistics.median(times), (out / records.RECORD).stat().st_size)
"""


@dataclass(frozen=True)
class Variant:
    """One command to time: `argv(runs_dir)` builds it for a fresh runs folder."""

    key: str
    label: str
    argv: Callable[[Path], list[str]]
    steps: int
    pipeline: bool = True
    parallel: int = 1  # max_parallel (1 for the chain and the loop)
    sleep_s: float = 0.0


@dataclass
class Sample:
    """One timed run and what its records say."""

    wall_s: float
    cpu_s: float  # user + system, of the command and all it waited for
    peak: int = 0  # most steps running at once, from pipeline.json's started/ended times
    step_ms: list[float] = field(default_factory=list)  # pipeline.json: started -> ended
    run_ms: list[float] = field(default_factory=list)  # each run.json's duration_s
    gap_ms: list[float] = field(default_factory=list)  # chain: a step's end -> the next start
    folder: Path | None = None  # the pipeline's folder


def when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def peak_running(spans: list[tuple[float, float]]) -> int:
    """The most spans open at once (an end at the same ms as a start comes first)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def run_seconds(folder: Path) -> float:
    data = json.loads((folder / "run.json").read_text())
    if data.get("status") != "succeeded":
        sys.exit(f"bench: the run in {folder} ended {data.get('status')}: {data.get('error')}")
    return float(data["duration_s"])


def check_pipeline(variant: Variant, runs: Path, sample: Sample) -> None:
    """The pipeline's record: every step succeeded; the steps' times and the peak."""
    (folder,) = run_folders(runs)
    rec = json.loads((folder / "pipeline.json").read_text())
    steps = rec["steps"]
    bad = [n for n, s in steps.items() if s["status"] != "succeeded"]
    if rec["status"] != "succeeded" or len(steps) != variant.steps or bad:
        sys.exit(f"bench: {variant.label}: pipeline {rec['status']}, steps not succeeded: {bad}")
    spans = [(when(s["started_at"]), when(s["ended_at"])) for s in steps.values()]
    sample.folder = folder
    sample.peak = peak_running(spans)
    sample.step_ms = [(e - s) * 1000.0 for s, e in spans]
    sample.run_ms = [run_seconds(Path(s["run_dir"])) * 1000.0 for s in steps.values()]
    if variant.parallel == 1:
        ordered = sorted(spans)
        sample.gap_ms = [(b[0] - a[1]) * 1000.0 for a, b in itertools.pairwise(ordered)]


def check_loop(variant: Variant, runs: Path, sample: Sample) -> None:
    folders = run_folders(runs)
    if len(folders) != variant.steps:
        sys.exit(f"bench: {variant.label}: {len(folders)} run folders, not {variant.steps}")
    sample.run_ms = [run_seconds(p) * 1000.0 for p in folders]


def time_once(variant: Variant, project: Path, runs: Path, env: dict[str, str]) -> Sample:
    """Wall and CPU time of one run in a fresh runs folder; aborts the bench if it fails."""
    runs.mkdir(parents=True)
    argv = variant.argv(runs)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(
            f"bench: {' '.join(argv)} exited {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    sample = Sample(wall, cpu)
    (check_pipeline if variant.pipeline else check_loop)(variant, runs, sample)
    return sample


def write_project(project: Path, steps: int, sleep_s: float) -> None:
    """The scripts and the pipeline specs, in one project folder."""
    project.mkdir()
    (project / "noop.py").write_text("pass\n")
    (project / "sleep.py").write_text(f"import time\n\ntime.sleep({sleep_s!r})\n")

    def spec(name: str, script: str, count: int, chain: bool) -> None:
        lines = [f"name: {name}", "steps:"]
        for i in range(count):
            needs = f", needs: [s{i - 1:03d}]" if chain and i else ""
            lines.append(f"  s{i:03d}: {{script: {script}{needs}}}")
        lines.append("max_parallel: 4")  # --max-parallel overrides it in the fan-outs
        (project / f"{name}.yaml").write_text("\n".join(lines) + "\n")

    spec("chain", "noop.py", steps, chain=True)
    spec("one", "noop.py", 1, chain=False)
    spec("fan", "noop.py", steps, chain=False)
    spec("fan_sleep", "sleep.py", steps, chain=False)


def variants(torchjob: Path, steps: int, parallel: list[int], sleep_s: float) -> list[Variant]:
    tj = str(torchjob)

    def pipe(spec: str, extra: list[str]) -> Callable[[Path], list[str]]:
        return lambda runs: [tj, "run", "--quiet", "--runs-dir", str(runs), *extra, spec]

    out = [
        Variant("a", f"(a) chain of {steps}", pipe("chain.yaml", []), steps),
        Variant("a1", "(a1) 1-step pipeline", pipe("one.yaml", []), 1),
        Variant(
            "b",
            f"(b) loop of {steps} runs (baseline)",
            lambda runs: ["bash", "-c", LOOP, "bash", str(steps), tj, str(runs)],
            steps,
            pipeline=False,
        ),
    ]
    for n in parallel:
        flag = ["--max-parallel", str(n)]
        out.append(
            Variant(f"c{n}", f"(c{n}) fan-out, noop", pipe("fan.yaml", flag), steps, True, n)
        )
    if sleep_s > 0:
        for n in parallel:
            out.append(
                Variant(
                    f"d{n}",
                    f"(d{n}) fan-out, sleep {sleep_s:g} s",
                    pipe("fan_sleep.yaml", ["--max-parallel", str(n)]),
                    steps,
                    True,
                    n,
                    sleep_s,
                )
            )
    return out


def machine_line(python: Path) -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    version = tool_output([str(python), "-c", "import platform; print(platform.python_version())"])
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kib / (1 << 20):.0f} GiB RAM, kernel "
        f"{os.uname().release}; Python {version} ({python})"
    )


def tool_output(argv: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout.strip()


def code_under_test(python: Path, env: dict[str, str]) -> str:
    """Which torchrun_cli the runs import, the repository's HEAD and whether src/ is clean."""
    code = "import torchrun_cli; print(torchrun_cli.__file__)"
    module = Path(tool_output([str(python), "-c", code], env)).parent
    head = tool_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = tool_output(
        ["git", "--no-optional-locks", "-C", str(REPO), "status", "--porcelain", "--", "src"]
    )
    where = "the repo's src/" if module == REPO / "src" / "torchrun_cli" else "NOT the repo's src/"
    diff = tool_output(["git", "--no-optional-locks", "-C", str(REPO), "diff", "HEAD", "--", "src"])
    changes = f"with uncommitted changes (diff {hashlib.sha256(diff.encode()).hexdigest()[:8]})"
    return f"torchrun_cli from {module} ({where}); repo HEAD {head}, src/ " + (
        changes if dirty else "clean"
    )


def save_cost(python: Path, folder: Path, env: dict[str, str]) -> tuple[float, int] | None:
    """Median ms of one pipeline.json write of this pipeline's record, and its size in bytes."""
    proc = subprocess.run(
        [str(python), "-c", SAVE_PROBE, str(folder), str(SAVE_RUNS)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:  # the record's module changed: the rest of the bench still holds
        print(f"bench: the pipeline.json write probe failed:\n{proc.stderr}", file=sys.stderr)
        return None
    ms, size = proc.stdout.split()
    return float(ms), int(size)


def med(values: list[float]) -> float:
    return statistics.median(values)


def flat(samples: list[Sample], pick: Callable[[Sample], list[float]]) -> list[float]:
    return [v for s in samples for v in pick(s)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Scheduling overhead of torchjob pipelines.")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds of all variants")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (no sleeps)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the chain and fan-outs")
    parser.add_argument("--parallel", default="1,2,4", help="max_parallel of the fan-outs")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each (dN) step sleeps")
    parser.add_argument("--no-sleep", action="store_true", help="leave out the (dN) fan-outs")
    parser.add_argument("--dir", help="parent of the temp root [default: the system temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the files (for a look)")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    args = parser.parse_args()
    try:
        parallel = [int(n) for n in args.parallel.split(",")]
    except ValueError:
        parser.error("--parallel is a comma-separated list of whole numbers, e.g. 1,2,4")
    if args.repeat < 1 or args.warmup < 0 or args.steps < 2 or min(parallel) < 1:
        parser.error("--repeat and --parallel must be at least 1, --steps 2, --warmup 0")

    torchjob = find_torchjob(args.torchjob)
    python = interpreter_of(torchjob)
    root = Path(tempfile.mkdtemp(prefix="torchjob-bench-pipeline-", dir=args.dir))
    env = dict(os.environ, TORCHJOB_HOME=str(root / "home"))
    project = root / "proj"
    write_project(project, args.steps, args.sleep)
    cases = variants(torchjob, args.steps, parallel, 0.0 if args.no_sleep else args.sleep)
    code_start = code_under_test(python, env)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    results: dict[str, list[Sample]] = {v.key: [] for v in cases}
    try:
        for i in range(args.warmup):
            for v in cases:
                if not v.sleep_s:
                    time_once(v, project, root / f"warmup{i}" / v.key, env)
        for i in range(args.repeat):
            for v in cases:
                sample = time_once(v, project, root / f"round{i}" / v.key, env)
                results[v.key].append(sample)
                print(
                    f"  round {i + 1}/{args.repeat} {v.key}: {sample.wall_s:.3f} s",
                    file=sys.stderr,
                )
        chain_folder = results["a"][-1].folder
        saved = save_cost(python, chain_folder, env) if chain_folder else None
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    took = time.monotonic() - started
    load_end = os.getloadavg()[0]

    print(f"machine:     {machine_line(python)}")
    code_end = code_under_test(python, env)
    print(f"torchjob:    {torchjob}; {code_start}")
    if code_end != code_start:  # an editable install runs whatever src/ holds at the moment
        print(f"WARNING:     the code changed during the bench; at the end: {code_end}")
    print(
        f"runs:        {args.repeat} timed rounds, interleaved, after {args.warmup} warm-up "
        f"round(s) (without the sleeping fan-outs); each run in a fresh --runs-dir; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"
    )
    print(
        f"took:        {took / 60:.1f} min; 1-min load average {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end (2 cores: anything else running skews the figures)"
    )
    print()
    report(args.steps, cases, results, saved)


def report(
    steps: int,
    cases: list[Variant],
    results: dict[str, list[Sample]],
    saved: tuple[float, int] | None,
) -> None:
    """The chain against the loop, the fan-outs against their ideals, where the time goes."""
    walls = {v.key: [s.wall_s for s in results[v.key]] for v in cases}
    cpus = {v.key: med([s.cpu_s for s in results[v.key]]) for v in cases}
    chain, one, loop = (med(walls[k]) for k in ("a", "a1", "b"))
    per_step = chain / steps
    # a pipeline's fixed cost: the 1-step pipeline less its step
    fixed = one - med(flat(results["a1"], lambda s: s.step_ms)) / 1000.0
    cores = os.cpu_count() or 1
    width = max(len(v.label) for v in cases)
    print(
        f"{'variant':<{width}}  {'median s':>8}  {'min..max s':>13}  {'wall/step ms':>12}  "
        f"{'step ms':>7}  {'CPU s':>5}  {'vs loop':>7}"
    )
    for v in cases[:3]:
        wall = med(walls[v.key])
        spread = f"{min(walls[v.key]):.3f}..{max(walls[v.key]):.3f}"
        inside = flat(results[v.key], lambda s: s.step_ms)
        step = f"{med(inside):7.1f}" if inside else "-".rjust(7)
        print(
            f"{v.label:<{width}}  {wall:8.3f}  {spread:>13}  {wall / v.steps * 1000:12.1f}  "
            f"{step}  {cpus[v.key]:5.2f}  {wall / loop:6.2f}x"
        )
    print()
    print(
        f"{'variant':<{width}}  {'N':>2}  {'median s':>8}  {'min..max s':>13}  "
        f"{'wall/step ms':>12}  {'step ms':>7}  {'ideal s':>7}  {'vs ideal':>8}  "
        f"{'per wave ms':>11}  {'peak':>4}  "
        f"{'CPU s':>5}  {'CPU/min(N,cores) s':>18}"
    )
    ideals = {}
    for v in cases[3:]:
        wall = med(walls[v.key])
        ideals[v.key] = math.ceil(v.steps / v.parallel) * (v.sleep_s or per_step)
        spread = f"{min(walls[v.key]):.3f}..{max(walls[v.key]):.3f}"
        peak = max(s.peak for s in results[v.key])
        bound = cpus[v.key] / min(v.parallel, cores)
        wave = (wall - fixed) / math.ceil(v.steps / v.parallel) * 1000.0
        print(
            f"{v.label:<{width}}  {v.parallel:2d}  {wall:8.3f}  {spread:>13}  "
            f"{wall / v.steps * 1000:12.1f}  {med(flat(results[v.key], lambda s: s.step_ms)):7.1f}"
            f"  {ideals[v.key]:7.3f}  {wall / ideals[v.key]:7.2f}x  {wave:11.1f}  {peak:4d}  "
            f"{cpus[v.key]:5.2f}  {bound:18.3f}"
        )
    print(
        "(wall/step: the median wall time over the steps; step ms: median of each step's start to\n"
        " end in pipeline.json (the run and its process); N: --max-parallel; ideal: ceil(steps/N)\n"
        f" x the chain's {per_step * 1000:.1f} ms of wall time per step for the noop fan-outs, x "
        "the sleep for the sleeping ones;\n"
        f" per wave: (wall - the fixed {fixed * 1000:.0f} ms of a pipeline, (a1) less its step) /"
        " ceil(steps/N): flat\n across N when only max_parallel limits the fan-out;\n"
        " peak: the most steps running at once in any round, from pipeline.json's times; CPU s:\n"
        " user + system of torchjob and all it waited for; CPU/min(N,cores): the wall time the\n"
        " CPU work alone needs at best)"
    )
    print()
    where(steps, results, chain, one, loop, saved)
    print()
    ratio = chain / loop
    verdict = "met" if ratio <= CHAIN_GOAL else "NOT met"
    print(
        f"goal: a chain of {steps} no slower than a loop of {steps} `torchjob run`: {verdict} "
        f"({ratio:.2f}x, {chain:.3f} s against {loop:.3f} s)"
    )
    for v in cases[3:]:
        wall = med(walls[v.key])
        print(
            f"goal: fan-out ({v.key}) limited only by max_parallel {v.parallel}: "
            f"{wall / ideals[v.key]:.2f}x its ideal ({wall:.3f} s against {ideals[v.key]:.3f} s)"
        )


def where(
    steps: int,
    results: dict[str, list[Sample]],
    chain: float,
    one: float,
    loop: float,
    saved: tuple[float, int] | None,
) -> None:
    """A chain step's time split by the records, the fixed cost, one pipeline.json write."""
    runs = results["a"]
    step_ms, run_ms, gap_ms = (
        med(flat(runs, pick))
        for pick in (lambda s: s.step_ms, lambda s: s.run_ms, lambda s: s.gap_ms)
    )
    inside = med([sum(s.step_ms) + sum(s.gap_ms) for s in runs]) / 1000.0
    loop_run_ms = med(flat(results["b"], lambda s: s.run_ms))
    print(f"where the time goes (medians over all steps of all rounds; {steps} steps):")
    print(
        f"  chain step:   {step_ms:6.1f} ms from its start to its end in pipeline.json, of which "
        f"the run itself (run.json duration_s) {run_ms:.1f} ms"
    )
    print(
        f"  chain gap:    {gap_ms:6.1f} ms from a step's end to the next one's start (the "
        "scheduler: reap, read run.json, write pipeline.json, fork)"
    )
    print(
        f"  chain rest:   {(chain - inside) * 1000:6.1f} ms of the chain's wall time before the "
        "first step and after the last (start-up, the spec of every step, teardown)"
    )
    print(
        f"  1-step:       {one * 1000:6.1f} ms for a 1-step pipeline; "
        f"{(chain - one) / (steps - 1) * 1000:.1f} ms per further step of the chain "
        "((a) - (a1)) / (steps - 1)"
    )
    print(
        f"  loop call:    {loop / steps * 1000:6.1f} ms per `torchjob run`, of which the run "
        f"itself (run.json duration_s) {loop_run_ms:.1f} ms"
    )
    if saved is not None:
        ms, size = saved
        print(
            f"  pipeline.json: {ms:.2f} ms for one durable write of the {steps}-step record "
            f"({size / 1024:.0f} KiB; json, fsync, rename; median of {SAVE_RUNS}); the "
            f"scheduler\n                 writes it once per turn of its loop (at most ~3 per "
            f"step, without fsync but the last): at most ~{3 * steps * ms:.0f} ms per pipeline"
        )


if __name__ == "__main__":
    main()
