"""Safe YAML loading that remembers where every key is, so each problem can name file:line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchrun_cli.errors import Problem
from torchrun_cli.store import NotReadable, read_small

MAX_SPEC_BYTES = 1 << 20


def _loader_class() -> type[Any]:
    import yaml  # measured: 22 ms, paid only by runs that have a spec file

    base: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc]
        """Safe loader that remembers the line of every mapping key and spots duplicates."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.key_lines: dict[int, dict[Any, int]] = {}
            self.duplicates: list[tuple[str, int]] = []

        def construct_tracked_map(self, node: Any) -> Iterator[dict[Any, Any]]:
            data: dict[Any, Any] = {}
            yield data
            data.update(self.construct_mapping(node))
            lines: dict[Any, int] = {}
            own = range(node.start_mark.line + 1, node.end_mark.line + 2)  # not `<<` merges
            for key_node, _ in node.value:
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in lines and lines[key] in own and line in own:
                    self.duplicates.append((str(key), line))
                lines[key] = line
            self.key_lines[id(data)] = lines

    def construct_int(self: Any, node: Any) -> int:
        value = SourceInt(base.construct_yaml_int(self, node))
        value.text = node.value
        return value

    def construct_float(self: Any, node: Any) -> float:
        value = SourceFloat(base.construct_yaml_float(self, node))
        value.text = node.value
        return value

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_tracked_map)
    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    Loader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return Loader


class SourceInt(int):
    """An int that remembers how it was written (`010`, `0x1F`, `1_000`)."""

    text = ""


class SourceFloat(float):
    """A float that remembers how it was written (`3.10`, `1.0e+3`)."""

    text = ""


def source_text(value: int | float) -> str:
    """A YAML number as the user wrote it; arguments must reach the script unchanged."""
    return getattr(value, "text", "") or str(value)


class Located:
    """Where values came from: a file with line lookups, or the command line."""

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.key_lines: dict[int, dict[Any, int]] = {}

    def where(self, container: object = None, key: object = None) -> str:
        if self.file is None:
            return "command line"
        line = 1
        if container is not None:
            line = self.key_lines.get(id(container), {}).get(key, 1)
        return f"{self.file}:{line}"


def read_yaml(path: Path, problems: list[Problem]) -> tuple[dict[str, Any], Located]:
    """Load the spec file; an unreadable file, YAML syntax errors and refused tags become
    problems. The read is bounded: a FIFO or /dev/zero is refused, never waited on."""
    import yaml  # see _loader_class

    src = Located(path)
    try:
        text = read_small(path, MAX_SPEC_BYTES).decode("utf-8")
    except FileNotFoundError:
        problems.append(
            Problem(str(path), "(file)", "spec file not found", "check the path of the YAML file")
        )
        return {}, src
    except NotReadable as exc:
        problems.append(
            Problem(
                str(path), "(file)", f"the spec {exc}", "give a regular YAML file (at most 1 MiB)"
            )
        )
        return {}, src
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(
            Problem(str(path), "(file)", f"cannot read: {exc}", "give a readable UTF-8 YAML file")
        )
        return {}, src
    loader = _loader_class()(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        reason = f"{exc.context + ', ' if exc.context else ''}{exc.problem or 'invalid YAML'}"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in (exc.problem or ""):
            problems.append(
                Problem(
                    f"{path}:{line}",
                    _key_at_line(text, line),
                    f"YAML tag refused by safe loading ({reason})",
                    "remove the tag and write a plain value",
                )
            )
        else:
            problems.append(
                Problem(
                    f"{path}:{line}",
                    _key_at_line(text, line),
                    f"YAML syntax error: {reason}",
                    "correct the YAML at that line (indentation, quotes, colons)",
                )
            )
        return {}, src
    except yaml.YAMLError as exc:
        problems.append(Problem(f"{path}:1", "(yaml)", f"invalid YAML: {exc}", "fix the YAML"))
        return {}, src
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a 5,000-digit number
        problems.append(
            Problem(
                f"{path}:1",
                "(yaml)",
                f"a value cannot be read: {exc}",
                "shorten or quote the value",
            )
        )
        return {}, src
    finally:
        loader.dispose()
    src.key_lines = loader.key_lines
    for key, line in loader.duplicates:
        problems.append(
            Problem(f"{path}:{line}", key, "key given twice", "keep one of the two entries")
        )
    if data is None:
        return {}, src
    if not isinstance(data, dict):
        problems.append(
            Problem(
                f"{path}:1",
                "(top level)",
                f"the spec must be a mapping of keys, not {type_name(data)}",
                "write `script: train.py` and other keys, one per line",
            )
        )
        return {}, src
    return data, src


def _key_at_line(text: str, line: int) -> str:
    """The dotted key path of the nearest key at or above `line`, by indentation."""
    path: list[tuple[int, str]] = []
    for raw in text.splitlines()[:line]:
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+)\s*:", raw)
        if not m:
            continue
        indent = len(m.group(1))
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, m.group(2)))
    return ".".join(k for _, k in path) or "(top level)"


def type_name(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
