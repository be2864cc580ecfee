"""Git projects: an allow-list of URL forms, checked refs, one mirror per remote in the cache,
and a fresh working tree of the exact commit for every run.

Nothing the user wrote reaches git as an option: URLs go after `--` or into the mirror's config,
refs are checked here with git's own rules before any git process starts. Every git command runs
with hooks off, an allow-list of protocols, no prompts and a time limit (DESIGN.md section 4).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from torchrun_cli import store
from torchrun_cli.errors import SetupError
from torchrun_cli.masking import looks_like_token, mask_text
from torchrun_cli.proc import ToolFailed, run_tool

SECURE = ("https", "ssh")
INSECURE = ("http", "git", "file")
GIT_TIMEOUT_S = store.env_number("TORCHJOB_GIT_TIMEOUT", 600)
RETRY_DELAYS_S = (1.0, 3.0)
MIRROR = "mirror.git"
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
REMOTE_HEAD = "refs/torchjob/remote-head"  # the commit the remote's HEAD named at the last fetch
_SCP = re.compile(r"^(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*"
                  r"|\[[0-9A-Fa-f:.]+\]):(?P<path>[^\s]+)$")
_HOST = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])$")
_TRANSPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# Environment variables of the user's that git may keep; every other GIT_* is dropped so an
# inherited GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE or GIT_CONFIG_* cannot redirect our commands.
_GIT_ENV_KEEP = ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO",
                 "GIT_SSL_CAPATH", "GIT_SSL_CERT", "GIT_SSL_KEY", "GIT_HTTP_USER_AGENT",
                 "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_EXEC_PATH", "GIT_TRACE",
                 "GIT_CURL_VERBOSE", "GIT_HTTP_LOW_SPEED_LIMIT", "GIT_HTTP_LOW_SPEED_TIME")
_AUTH = ("Permission denied", "Authentication failed", "could not read Username",
         "could not read Password", "Host key verification failed", "error: 401", "error: 403",
         "HTTP 401", "HTTP 403", "terminal prompts disabled")
_UNREACHABLE = ("Could not resolve host", "Connection refused", "Network is unreachable",
                "No route to host", "Connection timed out", "unable to connect",
                "Failed to connect", "Could not resolve hostname", "connect to host")
_MISSING = ("does not appear to be a git repository", "Repository not found", "not found",
            "error: 404", "No such file or directory", "does not exist")
_TRANSIENT = ("Connection reset", "early EOF", "RPC failed", "error: 50", "HTTP 50",
              "Connection timed out", "Could not resolve host", "Connection refused",
              "unexpected disconnect", "remote end hung up unexpectedly")


def refuse(message: str, fix: str) -> SetupError:
    """A source torchjob will not touch: exit 125, before any git process starts."""
    return SetupError(message, fix, phase="source")


@dataclass(frozen=True)
class GitUrl:
    """A checked remote: what git is given, what users see, and the cache key."""

    url: str
    scheme: str
    host: str
    token: str | None
    key: str
    user: str | None = None  # the login to send with a token (https), when the URL names one

    @property
    def shown(self) -> str:
        """The URL for messages and records: credentials are never part of `url`."""
        return self.url


def split_fragment(project: str) -> tuple[str, str | None]:
    """`URL#sub/dir` -> (URL, "sub/dir"); an empty fragment is no subdirectory."""
    location, _, subdir = project.partition("#")
    return location, (subdir or None)


def parse_url(text: str, allow_insecure: bool) -> GitUrl:
    """Check a git URL against the allow-list; raise a refusal naming the problem."""
    shown = re.sub(r"//[^/@]*@", "//", text)  # never echo credentials
    if text.startswith("-") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise refuse(f"refused git URL {shown!r}: it starts with '-' or holds spaces or control "
                     "characters", "give an https, ssh or user@host:path URL")
    if _TRANSPORT.match(text):
        raise refuse(f"refused git URL {shown!r}: transport prefixes like `ext::` run commands",
                     "give an https, ssh or user@host:path URL")
    scp = _SCP.match(text)
    if scp and "://" not in text:
        if scp["path"].startswith("-"):
            raise refuse(f"refused git URL {shown!r}: the path starts with '-'",
                         "give the repository path")
        return GitUrl(text, "ssh", scp["host"], None,
                      _key("scp", scp["user"] + "@" + scp["host"].lower(), scp["path"]))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SECURE + INSECURE:
        raise refuse(f"refused git URL {shown!r}: scheme {scheme or '(none)'!r} is not allowed",
                     "use https://, ssh:// or user@host:path")
    if scheme in INSECURE and not allow_insecure:
        raise refuse(f"refused git URL {shown!r}: {scheme}:// is not encrypted or not remote",
                     "use https or ssh, or pass --allow-insecure-source "
                     "(spec: allow_insecure_source: true)")
    host = parts.hostname or ""
    netloc_host = parts.netloc.rpartition("@")[2]
    bare_host = (netloc_host.split("]")[0] + "]" if netloc_host.startswith("[")
                 else netloc_host.rsplit(":", 1)[0])
    if scheme != "file" and (not _HOST.match(bare_host) or not parts.path.strip("/")):
        raise refuse(f"refused git URL {shown!r}: bad host or empty path",
                     "write it as https://host/org/repo.git")
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise refuse(f"refused git URL {shown!r}: file:// takes a local absolute path",
                     "write file:///path/to/repo.git")
    try:
        port = parts.port
    except ValueError:
        raise refuse(f"refused git URL {shown!r}: bad port", "fix the port number") from None
    if parts.query:
        raise refuse(f"refused git URL {mask_text(text.split('?')[0])}?...: git URLs with a "
                     "query string are not supported", "remove the part after '?'")
    token = parts.password if scheme in ("https", "http") else None
    user = parts.username if scheme in ("ssh", "https", "http") else None
    if user and user.startswith("-"):
        raise refuse(f"refused git URL {shown!r}: the user name starts with '-'", "fix the URL")
    if scheme in ("https", "http") and user and token is None and looks_like_token(user):
        token, user = user, None  # https://ghp_TOKEN@github.com/...: a secret, not a login
    keep_user = f"{user}@" if user and token is None else ""
    netloc = f"{keep_user}{netloc_host}"
    clean = f"{scheme}://{netloc}{parts.path}"
    where = f"{keep_user}{host.lower()}" + (f":{port}" if port else "")
    login = user if scheme in ("https", "http") else None
    return GitUrl(clean, scheme, host, token, _key(scheme, where, parts.path), login)


def _key(scheme: str, where: str, path: str) -> str:
    """Cache folder name: readable repo name plus a hash of the exact normalised URL (`x` and
    `x.git`, or `host:srv/r` and `host:/srv/r`, can be different repositories)."""
    digest = hashlib.sha256(json.dumps([scheme, where, path]).encode()).hexdigest()[:16]
    path = path.rstrip("/")
    path = path[:-4] if path.endswith(".git") else path
    name = re.sub(r"[^A-Za-z0-9._-]", "-", path.rsplit("/", 1)[-1].rsplit(":", 1)[-1])[:40]
    return f"{name or 'repo'}-{digest}"


def check_ref(ref: str) -> None:
    """git check-ref-format's rules (one-level names allowed), without starting git."""
    bad = (
        not ref or ref.startswith(("-", "/")) or ref.endswith(("/", ".", ".lock")) or ref == "@"
        or ".." in ref or "//" in ref or "@{" in ref or _BAD_REF_CHARS.search(ref)
        or any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/"))
    )
    if bad:
        raise refuse(f"refused ref {ref!r}: not a valid branch, tag or commit name",
                     "give a branch, a tag, or a commit SHA")


