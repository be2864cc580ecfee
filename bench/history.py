#!/usr/bin/env python3
"""How the history's commands scale with the number of runs: `runs --limit 20`, `show last`,
`runs --name X --status failed` and `compare` over 10 and over 100,000 synthetic runs, in the
same run of this script; and how long `runs --reindex` takes for each.

Why: hourly cron for a year is 8,760 runs, and sweeps make thousands; issue 13's goal is the
100,000-run figures at most 1.5x the 10-run figures, and a reindex of 100,000 runs under a
minute. The runs are real run folders with a run.json each (made by copying one real run's
record with other ids, names, statuses and outputs), so the index reads what a real history
holds. The commands of both sizes are timed interleaved, so machine noise hits both alike.

Usage: python bench/history.py [--runs 100000] [--repeat 7] [--torchjob PATH] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import find_torchjob, timed  # bench/ is the script's own folder

NAMES = 50  # distinct run names in the synthetic history
GOAL_RATIO = 1.5
GOAL_REINDEX_S = 60.0


def synthetic(runs: Path, count: int, template: dict[str, Any]) -> None:
    """`count` run folders, newest last, one name in NAMES, one in ten failed."""
    runs.mkdir(parents=True)
    start = 1_700_000_000
    for i in range(count):
        at = time.gmtime(start + i * 60)
        stamp = time.strftime("%Y%m%d-%H%M%S", at)
        name = f"job{i % NAMES:02d}"
        run_id = f"{stamp}-{name}-{i % 65536:04x}"
        failed = i % 10 == 3
        rec = {
            **template,
            "id": run_id,
            "name": name,
            "status": "failed" if failed else "succeeded",
            "exit_code": 1 if failed else 0,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", at),
            "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S.500+00:00", at),
            "duration_s": 0.5,
            "params": {"lr": str(0.1 / (1 + i % 7))},
            "outputs": {"accuracy": round(0.5 + (i % 97) / 200, 4)},
        }
        folder = runs / run_id
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps(rec))


def main() -> None:
    parser = argparse.ArgumentParser(description="The history's commands at 10 and N runs.")
    parser.add_argument("--runs", type=int, default=100_000, help="runs of the large history")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument("--dir", help="parent of the temp root [default: the system temp dir]")
    args = parser.parse_args()
    torchjob = str(find_torchjob(args.torchjob))
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-history-", dir=args.dir))
    try:
        env = {**os.environ, "TORCHJOB_HOME": str(tmp / "home"), "NO_COLOR": "1"}
        seed = tmp / "seed"
        (seed / "proj").mkdir(parents=True)
        (seed / "proj" / "job.py").write_text("")
        seeded = [
            "run",
            "-q",
            "-s",
            "job.py",
            "-p",
            str(seed / "proj"),
            "--runs-dir",
            str(seed / "runs"),
        ]
        subprocess.run(
            [torchjob, *seeded],
            env=env,
            check=True,
        )
        template = json.loads(next((seed / "runs").glob("*/run.json")).read_text())
        sizes = {"10": 10, str(args.runs): args.runs}
        made: dict[str, float] = {}
        for label, count in sizes.items():
            began = time.perf_counter()
            synthetic(tmp / label, count, template)
            made[label] = time.perf_counter() - began
        reindex = {
            label: timed(
                [torchjob, "runs", "--reindex", "--limit", "1", "--runs-dir", str(tmp / label)], env
            )
            for label in sizes
        }
        newest = {
            label: json.loads(
                subprocess.run(
                    [torchjob, "runs", "--limit", "2", "--json", "--runs-dir", str(tmp / label)],
                    env=env,
                    capture_output=True,
                    check=True,
                ).stdout
            )
            for label in sizes
        }
        commands = {
            "runs --limit 20": ["runs", "--limit", "20"],
            "show last": ["show", "last"],
            "runs --name job07 --status failed": ["runs", "--name", "job07", "--status", "failed"],
            "compare (the 2 newest)": ["compare"],
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for what, words in commands.items():
                for label in sizes:
                    extra = [r["id"] for r in newest[label]] if words == ["compare"] else []
                    argv = [torchjob, *words, *extra, "--runs-dir", str(tmp / label)]
                    times.setdefault((what, label), []).append(timed(argv, env))
        big = str(args.runs)
        print(f"torchjob:  {torchjob}")
        print(
            f"histories: 10 and {args.runs} runs ({NAMES} names, 1 in 10 failed), made in "
            f"{made['10']:.2f} s and {made[big]:.1f} s; {args.repeat} rounds, interleaved"
        )
        print(
            f"reindex:   10 runs {reindex['10']:.2f} s; {args.runs} runs {reindex[big]:.1f} s "
            f"(goal: under {GOAL_REINDEX_S:.0f} s)"
        )
        print()
        print(f"{'command':<36} {'10 runs ms':>11} {big + ' runs ms':>14} {'ratio':>7}")
        worst = 0.0
        for what in commands:
            small = statistics.median(times[(what, "10")]) * 1000
            large = statistics.median(times[(what, big)]) * 1000
            worst = max(worst, large / small)
            print(f"{what:<36} {small:>11.1f} {large:>14.1f} {large / small:>6.2f}x")
        print()
        print(
            f"goal: the {args.runs}-run figures at most {GOAL_RATIO}x the 10-run ones: "
            f"{'met' if worst <= GOAL_RATIO else 'not met'} (worst {worst:.2f}x); reindex "
            f"{'met' if reindex[big] < GOAL_REINDEX_S else 'not met'}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
