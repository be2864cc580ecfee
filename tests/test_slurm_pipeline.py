"""A pipeline handed to the real one-node Slurm of tests/slurm.py with `--detach`: every step is
submitted at once with afterok dependencies and torchjob returns; Slurm orders the steps, a
job fills in the output parameters of the steps before it as it starts, and a failed step's
downstream jobs are cancelled by Slurm rather than left pending."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.helpers import Env, torchjob, wait_until, write

# Records when it ran (the run records' times are the submission's), and what it was given.
STEP = """
import json, os, pathlib, sys, time
out = pathlib.Path(os.environ["TORCHJOB_OUTPUT_DIR"])
(out / "output_parameters").mkdir(parents=True, exist_ok=True)
start = time.time()
time.sleep(0.3)  # a step that takes a moment, so an early start would overlap its needs
(out / "output_parameters" / "token").write_text(sys.argv[1] + " 'q' $(x)\\n")
(out / "ran.json").write_text(json.dumps(
    {"start": start, "end": time.time(), "argv": sys.argv[1:], "env": os.environ.get("GOT")}))
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def _spec(project: Path, slurm: Any, middle_exit: int = 0) -> Path:
    write(project / "step.py", STEP)
    return write(
        project / "pipeline.yaml",
        f"""name: diamond
defaults:
  script: step.py
  backend: {{type: slurm, partition: {slurm.partition}}}
steps:
  top: {{args: [top]}}
  left:
    needs: [top]
    args: [left]
    env: {{EXIT: "{middle_exit}"}}
  right: {{needs: [top], args: [right, "${{{{ steps.top.output_dir }}}}"]}}
  bottom:
    needs: [left, right]
    args: [bottom, "${{{{ steps.left.outputs.token }}}}"]
    env: {{GOT: "${{{{ steps.right.outputs.token }}}}"}}
""",
    )


def _show(pipeline: str, env: dict[str, str]) -> dict[str, Any]:
    res = torchjob("show", pipeline, "--json", env=env)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def _ran(step: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(step["run_dir"]) / "output" / "ran.json").read_text())
    return data


def test_a_detached_diamond_runs_in_order_with_its_outputs(
    project: Path, iso: Env, slurm: Any
) -> None:
    env = {**os.environ, **slurm.env}
    started = time.monotonic()
    res = torchjob("run", str(_spec(project, slurm)), "--detach", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    pipeline = res.stdout.decode().strip()
    submitted = _show(pipeline, env)
    assert all(s["job_id"] for s in submitted["steps"].values())  # all at once
    assert time.monotonic() - started < 60
    done = wait_until(
        lambda: (d := _show(pipeline, env))["status"] != "running" and d, 240, "the pipeline"
    )
    assert done["status"] == "succeeded" and done["exit_code"] == 0, done
    steps = {name: _ran(step) for name, step in done["steps"].items()}
    assert steps["top"]["end"] <= min(steps["left"]["start"], steps["right"]["start"])
    assert max(steps["left"]["end"], steps["right"]["end"]) <= steps["bottom"]["start"]
    assert steps["bottom"]["argv"] == ["bottom", "left 'q' $(x)"]
    assert steps["bottom"]["env"] == "right 'q' $(x)"
    assert steps["right"]["argv"][1] == str(Path(done["steps"]["top"]["run_dir"]) / "output")
    table = torchjob("runs", env=env).stdout.decode()
    assert pipeline in table and "4 succeeded" in table


def test_a_failed_middle_step_leaves_its_downstream_cancelled_by_slurm(
    project: Path, iso: Env, slurm: Any
) -> None:
    env = {**os.environ, **slurm.env}
    res = torchjob("run", str(_spec(project, slurm, 3)), "--detach", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    pipeline = res.stdout.decode().strip()
    done = wait_until(
        lambda: (d := _show(pipeline, env))["status"] != "running" and d, 240, "the pipeline"
    )
    states = {name: step["status"] for name, step in done["steps"].items()}
    assert states == {
        "top": "succeeded",
        "left": "failed",
        "right": "succeeded",
        "bottom": "cancelled",
    }
    assert done["status"] == "failed" and done["exit_code"] == 3
    assert done["steps"]["bottom"]["job_id"] not in slurm.jobs()  # not pending
