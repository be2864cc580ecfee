"""`torchjob runs prune` and a spec's `retention:`: remove run folders (and pipelines' folders,
with their steps' runs) that a policy no longer keeps: beyond the newest N of their name,
older than an age, of a status, of a name. A running run is never removed (nor a pipeline
whose torchjob runs), nor a pipeline whose step runs a kept pipeline reuses (--resume), whatever
the policy says.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from torchrun_cli.errors import UsageError
from torchrun_cli.jobs import refs
from torchrun_cli.jobs.views import epoch, size
from torchrun_cli.pipeline_record import PipelineRecord
from torchrun_cli.spec.model import RetentionSpec
from torchrun_cli.steps import plural
from torchrun_cli.store import tree_size


class Policy(NamedTuple):
    """What to remove: a run of `name` (if given) that meets every one of keep, older_than and
    status given (`either`: any one of them, retention's rules); `runs_only` spares pipelines
    and sweeps."""

    keep: int | None = None  # the newest N of each name stay
    older_than: float | None = None  # seconds since it ended (or started)
    status: str | None = None
    name: str | None = None
    either: bool = False
    runs_only: bool = False

    def empty(self) -> bool:
        return self.keep is None and self.older_than is None and self.status is None


class Pruned(NamedTuple):
    """A folder the policy removes (or, with --dry-run, would)."""

    id: str
    name: str
    status: str
    size_bytes: int
    removed: bool


def prune(runs_dir: Path, policy: Policy, dry_run: bool = False) -> list[Pruned]:
    """Remove what the policy does not keep, oldest first; what was (or would be) removed."""
    if policy.empty():
        raise UsageError(
            "runs prune needs a policy",
            "give --keep N, --older-than 30d or --status failed (with --name to narrow it)",
        )
    keep: Callable[[refs.AnyRecord], bool] = lambda r: policy.name in (None, r.name)  # noqa: E731
    every = refs.newest(runs_dir, 0, keep, name=policy.name)
    seen: dict[str, int] = {}
    reused: set[str] = set()  # pipelines whose step runs a kept (newer) pipeline reuses
    now = time.time()
    out = []
    for item in every:  # newest first: the first N of each name are kept
        rec = item.record
        seen[rec.name] = rank = seen.get(rec.name, 0) + 1
        status = rec.shown_status().value
        age = now - (epoch(rec.ended_at) or epoch(rec.started_at) or now)
        rules = [
            met
            for met, given in (
                (rank > (policy.keep or 0), policy.keep is not None),
                (status == policy.status, policy.status is not None),
                (age >= (policy.older_than or 0), policy.older_than is not None),
            )
            if given
        ]
        if (
            status == "running"
            or not (any(rules) if policy.either else all(rules))
            or rec.id in reused
            or (policy.runs_only and isinstance(rec, PipelineRecord))
        ):
            if isinstance(rec, PipelineRecord):
                reused.update(s.reused_from for s in rec.steps.values() if s.reused_from)
            continue
        size = tree_size(item.run.path)
        if not dry_run:
            shutil.rmtree(item.run.path, ignore_errors=True)
        out.append(Pruned(rec.id, rec.name, status, size, not dry_run))
    return out[::-1]


def retain(runs_dir: Path, name: str, spec: RetentionSpec, note: Callable[[str], None]) -> None:
    """`retention:` after a run of `name`: its older runs beyond the policy removed, in a line."""
    if spec.keep is None and spec.max_age is None:
        return
    rules = Policy(spec.keep, spec.max_age, name=name, either=True, runs_only=True)
    gone = prune(runs_dir, rules)  # one listing: beyond the newest N, or older than the age
    if gone:
        freed = size(sum(p.size_bytes for p in gone))
        runs = plural(len(gone), "run")
        note(f"retention: removed {len(gone)} older {runs} of {name} ({freed} freed)")
