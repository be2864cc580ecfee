"""The Slurm backend against a real one-node Slurm (slurm-wlm + munge) on localhost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import TORCHJOB, Env, torchjob, write

JOB = ("import os, sys, time\n"
       "print('out', os.environ.get('SLURM_JOB_ID'), os.environ['TORCHJOB_RUN_ID'], flush=True)\n"
       "sys.stderr.write('err line\\n')\n"
       "if 'sleep' in sys.argv: time.sleep(600)\n"
       "sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)\n")


def run(slurm: Any, project: Path, *extra: str, timeout: float = 300
        ) -> subprocess.CompletedProcess[bytes]:
    return torchjob("run", "-s", "job.py", "-p", str(project), "--backend", "slurm",
                    "--partition", slurm.partition, *extra, env={**os.environ, **slurm.env},
                    timeout=timeout)


def record(iso: Env) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads((max(iso.run_dirs()) / "run.json").read_text())
    return rec


def test_job_runs_in_slurm_with_its_exit_status(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    res = run(slurm, project, "--", "3")
    assert res.returncode == 3, res.stderr
    rec = record(iso)
    run_dir = iso.runs / rec["id"]
    job_id = rec["backend"]["job_id"]
    assert (rec["status"], rec["exit_code"]) == ("failed", 3)
    # Both streams in stdout.log; across the two streams Slurm's order is not guaranteed.
    assert sorted((run_dir / "stdout.log").read_text().splitlines()) == [
        "err line", f"out {job_id} {rec['id']}"]
    assert (run_dir / "stderr.log").read_text() == "err line\n"
    script = (run_dir / "job.sbatch").read_text()
    assert f"#SBATCH --partition={slurm.partition}" in script
    assert res.stdout.startswith(f"out {job_id}".encode())
    assert b"err line" in res.stderr and b"err line" not in res.stdout  # streams kept apart
    assert run(slurm, project).returncode == 0


def test_two_process_gang_inside_slurm(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", "import os\nprint('rank', os.environ['RANK'], "
                              "'of', os.environ['WORLD_SIZE'], flush=True)\n")
    res = run(slurm, project, "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr
    log = (iso.runs / record(iso)["id"] / "stdout.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log


def test_detach_logs_follow_show_and_cancel(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    env = {**os.environ, **slurm.env}
    res = run(slurm, project, "--detach")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.decode().strip()
    rec = record(iso)
    assert rec["status"] == "running" and rec["backend"]["job_id"] == job_id
    follow = torchjob("logs", "-f", rec["id"], env=env, timeout=300)
    assert follow.returncode == 0, follow.stderr
    # stdout.log holds both streams in the order Slurm wrote them, which is not guaranteed
    assert sorted(follow.stdout.splitlines()) == [b"err line", f"out {job_id} {rec['id']}".encode()]
    shown = json.loads(torchjob("show", rec["id"], "--json", env=env).stdout)
    assert (shown["status"], shown["exit_code"]) == ("succeeded", 0)

    res = run(slurm, project, "--detach", "--", "sleep")
    rec = record(iso)
    deadline = time.monotonic() + 120
    while b"out" not in (iso.runs / rec["id"] / "stdout.log").read_bytes():  # it is running
        assert time.monotonic() < deadline
        time.sleep(0.1)
    res = torchjob("cancel", rec["id"], env=env)
    assert res.returncode == 0 and b"cancelled Slurm job" in res.stdout
    deadline = time.monotonic() + 120
    while json.loads(torchjob("show", rec["id"], "--json", env=env).stdout)["status"] \
            == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert record(iso)["status"] == "cancelled"


def test_ctrl_c_on_a_waiting_torchjob_cancels_the_job(project: Path, iso: Env,
                                                      slurm: Any) -> None:
    write(project / "job.py", JOB)
    proc = subprocess.Popen([*TORCHJOB, "run", "-s", "job.py", "-p", str(project), "--backend",
                             "slurm", "--", "sleep"], env={**os.environ, **slurm.env},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"out ")  # the job runs in Slurm
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    rec = record(iso)
    assert rec["status"] == "cancelled"
    out = subprocess.run(["squeue", "-h", "-j", rec["backend"]["job_id"]], capture_output=True,
                         env={**os.environ, **slurm.env}, text=True, check=False).stdout
    assert "R " not in out


def test_rejected_submission_and_bad_options(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    res = torchjob("run", "-s", "job.py", "-p", str(project), "--backend", "slurm",
                   "--partition", "nosuchpartition", env={**os.environ, **slurm.env})
    assert res.returncode == 125 and b"Slurm refused the job" in res.stderr, res.stderr
    assert b"partition" in res.stderr.lower()
    spec = write(project / "job.yaml", "script: job.py\nbackend:\n  type: slurm\n"
                 "  extra_args: ['--wrap=rm -rf /']\n")
    res = torchjob("run", str(spec))
    assert res.returncode == 2 and b"not allowed" in res.stderr


def test_no_sbatch_is_a_setup_error(project: Path, iso: Env) -> None:
    write(project / "job.py", JOB)
    res = torchjob("run", "-s", "job.py", "-p", str(project), "--backend", "slurm",
                   env={**os.environ, "PATH": "/nonexistent"})
    assert res.returncode == 125 and b"sbatch is not on PATH" in res.stderr


def test_multi_node_script_starts_one_torchrun_per_node(tmp_path: Path) -> None:
    """One node is all this machine has: the multi-node script is checked as text and by
    `bash -n`; the c10d rendezvous sits on the allocation's first node."""
    from torchrun_cli.slurm import batch_script

    argv = ["/env/bin/python", "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--standalone", "--nnodes", "1", "--log-dir", "/r/ranks", "train.py", "--lr", "0.1"]
    script = batch_script(argv, cwd=tmp_path, env={"A": "it's $HOME"}, run_dir=tmp_path,
                          name="big job", backend={"type": "slurm", "nodes": "2",
                                                   "gpus_per_node": "4",
                                                   "extra_args": ["--exclusive"]},
                          timeout=5400, distributed={"nproc_per_node": "2"})
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:4" in script
    assert "#SBATCH --time=0-01:30:00" in script and "#SBATCH --exclusive" in script
    assert "#SBATCH --job-name='big job'" in script
    assert "export A='it'\"'\"'s $HOME'" in script  # quoted: no expansion, no injection
    assert 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    line = next(x for x in script.splitlines() if x.startswith("{ srun "))
    assert "--rdzv-endpoint $head:29500" in line and "--nnodes 2" in line
    assert "--standalone" not in line and "--nnodes 1" not in line
    path = write(tmp_path / "job.sbatch", script)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0


