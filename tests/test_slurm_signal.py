"""`backend.signal` (--signal USR1@50) on the real one-node Slurm of tests/slurm.py: Slurm itself
sends the signal before the job's time limit, it reaches the job's process (the command runs as
a job step), and a job that checkpoints and exits on it ends succeeded, before the limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import Env, torchjob, write

JOB = """
import signal, sys, time
def checkpoint(signum, frame):
    print("got", signal.Signals(signum).name, "- checkpointing", flush=True)
    sys.exit(0)
signal.signal(signal.SIGUSR1, checkpoint)
print("training", flush=True)
while True:
    time.sleep(0.1)
"""


def test_slurm_signals_the_job_before_its_time_limit(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "train.py", JOB)
    spec = write(
        project / "job.yaml",
        f"script: train.py\ntimeout: 1m\nbackend: {{type: slurm, partition: {slurm.partition}}}\n",
    )
    res = torchjob("run", str(spec), "--signal", "USR1@50", env=slurm.env, timeout=180)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().splitlines() == ["training", "got SIGUSR1 - checkpointing"]
    rec = json.loads(torchjob("show", "last", "--json", env=slurm.env).stdout)
    assert rec["status"] == "succeeded" and rec["spec"]["backend"]["signal"] == "USR1@50"
    script = Path(rec["backend"]["script"]).read_text()
    assert "#SBATCH --signal=USR1@50" in script and "#SBATCH --time=0-00:01:00" in script
    bad = torchjob("run", str(spec), "--signal", "USR1 at 50", "--dry-run")
    assert bad.returncode == 2 and b"--signal: bad value 'USR1 at 50'" in bad.stderr


REQUEUED = """
import os, pathlib, sys, time
mark = pathlib.Path(sys.argv[1])
if mark.exists():
    print("second run: restart", os.environ.get("SLURM_RESTART_COUNT"), flush=True)
    sys.exit(0)
mark.touch()
print("first run: hangs until the time limit", flush=True)
while True:
    time.sleep(0.1)
"""


def test_a_timed_out_job_is_requeued_within_retries(project: Path, iso: Env, slurm: Any) -> None:
    """The first run outlives its 1-minute limit (Slurm ends it TIMEOUT); torchjob requeues the
    same job id (retries.count bounds it), the second run succeeds, run.json shows the requeue
    and stdout.log holds both runs' output."""
    write(project / "train.py", REQUEUED)
    spec = write(
        project / "job.yaml",
        f"script: train.py\ntimeout: 1m\nretries: 1\nargs: ['{iso.tmp / 'mark'}']\n"
        f"backend: {{type: slurm, partition: {slurm.partition}, requeue: true}}\n",
    )
    res = torchjob("run", str(spec), env=slurm.env, timeout=400)
    assert res.returncode == 0, res.stderr
    rec = json.loads(torchjob("show", "last", "--json", env=slurm.env).stdout)
    assert rec["status"] == "succeeded"
    assert [r["after"] for r in rec["backend"]["requeues"]] == ["TIMEOUT"]
    log = (Path(rec["backend"]["script"]).parent / "stdout.log").read_text()
    assert "first run: hangs" in log and "second run: restart 1" in log
    assert "#SBATCH --requeue" in Path(rec["backend"]["script"]).read_text()
