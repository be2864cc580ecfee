#!/usr/bin/env python3
"""Start-up overhead of `torchjob run` over bare `python hello.py`, and where that time goes.

Why: torchjob wraps every training run, so its fixed cost is paid on each one; DESIGN.md sets a
goal of +100 ms over the same interpreter running the script directly. The commands are timed
interleaved (a, b, c, a, b, c, ...) so machine noise hits all of them alike, and the import
profile (`-X importtime`) shows which imports the time is spent on.

With --before PATH (the console script of another install, e.g. an earlier commit installed
into its own venv), that torchjob is timed in the same interleaved rounds, so a change can be
judged against what it replaces on the same machine at the same moment.

Usage: python bench/overhead.py [--runs 30] [--warmup 3] [--torchjob PATH] [--before PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from common import find_torchjob, interpreter_of  # bench/ is the script's own folder

GOAL_MS = 100.0
GOAL_RATIO = 6.0
IMPORT_TARGET = "torchrun_cli.cli"
IMPORT_RUNS = 5
TOP_IMPORTS = 8

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One command to time: a label for the table and the argv/env to run it with."""

    label: str
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Imported:
    """One module in an `-X importtime` report: medians over several runs."""

    name: str
    parent: str  # the module whose import caused this one ("" at top level)
    self_ms: float
    cumulative_ms: float


