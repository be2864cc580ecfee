#!/usr/bin/env python3
"""torchjob side by side with its peers: the wall time of running the same trivial script.

Why: issue 14 asks what torchjob's start-up costs against the tools a user would otherwise
reach for. Each command below runs a `hello.py` that prints one line; the figure is the wall
time from spawn to exit, median over --rounds rounds after --warmup untimed ones:

  python hello.py                       the baseline: the peers venv's interpreter
  torchjob run -q -s hello.py           the torchjob under test (--torchjob, else found)
  torchx run --scheduler local_cwd utils.python --script hello.py
  mlflow run . --env-manager local      an MLproject whose entry point is `python hello.py`
  uv run --no-project python hello.py   the repo venv's uv if present, else uv on PATH
With --torch, also a gang of 2 processes running hello_dist.py (init_process_group("gloo"),
print the rank): `torchrun --standalone --nproc-per-node 2` against `torchjob run -q
--nproc-per-node 2`, which is given the peers venv's interpreter (--python) so that both start
the same torch.

The peers are installed by this script into a virtualenv of their own inside the temp root
(`python -m venv` with the interpreter torchjob runs on, then `pip install torchx` and
`pip install mlflow-skinny` from the package index), never into torchjob's venv. With --torch,
`torch==2.13.0` is installed into that venv only, with --find-links /opt/wheels (the CPU wheel
on local disk), after `pip install --dry-run` has shown that it resolves to 2.13.0+cpu with no
nvidia package. --keep-venv DIR reuses (or creates and keeps) the peers venv at DIR, to save the
install time between invocations; by default it is created and deleted with the temp root.

Every command runs with the peers venv activated (its bin first on PATH, VIRTUAL_ENV), in one
project folder, with TORCHJOB_HOME, TMPDIR (torchx's logs), UV_CACHE_DIR and the MLflow
tracking store inside the temp root, so nothing is written elsewhere. The MLflow store is a file
store, opted into with MLFLOW_ALLOW_FILE_STORE=true: since MLflow 3.x the default is
sqlite:///mlflow.db, which mlflow-skinny cannot open (no SQLAlchemy), and a file store without
the opt-in is refused as "in maintenance mode".

Rounds are interleaved, their order rotated each round, so machine noise hits all commands
alike. A command that is not installable or exits non-zero is reported as
`failed: <its error>` (the last line of a Python traceback, else the first line that names an
error, else the first line of its output) and is not run again.

Usage: python bench/peers.py [--rounds 5] [--warmup 1] [--torchjob PATH] [--keep-venv DIR]
       [--torch]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO, find_torchjob, interpreter_of  # bench/ is the script's own folder

TORCH_PIN = "torch==2.13.0"
WHEELS = "/opt/wheels"
PEERS = ("torchx", "mlflow-skinny")
HELLO = 'print("hello")\n'
HELLO_DIST = (
    'import torch.distributed as dist\ndist.init_process_group("gloo")\nprint(dist.get_rank())\n'
)
TORCHX = ["torchx", "run", "--scheduler", "local_cwd", "utils.python"]
GANG = ["--nproc-per-node", "2"]
MLPROJECT = "name: hello\nentry_points:\n  main:\n    command: python hello.py\n"
ERROR_WIDTH = 90
_ERRORISH = re.compile(r"error|failed|exception|not found|no such", re.I)


@dataclass
class Case:
    """One command to time; `needs` is the package it cannot run without (None: always runs)."""

    label: str
    argv: list[str]
    group: str  # "hello" or "gang": ratios to torchjob are taken within a group
    needs: str | None = None
    times: list[float] = field(default_factory=list)
    error: str | None = None


def error_line(text: str) -> str:
    """The line of a failed command's output that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        pick = lines[-1]
    else:
        pick = next((line for line in lines if _ERRORISH.search(line)), lines[0])
    return pick if len(pick) <= ERROR_WIDTH else pick[: ERROR_WIDTH - 3] + "..."


