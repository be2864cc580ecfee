"""`torchjob rerun RUN`: the spec a run ran with (its run.json), as the first layer of a new
spec, at the same source commit (a git project's ref pinned to the commit it ran) and so with
the same environment key; the flags of `run` go over it. Values run.json keeps masked (a
token in env, a secret param) cannot be run again as they are: each must be given again."""

from __future__ import annotations

import os
from typing import Any

from torchrun_cli.masking import MASK
from torchrun_cli.record import RunRecord
from torchrun_cli.spec.keys import KEYS, Kind
from torchrun_cli.spec.model import JobSpec

_SECTIONS = {k.name for k in KEYS if k.kind is Kind.SECTION}


def layer(rec: RunRecord) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The recorded spec as a layer of keys, and the arguments after `--` it ran with."""
    spec = dict(rec.spec)
    extra = tuple(spec.pop("extra_args", None) or ())
    spec.pop("spec_file", None)
    options = spec.pop("input_args", None) or {}
    inputs = spec.get("inputs") or {}
    spec["inputs"] = {
        k: {"path": v, "arg": options[k]} if k in options else v for k, v in inputs.items()
    }
    data: dict[str, Any] = {}
    for key, value in spec.items():
        if key in _SECTIONS and isinstance(value, dict):  # no delay is written as none
            value = {k: v for k, v in value.items() if v is not None and (k, v) != ("delay", 0)}
        if value is not None:
            data[key] = value
    placed = {k: v for k, v in (data.get("outputs") or {}).items() if os.path.isabs(str(v))}
    data.pop("outputs", None)  # a step's relative folders were inside its own run folder:
    if placed:  # the rerun has its own (a single run's were recorded absolute: kept)
        data["outputs"] = placed
    if rec.source.get("kind") == "git" and rec.source.get("commit"):
        data["ref"] = rec.source["commit"]  # the very commit it ran
    return data, extra


def hidden(spec: JobSpec) -> list[str]:
    """The keys whose values are still run.json's masks (give them again with a flag)."""
    found = [f"params.{k}" for k, v in spec.params.items() if isinstance(v, str) and MASK in v]
    found += [f"env.{k}" for k, v in spec.env.items() if MASK in v]
    found += ["args"] * any(MASK in a for a in spec.args)
    found += ["-- arguments"] * any(MASK in a for a in spec.extra_args)
    found += ["project"] * (MASK in spec.project)
    found += ["python.packages"] * any(MASK in p for p in spec.python.packages)
    found += ["python.conda_packages"] * any(MASK in p for p in spec.python.conda_packages)
    return found
