"""torchrun gangs through torchjob: real torch.distributed.run, 2 processes, gloo on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TORCHJOB, Env, alive, gone_within, torchjob, write

DDP = """
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
print(f"rank {dist.get_rank()} world {dist.get_world_size()} sum {t.item()} pid {os.getpid()}",
      flush=True)
if "fail" in sys.argv and dist.get_rank() == 1:
    1 / 0
if "libfail" in sys.argv and dist.get_rank() == 1:
    torch.nn.Module().register_buffer(1, None)  # raised inside torch's own Python code
if "wait" in sys.argv:
    time.sleep(600)
dist.destroy_process_group()
"""

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch is not installed in the test environment",
)


def test_two_process_gang_all_reduces(project: Path, iso: Env) -> None:
    write(project / "ddp.py", DDP)
    res = torchjob("run", "-s", "ddp.py", "-p", str(project), "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir, rec = iso.only_run()
    log = (run_dir / "stdout.log").read_text()
    assert "[default0]:rank 0 world 2 sum 3.0" in log and "[default1]:rank 1 world 2" in log
    assert rec["distributed"]["world_size"] == 2 and rec["distributed"]["restarts"] == 0
    assert rec["argv"][1:5] == ["-m", "torch.distributed.run", "--nproc-per-node", "2"]
    assert "--standalone" in rec["argv"]
    assert len(list((run_dir / "ranks").glob("*/attempt_0/*/stdout.log"))) == 2
    assert rec["spec"]["grace"] == 45.0


def test_failing_rank_is_named_with_its_exception(project: Path, iso: Env) -> None:
    write(project / "ddp.py", DDP)
    res = torchjob("run", "-s", "ddp.py", "-p", str(project), "--nproc-per-node", "2", "--", "fail")
    assert res.returncode == 1
    _, rec = iso.only_run()
    line = next(i for i, s in enumerate(DDP.splitlines(), 1) if "1 / 0" in s)
    assert rec["error"] == f"rank 1 failed: ZeroDivisionError: division by zero at ddp.py:{line}"
    assert rec["distributed"]["ranks"]["1"] != 0  # 1, or -6 when gloo aborts on the way out
    assert rec["error"].encode() in res.stderr


def test_a_failure_inside_a_library_names_its_message_and_package_path(
    project: Path, iso: Env
) -> None:
    """The summary used to give the innermost frame's basename and drop the message
    (`rank 0 failed: AttributeError at __init__.py:689`)."""
    write(project / "ddp.py", DDP)
    res = torchjob(
        "run", "-s", "ddp.py", "-p", str(project), "--nproc-per-node", "2", "--", "libfail"
    )
    assert res.returncode == 1
    _, rec = iso.only_run()
    error = rec["error"]
    assert error.startswith("rank 1 failed: TypeError: buffer name should be a string"), error
    where = error.rsplit(" at ", 1)[1]
    assert where.startswith("torch/nn/modules/module.py:") and where.split(":")[1].isdigit()


def test_sigterm_leaves_no_worker(project: Path, iso: Env) -> None:
    write(project / "ddp.py", DDP)
    proc = subprocess.Popen(
        [
            *TORCHJOB,
            "run",
            "-s",
            "ddp.py",
            "-p",
            str(project),
            "--nproc-per-node",
            "2",
            "--",
            "wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    pids: list[int] = []
    while len(pids) < 2:
        line = proc.stdout.readline()
        assert line, "torchrun ended early"
        if b" pid " in line:
            pids.append(int(line.split()[-1]))
    assert all(alive(p) for p in pids)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert gone_within(pids, 1.0)
    _, rec = iso.only_run()
    assert rec["status"] == "cancelled"


def test_torch_missing_in_the_environment_is_125(project: Path, iso: Env) -> None:
    bare = shutil.which("python3.11", path="/usr/bin")
    if (
        bare is None
        or subprocess.run([bare, "-c", "import torch"], capture_output=True).returncode == 0
    ):
        pytest.skip("no interpreter without torch here")
    write(project / "ddp.py", DDP)
    res = torchjob(
        "run", "-s", "ddp.py", "-p", str(project), "--nproc-per-node", "2", "--python", bare
    )
    assert res.returncode == 125 and b"torch is not importable" in res.stderr
    _, rec = iso.only_run()
    assert (rec["status"], rec["phase"]) == ("setup_error", "launch")


def test_distributed_spec_and_bad_values(project: Path, iso: Env) -> None:
    write(project / "ddp.py", DDP)
    spec = write(
        project / "job.yaml",
        'script: ddp.py\ndistributed:\n  nproc_per_node: 2\n  max_restarts: 1\ngpus: ""\n',
    )
    res = torchjob("run", str(spec), "--dry-run")
    assert res.returncode == 2 and b"gpus" in res.stderr
    spec.write_text("script: ddp.py\ndistributed:\n  nproc_per_node: 2\n  max_restarts: 1\n")
    out = torchjob("run", str(spec), "--dry-run").stdout.decode()
    assert "torch.distributed.run --nproc-per-node 2 --standalone" in out
    assert "--max-restarts 1" in out
    for flags in (["--nproc-per-node", "0"], ["--nnodes", "x"]):
        res = torchjob("run", str(spec), *flags)
        assert res.returncode == 2, res.stderr
    assert json.loads(torchjob("runs", "--json").stdout) == []


def test_nproc_auto_follows_the_visible_gpus(project: Path, iso: Env) -> None:
    """No GPU here: `auto` is one process; `--gpus 0,1` (CUDA_VISIBLE_DEVICES) makes it two."""
    write(project / "ddp.py", DDP)
    out = torchjob(
        "run",
        "-s",
        "ddp.py",
        "-p",
        str(project),
        "--nproc-per-node",
        "auto",
        "--dry-run",
        env={k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"},
    ).stdout.decode()
    assert "--nproc-per-node 1 " in out
    out = torchjob(
        "run",
        "-s",
        "ddp.py",
        "-p",
        str(project),
        "--nproc-per-node",
        "auto",
        "--gpus",
        "0,1",
        "--dry-run",
    ).stdout.decode()
    assert "--nproc-per-node 2 " in out and "CUDA_VISIBLE_DEVICES=0,1" in out


def test_the_root_cause_comes_from_the_last_attempt_even_past_nine(tmp_path: Path) -> None:
    """torchrun numbers restarts attempt_0, attempt_1, ...: the eleventh is attempt_10, which
    sorts before attempt_9 as text. (Logs written here, as torchrun lays them out.)"""
    from torchrun_cli.launch.torchrun import summarize
    from torchrun_cli.spec.model import DistributedSpec

    ranks = tmp_path / "ranks"
    for n in range(11):
        write(
            ranks / "run_x" / f"attempt_{n}" / "1" / "stderr.log",
            f'  File "train.py", line {n + 1}, in <module>\nValueError: attempt {n}\n',
        )
    stderr = write(
        tmp_path / "stderr.log",
        "Root Cause (first observed failure):\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : 1 (pid: 9)\n",
    )
    dist = DistributedSpec(nproc_per_node="2", max_restarts="10")
    out = summarize(ranks, stderr, dist, 0, tmp_path)
    assert out["restarts"] == 10
    assert out["root_cause"] == "rank 1 failed: ValueError: attempt 10 at train.py:11"


def test_the_gang_is_checked_every_20_ms_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torchrun's default 0.1 s check makes the gang's end wait (bench/scale.py): torchjob
    passes 0.02 s, unless the spec sets `distributed.monitor_interval` or the environment
    torchrun's own PET_MONITOR_INTERVAL."""
    from torchrun_cli.launch.torchrun import torchrun_args
    from torchrun_cli.spec.model import DistributedSpec

    def interval(dist: DistributedSpec) -> str | None:
        args = torchrun_args(dist, 0, Path("/r/ranks"))
        return args[args.index("--monitor-interval") + 1] if "--monitor-interval" in args else None

    monkeypatch.delenv("PET_MONITOR_INTERVAL", raising=False)
    assert interval(DistributedSpec(nproc_per_node="2")) == "0.02"
    assert interval(DistributedSpec(nproc_per_node="2", monitor_interval="5")) == "5"
    monkeypatch.setenv("PET_MONITOR_INTERVAL", "1")
    assert interval(DistributedSpec(nproc_per_node="2")) is None
    assert interval(DistributedSpec(nproc_per_node="2", monitor_interval="5")) == "5"
