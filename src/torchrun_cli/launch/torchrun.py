"""Gangs of processes through torchrun (torch.distributed.run), not a launcher of our own: the
argv for it, and the record of how the gang ended, read from torchrun's per-rank logs and its
failure report (the root cause with the exception's message and where it was raised)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from torchrun_cli.launch.base import Job
from torchrun_cli.launch.local import LocalBackend
from torchrun_cli.record import End, Status
from torchrun_cli.spec.model import DistributedSpec

_ROOT_RANK = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
_EXCEPTION = re.compile(
    r"^(?:\[\w+\]:\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$", re.M
)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_MESSAGE_MAX = 200
MONITOR_INTERVAL_S = "0.02"


def nproc(value: str | None, gpus: int) -> int:
    """`auto`: one process per visible GPU, or 1 without one."""
    return max(gpus, 1) if value in (None, "auto") else int(value)


def torchrun_args(
    dist: DistributedSpec, gpus: int, log_dir: Path, slurm_nodes: int = 1
) -> list[str]:
    """torchrun's own options: --standalone for one node, c10d rendezvous for more; on more
    than one Slurm node the batch script gives the rendezvous (PET_* variables)."""
    args = [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc(dist.nproc_per_node, gpus)),
    ]
    ours = slurm_nodes == 1  # the rendezvous is in torchrun's argv, not in the batch script
    if ours and dist.nnodes == "1" and not dist.rdzv_endpoint:
        args += ["--standalone", "--nnodes", "1"]
    elif ours:
        args += [
            "--nnodes",
            dist.nnodes,
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            dist.rdzv_endpoint or "127.0.0.1:29400",
            "--rdzv-id",
            dist.rdzv_id or "torchjob",
        ]
        if dist.node_rank is not None:
            args += ["--node-rank", dist.node_rank]
    if dist.max_restarts is not None:
        args += ["--max-restarts", dist.max_restarts]
    # torchrun's 0.1 s check, plus the 0.1 s poll of its per-rank tee, both wait at the gang's
    # end: 0.02 s gets the end noticed sooner (bench/scale.py). torchrun's own variable, when
    # set, is left to torchrun.
    if dist.monitor_interval or "PET_MONITOR_INTERVAL" not in os.environ:
        args += ["--monitor-interval", dist.monitor_interval or MONITOR_INTERVAL_S]
    return [*args, "--log-dir", str(log_dir), "--redirects", "3", "--tee", "3"]


class TorchrunBackend(LocalBackend):
    """A local run whose argv starts torchrun; the end is read from the gang's logs."""

    def details(self, job: Job, end: End) -> tuple[End, dict[str, Any]]:
        run, dist = job.run, job.spec.distributed
        assert dist is not None
        if torch_missing(end, run.ranks, run.stderr_log):
            return End(
                Status.SETUP_ERROR,
                125,
                phase="launch",
                error=f"torch is not importable by {job.launch.argv[0]}, so torchrun "
                "could not start; fix: add torch to the environment "
                "(`--pip torch==2.13.0` or requirements.txt, pinned)",
            ), {}
        gpus = int(job.conventions.get("TORCHJOB_NUM_GPUS", "0"))
        gang = summarize(run.ranks, run.stderr_log, dist, gpus, job.launch.cwd)
        if gang["root_cause"] and end.status is Status.FAILED:
            end = End(end.status, end.exit_code, end.signal, end.phase, gang["root_cause"])
        return end, {"distributed": gang}


def torch_missing(end: End, log_dir: Path, stderr_log: Path) -> bool:
    """torchrun never started because torch is missing: found after the fact, so a working
    launch pays no extra interpreter start for the check."""
    if end.exit_code != 1 or log_dir.exists():
        return False
    try:
        with stderr_log.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return re.search(rb"No module named '?torch[.']", head) is not None


def summarize(
    log_dir: Path, stderr_log: Path, dist: DistributedSpec, gpus: int, project: Path
) -> dict[str, Any]:
    """World size, nodes, per-rank exit codes, restarts and the root cause of a failure."""
    per_node = nproc(dist.nproc_per_node, gpus)
    attempts = sorted(log_dir.glob("*/attempt_*"), key=_attempt_number)  # 9 before 10
    out: dict[str, Any] = {
        "world_size": per_node * int(dist.nnodes.split(":")[-1]),
        "nnodes": dist.nnodes,
        "nproc_per_node": per_node,
        "restarts": max(len(attempts) - 1, 0),
        "ranks": {},
        "root_cause": None,
    }
    report = stderr_log.read_text(encoding="utf-8", errors="replace")[-200_000:]
    if "Root Cause" in report:
        cause = report.split("Root Cause", 1)[1]
        if m := _ROOT_RANK.search(cause):
            rank = int(m.group(1))
            out["ranks"][str(rank)] = int(m.group(2))
            out["root_cause"] = f"rank {rank} failed" + _exception(attempts, rank, project)
        for m in _ROOT_RANK.finditer(report.split("Root Cause", 1)[0].split("Failures:")[-1]):
            out["ranks"].setdefault(m.group(1), int(m.group(2)))
    return out


def _attempt_number(path: Path) -> tuple[int, str]:
    number = path.name.rpartition("_")[2]
    return (int(number) if number.isdigit() else -1, str(path))


def _exception(attempts: list[Path], rank: int, project: Path) -> str:
    """`: ZeroDivisionError: division by zero at train.py:42` from the rank's own stderr log:
    the exception with its message, where the innermost frame was (relative to the project,
    or to site-packages for a library)."""
    if not attempts:
        return ""
    log = attempts[-1] / str(rank) / "stderr.log"
    try:
        text = log.read_text(encoding="utf-8", errors="replace")[-100_000:]
    except OSError:
        return ""
    errors = _EXCEPTION.findall(text)
    frames = _FRAME.findall(text)
    if not errors:
        return ""
    message = errors[-1].strip()
    if len(message) > _MESSAGE_MAX:
        message = message[: _MESSAGE_MAX - 3] + "..."
    where = f" at {shown_path(frames[-1][0], project)}:{frames[-1][1]}" if frames else ""
    return f": {message}{where}"


def shown_path(path: str, project: Path) -> str:
    """A frame's file as a reader finds it: relative to the project, or to site-packages."""
    try:
        relative = os.path.relpath(path, project)
    except ValueError:
        relative = path
    if not relative.startswith(".."):
        return relative
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    return path
