"""The local Slurm cluster of tests/slurm.py, checked with the plain Slurm commands: what the
Slurm backend relies on (sbatch --parsable/--wait, exit codes without accounting, scancel,
srun inside a job, Slurm's own refusal message) works here before torchjob is tested on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers import wait_until

if TYPE_CHECKING:  # the fixture itself comes from conftest.py's pytest_plugins
    from tests.slurm import Slurm


def submit(slurm: Slurm, *args: str, cwd: Path) -> str:
    """`sbatch --parsable ARGS`; the job id (--parsable prints `ID` or `ID;CLUSTER`)."""
    done = slurm.run("sbatch", "--parsable", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    assert job_id.isdigit(), done.stdout
    return job_id


def wait_running(slurm: Slurm, job_id: str, timeout: float = 20) -> dict[str, str]:
    return slurm.wait_job(job_id, timeout, states={"RUNNING"})


def wait_gone(slurm: Slurm, job_id: str, timeout: float = 20) -> None:
    """Until squeue no longer lists the job (not even COMPLETING): its processes have ended."""
    wait_until(lambda: job_id not in slurm.jobs(), timeout, f"job {job_id} to leave squeue")


def processes_of(job_id: str) -> list[int]:
    """Processes whose environment says they belong to the job (SLURM_JOB_ID)."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_cluster_is_configured_as_the_backend_expects(slurm: Slurm) -> None:
    assert "SLURM_CONF" not in os.environ  # the fixture leaves the test process alone
    assert slurm.env["SLURM_CONF"] == str(slurm.conf) and slurm.conf.is_file()
    config = slurm.run("scontrol", "show", "config")
    assert config.returncode == 0, config.stderr
    assert "ClusterName             = torchjob-test" in config.stdout
    assert "AccountingStorageType   = accounting_storage/none" in config.stdout
    assert "MinJobAge               = 300 sec" in config.stdout
    nodes = slurm.run("sinfo", "-h", "-N", "-o", "%N %c %P %T")
    assert nodes.stdout.split() == [slurm.node, str(slurm.cpus), f"{slurm.partition}*", "idle"]


def test_sbatch_wait_runs_a_job_and_its_output_appears(slurm: Slurm, tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text('#!/bin/sh\necho "hello from $SLURM_JOB_ID" > result.txt\n')
    done = slurm.run("sbatch", "--parsable", "--wait", "job.sh", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    # The job ran in the submission folder (its WorkDir) and the files are there on return.
    assert (tmp_path / "result.txt").read_text() == f"hello from {job_id}\n"
    assert (tmp_path / f"slurm-{job_id}.out").read_text() == ""  # default -o, empty here
    info = slurm.job(job_id)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), info


def test_exit_code_without_accounting_comes_from_scontrol(slurm: Slurm, tmp_path: Path) -> None:
    job_id = submit(slurm, "--wrap", "echo failing; exit 3", cwd=tmp_path)
    info = slurm.wait_job(job_id)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "3:0"), info
    assert info["Reason"] == "NonZeroExitCode"
    assert (tmp_path / f"slurm-{job_id}.out").read_text() == "failing\n"
    sacct = slurm.run("sacct", "-j", job_id)  # what a backend must not rely on here
    assert "accounting storage is disabled" in sacct.stdout + sacct.stderr


def test_sbatch_wait_exits_with_the_jobs_exit_code(slurm: Slurm, tmp_path: Path) -> None:
    done = slurm.run("sbatch", "--parsable", "--wait", "--wrap", "exit 3", cwd=tmp_path)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert slurm.job(done.stdout.strip())["ExitCode"] == "3:0"


def wait_output(path: Path, text: str, timeout: float = 20) -> None:
    wait_until(lambda: path.exists() and text in path.read_text(), timeout, f"{text!r} in {path}")


def test_scancel_ends_a_running_job(slurm: Slurm, tmp_path: Path) -> None:
    job_id = submit(slurm, "--wrap", "echo started; exec sleep 300", cwd=tmp_path)
    try:
        # JobState=RUNNING comes with the allocation, before slurmd has started the script:
        # its first output line is the sign that it runs.
        wait_running(slurm, job_id)
        wait_output(tmp_path / f"slurm-{job_id}.out", "started\n")
        assert processes_of(job_id)
    finally:
        done = slurm.run("scancel", job_id)
    assert done.returncode == 0, done.stderr
    info = slurm.wait_job(job_id)
    assert (info["JobState"], info["ExitCode"]) == ("CANCELLED", "0:15"), info
    wait_gone(slurm, job_id)
    assert processes_of(job_id) == []
    out = (tmp_path / f"slurm-{job_id}.out").read_text()
    assert out.startswith("started\n") and f"JOB {job_id} ON {slurm.node} CANCELLED AT" in out


def test_two_one_cpu_jobs_run_at_once(slurm: Slurm, tmp_path: Path) -> None:
    jobs = [submit(slurm, "--wrap", "exec sleep 300", cwd=tmp_path) for _ in range(2)]
    try:
        for job_id in jobs:
            info = wait_running(slurm, job_id)
            assert info["NumCPUs"] == "1" and info["NodeList"] == slurm.node, info
    finally:
        slurm.cancel_all()
    assert [slurm.job(job_id)["JobState"] for job_id in jobs] == ["CANCELLED", "CANCELLED"]


def test_two_task_job_runs_srun_on_both_tasks(slurm: Slurm, tmp_path: Path) -> None:
    job_id = submit(
        slurm, "--ntasks=2", "--output=tasks.txt", "--wrap", "srun -n 2 hostname", cwd=tmp_path
    )
    info = slurm.wait_job(job_id)
    assert (info["JobState"], info["ExitCode"], info["NumTasks"]) == ("COMPLETED", "0:0", "2")
    assert (tmp_path / "tasks.txt").read_text().split() == [slurm.node, slurm.node]


def test_submission_to_a_missing_partition_fails_with_slurms_message(
    slurm: Slurm, tmp_path: Path
) -> None:
    done = slurm.run("sbatch", "--parsable", "--partition=nope", "--wrap", "true", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "invalid partition specified: nope" in done.stderr
    assert "Batch job submission failed: Invalid partition name specified" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_more_nodes_than_the_cluster_has_is_refused_at_submission(
    slurm: Slurm, tmp_path: Path
) -> None:
    # EnforcePartLimits=ALL: without it Slurm accepts the job and it pends forever
    # (Reason=PartitionConfig).
    done = slurm.run("sbatch", "--parsable", "--nodes=2", "--wrap", "true", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert "Batch job submission failed: Node count specification invalid" in done.stderr
