"""The Slurm batch script torchjob writes into the run folder (job.sbatch): readable and reusable.

Every value in it is quoted with shlex.quote; extra sbatch options come from an allow-list and go
into `#SBATCH` lines, never into shell text; secrets never appear in it (Slurm keeps the script
and shows it to its admins): they travel in sbatch's own environment.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from torchrun_cli.errors import SetupError
from torchrun_cli.masking import is_secret
from torchrun_cli.record import RunDir
from torchrun_cli.spec.keys import CONTROL
from torchrun_cli.spec.model import BackendSpec, DistributedSpec


def duration_hms(seconds: float) -> str:
    """Slurm's --time as D-HH:MM:SS, rounded up to the minute torchjob's timeout falls in."""
    total = max(60, int(-(-seconds // 60)) * 60)
    days, rest = divmod(total, 86400)
    return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:00"


def batch_script(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    run: RunDir,
    name: str,
    backend: BackendSpec,
    timeout: float | None,
    distributed: DistributedSpec | None,
    lease: Path | None = None,
    hidden: Mapping[str, str] | None = None,
) -> str:
    """The batch script: #SBATCH lines, the job's variables, then the command (through srun
    and a c10d rendezvous on the allocation's first node for multi-node torchrun)."""
    q = shlex.quote
    nodes = backend.node_count
    values = [v for v in backend._asdict().values() if isinstance(v, str)]
    for value in (name, str(cwd), str(run.path), *values, *backend.extra_args):
        if CONTROL.search(value):
            raise SetupError(
                f"refused {value!r} in the batch script: a control character",
                "rename it without newlines or control characters",
                phase="backend",
            )
    output = str(run.stdout_log).replace("%", "%%")  # % starts a Slurm file pattern
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={q(name)}",
        f"#SBATCH --output={q(output)}",
        f"#SBATCH --chdir={q(str(cwd))}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    for key, option in (
        ("partition", "partition"),
        ("cpus_per_task", "cpus-per-task"),
        ("mem", "mem"),
        ("account", "account"),
        ("qos", "qos"),
        ("constraint", "constraint"),
    ):
        if (value := getattr(backend, key)) is not None:
            lines.append(f"#SBATCH --{option}={q(value)}")
    if backend.gpus_per_node:
        lines.append(f"#SBATCH --gres=gpu:{int(backend.gpus_per_node)}")
    if timeout:
        lines.append(f"#SBATCH --time={duration_hms(timeout)}")
    if backend.requeue:  # the same job again: its output goes on after the first run's
        lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append"]
    if backend.signal:  # Slurm signals job steps: the command runs as one (srun) below
        lines.append(f"#SBATCH --signal={q(backend.signal.removeprefix('SIG'))}")
    lines += [f"#SBATCH {arg}" for arg in backend.extra_args]
    lines += ["", "# written by torchjob: the job's environment, then the command", "set -u"]
    if lease is not None:  # as a local run does: env prune/rm leave the environment alone
        lines.append(f"exec 9<>{q(str(lease))} && flock -s 9")
    hidden = hidden or {}
    lines += [f"export {k}={q(v)}" for k, v in sorted(env.items()) if k not in hidden]
    lines += [
        f': "${{{k}?torchjob: {k} did not reach the job: sbatch must pass the '
        f'environment (--export=ALL)}}"'
        for k in sorted(hidden)
    ]
    if distributed is not None and nodes > 1:
        # torchrun reads its rendezvous from PET_* variables: the command itself stays quoted
        # word for word, and a port per job lets two jobs share a head node.
        lines += [
            'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"export PET_NNODES={nodes} PET_RDZV_BACKEND=c10d",
            'export PET_RDZV_ID="$SLURM_JOB_ID" '
            'PET_RDZV_ENDPOINT="$head:$((20000 + SLURM_JOB_ID % 20000))"',
        ]
        command = f"srun --kill-on-bad-exit=1 {command_words(argv, hidden)}"
    elif backend.signal:
        command = f"srun --nodes=1 --ntasks=1 {command_words(argv, hidden)}"
    else:
        command = command_words(argv, hidden)
    # stderr goes to stderr.log and stdout to a stdout-only file (for the console copies);
    # both also reach Slurm's output, stdout.log. Pipes, so the script waits for every tee.
    err, out = q(str(run.stderr_log)), q(str(run.slurm_stdout))
    lines += [
        f'{{ {command} 2>&1 1>&3 3>&- | tee -a {err} >&2; exit "${{PIPESTATUS[0]}}"; }} '
        f"3>&1 | tee -a {out}",
        "code=${PIPESTATUS[0]}",
        # Slurm forgets a finished job after MinJobAge and sacct needs accounting:
        # the script keeps the job's status in the run folder itself.
        f'echo "$code" > {q(str(run.slurm_exit))}.tmp && '
        f"mv -f {q(str(run.slurm_exit))}.tmp {q(str(run.slurm_exit))}",
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def secret_variables(
    env: Mapping[str, str], argv: Sequence[str], secrets: Sequence[str]
) -> dict[str, str]:
    """The job's variables, and arguments (as TORCHJOB_ARG_<i>), that are or hold a secret:
    they reach the job through sbatch's own environment (its --export=ALL default), never as
    text in job.sbatch, which Slurm keeps and may show its admins (sacct --batch-script)."""
    values = [v for v in [*secrets, *(v for k, v in env.items() if is_secret(k))] if len(v) >= 4]
    hidden = {k: v for k, v in env.items() if is_secret(k) or any(s in v for s in values)}
    hidden.update(
        {f"TORCHJOB_ARG_{i}": a for i, a in enumerate(argv) if any(s in a for s in values)}
    )
    return hidden


def command_words(argv: Sequence[str], hidden: Mapping[str, str]) -> str:
    """argv as shell words: quoted, or a quoted reference to the variable that carries it."""
    return " ".join(
        f'"${{TORCHJOB_ARG_{i}}}"' if f"TORCHJOB_ARG_{i}" in hidden else shlex.quote(a)
        for i, a in enumerate(argv)
    )