def is_hex(ref: str) -> bool:
    """Could be a (possibly abbreviated) commit SHA."""
    return bool(_HEX.match(ref))


def check_subdir(subdir: str) -> None:
    """Lexical checks; the symlink check happens on the checkout (`inside`)."""
    parts = subdir.split("/")
    if subdir.startswith("/") or ".." in parts or "\\" in subdir or "\0" in subdir:
        raise refuse(f"refused subdirectory {subdir!r}: it is absolute or holds '..'",
                     "give a path inside the repository, e.g. #examples/mnist")


def inside(root: Path, relative: str, what: str) -> Path:
    """root/relative, refused when it resolves outside root (through a symlink, say)."""
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise refuse(f"refused {what} {relative!r}: it leads outside the checkout",
                     "point it at a folder inside the repository")
    return target


def clean_env() -> dict[str, str]:
    """The user's environment without the GIT_* variables that could redirect our commands
    (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, GIT_CONFIG_*): an allow-list keeps the rest."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("GIT_") or k in _GIT_ENV_KEEP}


def git_env(url: GitUrl, token: str | None) -> tuple[dict[str, str], list[str]]:
    """The environment for git: no prompts, no inherited repo redirection, auth in memory.

    Returns the environment and the secret strings to mask in anything logged.
    """
    env = clean_env()
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_LFS_SKIP_SMUDGE"] = "1"  # checkouts use the mirror alone: LFS files stay pointers
    env["GIT_ASKPASS"] = ""  # empty: no askpass program either (core.askPass, SSH_ASKPASS)
    if url.scheme == "ssh" and "GIT_SSH" not in env:
        base = env.get("GIT_SSH_COMMAND") or _configured_ssh_command() or "ssh"
        env["GIT_SSH_COMMAND"] = f"{base} -o BatchMode=yes -o ConnectTimeout=30"
    secrets: list[str] = []
    if token:
        user = url.user or "x-access-token"  # Bitbucket and GitLab want the real login
        header = "Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        parts = urlsplit(url.url)
        scope = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"  # port included
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{scope}.extraHeader",
                    "GIT_CONFIG_VALUE_0": header})
        secrets += [token, header.split()[-1]]
    return env, secrets


def _configured_ssh_command() -> str | None:
    """The user's core.sshCommand, so adding BatchMode does not override it."""
    try:
        out = run_tool(["git", "config", "--get", "core.sshCommand"], timeout=10, log=None)
    except ToolFailed:
        return None
    return out.strip() or None


