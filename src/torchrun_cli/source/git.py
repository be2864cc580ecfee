"""Git projects: one bare mirror per remote in the cache, and a fresh working tree of the exact
commit for every run, made from the mirror alone.

Nothing the user wrote reaches git as an option: URLs go after `--` or into the mirror's config,
and giturl.py has checked refs and URLs before any git process starts. Every git command runs
with hooks off, an allow-list of protocols, no prompts and a time limit (DESIGN.md section 4).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torchrun_cli import store
from torchrun_cli.errors import SetupError
from torchrun_cli.source.gitrun import TRANSIENT, explain, git_env, git_progress, protocols
from torchrun_cli.source.giturl import HEX, GitUrl
from torchrun_cli.steps import Silent, Step, Steps, plural
from torchrun_cli.tools import ToolFailed, run_tool

RETRY_DELAYS_S = (1.0, 3.0)
MIRROR = "mirror.git"
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
REMOTE_HEAD = "refs/torchjob/remote-head"  # the commit the remote's HEAD named at the last fetch


@dataclass(frozen=True)
class Checkout:
    """What the git stage produced, for the launch and for run.json."""

    tree: Path
    commit: str
    ref: str
    cached: bool  # the commit was in the mirror: no network at all
    seconds: float
    cloned: bool = False  # the mirror was cloned for this run


class Mirror:
    """One bare mirror of a remote under the cache root, guarded by a file lock."""

    def __init__(
        self,
        url: GitUrl,
        allow_insecure: bool,
        log: Path | None,
        token: str | None,
        cache_home: Path,
        timeout: float,
        steps: Steps | None = None,
    ) -> None:
        self.url = url
        self.steps: Steps = steps or Silent()
        self.cache_home, self.timeout = cache_home, timeout
        self.folder = store.cache_dir(cache_home, "repos") / url.key
        self.path = self.folder / MIRROR
        self.log = log
        self.env, self.secrets = git_env(url, token)
        self.base = [
            "git",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "submodule.recurse=false",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "gc.auto=0",
            *protocols(allow_insecure),
        ]

    def git(
        self,
        *args: str,
        network: bool = False,
        env: Mapping[str, str] | None = None,
        probe: bool = False,
        stdin_text: str | None = None,
        shown: Step | None = None,
    ) -> str:
        """Run git on the mirror; network commands are retried on transient errors; probes
        (lookups that may fail) stay out of setup.log; `shown` gets git's progress."""
        argv = [*self.base, f"--git-dir={self.path}", *args]
        attempts = (0.0, *RETRY_DELAYS_S) if network else (0.0,)
        for i, delay in enumerate(attempts):
            time.sleep(delay)
            try:
                return run_tool(
                    argv,
                    env={**self.env, **(env or {})},
                    timeout=self.timeout,
                    log=None if probe else self.log,
                    secrets=self.secrets,
                    stdin_text=stdin_text,
                    on_line=_follow(shown),
                )
            except ToolFailed as exc:
                last = i == len(attempts) - 1
                if last or exc.timed_out or not any(t in exc.output for t in TRANSIENT):
                    raise self.explain(exc) from None
        raise AssertionError("unreachable")

    def explain(self, exc: ToolFailed) -> SetupError:
        """git's failure as one line a user can act on (no credentials in it)."""
        return explain(exc, self.url, self.timeout)

    def ensure(self) -> bool:
        """Clone when there is no ready mirror (caller holds the lock); True if it cloned."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if store.is_ready(self.folder) and self.path.is_dir():
            self._clear_stale_locks()
            return False
        (self.folder / store.READY).unlink(missing_ok=True)
        for leftover in self.folder.glob("mirror*"):  # from a clone that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = self.folder / f"{MIRROR}.tmp-{os.getpid()}"
        argv = [*self.base, "clone", "--bare", *self._progress(), "--", self.url.url, str(tmp)]
        started = time.time()
        with self.steps.step(f"cloning {self.url.shown}") as shown:
            for i, delay in enumerate((0.0, *RETRY_DELAYS_S)):
                time.sleep(delay)
                try:
                    run_tool(
                        argv,
                        env=self.env,
                        timeout=self.timeout,
                        log=self.log,
                        secrets=self.secrets,
                        on_line=_follow(shown),
                    )
                    break
                except ToolFailed as exc:
                    shutil.rmtree(tmp, ignore_errors=True)
                    if i == len(RETRY_DELAYS_S) or not any(t in exc.output for t in TRANSIENT):
                        raise self.explain(exc) from None
        for spec in _REFSPECS:
            run_tool(
                [*self.base, f"--git-dir={tmp}", "config", "--add", "remote.origin.fetch", spec],
                env=self.env,
                timeout=60,
                log=self.log,
            )
        os.replace(tmp, self.path)
        store.mark_ready(self.folder, self.url.shown)
        self._stamp(started)
        return True

    def is_ready(self) -> bool:
        return store.is_ready(self.folder) and self.path.is_dir()

    def _clear_stale_locks(self) -> None:
        """Lock files git left when a fetch was killed; we hold the flock, so none is live."""
        for lock in [*self.path.glob("*.lock"), *self.path.glob("refs/**/*.lock")]:
            lock.unlink(missing_ok=True)

    def fetch(self) -> None:
        """Branches, tags and what the remote's HEAD names now (its default branch may have
        moved to another branch since the clone), in one fetch."""
        started = time.time()
        with self.steps.step(f"fetching {self.url.shown}") as shown:
            self.git(
                "fetch",
                "--prune",
                *self._progress(),
                "origin",
                *_REFSPECS,
                f"+HEAD:{REMOTE_HEAD}",
                network=True,
                shown=shown,
            )
        self._stamp(started)

    def _progress(self) -> list[str]:
        """git's progress when someone sees it (a terminal), else its quiet."""
        return ["--progress"] if self.steps.detailed else ["--quiet"]

    def _stamp(self, started: float) -> None:
        """When the last fetch started: a run that began waiting after that moment may skip
        its own fetch; one that began before may not (a push could fall in between)."""
        stamp = self.folder / "fetched"
        stamp.touch()
        os.utime(stamp, (started, started))

    def fetched_since(self, moment: float) -> bool:
        try:
            return (self.folder / "fetched").stat().st_mtime >= moment
        except FileNotFoundError:
            return False

    def lookup(self, names: list[str], kind: str = "commit") -> list[str | None]:
        """The object of `kind` each name points to, in one git process (cat-file
        --batch-check); a tree as `COMMIT:PATH` (a `^{tree}` would be read as the path's)."""
        peel = "^{commit}" if kind == "commit" else ""
        out = self.git(
            "cat-file",
            "--batch-check=%(objectname) %(objecttype)",
            probe=True,
            stdin_text="".join(f"{n}{peel}\n" for n in names),
        )
        found: list[str | None] = []
        for line in out.splitlines()[: len(names)]:
            sha, _, got = line.partition(" ")
            found.append(sha if got == kind else None)
        return found + [None] * (len(names) - len(found))

    def commit_of(self, name: str) -> str | None:
        """The commit a full ref name or SHA names in the mirror, without network."""
        try:
            out = self.git(
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                f"{name}^{{commit}}",
                probe=True,
            )
        except SetupError:
            return None
        return out.strip() or None

    def resolve(self, ref: str | None) -> str | None:
        """Branch, then tag, then commit; None for the remote's default branch -> HEAD."""
        if ref is None:
            return self.commit_of(REMOTE_HEAD) or self.commit_of("HEAD")
        for name in (f"refs/heads/{ref}", f"refs/tags/{ref}"):
            if commit := self.commit_of(name):
                return commit
        return self.commit_of(ref) if HEX.match(ref) else None

    def ambiguous(self, prefix: str) -> bool:
        """Whether an abbreviated SHA matches several objects (git then resolves none)."""
        try:
            out = self.git("rev-parse", f"--disambiguate={prefix}", probe=True)
        except SetupError:
            return False
        return len(out.split()) > 1

    def default_branch(self, commit: str) -> str:
        """The remote's default branch by name: HEAD's, or the one branch at its commit after
        the remote switched (HEAD then follows it)."""
        at = self.git(
            "for-each-ref",
            f"--points-at={commit}",
            "--format=%(refname:short)",
            "refs/heads",
            probe=True,
        ).split()
        try:  # a bare repository's HEAD file: `ref: refs/heads/NAME`
            name = (self.path / "HEAD").read_text().strip().removeprefix("ref: refs/heads/")
        except OSError:
            name = ""
        if name in at:
            return name
        if len(at) != 1:
            return "HEAD"
        self.git("symbolic-ref", "HEAD", f"refs/heads/{at[0]}")
        return at[0]

    def checkout(self, commit: str, dest: Path, index: Path, subdir: str | None = None) -> None:
        """A working tree of exactly `commit`, from the mirror alone (no network); with subdir,
        only that folder (at its place in dest): a run keeps what it runs, not the repository."""
        path = posixpath.normpath(subdir or ".").strip("/")  # git reads `./x` from a work tree
        tree = None
        with contextlib.suppress(SetupError):  # a path git will not look up: the whole tree
            tree = self.lookup([f"{commit}:{path}"], "tree")[0] if path != "." else None
        if tree is None:  # no subdir, or not a folder at that commit: the whole tree, so the
            tree, path = commit, "."  # caller's check names the fault
        label = commit[:12] if path == "." else f"{commit[:12]} {path}/"
        self._read_tree(tree, dest / path, index, label)

    def _read_tree(self, tree: str, dest: Path, index: Path, label: str) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        with self.steps.step(f"checking out {label}") as shown:
            if self.steps.detailed:  # a count only for someone looking: one more git process
                files = self.git("ls-tree", "-r", "-z", "--name-only", tree, probe=True)
                count = files.count(chr(0))
                shown.rename(f"checking out {count:,} {plural(count, 'file')}")
            try:
                argv = (f"--work-tree={dest}", "read-tree", "--reset", "-u", tree)
                self.git(*argv, env={"GIT_INDEX_FILE": str(index)})
            finally:
                index.unlink(missing_ok=True)


