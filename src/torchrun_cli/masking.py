"""Secret-looking names and their values: masked in records, plans and messages.

A name is secret when it looks like one (token, secret, password, key, auth, credential);
values are also cleaned of credentials inside URLs (`scheme://user:PASSWORD@host`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MASK = "****"
_SECRET_NAME = re.compile(
    r"token|secret|pass|credential|auth|api[_-]?key|private[_-]?key|access[_-]?key"
    r"|(^|[_-])key$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


def is_secret(name: str) -> bool:
    """Names whose values are never shown or recorded (tokens, passwords, keys)."""
    return bool(_SECRET_NAME.search(name))


def mask_text(value: str) -> str:
    """A value with any URL password replaced by ****."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value)


def mask_mapping(values: Mapping[str, str | bool]) -> dict[str, str | bool]:
    """A copy with the values of secret-looking names masked, and URL passwords in the rest."""
    return {k: v if isinstance(v, bool) else MASK if is_secret(k) else mask_text(v)
            for k, v in values.items()}


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
