"""Git submodules, checked out only when the spec asks (`submodules: true`): each through its
own mirror, under the same URL allow-list as the project itself, never through a symlink."""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import urlsplit

from torchrun_cli.source.git import Mirror, materialize
from torchrun_cli.source.giturl import parse_url, refuse
from torchrun_cli.source.paths import inside
from torchrun_cli.tools import ToolFailed, run_tool


def checkout_submodules(
    parent: Mirror, commit: str, tree: Path, index: Path, allow_insecure: bool, depth: int = 0
) -> list[str]:
    """Check out the submodules of commit (only when the spec asks), each through its own
    mirror and the same URL allow-list; returns the submodule paths checked out."""
    if depth > 4:
        raise refuse("submodules nested more than 5 deep", "flatten the repository")
    listing = parent.git("ls-tree", "-r", "-z", "--full-tree", commit)
    links = [entry.split("\t", 1) for entry in listing.split("\0") if entry.startswith("160000 ")]
    if not links:
        return []
    try:
        raw = run_tool(
            [
                "git",
                "config",
                "-f",
                str(tree / ".gitmodules"),
                "-z",
                "--get-regexp",
                r"^submodule\..*\.(path|url)$",
            ],
            timeout=30,
            log=None,
        )
    except ToolFailed:
        raise refuse(
            "the repository has submodules but no readable .gitmodules",
            "fix .gitmodules, or set submodules: false",
        ) from None
    names: dict[str, dict[str, str]] = {}
    for item in filter(None, raw.split("\0")):
        key, _, value = item.partition("\n")
        name, _, field = key[len("submodule.") :].rpartition(".")
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
        sub = Mirror(
            parse_url(url, allow_insecure),
            allow_insecure,
            parent.log,
            None,
            parent.cache_home,
            parent.timeout,
        )
        dest = inside(tree, path, "submodule path")
        for folder in [dest, *dest.parents]:
            if folder == tree.resolve():
                break
            if folder.is_symlink():
                raise refuse(
                    f"refused submodule path {path!r}: it goes through a symlink",
                    "fix the repository",
                )
        materialize(sub, sha, dest, index)
        checkout_submodules(sub, sha, dest, index, allow_insecure, depth + 1)
        done.append(path)
    return done


def _relative_url(base: str, relative: str) -> str:
    """`../lib.git` against the superproject's URL, as git resolves it."""
    if "://" in base:
        parts = urlsplit(base)
        path = posixpath.normpath(posixpath.join(parts.path, relative))
        return f"{parts.scheme}://{parts.netloc}{path}"
    head, _, path = base.partition(":")
    return f"{head}:{posixpath.normpath(posixpath.join(path, relative))}"
