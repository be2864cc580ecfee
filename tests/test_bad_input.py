"""Bad specs and flags: exit 2, one clear line per problem naming where and which key, no
traceback, and no run folder written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Env, torchjob, write

# (spec text or None, extra flags, where: "LINE" for spec.yaml:LINE or a text, key text)
CASES: list[tuple[str | None, list[str], str, str]] = [
    ("scritp: a.py\n", [], "1", "scritp"),
    ("script: a.py\npython:\n  interpeter: /x\n", [], "3", "python.interpeter"),
    ("script: a.py\nargs: {a: 1}\n", [], "2", "args"),
    ('script: a.py\nargs: "--a \'b"\n', [], "2", "args"),
    ("script: a.py\nparams: [1, 2]\n", [], "2", "params"),
    ("script: a.py\nparams:\n  bad key: 1\n", [], "3", "params.bad key"),
    ("script: a.py\nparams:\n  lr: null\n", [], "3", "params.lr"),
    ("script: a.py\nenv: X=1\n", [], "2", "env"),
    ("script: a.py\nenv:\n  1X: a\n", [], "3", "env.1X"),
    ("script: a.py\nenv:\n  X: [1]\n", [], "3", "env.X"),
    ("name: x\n", [], "1", "script"),
    ("script: [a.py]\n", [], "1", "script"),
    ("script: a.py\ntimeout: 5 minutes\n", [], "2", "timeout"),
    ("script: a.py\ntimeout: -5\n", [], "2", "timeout"),
    ("script: a.py\ntimeout: 0\n", [], "2", "timeout"),
    ("script: a.py\ngrace: soon\n", [], "2", "grace"),
    ("script: a.py\nproject: ./nope\n", [], "2", "project"),
    ("script: a.py\nproject: spec.yaml\n", [], "2", "project"),
    ("script: [a.py\n", [], "2", "script"),
    ('script: a.py\nargs: !!python/object/apply:os.system ["true"]\n', [], "2", "args"),
    ("- script: a.py\n", [], "1", "(top level)"),
    ("script: a.py\nscript: b.py\n", [], "2", "script"),
    ("script: a.py\npython:\n  manager: pipenv\n", [], "3", "python.manager"),
    ("script: a.py\npython:\n  manager: conda\n", [], "3", "python.version"),
    ("script: a.py\npython:\n  packages: {a: 1}\n", [], "3", "python.packages"),
    ("script: a.py\npython:\n  requirements: nope.txt\n", [], "", "python.requirements"),
    ("script: a.py\nname: {a: 1}\n", [], "2", "name"),
    ("script: a.py\nargs: [{a: 1}]\n", [], "2", "args[0]"),
    ("script: a.py\nenv:\n\tX: 1\n", [], "3", "env"),
    ("script: a.py\nproject: ./nope.zip\n", [], "2", "project"),
    ("script: a.py\nref: main\n", [], "2", "ref"),
    ("script: a.py\nfiles: [missing.txt]\n", [], "2", "files"),
    ("script: a.py\nallow_insecure_source: yes please\n", [], "2", "allow_insecure_source"),
    ("script: a.py\ngit_token_env: not-a-name\n", [], "2", "git_token_env"),
    ('script: a.py\nparams:\n  x: "a\\0b"\n', [], "3", "params.x"),
    (
        'script: a.py\nbackend:\n  type: slurm\n  partition: "gpu\\nrm -rf x #"\n',
        [],
        "4",
        "backend.partition",
    ),
    ("script: a.py\nbackend:\n  type: slurm\n  nodes: 2\n", [], "4", "backend.nodes"),
    (
        "script: a.py\ndistributed:\n  nnodes: 2\nbackend:\n  type: slurm\n",
        [],
        "3",
        "distributed.nnodes",
    ),
    ("script: a.py\ndistributed:\n  nnodes: 0\n", [], "3", "distributed.nnodes"),
    ('script: a.py\ndistributed:\n  nnodes: "2:1"\n', [], "3", "distributed.nnodes"),
    (
        'script: a.py\nbackend:\n  type: slurm\n  extra_args: ["--comment=a#b"]\n',
        [],
        "4",
        "backend.extra_args",
    ),
    (None, ["-s", "a.py", "-P", "lr"], "command line", "-P/--param"),
    (None, ["-s", "a.py", "-E", "=x"], "command line", "-E/--env"),
    (None, ["-s", "a.py", "-E", "A-B=1"], "command line", "-E A-B"),
    (None, ["-s", "a.py", "-P", "bad key=1"], "command line", "-P bad key"),
    (None, ["-s", "a.py", "--timeout", "10x"], "command line", "--timeout"),
    (None, ["-s", "a.py", "--grace", "0"], "command line", "--grace"),
    (None, ["-s", "a.py", "-p", "/no/such/folder"], "command line", "--project"),
    (None, [], "command line", "script"),
    (None, ["-s", "a.py", "--bogus"], "No such option", "--bogus"),
    (None, ["-s", "a.py", "--timeout"], "requires an argument", "--timeout"),
    (None, ["missing.yaml"], "missing.yaml", "(file)"),
]


@pytest.mark.parametrize(
    ("text", "flags", "where", "key"), CASES, ids=[f"case{i}" for i in range(len(CASES))]
)
def test_bad_input_exits_2_with_one_clear_message(
    project: Path, iso: Env, text: str | None, flags: list[str], where: str, key: str
) -> None:
    write(project / "a.py", "raise SystemExit('must not run')\n")
    args = ["run"]
    if text is not None:
        args.append(str(write(project / "spec.yaml", text)))
    res = torchjob(*args, *flags, cwd=project)
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert "Traceback" not in err
    assert res.stdout == b""
    expected_where = f"{project / 'spec.yaml'}:{where}" if where.isdigit() else where
    lines = [line for line in err.splitlines() if expected_where in line]
    assert lines, err
    assert any(key in line for line in lines), err
    if text is not None:  # one problem, one line; torchjob's own lines say how to fix it
        assert len([x for x in err.splitlines() if x.startswith("torchjob: error:")]) == 1, err
        assert "fix: " in err
    assert not iso.runs.exists()
    assert not (project / "argv.json").exists()


def test_several_problems_are_all_reported_in_line_order(project: Path, iso: Env) -> None:
    spec = write(project / "spec.yaml", "scirpt: a.py\ntimeout: x\nenv:\n  9: x\n")
    res = torchjob("validate", str(spec))
    assert res.returncode == 2
    lines = res.stderr.decode().splitlines()
    assert [line.split(": ")[2] for line in lines] == [f"{spec}:1", f"{spec}:2", f"{spec}:4"]
    assert "did you mean `script`" in lines[0]


def test_validate_accepts_a_good_spec_and_runs_nothing(project: Path, iso: Env) -> None:
    write(project / "a.py", "open('ran', 'w')\n")
    spec = write(project / "spec.yaml", "script: a.py\nparams: {lr: 0.1}\ntimeout: 1h30m\n")
    res = torchjob("validate", str(spec))
    assert res.returncode == 0, res.stderr
    assert b"ok:" in res.stdout
    assert not (project / "ran").exists()
    assert not iso.runs.exists()


def test_dry_run_prints_the_plan_and_runs_nothing(project: Path, iso: Env) -> None:
    write(project / "a.py", "open('ran', 'w')\n")
    res = torchjob(
        "run",
        "-s",
        "a.py",
        "-p",
        str(project),
        "-P",
        "api-key=s3cr3t",
        "-E",
        "HF_TOKEN=t0k3n",
        "-P",
        "lr=0.5",
        "--dry-run",
    )
    out = res.stdout.decode()
    assert res.returncode == 0
    assert "--lr 0.5" in out and "--api-key '****'" in out and "HF_TOKEN=****" in out
    assert "s3cr3t" not in out and "t0k3n" not in out
    assert f"PYTHONPATH={project}" in out
    assert not (project / "ran").exists()
    assert not iso.runs.exists()
