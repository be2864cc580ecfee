"""`run --detach` on this machine: TI's and SageMaker's `fit(wait=False)` then attach. The
run goes on in a session of its own; `logs -f`, `show` and `cancel` find it by id or name."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers import TORCHJOB, Env, alive, gone_within, torchjob, wait_until, write

JOB = """
import os, pathlib, sys, time
print("session", os.getsid(0), "pid", os.getpid(), flush=True)
gate = pathlib.Path(sys.argv[1])
while not gate.exists():  # the test opens the gate once it has attached
    time.sleep(0.02)
print("done", flush=True)
sys.exit(3)
"""


def _record(iso: Env, run_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((iso.runs / run_id / "run.json").read_text())
    return data


def test_detach_returns_at_once_and_logs_f_attaches(project: Path, iso: Env) -> None:
    write(project / "job.py", JOB)
    gate = iso.tmp / "gate"
    spec = write(project / "job.yaml", "name: trainer\nscript: job.py\n")
    res = torchjob("run", "--detach", str(spec), "--", str(gate))
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.decode().strip()
    assert (iso.runs / run_id / "run.json").is_file()
    assert b"started run" in res.stderr and b"in the background" in res.stderr
    log = iso.runs / run_id / "stdout.log"
    line = wait_until(lambda: log.read_text().splitlines()[:1], 60, "the job to start")[0]
    assert int(line.split()[1]) != os.getsid(0)  # not in this terminal's session
    assert json.loads(torchjob("show", run_id, "--json").stdout)["status"] == "running"
    follow = subprocess.Popen(
        [*TORCHJOB, "logs", "-f", "trainer"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    gate.touch()
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 3  # the run's exit status, as gh run watch --exit-status
    assert out.endswith(b"done\n") and b"failed" in err
    assert _record(iso, run_id)["exit_code"] == 3


def test_cancel_stops_a_detached_run(project: Path, iso: Env) -> None:
    write(project / "job.py", JOB)
    res = torchjob("run", "--detach", "-s", "job.py", "-p", str(project), "--", "/no/gate")
    run_id = res.stdout.decode().strip()
    log = iso.runs / run_id / "stdout.log"
    line = wait_until(lambda: log.read_text().splitlines()[:1], 60, "the job to start")[0]
    job_pid = int(line.split()[3])
    assert alive(job_pid)
    res = torchjob("cancel", run_id)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: _record(iso, run_id)["status"] == "cancelled", 60, "the run to end")
    assert _record(iso, run_id)["exit_code"] == 143
    assert gone_within([job_pid], 5)
