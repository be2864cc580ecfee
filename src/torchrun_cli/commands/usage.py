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
