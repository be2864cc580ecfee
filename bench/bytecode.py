#!/usr/bin/env python3
"""Issue 14, goal 3: how to byte-compile a new torch environment, three designs in one run.

Why: a uv build of torch==2.13.0 with a warm uv cache spends most of its time compiling
bytecode (4,956 .py files on 2 cores); without it, the environment's first `import torch` must
compile what it imports. The goal asks for both: the build at least 10x faster than
virtualenv+pip, and the first run's `import torch` at most 1.3x a compiled environment's. In
interleaved rounds, each in a fresh folder:

  pip      virtualenv + `pip install torch==2.13.0` (pip compiles as it installs; pip's cache warm)
  uv       `uv venv` + `uv pip install torch==2.13.0` with a warm uv cache, no compile
then three designs on that environment (its __pycache__ folders removed between them):
  closure  torchjob's: src/torchrun_cli/envs/bytecode.py compiles what importing the top
           packages loads (followed through their import statements), then `import torch`
  all      `python -m compileall -q -j 0` of site-packages (what uv --compile-bytecode and pip
           do), then `import torch`
  none     `import torch` compiling (and writing) what it loads, then `import torch` again
Every import runs with PYTHONDONTWRITEBYTECODE=1 but the first of `none`. Nothing outside the
temp root is written but the warm caches the first (untimed) round fills (pip's and uv's own).

Usage: python bench/bytecode.py [--rounds 3] [--torchjob PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, find_torchjob, interpreter_of, timed  # bench/ is the script's own folder

TORCH = "torch==2.13.0"
WHEELS = "/opt/wheels"
IMPORT = ["-c", "import torch; assert torch.__version__.startswith('2.13.0')"]


def one_round(root: Path, base: Path, uv: str, env: dict[str, str]) -> dict[str, float]:
    root.mkdir()
    out: dict[str, float] = {}
    venv_pip, venv_uv = root / "pip", root / "uv"
    out["pip build"] = timed([str(base), "-m", "virtualenv", "-q", str(venv_pip)], env) + timed(
        [str(venv_pip / "bin" / "python"), "-m", "pip", "install", "-q", TORCH], env
    )
    out["uv build"] = timed([uv, "venv", "-q", "--python", str(base), str(venv_uv)], env) + timed(
        [uv, "pip", "install", "-q", "--python", str(venv_uv / "bin" / "python"), TORCH], env
    )
    python = str(venv_uv / "bin" / "python")
    (site,) = (venv_uv / "lib").glob("python*/site-packages")

    def clean() -> None:
        for pycache in list(site.rglob("__pycache__")):
            shutil.rmtree(pycache)

    bytecode = REPO / "src" / "torchrun_cli" / "envs" / "bytecode.py"
    out["closure: compile"] = timed([python, "-I", str(bytecode)], env)
    out["closure: import"] = timed([python, *IMPORT], env)
    clean()
    # compileall exits 1 when a file does not compile (torch ships a few that do not)
    out["all: compile"] = timed(
        [python, "-m", "compileall", "-q", "-j", "0", str(site)], env, (0, 1)
    )
    out["all: import"] = timed([python, *IMPORT], env)
    clean()
    writes = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["none: first import"] = timed([python, *IMPORT], writes)
    out["none: next import"] = timed([python, *IMPORT], env)
    shutil.rmtree(root)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds [default: 3]")
    parser.add_argument("--torchjob", help="torchjob console script (its interpreter is used)")
    args = parser.parse_args()
    base = interpreter_of(find_torchjob(args.torchjob))
    uv = shutil.which("uv", path=str(base.parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("bench: no uv next to the interpreter or on PATH")
    env = dict(os.environ, PIP_FIND_LINKS=WHEELS, UV_FIND_LINKS=WHEELS)
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # imports write nothing unless a case allows it
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-bytecode-"))
    rows: dict[str, list[float]] = {}
    try:
        print(f"interpreter: {base}; uv: {uv}; {os.cpu_count()} CPUs")
        one_round(tmp / "warm-up", base, uv, env)  # fills pip's and uv's caches
        for i in range(args.rounds):
            for key, value in one_round(tmp / f"r{i}", base, uv, env).items():
                rows.setdefault(key, []).append(value)
            print(f"  round {i + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{'step':<20} {'median s':>9} {'min..max s':>13}")
    for key, values in rows.items():
        print(f"{key:<20} {med[key]:>9.2f} {min(values):>6.2f}..{max(values):<6.2f}")
    compiled = med["all: import"]
    print(f"\n(x compiled: against `import torch` with everything compiled, {compiled:.2f} s)")
    for name, build, first in (
        ("closure (torchjob)", med["uv build"] + med["closure: compile"], med["closure: import"]),
        ("all", med["uv build"] + med["all: compile"], compiled),
        ("none", med["uv build"], med["none: first import"]),
    ):
        speed, ratio = med["pip build"] / build, first / compiled
        print(
            f"{name:<19} build {build:5.2f} s = {speed:4.1f}x faster than virtualenv+pip "
            f"(goal >= 10x: {'met' if speed >= 10 else 'NOT met'}); first import "
            f"{first:4.2f} s = {ratio:4.2f}x compiled (goal <= 1.3x: "
            f"{'met' if ratio <= 1.3 else 'NOT met'}); build + first import {build + first:5.2f} s"
        )
    print(f"none, later runs: import {med['none: next import'] / compiled:.2f}x compiled")


if __name__ == "__main__":
    main()
