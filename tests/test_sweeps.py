"""Sweeps with real runs: a 2x2 grid at most 2 at once (the trials' intervals overlap, never
3), ranked by a metric the trials write, the best named; partial failure exits 3; --resume
runs only what did not succeed; random draws repeat with their seed; bad `sweep:` keys are
exit 2 with file:line; Ctrl-C at a real terminal stops every trial."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers import Env, gone_within, torchjob, wait_until, write
from tests.terminal import Terminal

# Takes the next free start-N file; with --pair 1, trials N and N+1 (N odd) wait for each other
# (bounded), so two of them are surely running at once; then reports accuracy = lr * batch.
TRIAL = """
import argparse, json, os, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float); p.add_argument("--batch", type=int)
p.add_argument("--gate"); p.add_argument("--pair", type=int, default=1)
a = p.parse_args()
gate, n = pathlib.Path(a.gate), 1
while True:
    try:
        os.close(os.open(gate / f"start-{n}", os.O_CREAT | os.O_EXCL)); break
    except FileExistsError:
        n += 1
deadline = time.monotonic() + 30
while a.pair and len(list(gate.glob("start-*"))) < n + n % 2 and time.monotonic() < deadline:
    time.sleep(0.01)
with open(os.environ["TORCHJOB_METRICS"], "a") as f:
    f.write(json.dumps({"step": 1, "accuracy": a.lr * a.batch}) + "\\n")
if a.lr * a.batch > 1000:
    raise SystemExit(7)
"""


def _sweep(iso: Env) -> dict[str, Any]:
    found = [json.loads(p.read_text()) for p in iso.runs.glob("*/pipeline.json")]
    newest: dict[str, Any] = max(found, key=lambda r: r["started_at"])
    return newest


def _most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most runs whose [started_at, ended_at] intervals overlap at one moment."""
    edges = sorted(
        [(r["started_at"], 1) for r in runs] + [(r["ended_at"], -1) for r in runs],
        key=lambda e: (datetime.fromisoformat(e[0]), e[1]),
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_a_grid_runs_two_at_once_and_names_the_best(project: Path, iso: Env) -> None:
    gate = iso.tmp / "gate"
    gate.mkdir()
    write(project / "trial.py", TRIAL)
    spec = write(
        project / "job.yaml",
        f"name: tune\nscript: trial.py\nparams: {{gate: '{gate}'}}\n"
        "sweep:\n  max_parallel: 2\n  objective: {metric: accuracy, mode: max}\n",
    )
    res = torchjob("run", str(spec), "--sweep", "-P", "lr=0.1,0.2", "-P", "batch=32,64")
    out, err = res.stdout.decode(), res.stderr.decode()
    assert res.returncode == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:4] == ["TRIAL", "lr", "batch", "accuracy"]
    assert [r[3] for r in rows[1:]] == ["12.8", "6.4", "6.4", "3.2"]  # best first
    assert rows[1][1:3] == ["0.2", "64"]
    rec = _sweep(iso)
    best = rec["outputs"]["best_trial"]
    assert rec["sweep"]["trials"][best] == {"lr": "0.2", "batch": "64"}
    assert f"best trial {best}: accuracy 12.8" in err
    trials = json.loads(torchjob("show", rec["id"], "--json").stdout)["steps"]
    assert {s["status"] for s in trials.values()} == {"succeeded"} and len(trials) == 4
    runs = [json.loads(Path(s["run_dir"], "run.json").read_text()) for s in trials.values()]
    assert _most_at_once(runs) == 2
    assert {r["pipeline"]["id"] for r in runs} == {rec["id"]}  # each trial tagged with the sweep
    assert {r["environment"]["key"] for r in runs} == {runs[0]["environment"]["key"]}
    one = runs[0]["id"]
    assert json.loads(torchjob("show", one[-4:], "--json").stdout)["id"] == one  # by its end
    compared = torchjob("compare", rec["id"], "--csv").stdout.decode().splitlines()
    assert len(compared) == 5 and "lr" in compared[0] and "accuracy" in compared[0]


