"""Checks for spec values: each returns the cleaned value or None, and records a problem
(where, key path, what, fix) instead of raising, so every problem is reported at once."""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterator
from typing import Any

from torchrun_cli.errors import Problem
from torchrun_cli.yamlfile import Located, source_text, type_name

PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 365 * 86400.0


def parse_duration(text: str | int | float) -> float:
    """`90s`, `15m`, `2h`, `1h30m`, `1d` or plain seconds; raises ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError("not a duration")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = text.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            seconds = float(s)
        elif s and _DURATION_PART.sub("", s) == "":
            seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(s))
        else:
            raise ValueError("not a duration")
    if not seconds > 0:
        raise ValueError("must be more than zero")
    if seconds > MAX_DURATION_S:
        raise ValueError("must be at most 365 days")
    return seconds



class Checker:
    """Collects problems; each check returns the cleaned value or None."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.guessed: set[str] = set()  # keys a misspelling probably meant

    def add(self, where: str, key: str, message: str, fix: str) -> None:
        self.problems.append(Problem(where, key, message, fix))

    def unknown_keys(
        self, data: dict[Any, Any], known: tuple[str, ...], prefix: str, src: Located
    ) -> None:
        for key in data:
            if key in known:
                continue
            guess = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            self.guessed.update(prefix + g for g in guess)
            fix = (f"did you mean `{prefix}{guess[0]}`?" if guess
                   else f"use one of {', '.join(known)}")
            self.add(src.where(data, key), f"{prefix}{key}", "unknown key", fix)

    def string(self, data: dict[Any, Any], key: str, path: str, src: Located) -> str | None:
        value = data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = source_text(value)
        if not isinstance(value, str) or not value:
            got = "an empty string" if value == "" else type_name(value)
            self.add(src.where(data, key), path, f"expected a non-empty string, got {got}",
                     f'write `{path.rsplit(".", 1)[-1]}: "..."`')
            return None
        return self._no_nul(value, src.where(data, key), path)

    def boolean(self, data: dict[Any, Any], key: str, src: Located) -> bool | None:
        value = data[key]
        if not isinstance(value, bool):
            self.add(src.where(data, key), key, f"expected true or false, got {type_name(value)}",
                     f"write `{key}: true` or `{key}: false`")
            return None
        return value

    def string_list(self, data: dict[Any, Any], key: str, src: Located,
                    path: str | None = None) -> list[str] | None:
        value = data[key]
        value = [value] if isinstance(value, str) else value
        where, path = src.where(data, key), path or key
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.add(where, path, "expected a list of strings", f'write {key}: ["..."]')
            return None
        out = [self._no_nul(v, where, f"{path}[{i}]") for i, v in enumerate(value)]
        return None if None in out else [v for v in out if v is not None]

    def _no_nul(self, value: str, where: str, path: str) -> str | None:
        if "\0" in value:
            self.add(where, path, "contains a NUL byte, which no process argument can carry",
                     "remove the NUL character")
            return None
        return value

    def scalar_text(self, value: object, where: str, path: str) -> str | None:
        """A string, or a number written as Python prints it; booleans and nulls refused."""
        if isinstance(value, str):
            return self._no_nul(value, where, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return source_text(value)
        self.add(where, path, f"expected a string or a number, got {type_name(value)}",
                 'quote the value, e.g. "yes"')
        return None

    def duration(self, value: object, where: str, path: str) -> float | None:
        try:
            return parse_duration(value)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            self.add(where, path, f"bad duration {value!r} ({exc})",
                     "write seconds or a number with a unit: 90s, 15m, 2h, 1h30m")
            return None

    def args(self, data: dict[Any, Any], src: Located) -> tuple[str, ...] | None:
        value = data["args"]
        where = src.where(data, "args")
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                self.add(where, "args", f"cannot split the string: {exc}",
                         "balance the quotes, or write args as a YAML list")
                return None
        if not isinstance(value, list):
            self.add(where, "args", f"expected a list or a string, got {type_name(value)}",
                     'write args: ["--epochs", "1"]')
            return None
        out = [self.scalar_text(item, where, f"args[{i}]") for i, item in enumerate(value)]
        return None if None in out else tuple(x for x in out if x is not None)

    def mapping(self, data: dict[Any, Any], key: str, src: Located) -> dict[Any, Any] | None:
        value = data[key]
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(src.where(data, key), key, f"expected a mapping, got {type_name(value)}",
                     f"write `{key}:` followed by indented `name: value` lines")
            return None
        return value

    def param_entries(
        self, entries: dict[Any, Any], src: Located, out: dict[str, str | bool]
    ) -> None:
        for key, value in entries.items():
            where = src.where(entries, key)
            path = f"params.{key}"
            if not isinstance(key, str) or not PARAM_KEY.fullmatch(key):
                self.add(where, path, "a parameter name must be letters, digits, '_', '-', '.'",
                         "rename the parameter, e.g. `lr` or `batch-size`")
                continue
            if isinstance(value, bool):
                out[key] = value
                continue
            text = self.scalar_text(value, where, path)
            if text is not None:
                out[key] = text

    def env_entries(self, entries: dict[Any, Any], src: Located, out: dict[str, str]) -> None:
        for key, value in entries.items():
            where = src.where(entries, key)
            self._env_one(key, value, where, f"env.{key}", out)

    def _env_one(self, key: object, value: object, where: str, path: str,
                 out: dict[str, str]) -> None:
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            self.add(where, path, "an environment variable name must be letters, digits and '_', "
                     "not starting with a digit", "rename it, e.g. OMP_NUM_THREADS")
            return
        text = self.scalar_text(value, where, path)
        if text is not None:
            out[key] = text

    def pairs(self, raw: tuple[str, ...], flag: str, example: str) -> Iterator[tuple[str, str]]:
        for item in raw:
            key, sep, value = item.partition("=")
            if not sep or not key:
                self.add("command line", flag, "a value is not KEY=VALUE (not shown: it may be "
                         "a secret)",
                         f"write {flag} KEY=VALUE, e.g. {flag.split('/')[0]} {example}")
                continue
            yield key, value
