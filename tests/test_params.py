"""Arguments reach the script byte-exact and in the documented order: args, params, -- ARGS."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from tests.helpers import Env, torchjob, write

DUMP_ARGV = "import json, sys\nopen('argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
PIECES = [
    '"',
    "'",
    "$(touch pwned)",
    "`touch pwned`",
    ";",
    "&&",
    "|",
    "\n",
    "\t",
    " ",
    "\\",
    "*",
    "?",
    "~",
    "$HOME",
    "${X}",
    "%s",
    "-",
    "--",
    "--flag",
    "=",
    "#",
    "!",
    "é",
    "日本",
    "🙂",
    "\r",
    "a b",
    "<",
    ">",
    "(",
    ")",
    "{",
    "}",
    "'\"'",
]


def values(n: int) -> list[str]:
    rng = random.Random(42)
    out = []
    for i in range(n):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 6))]
        parts.insert(rng.randint(0, len(parts)), chr(rng.randint(0xA0, 0x2FFF)))
        if i % 10 == 0:
            parts.insert(0, "-")  # leading dashes
        out.append("".join(parts))
    return out


def run_and_read(project: Path, *args: str) -> list[str]:
    res = torchjob(*args)
    assert res.returncode == 0, res.stderr.decode()
    got: list[str] = json.loads((project / "argv.json").read_text())
    return got


def test_200_hostile_values_arrive_byte_exact(project: Path, iso: Env) -> None:
    vals = values(200)
    write(project / "dump.py", DUMP_ARGV)
    spec = {
        "script": "dump.py",
        "args": vals[:50],
        "params": {f"p{i}": v for i, v in enumerate(vals[50:100])},
    }
    text = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    spec_file = write(project / "job.yaml", text)
    flags = [x for i, v in enumerate(vals[100:150]) for x in ("-P", f"q{i}={v}")]
    got = run_and_read(project, "run", str(spec_file), *flags, "--", *vals[150:])
    expected = list(vals[:50])
    expected += [x for i, v in enumerate(vals[50:100]) for x in (f"--p{i}", v)]
    expected += [x for i, v in enumerate(vals[100:150]) for x in (f"--q{i}", v)]
    expected += vals[150:]
    assert got == expected
    assert not (project / "pwned").exists()


def test_param_rules_true_false_numbers_and_flag_override(project: Path) -> None:
    write(project / "dump.py", DUMP_ARGV)
    spec_file = write(
        project / "job.yaml",
        (
            "script: dump.py\n"
            "args: --epochs 1 'two words'\n"
            "params: {lr: 0.01, dry-run: true, verbose: false, batch-size: 64, tag: base}\n"
        ),
    )
    got = run_and_read(
        project,
        "run",
        str(spec_file),
        "-P",
        "tag=over=ride",
        "-P",
        "new=1",
        "-P",
        "lr=false",
        "--",
        "--tail",
    )
    assert got == [
        "--epochs",
        "1",
        "two words",
        "--dry-run",
        "--batch-size",
        "64",
        "--tag",
        "over=ride",
        "--new",
        "1",
        "--tail",
    ]


def test_unquoted_yaml_numbers_reach_the_script_as_written(project: Path) -> None:
    """YAML 1.1 would turn 010 into 8, 0x1F into 31, 3.10 into 3.1 and 1_000 into 1000."""
    write(project / "dump.py", DUMP_ARGV)
    spec = write(
        project / "job.yaml",
        (
            "script: dump.py\nargs: [010, 3.10]\n"
            "params: {seed: 010, hex: 0x1F, ver: 3.10, big: 1_000, e: 1.0e+3, n: 5, f: 0.5}\n"
        ),
    )
    got = run_and_read(project, "run", str(spec))
    assert got == [
        "010",
        "3.10",
        "--seed",
        "010",
        "--hex",
        "0x1F",
        "--ver",
        "3.10",
        "--big",
        "1_000",
        "--e",
        "1.0e+3",
        "--n",
        "5",
        "--f",
        "0.5",
    ]
