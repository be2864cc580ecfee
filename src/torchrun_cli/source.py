"""Where the project's files come from: a local folder (used in place), a git URL at a ref, or
an archive; plus dependency files copied next to the script. Returns the folder to run in."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchrun_cli.errors import SetupError
from torchrun_cli.masking import hide_query
from torchrun_cli.proc import ToolFailed, run_tool
from torchrun_cli.spec import JobSpec

TREE = "src"


@dataclass(frozen=True)
class Source:
    """The folder the job runs in, and what run.json says about where it came from."""

    kind: str
    path: Path
    url: str | None = None
    ref: str | None = None
    commit: str | None = None
    subdirectory: str | None = None
    dirty: bool | None = None
    cached: bool | None = None
    seconds: float | None = None

    def record(self) -> dict[str, Any]:
        """The `source` object of run.json (URLs never carry credentials)."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def describe(spec: JobSpec, tree: Path) -> Source:
    """The source as far as it is known without network or checkout (for plans, --dry-run)."""
    if spec.project_kind == "local":
        return Source("local", Path(spec.project))
    from torchrun_cli import gitsource

    location, subdir = gitsource.split_fragment(spec.project)
    if subdir is not None:
        gitsource.check_subdir(subdir)  # --dry-run refuses what the run would refuse
    root = tree / subdir if subdir else tree
    if spec.project_kind == "git":
        url = gitsource.parse_url(location, spec.allow_insecure_source)
        if spec.ref is not None:
            gitsource.check_ref(spec.ref)
        return Source("git", root, url.shown, spec.ref, None, subdir)
    return Source("archive", root, hide_query(location), None, None, subdir)


