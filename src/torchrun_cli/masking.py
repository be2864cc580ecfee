"""Secret-looking names and their values: masked in records, plans and messages."""

from __future__ import annotations

import re
from collections.abc import Mapping

MASK = "****"
_SECRET_NAME = re.compile(
    r"token|secret|passw(or)?d|passphrase|credential|auth|api[_-]?key|private[_-]?key"
    r"|access[_-]?key|(^|[_-])key$",
    re.IGNORECASE,
)

def is_secret(name: str) -> bool:
    """Names whose values are never shown or recorded (tokens, passwords, keys)."""
    return bool(_SECRET_NAME.search(name))


def mask_mapping(values: Mapping[str, str | bool]) -> dict[str, str | bool]:
    """A copy with the values of secret-looking names masked."""
    return {k: (MASK if is_secret(k) and not isinstance(v, bool) else v) for k, v in values.items()}


def mask_argv(argv: list[str], params: Mapping[str, str | bool]) -> list[str]:
    """argv with the value after each secret `--key` masked (for records and displays)."""
    secret_flags = {f"--{k}" for k, v in params.items() if is_secret(k) and not isinstance(v, bool)}
    out = list(argv)
    for i in range(1, len(out)):
        if out[i - 1] in secret_flags:
            out[i] = MASK
    return out
