"""Checks for spec values: each returns the cleaned value or None, and records a problem
(where, key path, what, fix) instead of raising, so every problem is reported at once."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Iterator
from typing import Any

from torchrun_cli.durations import parse_duration
from torchrun_cli.errors import Problem
from torchrun_cli.spec.keys import ENV_NAME, PARAM_KEY
from torchrun_cli.spec.yaml import Located, source_text, type_name


class Checker:
    """Collects problems; each check returns the cleaned value or None."""

    def __init__(self, problems: list[Problem], prefix: str = "") -> None:
        self.problems = problems
        self.prefix = prefix  # `steps.train.`: where the keys of a pipeline's step are
        self.start = len(problems)  # problems before this checker's
        self.guessed: set[str] = set()  # keys a misspelling probably meant

    def add(self, where: str, key: str, message: str, fix: str) -> None:
        self.problems.append(Problem(where, self.prefix + key, message, fix))

    @property
    def problems_added(self) -> int:
        return len(self.problems) - self.start

    def unknown_keys(
        self, data: dict[Any, Any], known: Iterable[str], prefix: str, src: Located
    ) -> None:
        names = tuple(known)
        for key in data:
            if key in names:
                continue
            guess = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            self.guessed.update(prefix + g for g in guess)
            fix = (
                f"did you mean `{prefix}{guess[0]}`?" if guess else f"use one of {', '.join(names)}"
            )
            self.add(src.where(data, key), f"{prefix}{key}", "unknown key", fix)

    def no_nul(self, value: str, where: str, path: str) -> str | None:
        if "\0" in value:
            self.add(
                where,
                path,
                "contains a NUL byte, which no process argument can carry",
                "remove the NUL character",
            )
            return None
        return value

    def string(self, value: object, where: str, path: str) -> str | None:
        """A non-empty string; a number counts, as it was written."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = source_text(value)
        if not isinstance(value, str) or not value:
            got = "an empty string" if value == "" else type_name(value)
            self.add(
                where,
                path,
                f"expected a non-empty string, got {got}",
                f'write `{path.rsplit(".", 1)[-1]}: "..."`',
            )
            return None
        return self.no_nul(value, where, path)

    def text(self, value: object, where: str, path: str) -> str | None:
        """A string, or a number written as the file has it; booleans and nulls refused."""
        if isinstance(value, str):
            return self.no_nul(value, where, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return source_text(value)
        self.add(
            where,
            path,
            f"expected a string or a number, got {type_name(value)}",
            'quote the value, e.g. "yes"',
        )
        return None

    def boolean(self, value: object, where: str, path: str) -> bool | None:
        if not isinstance(value, bool):
            name = path.rsplit(".", 1)[-1]
            self.add(
                where,
                path,
                f"expected true or false, got {type_name(value)}",
                f"write `{name}: true` or `{name}: false`",
            )
            return None
        return value

    def string_list(self, value: object, where: str, path: str) -> list[str] | None:
        """A list of non-empty strings; one string is a list of one."""
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.add(
                where,
                path,
                "expected a list of strings",
                f'write {path.rsplit(".", 1)[-1]}: ["..."]',
            )
            return None
        out = [self.no_nul(v, where, f"{path}[{i}]") for i, v in enumerate(value)]
        return None if None in out else [v for v in out if v is not None]

    def duration(self, value: object, where: str, path: str) -> float | None:
        try:
            return parse_duration(value)
        except ValueError as exc:
            shown = type_name(value) if isinstance(value, (list, dict)) else repr(value)
            self.add(
                where,
                path,
                f"bad duration {shown} ({exc})",
                "write seconds or a number with a unit: 90s, 15m, 2h, 1h30m",
            )
            return None

    def args(self, value: object, where: str, path: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                self.add(
                    where,
                    path,
                    f"cannot split the string: {exc}",
                    "balance the quotes, or write args as a YAML list",
                )
                return None
        if not isinstance(value, list):
            self.add(
                where,
                path,
                f"expected a list or a string, got {type_name(value)}",
                'write args: ["--epochs", "1"]',
            )
            return None
        out = [self.text(item, where, f"{path}[{i}]") for i, item in enumerate(value)]
        return None if None in out else tuple(x for x in out if x is not None)

    def mapping(self, value: object, where: str, path: str) -> dict[Any, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(
                where,
                path,
                f"expected a mapping, got {type_name(value)}",
                f"write `{path}:` followed by indented `name: value` lines",
            )
            return None
        return value

    def param(self, key: object, value: object, where: str, path: str) -> str | bool | None:
        """One parameter: a name the script's parser can take, a string, number or boolean."""
        if not isinstance(key, str) or not PARAM_KEY.fullmatch(key):
            self.add(
                where,
                path,
                "a parameter name is letters, digits, '_', '-', '.' (or an option: -v, --x)",
                "rename the parameter, e.g. `lr` or `batch-size`",
            )
            return None
        if isinstance(value, bool):
            return value
        return self.text(value, where, path)

    def env_var(self, key: object, value: object, where: str, path: str) -> str | None:
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            self.add(
                where,
                path,
                "an environment variable name must be letters, digits and "
                "'_', not starting with a digit",
                "rename it, e.g. OMP_NUM_THREADS",
            )
            return None
        return self.text(value, where, path)

    def pairs(self, raw: Iterable[str], flag: str, example: str) -> Iterator[tuple[str, str]]:
        """KEY=VALUE flag values; a bad one is reported without its value (a secret?)."""
        for item in raw:
            key, sep, value = item.partition("=")
            if not sep or not key:
                self.add(
                    "command line",
                    flag,
                    "a value is not KEY=VALUE (not shown: it may be a secret)",
                    f"write {flag} KEY=VALUE, e.g. {flag.split('/')[0]} {example}",
                )
                continue
            yield key, value