def run_case(case: Case, cwd: Path, env: dict[str, str]) -> None:
    """Time one run of case; a failure is recorded on the case, which is not run again."""
    start = time.perf_counter()
    proc = subprocess.run(
        case.argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    elapsed = (time.perf_counter() - start) * 1000.0
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace")
        case.error = f"exit {proc.returncode}: {error_line(out)}"
    else:
        case.times.append(elapsed)


def pip(python: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m pip ARGS` in the peers venv, output captured."""
    return subprocess.run(
        [str(python), "-m", "pip", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def installed(python: Path, names: list[str]) -> dict[str, str | None]:
    """The version of each distribution in the venv of python, None when it is absent."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n"
        "        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))\n"
    )
    out = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, str | None] = json.loads(out)
    return result


def torch_resolves_to_cpu(python: Path, env: dict[str, str], tmp: Path) -> str | None:
    """None when pip would install torch 2.13.0+cpu from /opt/wheels and nothing CUDA; else
    why not."""
    report = tmp / "torch-report.json"
    dry = pip(
        python,
        ["install", "--dry-run", "--report", str(report), "--find-links", WHEELS, TORCH_PIN],
        env,
    )
    if dry.returncode != 0:
        return f"pip --dry-run: {error_line(dry.stderr or dry.stdout)}"
    items = json.loads(report.read_text())["install"]
    names = {i["metadata"]["name"].lower(): i for i in items}
    cuda = sorted(n for n in names if n.startswith(("nvidia", "triton")))
    if cuda:
        return f"pip would pull {', '.join(cuda)}; refusing"
    torch = names.get("torch")
    if torch is None:
        return None  # already installed
    version, url = torch["metadata"]["version"], torch["download_info"]["url"]
    if version != "2.13.0+cpu" or WHEELS not in url:
        return f"pip would install torch {version} from {url}; refusing"
    return None


def prepare_venv(
    base: Path, venv: Path, want: list[str], env: dict[str, str], tmp: Path
) -> tuple[dict[str, str], float]:
    """Create (or reuse) the peers venv and install what it lacks of `want`, one package at a
    time; (an error line per package that could not be installed, seconds spent installing)."""
    start = time.perf_counter()
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    have = installed(python, [w.split("==")[0] for w in want])
    failures: dict[str, str] = {}
    for spec in want:
        name = spec.split("==")[0]
        if have[name] is not None:
            continue
        extra: list[str] = []
        if name == "torch":
            why = torch_resolves_to_cpu(python, env, tmp)
            if why:
                failures[name] = why
                continue
            extra = ["--find-links", WHEELS]
        proc = pip(python, ["install", "--quiet", *extra, spec], env)
        if proc.returncode != 0:
            failures[name] = f"pip install {spec}: {error_line(proc.stderr or proc.stdout)}"
    return failures, time.perf_counter() - start


def find_uv() -> str | None:
    """The repo venv's uv, else uv on PATH."""
    local = REPO / ".venv" / "bin" / "uv"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("uv")


def tool_version(argv: list[str], env: dict[str, str]) -> str:
    """First line of `argv`'s output, or why there is none."""
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else f"exit {proc.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description="torchjob against its peers on a hello script.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of every command")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument("--keep-venv", metavar="DIR", help="peers venv to reuse or create, kept")
    parser.add_argument(
        "--torch", action="store_true", help=f"also time 2-process gangs ({TORCH_PIN} installed)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    torchjob = find_torchjob(args.torchjob)
    base = interpreter_of(torchjob)
    uv = find_uv()
    tmp = Path(tempfile.mkdtemp(prefix="torchjob-bench-peers-"))
    try:
        venv = Path(args.keep_venv).resolve() if args.keep_venv else tmp / "peers-venv"
        project = tmp / "proj"
        project.mkdir()
        (tmp / "tmp").mkdir()
        (project / "hello.py").write_text(HELLO)
        (project / "hello_dist.py").write_text(HELLO_DIST)
        (project / "MLproject").write_text(MLPROJECT)
        env = {
            **os.environ,
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            "TORCHJOB_HOME": str(tmp / "home"),
            "TMPDIR": str(tmp / "tmp"),
            "UV_CACHE_DIR": str(tmp / "uv-cache"),
            "MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri(),
            "MLFLOW_ALLOW_FILE_STORE": "true",
            "NO_COLOR": "1",
        }
        env.pop("PYTHONHOME", None)
        pip_env = {**env, "PIP_CACHE_DIR": str(tmp / "pip-cache")}
        want = [*PEERS, *([TORCH_PIN] if args.torch else [])]
        failures, install_s = prepare_venv(base, venv, want, pip_env, tmp)
        python = venv / "bin" / "python"
        versions = installed(python, ["pip", "torchx", "mlflow-skinny", "torch"])

        tj = str(torchjob)
        cases = [
            Case("python hello.py", [str(python), "hello.py"], "hello"),
            Case("torchjob run -q -s hello.py", [tj, "run", "-q", "-s", "hello.py"], "hello"),
            Case(
                "torchx run --scheduler local_cwd utils.python --script hello.py",
                [*TORCHX, "--script", "hello.py"],
                "hello",
                needs="torchx",
            ),
            Case(
                "mlflow run . --env-manager local",
                ["mlflow", "run", ".", "--env-manager", "local"],
                "hello",
                needs="mlflow-skinny",
            ),
            Case(
                "uv run --no-project python hello.py",
                [uv or "uv", "run", "--no-project", "python", "hello.py"],
                "hello",
            ),
        ]
        if uv is None:
            cases[-1].error = "uv not found (repo venv or PATH)"
        if args.torch:
            cases += [
                Case(
                    "torchrun --standalone --nproc-per-node 2 hello_dist.py",
                    ["torchrun", "--standalone", "--nproc-per-node", "2", "hello_dist.py"],
                    "gang",
                    needs="torch",
                ),
                Case(
                    "torchjob run -q --nproc-per-node 2 -s hello_dist.py",
                    [tj, "run", "-q", "--python", str(python), *GANG, "-s", "hello_dist.py"],
                    "gang",
                    needs="torch",
                ),
            ]
        for case in cases:
            if case.needs and case.needs in failures:
                case.error = f"not installable: {failures[case.needs]}"

        for i in range(args.warmup + args.rounds):
            shift = i % len(cases)
            for case in cases[shift:] + cases[:shift]:
                if case.error is None:
                    run_case(case, project, env)
            if i == args.warmup - 1:
                for case in cases:
                    case.times.clear()  # the warm-up rounds are not counted
    finally:
        if args.keep_venv:
            print(f"(peers venv kept at {venv})")
        shutil.rmtree(tmp, ignore_errors=True)

    report(args, torchjob, base, uv, env, versions, install_s, cases)


def report(
    args: argparse.Namespace,
    torchjob: Path,
    base: Path,
    uv: str | None,
    env: dict[str, str],
    versions: dict[str, str | None],
    install_s: float,
    cases: list[Case],
) -> None:
    """Print the setting, the versions and the table."""
    venv_how = f"kept at {args.keep_venv}" if args.keep_venv else "in the temp root, deleted"
    print(f"torchjob:    {torchjob} ({tool_version([str(torchjob), '--version'], env)})")
    print(f"python:      {base} (torchjob's shebang; the peers venv is made with it)")
    print(f"peers venv:  {venv_how}; set up in {install_s:.1f} s")
    shown = ", ".join(f"{name} {ver or 'absent'}" for name, ver in versions.items())
    print(f"versions:    {shown}")
    uv_version = tool_version([uv, "--version"], env) if uv else "not found"
    print(f"uv:          {uv or 'absent'} ({uv_version})")
    print(f"rounds:      {args.rounds}, interleaved and rotated, after {args.warmup} warm-up")
    print()

    def median(label: str) -> float | None:
        case = next(c for c in cases if c.label == label)
        return statistics.median(case.times) if case.error is None and case.times else None

    bare = median(cases[0].label)
    ours = {c.group: median(c.label) for c in cases if c.argv[0] == str(torchjob)}
    rows: list[tuple[str, ...]] = []
    for case in cases:
        if case.error is not None or not case.times:
            rows.append((case.label, f"failed: {case.error}", "", "", ""))
            continue
        med = statistics.median(case.times)
        ref = ours.get(case.group)
        rows.append(
            (
                case.label,
                f"{med:,.0f}",
                f"{min(case.times):,.0f}..{max(case.times):,.0f}",
                f"{med / bare:.2f}x" if bare else "-",
                f"{med / ref:.2f}x" if ref else "-",
            )
        )
    head = ("command", "median ms", "min..max ms", "x python", "x torchjob")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    widths[1] = max(len(head[1]), *(len(r[1]) for r in rows if not r[1].startswith("failed")))

    def line(cells: tuple[str, ...]) -> str:
        if cells[1].startswith("failed"):
            return f"| {cells[0]:<{widths[0]}} | {cells[1]} |"
        padded = [f"{cells[0]:<{widths[0]}}"]
        padded += [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    print(line(head))
    print("| " + " | ".join(["-" * widths[0], *("-" * w for w in widths[1:])]) + " |")
    for row in rows:
        print(line(row))
    print()
    print(
        "x torchjob: this row's median over torchjob's in the same group (the hello rows against "
        "`torchjob run -q -s hello.py`"
        + (", the gangs against torchjob's gang)" if args.torch else ")")
    )


if __name__ == "__main__":
    main()
