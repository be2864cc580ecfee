#!/usr/bin/env python3
"""What torchjob costs while a job runs: its CPU (torchjob's process and its watchdog) while a job
prints a line a second, and its peak RSS while a job writes 1 GiB to stdout; against `tee`, the
shell's way to keep a log while watching it, measured on the same jobs in the same run.

Why: issue 14's goal 5 asks for at most 0.5% of one core while a job prints a line a second for
60 s, and a peak RSS of at most 32 MiB during 1 GiB of output. CPU is read from /proc/PID/stat
(utime + stime of torchjob and of every process it forked that is not the job's: the watchdog),
sampled until the job ends; RSS is VmHWM from /proc/PID/status, sampled the same way.

Usage: python bench/supervise.py [--seconds 60] [--gib 1] [--torchjob PATH] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import find_torchjob  # bench/ is the script's own folder

TICKS = os.sysconf("SC_CLK_TCK")
GOAL_CPU = 0.005  # of one core
GOAL_RSS_MIB = 32.0

SLOW = (
    "import sys, time\nfor i in range({n}):\n    print('line', i, flush=True)\n    time.sleep(1)\n"
)
FLOOD = (
    "import os\nchunk = (b'x' * 1023 + b'\\n') * 1024\n"
    "for _ in range({n}):\n    os.write(1, chunk)\n"
)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ours(root: int, job_name: str) -> tuple[list[int], bool]:
    """root and its descendants that are not the job (python running job_name): torchjob and
    its watchdog, or bash and tee."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo, job = [], [root], False
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        words = cmd.split(b"\0")
        if len(words) > 1 and words[1].endswith(job_name.encode()):
            job = True
            continue  # the job itself: `python JOB` (torchjob's own words are `torchjob run ...`)
        out.append(pid)
        todo += kids.get(pid, [])
    return out, job


def measure(argv: list[str], job_name: str, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run argv to its end; (CPU seconds it and its helpers spent while the job ran, not the
    start-up before it; their peak RSS in MiB)."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    cpu: dict[int, float] = {}
    before: float | None = None  # ours, when the job was first seen
    peak = 0.0
    while proc.poll() is None:
        pids, job = _ours(proc.pid, job_name)
        for pid in pids:
            try:
                cpu[pid] = _cpu_s(pid)
                peak = max(peak, _hwm_mib(pid))
            except (OSError, IndexError, ValueError):
                continue  # gone between the listing and the read
        if job and before is None:
            before = sum(cpu.values())
        time.sleep(0.05)  # a sampling period, not synchronisation
    return sum(cpu.values()) - (before or 0.0), peak


def main() -> None:
    parser = argparse.ArgumentParser(description="torchjob's own CPU and memory while a job runs")
    parser.add_argument("--seconds", type=int, default=60, help="lines of the slow job, 1/s")
    parser.add_argument("--gib", type=int, default=1, help="GiB the flooding job writes")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument("--dir", help="parent of the temp root [default: the system temp dir]")
    args = parser.parse_args()
    torchjob = str(find_torchjob(args.torchjob))
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-supervise-", dir=args.dir))
    try:
        env = {**os.environ, "TORCHJOB_HOME": str(tmp / "home"), "NO_COLOR": "1"}
        (tmp / "slow.py").write_text(SLOW.format(n=args.seconds))
        (tmp / "flood.py").write_text(FLOOD.format(n=args.gib * 1024))
        py = sys.executable
        rows = []
        for job in ("slow.py", "flood.py"):
            ours = measure([torchjob, "run", "-q", "-s", job, "-p", str(tmp)], job, tmp, env)
            shell = ["bash", "-c", f"{py} {job} | tee {tmp / 'tee.log'} > /dev/null"]
            tee = measure(shell, job, tmp, env)
            rows.append((job, ours, tee))
        slow, flood = rows
        print(f"torchjob:  {torchjob}")
        print(f"jobs:      {args.seconds} lines at 1/s; {args.gib} GiB to stdout as fast as it can")
        print()
        print(f"{'':32}{'torchjob':>12}{'bash | tee':>14}")
        print(f"{'CPU while the slow job ran (s)':32}{slow[1][0]:>12.3f}{slow[2][0]:>14.3f}")
        share = slow[1][0] / args.seconds
        tee_share = slow[2][0] / args.seconds
        print(f"{'CPU, slow job (% of one core)':32}{100 * share:>11.2f}%{100 * tee_share:>13.2f}%")
        print(f"{'peak RSS, slow job (MiB)':32}{slow[1][1]:>12.1f}{slow[2][1]:>14.1f}")
        print(f"{'CPU while the flood ran (s)':32}{flood[1][0]:>12.2f}{flood[2][0]:>14.2f}")
        print(f"{'peak RSS, 1 GiB flood (MiB)':32}{flood[1][1]:>12.1f}{flood[2][1]:>14.1f}")
        print()
        print(
            f"goal 5: CPU at most {100 * GOAL_CPU:.1f}% of a core: "
            f"{'met' if share <= GOAL_CPU else 'not met'} ({100 * share:.2f}%); peak RSS at most "
            f"{GOAL_RSS_MIB:.0f} MiB: {'met' if flood[1][1] <= GOAL_RSS_MIB else 'not met'} "
            f"({flood[1][1]:.1f} MiB)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
