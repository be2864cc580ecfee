"""The Slurm backend against a real one-node Slurm (slurm-wlm + munge) on localhost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TORCHJOB, Env, newest_record, torchjob, wait_until, write

# Each line is one write(2): the two streams reach Slurm's file through separate pipes, so
# print()'s several writes per line could interleave with the other stream inside a line.
JOB = (
    "import os, sys, time\n"
    "os.write(1, f\"out {os.environ.get('SLURM_JOB_ID')} {os.environ['TORCHJOB_RUN_ID']}\\n\""
    ".encode())\n"
    "os.write(2, b'err line\\n')\n"
    "if 'sleep' in sys.argv: time.sleep(600)\n"
    "sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)\n"
)


def run(
    slurm: Any, project: Path, *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    return torchjob(
        "run",
        "-s",
        "job.py",
        "-p",
        str(project),
        "--backend",
        "slurm",
        "--partition",
        slurm.partition,
        *extra,
        env={**os.environ, **slurm.env},
        timeout=timeout,
    )


def job_started(iso: Env, run_id: str) -> bool:
    """Whether the job runs: its first line reached stdout.log."""
    return b"out" in (iso.runs / run_id / "stdout.log").read_bytes()


def run_ended(run_id: str, env: dict[str, str]) -> bool:
    """Whether `torchjob show` no longer says the run is running."""
    status: str = json.loads(torchjob("show", run_id, "--json", env=env).stdout)["status"]
    return status != "running"


def test_job_runs_in_slurm_with_its_exit_status(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    res = run(slurm, project, "--", "3")
    assert res.returncode == 3, res.stderr
    rec = newest_record(iso.runs)
    run_dir = iso.runs / rec["id"]
    job_id = rec["backend"]["job_id"]
    assert (rec["status"], rec["exit_code"]) == ("failed", 3)
    # Both streams in stdout.log; across the two streams Slurm's order is not guaranteed.
    assert sorted((run_dir / "stdout.log").read_text().splitlines()) == [
        "err line",
        f"out {job_id} {rec['id']}",
    ]
    assert (run_dir / "stderr.log").read_text() == "err line\n"
    script = (run_dir / "job.sbatch").read_text()
    assert f"#SBATCH --partition={slurm.partition}" in script
    assert res.stdout.startswith(f"out {job_id}".encode())
    assert b"err line" in res.stderr and b"err line" not in res.stdout  # streams kept apart
    assert run(slurm, project).returncode == 0
    write(project / "tail.py", "import sys\nsys.stderr.write('err tail')\n")
    argv = ["run", "-s", "tail.py", "-p", str(project), "--backend", "slurm"]
    res = torchjob(*argv, "--partition", slurm.partition, env={**os.environ, **slurm.env})
    assert res.returncode == 0  # the status line starts a line of its own, not `err tailtorchjob`
    assert b"err tail\ntorchjob: succeeded in " in res.stderr, res.stderr


def test_two_process_gang_inside_slurm(project: Path, iso: Env, slurm: Any) -> None:
    write(
        project / "job.py",
        "import os\nprint('rank', os.environ['RANK'], "
        "'of', os.environ['WORLD_SIZE'], flush=True)\n",
    )
    res = run(slurm, project, "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr
    log = (iso.runs / newest_record(iso.runs)["id"] / "stdout.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log


def test_detach_logs_follow_show_and_cancel(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    env = {**os.environ, **slurm.env}
    res = run(slurm, project, "--detach")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.decode().strip()
    rec = newest_record(iso.runs)
    assert rec["status"] == "running" and rec["backend"]["job_id"] == job_id
    follow = torchjob("logs", "-f", rec["id"], env=env, timeout=300)
    assert follow.returncode == 0, follow.stderr
    # stdout.log holds both streams in the order Slurm wrote them, which is not guaranteed
    assert sorted(follow.stdout.splitlines()) == [b"err line", f"out {job_id} {rec['id']}".encode()]
    shown = json.loads(torchjob("show", rec["id"], "--json", env=env).stdout)
    assert (shown["status"], shown["exit_code"]) == ("succeeded", 0)

    res = run(slurm, project, "--detach", "--", "sleep")
    rec = newest_record(iso.runs)
    wait_until(partial(job_started, iso, rec["id"]), 120, "the job to run")
    res = torchjob("cancel", rec["id"], env=env)
    assert res.returncode == 0 and b"cancelled Slurm job" in res.stdout
    wait_until(partial(run_ended, rec["id"], env), 120, "the run to end after cancel")
    assert newest_record(iso.runs)["status"] == "cancelled"


def test_ctrl_c_on_a_waiting_torchjob_cancels_the_job(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "job.py", "-p", str(project), "--backend", "slurm", "--", "sleep"],
        env={**os.environ, **slurm.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"out ")  # the job runs in Slurm
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    rec = newest_record(iso.runs)
    assert rec["status"] == "cancelled"
    out = subprocess.run(
        ["squeue", "-h", "-j", rec["backend"]["job_id"]],
        capture_output=True,
        env={**os.environ, **slurm.env},
        text=True,
        check=False,
    ).stdout
    assert "R " not in out


def test_rejected_submission_and_bad_options(project: Path, iso: Env, slurm: Any) -> None:
    write(project / "job.py", JOB)
    res = torchjob(
        "run",
        "-s",
        "job.py",
        "-p",
        str(project),
        "--backend",
        "slurm",
        "--partition",
        "nosuchpartition",
        env={**os.environ, **slurm.env},
    )
    assert res.returncode == 125 and b"Slurm refused the job" in res.stderr, res.stderr
    assert b"partition" in res.stderr.lower()
    spec = write(
        project / "job.yaml",
        "script: job.py\nbackend:\n  type: slurm\n  extra_args: ['--wrap=rm -rf /']\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 2 and b"not allowed" in res.stderr


def test_no_sbatch_is_a_setup_error(project: Path, iso: Env) -> None:
    write(project / "job.py", JOB)
    res = torchjob(
        "run",
        "-s",
        "job.py",
        "-p",
        str(project),
        "--backend",
        "slurm",
        env={**os.environ, "PATH": "/nonexistent"},
    )
    assert res.returncode == 125 and b"sbatch is not on PATH" in res.stderr


def test_multi_node_script_starts_one_torchrun_per_node(tmp_path: Path) -> None:
    """One node is all this machine has, so the multi-node script runs with stand-ins for
    `srun` and `scontrol` on PATH: srun records the argv and the rendezvous variables it got.
    The script's own arguments arrive word for word ($(...) is not run, its --nnodes kept)."""
    from torchrun_cli.launch.sbatch import batch_script
    from torchrun_cli.launch.torchrun import torchrun_args
    from torchrun_cli.record import RunDir
    from torchrun_cli.spec.model import BackendSpec, DistributedSpec

    pwned = tmp_path / "PWNED"
    dist = DistributedSpec(nproc_per_node="2")
    argv = [
        "/env/bin/python",
        *torchrun_args(dist, 0, Path("/r/ranks"), slurm_nodes=2),
        "train.py",
        "--msg",
        f"$(touch {pwned})",
        "--nnodes",
        "4",
    ]
    script = batch_script(
        argv,
        cwd=tmp_path,
        env={"A": "it's $HOME"},
        run=RunDir(tmp_path),
        name="big job",
        backend=BackendSpec(nodes="2", gpus_per_node="4", extra_args=("--exclusive",)),
        timeout=5400,
        distributed=dist,
    )
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:4" in script
    assert "#SBATCH --time=0-01:30:00" in script and "#SBATCH --exclusive" in script
    assert "#SBATCH --job-name='big job'" in script
    assert "export A='it'\"'\"'s $HOME'" in script  # quoted: no expansion, no injection
    assert "--standalone" not in script and "--rdzv" not in script
    path = write(tmp_path / "job.sbatch", script)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
    stubs = tmp_path / "stubs"
    seen = tmp_path / "srun.json"
    write(
        stubs / "srun",
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': {{k: v for k, v in os.environ.items() "
        f"if k.startswith('PET_')}}}}, open({str(seen)!r}, 'w'))\n",
    ).chmod(0o755)
    write(stubs / "scontrol", "#!/bin/sh\necho node7\necho node8\n").chmod(0o755)
    done = subprocess.run(
        ["bash", str(path)],
        capture_output=True,
        check=False,
        env={
            **os.environ,
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "node[7-8]",
        },
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(seen.read_text())
    assert got["argv"] == ["--kill-on-bad-exit=1", *argv]
    assert got["env"] == {
        "PET_NNODES": "2",
        "PET_RDZV_BACKEND": "c10d",
        "PET_RDZV_ID": "4242",
        "PET_RDZV_ENDPOINT": "node7:24242",
    }
    assert not pwned.exists()


def test_a_detached_job_keeps_its_environment_from_prune(
    project: Path, iso: Env, slurm: Any
) -> None:
    """torchjob has exited, the job still runs in the cached environment: the batch script
    holds the environment's lease (flock -s), so prune and rm leave it alone."""
    write(project / "job.py", JOB)
    env = {**os.environ, **slurm.env}
    res = run(slurm, project, "--detach", "--env-manager", "uv", "--", "sleep")
    assert res.returncode == 0, res.stderr
    rec = newest_record(iso.runs)
    assert "flock -s 9" in (iso.runs / rec["id"] / "job.sbatch").read_text()
    wait_until(partial(job_started, iso, rec["id"]), 120, "the job to run")
    pruned = torchjob("env", "prune", "--keep", "0", env=env)
    assert b"kept (in use)" in pruned.stdout, pruned.stdout
    assert torchjob("cancel", rec["id"], env=env).returncode == 0
    wait_until(partial(run_ended, rec["id"], env), 120, "the run to end after cancel")
    outputs: list[bytes] = []

    def removed() -> bool:  # once the job's processes have ended
        outputs.append(torchjob("env", "prune", "--keep", "0", env=env).stdout)
        return b"removed" in outputs[-1]

    wait_until(removed, 60, lambda: f"prune to remove the environment: {outputs[-1]!r}")


@pytest.mark.parametrize(
    ("state", "code", "sig", "status", "exit_code"),
    [
        ("COMPLETED", 0, 0, "succeeded", 0),
        ("FAILED", 3, 0, "failed", 3),
        ("FAILED", 0, 0, "failed", 1),  # Slurm said failed: never a 0 for cron
        ("PREEMPTED", 0, 0, "failed", 1),
        ("DEADLINE", 0, 0, "failed", 1),
        ("OUT_OF_MEMORY", 0, 0, "failed", 137),  # the job ran: not a setup error
        ("CANCELLED", 0, 0, "cancelled", 143),  # scancel's SIGTERM
        ("BOOT_FAIL", 0, 0, "setup_error", 125),
    ],
)
def test_slurm_end_states_map_to_the_exit_table(
    state: str, code: int, sig: int, status: str, exit_code: int
) -> None:
    from torchrun_cli.launch.slurm import JobState, conclude

    end = conclude(JobState(state, code, sig, ""), None)
    assert (end.status.value, end.exit_code) == (status, exit_code)


def test_a_controller_that_does_not_answer_is_not_a_finished_job(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Stand-ins for scontrol and sacct on PATH (the real controller cannot be made to fail
    on cue here): 'Unable to contact' means unknown, 'Invalid job id' means forgotten."""
    from torchrun_cli.launch.slurm import SlurmUnavailable, query
    from torchrun_cli.record import RunDir

    stubs = tmp_path / "stubs"
    for name in ("scontrol", "sacct"):
        write(stubs / name, '#!/bin/sh\necho "$STUB_SAYS" >&2\nexit 1\n').chmod(0o755)
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    monkeypatch.setenv("STUB_SAYS", "slurm_load_jobs error: Unable to contact slurm controller")
    with pytest.raises(SlurmUnavailable):
        query("17", RunDir(tmp_path))
    monkeypatch.setenv("STUB_SAYS", "slurm_load_jobs error: Invalid job id specified")
    assert query("17", RunDir(tmp_path)) is None
    write(tmp_path / "slurm-exit-code", "3\n")  # what the batch script leaves at its end
    state = query("17", RunDir(tmp_path))
    assert state is not None and (state.state, state.exit_code) == ("FAILED", 3)


def test_secrets_reach_the_job_but_not_the_batch_script(
    project: Path, iso: Env, slurm: Any
) -> None:
    """job.sbatch is kept by Slurm (and shown by sacct --batch-script): secret variables, and
    variables holding a secret parameter, go through sbatch's environment instead."""
    write(
        project / "job.py",
        "import json, os, sys\n"
        "print(os.environ['HF_TOKEN'], json.loads(os.environ['TORCHJOB_PARAMS'])['api_key'])\n",
    )
    res = run(slurm, project, "-E", "HF_TOKEN=hf_tokvalue123", "-P", "api_key=paramsecret99")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"hf_tokvalue123 paramsecret99\n"
    script = (iso.runs / newest_record(iso.runs)["id"] / "job.sbatch").read_text()
    assert "hf_tokvalue123" not in script and "HF_TOKEN?" in script
    assert "paramsecret99" not in script  # neither in TORCHJOB_PARAMS nor on the command line
    assert "TORCHJOB_PARAMS?" in script and '"${TORCHJOB_ARG_' in script


@pytest.mark.parametrize("sig", [32, 33])
def test_signals_python_has_no_name_for_do_not_crash_the_ending(sig: int) -> None:
    """glibc's real-time signals 32 and 33 have no signal.Signals member: a job killed by one
    used to crash torchjob while it wrote the end."""
    from torchrun_cli.launch.slurm import JobState, conclude

    end = conclude(JobState("FAILED", 0, sig, ""), None)
    assert (end.status.value, end.exit_code) == ("failed", 128 + sig)
    assert end.signal == f"signal {sig}"
    assert conclude(JobState("RUNNING", None, None, ""), sig).exit_code == 128 + sig


def test_sigterm_during_sbatch_records_and_cancels_the_job(
    project: Path, iso: Env, slurm: Any
) -> None:
    """A SIGTERM that came while sbatch ran used to kill torchjob outright: the record stayed
    `running` and the job id was lost while the job ran on. sbatch is held at a gate by a
    wrapper in front of the real one (the real sbatch answers too fast to signal in time)."""
    write(project / "job.py", JOB)
    gate, started = iso.tmp / "gate", iso.tmp / "sbatch-started"
    os.mkfifo(gate)
    real = subprocess.run(
        ["which", "sbatch"], env=slurm.env, capture_output=True, text=True, check=True
    ).stdout.strip()
    wrapper = write(
        iso.tmp / "bin" / "sbatch",
        f'#!/bin/sh\ntouch {started}\nread x < {gate}\nexec {real} "$@"\n',
    )
    wrapper.chmod(0o755)
    env = {**slurm.env, "PATH": f"{wrapper.parent}:{slurm.env['PATH']}"}
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "job.py", "-p", str(project), "--backend", "slurm", "--", "sleep"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: started.exists() or proc.poll() is not None, 60, "sbatch to start")
    proc.send_signal(signal.SIGTERM)
    with open(gate, "w") as fh:  # let sbatch go on: it submits, then torchjob cancels
        fh.write("go\n")
    assert proc.wait(timeout=120) == 143, proc.stderr.read() if proc.stderr else b""
    rec = newest_record(iso.runs)
    assert rec["status"] == "cancelled" and rec["exit_code"] == 143
    job_id = rec["backend"]["job_id"]
    assert job_id.isdigit()
    wait_until(
        lambda: slurm.job(job_id).get("JobState", "CANCELLED") == "CANCELLED",
        60,
        lambda: f"job {job_id} to be cancelled: {slurm.job(job_id)}",
    )
