"""The merged, checked job spec: plain frozen values, shaped like the key table (a field per
key, a sub-spec per section), with where each value came from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from torchrun_cli.masking import hide_query, mask_argv, mask_mapping, mask_text
from torchrun_cli.spec.keys import Key, Kind, Shown, children

DEFAULT_GRACE_S = 10.0
DISTRIBUTED_GRACE_S = 45.0  # torchrun gives its workers 30 s after SIGTERM


class PythonSpec(NamedTuple):
    """`python:`: the interpreter and what goes into its environment."""

    interpreter: str | None = None
    manager: str = "none"
    version: str | None = None
    requirements: str | None = None
    packages: tuple[str, ...] = ()
    conda_file: str | None = None
    conda_packages: tuple[str, ...] = ()  # Azure ML's conda_packages: `conda install` specs
    system_site_packages: bool = False


class RetrySpec:
    """`retries:`: how often, after how long, and after which endings a job runs again. (Not a
    NamedTuple: a field named `count` would hide tuple.count.)"""

    __slots__ = ("backoff", "count", "delay", "on")

    def __init__(
        self,
        count: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        on: tuple[str, ...] = ("failed", "timeout"),
    ) -> None:
        self.count, self.delay, self.backoff, self.on = count, delay, backoff, on

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetrySpec) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __hash__(self) -> int:
        return hash((self.count, self.delay, self.backoff, self.on))

    def __repr__(self) -> str:
        return f"RetrySpec(count={self.count}, delay={self.delay}, backoff={self.backoff})"

    def wait(self, attempt: int) -> float:
        """Seconds before attempt `attempt` (2, 3, ...)."""
        return self.delay * self.backoff ** max(0, attempt - 2)


class RetentionSpec(NamedTuple):
    """`retention:`: the runs of this name that stay after each run (`runs prune` by itself)."""

    keep: int | None = None
    max_age: float | None = None


class MetricsSpec(NamedTuple):
    """`metrics:`: whether the job's stdout is read for metrics, and with which pattern."""

    from_output: bool = False
    pattern: str | None = None


class OutputsSpec(NamedTuple):
    """`outputs:`: folders the job writes its model and outputs to (default: the run's)."""

    model_dir: Path | None = None
    output_dir: Path | None = None


class DistributedSpec(NamedTuple):
    """`distributed:`: torchrun's settings, as written (checked against the key patterns)."""

    nproc_per_node: str | None = None
    nnodes: str = "1"
    node_rank: str | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    max_restarts: str | None = None
    monitor_interval: str | None = None


class BackendSpec(NamedTuple):
    """`backend:` when the job goes to Slurm."""

    type: str = "slurm"
    partition: str | None = None
    nodes: str | None = None
    gpus_per_node: str | None = None
    cpus_per_task: str | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal: str | None = None  # USR1@90: Slurm signals the job's step this long before the end
    requeue: bool = False  # a timed-out or preempted job is requeued, retries.count times
    extra_args: tuple[str, ...] = ()

    @property
    def node_count(self) -> int:
        return int(self.nodes or 1)


class JobSpec(NamedTuple):
    """The job: every key's effective value, and `origins` (key path -> where it came from:
    `default`, `$VARIABLE`, `FILE:LINE` or `flag --x`)."""

    name: str
    project: str
    project_kind: str  # local, git or archive
    script: str
    spec_file: Path | None = None
    ref: str | None = None
    args: tuple[str, ...] = ()
    params: Mapping[str, str | bool] = MappingProxyType({})
    param_style: str | None = None  # None: value under compat ti/sagemaker, else flag
    extra_args: tuple[str, ...] = ()  # after `--` on the command line
    python: PythonSpec = PythonSpec()
    env: Mapping[str, str] = MappingProxyType({})
    timeout: float | None = None
    grace: float = DEFAULT_GRACE_S
    tty: str = "auto"
    retries: RetrySpec = RetrySpec()
    concurrency: str = "allow"
    retention: RetentionSpec = RetentionSpec()
    files: tuple[Path, ...] = ()
    unpack: tuple[Path, ...] = ()  # the files that are zips (or tars) to unpack beside the script
    allow_insecure_source: bool = False
    git_token_env: str | None = None
    submodules: bool = False
    inputs: Mapping[str, Path] = MappingProxyType({})
    input_args: Mapping[str, str] = MappingProxyType({})  # input name -> its option (--train)
    outputs: OutputsSpec = OutputsSpec()
    resume_from: str | None = None
    metrics: MetricsSpec = MetricsSpec()
    compat: str | None = None
    distributed: DistributedSpec | None = None
    gpus: str | None = None
    backend: BackendSpec | None = None
    origins: Mapping[str, str] = MappingProxyType({})

    def script_argv(self) -> list[str]:
        """Arguments for the script: spec args, params as `--key value`, inputs passed as an
        option (`--train PATH`), then `-- ARGS`."""
        out = list(self.args)
        style = self.booleans()
        for key, value in self.params.items():
            option = key if key.startswith("-") else f"--{key}"  # Azure's `-v`, `--epochs`
            if isinstance(value, bool) and style == "value":  # TI's and SageMaker's `--k True`
                out += [option, str(value)]
            elif value is True:
                out.append(option)
            elif value is not False:
                out += [option, value]
        for name, option in self.input_args.items():
            out += [option, str(self.inputs[name])]
        return out + list(self.extra_args)

    def booleans(self) -> str:
        """How a true/false param reaches the script: `flag` (--k, or nothing) or `value`
        (--k True), the default under compat ti and sagemaker."""
        return self.param_style or ("value" if self.compat in ("ti", "sagemaker") else "flag")

    def value(self, path: str) -> Any:
        """The value of a key path (`python.manager`); None inside an absent section."""
        node: Any = self
        for part in path.split("."):
            node = getattr(node, part, None) if node is not None else None
        return node

    def masked(self) -> dict[str, Any]:
        """The effective spec for run.json and --dry-run, secret values replaced by ****."""
        out = _shown_section(self, "")
        out["extra_args"] = mask_argv(self.extra_args)
        out["input_args"] = dict(self.input_args)
        out["spec_file"] = str(self.spec_file) if self.spec_file else None
        out["files"] = [f"{f}:unpack" if f in self.unpack else str(f) for f in self.files]
        return out


def _shown_section(spec: JobSpec, section: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in children(section):
        if key.kind is Kind.SECTION:
            present = spec.value(key.path) is not None
            out[key.name] = _shown_section(spec, key.path) if present else None
        else:
            out[key.name] = shown(key, spec.value(key.path))
    return out


def shown(key: Key, value: Any) -> Any:
    """A value as run.json and --dry-run show it: JSON types, secrets masked."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if key.shown is Shown.URL:
        return hide_query(mask_text(str(value)))
    if key.shown is Shown.MAPPING:
        return mask_mapping(value)
    if key.shown is Shown.ARGV:
        return mask_argv(value)
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    return str(value)
