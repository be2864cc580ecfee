"""Metrics with real runs: from `$TORCHJOB_METRICS` and (opt-in) from stdout, their last values
in outputs, last/min/max in `show`, `runs --sort`, `compare` (table, JSON, CSV, Markdown),
`diff`, and `plot` in the terminal (the curve's shape read back from the text) and to a file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Env, torchjob, write

# Loss falls as 1/(1 + step*lr) through the metrics file; accuracy rises in the stdout (a
# fraction, `right: 3/6`, is not a metric).
JOB = """
import json, os, sys
lr = float(sys.argv[1])
with open(os.environ["TORCHJOB_METRICS"], "a") as fh:
    for step in range(6):
        fh.write(json.dumps({"step": step, "loss": 1.0 / (1 + step * lr)}) + "\\n")
        print(f"epoch {step}: step={step} acc={0.5 + step * lr / 20:.4f} right: {step}/6")
"""


def _runs(project: Path, *lrs: str, flags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    write(project / "train.py", JOB)
    for lr in lrs:
        res = torchjob("run", "-q", "-s", "train.py", *flags, "-P", f"lr={lr}", cwd=project)
        assert res.returncode == 0, res.stderr
    listed: list[dict[str, Any]] = json.loads(torchjob("runs", "--json").stdout)
    return listed


def test_metrics_reach_outputs_show_and_sorting(project: Path, iso: Env) -> None:
    write(project / "train.py", JOB.replace("float(sys.argv[1])", "float(sys.argv[2])"))
    for lr in ("0.1", "0.5", "1.0"):
        res = torchjob(
            "run", "-q", "-s", "train.py", "--metrics-from-output", "-P", f"lr={lr}", cwd=project
        )
        assert res.returncode == 0, res.stderr
    listed: list[dict[str, Any]] = json.loads(torchjob("runs", "--json").stdout)
    newest = listed[0]
    assert newest["outputs"] == {"loss": pytest.approx(1 / 6), "acc": pytest.approx(0.75)}
    shown = torchjob("show").stdout.decode()
    assert "metric loss" in shown and "min 0.1667, max 1 (6 points)" in shown
    assert "metric acc" in shown and "last 0.75, min 0.5, max 0.75 (6 points)" in shown
    table = torchjob("runs", "--columns", "acc", "--sort", "-acc").stdout.decode().splitlines()
    assert [line.split()[-1] for line in table[1:]] == ["0.75", "0.625", "0.525"]
    table = torchjob("runs", "--columns", "acc", "--sort", "acc").stdout.decode().splitlines()
    assert [line.split()[-1] for line in table[1:]] == ["0.525", "0.625", "0.75"]


def test_without_from_output_stdout_is_not_read(project: Path, iso: Env) -> None:
    write(project / "train.py", JOB.replace("float(sys.argv[1])", "float(sys.argv[2])"))
    assert torchjob("run", "-q", "-s", "train.py", "-P", "lr=0.5", cwd=project).returncode == 0
    rec = json.loads(torchjob("show", "--json").stdout)
    assert set(rec["outputs"]) == {"loss"}


def test_compare_marks_the_params_that_differ_in_every_format(project: Path, iso: Env) -> None:
    write(project / "train.py", JOB.replace("float(sys.argv[1])", "float(sys.argv[4])"))
    for lr in ("0.1", "0.5"):
        res = torchjob(
            "run", "-q", "-s", "train.py", "-P", "batch=32", "-P", f"lr={lr}", cwd=project
        )
        assert res.returncode == 0, res.stderr
    table = torchjob("compare", "train").stdout.decode().splitlines()
    assert table[0].split() == ["RUN", "NAME", "STATUS", "batch", "lr*", "loss"]
    assert [row.split()[4] for row in table[1:]] == ["0.5", "0.1"]
    data = json.loads(torchjob("compare", "last", "last~1", "--json").stdout)
    assert [d["params"]["lr"] for d in data] == ["0.5", "0.1"]
    rows = list(csv.reader(io.StringIO(torchjob("compare", "train", "--csv").stdout.decode())))
    assert rows[0] == ["RUN", "NAME", "STATUS", "batch", "lr", "loss"] and len(rows) == 3
    md = torchjob("compare", "train", "--md").stdout.decode().splitlines()
    assert md[0] == "| RUN | NAME | STATUS | batch | **lr** | loss |" and md[1].count("---") == 6
    assert "| **0.5** |" in md[2] and "| 32 |" in md[2]
    diff = torchjob("diff", "last", "last~1").stdout.decode()
    assert "* param lr" in diff and "  param batch" in diff and "* output loss" in diff
    marked = torchjob("diff", "last", "last~1", "--md").stdout.decode()
    assert (
        "| **param lr** | **0.5** | **0.1** |" in marked and "| param batch | 32 | 32 |" in marked
    )


def _column_of(lines: list[str], marker: str) -> list[tuple[int, int]]:
    """(row, first column) of each canvas row holding the marker, legend box left out."""
    out = []
    for row, line in enumerate(lines):
        canvas = line.split("│")[-2] if line.count("│") >= 2 else ""
        canvas = canvas.split("│")[-1]
        if marker in canvas and "m " not in canvas:
            out.append((row, canvas.index(marker)))
    return out


def test_plot_draws_the_falling_loss_in_text_and_to_a_file(project: Path, iso: Env) -> None:
    write(project / "train.py", JOB.replace("float(sys.argv[1])", "float(sys.argv[2])"))
    for lr in ("0.2", "2.0"):
        assert (
            torchjob("run", "-q", "-s", "train.py", "-P", f"lr={lr}", cwd=project).returncode == 0
        )
    res = torchjob("plot", "last", "loss", "--vs", "last~1", "--width", "70", "--height", "16")
    assert res.returncode == 0, res.stderr
    text = res.stdout.decode()
    assert "\x1b[" not in text and "loss" in text.splitlines()[0]
    points = _column_of(text.splitlines(), "•")  # the newest run's curve
    assert len(points) >= 3
    columns = [col for _, col in sorted(points)]  # top to bottom: a falling curve runs right
    assert columns == sorted(columns) and columns[0] < columns[-1]
    out = iso.tmp / "loss.svg"
    res = torchjob("plot", "last", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()
    res = torchjob("plot", "last", "nope")
    assert (
        res.returncode == 2 and b"no metric nope" in res.stderr and b"they have loss" in res.stderr
    )


def test_odd_metric_lines_are_skipped_not_fatal(project: Path, iso: Env) -> None:
    """A number too large for a float, a pattern whose value group matches text, and a progress
    bar's \\r-joined updates (one 200 KB line): the run still succeeds, the points that are
    numbers count, and show, plot and compare work."""
    write(
        project / "odd.py",
        "import json, os, sys\n"
        "with open(os.environ['TORCHJOB_METRICS'], 'a') as fh:\n"
        "    fh.write(json.dumps({'step': 0, 'huge': 10 ** 400, 'loss': 0.0}) + '\\n')\n"
        "bar = (f'\\r{i}% loss={1 / (i + 1):.4f} rate: fast' for i in range(5000))\n"
        "sys.stdout.write(''.join(bar))\n"
        "print()\n",
    )
    res = torchjob("run", "-q", "-s", "odd.py", "--metrics-from-output", cwd=project)
    assert res.returncode == 0, res.stderr
    rec = json.loads(torchjob("show", "--json").stdout)
    assert rec["status"] == "succeeded" and rec["outputs"]["loss"] == pytest.approx(
        1 / 5000, abs=1e-4
    )
    assert "huge" not in rec["outputs"] and "rate" not in rec["outputs"]
    custom = torchjob("run", "-q", "-s", "odd.py", "--metrics-from-output", cwd=project)
    assert custom.returncode == 0
    assert torchjob("plot", "--width", "60").returncode == 0
    bad = torchjob("plot", "-o", str(iso.tmp / "no" / "such" / "x.png"))
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
