#!/usr/bin/env python3
"""Environments: what a cold build costs with virtualenv+pip and with uv, and what a cache hit
adds over `--env-manager none`, all as the wall time of `torchjob run -q` of a hello script.

Why: issue 4 asks that a cache hit add at most 20 ms over `--env-manager none`, and that uv with a
warm uv cache build the torch environment at least 10x faster than virtualenv+pip. Both are
measured here in one run, for two requirement sets:

  small  `tinyb==1.0` (pulls tinya 2.0), the wheelhouse tests/wheelhouse.py builds; offline
         (PIP_NO_INDEX, UV_NO_INDEX, UV_OFFLINE, find-links to the wheelhouse)
  torch  `torch==2.13.0`: the CPU wheel from /opt/wheels (PIP_FIND_LINKS / UV_FIND_LINKS), its
         dependencies from the package index pip and uv are configured with. Before any torch
         build, `pip install --dry-run` and `uv pip compile` must both resolve torch to
         2.13.0+cpu from /opt/wheels with no nvidia/triton package, and every torch environment
         built is checked to hold exactly torch 2.13.0+cpu: nothing may pull a CUDA build.

Variants, each in a fresh folder (its own --runs-dir; a fresh TORCHJOB_HOME for every cold build):
  none        `--env-manager none`: the interpreter as it is (the baseline of a hit)
  hit venv    `--env-manager virtualenv`, the environment already built (run.json: reused)
  hit uv      `--env-manager uv`, likewise
  cold venv   virtualenv+pip into an empty TORCHJOB_HOME (pip cache and virtualenv app-data
              warm, as on any machine that has built one environment before)
  uv empty    uv into an empty TORCHJOB_HOME with an empty UV_CACHE_DIR (small set only; for
              torch the one build that warms the uv cache is shown as a single figure)
  uv warm     uv into an empty TORCHJOB_HOME with a warm, shared UV_CACHE_DIR
  uv next     (torch set) a new key in the TORCHJOB_HOME that `uv warm` just built torch into:
              requirements.txt gains `tqdm`, as when a user adds a package; uv's cache and
              torchjob's environments are warm, so the bytecode their jobs wrote is linked
Each round runs the hit block (none, hit venv, hit uv, repeated, rotated) and then the cold
builds (rotated), so machine noise hits all variants alike. Every run's run.json must say
succeeded, the manager asked for, and reused true for hits and false for cold builds; a hit's
setup.log must list no command.

Where a hit's time goes: fresh processes that import what `torchjob run` imports and then time
each step of the hit path (the manager's version, the interpreter facts, the requirement files,
the key's hash, the lock, the ready check, the last-used note, and `envs.materialize` whole); the
start-up of the environment's python against the base interpreter's; and `-X importtime` of
whole runs (the modules a hit imports that `none` does not).

Nothing is written outside the temp root: TORCHJOB_HOME, UV_CACHE_DIR, PIP_CACHE_DIR,
VIRTUALENV_OVERRIDE_APP_DATA and XDG_{CACHE,DATA,STATE}_HOME point into it; the real user folders
are compared before and after. Everything is kept until the end, then deleted (deleting big trees
slows this VM's file creation for a while), unless free disk runs short between torch rounds: then
the finished rounds are deleted and the output says so.

Usage: PYTHONPATH=. python bench/env.py [--rounds 10] [--hits-per-round 3] [--torch-rounds 3]
       [--skip-torch] [--dir PARENT] [--keep] [--torchjob PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import find_torchjob, interpreter_of  # bench/ is the script's own folder

REPO = Path(__file__).resolve().parents[1]
HIT_GOAL_MS = 20.0
SPEEDUP_GOAL = 10.0
TORCH_REQ = "torch==2.13.0"
TORCH_VERSION = "2.13.0+cpu"
TORCH_WHEELS = Path("/opt/wheels")
PROBE_RUNS = 9
CHILD_RUNS = 20
IMPORT_RUNS = 5
MIN_FREE = 8 << 30  # keep this much free, besides what a torch round needs
STEP_RE = re.compile(r"^\[exit (-?\d+) after ([\d.]+)s\]$")
UV_PHASE_RE = re.compile(
    r"^(Resolved|Prepared|Installed|Bytecode compiled|Uninstalled) [\d,]+ \w+ in ([\d.]+)(ms|s)$"
)
# Real user folders that a careless run would write to (HOME is left alone: pip's user config
# is inherited, as torchjob inherits it).
USER_DIRS = [
    "~/.local/share/torchjob",
    "~/.cache/torchjob",
    "~/.cache/uv",
    "~/.local/share/uv",
    "~/.cache/pip",
    "~/.cache/virtualenv",
    "~/.local/share/virtualenv",
]


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    manager: str
    expect: str  # "hit", "build" or "none"


NONE = Variant("none", "--env-manager none (baseline)", "none", "none")
HIT_VENV = Variant("hit-venv", "virtualenv, cache hit", "virtualenv", "hit")
HIT_UV = Variant("hit-uv", "uv, cache hit", "uv", "hit")
COLD_VENV = Variant("cold-venv", "virtualenv+pip, cold", "virtualenv", "build")
UV_EMPTY = Variant("uv-empty", "uv, cold, empty uv cache", "uv", "build")
UV_WARM = Variant("uv-warm", "uv, cold, warm uv cache", "uv", "build")
UV_NEXT = Variant("uv-next", "uv, new key (+tqdm) after (h), warm caches", "uv", "build")
NEXT_REQ = f"{TORCH_REQ}\ntqdm"
BYTECODE_RE = re.compile(r"^Bytecode: linked (\d+) files")
HIT_BLOCK = [NONE, HIT_VENV, HIT_UV]


@dataclass
class Sample:
    """One measured `torchjob run`."""

    seconds: float
    record: dict[str, Any]
    steps: dict[str, float] = field(default_factory=dict)  # setup.log: step -> seconds
    uv_phases: dict[str, float] = field(default_factory=dict)  # uv's own "... in X" lines
    bytecode: int | None = None  # envs/bytecode.py: files linked (the job compiles the rest)

    @property
    def build_seconds(self) -> float | None:
        value = self.record["environment"].get("build_seconds")
        return float(value) if value is not None else None


@dataclass
class Bench:
    """The torchjob under test, the temp root, and the environment variables of each set."""

    torchjob: Path
    python: Path
    root: Path
    base_env: dict[str, str]
    counter: int = 0
    min_free: int = 1 << 62

    def fresh(self, what: str) -> Path:
        """A new folder under the root, never reused."""
        self.counter += 1
        path = self.root / f"{self.counter:04d}-{what}"
        path.mkdir(parents=True)
        return path

    def run(
        self,
        variant: Variant,
        project: Path,
        home: Path,
        uv_cache: Path,
        env: dict[str, str],
        prefix: list[str] | None = None,
    ) -> Sample:
        """One `torchjob run -q` of hello.py in a fresh runs dir; checks its record."""
        folder = self.fresh(variant.key)
        runs = folder / "runs"
        argv = [
            *(prefix or []),
            str(self.torchjob),
            "run",
            "-q",
            "-s",
            "hello.py",
            "-p",
            str(project),
            "--env-manager",
            variant.manager,
            "--runs-dir",
            str(runs),
        ]
        full = dict(env, TORCHJOB_HOME=str(home), UV_CACHE_DIR=str(uv_cache))
        start = time.perf_counter()
        proc = subprocess.run(
            argv, cwd=folder, env=full, stdin=subprocess.DEVNULL, capture_output=True, check=False
        )
        seconds = time.perf_counter() - start
        self.min_free = min(self.min_free, shutil.disk_usage(self.root).free)
        run_dirs = list(runs.iterdir()) if runs.is_dir() else []
        log = run_dirs[0] / "setup.log" if len(run_dirs) == 1 else None
        if proc.returncode != 0 or len(run_dirs) != 1:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            sys.exit(
                f"bench: {' '.join(argv)} exited {proc.returncode}:\n"
                f"{proc.stderr.decode(errors='replace')[-3000:]}\n{tail}"
            )
        record = json.loads((run_dirs[0] / "run.json").read_text())
        sample = Sample(seconds, record)
        environment = record.get("environment") or {}
        problem = check_record(variant, record, environment)
        if log is not None and log.exists():
            text = log.read_text(errors="replace")
            sample.steps, sample.uv_phases = parse_setup_log(text)
            counts = [BYTECODE_RE.match(line) for line in text.splitlines()]
            sample.bytecode = next((int(m.group(1)) for m in counts if m), None)
        if variant.expect == "hit" and sample.steps:
            problem = f"a cache hit ran {sorted(sample.steps)} (setup.log)"
        if problem:
            sys.exit(f"bench: {variant.label}: {problem}; run folder {run_dirs[0]}")
        return sample

    def probe(
        self, mode: str, manager: str, project: Path, home: Path, env: dict[str, str]
    ) -> dict[str, Any]:
        """One fresh `python bench/env.py --probe` process (see probe())."""
        out = subprocess.run(
            [
                str(self.python),
                str(Path(__file__).resolve()),
                "--probe",
                mode,
                manager,
                str(project),
            ],
            env=dict(env, TORCHJOB_HOME=str(home)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            sys.exit(f"bench: probe {mode} {manager} failed:\n{out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.stdout)
        return result


def check_record(variant: Variant, record: dict[str, Any], env: dict[str, Any]) -> str | None:
    """What is wrong with a run's record for this variant, if anything."""
    if record.get("status") != "succeeded":
        return f"run.json status {record.get('status')!r}: {record.get('error')!r}"
    if env.get("manager") != variant.manager:
        return f"run.json environment.manager {env.get('manager')!r}"
    if variant.expect == "hit" and env.get("reused") is not True:
        return f"expected a cache hit, run.json says reused={env.get('reused')!r}"
    if variant.expect == "build" and env.get("reused") is not False:
        return f"expected a build, run.json says reused={env.get('reused')!r}"
    return None