def test_partial_failure_exits_3_and_resume_runs_only_what_failed(project: Path, iso: Env) -> None:
    gate = iso.tmp / "gate"
    gate.mkdir()
    write(project / "trial.py", TRIAL)
    spec = write(
        project / "job.yaml",
        f"name: tune\nscript: trial.py\nparams: {{gate: '{gate}', pair: 0}}\n"
        "sweep:\n  grid: {lr: [1, 100], batch: [2, 20]}\n  max_parallel: 1\n"
        "  objective: {metric: accuracy, mode: min}\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 3, res.stderr
    first = _sweep(iso)
    states = {n: s["status"] for n, s in first["steps"].items()}
    assert sorted(states.values()) == ["failed", "succeeded", "succeeded", "succeeded"]
    assert res.stdout.decode().splitlines()[1].split()[3] == "2"  # mode min: the smallest first
    assert "failed" in res.stdout.decode().splitlines()[-1]  # failed trials last
    # the trial that failed now succeeds; --resume reruns it alone
    write(project / "trial.py", TRIAL.replace("> 1000", "> 10**9"))
    for started in gate.iterdir():
        started.unlink()
    again = torchjob("run", str(spec), "--resume")
    assert again.returncode == 0, again.stderr
    assert [p.name for p in gate.iterdir()] == ["start-1"]  # one trial ran
    second = _sweep(iso)
    assert second["resumed_from"] == first["id"]
    assert {s["status"] for s in second["steps"].values()} == {"succeeded"}
    kept = torchjob("runs", "prune", "--status", "failed")  # the first is failed, but reused
    assert kept.returncode == 0 and first["id"] not in kept.stdout.decode()
    assert (iso.runs / first["id"]).is_dir() and torchjob("compare", second["id"]).returncode == 0
    # every trial failing: the first failed trial's status
    write(project / "trial.py", TRIAL.replace("> 1000", "> 0"))
    res = torchjob("run", str(spec))
    assert res.returncode == 7, res.stderr


def test_random_draws_repeat_with_their_seed_and_bad_keys_say_where(
    project: Path, iso: Env
) -> None:
    write(project / "trial.py", "print('x')\n")
    spec = write(
        project / "job.yaml",
        "script: trial.py\nsweep:\n  random: {lr: 'loguniform(1e-4, 1e-1)', n: 'randint(1, 8)'}\n"
        "  trials: 5\n  seed: 3\n",
    )
    first = torchjob("run", str(spec), "--dry-run")
    assert first.returncode == 0, first.stderr
    rows = [line.split() for line in first.stdout.decode().splitlines()]
    assert rows[0] == ["TRIAL", "lr", "n"] and len(rows) == 6
    assert all(1e-4 <= float(r[1]) <= 1e-1 and 1 <= int(r[2]) <= 8 for r in rows[1:])
    assert torchjob("run", str(spec), "--dry-run").stdout == first.stdout
    assert not iso.runs.exists() or not any(iso.runs.iterdir())  # a dry run runs nothing
    bad = write(
        project / "bad.yaml",
        "script: trial.py\nsweep:\n  grid: {lr: []}\n  random: {x: 'normal(0, 1)'}\n  tries: 3\n",
    )
    res = torchjob("run", str(bad))
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert f"{bad}:3: sweep.grid.lr: needs values" in err
    assert f"{bad}:4: sweep.random.x: not a distribution" in err
    assert f"{bad}:5: sweep.tries: unknown key" in err
    nothing = torchjob("run", "--sweep", "-P", "lr=0.1", str(project / "trial.py"))
    assert nothing.returncode == 2 and b"nothing to vary" in nothing.stderr


def test_ctrl_c_stops_every_trial(project: Path, iso: Env) -> None:
    """At a real terminal: Ctrl-C stops both running trials (each records `cancelled`) and the
    sweep exits 130 with nothing left running."""
    write(
        project / "hang.py",
        "import os, sys, time\nd = sys.argv[sys.argv.index('--dir') + 1]\n"
        "open(f'{d}/{os.getpid()}.pid', 'w').write(str(os.getpid()))\n"
        "while True:\n    time.sleep(0.05)\n",
    )
    spec = write(project / "job.yaml", f"script: hang.py\nparams: {{dir: '{iso.tmp}'}}\n")
    argv = ["run", str(spec), "--sweep", "--max-parallel", "2", "-P", "x=1,2,3"]
    term = Terminal(argv, os.environ)
    term.expect(b"2 running")
    wait_until(lambda: len(list(iso.tmp.glob("*.pid"))) == 2, 60, "two trials to start")
    pids = [int(p.read_text()) for p in iso.tmp.glob("*.pid")]
    term.send(b"\x03")
    assert term.wait() == 128 + signal.SIGINT
    assert gone_within(pids, 10)
    states = sorted(s["status"] for s in _sweep(iso)["steps"].values())
    assert states == ["cancelled", "cancelled", "cancelled"]


def test_booleans_validate_and_a_sweep_with_no_objective(project: Path, iso: Env) -> None:
    """true/false trials as -P gives them (a bare flag, or none); validate checks a sweep; with
    no objective the sweep names no result; a sweep is not one run for diff or rerun."""
    write(project / "say.py", "import sys\nprint(sys.argv[1:])\n")
    spec = write(project / "job.yaml", "script: say.py\nsweep:\n  grid: {fast: [true, false]}\n")
    checked = torchjob("validate", str(spec))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.decode().startswith(f"ok: {spec}: sweep say, 2 trials of say.py")
    res = torchjob("run", str(spec), "--follow-steps")
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stdout.decode().splitlines() if " | " in line]
    assert sorted(said) == ["t1 | ['--fast']", "t2 | []"]
    rec = _sweep(iso)
    assert rec["outputs"] == {} and rec["sweep"]["trials"]["t1"] == {"fast": True}
    for argv in (["diff", rec["id"], "last"], ["rerun", rec["id"]]):
        refused = torchjob(*argv)
        assert refused.returncode == 2 and b"Traceback" not in refused.stderr, refused.stderr
    plain = torchjob("run", "--sweep", "-P", "lr=0.1", str(project / "say.py"))
    assert b"command line: --sweep: nothing to vary" in plain.stderr


