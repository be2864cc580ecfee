"""References to upstream steps, resolved when a step starts: the upstream run's folders, and
its output parameters read byte for byte from the files it wrote. A value is text that becomes
one argv word or one variable: nothing is ever evaluated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from torchrun_cli.errors import UsageError
from torchrun_cli.launch.conventions import output_value
from torchrun_cli.record import RunDir, read_record
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.refs import Ref, has_refs, substitute, written


def resolve(
    spec: JobSpec, upstream: Mapping[str, RunDir], step: str, later: bool = False
) -> JobSpec:
    """The step's spec with every reference replaced; an output no upstream step wrote, or a
    value no argument can hold, is a UsageError naming the reference and the step. With
    `later`, output parameters stay as written (a Slurm job fills them in as it starts, see
    launch/fill.py)."""
    base = spec.spec_file.parent if spec.spec_file else Path.cwd()
    cache: dict[str, tuple[str, str]] = {}

    def folders(name: str) -> tuple[str, str]:
        if name not in cache:
            run = upstream[name]
            rec = read_record(run)
            cache[name] = (rec.output_dir or str(run.output), rec.model_dir or str(run.model))
        return cache[name]

    def lookup(ref: Ref) -> str:
        if ref.scope == "inputs":
            return str(inputs[ref.name])
        if ref.scope != "steps" or ref.name not in upstream:
            raise UsageError(f"${{{{ {ref} }}}} cannot be resolved in step {step!r}")
        output_dir, model_dir = folders(ref.name)
        if ref.field == "run_dir":
            return str(upstream[ref.name].path)
        if ref.field in ("output_dir", "model_dir"):
            return output_dir if ref.field == "output_dir" else model_dir
        if later:
            return written(ref)
        value = output_value(Path(output_dir), ref.key)
        if value is None:
            raise UsageError(
                f"step {step!r} uses ${{{{ {ref} }}}}, but step {ref.name!r} wrote no output "
                f"{ref.key!r}",
                f"have {ref.name} write {output_dir}/output_parameters/{ref.key} (or the key in "
                "its metrics.json)",
            )
        if "\0" in value:
            raise UsageError(
                f"output {ref.key!r} of step {ref.name!r} holds a NUL byte, which no argument "
                "can carry",
                "write the value without NUL bytes",
            )
        return value

    def fill(text: str) -> str:
        return substitute(text, lookup) if has_refs(text) else text

    inputs: dict[str, Path] = {}
    for name, path in spec.inputs.items():
        found = fill(str(path))
        inputs[name] = Path(found) if os.path.isabs(found) else base / found
    params = {k: fill(v) if isinstance(v, str) else v for k, v in spec.params.items()}
    return spec._replace(
        inputs=MappingProxyType(inputs),
        params=MappingProxyType(params),
        args=tuple(fill(a) for a in spec.args),
        env=MappingProxyType({k: fill(v) for k, v in spec.env.items()}),
    )
