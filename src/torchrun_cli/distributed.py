"""Gangs of processes through torchrun (torch.distributed.run), not a launcher of our own:
the argv for it, a check that torch is there, and the record of how the gang ended, read from
torchrun's per-rank logs and its failure report."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GRACE_S = 45.0  # torchrun gives its workers 30 s after SIGTERM; we wait longer before SIGKILL
RANKS = "ranks"
_ROOT_RANK = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
_EXCEPTION = re.compile(
    r"^(?:\[\w+\]:\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$", re.M)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def nproc(value: Any, gpus: int) -> int:
    """`auto`: one process per visible GPU, or 1 without one."""
    return max(gpus, 1) if value in (None, "auto") else int(value)


def torchrun_args(dist: Mapping[str, Any], gpus: int, log_dir: Path,
                  slurm_nodes: int = 1) -> list[str]:
    """torchrun's own options: --standalone for one node, c10d rendezvous for more; on more
    than one Slurm node the batch script gives the rendezvous (PET_* variables)."""
    args = ["-m", "torch.distributed.run", "--nproc-per-node",
            str(nproc(dist.get("nproc_per_node"), gpus))]
    nnodes = str(dist.get("nnodes", 1))
    ours = slurm_nodes == 1  # the rendezvous is in torchrun's argv, not in the batch script
    if ours and nnodes == "1" and not dist.get("rdzv_endpoint"):
        args += ["--standalone", "--nnodes", "1"]
    elif ours:
        args += ["--nnodes", nnodes, "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", str(dist.get("rdzv_endpoint", "127.0.0.1:29400")),
                 "--rdzv-id", str(dist.get("rdzv_id", "torchjob"))]
        if "node_rank" in dist:
            args += ["--node-rank", str(dist["node_rank"])]
    for key in ("max_restarts", "monitor_interval"):
        if key in dist:
            args += [f"--{key.replace('_', '-')}", str(dist[key])]
    return [*args, "--log-dir", str(log_dir), "--redirects", "3", "--tee", "3"]


def torch_missing(end: Mapping[str, Any], log_dir: Path, stderr_log: Path) -> bool:
    """torchrun never started because torch is missing: found after the fact, so a working
    launch pays no extra interpreter start for the check."""
    if end.get("exit_code") != 1 or log_dir.exists():
        return False
    try:
        with stderr_log.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return re.search(rb"No module named '?torch[.']", head) is not None


def summarize(log_dir: Path, stderr_log: Path, dist: Mapping[str, Any],
              gpus: int) -> dict[str, Any]:
    """World size, nodes, per-rank exit codes, restarts and the root cause of a failure."""
    per_node = nproc(dist.get("nproc_per_node"), gpus)
    nnodes = str(dist.get("nnodes", 1))
    attempts = sorted(log_dir.glob("*/attempt_*"), key=_attempt_number)  # 9 before 10
    out: dict[str, Any] = {
        "world_size": per_node * int(nnodes.split(":")[-1]), "nnodes": nnodes,
        "nproc_per_node": per_node, "restarts": max(len(attempts) - 1, 0), "ranks": {},
        "root_cause": None}
    report = stderr_log.read_text(encoding="utf-8", errors="replace")[-200_000:]
    if "Root Cause" in report:
        cause = report.split("Root Cause", 1)[1]
        if m := _ROOT_RANK.search(cause):
            rank = int(m.group(1))
            out["ranks"][str(rank)] = int(m.group(2))
            out["root_cause"] = f"rank {rank} failed" + _exception(attempts, rank)
        for m in _ROOT_RANK.finditer(report.split("Root Cause", 1)[0].split("Failures:")[-1]):
            out["ranks"].setdefault(m.group(1), int(m.group(2)))
    return out


def _attempt_number(path: Path) -> tuple[int, str]:
    number = path.name.rpartition("_")[2]
    return (int(number) if number.isdigit() else -1, str(path))


def _exception(attempts: list[Path], rank: int) -> str:
    """`: ZeroDivisionError at train.py:42` from the rank's own stderr log, when it has one."""
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
    where = f" at {Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else ""
    return f": {errors[-1].split(':', 1)[0]}{where}"