def materialize(spec: JobSpec, run_dir: Path, log: Path) -> Source:
    """Make the job's folder: check out, extract or (for local) use in place; copy files."""
    tree = run_dir / TREE
    if spec.project_kind == "local":
        commit, dirty = _local_git(Path(spec.project), log)
        src = Source("local", Path(spec.project), commit=commit, dirty=dirty)
        if spec.files:  # never write into the user's folder: run in a copy of it
            shutil.copytree(src.path, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            _repoint_links(src.path, tree)
            src = Source(**{**asdict(src), "path": tree})
    elif spec.project_kind == "git":
        src = _git(spec, run_dir, tree, log)
    else:
        src = _archive(spec, tree, log)
    if spec.files:
        from torchrun_cli.gitsource import inside

        folder = os.path.dirname(os.path.relpath(src.path / spec.script, tree))
        dest = inside(tree, folder or ".", "script folder")  # refused when a link leads out
        dest.mkdir(parents=True, exist_ok=True)
        for item in spec.files:
            _place(item, dest / item.name)
    return src


def _git(spec: JobSpec, run_dir: Path, tree: Path, log: Path) -> Source:
    from torchrun_cli import gitsource

    location, subdir = gitsource.split_fragment(spec.project)
    url = gitsource.parse_url(location, spec.allow_insecure_source)
    if spec.ref is not None:
        gitsource.check_ref(spec.ref)
    if subdir is not None:
        gitsource.check_subdir(subdir)
    token = None
    if spec.git_token_env:
        token = os.environ.get(spec.git_token_env) or None
        if token is None:
            raise SetupError(f"git_token_env names {spec.git_token_env}, which is not set",
                             f"export {spec.git_token_env}=... before running", phase="source")
    token = token or url.token
    mirror = gitsource.Mirror(url, spec.allow_insecure_source, log, token)
    done = gitsource.materialize(mirror, spec.ref, tree, run_dir / ".git-index")
    if spec.submodules:
        gitsource.checkout_submodules(mirror, done.commit, tree, run_dir / ".git-index",
                                      spec.allow_insecure_source)
    root = _subdir(tree, subdir, url.shown)
    return Source("git", root, url.shown, done.ref, done.commit, subdir, None, done.cached,
                  done.seconds)


def _archive(spec: JobSpec, tree: Path, log: Path) -> Source:
    from torchrun_cli import archive, gitsource

    location, subdir = gitsource.split_fragment(spec.project)
    if subdir is not None:
        gitsource.check_subdir(subdir)
    if "://" in location:
        path = archive.download(location, spec.allow_insecure_source, log)
    else:
        path = Path(location)
    archive.extract(path, tree)
    shown = hide_query(location)
    return Source("archive", _subdir(tree, subdir, shown), shown, None, None, subdir)


def _subdir(tree: Path, subdir: str | None, where: str) -> Path:
    if subdir is None:
        return tree
    from torchrun_cli import gitsource

    root = gitsource.inside(tree, subdir, "subdirectory")
    if not root.is_dir():
        raise SetupError(f"no subdirectory {subdir!r} in {where}",
                         "check the part after '#' (it is relative to the repository root)",
                         phase="source")
    return root


def _place(item: Path, target: Path) -> None:
    """Copy a dependency file or folder to target (Tencent's component does the same). Never
    through a link: one in the way (from the checkout, say) is replaced, not followed."""
    real_dir = target.is_dir() and not target.is_symlink()
    merge = real_dir and item.is_dir() and not item.is_symlink()  # folder into folder
    if real_dir and not merge:
        shutil.rmtree(target)
    elif not real_dir and (target.exists() or target.is_symlink()):
        target.unlink()
    if item.is_symlink():
        os.symlink(os.readlink(item), target)
    elif item.is_dir():
        target.mkdir(exist_ok=True)
        for child in item.iterdir():
            _place(child, target / child.name)
    else:
        shutil.copy2(item, target)


def _repoint_links(original: Path, copy: Path) -> None:
    """Relative links of a copied project that lead out of it (`data -> ../datasets`) would
    break in the copy: make them absolute, to where they pointed from the original."""
    for folder, dirs, files in os.walk(copy):
        for name in dirs + files:
            link = Path(folder) / name
            target = os.readlink(link) if link.is_symlink() else None
            if target is None or os.path.isabs(target):
                continue
            at = original / link.parent.relative_to(copy)
            where = os.path.normpath(at / target)
            if where != str(original) and not where.startswith(str(original) + os.sep):
                link.unlink()
                os.symlink(where, link)


def _local_git(path: Path, log: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) when path is inside a git work tree, else (None, None).

    A cheap upward search for `.git` first, so a plain folder starts no git process at all.
    Dirty means tracked files differ from HEAD; untracked files (data, outputs) do not count.
    """
    probe = path
    while not (probe / ".git").exists():
        if probe.parent == probe:
            return None, None
        probe = probe.parent
    base = ["git", "--no-optional-locks", "-c", "core.hooksPath=/dev/null", "-c",
            "core.fsmonitor=false", "-C", str(path)]
    from torchrun_cli.gitsource import clean_env

    env = clean_env()  # an inherited GIT_DIR would name another repository
    try:
        commit = run_tool([*base, "rev-parse", "--verify", "HEAD"], env=env, timeout=10,
                          log=log).strip()
        status = run_tool([*base, "status", "--porcelain", "--untracked-files=no"], env=env,
                          timeout=30, log=log)
    except ToolFailed:  # no commit yet, or git missing: the run goes on without the facts
        return None, None
    return commit, bool(status.strip())


def cache_state(spec: JobSpec) -> str:
    """For --dry-run: will this run need the network for its source?"""
    if spec.project_kind != "git":
        return "local" if spec.project_kind == "local" else "extracted for each run"
    from torchrun_cli import gitsource

    location, _ = gitsource.split_fragment(spec.project)
    url = gitsource.parse_url(location, spec.allow_insecure_source)
    mirror = gitsource.Mirror(url, spec.allow_insecure_source, None, None)
    if not mirror.is_ready():
        return "not cached: the first run clones"
    if spec.ref and gitsource.is_hex(spec.ref) and mirror.commit_of(spec.ref):
        return f"commit {mirror.commit_of(spec.ref)} is cached: no network"
    return "cached mirror: one fetch"
