"""References to upstream steps, resolved when a step starts: the upstream run's folders, and
its output parameters read byte for byte from the files it wrote. A value is text that becomes
one argv word or one variable: nothing is ever evaluated."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from torchrun_cli.errors import UsageError
from torchrun_cli.record import RunDir, read_record
from torchrun_cli.spec.model import JobSpec
from torchrun_cli.spec.refs import Ref, has_refs, substitute

MAX_VALUE_BYTES = 65536  # an output parameter that is larger is a file, not a value


def output_value(output_dir: Path, key: str) -> str | None:
    """An output parameter as the step wrote it: the content of `output_parameters/KEY` (one
    trailing newline removed, nothing else), else KEY of metrics.json (strings as they are,
    numbers and booleans as JSON writes them); None when it wrote neither."""
    file = output_dir / "output_parameters" / key
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_VALUE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        data = None
    if data is not None:
        if len(data) > MAX_VALUE_BYTES:
            raise UsageError(
                f"output {key!r} in {file} is over {MAX_VALUE_BYTES} bytes",
                "pass a large output as a file: refer to the step's output_dir",
            )
        data = data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
        return os.fsdecode(data)
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or key not in metrics:
        return None
    value = metrics[key]
    return value if isinstance(value, str) else json.dumps(value)


def resolve(spec: JobSpec, upstream: Mapping[str, RunDir], step: str) -> JobSpec:
    """The step's spec with every reference replaced; an output no upstream step wrote, or a
    value no argument can hold, is a UsageError naming the reference and the step."""
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
