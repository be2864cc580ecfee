"""Which git sources torchjob will touch: an allow-list of URL forms, refs checked by git's own
rules, and #subdirectories that stay inside the checkout, all decided before any git process
starts (DESIGN.md section 4). A refusal is a setup error (exit 125) that names what it refused,
with credentials masked.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from torchrun_cli.errors import SetupError
from torchrun_cli.masking import looks_like_token, mask_text

SECURE = ("https", "ssh")
INSECURE = ("http", "git", "file")
_SCP = re.compile(
    r"^(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*"
    r"|\[[0-9A-Fa-f:.]+\]):(?P<path>[^\s]+)$"
)
_HOST = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])$")
_TRANSPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


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
    shown = mask_text(text)  # passwords and tokens masked; a refused user name is shown
    if text.startswith("-") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise refuse(
            f"refused git URL {shown!r}: it starts with '-' or holds spaces or control characters",
            "give an https, ssh or user@host:path URL",
        )
    if _TRANSPORT.match(text):
        raise refuse(
            f"refused git URL {shown!r}: transport prefixes like `ext::` run commands",
            "give an https, ssh or user@host:path URL",
        )
    scp = _SCP.match(text)
    if scp and "://" not in text:
        if scp["path"].startswith("-"):
            raise refuse(
                f"refused git URL {shown!r}: the path starts with '-'", "give the repository path"
            )
        return GitUrl(
            text,
            "ssh",
            scp["host"],
            None,
            _key("scp", scp["user"] + "@" + scp["host"].lower(), scp["path"]),
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SECURE + INSECURE:
        raise refuse(
            f"refused git URL {shown!r}: scheme {scheme or '(none)'!r} is not allowed",
            "use https://, ssh:// or user@host:path",
        )
    if scheme in INSECURE and not allow_insecure:
        raise refuse(
            f"refused git URL {shown!r}: {scheme}:// is not encrypted or not remote",
            "use https or ssh, or pass --allow-insecure-source (spec: allow_insecure_source: true)",
        )
    host = parts.hostname or ""
    netloc_host = parts.netloc.rpartition("@")[2]
    bare_host = (
        netloc_host.split("]")[0] + "]"
        if netloc_host.startswith("[")
        else netloc_host.rsplit(":", 1)[0]
    )
    if scheme != "file" and (not _HOST.match(bare_host) or not parts.path.strip("/")):
        raise refuse(
            f"refused git URL {shown!r}: bad host or empty path",
            "write it as https://host/org/repo.git",
        )
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise refuse(
            f"refused git URL {shown!r}: file:// takes a local absolute path",
            "write file:///path/to/repo.git",
        )
    try:
        port = parts.port
    except ValueError:
        raise refuse(f"refused git URL {shown!r}: bad port", "fix the port number") from None
    if parts.query:
        raise refuse(
            f"refused git URL {mask_text(text.split('?')[0])}?...: git URLs with a "
            "query string are not supported",
            "remove the part after '?'",
        )
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
        not ref
        or ref.startswith(("-", "/"))
        or ref.endswith(("/", ".", ".lock"))
        or ref == "@"
        or ".." in ref
        or "//" in ref
        or "@{" in ref
        or _BAD_REF_CHARS.search(ref)
        or any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/"))
    )
    if bad:
        raise refuse(
            f"refused ref {ref!r}: not a valid branch, tag or commit name",
            "give a branch, a tag, or a commit SHA",
        )


def is_hex(ref: str) -> bool:
    """Could be a (possibly abbreviated) commit SHA."""
    return bool(HEX.match(ref))


def check_subdir(subdir: str) -> None:
    """Lexical checks; the symlink check happens on the checkout (`inside`)."""
    parts = subdir.split("/")
    if subdir.startswith("/") or ".." in parts or "\\" in subdir or "\0" in subdir:
        raise refuse(
            f"refused subdirectory {subdir!r}: it is absolute or holds '..'",
            "give a path inside the repository, e.g. #examples/mnist",
        )