def _protocols(allow_insecure: bool) -> list[str]:
    allowed = ["https", "ssh"] + (["http", "git", "file"] if allow_insecure else [])
    return ["-c", "protocol.allow=never"] + [
        x for p in allowed for x in ("-c", f"protocol.{p}.allow=always")]


@dataclass(frozen=True)
class Checkout:
    """What the git stage produced, for the launch and for run.json."""

    tree: Path
    commit: str
    ref: str
    cached: bool
    seconds: float


class Mirror:
    """One bare mirror of a remote under the cache root, guarded by a file lock."""

    def __init__(self, url: GitUrl, allow_insecure: bool, log: Path | None,
                 token: str | None) -> None:
        self.url = url
        self.folder = store.cache_dir("repos") / url.key
        self.path = self.folder / MIRROR
        self.log = log
        self.env, self.secrets = git_env(url, token)
        self.base = ["git", "-c", "core.hooksPath=/dev/null", "-c", "submodule.recurse=false",
                     "-c", "core.fsmonitor=false", "-c", "gc.auto=0",
                     *_protocols(allow_insecure)]

    def git(self, *args: str, network: bool = False, env: Mapping[str, str] | None = None,
            probe: bool = False, stdin_text: str | None = None) -> str:
        """Run git on the mirror; network commands are retried on transient errors; probes
        (lookups that may fail) stay out of setup.log."""
        argv = [*self.base, f"--git-dir={self.path}", *args]
        attempts = (0.0, *RETRY_DELAYS_S) if network else (0.0,)
        for i, delay in enumerate(attempts):
            time.sleep(delay)
            try:
                return run_tool(argv, env={**self.env, **(env or {})}, timeout=GIT_TIMEOUT_S,
                                log=None if probe else self.log, secrets=self.secrets,
                                die_with_parent=network, stdin_text=stdin_text)
            except ToolFailed as exc:
                last = i == len(attempts) - 1
                if last or exc.timed_out or not any(t in exc.output for t in _TRANSIENT):
                    raise self.explain(exc) from None
        raise AssertionError("unreachable")

    def explain(self, exc: ToolFailed) -> SetupError:
        """Turn git's failure into one line a user can act on (no credentials in it)."""
        out, where = exc.output, self.url.shown
        if exc.missing:
            return SetupError("git is not installed", "install git (apt-get install git)",
                              phase="source")
        if exc.timed_out:
            return SetupError(f"git timed out after {GIT_TIMEOUT_S:g}s on {where}",
                              "check the network, or raise TORCHJOB_GIT_TIMEOUT", phase="source")
        if any(s in out for s in _AUTH):
            return SetupError(f"authentication refused by {self.url.host} for {where}",
                              "check your ssh key or agent (GIT_SSH_COMMAND), or the token "
                              "named by git_token_env", phase="source")
        if any(s in out for s in _UNREACHABLE):
            return SetupError(f"cannot reach {self.url.host or where}",
                              "check the host name, the port and the network", phase="source")
        if any(s in out for s in _MISSING):
            return SetupError(f"no git repository at {where}", "check the URL's path",
                              phase="source")
        last = out.strip().splitlines()[-1] if out.strip() else f"status {exc.returncode}"
        return SetupError(f"git failed on {where}: {last}", "see setup.log in the run folder",
                          phase="source")

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
        argv = [*self.base, "clone", "--bare", "--quiet", "--", self.url.url, str(tmp)]
        started = time.time()
        for i, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            time.sleep(delay)
            try:
                run_tool(argv, env=self.env, timeout=GIT_TIMEOUT_S, log=self.log,
                         secrets=self.secrets, die_with_parent=True)
                break
            except ToolFailed as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if i == len(RETRY_DELAYS_S) or not any(t in exc.output for t in _TRANSIENT):
                    raise self.explain(exc) from None
        for spec in _REFSPECS:
            run_tool([*self.base, f"--git-dir={tmp}", "config", "--add", "remote.origin.fetch",
                      spec], env=self.env, timeout=60, log=self.log)
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
        self.git("fetch", "--prune", "--quiet", "origin", *_REFSPECS, f"+HEAD:{REMOTE_HEAD}",
                 network=True)
        self._stamp(started)

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

    def lookup(self, names: list[str]) -> list[str | None]:
        """The commit each name points to, in one git process (cat-file --batch-check)."""
        out = self.git("cat-file", "--batch-check=%(objectname) %(objecttype)", probe=True,
                       stdin_text="".join(f"{n}^{{commit}}\n" for n in names))
        found: list[str | None] = []
        for line in out.splitlines()[: len(names)]:
            sha, _, kind = line.partition(" ")
            found.append(sha if kind == "commit" else None)
        return found + [None] * (len(names) - len(found))

    def commit_of(self, name: str) -> str | None:
        """The commit a full ref name or SHA names in the mirror, without network."""
        try:
            out = self.git("rev-parse", "--verify", "--quiet", "--end-of-options",
                           f"{name}^{{commit}}", probe=True)
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
        return self.commit_of(ref) if _HEX.match(ref) else None

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
        at = self.git("for-each-ref", f"--points-at={commit}", "--format=%(refname:short)",
                      "refs/heads", probe=True).split()
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

    def checkout(self, commit: str, dest: Path, index: Path) -> None:
        """A working tree of exactly `commit`, from the mirror alone (no network)."""
        dest.mkdir(parents=True, exist_ok=True)
        try:
            self.git(f"--work-tree={dest}", "read-tree", "--reset", "-u", commit,
                     env={"GIT_INDEX_FILE": str(index)})
        finally:
            index.unlink(missing_ok=True)