def p90(values: list[float]) -> float:
    """90th percentile, linear interpolation between the closest ranks."""
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def time_once(case: Case, cwd: Path) -> float:
    """Wall time of one run in ms; aborts the benchmark if the command fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        case.argv,
        cwd=cwd,
        env=case.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = (time.perf_counter() - start) * 1000.0
    if proc.returncode != 0:
        sys.exit(
            f"bench: {' '.join(case.argv)} exited {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return elapsed


def import_profile(argv: list[str], env: dict[str, str], cwd: Path) -> list[Imported]:
    """Every module argv imports (it must run under -X importtime), medians over IMPORT_RUNS."""
    selfs: dict[str, list[float]] = defaultdict(list)
    cumuls: dict[str, list[float]] = defaultdict(list)
    parents: dict[str, str] = {}
    for _ in range(IMPORT_RUNS):
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
        # "import time:      2101 |      51149 |   typer": two spaces of indent per level; a
        # module's imports are printed before it, one level deeper.
        waiting: dict[int, list[str]] = defaultdict(list)
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "[us]" in line:
                continue
            self_us, cumul_us, field = line.removeprefix("import time:").split("|", 2)
            name = field.strip()
            depth = (len(field) - len(field.lstrip(" ")) - 1) // 2
            for child in waiting.pop(depth + 1, []):
                parents[child] = name
            waiting[depth].append(name)
            selfs[name].append(int(self_us) / 1000.0)
            cumuls[name].append(int(cumul_us) / 1000.0)
    return [
        Imported(n, parents.get(n, ""), statistics.median(selfs[n]), statistics.median(cumuls[n]))
        for n in cumuls
    ]


def top_level_ms(profile: list[Imported]) -> float:
    """Time spent importing, counting each top-level import once with what it pulled in."""
    return sum(m.cumulative_ms for m in profile if not m.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description="Start-up overhead of torchjob run.")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per command first")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument("--before", help="another torchjob console script to compare with")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2")

    torchjob = find_torchjob(args.torchjob)
    python = interpreter_of(torchjob)
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-overhead-"))
    try:
        project = tmp / "proj"
        project.mkdir()
        (project / "hello.py").write_text('print("hello")\n')
        env = dict(os.environ, TORCHJOB_HOME=str(tmp / "home"))
        env.pop("PYTHONPYCACHEPREFIX", None)
        # what a non-editable install has: bytecode of torchrun_cli cached (here in a temp prefix,
        # so nothing is written next to the sources)
        cached = dict(env, PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        run = [str(torchjob), "run", "--quiet", "--runs-dir", str(tmp / "runs"), "-s", "hello.py"]
        cases = [
            Case("python hello.py (baseline)", [str(python), "hello.py"], env),
            Case("torchjob run --quiet -s hello.py", run, env),
            Case("torchjob --help", [str(torchjob), "--help"], env),
            Case("torchjob run --quiet, bytecode cached", run, cached),
            # the floor under goal 1: what typer alone, and all of torchjob's imports, cost
            Case("python -c 'import typer'", [str(python), "-c", "import typer"], cached),
            Case(
                "python -c 'import torchrun_cli.cli'",
                [str(python), "-c", "import torchrun_cli.cli"],
                cached,
            ),
        ]
        if args.before:
            before = [str(Path(args.before).resolve()), *run[1:]]
            cases.append(Case("before: torchjob run --quiet -s hello.py", before, env))
        for _ in range(args.warmup):
            for case in cases:
                time_once(case, project)
        times: dict[str, list[float]] = {c.label: [] for c in cases}
        for _ in range(args.runs):
            for case in cases:
                times[case.label].append(time_once(case, project))
        importtime = [str(python), "-X", "importtime"]
        cli_imports = import_profile([*importtime, "-c", f"import {IMPORT_TARGET}"], env, project)
        run_imports = import_profile([*importtime, *run], env, project)
        bare_imports = import_profile([*importtime, "hello.py"], env, project)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report(args.runs, torchjob, python, cases, times)
    print_profile(
        f"`python -X importtime -c 'import {IMPORT_TARGET}'`: top {TOP_IMPORTS} "
        "by cumulative time, any depth",
        cli_imports,
        top_only=False,
    )
    print_profile(
        f"the whole `torchjob run --quiet -s hello.py` process: top {TOP_IMPORTS} "
        "top-level imports",
        run_imports,
        top_only=True,
    )
    if args.before:
        now, then = (statistics.median(times[c.label]) for c in (cases[1], cases[-1]))
        print(
            f"\nvs before ({args.before}): {then:.1f} ms -> {now:.1f} ms, "
            f"{now / then:.2f}x the time it took"
        )
    overhead = statistics.median(times[cases[1].label]) - statistics.median(times[cases[0].label])
    extra = top_level_ms(run_imports) - top_level_ms(bare_imports)
    print()
    print(
        f"imports: {top_level_ms(run_imports):.1f} ms in the `torchjob run` process vs "
        f"{top_level_ms(bare_imports):.1f} ms in bare `python hello.py`, so importing explains "
        f"{extra:.1f} ms of the {overhead:.1f} ms overhead; the rest is torchjob's own work "
        "(run folder and records, the child's trampoline interpreter, threads) and teardown."
    )


def report(
    runs: int, torchjob: Path, python: Path, cases: list[Case], times: dict[str, list[float]]
) -> None:
    """Print the timing table and the verdict on the goal."""
    bytecode = (REPO / "src" / "torchrun_cli" / "__pycache__").is_dir()
    print(f"torchjob:    {torchjob}")
    print(f"interpreter: {python} (from its shebang; the baseline runs on it too)")
    print(f"runs:        {runs} per command, interleaved, after warm-up")
    dont_write = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    print(
        f"bytecode:    PYTHONDONTWRITEBYTECODE={dont_write!r}, "
        f"src/torchrun_cli/__pycache__ {'exists' if bytecode else 'absent'}; the last row "
        "caches bytecode in a temp PYTHONPYCACHEPREFIX"
    )
    print()
    base = statistics.median(times[cases[0].label])
    width = max(len(c.label) for c in cases)
    print(
        f"{'command':<{width}}  {'median ms':>9}  {'p90 ms':>7}  {'overhead ms':>11}  {'ratio':>6}"
    )
    for case in cases:
        med = statistics.median(times[case.label])
        print(
            f"{case.label:<{width}}  {med:9.1f}  {p90(times[case.label]):7.1f}  "
            f"{med - base:+11.1f}  {med / base:5.2f}x"
        )
    print()
    overhead = statistics.median(times[cases[1].label]) - base
    verdict = "met" if overhead <= GOAL_MS else "NOT met"
    print(
        f"goal: `torchjob run` overhead <= {GOAL_MS:.0f} ms over bare python: {verdict} "
        f"({overhead:+.1f} ms)"
    )
    ratio = statistics.median(times[cases[3].label]) / base
    typer_ratio = statistics.median(times[cases[4].label]) / base
    print(
        f"goal (issue 14): `torchjob run`, bytecode cached, <= {GOAL_RATIO:.0f}x bare python: "
        f"{'met' if ratio <= GOAL_RATIO else 'NOT met'} ({ratio:.2f}x; `import typer` alone "
        f"is {typer_ratio:.2f}x)"
    )


def print_profile(title: str, profile: list[Imported], *, top_only: bool) -> None:
    """The TOP_IMPORTS modules with the largest cumulative import time."""
    rows = [m for m in profile if not (top_only and m.parent)]
    rows = sorted(rows, key=lambda m: m.cumulative_ms, reverse=True)[:TOP_IMPORTS]
    name_w = max(len("module"), *(len(m.name) for m in rows))
    parent_w = max(len("imported by"), *(len(m.parent) for m in rows))
    print()
    print(f"where the time goes: imports of {title} (median of {IMPORT_RUNS} runs)")
    print(
        f"{'module':<{name_w}}  {'imported by':<{parent_w}}  {'self ms':>7}  {'cumulative ms':>13}"
    )
    for m in rows:
        print(
            f"{m.name:<{name_w}}  {m.parent or '-':<{parent_w}}  {m.self_ms:7.1f}  "
            f"{m.cumulative_ms:13.1f}"
        )


if __name__ == "__main__":
    main()