def test_trials_have_their_own_outputs_and_odd_sweeps_are_refused(project: Path, iso: Env) -> None:
    """A placed output folder is inside each trial's run (a shared one made every trial read
    the last score); lists, grids and draws that cannot be run are exit 2 with their line."""
    write(
        project / "score.py",
        "import os, pathlib, sys\nout = pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'])\n"
        "(out / 'output_parameters').mkdir(parents=True, exist_ok=True)\n"
        "(out / 'output_parameters' / 'score').write_text(sys.argv[-1])\n",
    )
    spec = write(
        project / "s.yaml",
        "name: sc\nscript: score.py\noutputs: {output_dir: out}\n"
        "sweep:\n  grid: {lr: [0.9, 0.1, 0.2]}\n  max_parallel: 1\n  objective: score\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.decode().splitlines()[1:]]
    assert [(r[1], r[2]) for r in rows] == [("0.9", "0.9"), ("0.2", "0.2"), ("0.1", "0.1")]
    assert not (project / "out").exists()
    cases = [
        ("outputs: {output_dir: /tmp/shared}\nsweep: {grid: {lr: [1, 2]}}", "outputs.output_dir"),
        ("sweep: {grid: {lr: [1, 2]}, random: {x: 'uniform(0, inf)'}}", "sweep.random.x"),
        ("sweep: {grid: {a: [1,2,3,4,5,6,7,8,9,10], b: [1,2,3,4,5,6,7,8,9,10],"
         " c: [1,2,3,4,5,6,7,8,9,10], d: [1,2,3,4,5,6,7,8,9,10], e: [1,2,3,4,5,6,7,8,9,10]}}",
         "100000 trials"),
        ("sweep:\n", ":3: sweep: nothing to vary"),
    ]  # fmt: skip
    for text, said in cases:
        bad = write(project / "bad.yaml", f"name: sc\nscript: score.py\n{text}\n")
        res = torchjob("validate", str(bad))
        assert res.returncode == 2 and said in res.stderr.decode(), (text, res.stderr)
    for flags, said in (
        (["-P", "lr=5"], "-P lr=5: the sweep varies lr"),
        (["-P", "=1,2"], "-P =1,2: not a list of values"),
        (["-P", "x=1,"], "-P x=1,: not a list of values"),
    ):
        res = torchjob("run", str(spec), "--sweep", *flags)
        assert res.returncode == 2 and said in res.stderr.decode(), (flags, res.stderr)
    draws = write(
        project / "d.yaml",
        "script: score.py\nsweep:\n  random: {opt: 'choice(\"adam\", sgd)', fast: 'choice(true)'}\n"
        "  trials: 2\n",
    )
    table = torchjob("run", str(draws), "--dry-run").stdout.decode().split()
    assert '"adam"' not in table and {"adam", "sgd"} & set(table) and "true" in table


def test_resume_reruns_every_trial_when_the_job_changed(project: Path, iso: Env) -> None:
    """A fixed -P (or any other key) that changed since the stopped sweep: its trials ran
    another job, so --resume runs them all again; --resume of another sweep is refused; a
    retention: of the same name leaves the sweep alone."""
    gate = iso.tmp / "gate"
    gate.mkdir()
    write(project / "trial.py", TRIAL)
    spec = write(
        project / "job.yaml",
        f"name: tune\nscript: trial.py\nparams: {{gate: '{gate}', pair: 0, batch: 1}}\n"
        "retention: {keep: 1}\nsweep: {grid: {lr: [1, 2]}, max_parallel: 1}\n",
    )
    assert torchjob("run", str(spec)).returncode == 0
    first = _sweep(iso)
    again = torchjob("run", str(spec), "--resume", "-P", "batch=3")
    assert again.returncode == 0, again.stderr
    second = _sweep(iso)
    assert all(not s.get("reused_from") for s in second["steps"].values())
    assert len(list(gate.glob("start-*"))) == 4  # 2 trials, then both again
    single = write(project / "one.yaml", "name: other\nscript: trial.py\n")
    other = torchjob("run", str(single), "--sweep", "-P", "lr=1,2", "--resume", first["id"])
    assert other.returncode == 2 and b"is not a sweep of other" in other.stderr
    write(project / "plain.py", "print('plain')\n")
    plain = write(project / "plain.yaml", "name: tune\nscript: plain.py\nretention: {keep: 1}\n")
    assert torchjob("run", str(plain)).returncode == 0
    assert (iso.runs / first["id"]).is_dir() and (iso.runs / second["id"]).is_dir()
