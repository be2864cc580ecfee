"""The source stage: where the project's files come from (a local folder used in place, a git
URL at a ref, or an archive), plus dependency files copied next to the script. It returns the
folder the job runs in, as a Source.

Git and archive code is imported only by the runs that use it (git.py, archive.py): a local
run's start-up does not pay for them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from torchrun_cli.errors import SetupError
from torchrun_cli.masking import hide_query
from torchrun_cli.record import RunDir
from torchrun_cli.settings import Settings
from torchrun_cli.source import local
from torchrun_cli.source.paths import inside, place
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.steps import Steps

if TYPE_CHECKING:
    from torchrun_cli.source.git import Mirror


class Source(NamedTuple):
    """The folder the job runs in, and what run.json says about where it came from."""

    kind: str
    path: Path
    url: str | None = None
    ref: str | None = None
    commit: str | None = None
    subdirectory: str | None = None
    dirty: bool | None = None
    cached: bool | None = None
    cloned: bool | None = None
    seconds: float | None = None

    def record(self) -> dict[str, Any]:
        """The `source` object of run.json (URLs never carry credentials)."""
        data = self._asdict()
        data["path"] = str(self.path)
        return data


def describe(spec: JobSpec, tree: Path) -> Source:
    """The source as far as it is known without network or checkout (for plans, --dry-run):
    what a run would refuse is refused here too."""
    if spec.project_kind == "local":
        return Source("local", Path(spec.project))
    from torchrun_cli.source import giturl  # measured: 3.6 ms (hashlib) a local run never pays

    location, subdir = giturl.split_fragment(spec.project)
    if subdir is not None:
        giturl.check_subdir(subdir)
    root = tree / subdir if subdir else tree
    if spec.project_kind == "git":
        url = giturl.parse_url(location, spec.allow_insecure_source)
        if spec.ref is not None:
            giturl.check_ref(spec.ref)
        return Source("git", root, url.shown, spec.ref, None, subdir)
    return Source("archive", root, hide_query(location), None, None, subdir)


def materialize(spec: JobSpec, run: RunDir, settings: Settings, steps: Steps) -> Source:
    """Make the job's folder: check out, extract or (for local) use in place; copy files; the
    script must then be in a git or archive checkout (125)."""
    if spec.project_kind == "local":
        commit, dirty = local.git_facts(Path(spec.project), run.setup_log)
        src = Source("local", Path(spec.project), commit=commit, dirty=dirty)
        if spec.files:  # never write into the user's folder: run in a copy of it
            local.copy_project(src.path, run.tree)
            src = src._replace(path=run.tree)
    elif spec.project_kind == "git":
        src = _git(spec, run, settings, steps)
    else:
        src = _archive(spec, run, settings, steps)
    if spec.files:
        folder = os.path.dirname(os.path.relpath(src.path / spec.script, run.tree))
        dest = inside(run.tree, folder or ".", "script folder")  # refused when a link leads out
        dest.mkdir(parents=True, exist_ok=True)
        for item in spec.files:
            if item in spec.unpack:  # Tencent Cloud's dependency zip: its content lands here
                _unpack(item, dest, run, settings)
            else:
                place(item, dest / item.name)
    if src.kind != "local":
        script = inside(src.path, spec.script, "script")
        if not script.is_file():
            raise SetupError(
                f"script {spec.script!r} is not in the checkout of {src.url}",
                "check `script` (relative to the repository and its #subdirectory)",
                phase="source",
            )
    return src


def _git(spec: JobSpec, run: RunDir, settings: Settings, steps: Steps) -> Source:
    from torchrun_cli.source import git  # measured: only git projects pay for them

    described = describe(spec, run.tree)
    mirror, subdir = _mirror(spec, run.setup_log, settings, steps)
    url = mirror.url
    only = None if spec.submodules else subdir  # submodules: .gitmodules is at the root
    done = git.materialize(mirror, spec.ref, run.tree, run.git_index, only)
    if spec.submodules:
        from torchrun_cli.source.submodules import checkout_submodules  # as git, only if asked

        checkout_submodules(
            mirror, done.commit, run.tree, run.git_index, spec.allow_insecure_source
        )
    root = _subdir(run.tree, subdir, url.shown)
    return described._replace(
        path=root,
        ref=done.ref,
        commit=done.commit,
        cached=done.cached,
        cloned=done.cloned,
        seconds=done.seconds,
    )


def _mirror(
    spec: JobSpec, log: Path | None, settings: Settings, steps: Steps | None = None
) -> tuple[Mirror, str | None]:
    """The project's git mirror with the token the spec names, and the
    #subdirectory."""
    from torchrun_cli.source import git, giturl  # as in _git

    location, subdir = giturl.split_fragment(spec.project)
    url = giturl.parse_url(location, spec.allow_insecure_source)
    token = None
    if spec.git_token_env:
        token = os.environ.get(spec.git_token_env) or None
        if token is None:
            raise SetupError(
                f"git_token_env names {spec.git_token_env}, which is not set",
                f"export {spec.git_token_env}=... before running",
                phase="source",
            )
    mirror = git.Mirror(
        url,
        spec.allow_insecure_source,
        log,
        token or url.token,
        settings.cache_home,
        settings.git_timeout,
        steps,
    )
    return mirror, subdir


