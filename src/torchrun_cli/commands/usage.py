"""The examples each command's help ends with: plain text, apart from the flags. Every line
is a command a user can type as it is (tests/test_cli_surface.py parses each one)."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "torchjob run job.yaml                # a job spec",
        "torchjob run train.py --epochs 3     # a script in this folder",
        "torchjob runs                        # past runs",
        "torchjob logs -f                     # follow the newest run",
    ),
    "run": (
        "torchjob run job.yaml                # a spec; flags override its keys",
        "torchjob run train.py --epochs 3     # words after a .py are its own",
        "torchjob run job.yaml -P lr=0.01 --timeout 2h",
        "torchjob run -s main.py -p git@github.com:org/repo.git -r main",
    ),
    "validate": (
        "torchjob validate job.yaml",
        "torchjob validate examples/mnist/job-venv.yaml",
    ),
    "config": (
        "torchjob config",
        "torchjob config --json",
    ),
    "runs": (
        "torchjob runs                        # the last 20",
        "torchjob runs --name mnist --status failed --limit 5",
        "torchjob runs --columns accuracy,loss # outputs as columns",
        "torchjob runs --json --limit 0       # every run, for machines",
    ),
    "rerun": (
        "torchjob rerun last                  # the newest run again, same commit",
        "torchjob rerun mnist -P lr=0.001     # with a param changed",
    ),
    "runs prune": (
        "torchjob runs prune --keep 50        # the newest 50 of each name stay",
        "torchjob runs prune --older-than 30d --status failed --dry-run",
    ),
    "compare": (
        "torchjob compare mnist               # the newest 20 mnist runs",
        "torchjob compare last last~1 --md    # two runs, as a Markdown table",
        "torchjob compare 3fa2 9c01 --csv",
    ),
    "diff": (
        "torchjob diff last last~1            # what changed between the last two runs",
        "torchjob diff mnist 3fa2 --md",
    ),
    "plot": (
        "torchjob plot                        # the newest run's metrics, drawn here",
        "torchjob plot mnist loss --vs last~1 # its loss against the run before",
        "torchjob plot 3fa2 --output loss.svg # into a file (matplotlib)",
    ),
    "show": (
        "torchjob show                        # the newest run",
        "torchjob show mnist                  # the newest run named mnist",
        "torchjob show 3fa2 --json            # the run whose id ends in 3fa2",
    ),
    "logs": (
        "torchjob logs -f                     # follow the newest; exit with its status",
        "torchjob logs mnist --tail 50        # the newest mnist run's last lines",
        "torchjob logs last~1 --stderr        # the errors of the run before",
        "torchjob logs 3fa2 --setup           # what git, pip and uv printed",
    ),
    "cancel": (
        "torchjob cancel last",
        "torchjob cancel 3fa2                 # the run whose id ends in 3fa2",
        "torchjob cancel mnist                # the newest run named mnist",
    ),
    "completion": (
        "torchjob completion bash > ~/.local/share/bash-completion/completions/torchjob",
        "torchjob completion zsh > ~/.zfunc/_torchjob # a folder on $fpath",
        "torchjob completion fish > ~/.config/fish/completions/torchjob.fish",
    ),
    "env list": (
        "torchjob env list",
        "torchjob env list --json",
    ),
    "env prune": (
        "torchjob env prune --unused-for 30d",
        "torchjob env prune --keep 3          # the 3 used last stay",
    ),
    "env rm": (
        "torchjob env rm 3fa2b1c4             # a key's start, from env list",
        "torchjob env rm 3fa2b1c4d5e6f7a8     # a whole key",
    ),
    "cache list": (
        "torchjob cache list",
        "torchjob cache list --json",
    ),
    "cache prune": (
        "torchjob cache prune                 # mirrors unused for 30 days",
        "torchjob cache prune --unused-for 0  # every mirror",
    ),
}


def epilog(command: str) -> str | None:
    """The help's last section for `command` ("env prune"; "" for torchjob itself)."""
    lines = EXAMPLES.get(command)
    if not lines:
        return None
    return "Examples:\n\n\b\n" + "\n".join(lines)  # \b: click keeps these lines as they are
