"""Config files: where they are (the user's config.toml, the nearest pyproject.toml with a
[tool.torchjob] table), their TOML, the line of each key, and the checks of their values.

tomllib is imported only when a file exists, and a pyproject.toml that cannot hold the table
is passed over without it: with no config file, this costs a stat per folder up to the root.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from torchrun_cli.durations import parse_duration
from torchrun_cli.errors import Problem
from torchrun_cli.store import NotReadable, read_small

# The values of the spec keys python.manager and tty (spec/keys.py takes them from here: the
# config files, which may set their defaults, are read below the spec layer).
MANAGERS = ("none", "virtualenv", "uv", "conda")
TTY_MODES = ("auto", "always", "never")
MAX_CONFIG_BYTES = 1 << 20
TABLE = ("tool", "torchjob")  # the project's table in pyproject.toml
# Patterns, compiled (and cached by `re`) when first used: 0.5 ms off a start without config.
# Whether a pyproject.toml may hold the table, before paying ~2 ms for tomllib: `[tool.torchjob]`,
# `tool.torchjob.x = ...`, or `torchjob = ...` / `torchjob.x = ...` under `[tool]`.
_MAYBE_TABLE = rb"""(?m)^[ \t]*\[*[ \t]*(["']?tool["']?[ \t]*\.[ \t]*)?["']?torchjob\b"""
_HEADER = r"""^\s*\[\[?\s*([\w."' -]+?)\s*\]\]?\s*(#.*)?$"""  # `["a", "b"],` in an array: none
_ASSIGN = r"""^\s*((?:[\w-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[\w-]+|"[^"]*"|'[^']*'))*)\s*="""
_PART = r"""[\w-]+|"[^"]*"|'[^']*'"""
_AT_LINE = r" \(at line (\d+), column \d+\)$"


def _type(value: object) -> str:
    names = {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else "a date")


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else _type(value)
        raise ValueError(f"expected a non-empty string, got {got}")
    if "\0" in value:
        raise ValueError("contains a NUL byte")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[object], object]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type(value)}")
        if value not in choices:
            raise ValueError(f"unknown value {value!r}")
        return value

    return check


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type(value)}")
    return value


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        shown = _type(value) if isinstance(value, (list, dict)) else repr(value)
        raise ValueError(f"bad duration {shown} ({exc})") from None


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return value


class ConfigKey(NamedTuple):
    """One key of a config file: its check, how a good value looks, whether it is a path
    (`folder`: relative to the file's folder; `command`: so too when it holds a `/`, else
    looked up on PATH), and the spec key it is the default of."""

    name: str
    check: Callable[[object], object]
    fix: str
    path: str | None = None
    spec: str | None = None


CONFIG_KEYS = (
    ConfigKey("runs_dir", _text, 'write a folder, e.g. runs_dir = "~/runs"', "folder"),
    ConfigKey("home", _text, 'write a folder, e.g. home = "~/torchjob"', "folder"),
    ConfigKey(
        "env_manager",
        _choice(MANAGERS),
        f"use one of {', '.join(MANAGERS)}",
        spec="python.manager",
    ),
    ConfigKey(
        "python",
        _text,
        'write a path or a name on PATH, e.g. python = "python3.11"',
        "command",
        "python.interpreter",
    ),
    ConfigKey("grace", _duration, 'write e.g. grace = "30s" (90s, 15m, 2h)', spec="grace"),
    ConfigKey("tty", _choice(TTY_MODES), f"use one of {', '.join(TTY_MODES)}", spec="tty"),
    ConfigKey("quiet", _flag, "write quiet = true or quiet = false"),
    ConfigKey("git_timeout", _duration, 'write seconds or a duration, e.g. git_timeout = "10m"'),
    ConfigKey("build_timeout", _duration, 'write seconds or a duration, e.g. build_timeout = "2h"'),
    ConfigKey(
        "archive_max_bytes", _count, "write a whole number, e.g. archive_max_bytes = 8_000_000_000"
    ),
    ConfigKey(
        "conda", _text, 'write a path or a name on PATH, e.g. conda = "micromamba"', "command"
    ),
)
BY_NAME = {key.name: key for key in CONFIG_KEYS}


class ConfigFile(NamedTuple):
    """A config file torchjob looked at: `user` or `project`, its path, what became of it."""

    role: str
    path: str
    state: str  # read, not found, ...


def user_config_path(environ: Mapping[str, str]) -> Path | None:
    """$TORCHJOB_CONFIG (empty or /dev/null: none), else config.toml in $XDG_CONFIG_HOME/torchjob
    (an XDG folder must be absolute), else in ~/.config/torchjob."""
    named = environ.get("TORCHJOB_CONFIG")
    if named is not None:
        return None if named in ("", os.devnull) else Path(named).expanduser().absolute()
    xdg = environ.get("XDG_CONFIG_HOME", "")
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return (Path(xdg) if os.path.isabs(xdg) else home / ".config") / "torchjob" / "config.toml"


def user_config(
    environ: Mapping[str, str], files: list[ConfigFile], problems: list[Problem]
) -> dict[str, tuple[object, str]]:
    path = user_config_path(environ)
    if path is None:
        files.append(ConfigFile("user", "(none)", "turned off by TORCHJOB_CONFIG"))
        return {}
    data = _read(path, problems, missing_ok="TORCHJOB_CONFIG" not in environ)
    if data is None:
        files.append(ConfigFile("user", str(path), "not found"))
        return {}
    files.append(ConfigFile("user", str(path), "read"))
    text, doc = _parse(path, data, problems)
    if doc is None:
        return {}
    return _entries(path, doc, _key_lines(text, ()), "", problems)


def project_config(
    cwd: Path | None, files: list[ConfigFile], problems: list[Problem]
) -> dict[str, tuple[object, str]]:
    """[tool.torchjob] of the nearest pyproject.toml that has one, from cwd up to the root (a
    pyproject.toml without the table is passed over, as uv and ruff do)."""
    try:
        start = cwd or Path.cwd()
    except OSError:  # the current folder was deleted: no project
        return {}
    for folder in (start, *start.parents):
        path = folder / "pyproject.toml"
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
        except OSError:
            continue
        data = _read(path, problems, missing_ok=True)
        if data is None or not re.search(_MAYBE_TABLE, data):
            files.append(ConfigFile("project", str(path), "no [tool.torchjob] table"))
            continue
        text, doc = _parse(path, data, problems)
        tool = doc.get("tool") if doc is not None else None
        table = tool.get("torchjob") if isinstance(tool, dict) else None
        if doc is not None and table is None:
            files.append(ConfigFile("project", str(path), "no [tool.torchjob] table"))
            continue
        files.append(ConfigFile("project", str(path), "read tool.torchjob"))
        lines = _key_lines(text, TABLE)
        if isinstance(table, dict):
            return _entries(path, table, lines, "tool.torchjob.", problems)
        if doc is not None:
            problems.append(
                Problem(
                    f"{path}:{lines.get('', 1)}",
                    "tool.torchjob",
                    f"expected a table, got {_type(table)}",
                    "write a [tool.torchjob] table of `key = value` lines",
                )
            )
        return {}
    files.append(
        ConfigFile("project", str(start), "no pyproject.toml with tool.torchjob here or above")
    )
    return {}


def _read(path: Path, problems: list[Problem], missing_ok: bool) -> bytes | None:
    """The file's bytes; None when it does not exist and may not. Bounded: a FIFO is refused."""
    try:
        return read_small(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if not missing_ok:
            problems.append(
                Problem(
                    str(path),
                    "TORCHJOB_CONFIG",
                    "the config file it names does not exist",
                    "correct the path, or set TORCHJOB_CONFIG= (empty) for no user config",
                )
            )
    except (OSError, NotReadable) as exc:
        why = (
            str(exc) if isinstance(exc, NotReadable) else f"cannot be read ({exc.strerror or exc})"
        )
        problems.append(
            Problem(str(path), "(file)", f"the config file {why}", "give a readable TOML file")
        )
    return None


def _parse(path: Path, data: bytes, problems: list[Problem]) -> tuple[str, dict[str, Any] | None]:
    """The file's text and its TOML document (None after a problem)."""
    if sys.version_info >= (3, 11):
        import tomllib  # measured: ~2 ms, paid only when a config file exists
    else:
        import tomli as tomllib  # the same parser, before Python 3.11

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(f"{path}:1", "(file)", f"not UTF-8: {exc}", "save it as UTF-8"))
        return "", None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(_AT_LINE, message)
        line = int(at.group(1)) if at else max(1, len(text.splitlines()))
        assign = re.match(_ASSIGN, text.splitlines()[line - 1]) if at and text else None
        problems.append(
            Problem(
                f"{path}:{line}",
                assign.group(1) if assign else "(toml)",
                f"TOML syntax error: {re.sub(_AT_LINE, '', message)}",
                "correct the TOML at that line (quotes around strings, `key = value`)",
            )
        )
        return text, None


def _key_lines(text: str, table: tuple[str, ...]) -> dict[str, int]:
    """Line of each key of `table` ("" for the table's own header): tomllib gives none, so a
    small scan of the text, which is right for everything but keys inside multi-line strings."""
    lines: dict[str, int] = {}
    current: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), 1):
        header, assign = re.match(_HEADER, raw), re.match(_ASSIGN, raw)
        if header:
            current = tuple(p.strip("\"'") for p in re.findall(_PART, header.group(1)))
            path = current
        elif assign:
            path = current + tuple(p.strip("\"'") for p in re.findall(_PART, assign.group(1)))
        else:
            continue
        if path[: len(table)] == table:
            lines.setdefault(path[len(table)] if len(path) > len(table) else "", number)
    return lines


def _entries(
    path: Path, table: dict[str, Any], lines: dict[str, int], prefix: str, problems: list[Problem]
) -> dict[str, tuple[object, str]]:
    """Each key's checked value and its origin (`config FILE:LINE`); unknown keys and bad
    values become problems."""
    out: dict[str, tuple[object, str]] = {}
    for name, raw in table.items():
        where = f"{path}:{lines.get(name, lines.get('', 1))}"
        key = BY_NAME.get(name)
        if key is None:
            import difflib  # only for a misspelt key: ~1 ms off every other start

            guess = difflib.get_close_matches(name, BY_NAME, n=1, cutoff=0.6)
            fix = f"did you mean `{guess[0]}`?" if guess else f"use one of {', '.join(BY_NAME)}"
            problems.append(Problem(where, prefix + name, "unknown key", fix))
            continue
        try:
            value = key.check(raw)
        except ValueError as exc:
            problems.append(Problem(where, prefix + name, str(exc), key.fix))
            continue
        if isinstance(value, str) and (key.path == "folder" or (key.path and os.sep in value)):
            value = str((path.parent / os.path.expanduser(value)).absolute())
        out[name] = (value, f"config {where}")
    return out
