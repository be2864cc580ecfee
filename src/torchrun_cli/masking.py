"""Secret-looking names and their values: masked in records, plans and messages.

A name is secret when it looks like one (token, secret, password, key, auth, credential);
values are also cleaned of credentials inside URLs (`scheme://user:PASSWORD@host`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

MASK = "****"
_SECRET_NAME = re.compile(
    r"token|secret|pass|credential|auth|api[_-]?key|private[_-]?key|access[_-]?key"
    r"|(^|[_-])key$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"://([^/@:\s]*):([^/\s]*)@")  # to the last @: pip allows @ in it
_URL_USER = re.compile(r"(://)([^/@:\s]+)@")
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "glptt-")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_.~-]{32,}$")


def looks_like_token(user: str) -> bool:
    """A URL user name that is really a token (`https://ghp_...@github.com/`): GitHub and
    GitLab accept that form, so it is a secret like a password."""
    return user.startswith(_TOKEN_PREFIXES) or bool(_TOKEN_CHARS.match(user))


def is_secret(name: str) -> bool:
    """Names whose values are never shown or recorded (tokens, passwords, keys)."""
    return bool(_SECRET_NAME.search(name))


def mask_text(value: str) -> str:
    """A value with any URL password, or user name that is a token, replaced by ****."""
    return _hide(value, lambda secret: MASK)


def _hide(value: str, hide: Callable[[str], str]) -> str:
    """value with each URL password, and each URL user name that is a token (alone or with a
    password: `https://ghp_...:x-oauth-basic@host`), replaced by what hide gives for it."""

    def login(m: re.Match[str]) -> str:
        user = hide(m[1]) if looks_like_token(m[1]) else m[1]
        return f"://{user}:{hide(m[2])}@"

    value = _URL_PASSWORD.sub(login, value)
    return _URL_USER.sub(
        lambda m: f"{m[1]}{hide(m[2])}@" if looks_like_token(m[2]) else m[0], value
    )


def lift_secrets(value: str, prefix: str, lifted: dict[str, str]) -> str:
    """value with each secret mask_text would hide replaced by `${PREFIX_n}`, the secret put
    into lifted under that name: pip and uv expand such a variable in a requirements file's
    URLs, so the secret reaches them in their environment, not their argv."""

    def put(secret: str) -> str:
        if not secret:  # `https://TOKEN:@host`: pip would not expand an empty variable
            return secret
        name = f"{prefix}_{len(lifted)}"
        lifted[name] = secret
        return "${" + name + "}"

    return _hide(value, put)


def hide_query(url: str) -> str:
    """A download URL without its query string, which may carry a signature (a pre-signed S3
    URL): the part that names the file is enough to read."""
    if "://" in url and "?" in url:
        head, _, rest = url.partition("?")
        fragment = rest.partition("#")[2]
        return f"{head}?{MASK}" + (f"#{fragment}" if fragment else "")
    return url


def mask_mapping(values: Mapping[str, str | bool]) -> dict[str, str | bool]:
    """A copy with the values of secret-looking names masked, and URL passwords in the rest."""
    return {
        k: v if isinstance(v, bool) else MASK if is_secret(k) else mask_text(v)
        for k, v in values.items()
    }


def mask_argv(argv: Sequence[str]) -> list[str]:
    """argv with the value of every secret-looking option masked: `--token X`, `--token=X`."""
    out = [mask_text(a) for a in argv]
    for i, arg in enumerate(out):
        name, eq, _ = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or not is_secret(name):
            continue
        if eq:
            out[i] = f"{arg.split('=', 1)[0]}={MASK}"
        elif i + 1 < len(out) and not out[i + 1].startswith("-"):
            out[i + 1] = MASK
    return out


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret value (long enough to be one) with ****."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text
