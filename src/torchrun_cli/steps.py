"""Setup steps as the user sees them: each stage (the checkout, the environment build) says when
a step starts, what it is doing (`cloning ... 45%`, `installing 12 packages`) and when it ends;
the console decides how that looks (a live line on a terminal, plain lines in CI, GitHub
Actions groups). The stages depend only on this protocol, never on the console.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Step(Protocol):
    """One step under way."""

    def detail(self, text: str) -> None:
        """What it is doing now (`45% of 412 MB`); shown on a terminal, kept short."""

    def rename(self, name: str) -> None:
        """A better name learned on the way (`installing 12 packages`)."""


class Steps(Protocol):
    """Where steps are reported. `detailed` is False when nobody would see the details, so a
    stage may skip the work of finding them out (counting a checkout's files)."""

    detailed: bool

    def step(self, name: str) -> contextlib.AbstractContextManager[Step]:
        """A step from `with` to its end; an exception marks it failed and goes on."""

    def close(self) -> None:
        """The setup is over: the job starts, or the run failed."""


class _Unseen:
    def detail(self, text: str) -> None:
        pass

    def rename(self, name: str) -> None:
        pass


def plural(count: int, word: str) -> str:
    """`file` or `files`, as the count needs."""
    return word if count == 1 else word + "s"


class Silent:
    """Steps nobody sees (--quiet, validate, tests of a stage)."""

    detailed = False

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        yield _Unseen()

    def close(self) -> None:
        pass
