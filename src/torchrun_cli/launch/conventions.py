"""What an ML script sees besides its argv: hyperparameters as JSON, input channels, model and
output folders, the GPU count, a checkpoint to resume from, and the SageMaker or Tencent TI
names for the same things, so scripts written for those platforms run unchanged. After the run,
output parameters are read back for run.json."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from torchrun_cli.errors import UsageError
from torchrun_cli.launch import metrics
from torchrun_cli.record import RunDir, list_records
from torchrun_cli.spec.model import JobSpec

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
MAX_VALUE_BYTES = 65536  # an output parameter that is larger is a file, not a value


def folders(spec: JobSpec, run: RunDir) -> tuple[Path, Path]:
    """(model folder, output folder): inside the run folder unless the spec places them (a
    pipeline step's relative folders are inside its run folder too)."""
    model, output = spec.outputs.model_dir, spec.outputs.output_dir
    return (
        run.path / model if model else run.model,
        run.path / output if output else run.output,
    )


def gpu_count(gpus: str | None = None) -> int:
    """GPUs visible to the job, without importing torch: the spec's `gpus`, else
    CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    visible = gpus if gpus is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [x for x in visible.split(",") if x.strip()]
        return 0 if not ids or ids[0].strip() == "-1" else len(ids)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def resume_checkpoint(spec: JobSpec, runs_dir: Path, current: str | None = None) -> str | None:
    """TORCHJOB_RESUME_FROM: the path given, or for `last` the newest checkpoint in the model
    folder of the most recent run with the same name (an error when there is none)."""
    if spec.resume_from != "last":
        return spec.resume_from
    for rec in list_records(runs_dir):
        if rec.name != spec.name or rec.id == current or not rec.model_dir:
            continue
        if found := newest_checkpoint(Path(rec.model_dir)):
            return found
    raise UsageError(
        f"resume_from: last: no earlier run named {spec.name!r} left a checkpoint "
        f"in its model folder (under {runs_dir})",
        "run once with the model saved, or give a checkpoint path",
    )


def newest_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint file (by modification time) under a model folder."""
    found = [p for p in folder.glob("**/*") if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


def job_env(
    spec: JobSpec,
    model_dir: Path,
    output_dir: Path,
    resume: str | None,
    gpus: int,
    config_dir: Path | None = None,
) -> dict[str, str]:
    """The variables torchjob adds for the conventions (and the compat names when asked;
    compat pai also writes config_dir/hyperparameters.json, as PAI does)."""
    # false params are no option in the `flag` style (and so not in the JSON either)
    keep_false = spec.booleans() == "value"
    params = {k: v for k, v in spec.params.items() if v is not False or keep_false}
    env = {
        "TORCHJOB_PARAMS": json.dumps(params, ensure_ascii=False),
        "TORCHJOB_MODEL_DIR": str(model_dir),
        "TORCHJOB_OUTPUT_DIR": str(output_dir),
        "TORCHJOB_NUM_GPUS": str(gpus),
    }
    for name, path in spec.inputs.items():
        env[f"TORCHJOB_CHANNEL_{name.upper()}"] = str(path)
    if resume:
        env["TORCHJOB_RESUME_FROM"] = resume
    if spec.compat == "sagemaker":
        env.update(
            {
                "SM_MODEL_DIR": str(model_dir),
                "SM_OUTPUT_DATA_DIR": str(output_dir),
                "SM_CHANNELS": json.dumps(sorted(spec.inputs)),
                "SM_HPS": json.dumps(params, ensure_ascii=False),
                "SM_NUM_GPUS": str(gpus),
            }
        )
        env.update({f"SM_CHANNEL_{n.upper()}": str(p) for n, p in spec.inputs.items()})
        env.update(
            {
                "SM_HP_" + _shell_name(k): _text(v)  # optim.lr too
                for k, v in params.items()
            }
        )
    elif spec.compat == "ti":
        env.update(
            {
                "TM_MODEL_DIR": str(model_dir),
                "TM_OUTPUT_DATA_DIR": str(output_dir),
                "TM_NUM_GPUS": str(gpus),
            }
        )
        env.update({f"TM_CHANNEL_{n.upper()}": str(p) for n, p in spec.inputs.items()})
    elif spec.compat == "pai" and config_dir is not None:
        env.update(_pai(spec, params, model_dir, config_dir))
    return env


def _pai(
    spec: JobSpec, params: dict[str, Any], model_dir: Path, config_dir: Path
) -> dict[str, str]:
    """What a PAI training job (pai.estimator) finds, as the PAI SDK's guide lists it:
    PAI_OUTPUT_MODEL / _CHECKPOINTS (the model folder) / _TENSORBOARD (its /ml/output/*),
    PAI_CONFIG_DIR with hyperparameters.json, PAI_HPS, PAI_HPS_NAME, PAI_USER_ARGS and a
    PAI_INPUT_NAME per input channel."""
    config_dir.mkdir(parents=True, exist_ok=True)
    board = config_dir.parent / "tensorboard"
    board.mkdir(exist_ok=True)
    hps = config_dir / "hyperparameters.json"  # the job's own values, secrets too: 0600
    hps.touch(mode=0o600)
    hps.write_text(json.dumps(params, ensure_ascii=False))
    env = {
        "PAI_OUTPUT_MODEL": str(model_dir),
        "PAI_OUTPUT_CHECKPOINTS": str(model_dir),
        "PAI_OUTPUT_TENSORBOARD": str(board),
        "PAI_CONFIG_DIR": str(config_dir),
        "PAI_HPS": json.dumps(params, ensure_ascii=False),
        "PAI_USER_ARGS": shlex.join(spec._replace(args=(), extra_args=()).script_argv()),
    }
    env.update({f"PAI_INPUT_{n.upper()}": str(p) for n, p in spec.inputs.items()})
    env.update({"PAI_HPS_" + _shell_name(k): _text(v) for k, v in params.items()})
    return env


def _text(value: str | bool) -> str:
    """A param as a variable's text: a boolean as JSON writes it (true), as SageMaker does."""
    return json.dumps(value) if isinstance(value, bool) else value


def _shell_name(key: str) -> str:
    """A param's name as part of a variable's: `optim.lr` as OPTIM_LR."""
    return re.sub(r"[^A-Z0-9_]", "_", key.lstrip("-").upper())


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def final_outputs(run: RunDir, output_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """A run's outputs once it ended: the last value of each metric, then its output
    parameters (which win: the job named them outputs itself). `spec` is run.json's."""
    found = metrics.last_values(metrics.series(run, spec.get("metrics")))
    return {**found, **read_outputs(output_dir)}


def read_outputs(output_dir: Path) -> dict[str, Any]:
    """Output parameters: `output_parameters/NAME` files and `metrics.json`, as PAI has them."""
    out: dict[str, Any] = {}
    metrics = output_dir / "metrics.json"
    try:
        data = json.loads(metrics.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            out.update(
                {
                    str(k): v
                    for k, v in data.items()
                    if isinstance(v, (str, int, float, bool)) or v is None
                }
            )
    except (OSError, ValueError):
        pass
    params = output_dir / "output_parameters"
    if params.is_dir():
        for path in sorted(params.iterdir()):
            if path.is_file() and path.stat().st_size <= 65536:
                out[path.name] = _value(path.read_text(encoding="utf-8", errors="replace").strip())
    return out


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