def test_a_detached_job_keeps_its_environment_from_prune(project: Path, iso: Env,
                                                         slurm: Any) -> None:
    """torchjob has exited, the job still runs in the cached environment: the batch script
    holds the environment's lease (flock -s), so prune and rm leave it alone."""
    write(project / "job.py", JOB)
    env = {**os.environ, **slurm.env}
    res = run(slurm, project, "--detach", "--env-manager", "uv", "--", "sleep")
    assert res.returncode == 0, res.stderr
    rec = record(iso)
    assert "flock -s 9" in (iso.runs / rec["id"] / "job.sbatch").read_text()
    deadline = time.monotonic() + 120
    while b"out" not in (iso.runs / rec["id"] / "stdout.log").read_bytes():  # it is running
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pruned = torchjob("env", "prune", "--keep", "0", env=env)
    assert b"kept (in use)" in pruned.stdout, pruned.stdout
    assert torchjob("cancel", rec["id"], env=env).returncode == 0
    deadline = time.monotonic() + 120
    while json.loads(torchjob("show", rec["id"], "--json", env=env).stdout)["status"] \
            == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while b"removed" not in (pruned := torchjob("env", "prune", "--keep", "0", env=env)).stdout:
        assert time.monotonic() < deadline, pruned.stdout  # the job's processes are ending
        time.sleep(0.2)
