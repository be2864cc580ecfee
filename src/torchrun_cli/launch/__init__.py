"""The launch stage: the exact argv, folder and variables of the job, the checks that can be
made before starting it, and the backend that runs it (here, a torchrun gang, or Slurm).

torchrun's and Slurm's code is imported only by the jobs that use them.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchrun_cli.errors import LaunchError, UsageError
from torchrun_cli.launch.base import Backend, Launch
from torchrun_cli.launch.conventions import gpu_count
from torchrun_cli.launch.local import LocalBackend
from torchrun_cli.spec.model import JobSpec

# Linux refuses one argument or variable over 32 pages (MAX_ARG_STRLEN) with E2BIG.
_MAX_ARG_STRLEN = 32 * 4096


def make_launch(spec: JobSpec, interpreter: str, project: Path, ranks: Path) -> Launch:
    """argv and environment for the job, once the source folder is known: the script itself,
    or torchrun starting a gang of it (per-rank logs in `ranks`)."""
    script_path = project / spec.script
    overlay = {"PYTHONUNBUFFERED": "1", **spec.env}
    inherited = overlay.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    overlay["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), inherited) if p)
    launcher: list[str] = []
    if spec.distributed is not None:
        from torchrun_cli.launch.torchrun import torchrun_args  # measured: gangs only

        nodes = spec.backend.node_count if spec.backend else 1
        launcher = torchrun_args(spec.distributed, job_gpus(spec), ranks, nodes)
        overlay["TORCHELASTIC_ERROR_FILE"] = str(ranks / "error.json")
    if spec.gpus is not None:
        overlay["CUDA_VISIBLE_DEVICES"] = spec.gpus
    argv = [interpreter, *launcher, str(script_path), *spec.script_argv()]
    return Launch(script_path, argv, project, overlay)


def job_gpus(spec: JobSpec) -> int:
    """GPUs per node the job gets: for Slurm what it asks of Slurm (the submitting host's
    GPUs say nothing about the node's), here the visible ones."""
    if spec.backend is not None:
        return int(spec.backend.gpus_per_node or 0)
    return gpu_count(spec.gpus)


def check_size(launch: Launch) -> None:
    """Refuse before anything runs what the kernel would refuse at exec (E2BIG): one argument
    or variable over 128 KiB, or all of them over the system's limit (exit 2)."""
    limit = os.sysconf("SC_ARG_MAX")
    env = {**os.environ, **launch.env_overlay}
    words = [*launch.argv, *(f"{k}={v}" for k, v in env.items())]
    longest = max(words, key=len)
    total = sum(len(w.encode()) + 1 + 8 for w in words)  # each also costs a pointer
    if len(longest.encode()) >= _MAX_ARG_STRLEN:
        name = longest.partition("=")[0] if longest not in launch.argv else "an argument"
        raise UsageError(
            f"{name} is {len(longest.encode())} bytes long: more than one "
            f"process argument or variable may hold ({_MAX_ARG_STRLEN - 1})",
            "pass large values in a file, and its path as the parameter",
        )
    if total >= limit:
        raise UsageError(
            f"the job's arguments and environment take {total} bytes: more than "
            f"this system lets a process start with ({limit})",
            "pass large values in a file, and its path as the parameter",
        )


def launch_problem(launch: Launch, interpreter: str) -> LaunchError | None:
    """Interpreter or script missing (127) or not runnable (126), found before starting."""
    if not os.path.isabs(interpreter) or not os.path.exists(interpreter):
        return LaunchError(
            f"interpreter not found: {interpreter}",
            127,
            "pass --python PATH or set python.interpreter in the spec",
        )
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        return LaunchError(
            f"interpreter is not executable: {interpreter}",
            126,
            f"chmod +x {interpreter}, or choose another with --python",
        )
    script = launch.script_path
    if not script.exists():
        return LaunchError(
            f"script not found: {script}",
            127,
            f"check `script` (it is relative to the project {launch.cwd})",
        )
    if not script.is_file() or not os.access(script, os.R_OK):
        return LaunchError(
            f"script is not a readable file: {script}", 126, "point `script` at a Python file"
        )
    return None


def backend_for(spec: JobSpec, detach: bool = False, after: tuple[str, ...] = ()) -> Backend:
    """The backend that runs this spec: Slurm (after the Slurm jobs `after`, a pipeline's
    needs), a local torchrun gang, or a local process."""
    if spec.backend is not None:
        from torchrun_cli.launch.slurm import SlurmBackend  # measured: Slurm jobs only

        return SlurmBackend(detach, after)
    if spec.distributed is not None:
        from torchrun_cli.launch.torchrun import TorchrunBackend  # measured: gangs only

        return TorchrunBackend()
    return LocalBackend()


def backend_of(backend: dict[str, object] | None) -> Backend:
    """The backend that started a recorded run (for cancel and conclude)."""
    if backend and backend.get("type") == "slurm":
        from torchrun_cli.launch.slurm import SlurmBackend  # measured: Slurm jobs only

        return SlurmBackend(bool(backend.get("detached")))
    return LocalBackend()
