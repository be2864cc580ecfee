"""The step cache (opt-in: `cache: true`), as DVC's `repro` and Nextflow's `-resume` do it: a
step whose inputs did not change reuses the outputs of the earlier run that succeeded with the
same inputs. The key covers the step's spec as written (references unresolved), the project
(a git commit, or the content of a local folder or archive), the environment's settings, the
content of every input path, and the content of the outputs of each step it needs: change one
file upstream and exactly the steps downstream of it run again.

The index is a file per key in `<runs-dir>/.step-cache/`, naming the run folder; an entry whose
run is gone or did not succeed is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from torchrun_cli import source
from torchrun_cli.record import RunDir, Status, read_record
from torchrun_cli.settings import Settings
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.store import write_atomic

INDEX = ".step-cache"
SCHEMA = 1
_SKIP = frozenset({".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


def tree_digest(path: Path, skip: Iterable[Path] = ()) -> str:
    """sha256 over a file's bytes, or over a folder's files (relative path, executable bit,
    bytes; links by their target), in a fixed order; caches and `skip` (files, folders) left out."""
    h = hashlib.sha256()
    if path.is_file():
        _file(h, path)
        return h.hexdigest()
    left_out = {p.resolve() for p in skip}
    for root, dirs, files in os.walk(path):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and (here / d).resolve() not in left_out)
        for name in sorted(files):
            item = here / name
            if left_out and item.resolve() in left_out:
                continue
            h.update(os.fsencode(item.relative_to(path)) + b"\0")
            if item.is_symlink():
                h.update(b"link\0" + os.fsencode(os.readlink(item)) + b"\0")
            elif item.is_file():
                h.update(b"x\0" if os.access(item, os.X_OK) else b"-\0")
                _file(h, item)
    return h.hexdigest()


def _file(h: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    h.update(b"\0")


def key(written: JobSpec, resolved: JobSpec, needs: Mapping[str, RunDir], project: str) -> str:
    """The step's cache key (see the module's docstring). `written` is the step's spec with
    its references as written (an upstream run's folder differs from run to run: its content
    stands for it), `resolved` with them filled in; `project` is what project() says."""
    spec = {k: v for k, v in written.masked().items() if k != "spec_file"}
    parts = {
        "schema": SCHEMA,
        "spec": spec,
        "project": project,
        "inputs": {n: tree_digest(p) for n, p in sorted(resolved.inputs.items()) if p.exists()},
        "files": [tree_digest(p) for p in resolved.files if p.exists()],
        "upstream": {name: _outputs(run) for name, run in sorted(needs.items())},
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def project(spec: JobSpec, settings: Settings, runs_root: Path, data: Iterable[Path] = ()) -> str:
    """`git:<commit>` (the commit the ref names now), `url:<address>` for a downloaded
    archive, `content:<digest>` for a local folder or archive. Left out of the content: the
    runs folder, and `data`, the inputs the pipeline's steps declare (each step that declares
    one has it in its own key: a new data file reruns the steps that read it, not all)."""
    if spec.project_kind == "git":
        return "git:" + source.commit_for(spec, settings, None)
    location = spec.project.split("#", 1)[0]
    if spec.project_kind == "archive" and "://" in location:
        return "url:" + location  # a download is keyed by its address
    return "content:" + tree_digest(Path(spec.project), (runs_root, *data))


def _outputs(run: RunDir) -> dict[str, str]:
    """What a needed step left for the steps after it: its output and model folders."""
    rec = read_record(run)
    out = {}
    for name, folder in (("output", rec.output_dir), ("model", rec.model_dir)):
        path = Path(folder) if folder else None
        out[name] = tree_digest(path) if path is not None and path.exists() else ""
    return out


def lookup(runs_root: Path, digest: str) -> RunDir | None:
    """The run that succeeded with this key, if it is still there."""
    try:
        entry = json.loads((runs_root / INDEX / digest).read_text(encoding="utf-8"))
        run = RunDir(Path(entry["run_dir"]))
        rec = read_record(run)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run if rec.status is Status.SUCCEEDED else None


def remember(runs_root: Path, digest: str, run: RunDir) -> None:
    folder = runs_root / INDEX
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / digest, json.dumps({"run_dir": str(run.path)}).encode() + b"\n")