def classify(command: str) -> str:
    if "bytecode.py" in command:
        return "bytecode"
    if " -m virtualenv " in command or " venv " in command:
        return "create"
    if "pip install" in command:
        return "install"
    if "pip check" in command:
        return "check"
    if "platform.python_version" in command:
        return "health check"
    return "other"


def parse_setup_log(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per step ("$ argv" ... "[exit 0 after 0.52s]"), and uv's own phase times."""
    steps: dict[str, float] = {}
    phases: dict[str, float] = {}
    current = "other"
    for line in text.splitlines():
        if line.startswith("$ "):
            current = classify(line)
        elif m := STEP_RE.match(line):
            steps[current] = steps.get(current, 0.0) + float(m.group(2))
        elif m := UV_PHASE_RE.match(line.strip()):
            value = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
            phases[m.group(1)] = phases.get(m.group(1), 0.0) + value
    return steps, phases


def snapshot(paths: list[Path]) -> dict[str, int | None]:
    """mtimes two levels deep: enough to notice a new cache entry or run folder."""
    state: dict[str, int | None] = {}
    for root in paths:
        state[str(root)] = root.stat().st_mtime_ns if root.exists() else None
        if root.is_dir():
            for child in root.iterdir():
                state[str(child)] = child.lstat().st_mtime_ns
                if child.is_dir() and not child.is_symlink():
                    for grandchild in child.iterdir():
                        state[str(grandchild)] = grandchild.lstat().st_mtime_ns
    return state


def make_project(folder: Path, requirement: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "hello.py").write_text('print("hello")\n')
    (folder / "requirements.txt").write_text(requirement + "\n")
    return folder


def tool_output(argv: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
    ).stdout.strip()


def uv_binary(python: Path) -> str:
    """The uv torchjob uses: PATH first, else the `uv` package's binary."""
    return shutil.which("uv") or tool_output(
        [str(python), "-c", "from uv import find_uv_bin; print(find_uv_bin())"]
    )


# ---------------------------------------------------------------------------------------------
# the probe: runs in a fresh process with TORCHJOB_HOME set to a home holding the environment


def probe(mode: str, manager: str, project: Path) -> None:
    """Print JSON: ms of each step of a cache hit, after importing what `torchjob run` imports.

    mode "steps": each input of the key, the hash, the lock, the ready check, the last-used note,
    then cache.obtain whole; mode "whole": envs.materialize once, as `torchjob run` calls it."""
    import fcntl
    from importlib import import_module

    # imported by name, so that this file type-checks whether or not mypy sees src/ (the package
    # ships no py.typed); torchrun_cli.cli first: what `torchjob run` has imported before any work
    import_module("torchrun_cli.cli")
    envs, jobs, store, specs, cache, inputs, settings, record = (
        import_module(f"torchrun_cli.{name}")
        for name in (
            "envs",
            "jobs.run",
            "store",
            "spec.load",
            "envs.cache",
            "envs.key",
            "settings",
            "record",
        )
    )
    builders = import_module("torchrun_cli.envs.builders").BUILDERS
    found = settings.read()
    flags = {"script": "hello.py", "project": str(project), "python.manager": manager}
    job = specs.load(None, flags, project, found)
    planned_run = jobs.make_plan(job, found, found.runs_dir(None))
    base = planned_run.environment
    envs_root = cache.root(found.cache_home)
    run_dir = record.RunDir(Path(tempfile.mkdtemp(prefix="torchjob-probe-")))  # a hit logs nothing
    clock = time.perf_counter
    ms: dict[str, float] = {}
    before = set(sys.modules)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = clock()
        value = fn()
        ms[name] = (clock() - start) * 1000.0
        return value

    if mode == "whole":
        got, lease = timed(
            "materialize",
            lambda: envs.materialize(
                job, base, project, jobs.project_id(job), run_dir, found, False, lambda _: None
            ),
        )
        if lease is not None:
            lease.close()
        if not got.reused:
            sys.exit("probe: materialize did not reuse the environment")
    else:
        timed("manager version", lambda: builders[manager](found).version())
        new_modules = sorted(set(sys.modules) - before)
        timed(
            "interpreter facts",
            lambda: inputs.interpreter_facts(base.interpreter, found.cache_home),
        )
        timed("requirement files", lambda: inputs.requirement_files(project / "requirements.txt"))
        planned = envs.plan(job, base, project, found)
        timed("canonical hash", lambda: inputs.canonical_hash(planned.inputs))
        folder = cache.folder_of(envs_root, planned.key)

        def lock() -> None:
            fd = os.open(
                folder.parent / f"{folder.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.close(fd)

        timed("lock (open, flock, close)", lock)
        timed("ready check", lambda: store.is_ready(folder))
        timed("last-used note", lambda: cache._note_use(folder, jobs.project_id(job)))

        def obtain() -> None:
            got = cache.obtain(
                envs_root, planned.key, {}, jobs.project_id(job), False, lambda _: None
            )
            got.lease.close()
            if not got.reused:
                sys.exit("probe: obtain did not reuse the environment")

        timed("cache.obtain whole", obtain)
        print(json.dumps({"ms": ms, "modules": new_modules}))
        return
    print(json.dumps({"ms": ms, "modules": []}))


# ---------------------------------------------------------------------------------------------


def importtime_ms(stderr: str) -> tuple[float, dict[str, float]]:
    """Total of the top-level imports' cumulative times, and each top-level module's, in ms."""
    top: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumul_us, name_field = line.removeprefix("import time:").split("|", 2)
        if (len(name_field) - len(name_field.lstrip(" ")) - 1) // 2 == 0:
            top[name_field.strip()] = int(cumul_us) / 1000.0
    return sum(top.values()), top


def rotate(items: list[Variant], by: int) -> list[Variant]:
    by %= len(items)
    return items[by:] + items[:by]


def stats(values: list[float], scale: float, digits: int) -> tuple[str, str]:
    med = statistics.median(values) * scale
    low, high = min(values) * scale, max(values) * scale
    return f"{med:.{digits}f}", f"{low:.{digits}f}..{high:.{digits}f}"


def free_gib(path: Path) -> float:
    return shutil.disk_usage(path).free / (1 << 30)


class SmallSet:
    """The wheelhouse set: every variant, --rounds rounds."""

    def __init__(self, bench: Bench, env: dict[str, str]) -> None:
        self.bench = bench
        self.env = env
        self.project = make_project(bench.root / "small-project", "tinyb==1.0")
        self.hit_home = bench.root / "small-hit-home"
        self.warm_uv = bench.root / "small-uv-warm-cache"
        self.scratch_uv = bench.root / "small-uv-scratch-cache"  # for the virtualenv variants
        self.samples: dict[str, list[Sample]] = {}

    def once(self, v: Variant) -> Sample:
        b = self.bench
        if v.expect == "build":
            home = b.fresh("home")
            uv_cache = (
                b.fresh("uv-cache")
                if v is UV_EMPTY
                else (self.warm_uv if v is UV_WARM else self.scratch_uv)
            )
        else:
            home, uv_cache = self.hit_home, self.warm_uv
        return b.run(v, self.project, home, uv_cache, self.env)

    def measure(self, rounds: int, hits_per_round: int) -> None:
        # warm-up, untimed: builds the hit environments (warming the uv cache, virtualenv's
        # app-data and the pip cache), then one run of every variant
        for v in (COLD_VENV, UV_WARM):
            self.bench.run(
                Variant(v.key, v.label, v.manager, "build"),
                self.project,
                self.hit_home,
                self.warm_uv,
                self.env,
            )
        for v in [*HIT_BLOCK, COLD_VENV, UV_EMPTY, UV_WARM]:
            self.once(v)
        self.samples = {v.key: [] for v in [*HIT_BLOCK, COLD_VENV, UV_EMPTY, UV_WARM]}
        for i in range(rounds):
            for j in range(hits_per_round):
                for v in rotate(HIT_BLOCK, i + j):
                    self.samples[v.key].append(self.once(v))
            for v in rotate([COLD_VENV, UV_EMPTY, UV_WARM], i):
                self.samples[v.key].append(self.once(v))
            print(f"  small set: round {i + 1}/{rounds} done", file=sys.stderr)


class TorchSet:
    """torch==2.13.0: cold virtualenv+pip, cold uv with a warm uv cache, hits; --torch-rounds."""

    def __init__(self, bench: Bench, env: dict[str, str], uv: str) -> None:
        self.bench = bench
        self.env = env
        self.uv = uv
        self.project = make_project(bench.root / "torch-project", TORCH_REQ)
        self.next_project = make_project(bench.root / "torch-next-project", NEXT_REQ)
        self.hit_home = bench.root / "torch-hit-home"
        self.warm_uv = bench.root / "torch-uv-warm-cache"
        self.scratch_uv = bench.root / "torch-uv-scratch-cache"
        self.samples: dict[str, list[Sample]] = {}
        self.first: dict[str, Sample] = {}  # the builds that warmed the caches
        self.notes: list[str] = []

    def preflight(self) -> None:
        """pip and uv must both resolve torch to 2.13.0+cpu from /opt/wheels, nothing CUDA."""
        folder = self.bench.fresh("torch-preflight")
        report = folder / "pip-report.json"
        env = dict(self.env, PIP_CACHE_DIR=str(folder / "pip-cache"))
        subprocess.run(
            [
                str(self.bench.python),
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                TORCH_REQ,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
        chosen = {
            i["metadata"]["name"].lower(): (i["metadata"]["version"], i["download_info"]["url"])
            for i in json.loads(report.read_text())["install"]
        }
        version, url = chosen.get("torch", ("?", "?"))
        if version != TORCH_VERSION or not url.startswith(f"file://{TORCH_WHEELS}/"):
            sys.exit(f"bench: pip would install torch {version} from {url}; refusing")
        pinned = tool_output(
            [
                self.uv,
                "pip",
                "compile",
                "--quiet",
                "--no-header",
                "--python",
                str(self.bench.python),
                str(self.project / "requirements.txt"),
            ],
            dict(self.env, UV_CACHE_DIR=str(folder / "uv-cache")),
        )
        if f"torch=={TORCH_VERSION}" not in pinned.split():
            sys.exit(f"bench: uv would not install torch {TORCH_VERSION}:\n{pinned}")
        names = set(chosen) | {line.split("==")[0] for line in pinned.split()}
        cuda = sorted(n for n in names if n.startswith(("nvidia", "triton")))
        if cuda:
            sys.exit(f"bench: the torch resolution pulls {cuda}; refusing")

    def check_env(self, sample: Sample) -> None:
        """Exactly torch 2.13.0+cpu in the environment, no nvidia package."""
        env_path = Path(sample.record["environment"]["path"])
        (site,) = env_path.glob("lib/python*/site-packages")
        found = sorted(p.name for p in site.glob("torch-*.dist-info"))
        if found != [f"torch-{TORCH_VERSION}.dist-info"] or (site / "nvidia").exists():
            sys.exit(f"bench: {env_path} holds {found}; expected torch {TORCH_VERSION} only")

    def once(self, v: Variant, round_dir: Path | None = None) -> Sample:
        b = self.bench
        project = self.next_project if v is UV_NEXT else self.project
        if v.expect == "build":
            assert round_dir is not None
            home = round_dir / f"home-{UV_WARM.key if v is UV_NEXT else v.key}"
            uv_cache = self.warm_uv if v in (UV_WARM, UV_NEXT) else self.scratch_uv
        else:
            home, uv_cache = self.hit_home, self.warm_uv
        sample = b.run(v, project, home, uv_cache, self.env)
        if v.expect == "build":
            self.check_env(sample)
        return sample

    def measure(self, rounds: int, hits_per_round: int) -> None:
        self.preflight()
        # the builds that warm the caches (uv's, pip's, virtualenv's app-data), timed once
        for v, label in (
            (UV_WARM, "uv, cold, empty uv cache (the build that warms it)"),
            (COLD_VENV, "virtualenv+pip, cold, empty pip cache (1 run)"),
        ):
            sample = self.bench.run(
                Variant(v.key, label, v.manager, "build"),
                self.project,
                self.hit_home,
                self.warm_uv,
                self.env,
            )
            self.check_env(sample)
            self.first[label] = sample
            print(f"  torch: {label}: {sample.seconds:.1f} s", file=sys.stderr)
        # tqdm into the warm uv cache (untimed): (h2)'s only new package is then warm as well
        self.bench.run(
            Variant(UV_NEXT.key, UV_NEXT.label, "uv", "build"),
            self.next_project,
            self.hit_home,
            self.warm_uv,
            self.env,
        )
        for v in HIT_BLOCK:
            self.once(v)
        self.samples = {v.key: [] for v in [*HIT_BLOCK, COLD_VENV, UV_WARM, UV_NEXT]}
        finished: list[Path] = []
        per_round = 0
        for i in range(rounds):
            free = shutil.disk_usage(self.bench.root).free
            if per_round and free < per_round + MIN_FREE and finished:
                for folder in finished:
                    shutil.rmtree(folder, ignore_errors=True)
                self.notes.append(
                    f"disk short before round {i + 1} ({free / (1 << 30):.1f} GiB free, a round "
                    f"takes {per_round / (1 << 30):.1f} GiB): deleted the {len(finished)} "
                    "finished round(s) first; the round after a delete may be slower"
                )
                finished = []
            round_dir = self.bench.fresh("torch-round")
            for j in range(hits_per_round):
                for v in rotate(HIT_BLOCK, i + j):
                    self.samples[v.key].append(self.once(v))
            for v in [*rotate([COLD_VENV, UV_WARM], i), UV_NEXT]:  # UV_NEXT after UV_WARM
                self.samples[v.key].append(self.once(v, round_dir))
                print(
                    f"  torch: round {i + 1}/{rounds} {v.label}: "
                    f"{self.samples[v.key][-1].seconds:.1f} s",
                    file=sys.stderr,
                )
            per_round = max(per_round, free - shutil.disk_usage(self.bench.root).free)
            finished.append(round_dir)


@dataclass
class HitAnatomy:
    """Where a hit's time goes."""

    steps: dict[str, dict[str, float]]  # manager -> step -> median ms
    modules: dict[str, list[str]]  # manager -> modules the version() call imported
    child: dict[str, float]  # interpreter label -> median ms of `python hello.py`
    imports: dict[str, float]  # variant -> median total top-level import ms
    extra: dict[str, list[tuple[str, float]]]  # hit variant -> (module, ms) not in none


def anatomy(small: SmallSet) -> HitAnatomy:
    b = small.bench
    steps: dict[str, dict[str, float]] = {}
    modules: dict[str, list[str]] = {}
    for manager in ("virtualenv", "uv"):
        runs: dict[str, list[float]] = {}
        for _ in range(PROBE_RUNS):
            for mode in ("steps", "whole"):
                out = b.probe(mode, manager, small.project, small.hit_home, small.env)
                for name, value in out["ms"].items():
                    runs.setdefault(name, []).append(float(value))
                if mode == "steps":
                    modules[manager] = out["modules"]
        steps[manager] = {name: statistics.median(v) for name, v in runs.items()}
    # the environment's python against the base interpreter, running hello.py
    pythons = {"base interpreter (none)": str(b.python)}
    for v in (HIT_VENV, HIT_UV):
        pythons[f"{v.manager} environment's python"] = small.samples[v.key][0].record[
            "environment"
        ]["interpreter"]
    child: dict[str, list[float]] = {k: [] for k in pythons}
    for _ in range(CHILD_RUNS):
        for label, exe in pythons.items():
            start = time.perf_counter()
            subprocess.run(
                [exe, "hello.py"],
                cwd=small.project,
                env=small.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=True,
            )
            child[label].append((time.perf_counter() - start) * 1000.0)
    # -X importtime of whole runs
    totals: dict[str, list[float]] = {v.key: [] for v in HIT_BLOCK}
    tops: dict[str, dict[str, list[float]]] = {v.key: {} for v in HIT_BLOCK}
    env = dict(small.env, TORCHJOB_HOME=str(small.hit_home), UV_CACHE_DIR=str(small.warm_uv))
    for _ in range(IMPORT_RUNS):
        for v in HIT_BLOCK:
            runs_dir = b.fresh(f"importtime-{v.key}") / "runs"
            proc = subprocess.run(
                [
                    str(b.python),
                    "-X",
                    "importtime",
                    str(b.torchjob),
                    "run",
                    "-q",
                    "-s",
                    "hello.py",
                    "-p",
                    str(small.project),
                    "--env-manager",
                    v.manager,
                    "--runs-dir",
                    str(runs_dir),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=True,
            )
            total, top = importtime_ms(proc.stderr)
            totals[v.key].append(total)
            for name, value in top.items():
                tops[v.key].setdefault(name, []).append(value)
    extra: dict[str, list[tuple[str, float]]] = {}
    for v in (HIT_VENV, HIT_UV):
        rows = [
            (n, statistics.median(vals))
            for n, vals in tops[v.key].items()
            if n not in tops[NONE.key]
        ]
        extra[v.key] = sorted(rows, key=lambda r: -r[1])[:6]
    return HitAnatomy(
        steps,
        modules,
        {k: statistics.median(v) for k, v in child.items()},
        {k: statistics.median(v) for k, v in totals.items()},
        extra,
    )


# ---------------------------------------------------------------------------------------------
# the report


def table(
    title: str,
    rows: list[tuple[str, list[Sample]]],
    unit: str,
    baseline: list[Sample],
    cold_base: list[Sample] | None,
) -> None:
    scale, digits = (1000.0, 1) if unit == "ms" else (1.0, 3)
    base = statistics.median(s.seconds for s in baseline)
    cold = statistics.median(s.seconds for s in cold_base) if cold_base else None
    width = max(len("variant"), *(len(r[0]) for r in rows))
    print(title)
    print(
        f"{'variant':<{width}}  {'runs':>4}  {'median ' + unit:>10}  {'min..max ' + unit:>17}  "
        f"{'over none':>10}  {'vs none':>8}  {'build s':>7}  {'speed-up':>8}"
    )
    for label, samples in rows:
        secs = [s.seconds for s in samples]
        med, spread = stats(secs, scale, digits)
        median = statistics.median(secs)
        builds = [s.build_seconds for s in samples if s.build_seconds]
        build = f"{statistics.median(builds):7.2f}" if builds else "-".rjust(7)
        speed = f"{cold / median:7.1f}x" if cold and builds else "-".rjust(8)
        over = f"{(median - base) * scale:+10.{digits}f}"
        print(
            f"{label:<{width}}  {len(samples):4d}  {med:>10}  {spread:>17}  {over}  "
            f"{median / base:7.2f}x  {build}  {speed}"
        )
    print(
        "(over none / vs none: against --env-manager none in the same run; build s: run.json's "
        "environment.build_seconds; speed-up: cold virtualenv+pip's median over this one's)"
    )


def step_table(title: str, rows: list[tuple[str, list[Sample]]]) -> None:
    """Median seconds of each setup.log step, and uv's own phases."""
    print(title)
    for label, samples in rows:
        names = sorted(
            {n for s in samples for n in s.steps},
            key=["create", "install", "bytecode", "health check", "check", "other"].index,
        )
        parts = [
            f"{n} {statistics.median(s.steps.get(n, 0.0) for s in samples):.2f}" for n in names
        ]
        phases = sorted({n for s in samples for n in s.uv_phases})
        uv = [
            f"{n.lower()} {statistics.median(s.uv_phases.get(n, 0.0) for s in samples):.2f}"
            for n in phases
        ]
        counts = [s.bytecode for s in samples if s.bytecode]
        linked = f"  [bytecode: linked {statistics.median(counts):.0f} files]" if counts else ""
        print(
            f"  {label}: {', '.join(parts)}" + (f"  [uv: {', '.join(uv)}]" if uv else "") + linked
        )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report_small(small: SmallSet, rounds: int, hits: int) -> dict[str, float]:
    s = small.samples
    rows = [
        (f"({k}) {v.label}", s[v.key])
        for k, v in zip("abcde", [COLD_VENV, UV_EMPTY, UV_WARM, HIT_VENV, HIT_UV], strict=True)
    ]
    rows.append(("(f) --env-manager none (baseline)", s[NONE.key]))
    print()
    table(
        f"small set (tinyb==1.0 + tinya 2.0, offline): cold builds {rounds} runs each, hits "
        f"and none {rounds * hits} runs each",
        rows,
        "ms",
        s[NONE.key],
        s[COLD_VENV.key],
    )
    step_table("setup.log steps of the cold builds, median s:", rows[:3])
    base = statistics.median(x.seconds for x in s[NONE.key])
    return {
        v.key: (statistics.median(x.seconds for x in s[v.key]) - base) * 1000.0
        for v in (HIT_VENV, HIT_UV)
    }


def report_torch(
    tset: TorchSet, rounds: int, hits: int
) -> tuple[dict[str, float], dict[str, float]]:
    s = tset.samples
    rows = [
        ("(g) virtualenv+pip, cold", s[COLD_VENV.key]),
        ("(h) uv, cold, warm uv cache", s[UV_WARM.key]),
        ("(h2) " + UV_NEXT.label, s[UV_NEXT.key]),
        ("(i) virtualenv, cache hit", s[HIT_VENV.key]),
        ("(j) uv, cache hit", s[HIT_UV.key]),
        ("(k) --env-manager none (baseline)", s[NONE.key]),
    ]
    firsts = [(f"    {label}", [sample]) for label, sample in tset.first.items()]
    print()
    table(
        f"torch set ({TORCH_REQ} from {TORCH_WHEELS}, dependencies from the index): cold "
        f"builds {rounds} runs each, hits and none {rounds * hits} runs each; the indented rows "
        "are the two builds, one each, that warmed the caches before the rounds",
        rows[:3] + firsts + rows[3:],
        "s",
        s[NONE.key],
        s[COLD_VENV.key],
    )
    step_table("setup.log steps of the cold builds, median s:", rows[:3] + firsts)
    for note in tset.notes:
        print(f"note: {note}")
    venv = statistics.median(x.seconds for x in s[COLD_VENV.key])
    speedup = {
        v.key: venv / statistics.median(x.seconds for x in s[v.key]) for v in (UV_WARM, UV_NEXT)
    }
    no_compile = statistics.median(x.seconds - x.steps.get("bytecode", 0.0) for x in s[UV_WARM.key])
    print(
        f"derived, not measured: (h) less its bytecode step = {no_compile:.2f} s, "
        f"{venv / no_compile:.1f}x faster than virtualenv+pip (which byte-compiles too, "
        "inside its install step)"
    )
    base = statistics.median(x.seconds for x in s[NONE.key])
    over = {
        v.key: (statistics.median(x.seconds for x in s[v.key]) - base) * 1000.0
        for v in (HIT_VENV, HIT_UV)
    }
    return speedup, over


def report_anatomy(a: HitAnatomy, over: dict[str, float]) -> None:
    print()
    print(
        f"where a hit's time goes (small set). In-process steps, median ms of {PROBE_RUNS} fresh "
        "processes that first import torchrun_cli.cli:"
    )
    names = list(a.steps["virtualenv"])
    width = max(len(n) for n in names)
    print(f"  {'step':<{width}}  {'virtualenv':>10}  {'uv':>7}")
    for name in names:
        print(
            f"  {name:<{width}}  {a.steps['virtualenv'][name]:10.2f}  "
            f"{a.steps['uv'].get(name, 0.0):7.2f}"
        )
    print(
        "  (materialize: another fresh process timing envs.materialize whole, as `torchjob run` "
        "calls it; the rows above it are its parts)"
    )
    for manager, mods in a.modules.items():
        shown = ", ".join(m for m in mods if "." not in m and not m.startswith("_"))
        print(f"  modules first imported by {manager}'s version(): {len(mods)} ({shown})")
    print(f"child start-up, `PYTHON hello.py`, median ms of {CHILD_RUNS}:")
    for label, value in a.child.items():
        print(f"  {label}: {value:.1f}")
    print(
        f"imports of whole runs (-X importtime, sum of top-level cumulative, median of "
        f"{IMPORT_RUNS}):"
    )
    for key, value in a.imports.items():
        print(f"  {key}: {value:.1f} ms")
    for key, rows in a.extra.items():
        listed = ", ".join(f"{n} {ms:.1f}" for n, ms in rows)
        print(f"  top-level imports in {key} that none does not make, ms: {listed or '-'}")
    for v in (HIT_VENV, HIT_UV):
        key = "virtualenv" if v is HIT_VENV else "uv"
        child = a.child[f"{key} environment's python"] - a.child["base interpreter (none)"]
        imports = a.imports[v.key] - a.imports[NONE.key]
        print(
            f"  {v.key}: {over[v.key]:+.1f} ms over none = materialize "
            f"{a.steps[key]['materialize']:.1f} ms (of which manager version "
            f"{a.steps[key]['manager version']:.1f}) + child start-up {child:+.1f} ms + the "
            f"rest; import totals differ by {imports:+.1f} ms"
        )


def machine_line(python: Path, uv: str) -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    ver = tool_output(
        [
            str(python),
            "-c",
            "import platform, virtualenv, pip; print(platform."
            "python_version(), virtualenv.__version__, pip.__version__)",
        ]
    ).split()
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kib / (1 << 20):.0f} GiB RAM, kernel "
        f"{os.uname().release}; Python {ver[0]} ({python}); virtualenv {ver[1]}, pip {ver[2]} "
        f"(the venv's; virtualenv seeds its bundled pip); {tool_output([uv, '--version'])} "
        f"({uv})"
    )


def code_under_test(python: Path, env: dict[str, str]) -> str:
    """Which torchrun_cli the runs imported (PYTHONPATH may point at an export of a commit), and
    the repository's HEAD and whether its src/ has uncommitted changes."""
    code = "import torchrun_cli; print(torchrun_cli.__file__)"
    module = Path(tool_output([str(python), "-c", code], env)).parent
    head = tool_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = tool_output(
        ["git", "--no-optional-locks", "-C", str(REPO), "status", "--porcelain", "--", "src"]
    )
    where = "the repo's src/" if module == REPO / "src" / "torchrun_cli" else "NOT the repo's src/"
    return f"torchrun_cli from {module} ({where}); repo HEAD {head}, src/ " + (
        "with uncommitted changes" if dirty else "clean"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Environment builds and cache hits.")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of the small set")
    parser.add_argument(
        "--hits-per-round", type=int, default=3, help="runs of none / hit venv / hit uv per round"
    )
    parser.add_argument("--torch-rounds", type=int, default=3, help="rounds of the torch set")
    parser.add_argument("--skip-torch", action="store_true", help="only the small set")
    parser.add_argument("--dir", help="parent of the temp root [default: the system temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the files (for a look)")
    parser.add_argument("--torchjob", help="torchjob console script [default: found]")
    parser.add_argument(
        "--probe", nargs=3, metavar=("MODE", "MANAGER", "PROJECT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.probe:
        probe(args.probe[0], args.probe[1], Path(args.probe[2]))
        return
    if args.rounds < 1 or args.torch_rounds < 1 or args.hits_per_round < 1:
        parser.error("--rounds, --torch-rounds and --hits-per-round must be at least 1")
    sys.path.insert(0, str(REPO))
    from tests.wheelhouse import build, offline_env

    torchjob = find_torchjob(args.torchjob)
    python = interpreter_of(torchjob)
    uv = uv_binary(python)
    user_dirs = [Path(p).expanduser() for p in USER_DIRS]
    before = snapshot(user_dirs)
    root = Path(tempfile.mkdtemp(prefix="torchjob-bench-env-", dir=args.dir))
    free_start = free_gib(root)
    base_env = dict(os.environ)
    for var in (
        "PYTHONPYCACHEPREFIX",
        "PIP_NO_INDEX",
        "UV_NO_INDEX",
        "UV_OFFLINE",
        "PYTHON_LAUNCHER",
    ):
        base_env.pop(var, None)
    base_env.update(
        {
            "XDG_CACHE_HOME": str(root / "xdg-cache"),
            "XDG_DATA_HOME": str(root / "xdg-data"),
            "XDG_STATE_HOME": str(root / "xdg-state"),
            "PIP_CACHE_DIR": str(root / "pip-cache"),
            "VIRTUALENV_OVERRIDE_APP_DATA": str(root / "virtualenv-app-data"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
    )
    bench = Bench(torchjob, python, root, base_env)
    small_env = dict(base_env, **offline_env(build(root / "wheelhouse")))
    torch_env = dict(base_env, PIP_FIND_LINKS=str(TORCH_WHEELS), UV_FIND_LINKS=str(TORCH_WHEELS))
    tset: TorchSet | None = None
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    try:
        small = SmallSet(bench, small_env)
        small.measure(args.rounds, args.hits_per_round)
        hit_anatomy = anatomy(small)
        if not args.skip_torch:
            tset = TorchSet(bench, torch_env, uv)
            tset.measure(args.torch_rounds, args.hits_per_round)
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            print(f"deleting {root} ...", file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    load_end = os.getloadavg()[0]
    untouched = snapshot(user_dirs) == before

    print(f"machine:     {machine_line(python, uv)}")
    print(f"torchjob:    {torchjob}; {code_under_test(python, base_env)}")
    print(
        f"temp root:   {root} ({free_start:.1f} GiB free at start, "
        f"{bench.min_free / (1 << 30):.1f} GiB at the lowest); "
        + ("kept" if args.keep else "everything deleted at the end")
    )
    print(
        f"caches:      pip cache and virtualenv app-data shared and warmed by the first builds; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"
    )
    print(f"user dirs:   {'untouched' if untouched else 'CHANGED'} ({', '.join(USER_DIRS)})")
    print(
        f"took:        {elapsed / 60:.1f} min; 1-min load average {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end (2 cores: anything else running skews the figures)"
    )
    over = report_small(small, args.rounds, args.hits_per_round)
    report_anatomy(hit_anatomy, over)
    goals = [
        (
            f"goal: a cache hit adds <= {HIT_GOAL_MS:.0f} ms over --env-manager none, "
            f"small set, {v.manager}",
            over[v.key] <= HIT_GOAL_MS,
            f"{over[v.key]:+.1f} ms",
        )
        for v in (HIT_VENV, HIT_UV)
    ]
    if tset is not None:
        speedups, torch_over = report_torch(tset, args.torch_rounds, args.hits_per_round)
        goals += [
            (
                f"goal: a cache hit adds <= {HIT_GOAL_MS:.0f} ms over --env-manager none, "
                f"torch set, {v.manager}",
                torch_over[v.key] <= HIT_GOAL_MS,
                f"{torch_over[v.key]:+.1f} ms",
            )
            for v in (HIT_VENV, HIT_UV)
        ]
        for v, how in (
            (UV_WARM, "(h) an empty TORCHJOB_HOME"),
            (UV_NEXT, "(h2) a new key beside an earlier torch environment"),
        ):
            goals.append(
                (
                    f"goal: uv with a warm uv cache builds the torch environment >= "
                    f"{SPEEDUP_GOAL:.0f}x faster than virtualenv+pip, {how}",
                    speedups[v.key] >= SPEEDUP_GOAL,
                    f"{speedups[v.key]:.1f}x",
                )
            )
    print()
    for text, ok, figure in goals:
        print(f"{text}: {verdict(ok)} ({figure})")


if __name__ == "__main__":
    main()
