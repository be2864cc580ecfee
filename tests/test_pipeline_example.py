"""examples/pipeline: the iris pipeline (prep, two trainings side by side, evaluate), run
through torchjob as its README says, with the interpreter as it is."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.helpers import ROOT, Env

EXAMPLE = ROOT / "examples" / "pipeline"


def test_the_pipeline_runs_its_trainings_side_by_side(iso: Env) -> None:
    """The example is the pipeline feature's demo, so the run must show each part of it
    working: every step succeeds; evaluate gets the trainings' published accuracies and
    publishes its own (`best`, `test-accuracy`) into its run.json; train and train_b, which
    need only prep and `max_parallel: 2` lets run at once, really ran at the same time (their
    runs' intervals overlap: run one after the other, they could not). The steps start when
    their needs end, not after a sleep, and train does ~0.3 s of real work (10-fold
    cross-validation and the fit), so the overlap is not a matter of luck."""
    runs = iso.tmp / "runs"
    argv = ["run", "examples/pipeline/pipeline.yaml", "--runs-dir", str(runs)]
    done = subprocess.run(
        [sys.executable, "-m", "torchrun_cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    folders = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1, folders  # the pipeline's folder; its step runs are inside
    pipeline = json.loads((folders[0] / "pipeline.json").read_text())
    assert pipeline["status"] == "succeeded"
    steps = pipeline["steps"]
    assert set(steps) == {"prep", "train", "train_b", "evaluate"}
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(steps, "succeeded")
    records = {
        name: json.loads((Path(s["run_dir"]) / "run.json").read_text()) for name, s in steps.items()
    }

    evaluated = records["evaluate"]["outputs"]
    assert evaluated["best"] in ("a", "b"), evaluated
    assert evaluated["test-accuracy"] >= 0.8, evaluated
    trained = [records[n]["outputs"]["test-accuracy"] for n in ("train", "train_b")]
    assert evaluated["test-accuracy"] == max(trained)  # the better of what they published
    assert (Path(records["evaluate"]["model_dir"]) / "best.pkl").is_file()

    def interval(name: str) -> tuple[datetime, datetime]:
        rec = records[name]
        return datetime.fromisoformat(rec["started_at"]), datetime.fromisoformat(rec["ended_at"])

    (a_start, a_end), (b_start, b_end) = interval("train"), interval("train_b")
    assert max(a_start, b_start) < min(a_end, b_end), (interval("train"), interval("train_b"))


def test_the_example_needs_nothing_but_the_standard_library() -> None:
    """A fresh machine runs it with no install: its scripts import the standard library and
    each other only."""
    local = {p.stem for p in EXAMPLE.glob("*.py")}
    for path in EXAMPLE.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {
            n.module
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and not n.level
        }
        outside = {
            m
            for m in names
            if m.split(".")[0] not in sys.stdlib_module_names | local | {"__future__"}
        }
        assert not outside, (path.name, outside)
