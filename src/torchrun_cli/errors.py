"""Errors that carry what the user must read and the exit status the CLI maps them to."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import NamedTuple


class TorchjobError(Exception):
    """Base: a message for the user, an optional fix, and the documented exit status."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def lines(self) -> list[str]:
        """The text the CLI prints, one problem per line."""
        return [self.message + (f"; fix: {self.fix}" if self.fix else "")]


class UsageError(TorchjobError):
    """Bad flags, bad spec, a missing local path, an unknown run id: exit 2."""

    exit_code = 2


class Problem(NamedTuple):
    """One thing wrong with the spec: where (file:line or flag), which key, what, how to fix."""

    where: str
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}; fix: {self.fix}"


class SpecError(UsageError):
    """Every problem found in a spec and its flags, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class SettingsError(UsageError):
    """Bad values of torchjob's own variables, all of them at once: exit 2."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def lines(self) -> list[str]:
        return list(self.problems)


class SetupError(TorchjobError):
    """Preparing the run failed before the script started (source, environment): exit 125."""

    exit_code = 125

    def __init__(self, message: str, fix: str | None = None, phase: str = "setup") -> None:
        super().__init__(message, fix)
        self.phase = phase


class LaunchError(TorchjobError):
    """The interpreter or script cannot be started: 127 (not found) or 126 (not executable)."""

    def __init__(self, message: str, exit_code: int, fix: str | None = None) -> None:
        super().__init__(message, fix)
        self.exit_code = exit_code


def did_you_mean(name: str, known: Iterable[str], otherwise: str) -> str:
    """The fix for an unknown name: the closest known one, else `otherwise`."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else otherwise
