"""How every git command of torchjob runs and what its failures mean: the environment (no
prompts, no inherited repository redirection, a token as an HTTP header in memory), the
protocols allowed, and git's output turned into one line a user can act on."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlsplit

from torchrun_cli.errors import SetupError
from torchrun_cli.source.giturl import GitUrl
from torchrun_cli.source.paths import clean_env
from torchrun_cli.tools import ToolFailed, run_tool

_AUTH = (
    "Permission denied",
    "Authentication failed",
    "could not read Username",
    "could not read Password",
    "Host key verification failed",
    "error: 401",
    "error: 403",
    "HTTP 401",
    "HTTP 403",
    "terminal prompts disabled",
)
_UNREACHABLE = (
    "Could not resolve host",
    "Connection refused",
    "Network is unreachable",
    "No route to host",
    "Connection timed out",
    "unable to connect",
    "Failed to connect",
    "Could not resolve hostname",
    "connect to host",
)
_MISSING = (
    "does not appear to be a git repository",
    "Repository not found",
    "not found",
    "error: 404",
    "No such file or directory",
    "does not exist",
)
TRANSIENT = (
    "Connection reset",
    "early EOF",
    "RPC failed",
    "error: 50",
    "HTTP 50",
    "Connection timed out",
    "Could not resolve host",
    "Connection refused",
    "unexpected disconnect",
    "remote end hung up unexpectedly",
)


_PROGRESS = re.compile(
    r"^(?:remote:\s*)?(Receiving objects|Resolving deltas|Counting objects"
    r"|Compressing objects|Updating files):\s+(\d+)%(?:.*?,\s*([\d.]+ [KMG]iB))?"
)


def git_progress(line: str) -> str | None:
    """A detail from git's `--progress` output (`receiving 45%, 412.00 MiB`), else None."""
    m = _PROGRESS.match(line.strip())
    if m is None:
        return None
    what = m.group(1).split()[0].lower()
    return f"{what} {m.group(2)}%" + (f", {m.group(3)}" if m.group(3) else "")


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
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{scope}.extraHeader",
                "GIT_CONFIG_VALUE_0": header,
            }
        )
        secrets += [token, header.split()[-1]]
    return env, secrets


def _configured_ssh_command() -> str | None:
    """The user's core.sshCommand, so adding BatchMode does not override it."""
    try:
        out = run_tool(["git", "config", "--get", "core.sshCommand"], timeout=10, log=None)
    except ToolFailed:
        return None
    return out.strip() or None


def protocols(allow_insecure: bool) -> list[str]:
    allowed = ["https", "ssh"] + (["http", "git", "file"] if allow_insecure else [])
    return ["-c", "protocol.allow=never"] + [
        x for p in allowed for x in ("-c", f"protocol.{p}.allow=always")
    ]


def explain(exc: ToolFailed, url: GitUrl, timeout: float) -> SetupError:
    """Turn git's failure into one line a user can act on (no credentials in it)."""
    out, where = exc.output, url.shown
    if exc.missing:
        return SetupError(
            "git is not installed", "install git (apt-get install git)", phase="source"
        )
    if exc.timed_out:
        return SetupError(
            f"git timed out after {timeout:g}s on {where}",
            "check the network, or raise TORCHJOB_GIT_TIMEOUT",
            phase="source",
        )
    if any(s in out for s in _AUTH):
        return SetupError(
            f"authentication refused by {url.host} for {where}",
            "check your ssh key or agent (GIT_SSH_COMMAND), or the token named by git_token_env",
            phase="source",
        )
    if any(s in out for s in _UNREACHABLE):
        return SetupError(
            f"cannot reach {url.host or where}",
            "check the host name, the port and the network",
            phase="source",
        )
    if any(s in out for s in _MISSING):
        return SetupError(f"no git repository at {where}", "check the URL's path", phase="source")
    last = out.strip().splitlines()[-1] if out.strip() else f"status {exc.returncode}"
    return SetupError(
        f"git failed on {where}: {last}", "see setup.log in the run folder", phase="source"
    )