def materialize(mirror: Mirror, ref: str | None, dest: Path, index: Path) -> Checkout:
    """Resolve ref with as little network as it allows, then check the commit out into dest.

    A commit already in the mirror costs no network; a branch or tag costs one fetch, unless
    another run fetched while this one waited for the lock. All under the mirror's lock, so
    concurrent runs make one clone and one fetch at a time, and prune never pulls it away.
    """
    started = time.monotonic()
    waited_from = time.time()
    mirror.folder.mkdir(parents=True, exist_ok=True)
    with store.locked(mirror.folder.parent / f"{mirror.folder.name}.lock"):
        cloned = mirror.ensure()
        commit = None
        if ref is not None and _HEX.match(ref):  # a SHA, unless a branch or tag has that name
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
        if commit is None and ref is not None and _HEX.match(ref) and mirror.ambiguous(ref):
            raise SetupError(f"short SHA {ref!r} names more than one object in "
                             f"{mirror.url.shown}", "give more digits of the commit SHA",
                             phase="source")
        if commit is None:
            raise SetupError(f"unknown ref {ref!r} in {mirror.url.shown}",
                             "give an existing branch, tag or commit (git ls-remote lists them)",
                             phase="source")
        shown_ref = ref or mirror.default_branch(commit)
        mirror.checkout(commit, dest, index)
        store.touch(mirror.folder / "used")
    return Checkout(dest, commit, shown_ref, cached, round(time.monotonic() - started, 3))


