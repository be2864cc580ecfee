"""Every key of a job spec, declared once: its path, kind, flags, help, check and how it is
shown. The CLI's options of `run`, the merge of file and flags, the masking of run.json and
--dry-run, the known-key lists and the did-you-mean all come from this table, so adding a key
touches this table and the code that uses the value.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple

from torchrun_cli.settings.files import MANAGERS, TTY_MODES


class Kind(Enum):
    """How a value is written in the file and on the command line."""

    STR = "str"  # a non-empty string (a number is taken as written)
    TEXT = "text"  # a string or a number, as written (distributed.*, backend.*)
    BOOL = "bool"  # true/false; a flag without a value
    LIST = "list"  # list of strings (or one string); a repeatable flag replaces the list
    PATHS = "paths"  # list of files or folders, relative to the spec's folder (flags: cwd)
    ARGS = "args"  # a list, or one string split like a shell would
    DURATION = "duration"  # 90s, 15m, 2h, 1h30m, 1d or seconds; null means none
    PARAMS = "params"  # name -> value; `-P k=v` merges over the file's
    ENV = "env"  # NAME -> value; `-E K=V` merges over the file's
    CHANNELS = "channels"  # name -> path; `--input n=PATH` merges over the file's
    SECTION = "section"  # a mapping of the keys below it


class Shown(Enum):
    """How a value appears in run.json and --dry-run."""

    PLAIN = "plain"
    URL = "url"  # credentials and query strings masked
    MAPPING = "mapping"  # values of secret-looking names masked
    ARGV = "argv"  # the value after a secret-looking option masked


class Key(NamedTuple):
    """One spec key. `flags` are the options of `torchjob run` that set it."""

    path: str
    kind: Kind
    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # a value must match it in full
    example: str = ""  # how a good value looks, for the fix of a bad one
    shown: Shown = Shown.PLAIN
    relative: bool = False  # a path: relative to the spec's folder (from a flag: the cwd)

    @property
    def name(self) -> str:
        """The last part of the path: `manager` for `python.manager`."""
        return self.path.rpartition(".")[2]

    @property
    def section(self) -> str:
        """The part before the name: `python` for `python.manager`, "" at the top."""
        return self.path.rpartition(".")[0]

    @property
    def param(self) -> str:
        """The Python name of its option in `run`: `env_manager` for --env-manager."""
        long = next(f for f in self.flags if f.startswith("--"))
        return long[2:].replace("-", "_")

    def check(self, text: str) -> tuple[str, str] | None:
        """What is wrong with a string value and how to fix it, or None."""
        if self.choices and text not in self.choices:
            return f"unknown {self.name} {text!r}", f"use one of {', '.join(self.choices)}"
        if self.pattern and not re.fullmatch(self.pattern, text):
            return f"bad value {text!r}", (
                f"write e.g. {self.example}" if self.example else "see `torchjob run --help`"
            )
        return None


COMPAT = ("sagemaker", "ti", "pai")
RETRY_ON = ("failed", "timeout", "setup_error", "cancelled")
CONCURRENCY = ("allow", "forbid", "queue", "replace")
PARAM_STYLES = ("flag", "value")
BACKENDS = ("slurm", "local")
TTY = TTY_MODES  # both declared in settings/files.py: config files set their defaults
WHOLE = r"[1-9]\d*"
# sbatch options a spec may add; each becomes one `#SBATCH` line.
_SBATCH_EXTRA = (
    "exclusive reservation nice mail-type mail-user begin exclude nodelist licenses"
    " gres time-min requeue no-requeue mem-per-cpu hint signal comment wckey"
)
SBATCH_EXTRA = tuple(_SBATCH_EXTRA.split())
SBATCH_EXTRA_FORM = re.compile(r"--([a-z][a-z-]*)(?:=([^\s#]+))?")  # used with fullmatch
# In an #SBATCH line a newline would end the comment and bash would run the rest.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PARAM_KEY = re.compile(r"-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]*")  # -v, --epochs: passed as written
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CHANNEL = re.compile(r"[A-Za-z0-9_]+")
OPTION = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_.-]*")  # how an input is passed: --train


KEYS: tuple[Key, ...] = (
    Key("name", Kind.STR, "Run name.", ("--name",)),
    Key(
        "project",
        Kind.STR,
        "Project: a folder, an archive, or a git URL[#subdir] "
        "[default: the spec's folder, else cwd].",
        ("-p", "--project"),
        shown=Shown.URL,
    ),
    Key(
        "ref",
        Kind.STR,
        "Git branch, tag or commit [default: the remote's default].",
        ("-r", "--ref"),
    ),
    Key("script", Kind.STR, "Entry script, relative to the project.", ("-s", "--script")),
    Key("args", Kind.ARGS, "Arguments for the script, before params.", shown=Shown.ARGV),
    Key(
        "params",
        Kind.PARAMS,
        "KEY=VALUE, passed as --KEY VALUE (true: bare flag).",
        ("-P", "--param"),
        metavar="KEY=VALUE",
        shown=Shown.MAPPING,
    ),
    Key("python", Kind.SECTION, "The interpreter and its environment."),
    Key(
        "python.interpreter",
        Kind.STR,
        "Interpreter [default: $PYTHON_LAUNCHER, else torchjob's own].",
        ("--python",),
        relative=True,
    ),
    Key(
        "python.manager",
        Kind.STR,
        "none (the interpreter as is), virtualenv, uv or conda.",
        ("--env-manager",),
        choices=MANAGERS,
    ),
    Key(
        "python.version", Kind.STR, "Python for the environment (conda, uv).", ("--python-version",)
    ),
    Key(
        "python.requirements",
        Kind.STR,
        "Requirements file, relative to the project [default: requirements.txt when present].",
        ("--requirements",),
    ),
    Key(
        "python.packages",
        Kind.LIST,
        "A package to install into the environment (repeatable).",
        ("--pip",),
        shown=Shown.ARGV,  # `pkg @ https://user:TOKEN@host/...`, `--index-url URL`
    ),
    Key("python.conda_file", Kind.STR, "A conda environment file, relative to the project."),
    Key(
        "python.conda_packages",
        Kind.LIST,
        "Conda packages to install (numpy=1.26), conda only.",
        shown=Shown.ARGV,  # a channel URL may hold a token
    ),
    Key(
        "python.system_site_packages",
        Kind.BOOL,
        "Let the environment see the base interpreter's packages.",
    ),
    Key(
        "param_style",
        Kind.STR,
        "true/false params: flag (--k, or nothing) or value (--k True) [default: value for "
        "compat ti and sagemaker, else flag].",
        ("--param-style",),
        choices=PARAM_STYLES,
    ),
    Key(
        "env",
        Kind.ENV,
        "KEY=VALUE environment variable for the script.",
        ("-E", "--env"),
        metavar="KEY=VALUE",
        shown=Shown.MAPPING,
    ),
    Key("timeout", Kind.DURATION, "Stop the job after this long: 90s, 2h (124).", ("--timeout",)),
    Key("grace", Kind.DURATION, "From the stop signal to SIGKILL [default: 10s].", ("--grace",)),
    Key("retries", Kind.SECTION, "Run the job again after a failure (a bare number: count)."),
    Key(
        "retries.count",
        Kind.TEXT,
        "Run a failed job again, at most N more times (--retries N).",
        ("--retries",),
        pattern=r"\d{1,3}",
        example="3",
    ),
    Key(
        "retries.delay",
        Kind.DURATION,
        "Wait this long before the first retry: 30s, 5m [default: none].",
        ("--retry-delay",),
    ),
    Key(
        "retries.backoff",
        Kind.TEXT,
        "Multiply the delay by this after each retry [default: 1].",
        pattern=r"\d+(\.\d+)?",
        example="2.0",
    ),
    Key(
        "retries.on",
        Kind.LIST,
        "Which endings are retried: failed, timeout, setup_error, cancelled [default: failed, "
        "timeout; a Ctrl-C is never retried].",
        choices=RETRY_ON,
    ),
    Key(
        "concurrency",
        Kind.STR,
        "When a run of this name is running: allow, forbid (exit 75), queue (wait), replace "
        "(stop it first).",
        ("--concurrency",),
        choices=CONCURRENCY,
    ),
    Key("retention", Kind.SECTION, "Which runs of this name stay; applied after each run."),
    Key(
        "retention.keep",
        Kind.TEXT,
        "After each run, keep the newest N runs of this name and remove the others.",
        pattern=r"[1-9]\d{0,5}",
        example="30",
    ),
    Key("retention.max_age", Kind.DURATION, "After each run, remove its runs older than this."),
    Key(
        "tty",
        Kind.STR,
        "Run the job on a pseudo-terminal: auto (when torchjob's stdout is one), always, never.",
        ("--tty",),
        choices=TTY,
    ),
    Key(
        "files",
        Kind.PATHS,
        "A file or folder to copy next to the script (repeatable).",
        ("--file",),
        relative=True,
    ),
    Key(
        "allow_insecure_source",
        Kind.BOOL,
        "Allow http://, git:// and file:// sources.",
        ("--allow-insecure-source",),
    ),
    Key(
        "git_token_env",
        Kind.STR,
        "The variable holding a token for https git URLs.",
        pattern=ENV_NAME.pattern,
        example="`git_token_env: GH_TOKEN`",
    ),
    Key("submodules", Kind.BOOL, "Check out git submodules."),
    Key(
        "inputs",
        Kind.CHANNELS,
        "NAME=PATH input channel, as $TORCHJOB_CHANNEL_NAME (repeatable); in a file "
        "`{path: PATH, arg: --NAME}` also passes it as an option.",
        ("--input",),
        metavar="NAME=PATH",
        relative=True,
    ),
    Key("outputs", Kind.SECTION, "Where the model and output folders are."),
    Key("outputs.model_dir", Kind.STR, "Model folder [default: run folder/model].", relative=True),
    Key(
        "outputs.output_dir", Kind.STR, "Output folder [default: run folder/output].", relative=True
    ),
    Key(
        "resume_from",
        Kind.STR,
        "Checkpoint to resume from ($TORCHJOB_RESUME_FROM), or `last`.",
        ("--resume",),
        relative=True,
    ),
    Key(
        "compat",
        Kind.STR,
        "Also export SageMaker (sagemaker), Tencent TI (ti) or Alibaba PAI (pai) variables.",
        ("--compat",),
        choices=COMPAT,
    ),
    Key("metrics", Kind.SECTION, "Where the job's metrics come from besides $TORCHJOB_METRICS."),
    Key(
        "metrics.from_output",
        Kind.BOOL,
        "Also read `key=value` / `key: value` numbers in the job's stdout as metrics.",
        ("--metrics-from-output",),
    ),
    Key("metrics.pattern", Kind.TEXT, "A regex for stdout: groups (?P<key>...), (?P<value>...)."),
    Key("distributed", Kind.SECTION, "Run a torchrun gang."),
    Key(
        "distributed.nproc_per_node",
        Kind.TEXT,
        "Start a torchrun gang: processes per node (N or auto).",
        ("--nproc-per-node",),
        pattern=rf"auto|{WHOLE}",
        example="2 or auto",
    ),
    Key(
        "distributed.nnodes",
        Kind.TEXT,
        "torchrun nodes: N or MIN:MAX.",
        ("--nnodes",),
        pattern=rf"{WHOLE}(:{WHOLE})?",
        example="2 or 1:4",
    ),
    Key("distributed.node_rank", Kind.TEXT, "This node's rank.", pattern=r"\d+", example="0"),
    Key(
        "distributed.rdzv_endpoint",
        Kind.TEXT,
        "torchrun rendezvous host:port (multi-node).",
        ("--rdzv-endpoint",),
    ),
    Key("distributed.rdzv_id", Kind.TEXT, "The rendezvous id."),
    Key(
        "distributed.max_restarts",
        Kind.TEXT,
        "Gang restarts on failure.",
        pattern=r"\d+",
        example="0",
    ),
    Key(
        "distributed.monitor_interval",
        Kind.TEXT,
        "Seconds between torchrun's checks (default 0.02).",
        pattern=r"\d+(\.\d+)?",
        example="5",
    ),
    Key(
        "gpus",
        Kind.TEXT,
        "GPU ids for the job, e.g. 0,1 (CUDA_VISIBLE_DEVICES).",
        ("--gpus",),
        pattern=r"\d+(,\d+)*",
        example='"0,1"',
    ),
    Key("backend", Kind.SECTION, "Where the job runs: here, or a Slurm cluster."),
    Key(
        "backend.type",
        Kind.TEXT,
        "slurm: submit with sbatch (default: run here).",
        ("--backend",),
        choices=BACKENDS,
    ),
    Key("backend.partition", Kind.TEXT, "Slurm partition.", ("--partition",)),
    Key("backend.nodes", Kind.TEXT, "Slurm nodes.", ("--nodes",), pattern=WHOLE, example="2"),
    Key("backend.gpus_per_node", Kind.TEXT, "GPUs per Slurm node.", pattern=WHOLE, example="1"),
    Key("backend.cpus_per_task", Kind.TEXT, "CPUs per Slurm task.", pattern=WHOLE, example="4"),
    Key("backend.mem", Kind.TEXT, "Memory per Slurm node (sbatch --mem)."),
    Key("backend.account", Kind.TEXT, "Slurm account."),
    Key("backend.qos", Kind.TEXT, "Slurm quality of service."),
    Key("backend.constraint", Kind.TEXT, "Slurm node features."),
    Key(
        "backend.signal",
        Kind.TEXT,
        "Slurm: send the job SIG this many seconds before its time limit: USR1@90.",
        ("--signal",),
        pattern=r"(SIG)?[A-Z][A-Z0-9]*@\d{1,5}",
        example="USR1@90",
    ),
    Key(
        "backend.requeue",
        Kind.BOOL,
        "Slurm: requeue after a timeout or preemption (retries.count).",
    ),
    Key("backend.extra_args", Kind.LIST, "More sbatch options from an allow-list."),
)

BY_PATH = {key.path: key for key in KEYS}


def children(section: str) -> tuple[Key, ...]:
    """The keys directly under section ("" for the top level)."""
    return tuple(key for key in KEYS if key.section == section)


def with_flags() -> tuple[Key, ...]:
    """The keys `torchjob run` has an option for, in the table's order."""
    return tuple(key for key in KEYS if key.flags)


def bad_sbatch_extra(args: tuple[str, ...] | list[str]) -> list[str]:
    """The extra sbatch options that are not on the allow-list, or malformed."""
    bad = []
    for arg in args:
        m = SBATCH_EXTRA_FORM.fullmatch(arg)
        if not m or m.group(1) not in SBATCH_EXTRA:
            bad.append(arg)
    return bad
