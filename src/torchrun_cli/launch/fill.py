"""`python -m torchrun_cli.launch.fill -- ARGV...`: the first command of a Slurm job whose
pipeline step names an output parameter of an upstream step (`${{ steps.NAME.outputs.KEY }}`).
The job was submitted before that step ran; here, as it starts, the values are read from the
files the upstream step wrote (its output folders are in $TORCHJOB_UPSTREAM_OUTPUTS), put into
the argv words and variables that hold the references, and the job's own command is exec'd:
same process, same signals, nothing in a shell.

An output that is not there fails the job with exit 2 and one line on stderr, so Slurm cancels
the steps after it (`--kill-on-invalid-dep=yes`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from torchrun_cli.launch.conventions import output_value
from torchrun_cli.spec.refs import Ref, has_refs, substitute

UPSTREAM = "TORCHJOB_UPSTREAM_OUTPUTS"  # {step: its output folder}, JSON
WRAPPER = ("-m", "torchrun_cli.launch.fill", "--")  # after torchjob's own interpreter


class Missing(Exception):
    """An output a reference names that its step did not write."""


def fill(text: str, folders: dict[str, str]) -> str:
    def lookup(ref: Ref) -> str:
        if ref.scope != "steps" or ref.field != "outputs" or ref.name not in folders:
            raise Missing(f"${{{{ {ref} }}}} cannot be filled in here")
        value = output_value(Path(folders[ref.name]), ref.key)
        if value is None or "\0" in value:
            raise Missing(
                f"step {ref.name!r} wrote no output {ref.key!r} (in {folders[ref.name]})"
                if value is None
                else f"output {ref.key!r} of step {ref.name!r} holds a NUL byte"
            )
        return value

    return substitute(text, lookup) if has_refs(text) else text


def main(argv: list[str]) -> int:
    if argv[:1] != ["--"] or len(argv) < 2:
        sys.stderr.write("usage: python -m torchrun_cli.launch.fill -- ARGV...\n")
        return 2
    folders = json.loads(os.environ.get(UPSTREAM) or "{}")
    try:
        words = [fill(word, folders) for word in argv[1:]]
        env = {k: fill(v, folders) for k, v in os.environ.items() if k != UPSTREAM}
    except Missing as exc:
        sys.stderr.write(f"torchjob: error: {exc}\n")
        return 2
    sys.stdout.flush()
    try:
        os.execvpe(words[0], words, env)  # noqa: S606 - an argv list run in place: no shell
    except OSError as exc:
        sys.stderr.write(f"torchjob: error: cannot start {words[0]}: {exc.strerror}\n")
        return 126 if isinstance(exc, PermissionError) else 127
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
