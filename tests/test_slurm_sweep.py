"""A sweep handed to the real one-node Slurm of tests/slurm.py with `--detach`: one sbatch, one
job array throttled to max_parallel (Slurm's own ArrayTaskThrottle), each trial an ordinary run
whose record holds its array task's id; the trials' output and metrics reach their runs, and
`show`/`compare` read them once Slurm is done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import Env, torchjob, wait_until, write

TRIAL = """
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
a = p.parse_args()
print("trial lr", a.lr, "token seen", os.environ.get("API_TOKEN") == "s3cr3t-value")
with open(os.environ["TORCHJOB_METRICS"], "a") as f:
    f.write(json.dumps({"step": 1, "accuracy": a.lr * 10}) + "\\n")
raise SystemExit(5 if a.lr > 0.25 else 0)
"""


def _show(ref: str, env: dict[str, str]) -> dict[str, Any]:
    res = torchjob("show", ref, "--json", env=env)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_a_detached_sweep_is_one_job_array(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "trial.py", TRIAL)
    spec = write(
        project / "job.yaml",
        f"name: tune\nscript: trial.py\nbackend: {{type: slurm, partition: {slurm.partition}}}\n"
        "sweep:\n  grid: {lr: [0.1, 0.2, 0.3]}\n  max_parallel: 2\n"
        "  objective: {metric: accuracy}\n",
    )
    env = slurm.env
    res = torchjob(
        "run", str(spec), "--detach", "-E", "API_TOKEN=s3cr3t-value", env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    sweep = res.stdout.decode().strip()
    submitted = _show(sweep, env)
    ids = [s["job_id"] for s in submitted["steps"].values()]
    array = ids[0].partition("_")[0]
    assert ids == [f"{array}_{i}" for i in range(3)]  # one array, a task per trial
    assert f"job array {array}" in res.stderr.decode()
    assert slurm.job(array).get("ArrayTaskThrottle") == "2"
    folder = Path(iso.runs / sweep)
    assert "s3cr3t" not in (folder / "array.sbatch").read_text()
    done = wait_until(
        lambda: (d := _show(sweep, env))["status"] != "running" and d, 240, "the sweep"
    )
    assert (done["status"], done["exit_code"]) == ("failed", 3), done  # some trials failed
    for step in done["steps"].values():
        run = _show(step["run_id"], env)
        wanted = "failed" if float(run["params"]["lr"]) > 0.25 else "succeeded"
        assert run["status"] == wanted and run["backend"]["job_id"] == step["job_id"]
        log = (Path(step["run_dir"]) / "stdout.log").read_text()
        assert f"trial lr {run['params']['lr']} token seen True" in log
        for name in ("run.json", "job.sbatch"):  # the secret went by sbatch's environment
            assert "s3cr3t" not in (Path(step["run_dir"]) / name).read_text()
    table = torchjob("compare", sweep, "--csv", env=env).stdout.decode().splitlines()
    assert len(table) == 4 and "accuracy" in table[0]
    assert sorted(line.split(",")[-1] for line in table[1:]) == ["1", "2", "3"]