def _follow(shown: Step | None) -> Callable[[str], None] | None:
    """git's `--progress` lines into the step's detail."""
    if shown is None:
        return None

    def follow(line: str) -> None:
        if (detail := git_progress(line)) is not None:
            shown.detail(detail)

    return follow


def materialize(
    mirror: Mirror, ref: str | None, dest: Path, index: Path, subdir: str | None = None
) -> Checkout:
    """Resolve ref with as little network as it allows, then check the commit out into dest.

    A commit already in the mirror costs no network; a branch or tag costs one fetch, unless
    another run fetched while this one waited for the lock. All under the mirror's lock, so
    concurrent runs make one clone and one fetch at a time, and prune never pulls it away.
    """
    started = time.monotonic()
    waited_from = time.time()
    mirror.folder.mkdir(parents=True, exist_ok=True)
    with store.locked(mirror.folder.parent / f"{mirror.folder.name}.lock"):
        commit, cached, cloned = _resolve(mirror, ref, waited_from)
        shown_ref = ref or mirror.default_branch(commit)
        mirror.checkout(commit, dest, index, subdir)
        store.touch(mirror.folder / "used")
    seconds = round(time.monotonic() - started, 3)
    return Checkout(dest, commit, shown_ref, cached, seconds, cloned)


def commit_for(mirror: Mirror, ref: str | None) -> str:
    """The commit ref names now (a fetch for a branch or tag), without a checkout: what a
    pipeline's step cache keys a git project by."""
    mirror.folder.mkdir(parents=True, exist_ok=True)
    with store.locked(mirror.folder.parent / f"{mirror.folder.name}.lock"):
        return _resolve(mirror, ref, time.time())[0]