def commit_for(spec: JobSpec, settings: Settings, log: Path | None) -> str:
    """The commit a git project's ref names now (one fetch at most): a step cache's key."""
    from torchrun_cli.source import git  # as in _git

    mirror, _ = _mirror(spec, log, settings)
    return git.commit_for(mirror, spec.ref)


def _archive(spec: JobSpec, run: RunDir, settings: Settings, steps: Steps) -> Source:
    from torchrun_cli.source import archive, giturl  # measured: archive projects only

    described = describe(spec, run.tree)
    location, subdir = giturl.split_fragment(spec.project)
    if "://" in location:
        with steps.step(f"downloading {described.url}"):
            path = archive.download(
                location,
                spec.allow_insecure_source,
                run.setup_log,
                settings.cache_home,
                settings.archive_max_bytes,
            )
    else:
        path = Path(location)
    with steps.step(f"extracting {path.name}"):
        archive.extract(path, run.tree, settings.archive_max_bytes)
    return described._replace(path=_subdir(run.tree, subdir, described.url or location))


def _subdir(tree: Path, subdir: str | None, where: str) -> Path:
    if subdir is None:
        return tree
    root = inside(tree, subdir, "subdirectory")
    if not root.is_dir():
        raise SetupError(
            f"no subdirectory {subdir!r} in {where}",
            "check the part after '#' (it is relative to the repository root)",
            phase="source",
        )
    return root


def cache_state(spec: JobSpec, settings: Settings) -> str:
    """For --dry-run: will this run need the network for its source?"""
    if spec.project_kind != "git":
        return "local" if spec.project_kind == "local" else "extracted for each run"
    from torchrun_cli.source import git, giturl  # measured: only git projects pay for them

    location, _ = giturl.split_fragment(spec.project)
    url = giturl.parse_url(location, spec.allow_insecure_source)
    mirror = git.Mirror(
        url, spec.allow_insecure_source, None, None, settings.cache_home, settings.git_timeout
    )
    if not mirror.is_ready():
        return "not cached: the first run clones"
    if spec.ref and giturl.is_hex(spec.ref) and (commit := mirror.commit_of(spec.ref)):
        return f"commit {commit} is cached: no network"
    return "cached mirror: one fetch"


def _unpack(item: Path, dest: Path, run: RunDir, settings: Settings) -> None:
    """An archive's entries into dest, with the archive project's checks (no entry outside, no
    link out, the size limit); an entry replaces what the project has of that name."""
    from torchrun_cli.source import archive  # as in _archive

    staging = run.path / f".unpack-{item.name}"
    archive.extract(item, staging, settings.archive_max_bytes)
    for entry in sorted(staging.iterdir()):
        place(entry, dest / entry.name)
    shutil.rmtree(staging)