def checkout_submodules(parent: Mirror, commit: str, tree: Path, index: Path,
                        allow_insecure: bool, depth: int = 0) -> list[str]:
    """Check out the submodules of commit (only when the spec asks), each through its own
    mirror and the same URL allow-list; returns the submodule paths checked out."""
    if depth > 4:
        raise refuse("submodules nested more than 5 deep", "flatten the repository")
    listing = parent.git("ls-tree", "-r", "-z", "--full-tree", commit)
    links = [entry.split("\t", 1) for entry in listing.split("\0") if entry.startswith("160000 ")]
    if not links:
        return []
    try:
        raw = run_tool(["git", "config", "-f", str(tree / ".gitmodules"), "-z", "--get-regexp",
                        r"^submodule\..*\.(path|url)$"], timeout=30, log=None)
    except ToolFailed:
        raise refuse("the repository has submodules but no readable .gitmodules",
                     "fix .gitmodules, or set submodules: false") from None
    names: dict[str, dict[str, str]] = {}
    for item in filter(None, raw.split("\0")):
        key, _, value = item.partition("\n")
        name, _, field = key[len("submodule."):].rpartition(".")
        names.setdefault(name, {})[field] = value
    urls = {v["path"]: v.get("url", "") for v in names.values() if "path" in v}
    done = []
    for meta, path in links:
        sha = meta.split()[2]
        url = urls.get(path)
        if not url:
            raise refuse(f"submodule {path!r} has no URL in .gitmodules", "fix .gitmodules")
        if url.startswith(("./", "../")):
            url = _relative_url(parent.url.url, url)
        sub = Mirror(parse_url(url, allow_insecure), allow_insecure, parent.log, None)
        dest = inside(tree, path, "submodule path")
        for folder in [dest, *dest.parents]:
            if folder == tree.resolve():
                break
            if folder.is_symlink():
                raise refuse(f"refused submodule path {path!r}: it goes through a symlink",
                             "fix the repository")
        materialize(sub, sha, dest, index)
        checkout_submodules(sub, sha, dest, index, allow_insecure, depth + 1)
        done.append(path)
    return done


def _relative_url(base: str, relative: str) -> str:
    """`../lib.git` against the superproject's URL, as git resolves it."""
    import posixpath

    if "://" in base:
        parts = urlsplit(base)
        path = posixpath.normpath(posixpath.join(parts.path, relative))
        return f"{parts.scheme}://{parts.netloc}{path}"
    head, _, path = base.partition(":")
    return f"{head}:{posixpath.normpath(posixpath.join(path, relative))}"


@dataclass(frozen=True)
class CachedRepo:
    """One mirror in the cache, for `torchjob cache list`."""

    key: str
    url: str
    size_bytes: int
    last_used: float
    ready: bool


def list_mirrors() -> list[CachedRepo]:
    """Every mirror folder, ready or not (a folder without its marker is garbage)."""
    root = store.cache_home() / "repos"
    out = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        ready = store.is_ready(folder)
        url = (folder / store.READY).read_text() if ready else "(incomplete)"
        stamps = [folder / "used", folder / "fetched", folder]
        last = max(p.stat().st_mtime for p in stamps if p.exists())
        out.append(CachedRepo(folder.name, url, store.tree_size(folder), last, ready))
    return out


def prune(unused_for_s: float) -> list[CachedRepo]:
    """Remove mirrors unused for that long, and incomplete ones; each under its lock."""
    removed = []
    now = time.time()
    for repo in list_mirrors():
        if repo.ready and now - repo.last_used < unused_for_s:
            continue
        folder = store.cache_home() / "repos" / repo.key
        with store.locked(folder.parent / f"{folder.name}.lock"):
            store.remove_entry(folder)
        removed.append(repo)
    return removed