def _resolve(mirror: Mirror, ref: str | None, waited_from: float) -> tuple[str, bool, bool]:
    """(commit, found without network, cloned); the caller holds the mirror's lock."""
    cloned = mirror.ensure()
    commit = None
    if ref is not None and HEX.match(ref):  # a SHA, unless a branch or tag has that name
        branch, tag, sha = mirror.lookup([f"refs/heads/{ref}", f"refs/tags/{ref}", ref])
        commit = sha if branch is None and tag is None else None
    cached = commit is not None and not cloned
    if commit is None:
        if not cloned and not mirror.fetched_since(waited_from):
            mirror.fetch()
        commit = mirror.resolve(ref)
    if commit is None and ref is not None and re.fullmatch(r"[0-9a-fA-F]{40}", ref):
        mirror.git("fetch", "--quiet", "origin", ref, network=True)  # unadvertised SHA
        commit = mirror.commit_of(ref)
    if commit is None and ref is not None and HEX.match(ref) and mirror.ambiguous(ref):
        raise SetupError(
            f"short SHA {ref!r} names more than one object in {mirror.url.shown}",
            "give more digits of the commit SHA",
            phase="source",
        )
    if commit is None:
        raise SetupError(
            f"unknown ref {ref!r} in {mirror.url.shown}",
            "give an existing branch, tag or commit (git ls-remote lists them)",
            phase="source",
        )
    return commit, cached, cloned


@dataclass(frozen=True)
class CachedRepo:
    """One mirror in the cache, for `torchjob cache list`."""

    key: str
    url: str
    size_bytes: int
    last_used: float
    ready: bool


def list_mirrors(cache_home: Path) -> list[CachedRepo]:
    """Every mirror folder, ready or not (a folder without its marker is garbage)."""
    root = cache_home / "repos"
    out = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        ready = store.is_ready(folder)
        url = (folder / store.READY).read_text() if ready else "(incomplete)"
        stamps = [folder / "used", folder / "fetched", folder]
        last = max(p.stat().st_mtime for p in stamps if p.exists())
        out.append(CachedRepo(folder.name, url, store.tree_size(folder), last, ready))
    return out


def prune(cache_home: Path, unused_for_s: float) -> list[CachedRepo]:
    """Remove mirrors unused for that long, and incomplete ones; each under its lock."""
    removed = []
    now = time.time()
    for repo in list_mirrors(cache_home):
        if repo.ready and now - repo.last_used < unused_for_s:
            continue
        folder = cache_home / "repos" / repo.key
        with store.locked(folder.parent / f"{folder.name}.lock"):
            store.remove_entry(folder)
        removed.append(repo)
    return removed
