"""Values a spec may write in a short or a long form: an input as a path or as `{path, arg}`,
`retries` as a count or as `{count, delay, backoff, on}` (whose `on` YAML 1.1 reads as true),
a `files` entry as a path or as `{path, unpack}`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrun_cli.spec.keys import OPTION
from torchrun_cli.spec.model import RetrySpec
from torchrun_cli.spec.rules import Merge


def retries_mapping(merge: Merge, raw: object, where: str) -> object:
    """`retries: 3` is `{count: 3}`; YAML 1.1 reads the key `on` as true: it is `on` here."""
    line = int(where.rpartition(":")[2] or 1)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"count": raw}
        merge.src.key_lines[id(raw)] = {"count": line}
    elif isinstance(raw, dict) and True in raw:
        lines = merge.src.key_lines.get(id(raw), {})
        raw = {("on" if k is True else k): v for k, v in raw.items()}
        merge.src.key_lines[id(raw)] = {("on" if k is True else k): n for k, n in lines.items()}
    merge.keep.append(raw)  # its lines are looked up by id while it lives
    return raw


def channel(merge: Merge, value: object, at: str, sub: str) -> Path | None:
    """An input's path (relative to the spec's folder); `{path: ..., arg: --train}` also
    passes the path to the script after that option."""
    check = merge.check
    arg = None
    if isinstance(value, dict):
        check.unknown_keys(value, ("path", "arg"), f"{sub}.", merge.src)
        if "path" not in value:
            check.add(at, sub, "an input needs a path", "write `{path: data/train, arg: --train}`")
            return None
        arg = check.text(value["arg"], at, f"{sub}.arg") if "arg" in value else None
        if arg is not None and not OPTION.fullmatch(arg):
            check.add(at, f"{sub}.arg", f"{arg!r} is not an option", "write e.g. `arg: --train`")
            arg = None
        value = value["path"]
    text = check.text(value, at, sub)
    if text is None:
        return None
    if arg is not None:
        merge.input_args[sub.rpartition(".")[2]] = arg
    if text.startswith("${{"):  # a reference gives the whole path: resolved with it
        return Path(text)
    return merge.spec_dir / os.path.expanduser(text)


def retries(values: Mapping[str, Any]) -> RetrySpec:
    """The merged `retries.*` values as a RetrySpec."""
    found = {k.rpartition(".")[2]: v for k, v in values.items() if k.startswith("retries.")}
    return RetrySpec(
        count=int(found.get("count", 0)),
        delay=float(found.get("delay") or 0.0),
        backoff=float(found.get("backoff", 1.0)),
        on=tuple(found.get("on", RetrySpec().on)),
    )


UNPACK = ":unpack"  # `--file deps.zip:unpack`


def files(merge: Merge, raw: object, where: str, path: str) -> object:
    """`files:` entries `{path: deps.zip, unpack: true}` (Tencent Cloud's dependency zip) as
    the path with UNPACK after it; anything else as it is."""
    if path != "files" or not isinstance(raw, list):
        return raw
    out: list[object] = []
    for item in raw:
        if not isinstance(item, dict):
            out.append(item)
        elif (
            set(item) - {"path", "unpack"}
            or not isinstance(item.get("path"), str)
            or not isinstance(item.get("unpack", False), bool)
        ):
            fix = "write `{path: deps.zip, unpack: true}`"
            merge.check.add(where, path, "an entry is a path or {path, unpack}", fix)
        else:
            out.append(item["path"] + UNPACK * (item.get("unpack") is True))
    return out
